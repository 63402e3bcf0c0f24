"""SIP over WebSocket (RFC 7118) on autobahn's Twisted API: ``ws`` listeners over TCP, ``wss`` over TLS.

Handshake (RFC 6455 §4, RFC 7118 §4): the client must offer the ``sip`` subprotocol, which the 101
answer selects; without it the upgrade is refused with 400. A browser whose ``Origin`` is not in
:attr:`WsSettings.origins` gets 403 (clients without an ``Origin`` -- not browsers -- are let in); a
request for another path than :attr:`WsSettings.path` gets 404; beyond
:attr:`WsSettings.max_connections` on one listener, 503. Until the handshake is done a connection has
no id and no flow and counts as pending against the manager's ``max_connections``: the protocol
reports its handshake and its life to a :class:`~edgeproxy.interfaces.ConnectionRegistry` and hands
messages to the sink its factory was built with.

Messages (RFC 7118 §5): every WebSocket message (text or binary) holds exactly one SIP message and is
parsed like a datagram (``parse_datagram``): no stream framing and no per-connection parser. A message
that fails to parse is answered, when the core can build a reply, in a frame of its own; an empty or
CRLF-only message is a keep-alive and ignored. A message larger than ``max_message_size`` closes the
connection with 1009 (autobahn checks the frame header before buffering the payload). Sending to a
WS/WSS flow writes one frame: text when the message is UTF-8, binary otherwise (browsers close on a
text frame that is not UTF-8). Flows carry the transport ``WS`` or ``WSS`` (Via ``SIP/2.0/WSS``).

Keep-alive: autobahn pings every ``ping_interval`` seconds and drops a client whose pong does not come
within ``ping_timeout``; ``idle_timeout`` closes a connection that received nothing at all (pongs
count) for that long, swept once per listener rather than timed per connection. WebSocket clients
are never dialled (browsers are not reachable; their Via and Contact hosts are ``.invalid``): the
manager fails a send to a WS/WSS destination without an open connection with 430 Flow Failed.

Memory: one idle connection is the kernel socket, (for wss) the TLS state, and this protocol. Its
autobahn options live on a per-listener subclass instead of being copied into every instance, and the
handshake's request and response are dropped once the connection is open. For wss the manager also
has the TLS memory BIOs given back after the handshake and after each burst of traffic
(:mod:`edgeproxy.transport.tls_memory`).
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..interfaces import Clock, ConnectionRegistry, MessageSink
from ..sip.endpoint import Endpoint, Flow
from ..sip.errors import SipParseError
from ..sip.parser import parse_datagram
from ._util import error_reply, peer_address, peer_host
from .autobahn_logging import CountedLog, defer_debug_formatting
from .ws_settings import WsSettings

__all__ = ["WsSettings", "SipWebSocketProtocol", "SipWebSocketFactory", "SUBPROTOCOL"]

log = Logger(namespace="edgeproxy.transport.ws")

SUBPROTOCOL = "sip"
"""The WebSocket subprotocol of SIP (RFC 7118 §4.1, IANA registry)."""

_STATE_OPEN = WebSocketProtocol.STATE_OPEN
_STATE_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_END_OF_HEAD = b"\r\n\r\n"

defer_debug_formatting()  # autobahn's unprinted debug arguments cost ~290 µs per connection
_CLOSE_GOING_AWAY = WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY
_HANDSHAKE_ONLY = frozenset({
    "http_request_data", "http_headers", "http_status_line", "http_response_data", "http_request_uri",
    "http_request_params", "http_request_host", "http_request_path", "websocket_protocols",
    "websocket_extensions", "websocket_origin", "_wskey", "websocket_key",
})
# Per-connection attributes autobahn sets (in _connectionMade and the handshake) whose resting value is
# one of these. They become class attributes of the protocol, and an open connection keeps them in
# its own __dict__ only while they differ (see SipWebSocketProtocol._compact).
_RESTING: dict[str, Any] = dict.fromkeys((
    "_perMessageCompress", "trackedTimings", "wasNotCleanReason", "localCloseCode", "localCloseReason",
    "remoteCloseCode", "remoteCloseReason", "openHandshakeTimeoutCall", "closeHandshakeTimeoutCall",
    "autoPingTimeoutCall", "autoPingPending", "autoPingPendingSent", "current_frame", "message_data",
    "frame_data", "current_frame_masker",
), None)
_RESTING.update(dict.fromkeys((
    "triggered", "wasMaxFramePayloadSizeExceeded", "wasMaxMessagePayloadSizeExceeded", "closedByMe",
    "failedByMe", "droppedByMe", "wasClean", "wasServerConnectionDropTimeout", "wasOpenHandshakeTimeout",
    "wasCloseHandshakeTimeout", "wasServingFlashSocketPolicyFile", "inside_message", "_isMessageCompressed",
    "utf8validateIncomingCurrentMessage", "message_is_binary",
), False))
_RESTING.update(dict.fromkeys(("message_data_total_length", "frame_length", "autoPingPendingSeq"), 0))
_RESTING["data"] = b""
_NO_QUEUE = ()  # autobahn queues writes only for sync/chopped sends, which nothing here makes


def _norm_path(path: str) -> str:
    return path.rstrip("/") or "/"


def _norm_origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


def _is_text(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _TimerCall:
    __slots__ = ("func", "args")

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func: Any = func
        self.args = args

    def cancel(self) -> None:
        self.func = None
        self.args = ()


class _BucketTimers:
    """The timers autobahn asks its factory for (``_batched_timer.call_later``: handshake and ping
    timeouts, pings): calls due in the same ``bucket``-second slot share one reactor timer, and none
    fires early. Autobahn's own (txaio's) truncates every due time to a whole second, so a pong
    timeout of ``t`` could fire anywhere from ``t - 1`` seconds on."""

    def __init__(self, reactor: Clock, bucket: float = 0.2) -> None:
        self._reactor = reactor
        self._bucket = bucket
        self._slots: dict[int, list[_TimerCall]] = {}

    def call_later(self, delay: float, func: Any, *args: Any, **kwargs: Any) -> _TimerCall:
        if kwargs:
            args = (lambda: func(*args, **kwargs),)
            func = _call
        now = self._reactor.seconds()
        slot = math.ceil((now + max(delay, 0.0)) / self._bucket)
        call = _TimerCall(func, args)
        calls = self._slots.get(slot)
        if calls is None:
            calls = self._slots[slot] = []
            self._reactor.callLater(max(slot * self._bucket - now, 0.0), self._fire, slot)
        calls.append(call)
        return call

    def _fire(self, slot: int) -> None:
        for call in self._slots.pop(slot, ()):
            func = call.func
            if func is not None:
                call.func = None
                try:
                    func(*call.args)
                except Exception:
                    log.failure("WebSocket timer failed")


def _call(thunk: Any) -> None:
    thunk()


class SipWebSocketProtocol(WebSocketServerProtocol):
    """One SIP-over-WebSocket connection (server side).

    Implements :class:`~edgeproxy.interfaces.Connection` for the registry: ``transport_name``,
    ``flow``, ``writable``, :meth:`write_message`, :meth:`close`, :meth:`abort`.
    Per-listener subclasses (made by :class:`SipWebSocketFactory`) fix ``transport_name`` and hold
    autobahn's options as class attributes.
    """

    transport_name = "WS"
    log = CountedLog(WebSocketServerProtocol.log)  # autobahn's lines per connection, counted
    flow: Flow | None = None
    closing = False
    last_received = 0.0
    factory: SipWebSocketFactory

    @property
    def connection_id(self) -> int | None:
        """The registry's number of this connection, once it is open."""
        flow = self.flow
        return None if flow is None else flow.connection_id

    # -- life cycle --------------------------------------------------------------------------------
    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.registry.handshake_started(self, peer_host(self.transport))

    def onConnect(self, request: Any) -> str:
        factory = self.factory
        if not factory.path_allowed(request.path):
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, f"no SIP WebSocket service at {request.path}")
        origin = request.origin
        if origin and not factory.origin_allowed(origin):
            self._note("refused", f"origin {origin!r} not allowed (403)")
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        for offered in request.protocols:
            if offered.lower() == SUBPROTOCOL:
                return offered
        self._note("refused", f"no sip subprotocol in {request.protocols!r} (400)")
        raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "the sip WebSocket subprotocol is required (RFC 7118)")

    def onOpen(self) -> None:
        factory = self.factory
        registry = factory.registry
        registry.handshake_ended(self)
        self.last_received = registry.clock.seconds()
        transport: Any = self.transport
        peer, own = transport.getPeer(), transport.getHost()
        registry.connection_made(self, (peer.host, peer.port), (own.host, own.port), factory.local, None)
        factory.opened(self)
        self._compact()

    def _compact(self) -> None:
        """Shrink an open connection to what it needs (the issue's target is 10,000 idle WSS
        connections in ≤ 40 KB each): drop the handshake's request and response, share the traffic
        counters and the (always empty) send queue with the listener, and rebuild ``__dict__`` without
        the attributes that are at their resting value (class attributes, see ``_RESTING``): a fresh
        dict of ~25 entries instead of one sized for ~70."""
        state = self.__dict__
        factory = self.factory
        if len(state.get("send_queue", _NO_QUEUE)) == 0:
            state["send_queue"] = _NO_QUEUE
        state["trafficStats"] = factory.traffic
        kept = {}
        for name, value in state.items():
            if name in _HANDSHAKE_ONLY:
                continue
            if name in _RESTING:
                resting = _RESTING[name]
                if value is resting or (type(value) is type(resting) and value == resting):
                    continue
            kept[name] = value
        self.__dict__ = kept

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        registry = self.factory.registry
        if registry.handshake_ended(self) and not reason.check(ConnectionDone):
            from .tls import handshake_failure_reason

            self._note("handshake failed", handshake_failure_reason(reason))
        try:
            super().connectionLost(reason)
        finally:
            self.factory.closed(self)
            registry.connection_lost(self)

    @property
    def writable(self) -> bool:
        transport: Any = self.transport
        return (not self.closing and self.state == _STATE_OPEN and transport is not None
                and not getattr(transport, "disconnecting", False))

    def write_message(self, data: bytes) -> None:
        """Send one SIP message as one WebSocket message (text if it is UTF-8)."""
        self.sendMessage(data, not _is_text(data))

    def close(self) -> None:
        """Close with 1001 Going Away (autobahn drops the TCP if the client does not answer)."""
        self.closing = True
        if self.state == _STATE_OPEN:
            # sendClose only takes 1000 and 3000-4999 from applications; 1001 is the server's own
            self.sendCloseFrame(code=_CLOSE_GOING_AWAY, reasonUtf8=b"going away", isReply=False)
        elif self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        self.closing = True
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    # -- receiving ---------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        self.last_received = self.factory.reactor.seconds()
        if self.state == _STATE_CONNECTING and not self._head_fits(data):
            return
        self._dataReceived(data)

    def _head_fits(self, data: bytes) -> bool:
        """Whether the HTTP upgrade head, with ``data``, stays within ``max_handshake_size``; when it
        does not, the client gets 431 and the connection closes, and nothing more is stored
        (autobahn would buffer until the empty line, however far)."""
        if self.closing:
            return False  # refused already: what still comes is discarded
        buffered = self.data
        limit = self.factory.settings.max_handshake_size
        if len(buffered) + len(data) <= limit:
            return True
        # the head may end in this read, frames may follow it: only the head counts
        tail = buffered[-3:]
        end = (tail + data).find(_END_OF_HEAD)
        if end >= 0 and len(buffered) - len(tail) + end + 4 <= limit:
            return True
        self.closing = True
        self.data = b""
        self.failHandshake(f"Request Header Fields Too Large (the head is over {limit} octets)", 431)
        return False

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        """Autobahn's refusal of an upgrade (a bad or endless head, a path, origin or subprotocol
        refused, too many connections): the HTTP error, then the close -- counted and logged through
        the node's aggregated log instead of autobahn's line per connection (issue 16)."""
        self._note("refused", f"{code} {reason}")
        self.wasNotCleanReason = reason
        self.sendHttpErrorResponse(code, reason, responseHeaders)
        self.dropConnection(abort=False)

    def _note(self, what: str, detail: str) -> None:
        """Count one refusal or failure of this connection in the node's aggregated log (the line,
        when there is one, names the peer's port too)."""
        host, port = peer_address(self.transport)
        self.factory.registry.note_event(host, f"{self.transport_name} {what}", f"with {host}:{port}: {detail}")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.closing:
            return
        factory = self.factory
        try:
            message = parse_datagram(payload, factory.limits)
        except SipParseError as exc:
            self._reject(exc, payload)
            return
        except Exception:
            log.failure("parser crashed on a WebSocket message from {flow}", flow=self.flow)
            return
        if message is None:
            return
        try:
            factory.sink.message_received(message, self.flow)  # type: ignore[arg-type]  # open: has its flow
        except Exception:
            log.failure("sink failed on a message from {flow}", flow=self.flow)

    def _reject(self, exc: SipParseError, payload: bytes) -> None:
        try:
            if not self.factory.sink.malformed_received(exc, self.flow, len(payload)):  # type: ignore[arg-type]
                return  # counted by pike, logged aggregated by the sink first; none to a flooder
            reply = error_reply(exc)
        except Exception:
            log.failure("failed to build the reply to a malformed message on {flow}", flow=self.flow)
            return
        if reply is not None and self.writable:
            self.write_message(reply)


