"""The contract between the transports and the layers above them, in one place.

The transports (``edgeproxy.transport``) are thin protocols that call a controller, as
``twisted.names`` protocols call theirs: the node receives through :class:`MessageSink`, and sends
through :class:`Sender`; next hops named by a host name are found through a :class:`Locator`
(RFC 3263). The behaviour layers (proxy, registrar, location, NAT pinging) import only this module,
never ``edgeproxy.transport``, so they run and are tested with in-memory stand-ins; the transports
implement it.

Inside the transport layer the same shape holds one level down: each connection protocol (TCP, TLS,
WebSocket) is a :class:`Connection` that reports its life -- admission, handshake, up, down, a
failed dial -- to a :class:`ConnectionRegistry` and to nothing else; the transport manager's
connection table implements it. Only typing imports of Twisted here: the module loads no reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from .dns import ServerQuery
from .sip.endpoint import Destination, Endpoint, Flow
from .sip.errors import SipParseError
from .sip.message import Message
from .sip.parser import Limits

if TYPE_CHECKING:  # pragma: no cover - typing only: this module must not load a reactor
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

__all__ = [
    "MessageSink", "Sender", "SendError", "Locator",
    "Timer", "Clock", "Connection", "Dial", "ConnectionRegistry",
]


class SendError(Exception):
    """A message could not be sent: no listener for the transport, connection refused or closed, a
    ``flow_only`` destination whose flow is gone, name resolution failed.

    ``status`` is what the proxy answers for the branch (503 by default; 477 is OpenSIPS's "send
    failed", 430 "Flow Failed" for a dead RFC 5626 flow).
    """

    def __init__(self, reason: str, status: int = 503) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class MessageSink(Protocol):
    """What the transports need from the node: two callbacks, both called in the reactor thread.

    ``message_received(message, flow)`` gets every message that parsed and passed the core's checks
    (RFC 3261 §18.3 framing; malformed requests were already answered by the transport, §8.2.6.2 /
    §21.4.1). ``flow`` is where it came from: for UDP the listener and source address, for TCP also
    the connection id, so a reply or a later request can go back over the same connection
    (§18.2.2, RFC 5626 §3.3). Keep-alives (RFC 5626 §3.5.1) never reach the sink.

    ``flow_closed(flow)`` is called once when a connection that was reported in flows closes, for
    whatever reason (peer close, idle timeout, parse error, shutdown), so bindings tied to it can be
    dropped (RFC 5626 §4.4). UDP flows never close.

    ``malformed_received(error, flow, size)`` is called for every message that failed to parse,
    before the transport answers it: the node counts it (pike, statistics) and logs it aggregated;
    False means "do not answer" (the source is flooding). The transport logs nothing itself.

    Exceptions raised by these methods are logged and swallowed by the transport.
    """

    def message_received(self, message: Message, flow: Flow) -> None: ...

    def flow_closed(self, flow: Flow) -> None: ...

    def malformed_received(self, error: SipParseError, flow: Flow, size: int) -> bool: ...


class Sender(Protocol):
    """Sends SIP messages; implemented by the transport layer."""

    def send(self, destination: Destination, message: Message) -> "Deferred[Flow]":
        """Serialise and send ``message``. Fires with the flow used, or fails with :class:`SendError`.

        Serialisation happens at call time (so the caller may not mutate the message afterwards). For
        UDP the Deferred has usually fired on return.
        """
        ...

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        """The address this node advertises (Via sent-by, Record-Route, Path) for ``transport``,
        choosing the listener of the right address family for ``remote``; None if no such listener."""
        ...


class Locator(Protocol):
    """Turns an RFC 3263 query into the ordered list of targets to try (§4.3)."""

    def locate(self, query: ServerQuery, transports: frozenset[str]) -> "Deferred[list[Endpoint]]":
        """The targets for ``query``, best first, each an IP address, port and one of ``transports``
        (those the node can send on; an explicit transport of the URI is kept as it is).

        Fires with an empty list when the name does not resolve; may fail with :class:`SendError`
        (503 "Name Resolution Failed" when the DNS did not answer in time). Must fire within a
        bounded time, and fires synchronously when every answer needed is cached."""
        ...

    def stop(self) -> None:
        """Cancel pending lookups and timers (the node is stopping)."""
        ...


# -- between a connection protocol and its controller ---------------------------------------------


class Timer(Protocol):
    """A call scheduled with :meth:`Clock.callLater` (Twisted's ``IDelayedCall``)."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The two calls of Twisted's ``IReactorTime`` the transports use (the reactor; ``task.Clock``
    in tests)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., object], *args: object,  # noqa: A002
                  **kw: object) -> Timer: ...


