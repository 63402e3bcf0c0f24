"""The transport layer's controller: listeners, connections, and :class:`Sender` for the node.

Theory of operation. :class:`TransportManager` owns every socket of a node. Listeners are opened with
:meth:`TransportManager.listen`; each UDP listener is one :class:`SipDatagramProtocol`, each TCP
listener a :class:`SipServerFactory` whose connections are :class:`SipStreamProtocol`. Protocols
parse and hand valid messages straight to ``manager.sink`` (the node); connections report their
start and end here, where they are numbered (``connection_id``) and indexed twice: by id, for
flows, and by remote ``(host, port)``, for RFC 3261 §18 connection reuse (a response or request to
a peer goes over any open connection with it, inbound or outbound, of the same transport).

TLS (:mod:`.tls`) and WebSocket (:mod:`.ws`, RFC 7118) connections are the same kind of connection
to the manager: they have an id, a flow and ``write_message``; until their handshake completes they
are only *pending* (counted against ``max_connections``, aborted at stop). WebSocket clients are never
dialled: a WS/WSS destination is reached over an open connection or not at all (430 Flow Failed).

:meth:`TransportManager.send` picks, in order: the connection the destination's flow names; for a
UDP flow, the listener the flow arrived on; else a UDP listener of the destination's address family,
an open TCP/TLS connection to the destination, or a new outbound connection (messages queue until it
is up; for TLS until the handshake verified the server's certificate against the destination's
name, or ``Destination.server_name``). A name that reaches here is resolved to its first A/AAAA
address (IP literals skip that): RFC 3263 location (NAPTR, SRV, failover between targets) happens
before, in the proxy with :mod:`.locator`, which hands over addresses.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IListeningPort, IReactorSocket, IResolutionReceiver
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..interfaces import SendError
from ..sip.endpoint import Destination, Endpoint, Flow
from ..sip.message import Message
from ..sip.parser import DEFAULT_LIMITS, Limits
from ._util import guess_local_address, ip_literal
from ..interfaces import MessageSink
from .tcp import SipClientFactory, SipServerFactory
from .udp import SipDatagramProtocol

if TYPE_CHECKING:
    from .tls import TlsContexts, TlsSettings
    from .ws import WsSettings

__all__ = ["TransportManager", "Listener"]

_TLS_KINDS = frozenset({"TLS", "WSS"})

log = Logger(namespace="edgeproxy.transport")

_WILDCARDS = {"0.0.0.0": socket.AF_INET, "::": socket.AF_INET6}
_WEBSOCKETS = ("WS", "WSS")
_UDP_RCVBUF = 4 * 1024 * 1024
_STOP_GRACE = 1.0


@dataclass(eq=False)
class Listener:
    """One listening socket.

    ``bound`` is the socket's address (the real port when 0 was asked for); ``local`` is what flows
    carry and :meth:`TransportManager.local_endpoint` returns (differs from ``bound`` for wildcard
    listeners, see :meth:`TransportManager.listen`).
    """

    bound: Endpoint
    local: Endpoint
    family: int
    port: IListeningPort
    protocol: SipDatagramProtocol | None = None


@dataclass(eq=False)
class _Dial:
    """An outbound connection being opened and the messages waiting for it."""

    key: tuple[str, str, int]
    remote: Endpoint
    queue: list[tuple[bytes, Deferred]] = field(default_factory=list)
    attempt: Deferred | None = None


@implementer(IResolutionReceiver)
class _Addresses:
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self.deferred: Deferred = Deferred()

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        family = socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET
        item = (family, address.host)
        if item not in self.found:
            self.found.append(item)

    def resolutionComplete(self) -> None:
        self.deferred.callback(self.found)


class TransportManager:
    """UDP and TCP transports of one node (RFC 3261 §18), implementing
    :class:`edgeproxy.interfaces.Sender`.

    ``sink`` is the :class:`~edgeproxy.interfaces.MessageSink` (may be assigned after
    construction, before the first listener starts). ``limits`` bound every parse; ``max_connections``
    caps open plus connecting TCP connections, inbound and outbound together (beyond it, accepted
    sockets are closed at once and sends that need a new connection fail with 503);
    ``idle_timeout`` (seconds, None/0 = never) closes connections that received nothing for that long;
    ``connect_timeout`` bounds outbound connection set-up; ``advertise`` is the host wildcard
    listeners announce (see :meth:`listen`). ``tls`` (:class:`~edgeproxy.transport.tls.TlsSettings`)
    is needed for ``tls`` and ``wss`` listeners and configures outbound TLS; ``ws``
    (:class:`~edgeproxy.transport.ws.WsSettings`) configures ``ws``/``wss`` listeners.
    """

    def __init__(
        self,
        reactor: Any,
        sink: MessageSink | None,
        limits: Limits = DEFAULT_LIMITS,
        max_connections: int = 4096,
        idle_timeout: float | None = 300.0,
        connect_timeout: float = 5.0,
        advertise: str | None = None,
        tls: TlsSettings | None = None,
        ws: WsSettings | None = None,
    ) -> None:
        self.reactor = reactor
        self.sink: MessageSink = sink  # type: ignore[assignment]
        self.limits = limits
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.advertise = advertise
        self.backlog = 511
        self._listeners: list[Listener] = []
        self._udp: dict[tuple[Endpoint, int], SipDatagramProtocol] = {}
        self._udp_default: dict[int, SipDatagramProtocol] = {}
        self._locals: dict[tuple[str, int | None], Endpoint] = {}
        self.tls_settings = tls
        self.ws_settings = ws
        self._tls: TlsContexts | None = None
        self._connections: dict[int, Any] = {}
        self._by_remote: dict[tuple[str, str, int], list[Any]] = {}
        self._dials: dict[tuple[str, str, int], _Dial] = {}
        self._pending: set[Any] = set()
        self._ids = count(1)
        self._stopping = False
        self._all_closed: Deferred | None = None
        self.tls_reclaimer: Any = None  # an IdleTlsReclaimer from the first TLS/WSS connection on

    # -- listening ---------------------------------------------------------------------------------
    def listen(self, endpoint: Endpoint, advertise: str | None = None) -> "Deferred[Listener]":
        """Open a listener on ``endpoint`` (an IP literal; see :func:`parse_listen`).

        Fires with the :class:`Listener`, or fails with ``CannotListenError`` / ``ValueError``.
        For a wildcard address (``0.0.0.0``, ``::``) the advertised host is ``advertise`` (this
        call's, else the manager's), if it is a name or an address of the listener's family, else a
        best guess: the source address of the default route (loopback without one). A ``::``
        listener is IPv6-only (``IPV6_V6ONLY``), so that it can sit next to a ``0.0.0.0`` one on
        the same port; list both to serve both families.
        """
        try:
            listener = self._listen(endpoint, advertise)
        except Exception:
            return fail()
        return succeed(listener)

    def _listen(self, endpoint: Endpoint, advertise: str | None) -> Listener:
        literal = ip_literal(endpoint.host)
        if literal is None:
            raise ValueError(f"cannot listen on {endpoint}: host is not an IP address")
        family, host = literal
        transport = endpoint.transport.upper()
        reactor = self.reactor
        v6only = host == "::" and IReactorSocket.providedBy(reactor)
        protocol: SipDatagramProtocol | None = None
        if transport == "UDP":
            protocol = SipDatagramProtocol(self, endpoint, family)
            packet = min(self.limits.max_message_size + 1, 65536)
            if v6only:
                port = self._adopt_v6only(socket.SOCK_DGRAM, endpoint.port,
                                          lambda fd: reactor.adoptDatagramPort(fd, socket.AF_INET6, protocol, packet))
            else:
                port = reactor.listenUDP(endpoint.port, protocol, interface=host, maxPacketSize=packet)
            try:
                port.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
            except Exception:  # best effort; the kernel caps it at net.core.rmem_max
                pass
        elif transport in ("TCP", "TLS", "WS", "WSS"):
            factory, outer = self._server_factory(transport)
            if v6only:
                port = self._adopt_v6only(socket.SOCK_STREAM, endpoint.port,
                                          lambda fd: reactor.adoptStreamPort(fd, socket.AF_INET6, outer))
            else:
                port = reactor.listenTCP(endpoint.port, outer, backlog=self.backlog, interface=host)
        else:
            raise ValueError(f"cannot listen on {endpoint}: unsupported transport {endpoint.transport}")
        bound = Endpoint(transport, host, port.getHost().port)
        local = Endpoint(transport, self._advertised_host(host, family, advertise), bound.port)
        if protocol is not None:
            protocol.local = local
        else:
            factory.local = local
        listener = Listener(bound, local, family, port, protocol)
        self._listeners.append(listener)
        self._stopping = False
        self._reindex()
        log.info("listening on {bound} as {local}", bound=bound, local=local)
        return listener

    def _server_factory(self, transport: str) -> tuple[Any, Any]:
        """The factory whose protocols serve a listener of ``transport`` (its ``local`` is set once
        the port is bound) and the factory that listens (the same, or a TLS wrapper around it)."""
        if transport == "TCP":
            factory: Any = SipServerFactory(self)
            return factory, factory
        server = None
        if transport in ("TLS", "WSS"):
            server = self.tls_contexts().server
            if server is None:
                raise ValueError(f"a {transport.lower()} listener needs a TLS certificate and key")
        if transport == "TLS":
            from .tls import SipTlsServerFactory

            factory = SipTlsServerFactory(self)
        else:
            from .ws import SipWebSocketFactory

            factory = SipWebSocketFactory(self, secure=transport == "WSS")
        if server is None:
            return factory, factory
        from .tls import TlsServerWrapper

        return factory, TlsServerWrapper(server, False, factory)

    def tls_contexts(self) -> TlsContexts:
        """The node's TLS contexts, built from ``tls`` at first use (ValueError for bad files)."""
        if self._tls is None:
            from .tls import TlsContexts, TlsSettings

            self._tls = TlsContexts(self.tls_settings if self.tls_settings is not None else TlsSettings())
        return self._tls

    def _adopt_v6only(self, kind: int, port: int, adopt: Callable[[int], IListeningPort]) -> IListeningPort:
        sock = socket.socket(socket.AF_INET6, kind)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", port))
            if kind == socket.SOCK_STREAM:
                sock.listen(self.backlog)
            sock.setblocking(False)
            return adopt(sock.fileno())  # the reactor keeps a duplicate of the descriptor
        except OSError as exc:
            raise CannotListenError("::", port, exc) from exc
        finally:
            sock.close()

    def _advertised_host(self, host: str, family: int, advertise: str | None) -> str:
        if host not in _WILDCARDS:
            return host
        for candidate in (advertise, self.advertise):
            if candidate:
                literal = ip_literal(candidate)
                if literal is None:
                    return candidate
                if literal[0] == family:
                    return literal[1]
        return guess_local_address(family)

    def _reindex(self) -> None:
        self._udp = {}
        self._udp_default = {}
        self._locals = {}
        for lst in self._listeners:
            transport = lst.local.transport
            if lst.protocol is not None:
                self._udp.setdefault((lst.local, lst.family), lst.protocol)
                self._udp_default.setdefault(lst.family, lst.protocol)
            self._locals.setdefault((transport, None), lst.local)
            self._locals.setdefault((transport, lst.family), lst.local)
        for lst in self._listeners:
            transport = lst.local.transport
            if transport != "UDP":  # a connection's Via may name a listener of the other family
                for family in _WILDCARDS.values():
                    self._locals.setdefault((transport, family), lst.local)

    @property
    def listeners(self) -> list[Listener]:
        return list(self._listeners)

    def local_endpoints(self) -> list[Endpoint]:
        """The advertised endpoint of every listener, in the order they were opened."""
        return [lst.local for lst in self._listeners]

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        """The address to advertise (Via sent-by, Record-Route, Path) for ``transport`` toward
        ``remote`` (RFC 3261 §18.1.1): the first listener of that transport and of the remote's
        address family. For TCP a listener of the other family is acceptable (replies come back on
        the connection); for UDP it is not. A remote given by name gets the first listener.
        None when there is no suitable listener."""
        family = None
        if remote is not None:
            literal = ip_literal(remote.host)
            if literal is not None:
                family = literal[0]
        return self._locals.get((transport, family))

    # -- connections -------------------------------------------------------------------------------
    @property
    def connection_count(self) -> int:
        """Open plus connecting connections (TCP, TLS, WebSocket; also TLS and WebSocket ones still
        in their handshake)."""
        return len(self._connections) + len(self._dials) + len(self._pending)

    def _may_connect(self) -> bool:
        return not self._stopping and self.connection_count < self.max_connections

    def connection(self, connection_id: int) -> Any:
        """The open connection with that id, if any."""
        return self._connections.get(connection_id)

    def _connection_made(self, proto: Any) -> None:
        """Number and index a connection that is up (for TLS and WebSocket: handshake done).

        ``proto`` is a :class:`SipStreamProtocol` or a WebSocket protocol: it has ``transport``,
        ``transport_name``, ``local``, ``dial``, ``connection_id``, ``flow``, ``writable``,
        ``write_message``, ``close`` and ``abort``."""
        kind = proto.transport_name
        peer = proto.transport.getPeer()
        literal = ip_literal(peer.host)
        host = literal[1] if literal is not None else peer.host
        remote = Endpoint(kind, host, peer.port)
        local = proto.local
        if local is None:
            local = self.local_endpoint(kind, remote)
            if local is None:
                mine = proto.transport.getHost()
                local = Endpoint(kind, mine.host, mine.port)
            proto.local = local
        cid = next(self._ids)
        proto.connection_id = cid
        flow = proto.flow = Flow(local, remote, cid)
        self._connections[cid] = proto
        self._by_remote.setdefault((kind, host, peer.port), []).append(proto)
        if kind in _TLS_KINDS:
            if self.tls_reclaimer is None:
                self._start_tls_reclaimer()
            # the handshake's flights, while the next handshakes can reuse the memory; on the next
            # turn of the reactor, once Twisted has flushed what the handshake left to send
            self.reactor.callLater(0, self.tls_reclaimer.release, proto)
        dial = getattr(proto, "dial", None)
        if dial is not None:
            proto.dial = None
            if self._dials.get(dial.key) is dial:
                del self._dials[dial.key]
            queue, dial.queue = dial.queue, []
            for data, _ in queue:
                proto.write_message(data)
            for _, d in queue:
                d.callback(flow)

    def _start_tls_reclaimer(self) -> None:
        """Idle TLS and WSS connections give back their BIO buffers (see ``tls_memory``)."""
        from .tls_memory import IdleTlsReclaimer

        reclaimer = self.tls_reclaimer = IdleTlsReclaimer(self.reactor, self._connections)
        if not self._stopping:
            reclaimer.start()

    def _connection_lost(self, proto: Any) -> None:
        cid = proto.connection_id
        if cid is None or self._connections.get(cid) is not proto:
            return
        del self._connections[cid]
        flow = proto.flow
        assert flow is not None
        key = (flow.remote.transport, flow.remote.host, flow.remote.port)
        same = self._by_remote.get(key)
        if same is not None:
            if proto in same:
                same.remove(proto)
            if not same:
                del self._by_remote[key]
        try:
            if self.sink is not None:
                self.sink.flow_closed(flow)
        except Exception:
            log.failure("sink failed on the close of {flow}", flow=flow)
        if self._all_closed is not None and not self._connections:
            d, self._all_closed = self._all_closed, None
            d.callback(None)

    # -- sending -----------------------------------------------------------------------------------
    def send(self, destination: Destination, message: Message) -> "Deferred[Flow]":
        """Send ``message`` to ``destination`` (RFC 3261 §18.1.1 requests, §18.2.2 responses).

        Order of choice: the open connection named by ``destination.flow``; for a UDP flow the
        listener it arrived on (so replies leave from the port the peer sent to, RFC 3581 §4);
        otherwise by ``destination.remote.transport``: UDP from a listener of the remote's family,
        TCP over an open connection to the remote (§18 reuse) or a new one. ``flow_only`` with the
        flow gone fails with ``SendError("Flow Failed", 430)`` (RFC 5626 §5.3) without dialling.

        UDP datagrams go to ``destination.remote`` (for a response that is ``received``/``rport``
        or the sent-by port, not necessarily the flow's source port, §18.2.2). Fires with the flow
        used; fails with :class:`SendError` (503 unless said otherwise). Serialises at call time.
        """
        try:
            data = message.to_bytes()
        except Exception as exc:
            log.failure("cannot serialise {message!r}", message=message)
            return fail(SendError(f"Unserialisable message: {exc}", 500))
        flow = destination.flow
        if flow is not None and flow.connection_id is not None:
            conn = self._connections.get(flow.connection_id)
            if conn is not None and conn.writable:
                return self._write(conn, data)
        remote = destination.remote
        transport = remote.transport
        if destination.flow_only and not self._udp_flow_open(flow):
            return fail(SendError("Flow Failed", 430))
        if self._stopping:
            return fail(SendError("Transport Stopped"))
        literal = ip_literal(remote.host)
        if transport in _WEBSOCKETS:
            # RFC 7118 §5: WebSocket clients are never dialled; only an open connection will do.
            return self._send_ws(transport, literal, remote.port, data)
        if literal is None:
            d = self._resolve(remote.host, remote.port, transport)
            d.addCallback(lambda found: self._send_to(transport, found[0], found[1], remote.port, data, flow,
                                                      remote.host))
            return d
        return self._send_to(transport, literal[0], literal[1], remote.port, data, flow, destination.server_name)

    def _write(self, conn: Any, data: bytes) -> "Deferred[Flow]":
        try:
            conn.write_message(data)
        except Exception as exc:
            log.debug("sending on {flow} failed: {exc}", flow=conn.flow, exc=exc)
            return fail(SendError("Send Failed"))
        return succeed(conn.flow)

    def _send_ws(self, transport: str, literal: tuple[int, str] | None, port: int,
                 data: bytes) -> "Deferred[Flow]":
        if literal is not None:
            for conn in reversed(self._by_remote.get((transport, literal[1], port), ())):
                if conn.writable:
                    return self._write(conn, data)
        return fail(SendError("Flow Failed", 430))

    def _udp_flow_open(self, flow: Flow | None) -> bool:
        if flow is None or flow.connection_id is not None or flow.local.transport != "UDP":
            return False
        return any(proto.open for (local, _), proto in self._udp.items() if local == flow.local)

    def _send_to(self, transport: str, family: int, host: str, port: int, data: bytes,
                 flow: Flow | None, server_name: str | None = None) -> "Deferred[Flow]":
        if transport == "UDP":
            proto = None
            if flow is not None and flow.connection_id is None:
                proto = self._udp.get((flow.local, family))
            if proto is None:
                proto = self._udp_default.get(family)
            if proto is None or not proto.open:
                return fail(SendError(f"No UDP Listener for IPv{4 if family == socket.AF_INET else 6}"))
            try:
                proto.sendto(data, host, port)
            except Exception as exc:
                log.debug("UDP send to {host}:{port} failed: {exc}", host=host, port=port, exc=exc)
                return fail(SendError("Send Failed"))
            if (flow is not None and flow.local is proto.local and flow.connection_id is None
                    and flow.remote.port == port and flow.remote.host == host):
                return succeed(flow)
            return succeed(Flow(proto.local, Endpoint("UDP", host, port)))
        if transport in ("TCP", "TLS"):
            return self._send_stream(transport, family, host, port, data, server_name or host)
        return fail(SendError(f"Unsupported Transport {transport}"))

    def _send_stream(self, transport: str, family: int, host: str, port: int, data: bytes,
                     server_name: str) -> "Deferred[Flow]":
        key = (transport, host, port)
        conns = self._by_remote.get(key)
        if conns:
            for conn in reversed(conns):
                if conn.writable:
                    return self._write(conn, data)
        d: Deferred = Deferred()
        dial = self._dials.get(key)
        if dial is not None:
            dial.queue.append((data, d))
            return d
        if not self._may_connect():
            return fail(SendError("Too Many Connections"))
        factory: Any
        endpoint_type = TCP6ClientEndpoint if family == socket.AF_INET6 else TCP4ClientEndpoint
        endpoint: Any = endpoint_type(self.reactor, host, port, timeout=self.connect_timeout)
        dial = _Dial(key, Endpoint(transport, host, port))
        if transport == "TLS":
            from twisted.internet.endpoints import wrapClientTLS

            from .tls import SipTlsClientFactory

            try:
                creator = self.tls_contexts().client(server_name)
            except Exception as exc:
                log.error("cannot open a TLS connection to {host}:{port}: {exc}", host=host, port=port, exc=exc)
                return fail(SendError("TLS Not Configured"))
            endpoint = wrapClientTLS(creator, endpoint)
            factory = SipTlsClientFactory(self, dial)
        else:
            factory = SipClientFactory(self, dial)
        self._dials[key] = dial
        dial.queue.append((data, d))
        attempt = dial.attempt = endpoint.connect(factory)
        attempt.addErrback(self._dial_failed, dial)
        return d

    def _dial_failed(self, failure: Failure, dial: _Dial) -> None:
        if self._dials.get(dial.key) is dial:
            del self._dials[dial.key]
        if failure.check(ConnectionRefusedError):
            reason = "Connection Refused"
        elif failure.check(ConnectTimeoutError):
            reason = "Connect Timeout"
        elif failure.check(CancelledError):
            reason = "Transport Stopped"
        elif dial.remote.transport == "TLS":
            reason = "TLS Handshake Failed"
        else:
            reason = "Connection Failed"
        log.debug("connecting to {remote} failed: {why}", remote=dial.remote, why=failure.getErrorMessage())
        queue, dial.queue = dial.queue, []
        for _, d in queue:
            d.errback(SendError(reason))

    def _resolve(self, host: str, port: int, transport: str) -> "Deferred[tuple[int, str]]":
        """The first address of ``host`` usable for ``transport`` (for UDP: of a family with a
        listener), through the reactor's getaddrinfo resolver: for the names RFC 3263 location does
        not cover (a response's Via sent-by, a closed flow's fallback contact)."""
        receiver = _Addresses()
        try:
            self.reactor.nameResolver.resolveHostName(
                receiver, host, port, addressTypes=[IPv4Address, IPv6Address],
                transportSemantics="UDP" if transport == "UDP" else "TCP")
        except Exception:
            log.failure("resolver failed for {host}", host=host)
            return fail(SendError("Name Resolution Failed"))

        def pick(found: list[tuple[int, str]]) -> tuple[int, str]:
            for family, address in found:
                if transport != "UDP" or family in self._udp_default:
                    literal = ip_literal(address)
                    return (family, literal[1] if literal is not None else address)
            log.debug("no usable address for {host}: {found}", host=host, found=found)
            raise SendError("Name Resolution Failed")

        return receiver.deferred.addCallback(pick)

    # -- stopping ----------------------------------------------------------------------------------
    def stop(self) -> "Deferred[None]":
        """Close every listener and connection and fail queued sends; fires when all are closed.

        Connections get a graceful close, and are aborted after a short grace period."""
        self._stopping = True
        if self.tls_reclaimer is not None:
            self.tls_reclaimer.stop()
        waits: list[Deferred] = []
        listeners, self._listeners = self._listeners, []
        self._reindex()
        for lst in listeners:
            waits.append(maybeDeferred(lst.port.stopListening))
        for dial in list(self._dials.values()):
            if dial.attempt is not None:
                dial.attempt.cancel()
        for proto in list(self._pending):  # TLS/WebSocket handshakes in progress
            proto.abort()
        if self._connections:
            all_closed = self._all_closed = Deferred()
            waits.append(all_closed)
            for conn in list(self._connections.values()):
                conn.close()

            def abort_rest() -> None:
                for conn in list(self._connections.values()):
                    conn.abort()

            grace = self.reactor.callLater(_STOP_GRACE, abort_rest)

            def closed(result: object) -> object:
                if grace.active():
                    grace.cancel()
                return result

            all_closed.addBoth(closed)
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)