for _name, _value in _RESTING.items():  # the resting values, for _compact
    setattr(SipWebSocketProtocol, _name, _value)


class SipWebSocketFactory(WebSocketServerFactory):
    """The factory of one ``ws`` or ``wss`` listener (for ``wss`` the manager wraps it in TLS).

    ``local`` is the listener's advertised endpoint, set by the manager once the port is bound;
    ``registry`` admits connections and keeps them, ``sink`` receives their messages."""

    noisy = False

    def __init__(self, registry: ConnectionRegistry, sink: MessageSink, secure: bool,
                 settings: WsSettings = WsSettings()) -> None:  # noqa: B008 - frozen
        super().__init__(url="wss://localhost" if secure else "ws://localhost", protocols=[SUBPROTOCOL],
                         server="edgeproxy", reactor=registry.clock)
        self.registry = registry
        self.sink = sink
        self.limits = registry.limits
        self.settings = settings
        self.local: Endpoint | None = None
        self.transport_name = "WSS" if secure else "WS"
        size = settings.max_message_size or registry.limits.max_message_size
        self.setProtocolOptions(
            versions=[13],
            webStatus=False,
            maxFramePayloadSize=size,
            maxMessagePayloadSize=size,
            failByDrop=False,  # send the close frame (1009 for oversize) instead of dropping the TCP
            openHandshakeTimeout=settings.handshake_timeout,
            closeHandshakeTimeout=1,
            autoPingInterval=settings.ping_interval or 0,
            autoPingTimeout=(settings.ping_timeout or 0) if settings.ping_interval else 0,
            autoPingSize=12,
            maxConnections=settings.max_connections,
            perMessageCompressionAccept=lambda offers: None,  # no permessage-deflate: memory per connection
        )
        self._path = None if settings.path in ("", "*") else _norm_path(settings.path)
        self._origins = frozenset(_norm_origin(o) for o in settings.origins if "*" not in o)
        self._origin_patterns = tuple(_norm_origin(o) for o in settings.origins if "*" in o)
        self._allow_any_origin = not settings.origins or "*" in settings.origins
        # One protocol class per listener holding autobahn's per-connection options as class attributes:
        # autobahn copies an option into the instance only when the instance lacks it.
        options = {name: getattr(self, name) for name in SipWebSocketProtocol.CONFIG_ATTRS}
        for name, value in options.items():
            if callable(value):  # perMessageCompressionAccept: a plain function, not a method
                options[name] = staticmethod(value)
        options["transport_name"] = self.transport_name
        # autobahn's per-connection lines that name the peer: into the node's aggregated log
        options["log"] = CountedLog(WebSocketServerProtocol.log, registry.note_event, self.transport_name)
        self.protocol = type(  # type: ignore[assignment]
            f"SipWebSocketProtocol{self.transport_name}", (SipWebSocketProtocol,), options)
        self._batched_timer = _BucketTimers(self.reactor)
        self._open: set[SipWebSocketProtocol] = set()
        self._sweeper: LoopingCall | None = None
        self.traffic = TrafficStats()  # the counters of every open connection of this listener, together

    def buildProtocol(self, addr: Any) -> Any:
        if not self.registry.admit(self.transport_name, getattr(addr, "host", "?"), getattr(addr, "port", 0)):
            return None
        proto: Any = self.protocol()
        proto.factory = self
        return proto

    def path_allowed(self, path: str) -> bool:
        return self._path is None or _norm_path(path) == self._path

    def origin_allowed(self, origin: str) -> bool:
        if self._allow_any_origin:
            return True
        origin = _norm_origin(origin)
        return origin in self._origins or any(fnmatch.fnmatchcase(origin, p) for p in self._origin_patterns)

    # -- idle sweep --------------------------------------------------------------------------------
    def opened(self, proto: SipWebSocketProtocol) -> None:
        timeout = self.settings.idle_timeout
        if not timeout or timeout <= 0:
            return
        self._open.add(proto)
        if self._sweeper is None:
            sweeper = self._sweeper = LoopingCall(self._sweep)
            sweeper.clock = self.reactor
            sweeper.start(max(min(timeout / 4.0, 30.0), 0.05), now=False)

    def closed(self, proto: SipWebSocketProtocol) -> None:
        self._open.discard(proto)
        if not self._open and self._sweeper is not None:
            sweeper, self._sweeper = self._sweeper, None
            if sweeper.running:
                sweeper.stop()

    def _sweep(self) -> None:
        deadline = self.reactor.seconds() - self.settings.idle_timeout
        for proto in [p for p in self._open if p.last_received <= deadline and not p.closing]:
            proto._note("closed idle", f"nothing received for {self.settings.idle_timeout:g} s")
            proto.close()