class Connection(Protocol):
    """One stream connection -- TCP, TLS, WS or WSS -- as its :class:`ConnectionRegistry` keeps it.

    The registry indexes it for RFC 3261 §18 connection reuse and by flow (RFC 5626 §3.3), sends on
    it and closes it at shutdown. ``flow`` is None until the registry gives it one in
    :meth:`ConnectionRegistry.connection_made` (which sets it before the first message is written)."""

    flow: Flow | None

    @property
    def transport_name(self) -> str:
        """The transport of its flows: ``TCP``, ``TLS``, ``WS`` or ``WSS``."""
        ...

    @property
    def writable(self) -> bool:
        """Whether messages may still be written (connected, not closing)."""
        ...

    def write_message(self, data: bytes) -> None:
        """Write one serialised SIP message (§18.3: a stream carries whole messages back to back)."""
        ...

    def close(self) -> None:
        """Close gracefully, flushing what was written."""
        ...

    def abort(self) -> None:
        """Drop the connection now."""
        ...


class Dial(Protocol):
    """An outbound connection being opened to send (RFC 3261 §18.1.1). The connection protocol
    gets it from its factory and only hands it back to its registry, which owns what waits on it."""

    @property
    def remote(self) -> Endpoint:
        """Where it connects to."""
        ...


class ConnectionRegistry(Protocol):
    """What a connection protocol calls on its controller, as ``twisted.names`` protocols call
    theirs. The protocols frame and parse; the registry numbers, indexes and admits connections.

    Life cycle of a connection: the factory asks :meth:`admit` before building the protocol; TLS and
    WebSocket connections are *pending* between :meth:`handshake_started` and
    :meth:`handshake_ended` (counted against the limit, RFC 7118 §5 / RFC 3261 §26.2.1: no message
    before the handshake); :meth:`connection_made` once messages can flow; :meth:`connection_lost`
    when it is gone. An outbound connection that never got that far reports :meth:`dial_failed`.
    """

    @property
    def clock(self) -> Clock:
        """Timers and timestamps (idle timeouts, RFC 5626 §4.4.1 keep-alive bookkeeping)."""
        ...

    @property
    def limits(self) -> Limits:
        """The bounds of every parse."""
        ...

    @property
    def idle_timeout(self) -> float | None:
        """Seconds a connection may receive nothing before it is closed (None or 0: never)."""
        ...

    @property
    def message_timeout(self) -> float | None:
        """Seconds one message may take to arrive whole on a stream once its first byte came (None
        or 0: no bound): a slowloris peer trickling a byte a second is closed."""
        ...

    def note_event(self, host: str, kind: str, detail: str = "") -> None:
        """Count one ``kind`` event caused by the remote address ``host`` (a refused connection, a
        failed handshake, a connection cut off, ...) and log it aggregated: one line per source per
        interval with the counts (:class:`~edgeproxy.proxy.noise.NoiseLog`), so that hostile
        connections cannot become a log line each (issue 16). ``detail`` goes with the line only."""
        ...

    def admit(self, transport: str, host: str, port: int) -> bool:
        """Whether an accepted connection from ``host``:``port`` may stay (the node is running and
        below its connection limit); False means the factory closes the socket at once. The one
        admission check of every stream listener; a refusal is logged here."""
        ...

    def handshake_started(self, connection: Connection, host: str = "") -> None:
        """A TLS or WebSocket handshake began: the connection counts as pending (and against the
        connections of ``host``, its remote address)."""
        ...

    def handshake_ended(self, connection: Connection) -> bool:
        """The handshake is over (done or failed): no longer pending. Returns whether it was."""
        ...

    def connection_made(self, connection: Connection, peer: tuple[str, int], own: tuple[str, int],
                        local: Endpoint | None, dial: Dial | None) -> Flow:
        """Number and index a connection that is up (for TLS and WebSocket: handshake done), set
        its ``flow`` and return it. ``peer``/``own`` are the socket's addresses; ``local`` the
        listener's advertised endpoint (None for an outbound connection: the registry picks the
        listener of the remote's family, else ``own``, §18.1.1). For ``dial`` the messages waiting
        on it are written, in order, and their sends complete with the flow."""
        ...

    def connection_lost(self, connection: Connection) -> None:
        """The connection closed: unindex it and tell the sink its flow closed (RFC 5626 §4.4)."""
        ...

    def dial_failed(self, dial: Dial, reason: Failure) -> None:
        """An outbound connection failed before :meth:`connection_made` (refused, timed out, TLS
        handshake failed): its waiting sends fail with :class:`SendError` (503)."""
        ...


def noteworthy(count: int) -> bool:
    """Whether the ``count``-th event of a kind is logged: the 1st, 2nd, 4th, 8th ... (a count is
    always said along, so the log still tells how many there were)."""
    return count & (count - 1) == 0
