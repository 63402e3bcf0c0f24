"""Sending (the proxy's ``Sender``): flows, RFC 3261 §18 connection reuse, outbound connections,
RFC 5626 flow-only destinations, failures as ``SendError``. Run with plain ``pytest``."""

from __future__ import annotations

import pytest
import pytest_twisted

from edgeproxy.interfaces import SendError
from edgeproxy.sip.endpoint import Destination, Endpoint
from edgeproxy.sip.message import Request
from support.transport import (
    RecordingSink,
    free_tcp_port,
    listening,
    needs_ipv6,
    request,
    status_of,
)

VIA_TCP = "SIP/2.0/TCP 127.0.0.1:5999"


def options(call_id: str = "out-1") -> Request:
    raw = request(via="SIP/2.0/TCP 127.0.0.1:5998", call_id=call_id)
    from edgeproxy.sip.parser import parse_datagram

    message = parse_datagram(raw)
    assert isinstance(message, Request)
    return message


async def _inbound(make_manager, clients):
    sink = RecordingSink()
    manager = make_manager(sink)
    listener = await listening(manager, "tcp:127.0.0.1:0")
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    client.transport.write(request(via=VIA_TCP))
    await sink.wait_messages(1)
    return sink, manager, listener, client


@pytest_twisted.ensureDeferred
async def test_response_goes_back_over_the_inbound_connection_rfc3261_18_2_2(make_manager, clients):
    sink, manager, listener, client = await _inbound(make_manager, clients)
    req, flow = sink.messages[0]
    used = await manager.send(Destination(flow.remote, flow), req.make_response(200))
    assert used == flow
    data = await client.wait_bytes(b"\r\n\r\n")
    assert status_of(data) == 200


@pytest_twisted.ensureDeferred
async def test_send_to_the_remote_of_an_inbound_connection_reuses_it_rfc3261_18(make_manager, clients):
    sink, manager, listener, client = await _inbound(make_manager, clients)
    flow = sink.messages[0][1]
    used = await manager.send(Destination(Endpoint("TCP", "127.0.0.1", client.address[1])), options())
    assert used == flow
    await client.wait_bytes(b"OPTIONS sip:bob@example.com SIP/2.0\r\n")
    assert manager.connection_count == 1


@pytest_twisted.ensureDeferred
async def test_new_outbound_connection_then_reuse(make_manager):
    peer_sink = RecordingSink()
    peer = make_manager(peer_sink)
    peer_listener = await listening(peer, "tcp:127.0.0.1:0")
    sink = RecordingSink()
    manager = make_manager(sink)
    own = await listening(manager, "tcp:127.0.0.1:0")
    destination = Destination(peer_listener.local)
    first = await manager.send(destination, options("first"))
    second = await manager.send(destination, options("second"))
    assert first == second
    assert first.remote == peer_listener.local and first.local == own.local
    assert isinstance(first.connection_id, int)
    await peer_sink.wait_messages(2)
    (m1, f1), (m2, f2) = peer_sink.messages
    assert (m1.call_id, m2.call_id) == ("first", "second")
    assert f1 == f2
    assert manager.connection_count == 1
    # and the peer's answer comes back over the same connection, reported with the same flow
    await peer.send(Destination(f1.remote, f1), m1.make_response(200))
    await sink.wait_messages(1)
    assert sink.messages[0][1] == first


@pytest_twisted.ensureDeferred
async def test_messages_queue_in_order_while_connecting(make_manager):
    peer_sink = RecordingSink()
    peer = make_manager(peer_sink)
    peer_listener = await listening(peer, "tcp:127.0.0.1:0")
    manager = make_manager()
    ds = [manager.send(Destination(peer_listener.local), options(f"q{i}")) for i in range(5)]
    assert manager.connection_count == 1
    flows = [await d for d in ds]
    assert len(set(flows)) == 1
    await peer_sink.wait_messages(5)
    assert [m.call_id for m, _ in peer_sink.messages] == [f"q{i}" for i in range(5)]


