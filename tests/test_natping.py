"""NAT keep-alive pinging (:mod:`edgeproxy.location.natping`, OpenSIPS nathelper's pinger), without
sockets: a real InMemoryLocation and Registrar on a ``task.Clock``, a recording Sender, and for the
reply path a real :class:`~edgeproxy.proxy.node.Node`.

Cast: the node listens on 127.0.0.1:5060 (UDP and TCP) and 127.0.0.2:5070 (a second UDP listener);
phones register private Contacts (10.0.0.x) from public NAT addresses (203.0.113.x).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock, LoopingCall

from edgeproxy.config import ConfigError, load_config
from edgeproxy.location import InMemoryLocation
from edgeproxy.location.natping import KEEPALIVE, NatPinger, NatPingSettings
from edgeproxy.node import Node
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.interfaces import SendError
from edgeproxy.registrar import Registrar, RegistrarSettings
from edgeproxy.routing.loader import RouteModule
from edgeproxy.service import build_node
from edgeproxy.sip import Request, Response, parse_datagram
from edgeproxy.sip.endpoint import Destination, Endpoint, Flow
from support.doubles import LocationRecorder

T0 = 1_000.0
LOCAL_UDP = Endpoint("UDP", "127.0.0.1", 5060)
LOCAL_UDP2 = Endpoint("UDP", "127.0.0.2", 5070)
LOCAL_TCP = Endpoint("TCP", "127.0.0.1", 5060)
LOCAL_WS = Endpoint("WS", "127.0.0.1", 8080)
_ports = count(40000)


def public(transport: str = "UDP") -> Endpoint:
    """A fresh public (NAT) source address."""
    return Endpoint(transport, "203.0.113.7", next(_ports))


@dataclass
class Sent:
    destination: Destination
    data: bytes

    @property
    def remote(self) -> Endpoint:
        return self.destination.remote

    @property
    def message(self) -> Any:
        return parse_datagram(self.data)

    @property
    def keepalive(self) -> bool:
        return self.data == b"\r\n\r\n"


class RecordingSender:
    """Records what would be sent (serialised at call time); ``fail_to`` makes sends to a remote fail,
    ``raise_to`` makes them raise (a broken transport)."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.fail_to: set[Endpoint] = set()
        self.raise_to: set[Endpoint] = set()

    def send(self, destination: Destination, message: Any) -> "Deferred[Flow]":
        if destination.remote in self.raise_to:
            raise RuntimeError("transport exploded")
        self.sent.append(Sent(destination, message.to_bytes()))
        if destination.remote in self.fail_to:
            return fail(SendError("Flow Failed", 430))
        return succeed(destination.flow)

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        return {"UDP": LOCAL_UDP, "TCP": LOCAL_TCP}.get(transport)

    def take(self) -> list[Sent]:
        out, self.sent = self.sent, []
        return out


class World:
    def __init__(self, user_agent_header: str = "", **settings: Any) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.location = InMemoryLocation(self.clock)
        self.registrar = Registrar(self.location, RegistrarSettings(), self.clock)
        self.sender = RecordingSender()
        settings.setdefault("natping_interval", 30)
        self.settings = NatPingSettings(**settings)
        self.pinger = NatPinger(self.location, self.sender, self.settings, self.clock,
                                user_agent_header=user_agent_header)
        self.flows: dict[str, Flow] = {}

    def register(self, user: str, *, nat: bool = True, sipping: bool = False, transport: str = "UDP",
                 local: Endpoint | None = None, expires: int = 3600, contact: str | None = None,
                 call_id: str | None = None, cseq: int = 1) -> Flow:
        remote = public(transport)
        if local is None:
            local = {"UDP": LOCAL_UDP, "TCP": LOCAL_TCP, "TLS": LOCAL_TCP, "WS": LOCAL_WS}[transport]
        flow = self.flows.get(user)
        if flow is None or call_id is None:
            cid = None if transport == "UDP" else next(_ports)
            flow = self.flows[user] = Flow(local, remote, cid)
        contact = contact or f"<sip:{user}@10.0.0.{len(self.flows)}:5062>"
        text = (
            "REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} 10.0.0.1:5062;branch=z9hG4bK{user}{cseq}\r\n"
            f"To: <sip:{user}@example.com>\r\nFrom: <sip:{user}@example.com>;tag=t{user}\r\n"
            f"Call-ID: {call_id or user}-reg\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: {contact};expires={expires}\r\nContent-Length: 0\r\n\r\n"
        )
        request = parse_datagram(text.encode())
        response = self.registrar.save(request, flow, nat=nat, sipping=sipping).result
        assert response.status == 200, response
        return flow

    def advance(self, seconds: float, step: float | None = None) -> list[Sent]:
        """Advance the clock in steps (as a reactor would run the loop's ticks) and return the sends."""
        step = step or seconds
        done = 0.0
        while done < seconds - 1e-9:
            self.clock.advance(min(step, seconds - done))
            done += step
        return self.sender.take()

    def answer(self, sent: Sent, status: int = 200) -> Response:
        """The phone's reply to one SIP ping, as it comes back to the node."""
        ping = sent.message
        assert isinstance(ping, Request)
        response = ping.make_response(status, to_tag="phone")
        return parse_datagram(response.to_bytes())  # type: ignore[return-value]


