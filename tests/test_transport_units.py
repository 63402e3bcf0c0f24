"""Transport protocols driven without sockets: fake transports and a fake clock (the
``twisted.names`` test style), for what real sockets make slow or racy: buffer bounds, timers, and
the RFC 4475 torture messages through both transports."""

from __future__ import annotations

import pytest
from support.rfc4475 import MANIFEST, load
from support.transport import RecordingSink, request, status_of
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from edgeproxy.sip.endpoint import Endpoint
from edgeproxy.sip.parser import Limits
from edgeproxy.transport import SipDatagramProtocol, SipStreamProtocol, TransportManager
from edgeproxy.transport.tcp import LINGER_SECONDS

LOCAL_TCP = Endpoint("TCP", "127.0.0.1", 5060)


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.sent.append((data, addr))
        return len(data)


class FakeUDPPort:
    def __init__(self) -> None:
        self.socket = FakeSocket()

    def getHandle(self) -> FakeSocket:
        return self.socket


def udp_protocol(limits: Limits = Limits()) -> tuple[SipDatagramProtocol, RecordingSink, FakeSocket]:
    sink = RecordingSink()
    proto = SipDatagramProtocol(sink, limits, Endpoint("UDP", "127.0.0.1", 5060), 2)
    port = FakeUDPPort()
    proto.makeConnection(port)
    return proto, sink, port.socket


def tcp_protocol(**kwargs) -> tuple[SipStreamProtocol, RecordingSink, StringTransport, Clock]:
    sink = RecordingSink()
    clock = Clock()
    manager = TransportManager(clock, **kwargs)
    manager.start(sink)
    proto = SipStreamProtocol(manager.connections, sink, LOCAL_TCP)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, sink, transport, clock


def test_a_huge_header_is_never_buffered_beyond_the_limit_rfc3261_18_3():
    proto, sink, transport, clock = tcp_protocol()
    head = request(via="SIP/2.0/TCP 127.0.0.1:5999").split(b"Content-Length")[0] + b"X-Huge: "
    proto.dataReceived(head)
    chunk = b"a" * 8192
    high_water = 0
    for _ in range(128):  # 1 MB
        proto.dataReceived(chunk)
        high_water = max(high_water, proto.parser.buffered)
    assert high_water <= Limits().max_message_size + len(chunk)
    assert status_of(transport.value()) == 513
    assert proto.closing and sink.messages == []


def test_fatal_error_replies_then_closes_and_reports_the_flow():
    proto, sink, transport, clock = tcp_protocol()
    proto.dataReceived(request(content_length="x"))
    assert status_of(transport.value()) == 400
    assert transport.disconnecting
    clock.advance(LINGER_SECONDS)
    proto.connectionLost()
    assert [f.connection_id for f in sink.closed] == [proto.connection_id]


def test_idle_timer_counts_only_received_traffic():
    proto, sink, transport, clock = tcp_protocol(idle_timeout=300)
    clock.advance(200)
    proto.dataReceived(b"\r\n\r\n")
    assert transport.value() == b"\r\n"
    clock.advance(299)
    assert not transport.disconnected
    clock.advance(1)
    assert transport.disconnected


def test_idle_timeout_disabled():
    proto, sink, transport, clock = tcp_protocol(idle_timeout=None)
    assert clock.getDelayedCalls() == []


def test_oversized_datagram_reply_copies_compact_and_folded_headers():
    head = (b"INVITE sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.1\r\n ;branch=z9hG4bK77\r\n"
            b"i: abc@192.0.2.1\r\nf: <sip:a@example.com>;tag=1\r\nt: <sip:bob@example.com>\r\n"
            b"CSeq: 9 INVITE\r\nX-Huge: ")
    proto, sink, sock = udp_protocol(Limits(max_message_size=1000))
    proto.datagramReceived(head + b"a" * 2000, ("192.0.2.9", 5070))
    ((reply, addr),) = sock.sent
    assert status_of(reply) == 513 and addr == ("192.0.2.9", 5070)
    assert b"Via: SIP/2.0/UDP 192.0.2.1 ;branch=z9hG4bK77\r\n" in reply
    assert b"Call-ID: abc@192.0.2.1\r\n" in reply and b"CSeq: 9 INVITE\r\n" in reply
    proto.datagramReceived(b"SIP/2.0 200 OK\r\n" + head[35:] + b"a" * 2000, ("192.0.2.9", 5070))
    proto.datagramReceived(b"INVITE x SIP/2.0\r\nX: y" + b"a" * 2000, ("192.0.2.9", 5070))
    assert len(sock.sent) == 1  # a response, or a request without Via/CSeq: nothing to answer


