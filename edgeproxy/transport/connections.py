"""The stream connections of one node: :class:`ConnectionTable`, the transports' public
:class:`~edgeproxy.interfaces.ConnectionRegistry`.

Every TCP, TLS and WebSocket protocol reports its life here and nowhere else: admission (one check
for every listener: the node is running and ``max_connections`` is not reached, counting open,
handshaking and dialling connections together), handshakes in progress, the connection up
(numbered, given its flow, indexed by id for RFC 5626 flows and by remote ``(transport, host, port)``
for RFC 3261 §18 reuse), and its end (the sink hears ``flow_closed``). Outbound connections being
opened are :class:`OutboundDial` s: the messages that wait for them are written once the
connection is up and failed if it never comes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..interfaces import Clock, Connection, Dial, MessageSink, SendError
from ..proxy.noise import NoiseLog
from ..sip.address import ip_literal
from ..sip.endpoint import Endpoint, Flow
from ..sip.parser import Limits
from .listeners import ListenerIndex

if TYPE_CHECKING:
    from .tls_memory import IdleTlsReclaimer

__all__ = ["ConnectionTable", "OutboundDial", "RemoteKey"]


def _canonical(host: str) -> str:
    literal = ip_literal(host)
    return literal[1] if literal is not None else host

log = Logger(namespace="edgeproxy.transport")

_TLS_KINDS = frozenset({"TLS", "WSS"})

RemoteKey = tuple[str, str, int]
"""``(transport, canonical host, port)`` of a remote: the RFC 3261 §18 reuse key."""


@dataclass(eq=False)
class OutboundDial:
    """An outbound connection being opened (implements :class:`~edgeproxy.interfaces.Dial`) and
    the messages waiting for it, each with the Deferred of its send."""

    key: RemoteKey
    remote: Endpoint
    queue: list[tuple[bytes, Deferred[Flow]]] = field(default_factory=list)
    attempt: Deferred[Any] | None = None


class ConnectionTable:
    """Open, handshaking and dialling connections (see the module's docstring).

    ``clock``, ``limits`` and ``idle_timeout`` are what every connection protocol reads;
    ``listeners`` gives the local endpoint of outbound connections; ``max_connections`` caps the
    count, ``max_per_source`` (0 = no cap) the connections of one remote address -- open and
    handshaking, inbound and outbound -- so that one source cannot take the node's whole limit
    (issue 16). ``noise`` is the node's aggregated log of hostile input: every refusal and cut-off
    of a connection is a count there, not a line each (:meth:`note_event`). ``sink`` is set by
    :meth:`open` (the node's start); ``by_id`` and ``by_remote`` are updated in place, never rebound,
    so the sender reads them directly.
    """

    def __init__(self, clock: Clock, limits: Limits, listeners: ListenerIndex, max_connections: int,
                 idle_timeout: float | None, max_per_source: int = 0, message_timeout: float | None = None,
                 noise: NoiseLog | None = None) -> None:
        self.clock = clock
        self.noise = noise if noise is not None else NoiseLog(clock)
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.per_source: dict[str, int] = {}  # canonical remote host -> its connections now
        self._hosts: dict[Connection, str] = {}  # each counted connection's host, to uncount it
        self.by_id: dict[int, Connection] = {}
        self.by_remote: dict[RemoteKey, list[Connection]] = {}
        self.dials: dict[RemoteKey, OutboundDial] = {}
        self.accepting = False
        self.tls_reclaimer: IdleTlsReclaimer | None = None  # from the first TLS/WSS connection on
        self._listeners = listeners
        self._pending: set[Connection] = set()
        self._sink: MessageSink | None = None
        self._ids = count(1)
        self._all_closed: Deferred[None] | None = None

    def open(self, sink: MessageSink) -> None:
        """Accept connections from now on; closed flows are reported to ``sink``. Also after
        :meth:`close_all`: the TLS memory reclaimer it stopped runs again."""
        self._sink = sink
        self.accepting = True
        if self.tls_reclaimer is not None:
            self.tls_reclaimer.start()  # idempotent

    @property
    def count(self) -> int:
        """Open plus connecting connections (also TLS and WebSocket ones still in their handshake)."""
        return len(self.by_id) + len(self.dials) + len(self._pending)

    @property
    def may_connect(self) -> bool:
        """Whether one more connection, inbound or outbound, is allowed."""
        return self.accepting and self.count < self.max_connections

    # -- ConnectionRegistry ------------------------------------------------------------------------
    def admit(self, transport: str, host: str, port: int) -> bool:
        if not self.may_connect:
            self.noise.note(host, f"{transport} connection refused",
                            f"{self.count} connections open (max_connections)" if self.accepting else "not running")
            return False
        cap = self.max_per_source
        if cap and self.per_source.get(_canonical(host), 0) >= cap:
            self.noise.note(host, f"{transport} connection refused",
                            f"{cap} connections from it open (max_connections_per_source)")
            return False
        return True

    def note_event(self, host: str, kind: str, detail: str = "") -> None:
        self.noise.note(host, kind, detail)

    def _count(self, connection: Connection, host: str) -> None:
        if connection not in self._hosts:
            host = self._hosts[connection] = _canonical(host)
            self.per_source[host] = self.per_source.get(host, 0) + 1

    def _uncount(self, connection: Connection) -> None:
        host = self._hosts.pop(connection, None)
        if host is not None:
            left = self.per_source[host] - 1
            if left:
                self.per_source[host] = left
            else:
                del self.per_source[host]

    def handshake_started(self, connection: Connection, host: str = "") -> None:
        self._pending.add(connection)
        if host:
            self._count(connection, host)

    def handshake_ended(self, connection: Connection) -> bool:
        if connection in self._pending:
            self._pending.remove(connection)
            return True
        return False

    def connection_made(self, connection: Connection, peer: tuple[str, int], own: tuple[str, int],
                        local: Endpoint | None, dial: Dial | None) -> Flow:
        kind = connection.transport_name
        literal = ip_literal(peer[0])
        host = literal[1] if literal is not None else peer[0]
        remote = Endpoint(kind, host, peer[1])
        if local is None:
            local = self._listeners.local_endpoint(kind, remote) or Endpoint(kind, own[0], own[1])
        cid = next(self._ids)
        self._count(connection, host)
        flow = connection.flow = Flow(local, remote, cid)
        self.by_id[cid] = connection
        self.by_remote.setdefault((kind, host, peer[1]), []).append(connection)
        if kind in _TLS_KINDS:
            reclaimer = self.tls_reclaimer or self._start_tls_reclaimer()
            # the handshake's flights, while the next handshakes can reuse the memory; on the next
            # turn of the reactor, once Twisted has flushed what the handshake left to send
            self.clock.callLater(0, reclaimer.release, connection)
        waiting = self._take_dial(dial)
        if waiting is not None:
            queue, waiting.queue = waiting.queue, []
            for data, _ in queue:
                connection.write_message(data)
            for _, d in queue:
                d.callback(flow)
        return flow

    def connection_lost(self, connection: Connection) -> None:
        self._uncount(connection)
        self._pending.discard(connection)
        flow = connection.flow
        if flow is None or self.by_id.get(flow.connection_id) is not connection:  # type: ignore[arg-type]
            return
        del self.by_id[flow.connection_id]  # type: ignore[arg-type]
        key = (flow.remote.transport, flow.remote.host, flow.remote.port)
        same = self.by_remote.get(key)
        if same is not None:
            if connection in same:
                same.remove(connection)
            if not same:
                del self.by_remote[key]
        try:
            if self._sink is not None:
                self._sink.flow_closed(flow)
        except Exception:
            log.failure("sink failed on the close of {flow}", flow=flow)
        if self._all_closed is not None and not self.by_id:
            d, self._all_closed = self._all_closed, None
            d.callback(None)

    def dial_failed(self, dial: Dial, reason: Failure) -> None:
        waiting = self._take_dial(dial)
        if waiting is None:
            return
        if reason.check(ConnectionRefusedError):
            why = "Connection Refused"
        elif reason.check(ConnectTimeoutError):
            why = "Connect Timeout"
        elif reason.check(CancelledError):
            why = "Transport Stopped"
        elif dial.remote.transport == "TLS":
            why = "TLS Handshake Failed"
        else:
            why = "Connection Failed"
        log.debug("connecting to {remote} failed: {why}", remote=dial.remote, why=reason.getErrorMessage())
        queue, waiting.queue = waiting.queue, []
        for _, d in queue:
            d.errback(SendError(why))

    # -- dials -------------------------------------------------------------------------------------
    def dial(self, transport: str, host: str, port: int) -> OutboundDial:
        """Record an outbound connection to be opened (the caller connects and sets ``attempt``)."""
        key = (transport, host, port)
        dial = self.dials[key] = OutboundDial(key, Endpoint(transport, host, port))
        return dial

    def _take_dial(self, dial: Dial | None) -> OutboundDial | None:
        """The recorded dial ``dial`` is, removed from the table (None if it is not, or no longer, there)."""
        if dial is None:
            return None
        remote = dial.remote
        found = self.dials.get((remote.transport, remote.host, remote.port))
        if found is not dial:
            return None
        del self.dials[found.key]
        return found

    def _start_tls_reclaimer(self) -> IdleTlsReclaimer:
        """Idle TLS and WSS connections give back their BIO buffers (see ``tls_memory``)."""
        from .tls_memory import IdleTlsReclaimer

        reclaimer = self.tls_reclaimer = IdleTlsReclaimer(self.clock, self.by_id)
        if self.accepting:
            reclaimer.start()
        return reclaimer

    # -- stopping ----------------------------------------------------------------------------------
    def close_all(self, grace: float) -> Deferred[None] | None:
        """Stop accepting; cancel dials, abort handshakes, close open connections gracefully and
        abort what is left after ``grace`` seconds. Fires when all are closed (None: none open)."""
        self.accepting = False
        if self.tls_reclaimer is not None:
            self.tls_reclaimer.stop()
        for dial in list(self.dials.values()):
            if dial.attempt is not None:
                dial.attempt.cancel()
        for proto in list(self._pending):  # TLS/WebSocket handshakes in progress
            proto.abort()
        if not self.by_id:
            return None
        all_closed = self._all_closed = Deferred()
        for conn in list(self.by_id.values()):
            conn.close()

        def abort_rest() -> None:
            for conn in list(self.by_id.values()):
                conn.abort()

        timer = self.clock.callLater(grace, abort_rest)

        def closed(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return all_closed.addBoth(closed)