def lines(events: list[dict], namespace: str = "edgeproxy.nathelper") -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events if e.get("log_namespace") == namespace]


# -- what is pinged, when, where to --------------------------------------------------------------------


def test_only_nat_bindings_are_pinged_every_interval() -> None:
    w = World(natping_interval=30)
    nat_flow = w.register("alice", nat=True)
    w.register("bob", nat=False)
    w.pinger.start("127.0.0.1")
    assert w.advance(29.9) == []  # nothing before the first interval has passed
    sent = w.advance(0.1)
    assert len(sent) == 1 and sent[0].keepalive
    assert sent[0].destination == Destination(nat_flow.remote, nat_flow, flow_only=True)
    for _ in range(3):
        assert w.advance(29.9) == []
        again = w.advance(0.1)
        assert [s.remote for s in again] == [nat_flow.remote]


def test_ping_goes_from_the_registers_listener_to_its_source_never_to_the_contact() -> None:
    w = World(natping_interval=10)
    flow = w.register("alice", local=LOCAL_UDP2, contact="<sip:alice@10.1.2.3:5062>")
    w.pinger.start()
    (sent,) = w.advance(10)
    assert sent.destination.flow == flow and sent.destination.flow.local == LOCAL_UDP2  # the REGISTER's socket
    assert sent.remote == flow.remote and sent.remote.host == "203.0.113.7"  # received, not 10.1.2.3
    assert sent.destination.flow_only  # if that listener is gone: a failure, not another socket


def test_interval_zero_is_off() -> None:
    w = World(natping_interval=0)
    w.register("alice")
    w.pinger.start()
    assert not w.pinger.running
    assert not any(isinstance(c.func, LoopingCall) for c in w.clock.getDelayedCalls())
    assert w.advance(3000, step=60) == []


def test_pings_are_spread_across_partitions_each_binding_once_per_interval() -> None:
    w = World(natping_interval=40, natping_partitions=4)
    flows = [w.register(f"user{i}") for i in range(64)]
    w.pinger.start()
    times: dict[Endpoint, list[float]] = {}
    slices = []
    for _ in range(8):  # two intervals, tick by tick
        sent = w.advance(10)
        slices.append(len(sent))
        for s in sent:
            times.setdefault(s.remote, []).append(w.clock.seconds())
    assert set(times) == {f.remote for f in flows}
    assert all(len(t) == 2 and t[1] - t[0] == 40 for t in times.values())  # same phase every interval
    assert sum(slices[:4]) == 64 and max(slices) < 64 and sum(1 for n in slices[:4] if n) >= 3  # spread out


def test_keepalive_or_options_by_the_bindings_sipping_flag() -> None:
    w = World(natping_interval=30)
    crlf_flow = w.register("alice")
    sip_flow = w.register("bob", sipping=True, contact="<sip:bob@10.0.0.9:5062;line=x>")
    w.pinger.start("192.0.2.1")
    sent = {s.remote: s for s in w.advance(30)}
    assert sent[crlf_flow.remote].data == b"\r\n\r\n" == KEEPALIVE.to_bytes()
    ping = sent[sip_flow.remote].message
    assert isinstance(ping, Request) and ping.method == "OPTIONS"
    assert ping.uri_text == "sip:bob@10.0.0.9:5062;line=x" and str(ping.to.uri) == ping.uri_text
    assert str(ping.from_.uri) == "sip:pinger@192.0.2.1" and ping.from_tag
    via = ping.top_via
    assert (via.transport, via.host, via.port) == ("UDP", "127.0.0.1", 5060)
    assert via.branch.startswith(w.pinger.branch_prefix) and via.branch.startswith("z9hG4bK")
    assert "rport" in via.params
    assert ping.cseq.method == "OPTIONS" and ping.max_forwards == 70 and ping.body == b""
    second = next(s for s in w.advance(30) if s.remote == sip_flow.remote).message
    assert second.top_via.branch != via.branch and second.call_id != ping.call_id  # a new ping each time


