"""UDP transport over real loopback sockets (RFC 3261 §18.1.1, §18.2.1, §18.3, §8.2.6.2; RFC 3581;
RFC 5626 §4.4.2 STUN keep-alive). Run with plain ``pytest`` (pytest-twisted, default reactor)."""

from __future__ import annotations

import os
import struct

import pytest_twisted

from edgeproxy.sip.endpoint import Destination, Endpoint, Flow
from edgeproxy.sip.message import Request, Response
from edgeproxy.sip.parser import Limits
from edgeproxy.transport.stun import MAGIC_COOKIE
from support.transport import (
    RecordingSink,
    listening,
    needs_ipv6,
    request,
    response,
    status_of,
)


@pytest_twisted.ensureDeferred
async def test_request_is_handed_to_the_sink_with_its_flow(make_manager, clients):
    sink = RecordingSink()
    manager = make_manager(sink)
    listener = await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    client.transport.write(request(), ("127.0.0.1", listener.bound.port))
    await sink.wait_messages(1)
    message, flow = sink.messages[0]
    assert isinstance(message, Request) and message.method == "OPTIONS"
    assert flow == Flow(Endpoint("UDP", "127.0.0.1", listener.bound.port),
                        Endpoint("UDP", "127.0.0.1", client.address[1]))
    assert flow.connection_id is None


@pytest_twisted.ensureDeferred
async def test_crlf_keepalive_is_ignored_rfc5626_3_5_1(make_manager, clients):
    sink = RecordingSink()
    manager = make_manager(sink)
    listener = await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    address = ("127.0.0.1", listener.bound.port)
    client.transport.write(b"\r\n\r\n", address)
    client.transport.write(b"\r\n", address)
    client.transport.write(request(), address)
    await sink.wait_messages(1)
    assert len(sink.messages) == 1
    assert client.received.pending == []


async def _expect_reply(make_manager, clients, data: bytes, status: int = 400, **kwargs) -> bytes:
    sink = RecordingSink()
    manager = make_manager(sink, **kwargs)
    listener = await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    client.transport.write(data, ("127.0.0.1", listener.bound.port))
    reply, source = await client.next()
    assert source[1] == listener.bound.port
    assert status_of(reply) == status, reply
    assert b"Call-ID: call-1@test" in reply
    assert b"branch=z9hG4bK-1" in reply
    assert sink.messages == []
    return reply


@pytest_twisted.ensureDeferred
async def test_malformed_header_line_gets_400_rfc3261_8_2_6_2(make_manager, clients):
    data = request(extra="This line has no colon\r\n")
    await _expect_reply(make_manager, clients, data)


@pytest_twisted.ensureDeferred
async def test_missing_from_gets_400(make_manager, clients):
    data = request().replace(b"From: <sip:alice@example.com>;tag=1928301774\r\n", b"")
    reply = await _expect_reply(make_manager, clients, data)
    assert b"From" in reply.split(b"\r\n")[0] or b"Missing" in reply.split(b"\r\n")[0]


@pytest_twisted.ensureDeferred
async def test_content_length_beyond_datagram_gets_400_rfc3261_18_3(make_manager, clients):
    await _expect_reply(make_manager, clients, request(body=b"v=0\r\n", content_length="500"))


@pytest_twisted.ensureDeferred
async def test_non_numeric_content_length_gets_400(make_manager, clients):
    await _expect_reply(make_manager, clients, request(content_length="ten"))


@pytest_twisted.ensureDeferred
async def test_truncated_datagram_without_empty_line_gets_400(make_manager, clients):
    data = request()[: -len(b"Content-Length: 0\r\n\r\n")]
    await _expect_reply(make_manager, clients, data)


@pytest_twisted.ensureDeferred
async def test_oversized_datagram_gets_513_rfc3261_21_5_14(make_manager, clients):
    data = request(extra="X-Padding: " + "a" * 1500 + "\r\n")
    await _expect_reply(make_manager, clients, data, status=513, limits=Limits(max_message_size=1000))


@pytest_twisted.ensureDeferred
async def test_garbage_and_broken_responses_are_dropped_and_the_listener_survives(make_manager, clients):
    sink = RecordingSink()
    manager = make_manager(sink)
    listener = await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    address = ("127.0.0.1", listener.bound.port)
    for junk in (b"\x00\xff\xfe garbage", b"hello\r\n\r\n", os.urandom(300),
                 response().replace(b"CSeq: 1 OPTIONS\r\n", b"")):
        client.transport.write(junk, address)
    client.transport.write(request(call_id="after-junk"), address)
    await sink.wait_messages(1)
    assert sink.messages[0][0].call_id == "after-junk"
    assert client.received.pending == []


