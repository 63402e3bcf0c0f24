"""SIP over TCP (RFC 3261 §18.1.1, §18.2.1, §18.3; RFC 5626 §3.5.1 keep-alive).

One :class:`SipStreamProtocol` per connection, inbound or outbound; it frames with the core's
``StreamParser`` and hands messages to the manager's sink, like ``twisted.names.dns.DNSProtocol``.
The manager (the controller) numbers connections, indexes them for reuse and sends on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..sip.endpoint import Endpoint, Flow
from ..sip.errors import SipParseError
from ..sip.parser import NEED_DATA, PING, StreamParser
from ._util import error_reply

if TYPE_CHECKING:
    from .manager import TransportManager, _Dial

__all__ = ["SipStreamProtocol", "SipServerFactory", "SipClientFactory", "LINGER_SECONDS"]

log = Logger(namespace="edgeproxy.transport.tcp")

LINGER_SECONDS = 2.0
"""After a fatal framing error the connection half-closes and keeps reading (and discarding) for at
most this long, so that the peer reads the error reply before the close instead of a TCP reset."""

_PONG = b"\r\n"


@implementer(IHalfCloseableProtocol)
class SipStreamProtocol(Protocol):
    """One SIP connection (RFC 3261 §18.3 stream framing by Content-Length).

    * A CRLFCRLF ping is answered with a CRLF pong (RFC 5626 §3.5.1); it never reaches the sink.
    * A request that fails to parse but is still framed is answered (400, 505 ...) and the
      connection goes on; when framing is lost or the message exceeds the size limit (``fatal``),
      the reply is sent if one is possible and the connection is closed (§18.3: "the connection
      SHOULD be closed"). The parser never buffers more than the limit plus one read.
    * The peer half-closing with a partial message buffered gets a 400 for it, then the close.
    * A connection that receives nothing for ``idle_timeout`` seconds is closed (only received
      traffic counts: a peer that never reads cannot keep a connection alive).

    ``flow`` is ``Flow(local, remote, connection_id)`` once connected; ``local`` is the advertised
    address of the TCP listener (for outbound connections the listener of the remote's family when
    there is one, else the socket's own address).
    """

    transport_name = "TCP"
    """The transport of this connection's flows (subclasses over TLS say ``TLS``)."""

    def __init__(self, manager: TransportManager, local: Endpoint | None, dial: _Dial | None = None) -> None:
        self.manager = manager
        self.local = local
        self.dial = dial
        self.parser = StreamParser(manager.limits)
        self.connection_id: int | None = None
        self.flow: Flow | None = None
        self.closing = False
        self.last_received = 0.0
        self._idle_call: IDelayedCall | None = None
        self._linger_call: IDelayedCall | None = None

    # -- life cycle --------------------------------------------------------------------------------
    def connectionMade(self) -> None:
        transport: Any = self.transport
        for option in ("setTcpNoDelay", "setTcpKeepAlive"):
            try:
                getattr(transport, option)(True)
            except Exception:  # not every transport (tests' fakes) has socket options
                pass
        self.last_received = self.manager.reactor.seconds()
        self.manager._connection_made(self)
        timeout = self.manager.idle_timeout
        if timeout:
            self._idle_call = self.manager.reactor.callLater(timeout, self._check_idle)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        for call in (self._idle_call, self._linger_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._linger_call = None
        self.manager._connection_lost(self)

    @property
    def writable(self) -> bool:
        """Whether SIP messages may still be written here (connected and not closing)."""
        transport: Any = self.transport
        return not self.closing and transport is not None and transport.connected and not transport.disconnecting

    def write_message(self, data: bytes) -> None:
        """Send one serialised SIP message on this connection."""
        self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close gracefully (pending writes are flushed)."""
        self.closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _check_idle(self) -> None:
        self._idle_call = None
        timeout = self.manager.idle_timeout
        clock = self.manager.reactor
        remaining = self.last_received + timeout - clock.seconds()
        if remaining > 0:
            self._idle_call = clock.callLater(remaining, self._check_idle)
            return
        log.info("closing {flow}: idle for {timeout}s", flow=self.flow, timeout=timeout)
        self.abort()

    # -- receiving ---------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_received = self.manager.reactor.seconds()
        parser = self.parser
        parser.feed(data)
        sink = self.manager.sink
        flow = self.flow
        while True:
            try:
                event = parser.next_event()
            except SipParseError as exc:
                if self._parse_error(exc):
                    continue
                return
            except Exception:
                log.failure("stream parser crashed on {flow}; closing", flow=flow)
                self.abort()
                return
            if event is NEED_DATA:
                return
            if event is PING:
                self.transport.write(_PONG)  # type: ignore[union-attr]
                continue
            try:
                sink.message_received(event, flow)  # type: ignore[arg-type]
            except Exception:
                log.failure("sink failed on a message from {flow}", flow=flow)
            if self.closing:
                return

    def _parse_error(self, exc: SipParseError) -> bool:
        """Answer a broken message; True when the stream is still framed and parsing goes on."""
        try:
            reply = error_reply(exc)
        except Exception:
            log.failure("failed to build the reply to a malformed message on {flow}", flow=self.flow)
            reply = None
        log.info("malformed message on {flow}: {status} {reason}{what}", flow=self.flow, status=exc.status,
                 reason=exc.reason, what=" (framing lost, closing)" if exc.fatal else "")
        if reply is not None:
            self.transport.write(reply)  # type: ignore[union-attr]
        if exc.fatal:
            self._close_after_error()
            return False
        return True

    def _close_after_error(self) -> None:
        """Lingering close: send FIN after the reply, discard whatever the peer still sends, and
        abort only if it does not close within :data:`LINGER_SECONDS`."""
        self.closing = True
        transport: Any = self.transport
        try:
            transport.loseWriteConnection()
        except Exception:
            transport.loseConnection()
            return
        self._linger_call = self.manager.reactor.callLater(LINGER_SECONDS, self.abort)

    def readConnectionLost(self) -> None:
        """The peer half-closed (or closed): answer a message cut short, then close."""
        if not self.closing:
            try:
                self.parser.close()
            except SipParseError as exc:
                try:
                    reply = error_reply(exc)
                except Exception:
                    reply = None
                if reply is not None:
                    log.info("truncated message on {flow} at peer close: 400", flow=self.flow)
                    self.transport.write(reply)  # type: ignore[union-attr]
            except Exception:
                log.failure("stream parser crashed at the close of {flow}", flow=self.flow)
        self.closing = True
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """Our side was shut down after a fatal error; wait for the peer's close (or the linger)."""


class SipServerFactory(Factory):
    """Builds the protocol of each accepted connection of one TCP listener, refusing connections
    beyond the manager's ``max_connections`` (the socket is closed as soon as it is accepted)."""

    noisy = False

    def __init__(self, manager: TransportManager) -> None:
        self.manager = manager
        self.local: Endpoint | None = None

    def buildProtocol(self, addr: Any) -> SipStreamProtocol | None:  # type: ignore[override]
        if not self.manager._may_connect():
            log.info("refusing TCP connection from {host}:{port}: {count} connections open",
                     host=getattr(addr, "host", "?"), port=getattr(addr, "port", "?"),
                     count=self.manager.connection_count)
            return None
        proto = SipStreamProtocol(self.manager, self.local)
        proto.factory = self
        return proto


class SipClientFactory(Factory):
    """Builds the protocol of one outbound connection (RFC 3261 §18.1.1, opened to send)."""

    noisy = False

    def __init__(self, manager: TransportManager, dial: _Dial) -> None:
        self.manager = manager
        self.dial = dial

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:
        proto = SipStreamProtocol(self.manager, None, self.dial)
        proto.factory = self
        return proto
