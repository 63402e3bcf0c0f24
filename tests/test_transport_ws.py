"""SIP over WebSocket (RFC 7118) on real loopback sockets: ``ws`` and ``wss`` listeners, the ``sip``
subprotocol, Origin and path checks, one SIP message per frame, size limits (1009), keep-alive and
idle closes, flows and ``flow_closed``, and the rule that WebSocket clients are never dialled.

Clients are autobahn's Twisted client in the test reactor, and raw TCP for handshakes a real client
would not make.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from edgeproxy.interfaces import SendError
from edgeproxy.sip.endpoint import Destination, Endpoint
from edgeproxy.sip.message import Request
from edgeproxy.transport.tls import TlsSettings
from edgeproxy.transport.ws import WsSettings
from support.transport import (
    VIA_WSS,
    RecordingSink,
    listening,
    request,
    sleep,
    status_of,
    within,
)
from support.tls_ca import TestCA

VIA_WS = "SIP/2.0/WS df7jal23ls0d.invalid"


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = TestCA(directory)
        self.server = self.ca.issue("server", dns=["sip.test"], ips=["127.0.0.1"])

    def tls(self) -> TlsSettings:
        return TlsSettings(certificate=self.server.cert, key=self.server.key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Pki:
    return Pki(tmp_path_factory.mktemp("wspki"))


async def _serve(make_manager: Any, spec: str = "ws:127.0.0.1:0", sink: Any = None, **kwargs: Any) -> Any:
    sink = sink or RecordingSink()
    manager = make_manager(sink, **kwargs)
    listener = await listening(manager, spec)
    return sink, manager, listener


def upgrade(port: int, *, path: str = "/", protocol: str | None = "sip", origin: str | None = None) -> bytes:
    """A browser-like upgrade request, for handshakes autobahn's client would not make."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def http_status(data: bytes) -> int:
    assert data.startswith(b"HTTP/1.1 "), data[:100]
    return int(data[9:12])


# -- handshake and messages ------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_register_frame_reaches_the_sink_and_the_reply_frame_comes_back(make_manager, ws_clients):
    sink, manager, listener = await _serve(make_manager)
    client = await ws_clients(listener.bound.port)
    assert client.websocket_protocol_in_use == "sip"
    client.sendMessage(request("REGISTER", via=VIA_WS, call_id="reg-1"), False)
    await sink.wait_messages(1)
    message, flow = sink.messages[0]
    assert message.method == "REGISTER" and message.top_via.transport == "WS"
    assert flow.local == listener.local == Endpoint("WS", "127.0.0.1", listener.bound.port)
    assert flow.remote.transport == "WS" and flow.remote.host == "127.0.0.1"
    assert isinstance(flow.connection_id, int)
    assert manager.connection_count == 1
    used = await manager.send(Destination(flow.remote, flow), message.make_response(200))
    assert used == flow
    await client.wait_frames(1)
    payload, binary = client.frames[0]
    assert not binary and status_of(payload) == 200 and b"Call-ID: reg-1" in payload
    # a request toward the client by its address alone reuses the connection (never dials)
    await manager.send(Destination(flow.remote), Request("OPTIONS", "sip:x@df7jal23ls0d.invalid;transport=ws",
                                                         message.headers.copy()))
    await client.wait_frames(2)


@pytest_twisted.ensureDeferred
async def test_wss_over_tls(make_manager, ws_clients, pki):
    sink, manager, listener = await _serve(make_manager, "wss:127.0.0.1:0", tls=pki.tls())
    client = await ws_clients(listener.bound.port, secure=True)
    client.sendMessage(request("REGISTER", via=VIA_WSS), False)
    await sink.wait_messages(1)
    message, flow = sink.messages[0]
    assert flow.local.transport == flow.remote.transport == "WSS"
    assert manager.local_endpoint("WSS") == listener.local
    await manager.send(Destination(flow.remote, flow), message.make_response(200))
    await client.wait_frames(1)
    assert status_of(client.frames[0][0]) == 200