@pytest_twisted.ensureDeferred
async def test_sink_exception_does_not_escape(make_manager, clients):
    sink = RecordingSink()
    sink.raise_on_message = True
    manager = make_manager(sink)
    listener = await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    client.transport.write(request(call_id="a"), ("127.0.0.1", listener.bound.port))
    client.transport.write(request(call_id="b"), ("127.0.0.1", listener.bound.port))
    await sink.wait_messages(2)


@pytest_twisted.ensureDeferred
async def test_valid_response_is_delivered(make_manager, clients):
    sink = RecordingSink()
    manager = make_manager(sink)
    listener = await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    client.transport.write(response(180), ("127.0.0.1", listener.bound.port))
    await sink.wait_messages(1)
    assert isinstance(sink.messages[0][0], Response) and sink.messages[0][0].status == 180


@pytest_twisted.ensureDeferred
async def test_stun_binding_request_gets_reflexive_address_rfc5626_4_4_2(make_manager, clients):
    manager = make_manager()
    listener = await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    txid = os.urandom(12)
    client.transport.write(struct.pack("!HHI", 1, 0, MAGIC_COOKIE) + txid, ("127.0.0.1", listener.bound.port))
    reply, _ = await client.next()
    kind, length, cookie = struct.unpack_from("!HHI", reply)
    assert (kind, cookie, reply[8:20]) == (0x0101, MAGIC_COOKIE, txid)
    attr, attr_len, _, family, xport = struct.unpack_from("!HHBBH", reply, 20)
    assert (attr, family) == (0x0020, 1)
    assert xport ^ (MAGIC_COOKIE >> 16) == client.address[1]
    xaddr = struct.unpack_from("!I", reply, 28)[0] ^ MAGIC_COOKIE
    assert xaddr == 0x7F000001


@pytest_twisted.ensureDeferred
async def test_response_is_sent_from_the_listener_the_request_came_on_rfc3581_4(make_manager, clients):
    sink = RecordingSink()
    manager = make_manager(sink)
    first = await listening(manager, "udp:127.0.0.1:0")
    second = await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    client.transport.write(request(), ("127.0.0.1", second.bound.port))
    await sink.wait_messages(1)
    req, flow = sink.messages[0]
    assert flow.local == second.local
    flow_used = await manager.send(Destination(flow.remote, flow), req.make_response(200))
    assert flow_used is flow
    reply, source = await client.next()
    assert status_of(reply) == 200
    assert source[1] == second.bound.port != first.bound.port


@pytest_twisted.ensureDeferred
async def test_send_without_flow_uses_a_listener_of_the_family(make_manager, clients):
    manager = make_manager()
    listener = await listening(manager, "udp:127.0.0.1:0")
    client = clients.udp()
    remote = Endpoint("UDP", "127.0.0.1", client.address[1])
    flow = await manager.send(Destination(remote), Request("OPTIONS", "sip:x@example.com"))
    assert flow == Flow(listener.local, remote)
    data, source = await client.next()
    assert data.startswith(b"OPTIONS sip:x@example.com SIP/2.0\r\n")
    assert source[1] == listener.bound.port


@needs_ipv6
@pytest_twisted.ensureDeferred
async def test_ipv6_loopback(make_manager, clients):
    sink = RecordingSink()
    manager = make_manager(sink)
    listener = await listening(manager, "udp:[::1]:0")
    assert listener.local == Endpoint("UDP", "::1", listener.bound.port)
    client = clients.udp("::1")
    client.transport.write(request(via="SIP/2.0/UDP [::1]:5999"), ("::1", listener.bound.port))
    await sink.wait_messages(1)
    req, flow = sink.messages[0]
    assert flow.remote == Endpoint("UDP", "::1", client.address[1])
    await manager.send(Destination(flow.remote, flow), req.make_response(200))
    reply, _ = await client.next()
    assert status_of(reply) == 200
    assert manager.local_endpoint("UDP", Endpoint("UDP", "127.0.0.1", 5060)) is None
    assert manager.local_endpoint("UDP", Endpoint("UDP", "::1", 5060)) == listener.local
