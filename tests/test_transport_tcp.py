"""TCP transport over real loopback sockets (RFC 3261 §18.3 framing, §8.2.6.2 error replies,
RFC 5626 §3.5.1 CRLF keep-alive). Run with plain ``pytest`` (pytest-twisted, default reactor)."""

from __future__ import annotations

import pytest_twisted

from edgeproxy.sip.endpoint import Endpoint, Flow
from support.transport import (
    RecordingSink,
    listening,
    needs_ipv6,
    request,
    sleep,
    status_of,
)

VIA_TCP = "SIP/2.0/TCP 127.0.0.1:5999"


async def _serve(make_manager, **kwargs):
    sink = RecordingSink()
    manager = make_manager(sink, **kwargs)
    listener = await listening(manager, "tcp:127.0.0.1:0")
    return sink, manager, listener


@pytest_twisted.ensureDeferred
async def test_request_is_handed_to_the_sink_with_a_connection_flow(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    one = await clients.tcp("127.0.0.1", listener.bound.port)
    two = await clients.tcp("127.0.0.1", listener.bound.port)
    one.transport.write(request(via=VIA_TCP, call_id="one"))
    two.transport.write(request(via=VIA_TCP, call_id="two"))
    await sink.wait_messages(2)
    flows = {m.call_id: f for m, f in sink.messages}
    assert flows["one"].local == listener.local == Endpoint("TCP", "127.0.0.1", listener.bound.port)
    assert flows["one"].remote == Endpoint("TCP", "127.0.0.1", one.address[1])
    assert flows["one"].connection_id != flows["two"].connection_id
    assert all(isinstance(f.connection_id, int) for f in flows.values())
    assert manager.connection_count == 2


@pytest_twisted.ensureDeferred
async def test_message_split_across_segments_and_pipelined(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    data = request(via=VIA_TCP, call_id="a", body=b"v=0\r\n") + request(via=VIA_TCP, call_id="b")
    for i in range(0, len(data), 7):
        client.transport.write(data[i : i + 7])
        await sleep(0)
    await sink.wait_messages(2)
    assert [m.call_id for m, _ in sink.messages] == ["a", "b"]
    assert sink.messages[0][0].body == b"v=0\r\n"
    assert sink.messages[0][1] == sink.messages[1][1]


@pytest_twisted.ensureDeferred
async def test_crlfcrlf_ping_gets_crlf_pong_rfc5626_3_5_1(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    client.transport.write(b"\r\n\r\n")
    await client.wait_for(lambda data: data == b"\r\n")
    client.transport.write(b"\r\n\r\n" + request(via=VIA_TCP))
    await sink.wait_messages(1)
    await client.wait_for(lambda data: data == b"\r\n\r\n")
    assert sink.messages[0][0].method == "OPTIONS"


@pytest_twisted.ensureDeferred
async def test_framed_bad_request_gets_an_error_reply_and_the_connection_goes_on(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    missing_from = request(via=VIA_TCP, call_id="no-from").replace(b"From: <sip:alice@example.com>;tag=1928301774\r\n", b"")
    client.transport.write(missing_from)
    data = await client.wait_bytes(b"\r\n\r\n")
    assert status_of(data) == 400
    assert b"Call-ID: no-from" in data and b"branch=z9hG4bK-1" in data
    client.transport.write(request(via=VIA_TCP, call_id="v3").replace(b"sip:bob@example.com SIP/2.0", b"sip:bob@example.com SIP/3.0"))
    data = await client.wait_for(lambda d: b"SIP/2.0 505" in d)
    assert b"Call-ID: v3" in data
    client.transport.write(request(via=VIA_TCP, call_id="good"))
    await sink.wait_messages(1)
    assert sink.messages[0][0].call_id == "good"
    assert not client.is_closed


@pytest_twisted.ensureDeferred
async def test_malformed_header_line_gets_400_and_closes(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    client.transport.write(request(via=VIA_TCP, extra="No colon here\r\n") + request(via=VIA_TCP, call_id="lost"))
    await client.wait_closed()
    assert status_of(client.data) == 400
    assert b"Call-ID: call-1@test" in client.data
    assert sink.messages == []


@pytest_twisted.ensureDeferred
async def test_garbage_without_via_is_not_answered_and_closes(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    client.transport.write(b"\x16\x03\x01 not sip at all\r\nfoo\r\n\r\n")
    await client.wait_closed()
    assert client.data == b""
    await sink.wait_for(lambda: len(sink.closed) == 1)


@pytest_twisted.ensureDeferred
async def test_bad_content_length_gets_400_and_closes_rfc3261_18_3(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    client.transport.write(request(via=VIA_TCP, content_length="abc"))
    await client.wait_closed()
    assert status_of(client.data) == 400
    assert b"Call-ID: call-1@test" in client.data
    await sink.wait_for(lambda: len(sink.closed) == 1)
    assert sink.messages == []


@pytest_twisted.ensureDeferred
async def test_truncated_message_at_peer_close_gets_400(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    client.transport.write(request(via=VIA_TCP, body=b"v=0\r\n", content_length="200"))
    await sleep(0.05)
    client.transport.loseWriteConnection()
    await client.wait_closed()
    assert status_of(client.data) == 400
    assert b"Call-ID: call-1@test" in client.data and b"CSeq: 1 OPTIONS" in client.data
    assert sink.messages == []


@pytest_twisted.ensureDeferred
async def test_one_megabyte_header_gets_513_closes_and_the_listener_serves_on(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    head = request(via=VIA_TCP).split(b"Content-Length")[0]
    client.transport.write(head + b"X-Huge: " + b"a" * (1024 * 1024) + b"\r\nContent-Length: 0\r\n\r\n")
    await client.wait_closed()
    assert status_of(client.data) == 513
    assert b"Call-ID: call-1@test" in client.data
    assert sink.messages == []
    next_client = await clients.tcp("127.0.0.1", listener.bound.port)
    next_client.transport.write(request(via=VIA_TCP, call_id="next"))
    await sink.wait_messages(1)
    assert sink.messages[0][0].call_id == "next"


@pytest_twisted.ensureDeferred
async def test_idle_connection_is_closed_and_reported(make_manager, clients):
    sink, manager, listener = await _serve(make_manager, idle_timeout=0.3)
    idle = await clients.tcp("127.0.0.1", listener.bound.port)
    busy = await clients.tcp("127.0.0.1", listener.bound.port)
    for _ in range(5):
        busy.transport.write(b"\r\n\r\n")
        await sleep(0.1)
    assert idle.is_closed and not busy.is_closed
    await sink.wait_for(lambda: len(sink.closed) == 1)
    assert sink.closed[0].remote.port == idle.address[1]
    await busy.wait_closed(2.0)


@pytest_twisted.ensureDeferred
async def test_connections_beyond_max_are_refused(make_manager, clients):
    sink, manager, listener = await _serve(make_manager, max_connections=2)
    one = await clients.tcp("127.0.0.1", listener.bound.port)
    two = await clients.tcp("127.0.0.1", listener.bound.port)
    one.transport.write(request(via=VIA_TCP, call_id="one"))
    two.transport.write(request(via=VIA_TCP, call_id="two"))
    await sink.wait_messages(2)
    three = await clients.tcp("127.0.0.1", listener.bound.port)
    three.transport.write(request(via=VIA_TCP, call_id="three"))
    await three.wait_closed()
    assert manager.connection_count == 2
    one.transport.loseConnection()
    await sink.wait_for(lambda: len(sink.closed) == 1)
    four = await clients.tcp("127.0.0.1", listener.bound.port)
    four.transport.write(request(via=VIA_TCP, call_id="four"))
    await sink.wait_messages(3)
    assert [m.call_id for m, _ in sink.messages] == ["one", "two", "four"]


@pytest_twisted.ensureDeferred
async def test_peer_close_reports_flow_closed(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    client.transport.write(request(via=VIA_TCP))
    await sink.wait_messages(1)
    flow = sink.messages[0][1]
    client.transport.loseConnection()
    await sink.wait_for(lambda: sink.closed == [flow])
    assert manager.connection(flow.connection_id) is None
    assert manager.connection_count == 0


@pytest_twisted.ensureDeferred
async def test_stop_closes_connections_and_reports_them(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    client = await clients.tcp("127.0.0.1", listener.bound.port)
    client.transport.write(request(via=VIA_TCP))
    await sink.wait_messages(1)
    await manager.stop()
    assert [f.connection_id for f in sink.closed] == [sink.messages[0][1].connection_id]
    await client.wait_closed()
    assert manager.local_endpoints() == []


@needs_ipv6
@pytest_twisted.ensureDeferred
async def test_ipv6_loopback(make_manager, clients):
    sink = RecordingSink()
    manager = make_manager(sink)
    listener = await listening(manager, "tcp:[::1]:0")
    client = await clients.tcp("::1", listener.bound.port)
    client.transport.write(request(via="SIP/2.0/TCP [::1]:5999"))
    await sink.wait_messages(1)
    flow = sink.messages[0][1]
    assert flow == Flow(Endpoint("TCP", "::1", listener.bound.port), Endpoint("TCP", "::1", client.address[1]),
                        flow.connection_id)