@pytest_twisted.ensureDeferred
async def test_a_failed_wss_handshake_is_logged_and_others_carry_on(make_manager, ws_clients, clients, pki):
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []
    globalLogPublisher.addObserver(lines.append)
    try:
        sink, manager, listener = await _serve(make_manager, "wss:127.0.0.1:0", tls=pki.tls())
        good = await ws_clients(listener.bound.port, secure=True)
        plain = await clients.tcp("127.0.0.1", listener.bound.port)
        plain.transport.write(upgrade(listener.bound.port))  # HTTP where TLS was expected
        await plain.wait_closed()
        good.sendMessage(request("REGISTER", via=VIA_WSS), False)
        await sink.wait_messages(1)
        assert manager.connection_count == 1
    finally:
        globalLogPublisher.removeObserver(lines.append)
    # through the node's aggregated log of hostile input (issue 16): one line per source per interval
    failures = [formatEvent(e) for e in lines if formatEvent(e).startswith("WSS handshake failed from")]
    assert failures and f"127.0.0.1:{plain.address[1]}" in failures[0], failures


@pytest_twisted.ensureDeferred
async def test_binary_frames_and_non_utf8_bodies(make_manager, ws_clients):
    sink, manager, listener = await _serve(make_manager)
    client = await ws_clients(listener.bound.port)
    body = b"\xff\xfe binary"
    client.sendMessage(request("MESSAGE", via=VIA_WS, body=body, extra="Content-Type: application/octet-stream\r\n"),
                       True)
    await sink.wait_messages(1)
    message, flow = sink.messages[0]
    assert message.body == body
    forward = message.copy()
    await manager.send(Destination(flow.remote, flow), forward)
    await client.wait_frames(1)
    assert client.frames[0][1] is True  # not UTF-8: a binary frame, never an invalid text frame


@pytest_twisted.ensureDeferred
async def test_each_frame_is_one_message_and_keepalives_are_ignored(make_manager, ws_clients):
    sink, manager, listener = await _serve(make_manager)
    client = await ws_clients(listener.bound.port)
    client.sendMessage(b"\r\n\r\n", False)
    client.sendMessage(request(via=VIA_WS, call_id="a"), False)
    # no Content-Length over WebSocket: the frame ends the message
    client.sendMessage(request(via=VIA_WS, call_id="b").replace(b"Content-Length: 0\r\n", b""), False)
    await sink.wait_messages(2)
    assert [m.call_id for m, _ in sink.messages] == ["a", "b"]
    assert client.frames == []


@pytest_twisted.ensureDeferred
async def test_a_broken_request_gets_a_400_frame_and_the_connection_goes_on(make_manager, ws_clients):
    sink, manager, listener = await _serve(make_manager)
    client = await ws_clients(listener.bound.port)
    broken = request(via=VIA_WS, call_id="no-from").replace(b"From: <sip:alice@example.com>;tag=1928301774\r\n", b"")
    client.sendMessage(broken, False)
    await client.wait_frames(1)
    assert status_of(client.frames[0][0]) == 400 and b"Call-ID: no-from" in client.frames[0][0]
    client.sendMessage(b"not sip at all", False)  # nothing to answer with
    client.sendMessage(request(via=VIA_WS, call_id="good"), False)
    await sink.wait_messages(1)
    assert sink.messages[0][0].call_id == "good"
    assert len(client.frames) == 1 and not client.closed.called


@pytest_twisted.ensureDeferred
async def test_an_open_connection_keeps_little_state_and_still_works(make_manager, ws_clients):
    sink, manager, listener = await _serve(make_manager, ws=WsSettings(ping_interval=0.2, ping_timeout=1))
    client = await ws_clients(listener.bound.port)
    client.sendMessage(request("REGISTER", via=VIA_WS), False)
    await sink.wait_messages(1)
    message, flow = sink.messages[0]
    proto = manager.connection(flow.connection_id)
    state = vars(proto)
    assert not {"http_headers", "http_request_data", "http_response_data", "websocket_protocols"} & set(state)
    assert state["send_queue"] == () and proto.trafficStats is proto.factory.traffic
    assert len(state) < 40
    await sleep(0.5)  # pings go out and pongs come back through the compacted state
    await manager.send(Destination(flow.remote, flow), message.make_response(200))
    await client.wait_frames(1)
    client.sendMessage(request(via=VIA_WS, call_id="again"), False)
    await sink.wait_messages(2)
    assert not client.closed.called
    client.sendClose(1000)
    assert await client.wait_closed() == 1000
    await sink.wait_for(lambda: sink.closed == [flow])


