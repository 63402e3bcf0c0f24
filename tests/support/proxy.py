"""The proxy tests' world: a real :class:`~edgeproxy.node.Node` with a ``task.Clock``, an in-memory
recording :class:`~edgeproxy.interfaces.Sender`, a real InMemoryLocation + Registrar and a route module,
plus the SIP text of the cast's requests and answers (used by ``test_proxy_*``).

Cast: Alice (caller, UDP 192.0.2.20:5060), Bob (callee, registered from UDP 192.0.2.10:5062, or over
TCP), the node listening on 127.0.0.1:5060 (UDP and TCP) for domain example.com.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from itertools import count
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from edgeproxy.dialog import DialogTable
from edgeproxy.interfaces import SendError
from edgeproxy.location import InMemoryLocation
from edgeproxy.node import Node, PingReplies
from edgeproxy.interfaces import Locator
from edgeproxy.proxy.flood import FloodDetector
from edgeproxy.proxy.flowtoken import FlowTokens
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.routing import LookupResult
from edgeproxy.registrar import Registrar, RegistrarSettings
from edgeproxy.routing.loader import RouteModule, load_route_module
from edgeproxy.sip import Request, Response, parse_datagram
from edgeproxy.sip.endpoint import Destination, Endpoint, Flow
from edgeproxy.transaction import TimerSettings

T0 = 1_000.0
LOCAL_UDP = Endpoint("UDP", "127.0.0.1", 5060)
LOCAL_TCP = Endpoint("TCP", "127.0.0.1", 5060)
RR_UDP = "<sip:127.0.0.1:5060;lr>"
RR_TCP = "<sip:127.0.0.1:5060;transport=tcp;lr>"
ALICE = Endpoint("UDP", "192.0.2.20", 5060)
BOB = Endpoint("UDP", "192.0.2.10", 5062)
BOB2 = Endpoint("UDP", "192.0.2.11", 5064)
BOB3 = Endpoint("UDP", "192.0.2.12", 5066)
VOICEMAIL = Endpoint("UDP", "192.0.2.30", 5060)
ALICE_FLOW = Flow(LOCAL_UDP, ALICE)
BOB_FLOW = Flow(LOCAL_UDP, BOB)
BOB_TCP = Endpoint("TCP", "192.0.2.10", 40000)
BOB_TCP_FLOW = Flow(LOCAL_TCP, BOB_TCP, 7)
BOB1_CONTACT = "<sip:bob@192.0.2.10:5062>"
BOB2_CONTACT = "<sip:bob@192.0.2.11:5064>"
BOB3_CONTACT = "<sip:bob@192.0.2.12:5066>"
BOB2_FLOW = Flow(LOCAL_UDP, BOB2)
BOB3_FLOW = Flow(LOCAL_UDP, BOB3)


def rr_tcp(world: "World", flow: Flow) -> str:
    """Our TCP Record-Route entry facing the client on ``flow``: it names the connection (RFC 5626)."""
    return f"<sip:{world.node.forwarder.flow_tokens.encode(flow)}@127.0.0.1:5060;transport=tcp;lr;ob>"


# ---------------------------------------------------------------------------------------------------
# the world: node + recording sender + clock
# ---------------------------------------------------------------------------------------------------


@dataclass
class Sent:
    destination: Destination
    message: Request | Response

    @property
    def remote(self) -> Endpoint:
        return self.destination.remote

    def is_request(self, method: str | None = None) -> bool:
        return isinstance(self.message, Request) and (method is None or self.message.method == method)

    def is_response(self, status: int | None = None) -> bool:
        return isinstance(self.message, Response) and (status is None or self.message.status == status)

    def __repr__(self) -> str:
        m = self.message
        what = f"{m.method} {m.uri_text}" if isinstance(m, Request) else f"{m.status} {m.cseq.method}"
        return f"<Sent {what} -> {self.remote}>"


class RecordingSender:
    """An in-memory :class:`Sender`: serialises at call time (as the protocol requires), records
    ``(destination, parsed message)`` and fires with a Flow; ``fail_to`` maps a remote endpoint to the
    :class:`SendError` its sends fail with."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.fail_to: dict[Endpoint, SendError] = {}
        self.listeners = {"UDP": LOCAL_UDP, "TCP": LOCAL_TCP}
        self._connections = count(100)

    def send(self, destination: Destination, message: Any) -> "Deferred[Flow]":
        parsed = parse_datagram(message.to_bytes())
        assert parsed is not None, message.to_bytes()
        self.sent.append(Sent(destination, parsed))
        error = self.fail_to.get(destination.remote)
        if error is not None:
            return fail(error)
        if destination.flow is not None:
            return succeed(destination.flow)
        remote = destination.remote
        local = self.listeners[remote.transport]
        return succeed(Flow(local, remote, None if remote.transport == "UDP" else next(self._connections)))

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        return self.listeners.get(transport)

    def take(self) -> list[Sent]:
        out, self.sent = self.sent, []
        return out