def test_head_cut_short_by_the_peer_close_gets_400_with_its_head():
    proto, sink, transport, clock = tcp_protocol()
    data = request(via="SIP/2.0/TCP 127.0.0.1:5999")
    proto.dataReceived(data[: data.index(b"Content-Length")])
    assert transport.value() == b""
    proto.readConnectionLost()
    reply = transport.value()
    assert status_of(reply) == 400 and b" Truncated message\r\n" in reply
    assert b"Call-ID: call-1@test\r\n" in reply and b"CSeq: 1 OPTIONS\r\n" in reply
    assert b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-1\r\n" in reply
    assert transport.disconnecting and sink.messages == []


def test_udp_flow_carries_the_source_address():
    proto, sink, sock = udp_protocol()
    proto.datagramReceived(request(), ("192.0.2.9", 5070))
    message, flow = sink.messages[0]
    assert flow.remote == Endpoint("UDP", "192.0.2.9", 5070)


@pytest.mark.skipif(not MANIFEST, reason="RFC 4475 fixtures missing")
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_rfc4475_torture_messages_over_udp(name):
    info = MANIFEST[name]
    data = load(name)
    proto, sink, sock = udp_protocol()
    proto.datagramReceived(data, ("192.0.2.9", 5070))
    if info["valid"]:
        assert len(sink.messages) == 1
    else:
        assert sink.messages == []
        if info["kind"] == "request" and "status" in info:
            assert [status_of(d) for d, _ in sock.sent] == [info["status"]]
            assert sock.sent[0][1] == ("192.0.2.9", 5070)
        else:
            assert sock.sent == []


@pytest.mark.skipif(not MANIFEST, reason="RFC 4475 fixtures missing")
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_rfc4475_torture_messages_over_tcp_never_crash(name):
    info = MANIFEST[name]
    data = load(name)
    proto, sink, transport, clock = tcp_protocol()
    proto.dataReceived(data)
    proto.readConnectionLost()
    if info["valid"]:
        assert sink.messages and sink.messages[0][0].headers.get("call-id") is not None
    elif info["kind"] == "request" and "status" in info:
        assert transport.value(), "an invalid request must be answered"
        assert sink.messages == []
    assert transport.disconnecting


def test_a_broken_ack_is_never_answered_rfc3261_17():
    proto, sink, sock = udp_protocol()
    proto.datagramReceived(request("ACK", extra="Broken header line\r\n"), ("192.0.2.9", 5070))
    assert sock.sent == [] and sink.messages == []


def test_connect_timeout_fails_the_queued_sends_with_503():
    from twisted.internet.error import TimeoutError as ConnectTimeout
    from twisted.internet.testing import MemoryReactorClock
    from twisted.python.failure import Failure

    from edgeproxy.interfaces import SendError
    from edgeproxy.sip.endpoint import Destination
    from edgeproxy.sip.message import Request

    reactor = MemoryReactorClock()
    manager = TransportManager(reactor, connect_timeout=2.5)
    manager.start(RecordingSink())
    d1 = manager.send(Destination(Endpoint("TCP", "192.0.2.1", 5060)), Request("OPTIONS", "sip:a@example.com"))
    d2 = manager.send(Destination(Endpoint("TCP", "192.0.2.1", 5060)), Request("OPTIONS", "sip:b@example.com"))
    assert len(reactor.tcpClients) == 1
    host, port, factory, timeout, _ = reactor.tcpClients[0]
    assert (host, port, timeout) == ("192.0.2.1", 5060, 2.5)
    assert manager.connection_count == 1
    failures: list[Failure] = []
    for d in (d1, d2):
        d.addErrback(failures.append)
    factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectTimeout()))
    assert [f.check(SendError) for f in failures] == [SendError, SendError]
    assert {(f.value.status, f.value.reason) for f in failures} == {(503, "Connect Timeout")}
    assert manager.connection_count == 0