def test_sipping_method_and_from_are_configurable() -> None:
    w = World(natping_interval=30, sipping_method="INFO", sipping_from="sip:keepalive@edge.example.com")
    w.register("bob", sipping=True)
    w.pinger.start("127.0.0.1")
    (sent,) = w.advance(30)
    ping = sent.message
    assert ping.method == "INFO" and ping.cseq.method == "INFO"
    assert str(ping.from_.uri) == "sip:keepalive@edge.example.com"


def test_sip_pings_carry_the_user_agent_header_when_one_is_set() -> None:
    """OpenSIPS user_agent_header: the pings are requests of the node's own; "" sends none."""
    w = World(natping_interval=30, user_agent_header="User-Agent: edgeproxy (9.9)")
    w.register("bob", sipping=True)
    w.pinger.start("127.0.0.1")
    (sent,) = w.advance(30)
    assert sent.message.headers.values("user-agent") == ["edgeproxy (9.9)"]
    quiet = World(natping_interval=30)
    quiet.register("bob", sipping=True)
    quiet.pinger.start("127.0.0.1")
    (sent,) = quiet.advance(30)
    assert "user-agent" not in sent.message.headers


def test_ipv6_node_host_is_bracketed_in_the_default_from() -> None:
    w = World(natping_interval=30)
    w.register("bob", sipping=True)
    w.pinger.start("::1")
    (sent,) = w.advance(30)
    assert str(sent.message.from_.uri) == "sip:pinger@[::1]"


# -- replies ---------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []


def node_world(**settings: Any) -> tuple[World, Node, Recorder]:
    """A World whose pinger is attached to a real Node running a route that records every call."""
    w = World(**settings)
    rec = Recorder()
    mod = types.ModuleType("natping_routes")

    def request_route(msg: Any) -> None:
        rec.calls.append(f"request {msg.method}")
        msg.sl_send_reply(200, "OK")

    def onreply_route(msg: Any, reply: Any) -> None:
        rec.calls.append(f"reply {reply.status}")

    node = Node(w.clock, w.sender, w.registrar, RouteModule("natping_routes", mod, request_route,
                                                            onreply_route=onreply_route),
                ProxySettings(domains=("example.com",)), pinger=w.pinger)
    node.add_local_endpoint(LOCAL_UDP)
    return w, node, rec


def test_options_replies_are_matched_and_swallowed_by_the_node(logged: list[dict]) -> None:
    w, node, rec = node_world(natping_interval=30, remove_on_timeout=True, max_pings_lost=2)
    flow = w.register("bob", sipping=True)
    w.pinger.start()
    for _ in range(5):  # answered every time: never removed
        (ping,) = w.advance(30)
        for status in (200, 405):  # any answer counts; a retransmitted answer is swallowed too
            node.message_received(w.answer(ping, status), flow)
    assert w.sender.take() == []  # nothing forwarded (a stray response with our Via would be)
    assert rec.calls == []  # no route saw them
    assert w.pinger.stats["replies"] == 10
    assert w.location.get("bob")
    assert not any("stray" in line for line in lines(logged, "edgeproxy.proxy"))
    # a response that is not ours is still a stray one for the node
    other = parse_datagram(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKother\r\n"
                           b"From: <sip:x@y>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
                           b"Content-Length: 0\r\n\r\n")
    node.message_received(other, flow)
    assert any("stray" in line for line in lines(logged, "edgeproxy.proxy"))
    assert not w.pinger.response_received(other)


def test_late_reply_after_stop_is_still_swallowed() -> None:
    w, node, rec = node_world(natping_interval=30)
    flow = w.register("bob", sipping=True)
    w.pinger.start()
    (ping,) = w.advance(30)
    w.pinger.stop()
    node.message_received(w.answer(ping), flow)
    assert w.sender.take() == [] and rec.calls == []


