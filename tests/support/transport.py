"""Helpers of the transport tests (``test_transport_*``): raw UDP/TCP/TLS/WebSocket clients, a recording
:class:`~edgeproxy.interfaces.MessageSink`, request and response bytes, and the test PKI.

The transport tests run real sockets on loopback in the global reactor through pytest-twisted. Each
wait is bounded (``within``) so that a broken transport fails a test instead of hanging the run. The
fixtures built on these (``make_manager``, ``clients``, ``pki``, ``tls_clients``, ``ws_clients``) are in
``tests/conftest.py``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable

import pytest
from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import DatagramProtocol, Protocol
from zope.interface import implementer

from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.sip.errors import SipParseError
from edgeproxy.sip.message import Message
from edgeproxy.transport import TransportManager, parse_listen
from edgeproxy.transport.tls import TlsSettings

from .tls_ca import Issued, TestCA

TIMEOUT = 5.0


def within(d: Deferred, seconds: float = TIMEOUT) -> Deferred:
    """``d`` with a deadline, so that a missing event fails the test."""
    return d.addTimeout(seconds, reactor)


def sleep(seconds: float) -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="::1 is not configured on this host")


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound and released), for connection-refused tests."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def fire_ready(waiting: list[tuple[Callable[[], bool], Deferred]]) -> list[tuple[Callable[[], bool], Deferred]]:
    """Fire (with None) each waiter whose predicate now holds; return the ones still waiting."""
    still = []
    for predicate, d in waiting:
        if predicate():
            d.callback(None)
        else:
            still.append((predicate, d))
    return still


class RecordingSink:
    """A MessageSink that records everything and lets a test wait for a condition."""

    def __init__(self) -> None:
        self.messages: list[tuple[Message, Flow]] = []
        self.closed: list[Flow] = []
        self.malformed: list[tuple[SipParseError, Flow, int]] = []  # parse errors, before any reply
        self.answer_malformed = True
        self._waiting: list[tuple[Callable[[], bool], Deferred]] = []
        self.raise_on_message = False

    def message_received(self, message: Message, flow: Flow) -> None:
        self.messages.append((message, flow))
        self._check()
        if self.raise_on_message:
            raise RuntimeError("sink exploded")

    def flow_closed(self, flow: Flow) -> None:
        self.closed.append(flow)
        self._check()

    def malformed_received(self, error: SipParseError, flow: Flow, size: int) -> bool:
        self.malformed.append((error, flow, size))
        self._check()
        return self.answer_malformed

    def _check(self) -> None:
        self._waiting = fire_ready(self._waiting)

    def wait_for(self, predicate: Callable[[], bool], seconds: float = TIMEOUT) -> Deferred:
        if predicate():
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.append((predicate, d))
        return within(d, seconds)

    def wait_messages(self, n: int, seconds: float = TIMEOUT) -> Deferred:
        return self.wait_for(lambda: len(self.messages) >= n, seconds)


class RawUDP(DatagramProtocol):
    """A client socket that sends bytes and queues whatever comes back."""

    noisy = False

    def __init__(self) -> None:
        self.received: DeferredQueue = DeferredQueue()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.put((data, addr))

    def next(self, seconds: float = TIMEOUT) -> Deferred:
        return within(self.received.get(), seconds)

    @property
    def address(self) -> tuple[str, int]:
        host = self.transport.getHost()
        return host.host, host.port


class RawTCP(Protocol):
    """A client connection that collects the raw bytes it receives."""

    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred = Deferred()
        self.is_closed = False
        self._waiting: list[tuple[Callable[[bytes], bool], Deferred]] = []

    def connectionMade(self) -> None:
        host = self.transport.getHost()
        self.address = (host.host, host.port)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        still = []
        for predicate, d in self._waiting:
            if predicate(self.data):
                d.callback(self.data)
            else:
                still.append((predicate, d))
        self._waiting = still

    def connectionLost(self, reason: Any = None) -> None:
        self.is_closed = True
        self.lost.callback(None)
        for _, d in self._waiting:
            d.errback(AssertionError(f"connection closed; received {self.data[:200]!r}"))
        self._waiting = []

    def wait_for(self, predicate: Callable[[bytes], bool], seconds: float = TIMEOUT) -> Deferred:
        if predicate(self.data):
            return succeed(self.data)
        d: Deferred = Deferred()
        self._waiting.append((predicate, d))
        return within(d, seconds)

    def wait_bytes(self, needle: bytes, seconds: float = TIMEOUT) -> Deferred:
        return self.wait_for(lambda data: needle in data, seconds)

    def wait_closed(self, seconds: float = TIMEOUT) -> Deferred:
        if self.is_closed:
            return succeed(None)
        d: Deferred = Deferred()
        self.lost.addBoth(lambda r: (d.called or d.callback(None), r)[1])
        return within(d, seconds)


def request(method: str = "OPTIONS", *, call_id: str = "call-1@test", branch: str = "z9hG4bK-1",
            via: str = "SIP/2.0/UDP 127.0.0.1:5999", extra: str = "", body: bytes = b"",
            content_length: str | None = None) -> bytes:
    """A valid request (every header §8.1.1 asks for), tweakable to break it."""
    cl = str(len(body)) if content_length is None else content_length
    head = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: {via};branch={branch}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag=1928301774\r\n"
        f"To: <sip:bob@example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        f"Content-Length: {cl}\r\n\r\n"
    )
    return head.encode() + body


def response(status: int = 200, *, call_id: str = "call-1@test", branch: str = "z9hG4bK-1") -> bytes:
    return (
        f"SIP/2.0 {status} OK\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch}\r\n"
        f"From: <sip:alice@example.com>;tag=1928301774\r\n"
        f"To: <sip:bob@example.com>;tag=a6c85cf\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def status_of(data: bytes) -> int:
    assert data.startswith(b"SIP/2.0 "), data[:100]
    return int(data[8:11])


VIA_TLS = "SIP/2.0/TLS 127.0.0.1:5999"
VIA_WSS = "SIP/2.0/WSS df7jal23ls0d.invalid"


class Pki:
    """The TLS tests' certificates: a CA, server and client identities, a wildcard, a wrong name, and a
    rogue CA with a client of its own."""

    def __init__(self, directory: Path) -> None:
        self.ca = TestCA(directory / "ca")
        self.server = self.ca.issue("server", dns=["sip.test", "localhost"], ips=["127.0.0.1", "::1"],
                                    client=True)
        self.other = self.ca.issue("other", dns=["other.test"])
        self.wild = self.ca.issue("wild", dns=["*.wild.test"])
        self.wrong = self.ca.issue("wrong", dns=["wrong.test"])
        self.client = self.ca.issue("client", dns=["client.test"], client=True, server=False)
        self.rogue_ca = TestCA(directory / "rogue", "rogue CA")
        self.rogue = self.rogue_ca.issue("rogue", dns=["client.test"], client=True)

    def settings(self, identity: Issued | None = None, **kwargs: Any) -> TlsSettings:
        identity = identity or self.server
        kwargs.setdefault("ca", self.ca.cert)
        return TlsSettings(certificate=identity.cert, key=identity.key, **kwargs)


def pem(*paths: str) -> bytes:
    """The PEM files at ``paths``, concatenated."""
    return b"".join(Path(p).read_bytes() for p in paths)


@implementer(IHandshakeListener)
class TlsClient(RawTCP):
    """A raw client over TLS that also tells when its handshake completed."""

    def __init__(self) -> None:
        super().__init__()
        self.handshake: Deferred = Deferred()

    def handshakeCompleted(self) -> None:
        if not self.handshake.called:
            self.handshake.callback(self)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.handshake.called:
            self.handshake.errback(reason)
        super().connectionLost(reason)

    def wait_handshake(self) -> Deferred:
        return within(self.handshake)

    def peer_common_name(self) -> str:
        from cryptography.x509.oid import NameOID

        cert = self.transport.getPeerCertificate().to_cryptography()
        return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


class WsClient(WebSocketClientProtocol):
    """A WebSocket client that records frames and its close."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[bytes, bool]] = []
        self.opened: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.close_code: int | None = None
        self._waiting: list[tuple[Callable[[], bool], Deferred]] = []

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.append((payload, isBinary))
        self._check()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code = code
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"WebSocket not opened: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback(code)
        for _, d in self._waiting:
            d.errback(AssertionError(f"closed with {code} {reason}; frames {self.frames!r}"))
        self._waiting = []

    def _check(self) -> None:
        self._waiting = fire_ready(self._waiting)

    def wait_frames(self, n: int) -> Deferred:
        if len(self.frames) >= n:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.append((lambda: len(self.frames) >= n, d))
        return within(d)

    def wait_closed(self, seconds: float = TIMEOUT) -> Deferred:
        d: Deferred = Deferred()
        self.closed.addBoth(lambda r: (d.called or d.callback(r), r)[1])
        return within(d, seconds)


async def listening(manager: TransportManager, spec: str) -> Any:
    """Open ``spec`` on ``manager`` and return the listener."""
    return await manager.listen(parse_listen(spec))


__all__ = [
    "Endpoint", "Pki", "RawTCP", "RawUDP", "RecordingSink", "TIMEOUT", "TlsClient", "VIA_TLS", "VIA_WSS", "WsClient",
    "free_tcp_port", "ipv6_loopback", "listening", "needs_ipv6", "request", "response", "sleep", "status_of",
    "within",
]