@pytest_twisted.ensureDeferred
async def test_a_permessage_deflate_offer_is_declined_not_hung(make_manager, clients):
    """Browsers and Node's ``ws`` offer permessage-deflate: the 101 comes back without the extension
    (compression is off to keep connections small) instead of the handshake stalling."""
    sink, manager, listener = await _serve(make_manager)
    port = listener.bound.port
    raw = await clients.tcp("127.0.0.1", port)
    offer = upgrade(port).replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate; "
                                                 b"client_max_window_bits\r\n\r\n")
    raw.transport.write(offer)
    data = await raw.wait_bytes(b"\r\n\r\n")
    assert http_status(data) == 101 and b"sec-websocket-extensions" not in data.lower()


# -- refusals ---------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_handshake_without_the_sip_subprotocol_is_refused(make_manager, ws_clients, clients):
    sink, manager, listener = await _serve(make_manager)
    port = listener.bound.port
    for protocol in (None, "chat"):
        raw = await clients.tcp("127.0.0.1", port)
        raw.transport.write(upgrade(port, protocol=protocol))
        await raw.wait_closed()
        assert http_status(raw.data) == 400
    other = await ws_clients(port, protocols=("chat",), wait_open=False)
    with pytest.raises(ConnectionError):
        await within(other.opened)
    good = await ws_clients(port, protocols=("chat", "sip"))
    assert good.websocket_protocol_in_use == "sip"
    assert manager.connection_count == 1


@pytest_twisted.ensureDeferred
async def test_origins_a_browser_from_an_unlisted_origin_gets_403(make_manager, ws_clients, clients):
    settings = WsSettings(origins=("https://app.example.com", "https://*.tenant.example"))
    sink, manager, listener = await _serve(make_manager, ws=settings)
    port = listener.bound.port
    raw = await clients.tcp("127.0.0.1", port)
    raw.transport.write(upgrade(port, origin="https://evil.example"))
    await raw.wait_closed()
    assert http_status(raw.data) == 403
    for origin in ("https://app.example.com", "HTTPS://App.Example.com/", "https://a.tenant.example", None):
        client = await ws_clients(port, origin=origin)
        assert client.websocket_protocol_in_use == "sip"
    refused = await ws_clients(port, origin="http://app.example.com", wait_open=False)
    with pytest.raises(ConnectionError):
        await within(refused.opened)


@pytest_twisted.ensureDeferred
async def test_listen_path(make_manager, ws_clients, clients):
    sink, manager, listener = await _serve(make_manager, ws=WsSettings(path="/ws"))
    port = listener.bound.port
    raw = await clients.tcp("127.0.0.1", port)
    raw.transport.write(upgrade(port, path="/"))
    await raw.wait_closed()
    assert http_status(raw.data) == 404
    await ws_clients(port, path="/ws")
    await ws_clients(port, path="/ws/?token=1")


@pytest_twisted.ensureDeferred
async def test_a_connection_that_never_completes_the_handshake_is_dropped(make_manager, clients):
    sink, manager, listener = await _serve(make_manager, ws=WsSettings(handshake_timeout=0.3))
    silent = await clients.tcp("127.0.0.1", listener.bound.port)
    silent.transport.write(b"GET / HTTP/1.1\r\n")  # and never the rest
    await sleep(0.1)
    assert manager.connection_count == 1  # pending: counts against max_connections
    await silent.wait_closed(3.0)
    await sleep(0)
    assert manager.connection_count == 0 and sink.closed == []


@pytest_twisted.ensureDeferred
async def test_plain_http_get_is_not_served(make_manager, clients):
    sink, manager, listener = await _serve(make_manager)
    raw = await clients.tcp("127.0.0.1", listener.bound.port)
    raw.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await raw.wait_closed()
    assert http_status(raw.data) >= 400


@pytest_twisted.ensureDeferred
async def test_oversized_message_closes_with_1009_and_the_next_client_is_served(make_manager, ws_clients):
    sink, manager, listener = await _serve(make_manager, ws=WsSettings(max_message_size=4096))
    big = await ws_clients(listener.bound.port)
    big.sendMessage(request(via=VIA_WS, body=b"x" * 5000), False)
    assert await big.wait_closed() == 1009
    await sink.wait_for(lambda: len(sink.closed) == 1)
    assert sink.messages == []
    good = await ws_clients(listener.bound.port)
    good.sendMessage(request(via=VIA_WS, body=b"x" * 3000), False)
    await sink.wait_messages(1)