def test_unanswered_sip_pings_remove_the_binding_after_max_pings_lost(logged: list[dict]) -> None:
    w = World(natping_interval=30, remove_on_timeout=True, max_pings_lost=3)
    listener = LocationRecorder()
    w.location.subscribe(listener)
    w.register("bob", sipping=True, contact="<sip:bob@10.0.0.9:5062>")
    w.register("alice")  # CRLF-pinged: cannot answer, never removed
    w.pinger.start()
    for n in range(3):  # pings 1-3 go out unanswered
        sent = w.advance(30)
        assert len(sent) == 2, n
    sent = w.advance(30)  # the 4th is due: 3 lost in a row -> removed instead
    assert [s.keepalive for s in sent] == [True]
    assert w.location.get("bob") == [] and w.location.get("alice")
    assert listener.events[-1] == ("emptied", "bob")  # as an expired binding goes
    assert w.pinger.stats["removed"] == 1
    (line,) = [x for x in lines(logged) if "removed" in x]
    assert "bob" in line and "sip:bob@10.0.0.9:5062" in line and "3" in line
    assert len(w.advance(300, step=30)) == 10  # alice only from now on


def test_an_answer_resets_the_lost_count() -> None:
    w, node, _ = node_world(natping_interval=30, remove_on_timeout=True, max_pings_lost=2)
    flow = w.register("bob", sipping=True)
    w.pinger.start()
    w.advance(30)  # ping 1: unanswered
    (ping,) = w.advance(30)  # ping 2 (1 lost so far)
    node.message_received(w.answer(ping), flow)
    w.advance(30)  # ping 3: unanswered (0 lost: 2 was answered)
    assert w.location.get("bob")
    assert len(w.advance(30)) == 1  # ping 4 (1 lost)
    assert w.advance(30) == [] and w.location.get("bob") == []  # 2 lost in a row


def test_a_re_registration_resets_the_lost_count() -> None:
    w = World(natping_interval=30, remove_on_timeout=True, max_pings_lost=2)
    w.register("bob", sipping=True, call_id="b")
    w.pinger.start()
    w.advance(30)
    w.advance(30)  # 1 lost
    w.register("bob", sipping=True, call_id="b", cseq=2)  # the phone refreshed its registration
    w.advance(30)  # counting starts again
    w.advance(30)
    assert w.location.get("bob")
    w.advance(30)
    assert w.location.get("bob") == []


def test_without_remove_on_timeout_silent_bindings_stay_and_are_still_pinged() -> None:
    w = World(natping_interval=30, max_pings_lost=1)
    w.register("bob", sipping=True)
    w.pinger.start()
    assert len(w.advance(600, step=30)) == 20
    assert w.location.get("bob") and w.pinger.stats["removed"] == 0


def test_state_of_gone_bindings_is_forgotten() -> None:
    w = World(natping_interval=30)
    for i in range(20):
        w.register(f"u{i}", sipping=True)
    w.pinger.start()
    w.advance(30)
    assert len(w.pinger._in_flight) == 20
    for i in range(20):
        w.location.remove(f"u{i}")
    w.advance(30)
    assert w.pinger._in_flight == {} and all(not s for s in w.pinger._states)


# -- robustness ------------------------------------------------------------------------------------------


def aor_in(part: int, parts: int, prefix: str) -> str:
    return next(f"{prefix}{i}" for i in count() if hash(f"{prefix}{i}") % parts == part)


def test_bindings_expiring_or_removed_between_slices_are_skipped() -> None:
    w = World(natping_interval=20, natping_partitions=2)
    w.registrar.settings = RegistrarSettings(min_expires=1)
    first = aor_in(0, 2, "a")
    expiring, removed, kept = aor_in(1, 2, "x"), aor_in(1, 2, "r"), aor_in(1, 2, "k")
    w.register(first)
    w.register(removed)
    w.register(kept)
    w.pinger.start()
    w.clock.advance(5)
    w.register(expiring, expires=10)  # expires at +15: after slice 0 (+10) lists it, before slice 1 (+20)
    sent = w.advance(5)  # slice 0 (+10): the AoRs are listed, partition 0 pinged
    assert [s.remote for s in sent] == [w.flows[first].remote]
    w.location.remove(removed)
    sent = w.advance(10)  # slice 1 (+20)
    assert [s.remote for s in sent] == [w.flows[kept].remote]


