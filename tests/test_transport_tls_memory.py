"""Idle TLS connections give back their memory-BIO buffers (``edgeproxy.transport.tls_memory``).

The swap itself is tested on a real pyOpenSSL connection pair joined by hand (no socket: what is
under test is the OpenSSL object), the sweep's timing with ``task.Clock``, and the whole path on
real loopback TLS and WSS connections of a ``TransportManager``: released after the handshake and
after a burst of traffic, and still carrying messages both ways afterwards.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from OpenSSL import SSL
from twisted.internet.task import Clock

from edgeproxy.sip.endpoint import Destination, Endpoint, Flow
from edgeproxy.transport.tls_memory import IdleTlsReclaimer, release_bio_buffers
from support.transport import (
    VIA_TLS,
    VIA_WSS,
    Pki,
    RecordingSink,
    listening,
    request,
    sleep,
    status_of,
)

# -- the swap on a connection pair -----------------------------------------------------------------


def _pump(a: SSL.Connection, b: SSL.Connection) -> None:
    """Move every pending byte between the two connections' memory BIOs until both are quiet."""
    for _ in range(50):
        moved = False
        for src, dst in ((a, b), (b, a)):
            try:
                data = src.bio_read(65536)
            except SSL.WantReadError:
                continue
            if data:
                dst.bio_write(data)
                moved = True
        if not moved:
            return


def _handshake(a: SSL.Connection, b: SSL.Connection) -> None:
    for _ in range(20):
        done = True
        for conn in (a, b):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                done = False
        _pump(a, b)
        if done:
            return
    raise AssertionError("handshake did not finish")


def _read(conn: SSL.Connection) -> bytes:
    chunks = []
    while True:
        try:
            chunks.append(conn.recv(65536))
        except SSL.WantReadError:
            return b"".join(chunks)


@pytest.fixture
def pair(pki: Pki) -> tuple[SSL.Connection, SSL.Connection]:
    server_ctx = SSL.Context(SSL.TLS_METHOD)
    server_ctx.use_certificate_chain_file(pki.server.cert)
    server_ctx.use_privatekey_file(pki.server.key)
    client_ctx = SSL.Context(SSL.TLS_METHOD)
    server, client = SSL.Connection(server_ctx, None), SSL.Connection(client_ctx, None)
    server.set_accept_state()
    client.set_connect_state()
    _handshake(client, server)
    assert _read(client) == b""  # takes in the server's TLS 1.3 session tickets
    return client, server


def test_released_buffers_are_new_bios_and_the_stream_goes_on(pair):
    client, server = pair
    client.send(b"REGISTER before")
    _pump(client, server)
    assert _read(server) == b"REGISTER before"
    old = (server._into_ssl, server._from_ssl)
    assert release_bio_buffers(server) is True
    assert release_bio_buffers(client) is True
    assert server._into_ssl not in old and server._from_ssl not in old
    # both directions still work over the new BIOs, several records each way
    for n in range(3):
        client.send(b"INVITE %d" % n + b"x" * 3000)
        server.send(b"SIP/2.0 200 OK %d" % n)
        _pump(client, server)
        assert _read(server) == b"INVITE %d" % n + b"x" * 3000
        assert _read(client) == b"SIP/2.0 200 OK %d" % n


def test_nothing_is_released_while_either_bio_holds_bytes(pair):
    client, server = pair
    client.send(b"pending")
    server.bio_write(client.bio_read(65536))  # in the server's read BIO, not yet read by OpenSSL
    into = server._into_ssl
    assert release_bio_buffers(server) is False
    assert server._into_ssl is into
    assert _read(server) == b"pending"
    server.send(b"unsent")  # in the server's write BIO, not yet taken by the transport
    out = server._from_ssl
    assert release_bio_buffers(server) is False
    assert server._from_ssl is out
    _pump(client, server)
    assert _read(client) == b"unsent"
    assert release_bio_buffers(server) is True


# -- the sweep's timing ----------------------------------------------------------------------------


class _Handle:
    def __init__(self, connection: SSL.Connection) -> None:
        self.connection = connection

    def getHandle(self) -> SSL.Connection:
        return self.connection


