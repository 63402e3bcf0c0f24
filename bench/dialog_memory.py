"""Measure the memory cost of active dialogs: ``python bench/dialog_memory.py [N]``.

Runs N (default 10,000) calls through a real :class:`~edgeproxy.node.Node` (``task.Clock``, a sender
that only counts) with a route that does what the shipped routes do -- ``create_dialog("B")``,
``set_dlg_profile("caller", $fU)``, ``record_route()``, relay to FreeSWITCH -- each call from its own
browser connection (JsSIP-like INVITE over WSS: ``.invalid`` Via and Contact, SDP) and answered 200
by FreeSWITCH over UDP, then ACKed. Once every transaction has ended (the clock is moved past Timers
D/K), only the dialogs remain: the Python heap growth measured with :mod:`tracemalloc`, divided by N,
is what one active dialog costs. The target of issue 13 is at most 3 KB per dialog.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet.defer import Deferred, succeed  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from edgeproxy.dialog import DialogSettings, DialogTable  # noqa: E402
from edgeproxy.location import InMemoryLocation  # noqa: E402
from edgeproxy.node import Node  # noqa: E402
from edgeproxy.proxy.settings import ProxySettings  # noqa: E402
from edgeproxy.registrar import Registrar, RegistrarSettings  # noqa: E402
from edgeproxy.routing.loader import RouteModule  # noqa: E402
from edgeproxy.sip import Request, Response, parse_datagram  # noqa: E402
from edgeproxy.sip.endpoint import Destination, Endpoint, Flow  # noqa: E402

UDP = Endpoint("UDP", "127.0.0.1", 5060)
WSS = Endpoint("WSS", "127.0.0.1", 443)
FS = Endpoint("UDP", "127.0.0.2", 5080)
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


class Sink:
    """A Sender that keeps the last message sent (the proxy serialises at call time) and its flow."""

    def __init__(self) -> None:
        self.last: bytes = b""

    def send(self, destination: Destination, message: object) -> "Deferred[Flow]":
        self.last = message.to_bytes()  # type: ignore[attr-defined]
        return succeed(destination.flow or Flow(UDP if destination.remote.transport == "UDP" else WSS,
                                                destination.remote))

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        return UDP if transport == "UDP" else WSS


async def request_route(msg):  # type: ignore[no-untyped-def]
    if msg.has_totag():
        if msg.loose_route():
            msg.t_relay()
        return
    msg.create_dialog("B")
    msg.set_dlg_profile("caller", msg.fU)
    msg.record_route()
    msg.du = "sip:127.0.0.2:5080"
    msg.t_relay()


def invite(n: int) -> bytes:
    rnd = f"r{n:07x}"
    body = SDP
    return (f"INVITE sip:fs@example.com SIP/2.0\r\nVia: SIP/2.0/WSS {rnd}.invalid;branch=z9hG4bK{rnd}i\r\n"
            f"Max-Forwards: 69\r\nTo: <sip:fs@example.com>\r\nFrom: \"User {n}\" <sip:user{n}@example.com>;"
            f"tag={rnd}ftag\r\nCall-ID: {rnd}callidcallidcallid\r\nCSeq: 8153 INVITE\r\n"
            f"Contact: <sip:{rnd}@{rnd}.invalid;transport=ws;ob>\r\nContent-Type: application/sdp\r\n"
            f"Supported: outbound\r\nUser-Agent: JsSIP 3.13\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


def main(n: int) -> None:
    clock = Clock()
    clock.advance(1_000)
    sink = Sink()
    location = InMemoryLocation(clock)
    mod = types.ModuleType("bench_routes")
    mod.request_route = request_route  # type: ignore[attr-defined]
    node = Node(clock, sink, Registrar(location, RegistrarSettings(), clock),
                RouteModule("bench_routes", mod, request_route), ProxySettings(domains=("example.com",)),
                dialogs=DialogTable(DialogSettings(profiles_with_value=("caller",))))
    node.add_local_endpoint(UDP)
    node.add_local_endpoint(WSS)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(n):
        flow = Flow(WSS, Endpoint("WSS", "127.0.0.1", 10_000 + i % 50_000), i + 1)
        node.message_received(parse_datagram(invite(i)), flow)  # type: ignore[arg-type]
        fwd = parse_datagram(sink.last)
        assert isinstance(fwd, Request)
        ok = fwd.make_response(200, to_tag=f"fs{i:07x}")
        for rr in fwd.headers.get_all("record-route"):
            ok.headers.add("Record-Route", rr)
        ok.headers.add("Contact", "<sip:fs@127.0.0.2:5080>")
        node.message_received(parse_datagram(ok.to_bytes()), Flow(UDP, FS))  # type: ignore[arg-type]
        answer = parse_datagram(sink.last)
        assert isinstance(answer, Response) and answer.status == 200
        routes = list(reversed(answer.headers.values("record-route")))
        ack = (f"ACK sip:fs@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/WSS r{i:07x}.invalid;branch=z9hG4bKa{i}\r\n"
               f"Max-Forwards: 69\r\nRoute: {', '.join(routes)}\r\nTo: {answer.headers.get('to')}\r\n"
               f"From: {answer.headers.get('from')}\r\nCall-ID: {answer.call_id}\r\nCSeq: 8153 ACK\r\n"
               f"Content-Length: 0\r\n\r\n")
        node.message_received(parse_datagram(ack.encode()), flow)  # type: ignore[arg-type]
    clock.pump([1.0] * 40)  # every transaction ends (Timer D 32 s, K, ...): the dialogs remain
    sink.last = b""
    gc.collect()
    after = tracemalloc.take_snapshot()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    table = node.dialogs.table
    assert len(table) == n and table.active == n and len(node.table) == 0, (len(table), len(node.table))
    print(f"{n} active dialogs (confirmed, ACKed), {len(node.table)} transactions left")
    print(f"heap growth {grown / 1e6:.2f} MB: {grown / n:,.0f} bytes per dialog "
          f"(profile 'caller': {table.profile_size('caller')} entries)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