def test_a_late_tick_runs_the_slices_it_missed() -> None:
    w = World(natping_interval=40, natping_partitions=4)
    flows = [w.register(f"user{i}") for i in range(32)]
    w.pinger.start()
    sent = w.advance(40)  # one jump: the reactor was busy for a whole interval
    assert sorted(s.remote.port for s in sent) == sorted(f.remote.port for f in flows)
    assert len(w.advance(400)) == 32  # never more than one interval's worth at once


def test_send_failures_are_logged_once_per_binding_and_never_raise(logged: list[dict]) -> None:
    w = World(natping_interval=30)
    bad = w.register("bad")
    boom = w.register("boom", sipping=True)
    good = w.register("good")
    w.sender.fail_to.add(bad.remote)
    w.sender.raise_to.add(boom.remote)
    w.pinger.start()
    for _ in range(4):
        sent = w.advance(30)
        assert good.remote in [s.remote for s in sent]
    assert w.pinger.running
    failures = [x for x in lines(logged) if "cannot ping" in x]
    assert len(failures) == 2 and any("bad" in x for x in failures) and any("boom" in x for x in failures)
    assert w.pinger.stats["send_failures"] == 8
    w.sender.fail_to.clear()  # it recovers, then fails again: that is news, logged again
    w.advance(30)
    w.sender.fail_to.add(bad.remote)
    w.advance(30)
    assert len([x for x in lines(logged) if "cannot ping" in x and "bad" in x]) == 2


def test_a_location_that_raises_does_not_stop_the_loop(logged: list[dict]) -> None:
    w = World(natping_interval=30)
    w.register("alice")
    w.pinger.start()
    real = w.location.aors
    w.location.aors = lambda: (_ for _ in ()).throw(RuntimeError("store broke"))  # type: ignore[method-assign]
    assert w.advance(30) == []
    assert w.pinger.running
    w.location.aors = real  # type: ignore[method-assign]
    assert len(w.advance(30)) == 1


def test_nothing_is_sent_after_stop() -> None:
    w = World(natping_interval=30, natping_partitions=3)
    for i in range(10):
        w.register(f"u{i}", sipping=bool(i % 2))
    w.pinger.start()
    assert w.advance(30, step=10)
    w.pinger.stop()
    assert not w.pinger.running
    assert not any(isinstance(c.func, LoopingCall) for c in w.clock.getDelayedCalls())  # no timer left
    assert w.advance(600, step=10) == []
    w.pinger.start()  # and it can start again
    assert len(w.advance(30, step=10)) == 10


# -- transports ----------------------------------------------------------------------------------------


def test_tcp_flows_are_not_pinged_unless_natping_tcp() -> None:
    w = World(natping_interval=30)
    w.register("tcp", transport="TCP")
    w.register("tls", transport="TLS")
    udp = w.register("udp")
    w.pinger.start()
    assert [s.remote for s in w.advance(30)] == [udp.remote]


def test_natping_tcp_pings_over_the_existing_connection_only() -> None:
    w = World(natping_interval=30, natping_tcp=True)
    tcp = w.register("tcp", transport="TCP")
    tls = w.register("tls", transport="TLS", sipping=True)
    w.register("ws", transport="WS")  # WebSocket clients have [ws] ping_interval: never pinged here
    w.pinger.start()
    sent = {s.remote: s for s in w.advance(30)}
    assert set(sent) == {tcp.remote, tls.remote}
    for flow in (tcp, tls):
        d = sent[flow.remote].destination
        assert d.flow == flow and d.flow.connection_id is not None and d.flow_only  # never dialled
    assert sent[tcp.remote].keepalive
    ping = sent[tls.remote].message
    assert ping.method == "OPTIONS" and ping.top_via.transport == "TLS"


# -- how msg.sipping reaches the binding ------------------------------------------------------------------