class _Proto:
    """A TLS connection as the reclaimer sees it: its flow (the registry's id), transport, last read."""

    def __init__(self, cid: int, connection: SSL.Connection, last: float) -> None:
        self.flow = Flow(Endpoint("TLS", "127.0.0.1", 5061), Endpoint("TLS", "192.0.2.7", 40000), cid)
        self.transport = _Handle(connection)
        self.last_received = last


def test_sweep_releases_once_per_burst_after_a_quiet_second(pair):
    client, server = pair
    clock = Clock()
    clock.advance(100.0)
    busy, quiet = _Proto(1, server, last=100.0), _Proto(2, client, last=95.0)
    reclaimer = IdleTlsReclaimer(clock, {1: busy, 2: quiet}, interval=10.0, quiet=1.0)
    reclaimer.start()
    clock.advance(0.5)
    busy.last_received = clock.seconds()  # still receiving
    assert reclaimer.released == 0  # no sweep before the first interval
    clock.advance(9.5)  # t=110: quiet since 95, busy since 100.5: both released
    assert reclaimer.released == 2
    before = (server._into_ssl, client._into_ssl)
    clock.advance(10.0)  # nothing new received: nothing touched again
    assert reclaimer.released == 2 and (server._into_ssl, client._into_ssl) == before
    busy.last_received = clock.seconds() - 0.2  # activity inside the quiet second before a sweep
    clock.advance(10.0)  # t=130: received at 119.8, quiet since: released
    assert reclaimer.released == 3
    busy.last_received = clock.seconds()
    clock.advance(10.0)
    assert reclaimer.released == 4
    reclaimer.stop()
    busy.last_received = clock.seconds()
    clock.advance(30.0)
    assert reclaimer.released == 4 and not reclaimer.running


def test_a_connection_gone_from_the_table_is_left_alone(pair):
    client, server = pair
    reclaimer = IdleTlsReclaimer(Clock(), {})
    assert reclaimer.release(_Proto(7, server, last=0.0)) is False


# -- on real connections ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_connection_is_released_after_its_handshake_and_keeps_working(make_manager, pki, tls_clients):  # noqa: F811
    sink = RecordingSink()
    manager = make_manager(sink, tls=pki.settings())
    listener = await listening(manager, "tls:127.0.0.1:0")
    client = await tls_clients(listener.bound.port)
    await client.wait_handshake()
    client.transport.write(request(via=VIA_TLS, call_id="first"))
    await sink.wait_messages(1)
    await sleep(0.05)  # the release after the handshake runs on the reactor's next turn
    reclaimer = manager.tls_reclaimer
    assert reclaimer is not None and reclaimer.running
    assert reclaimer.released == 1
    message, flow = sink.messages[0]
    proto = manager.connection(flow.connection_id)
    reclaimer.quiet = 0.0
    released = reclaimer.sweep()  # what the periodic sweep does after the burst
    assert released == 1 and reclaimer.released == 2
    await manager.send(Destination(flow.remote, flow), message.make_response(200))
    assert status_of(await client.wait_bytes(b"\r\n\r\n")) == 200
    client.transport.write(request(via=VIA_TLS, call_id="second", body=b"v=0\r\n" * 500))
    await sink.wait_messages(2)
    assert sink.messages[1][0].call_id == "second" and len(sink.messages[1][0].body) == 2500
    assert manager.connection(flow.connection_id) is proto


@pytest_twisted.ensureDeferred
async def test_wss_connection_is_released_and_keeps_working(make_manager, ws_clients, pki):  # noqa: F811
    sink = RecordingSink()
    manager = make_manager(sink, tls=pki.settings())  # ws_clients trusts this pki's CA for sip.test
    listener = await listening(manager, "wss:127.0.0.1:0")
    client = await ws_clients(listener.bound.port, secure=True)
    client.sendMessage(request("REGISTER", via=VIA_WSS), False)
    await sink.wait_messages(1)
    await sleep(0.05)
    reclaimer = manager.tls_reclaimer
    assert reclaimer is not None and reclaimer.released == 1
    message, flow = sink.messages[0]
    reclaimer.quiet = 0.0
    assert reclaimer.sweep() == 1
    await manager.send(Destination(flow.remote, flow), message.make_response(200))
    await client.wait_frames(1)
    assert status_of(client.frames[0][0]) == 200
    client.sendMessage(request("OPTIONS", via=VIA_WSS, call_id="after"), False)
    await sink.wait_messages(2)
    assert sink.messages[1][0].call_id == "after"