@pytest_twisted.ensureDeferred
async def test_max_connections_per_listener_503(make_manager, ws_clients, clients):
    sink, manager, listener = await _serve(make_manager, ws=WsSettings(max_connections=1))
    port = listener.bound.port
    await ws_clients(port)
    raw = await clients.tcp("127.0.0.1", port)
    raw.transport.write(upgrade(port))
    await raw.wait_closed()
    assert http_status(raw.data) == 503


@pytest_twisted.ensureDeferred
async def test_manager_max_connections_counts_websockets(make_manager, ws_clients, clients):
    sink, manager, listener = await _serve(make_manager, max_connections=1)
    await ws_clients(listener.bound.port)
    raw = await clients.tcp("127.0.0.1", listener.bound.port)
    await raw.wait_closed()  # closed at accept
    assert raw.data == b""


# -- flows ------------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_closing_the_websocket_calls_flow_closed_and_the_flow_then_fails_430(make_manager, ws_clients):
    sink, manager, listener = await _serve(make_manager)
    client = await ws_clients(listener.bound.port)
    client.sendMessage(request("REGISTER", via=VIA_WS), False)
    await sink.wait_messages(1)
    message, flow = sink.messages[0]
    client.sendClose(1000)
    await client.wait_closed()
    await sink.wait_for(lambda: sink.closed == [flow])
    assert manager.connection_count == 0
    with pytest.raises(SendError) as info:
        await manager.send(Destination(flow.remote, flow), message.make_response(200))
    assert info.value.status == 430


@pytest_twisted.ensureDeferred
async def test_websocket_clients_are_never_dialled(make_manager):
    sink, manager, listener = await _serve(make_manager)
    options = Request("OPTIONS", "sip:k3j@df7jal23ls0d.invalid;transport=ws")
    options.headers.add("Via", "SIP/2.0/WS 127.0.0.1;branch=z9hG4bK-x")
    for remote in (Endpoint("WS", "df7jal23ls0d.invalid", 80), Endpoint("WSS", "127.0.0.1", listener.bound.port)):
        with pytest.raises(SendError) as info:
            await manager.send(Destination(remote), options)
        assert info.value.status == 430
    assert manager.connection_count == 0


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_answer_pings_is_dropped(make_manager, ws_clients, clients):
    sink, manager, listener = await _serve(make_manager, ws=WsSettings(ping_interval=0.1, ping_timeout=0.1))
    port = listener.bound.port
    alive = await ws_clients(port)  # autobahn answers pings
    alive.sendMessage(request("REGISTER", via=VIA_WS), False)
    await sink.wait_messages(1)
    mute = await clients.tcp("127.0.0.1", port)
    mute.transport.write(upgrade(port))
    await mute.wait_bytes(b"\r\n\r\n")
    assert http_status(mute.data) == 101 and b"Sec-WebSocket-Protocol: sip" in mute.data
    await mute.wait_closed(2.0)
    assert b"\x89" in mute.data  # it was pinged (opcode 9) before it was dropped
    await sleep(0.3)
    assert not alive.closed.called and manager.connection_count == 1


@pytest_twisted.ensureDeferred
async def test_idle_timeout_closes_a_silent_connection(make_manager, ws_clients):
    settings = WsSettings(ping_interval=0, idle_timeout=0.2)
    sink, manager, listener = await _serve(make_manager, ws=settings)
    client = await ws_clients(listener.bound.port)
    client.sendMessage(request("REGISTER", via=VIA_WS), False)
    await sink.wait_messages(1)
    flow = sink.messages[0][1]
    for _ in range(4):  # traffic keeps it open
        await sleep(0.1)
        client.sendMessage(b"\r\n\r\n", False)
    assert not client.closed.called
    assert await client.wait_closed(2.0) == 1001
    await sink.wait_for(lambda: sink.closed == [flow])


@pytest_twisted.ensureDeferred
async def test_stopping_the_manager_closes_websockets_with_1001(make_manager, ws_clients):
    sink, manager, listener = await _serve(make_manager)
    client = await ws_clients(listener.bound.port)
    await within(manager.stop())
    assert await client.wait_closed() == 1001
    assert len(sink.closed) == 1


@pytest_twisted.ensureDeferred
async def test_wss_listener_needs_a_certificate(make_manager):
    manager = make_manager()
    with pytest.raises(ValueError, match="certificate"):
        await listening(manager, "wss:127.0.0.1:0")