class World:
    def __init__(self, routes: RouteModule | None = None, settings: ProxySettings | None = None,
                 timers: TimerSettings | None = None, *, locator: Locator | None = None,
                 flood: FloodDetector | None = None, pinger: Callable[["World"], PingReplies] | None = None,
                 dialogs: DialogTable | None = None, flow_tokens: FlowTokens | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.location = InMemoryLocation(self.clock)
        self.registrar = Registrar(self.location, RegistrarSettings(), self.clock)
        self.sender = RecordingSender()
        self.node = Node(self.clock, self.sender, self.registrar, routes or load_route_module("edgeproxy_routes.default"),
                         settings or ProxySettings(domains=("example.com",)), timers, locator=locator, flood=flood,
                         pinger=pinger(self) if pinger is not None else None, dialogs=dialogs,
                         flow_tokens=flow_tokens)
        self.node.add_local_endpoint(LOCAL_UDP)
        self.node.add_local_endpoint(LOCAL_TCP)

    def receive(self, message: str | Request | Response, flow: Flow) -> list[Sent]:
        """Feed one message (SIP text, or a message object that is serialised and re-parsed first)
        and return everything the node sent as a result."""
        self.node.message_received(wire(message), flow)
        return self.sender.take()

    def advance(self, seconds: float) -> list[Sent]:
        self.clock.advance(seconds)
        return self.sender.take()

    def run_for(self, seconds: float, step: float = 0.05) -> list[Sent]:
        """Advance in small steps, as a real reactor would (timers re-arm from the instant they
        fire, so one big jump would collapse a retransmission series into one send)."""
        self.clock.pump([step] * round(seconds / step))
        return self.sender.take()

    def register(self, user: str = "bob", contacts: tuple[str, ...] = ("<sip:bob@192.0.2.10:5062>",),
                 flow: Flow = BOB_FLOW, call_id: str | None = None) -> Response:
        via_transport = flow.remote.transport
        text = sip(
            "REGISTER sip:example.com SIP/2.0",
            f"Via: SIP/2.0/{via_transport} {Endpoint(via_transport, flow.remote.host, 5062).hostport};"
            f"branch=z9hG4bKreg{next(_seq)}",
            "Max-Forwards: 70",
            f"From: <sip:{user}@example.com>;tag=r{next(_seq)}",
            f"To: <sip:{user}@example.com>",
            f"Call-ID: {call_id or f'reg-{user}-{next(_seq)}'}",
            "CSeq: 1 REGISTER",
            *(f"Contact: {c}" for c in contacts),
        )
        sent = self.receive(text, flow)
        assert len(sent) == 1 and sent[0].is_response(), sent
        return sent[0].message  # type: ignore[return-value]

    def assert_drained(self) -> None:
        """Every transaction ended and was forgotten (Timers D/I/J/K/L/M and the §9.1 wait)."""
        self.advance(200)
        assert len(self.node.table) == 0, list(self.node.table)
        assert self.node.proxy.idle  # no transaction owned, no timer armed


_seq = count(1)


def sip(*lines: str, body: str = "") -> str:
    has_cl = any(line.lower().startswith("content-length") for line in lines)
    tail = [] if has_cl else [f"Content-Length: {len(body.encode())}"]
    return "\r\n".join([*lines, *tail]) + "\r\n\r\n" + body


def wire(message: str | Request | Response) -> Request | Response:
    data = message.encode() if isinstance(message, str) else message.to_bytes()
    parsed = parse_datagram(data)
    assert parsed is not None
    return parsed


def invite(to: str = "bob", *, branch: str = "z9hG4bKalice1", call_id: str = "call-1@192.0.2.20",
           max_forwards: int | None = 70, extra: tuple[str, ...] = (), uri: str | None = None) -> str:
    return sip(
        f"INVITE {uri or f'sip:{to}@example.com'} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5060;branch={branch};rport",
        *([f"Max-Forwards: {max_forwards}"] if max_forwards is not None else []),
        'From: "Alice" <sip:alice@example.com>;tag=a1',
        f"To: <sip:{to}@example.com>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Contact: <sip:alice@192.0.2.20:5060>",
        *extra,
    )


def cancel(*, branch: str = "z9hG4bKalice1", call_id: str = "call-1@192.0.2.20", to: str = "bob") -> str:
    return sip(
        f"CANCEL sip:{to}@example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5060;branch={branch};rport",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@example.com>;tag=a1',
        f"To: <sip:{to}@example.com>",
        f"Call-ID: {call_id}",
        "CSeq: 1 CANCEL",
    )


def non2xx_ack(final: Response, *, branch: str = "z9hG4bKalice1", uri: str = "sip:bob@example.com") -> str:
    """Alice's ACK for a non-2xx final: same branch as the INVITE, To from the response (§17.1.1.3)."""
    return sip(
        f"ACK {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5060;branch={branch};rport",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@example.com>;tag=a1',
        f"To: {final.headers.get('to')}",
        f"Call-ID: {final.call_id}",
        "CSeq: 1 ACK",
    )


def in_dialog(method: str, ok: Response, *, cseq: int, branch: str, max_forwards: int = 70) -> str:
    """A request Alice sends inside the dialog ``ok`` (the 2xx she received) established: Request-URI
    the remote target, Route the reversed Record-Route (§12.1.2, §12.2.1.1)."""
    target = ok.contacts[0].uri
    route = list(reversed(ok.headers.values("record-route")))
    return sip(
        f"{method} {target} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5060;branch={branch};rport",
        f"Max-Forwards: {max_forwards}",
        *([f"Route: {', '.join(route)}"] if route else []),
        'From: "Alice" <sip:alice@example.com>;tag=a1',
        f"To: {ok.headers.get('to')}",
        f"Call-ID: {ok.call_id}",
        f"CSeq: {cseq} {method}",
    )


def answer(request: Request, status: int, *, to_tag: str = "b1", contact: str | None = "<sip:bob@192.0.2.10:5062>",
           extra: tuple[str, ...] = ()) -> Response:
    """The downstream UA's response to ``request`` as the node sent it: Record-Route mirrored in
    dialog-creating responses (§12.1.1), a Contact, the To tag."""
    response = request.make_response(status, to_tag=to_tag if status > 100 else None)
    if 100 < status < 300 and request.method == "INVITE":
        for rr in request.headers.get_all("record-route"):
            response.headers.add("Record-Route", rr)
        if contact:
            response.headers.add("Contact", contact)
    for line in extra:
        name, value = line.split(":", 1)
        response.headers.add(name, value.strip())
    return response


def only(sent: list[Sent], predicate: Callable[[Sent], bool] = lambda s: True) -> Sent:
    hits = [s for s in sent if predicate(s)]
    assert len(hits) == 1, sent
    return hits[0]


def requests(sent: list[Sent], method: str) -> list[Sent]:
    return [s for s in sent if s.is_request(method)]


def responses(sent: list[Sent], status: int | None = None) -> list[Sent]:
    return [s for s in sent if s.is_response(status)]


def module(request_route: Callable[..., Any], **hooks: Any) -> RouteModule:
    """An inline route module built the way the loader builds one."""
    mod = types.ModuleType("inline_routes")
    mod.request_route = request_route  # type: ignore[attr-defined]
    for name, fn in hooks.items():
        setattr(mod, name, fn)
    return RouteModule("inline_routes", mod, request_route, **hooks)


def call_to_bob(w: World, **kw: Any) -> tuple[list[Sent], Request]:
    """Register Bob, send Alice's INVITE; return what was sent and the INVITE that reached Bob."""
    w.register()
    sent = w.receive(invite(**kw), ALICE_FLOW)
    return sent, only(sent, lambda s: s.is_request("INVITE")).message  # type: ignore[return-value]


def forked(w: World, *contacts: str) -> dict[Endpoint, Request]:
    """Register Bob at ``contacts``, send Alice's INVITE; the INVITE each branch got, by where it went."""
    w.register(contacts=contacts)
    sent = w.receive(invite(), ALICE_FLOW)
    return {s.remote: s.message for s in requests(sent, "INVITE")}  # type: ignore[misc]


def voicemail_routes(failure: Callable[..., Any], armed: bool = True, **hooks: Any) -> RouteModule:
    """save() for REGISTERs, else lookup() and relay with ``failure`` as the failure route (when ``armed``)."""
    async def request_route(msg):
        if msg.is_method("REGISTER"):
            await msg.save("location")
            return
        code = await msg.lookup("location")
        if code != LookupResult.FOUND:
            msg.sl_send_reply(404)
            return
        if armed:
            msg.t_on_failure(failure)
        msg.record_route()
        msg.t_relay()

    return module(request_route, **hooks)
