"""The transport manager's life cycle and its connection registry, without sockets: build, then
``start(sink)``, then ``listen``; one admission check for every stream listener; TLS handshakes
counted as pending (RFC 3261 §18, §26.2.1; RFC 7118 §5)."""

from __future__ import annotations

import pytest
from support.transport import RecordingSink
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from edgeproxy.interfaces import ConnectionRegistry, SendError
from edgeproxy.sip.endpoint import Destination, Endpoint
from edgeproxy.sip.message import Request
from edgeproxy.transport import TransportManager, parse_listen
from edgeproxy.transport.tls import SipTlsProtocol, SipTlsServerFactory

PEER = IPv4Address("TCP", "192.0.2.7", 40000)


def _failure_of(d) -> Failure:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert len(failures) == 1
    return failures[0]


def test_sends_before_start_fail_and_dial_nothing():
    reactor = MemoryReactorClock()
    manager = TransportManager(reactor)
    for transport in ("UDP", "TCP"):
        failure = _failure_of(manager.send(Destination(Endpoint(transport, "192.0.2.1", 5060)),
                                           Request("OPTIONS", "sip:a@example.com")))
        assert failure.check(SendError)
        assert (failure.value.status, failure.value.reason) == (503, "Transport Not Started")
    assert reactor.tcpClients == [] and manager.connection_count == 0


def test_listen_before_start_fails_and_binds_nothing():
    reactor = MemoryReactorClock()
    manager = TransportManager(reactor)
    failure = _failure_of(manager.listen(parse_listen("tcp:127.0.0.1:5060")))
    assert failure.check(RuntimeError)
    assert reactor.tcpServers == [] and manager.listeners == []


def test_start_takes_one_sink():
    manager = TransportManager(MemoryReactorClock())
    sink = RecordingSink()
    manager.start(sink)
    manager.start(sink)  # the same sink again: harmless
    with pytest.raises(RuntimeError):
        manager.start(RecordingSink())


def test_the_manager_connection_table_is_a_connection_registry():
    manager = TransportManager(MemoryReactorClock())
    registry: ConnectionRegistry = manager.connections  # checked by mypy; the protocols see only this
    assert registry.limits is manager.limits and registry.idle_timeout == manager.idle_timeout


def test_one_admission_check_refuses_every_stream_listener_beyond_max_connections(logged):
    reactor = MemoryReactorClock()
    manager = TransportManager(reactor, max_connections=0)
    sink = RecordingSink()
    manager.start(sink)
    manager.listen(parse_listen("tcp:127.0.0.1:5060"))
    manager.listen(parse_listen("ws:127.0.0.1:8080"))
    factories = [port[1] for port in reactor.tcpServers]
    factories.append(SipTlsServerFactory(manager.connections, sink, 10.0))
    assert [factory.buildProtocol(PEER) for factory in factories] == [None, None, None]
    # counted per kind in the node's aggregated log of hostile input; a line for the source's first (issue 16)
    noise = manager.noise
    assert {k: n for k, n in noise.totals.items() if "refused" in k} == {
        "TCP connection refused": 1, "WS connection refused": 1, "TLS connection refused": 1}
    refusals = [e for e in logged if e.get("log_namespace") == "edgeproxy.noise"]
    assert [(e["kind"], e["source"]) for e in refusals] == [("TCP connection refused", "192.0.2.7")]
    assert "0 connections open (max_connections)" in refusals[0]["detail"]


def test_a_tls_handshake_counts_as_pending_until_it_ends():
    reactor = MemoryReactorClock()
    manager = TransportManager(reactor)
    sink = RecordingSink()
    manager.start(sink)
    proto = SipTlsProtocol(manager.connections, sink, Endpoint("TLS", "127.0.0.1", 5061), handshake_timeout=3.0)
    proto.makeConnection(StringTransport(peerAddress=PEER))
    assert manager.connection_count == 1 and proto.flow is None  # pending: no id, no flow yet
    reactor.advance(3.0)  # the handshake timed out: aborted
    proto.connectionLost(Failure(ConnectionError("aborted")))
    assert manager.connection_count == 0 and sink.closed == []


def test_the_tls_buffer_reclaimer_runs_again_after_stop_and_listen():
    """``stop()`` stops the reclaimer of idle TLS buffers; a manager listening again (which stop()'s
    docstring allows) must have it running again, or TLS connections keep their buffers forever."""
    from edgeproxy.transport.tls_memory import IdleTlsReclaimer

    reactor = MemoryReactorClock()
    manager = TransportManager(reactor)
    manager.start(RecordingSink())
    table = manager.connections
    table.tls_reclaimer = reclaimer = IdleTlsReclaimer(reactor, table.by_id)
    reclaimer.start()
    manager.stop()
    assert not reclaimer.running
    listening: list[object] = []
    manager.listen(parse_listen("tcp:127.0.0.1:5060")).addCallback(listening.append)
    assert listening and table.accepting and reclaimer.running