@pytest_twisted.ensureDeferred
async def test_flow_only_to_a_closed_flow_fails_430_without_dialling_rfc5626_5_3(make_manager, clients):
    sink, manager, listener, client = await _inbound(make_manager, clients)
    flow = sink.messages[0][1]
    client.transport.loseConnection()
    await sink.wait_for(lambda: sink.closed == [flow])
    with pytest.raises(SendError) as info:
        await manager.send(Destination(flow.remote, flow, flow_only=True), options())
    assert (info.value.status, info.value.reason) == (430, "Flow Failed")
    assert manager.connection_count == 0


@pytest_twisted.ensureDeferred
async def test_closed_flow_without_flow_only_falls_back_to_the_remote(make_manager):
    peer_sink = RecordingSink()
    peer = make_manager(peer_sink)
    peer_listener = await listening(peer, "tcp:127.0.0.1:0")
    manager = make_manager()
    first = await manager.send(Destination(peer_listener.local), options("a"))
    await peer_sink.wait_messages(1)
    manager.connection(first.connection_id).close()
    await peer_sink.wait_for(lambda: len(peer_sink.closed) == 1)
    second = await manager.send(Destination(peer_listener.local, first), options("b"))
    assert second.connection_id != first.connection_id
    await peer_sink.wait_messages(2)


@pytest_twisted.ensureDeferred
async def test_connection_refused_fails_with_503(make_manager):
    manager = make_manager()
    port = free_tcp_port()
    with pytest.raises(SendError) as info:
        await manager.send(Destination(Endpoint("TCP", "127.0.0.1", port)), options())
    assert (info.value.status, info.value.reason) == (503, "Connection Refused")
    assert manager.connection_count == 0


@pytest_twisted.ensureDeferred
async def test_outbound_connections_count_against_max_connections(make_manager):
    peer = make_manager()
    a = await listening(peer, "tcp:127.0.0.1:0")
    b = await listening(peer, "tcp:127.0.0.1:0")
    manager = make_manager(max_connections=1)
    await manager.send(Destination(a.local), options())
    with pytest.raises(SendError) as info:
        await manager.send(Destination(b.local), options())
    assert info.value.status == 503


@pytest_twisted.ensureDeferred
async def test_no_udp_listener_and_unsupported_transport_fail(make_manager):
    manager = make_manager()
    await listening(manager, "tcp:127.0.0.1:0")
    with pytest.raises(SendError) as info:
        await manager.send(Destination(Endpoint("UDP", "127.0.0.1", 5060)), options())
    assert info.value.status == 503
    with pytest.raises(SendError):
        await manager.send(Destination(Endpoint("WSS", "127.0.0.1", 443)), options())


@pytest_twisted.ensureDeferred
async def test_host_names_are_resolved(make_manager, clients):
    manager = make_manager()
    await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    flow = await manager.send(Destination(Endpoint("UDP", "localhost", client.address[1])), options())
    assert flow.remote == Endpoint("UDP", "127.0.0.1", client.address[1])
    data, _ = await client.next()
    assert data.startswith(b"OPTIONS ")
    with pytest.raises(SendError) as info:
        await manager.send(Destination(Endpoint("UDP", "no-such-host.invalid", 5060)), options())
    assert info.value.status == 503


@pytest_twisted.ensureDeferred
async def test_stop_fails_sends_and_refuses_new_ones(make_manager):
    peer = make_manager()
    peer_listener = await listening(peer, "tcp:127.0.0.1:0")
    manager = make_manager()
    await manager.send(Destination(peer_listener.local), options())
    await manager.stop()
    assert manager.connection_count == 0
    with pytest.raises(SendError):
        await manager.send(Destination(peer_listener.local), options())


@needs_ipv6
@pytest_twisted.ensureDeferred
async def test_ipv6_outbound_connection(make_manager):
    peer_sink = RecordingSink()
    peer = make_manager(peer_sink)
    peer_listener = await listening(peer, "tcp:[::1]:0")
    manager = make_manager()
    own4 = await listening(manager, "tcp:127.0.0.1:0")
    own6 = await listening(manager, "tcp:[::1]:0")
    flow = await manager.send(Destination(peer_listener.local), options())
    assert flow.local == own6.local != own4.local
    await peer_sink.wait_messages(1)
    assert peer_sink.messages[0][1].remote.host == "::1"