def test_route_flags_travel_to_the_binding() -> None:
    w = World(natping_interval=30)
    mod = types.ModuleType("natping_save")

    async def request_route(msg: Any) -> None:
        msg.nat = True
        msg.sipping = msg.tU == "bob"
        await msg.save("location")

    node = Node(w.clock, w.sender, w.registrar, RouteModule("natping_save", mod, request_route),
                ProxySettings(domains=("example.com",)))
    for user in ("alice", "bob"):
        text = (f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK{user}\r\n"
                f"To: <sip:{user}@example.com>\r\nFrom: <sip:{user}@example.com>;tag=1\r\nCall-ID: {user}\r\n"
                f"CSeq: 1 REGISTER\r\nContact: <sip:{user}@10.0.0.1:5062>\r\nContent-Length: 0\r\n\r\n")
        node.message_received(parse_datagram(text.encode()), Flow(LOCAL_UDP, public()))
    assert [r.message.status for r in w.sender.take()] == [200, 200]
    (alice,), (bob,) = w.location.get("alice"), w.location.get("bob")
    assert (alice.nat, alice.sipping, bob.nat, bob.sipping) == (True, False, True, True)


# -- configuration -------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "edgeproxy.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_nathelper_defaults_are_opensips_and_off() -> None:
    config = load_config(None)
    assert config.nathelper == NatPingSettings() and not config.nathelper.enabled
    n = config.nathelper
    assert (n.natping_interval, n.natping_partitions, n.natping_tcp, n.sipping_method, n.sipping_from,
            n.remove_on_timeout, n.max_pings_lost) == (0.0, 1, False, "OPTIONS", "", False, 3)
    assert build_node(config).pinger is None and build_node(config).node.pinger is None


def test_nathelper_section_with_every_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[nathelper]
natping_interval = 20
natping_partitions = 4
natping_tcp = true
sipping_method = "options"
sipping_from = "sip:pinger@edge.example.com"
remove_on_timeout = true
max_pings_lost = 5
"""))
    assert config.nathelper == NatPingSettings(20.0, 4, True, "OPTIONS", "sip:pinger@edge.example.com", True, 5)
    running = build_node(config, Clock())
    assert running.pinger is running.node.pinger and running.pinger.settings is config.nathelper
    assert running.pinger.location is running.location and running.pinger.sender is running.transports


@pytest.mark.parametrize(("text", "message"), [
    ("[nathelper]\nnatping_interval = -1\n",
     "config: nathelper.natping_interval: must be a number of seconds >= 0 (0: off), got -1"),
    ('[nathelper]\nnatping_interval = "30s"\n',
     'config: nathelper.natping_interval: must be a number of seconds >= 0 (0: off), got "30s"'),
    ("[nathelper]\nnatping_partitions = 0\n",
     "config: nathelper.natping_partitions: must be an integer from 1 to 1000, got 0"),
    ("[nathelper]\nnatping_tcp = 1\n", "config: nathelper.natping_tcp: must be true or false, got 1"),
    ('[nathelper]\nsipping_method = "OPT IONS"\n',
     'config: nathelper.sipping_method: must be a SIP method such as "OPTIONS", got "OPT IONS"'),
    ('[nathelper]\nsipping_from = "pinger@example.com"\n',
     ('config: nathelper.sipping_from: must be a sip: or sips: URI like "sip:pinger@example.com" '
      '("": the node\'s), got "pinger@example.com"')),
    ('[nathelper]\nsipping_from = "<sip:pinger@example.com>"\n',
     ('config: nathelper.sipping_from: must be a sip: or sips: URI like "sip:pinger@example.com" '
      '("": the node\'s), got "<sip:pinger@example.com>"')),
    ("[nathelper]\nremove_on_timeout = \"yes\"\n",
     'config: nathelper.remove_on_timeout: must be true or false, got "yes"'),
    ("[nathelper]\nmax_pings_lost = 0\n", "config: nathelper.max_pings_lost: must be an integer from 1 to 1000, got 0"),
    ("[nathelper]\nnatping_intervall = 30\n",
     'config: nathelper.natping_intervall: unknown key in [nathelper] (did you mean "natping_interval"?)'),
    ("[nathelpr]\nnatping_interval = 30\n", 'config: nathelpr: unknown section (did you mean "nathelper"?)'),
])
def test_nathelper_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message


def test_settings_refuse_nonsense_when_built_directly() -> None:
    for bad in ({"natping_interval": -1}, {"natping_partitions": 0}, {"sipping_method": "options"},
                {"max_pings_lost": 0}):
        with pytest.raises(ValueError):
            NatPingSettings(**bad)
