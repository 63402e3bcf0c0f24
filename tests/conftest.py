"""Fixtures shared by several test modules; the helpers they are built on live in ``tests/support/``.

pytest puts ``tests/`` on ``sys.path`` (rootdir-relative, no package), so test modules import helpers as
``from support.transport import ...``. This file is loaded before pytest-twisted installs the reactor
of ``--reactor``: it must not import ``twisted.internet.reactor`` (directly or through a support module
that does) at import time, hence the imports inside the fixtures.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

# -- logging --------------------------------------------------------------------------------------------


@pytest.fixture
def logged() -> Any:
    """Every log event (the event dicts) emitted during the test."""
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


# -- transports on loopback (test_transport_*) ---------------------------------------------------------


@pytest.fixture
def make_manager() -> Any:
    """``make_manager(sink=None, **kwargs) -> TransportManager``; all are stopped after the test."""
    from twisted.internet import reactor

    from edgeproxy.transport import TransportManager
    from support.transport import RecordingSink, within

    managers: list[TransportManager] = []

    def make(sink: Any = None, **kwargs: Any) -> TransportManager:
        manager = TransportManager(reactor, **kwargs)
        manager.start(sink if sink is not None else RecordingSink())
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        pytest_twisted.blockon(within(manager.stop()))


@pytest.fixture
def clients() -> Any:
    """Opens raw clients and closes them after the test: ``udp(host)``, ``await tcp(host, port)``."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, maybeDeferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol

    from support.transport import TIMEOUT, RawTCP, RawUDP, within

    opened_udp: list[Any] = []
    opened_tcp: list[RawTCP] = []

    class Clients:
        def udp(self, host: str = "127.0.0.1") -> RawUDP:
            proto = RawUDP()
            opened_udp.append(reactor.listenUDP(0, proto, interface=host))
            return proto

        def tcp(self, host: str, port: int) -> Deferred:
            endpoint_type = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
            proto = RawTCP()
            opened_tcp.append(proto)
            return within(connectProtocol(endpoint_type(reactor, host, port, timeout=TIMEOUT), proto))

    yield Clients()
    for port in opened_udp:
        pytest_twisted.blockon(within(maybeDeferred(port.stopListening)))
    for proto in opened_tcp:
        if proto.transport is not None and not proto.is_closed:
            proto.transport.abortConnection()
            pytest_twisted.blockon(proto.wait_closed())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Any:
    """The TLS tests' certificates (:class:`support.transport.Pki`), made once per module; a module
    may override it (test_transport_ws has a smaller one)."""
    from support.transport import Pki

    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_clients(pki: Any) -> Any:
    """``await tls_clients(port, name="sip.test", cert=None, trust=None, **options)`` -> a connected
    :class:`support.transport.TlsClient` (its handshake may still fail: ``wait_handshake``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from twisted.internet import reactor, ssl
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS

    from support.tls_ca import Issued
    from support.transport import TIMEOUT, TlsClient, pem, within

    opened: list[TlsClient] = []

    def connect(port: int, name: str = "sip.test", cert: Issued | None = None, trust: str | None = None,
                **extra: Any) -> Deferred:
        root = ssl.Certificate.loadPEM(pem(trust or pki.ca.cert))
        if cert is not None:  # cryptography objects: pyOpenSSL's own are deprecated
            extra["certificate"] = x509.load_pem_x509_certificate(pem(cert.leaf))
            extra["privateKey"] = serialization.load_pem_private_key(pem(cert.key), None)
        creator = ssl.optionsForClientTLS(name, trustRoot=root, extraCertificateOptions=extra or None)
        endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT))
        proto = TlsClient()
        opened.append(proto)
        proto.handshake.addErrback(lambda f: f)  # observed by tests that expect a failure
        return within(connectProtocol(endpoint, proto))

    yield connect
    for proto in opened:
        if proto.transport is not None and not proto.is_closed:
            proto.transport.abortConnection()
            pytest_twisted.blockon(proto.wait_closed())


@pytest.fixture
def ws_clients(pki: Any) -> Any:
    """``await ws_clients(port, secure=False, protocols=("sip",), origin=None, path="/")`` -> open
    :class:`support.transport.WsClient`, or (``opened=False``) the client right after its TCP connect."""
    from pathlib import Path

    from autobahn.twisted.websocket import WebSocketClientFactory
    from twisted.internet import reactor, ssl
    from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

    from support.transport import TIMEOUT, WsClient, within

    opened: list[WsClient] = []

    async def connect(port: int, *, secure: bool = False, protocols: tuple[str, ...] = ("sip",),
                      origin: str | None = None, path: str = "/", wait_open: bool = True) -> WsClient:
        scheme = "wss" if secure else "ws"
        factory = WebSocketClientFactory(f"{scheme}://sip.test:{port}{path}", protocols=list(protocols),
                                         origin=origin, reactor=reactor)
        factory.protocol = WsClient
        factory.setProtocolOptions(openHandshakeTimeout=TIMEOUT, autoPingInterval=0)
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT)
        if secure:
            root = ssl.Certificate.loadPEM(Path(pki.ca.cert).read_bytes())
            endpoint = wrapClientTLS(ssl.optionsForClientTLS("sip.test", trustRoot=root), endpoint)
        proto = await within(endpoint.connect(factory))
        opened.append(proto)
        proto.opened.addErrback(lambda f: f)  # tests that expect a refusal look at it themselves
        if wait_open:
            await within(proto.opened)
        return proto  # type: ignore[no-any-return]

    yield connect
    for proto in opened:
        if proto.transport is not None and not proto.closed.called:
            proto.transport.abortConnection()
            pytest_twisted.blockon(proto.wait_closed())
