"""SIP over TCP (RFC 3261 §18.1.1, §18.2.1, §18.3; RFC 5626 §3.5.1 keep-alive).

One :class:`SipStreamProtocol` per connection, inbound or outbound; it frames with the core's
``StreamParser`` and hands messages to its sink, like ``twisted.names.dns.DNSProtocol``. Its
controller is a :class:`~edgeproxy.interfaces.ConnectionRegistry` (the manager's connection table),
which admits, numbers and indexes connections for reuse; the protocol calls nothing else of it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..interfaces import ConnectionRegistry, Dial, MessageSink, Timer
from ..sip.endpoint import Endpoint, Flow
from ..sip.errors import SipParseError
from ..sip.parser import NEED_DATA, PING, StreamParser
from ._util import error_reply, peer_host

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

    ``flow`` is ``Flow(local, remote, connection_id)`` once connected (the registry sets it);
    ``local`` is the advertised address of the TCP listener, None for an outbound connection (its
    flow gets the listener of the remote's family when there is one, else the socket's own address).
    ``dial`` is the outbound connection attempt this connection is, handed back to the registry.
    """

    transport_name = "TCP"
    """The transport of this connection's flows (subclasses over TLS say ``TLS``)."""

    def __init__(self, registry: ConnectionRegistry, sink: MessageSink, local: Endpoint | None,
                 dial: Dial | None = None) -> None:
        self.registry = registry
        self.sink = sink
        self.local = local
        self.dial = dial
        self.parser = StreamParser(registry.limits)
        self.flow: Flow | None = None
        self.closing = False
        self.last_received = 0.0
        self._idle_call: Timer | None = None
        self._linger_call: Timer | None = None
        self._partial_call: Timer | None = None  # the message_timeout of a message begun
        self._events = 0  # messages, pings and errors framed so far (tells one partial from the next)

    @property
    def connection_id(self) -> int | None:
        """The registry's number of this connection, once it is up."""
        flow = self.flow
        return None if flow is None else flow.connection_id

    # -- life cycle --------------------------------------------------------------------------------
    def connectionMade(self) -> None:
        transport: Any = self.transport
        for option in ("setTcpNoDelay", "setTcpKeepAlive"):
            try:
                getattr(transport, option)(True)
            except Exception:  # not every transport (tests' fakes) has socket options
                pass
        registry = self.registry
        clock = registry.clock
        self.last_received = clock.seconds()
        peer, own = transport.getPeer(), transport.getHost()
        dial, self.dial = self.dial, None
        registry.connection_made(self, (peer.host, peer.port), (own.host, own.port), self.local, dial)
        timeout = registry.idle_timeout
        if timeout:
            self._idle_call = clock.callLater(timeout, self._check_idle)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        for call in (self._idle_call, self._linger_call, self._partial_call):
            if call is not None and call.active():
                call.cancel()
        self._idle_call = self._linger_call = self._partial_call = None
        self.registry.connection_lost(self)

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
        timeout = self.registry.idle_timeout or 0.0
        clock = self.registry.clock
        remaining = self.last_received + timeout - clock.seconds()
        if remaining > 0:
            self._idle_call = clock.callLater(remaining, self._check_idle)
            return
        self.registry.note_event(peer_host(self.transport), f"{self.transport_name} closed idle",
                                 f"nothing received for {timeout:g} s")
        self.abort()

    # -- receiving ---------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_received = self.registry.clock.seconds()
        parser = self.parser
        parser.feed(data)
        sink = self.sink
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
                if self._partial_call is None and parser.in_message:
                    self._watch_partial()
                return
            self._events += 1
            if event is PING:
                self.transport.write(_PONG)  # type: ignore[union-attr]
                continue
            try:
                sink.message_received(event, flow)  # type: ignore[arg-type]
            except Exception:
                log.failure("sink failed on a message from {flow}", flow=flow)
            if self.closing:
                return

    def _watch_partial(self) -> None:
        timeout = self.registry.message_timeout
        if timeout:
            self._partial_call = self.registry.clock.callLater(timeout, self._partial_expired, self._events)

    def _partial_expired(self, events: int) -> None:
        """``message_timeout`` after a message began: if it is still that message, close (RFC 3261
        §18.3 leaves the timing to us; HTTP servers bound a request head the same way)."""
        self._partial_call = None
        if self.closing:
            return
        if self._events == events and self.parser.in_message:
            self.registry.note_event(peer_host(self.transport), f"{self.transport_name} message timeout",
                                     f"a message took over {self.registry.message_timeout:g} s to arrive")
            self.abort()
        elif self.parser.in_message:
            self._watch_partial()  # messages came since; the one in progress gets its own time

    def _parse_error(self, exc: SipParseError) -> bool:
        """Answer a broken message (once the sink has counted it: pike, the aggregated log); True when
        the stream is still framed and parsing goes on."""
        self._events += 1
        reply = None
        try:
            if self.flow is None or self.sink.malformed_received(exc, self.flow, 0):
                reply = error_reply(exc)
        except Exception:
            log.failure("failed to build the reply to a malformed message on {flow}", flow=self.flow)
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
        self._linger_call = self.registry.clock.callLater(LINGER_SECONDS, self.abort)

    def readConnectionLost(self) -> None:
        """The peer half-closed (or closed): answer a message cut short, then close."""
        if not self.closing:
            try:
                self.parser.close()
            except SipParseError as exc:
                try:
                    answer = self.flow is None or self.sink.malformed_received(exc, self.flow, 0)
                    reply = error_reply(exc) if answer else None
                except Exception:
                    reply = None
                if reply is not None:
                    self.transport.write(reply)  # type: ignore[union-attr]
            except Exception:
                log.failure("stream parser crashed at the close of {flow}", flow=self.flow)
        self.closing = True
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """Our side was shut down after a fatal error; wait for the peer's close (or the linger)."""


class SipServerFactory(Factory):
    """Builds the protocol of each accepted connection of one TCP listener, once the registry
    admits it (beyond ``max_connections`` the socket is closed as soon as it is accepted).

    ``transport_name`` is the listener's transport, for the registry's refusal log; subclasses
    build other stream protocols (TLS) with :meth:`connection`."""

    noisy = False
    transport_name = "TCP"

    def __init__(self, registry: ConnectionRegistry, sink: MessageSink) -> None:
        self.registry = registry
        self.sink = sink
        self.local: Endpoint | None = None

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol | None:
        if not self.registry.admit(self.transport_name, getattr(addr, "host", "?"), getattr(addr, "port", 0)):
            return None
        proto = self.connection(None)
        proto.factory = self
        return proto

    def connection(self, dial: Dial | None) -> SipStreamProtocol:
        """A new protocol: for this listener (``dial`` None) or for an outbound attempt."""
        return SipStreamProtocol(self.registry, self.sink, self.local, dial)


class SipClientFactory(SipServerFactory):
    """Builds the protocol of one outbound connection (RFC 3261 §18.1.1, opened to send): no
    admission (the sender checked it before dialling) and no listener's ``local``."""

    def __init__(self, registry: ConnectionRegistry, sink: MessageSink, dial: Dial) -> None:
        super().__init__(registry, sink)
        self.dial = dial

    def buildProtocol(self, addr: IAddress | None) -> SipStreamProtocol:
        proto = self.connection(self.dial)
        proto.factory = self
        return proto
