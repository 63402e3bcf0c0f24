"""Shared helpers of the transport tests (imported by the other ``test_transport_*`` modules).

The transport tests run real sockets on loopback in the global reactor through pytest-twisted,
which plain ``pytest`` loads with its default reactor: no conftest is needed. Each wait is bounded
(``within``) so that a broken transport fails a test instead of hanging the run.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol

from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.sip.message import Message
from edgeproxy.transport import TransportManager, parse_listen

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


class RecordingSink:
    """A MessageSink that records everything and lets a test wait for a condition."""

    def __init__(self) -> None:
        self.messages: list[tuple[Message, Flow]] = []
        self.closed: list[Flow] = []
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

    def _check(self) -> None:
        still = []
        for predicate, d in self._waiting:
            if predicate():
                d.callback(None)
            else:
                still.append((predicate, d))
        self._waiting = still

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


@pytest.fixture
def make_manager() -> Any:
    """``make_manager(sink=None, **kwargs) -> TransportManager``; all are stopped after the test."""
    managers: list[TransportManager] = []

    def make(sink: Any = None, **kwargs: Any) -> TransportManager:
        manager = TransportManager(reactor, sink if sink is not None else RecordingSink(), **kwargs)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        pytest_twisted.blockon(within(manager.stop()))


@pytest.fixture
def clients() -> Any:
    """Opens raw clients and closes them after the test: ``udp(host)``, ``await tcp(host, port)``."""
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


async def listening(manager: TransportManager, spec: str) -> Any:
    """Open ``spec`` on ``manager`` and return the listener."""
    return await manager.listen(parse_listen(spec))


__all__ = [
    "Endpoint", "RawTCP", "RawUDP", "RecordingSink", "TIMEOUT", "clients", "free_tcp_port", "ipv6_loopback",
    "listening", "make_manager", "needs_ipv6", "request", "response", "sleep", "status_of", "within",
]
