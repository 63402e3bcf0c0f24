"""The transport layer's controller: listeners, connections, and :class:`Sender` for the node.

Theory of operation. :class:`TransportManager` owns every socket of a node. Life cycle: build it
(no sink: the node that is the sink needs the manager as its sender), :meth:`~TransportManager.start`
it with the sink, :meth:`~TransportManager.listen` on each endpoint, :meth:`~TransportManager.stop`.
Each UDP listener is one :class:`SipDatagramProtocol`, each TCP listener a :class:`SipServerFactory`
whose connections are :class:`SipStreamProtocol`; all are built with the sink and hand valid
messages straight to it. Connections report their start and end to the manager's
:class:`~.connections.ConnectionTable` through the public
:class:`~edgeproxy.interfaces.ConnectionRegistry`, which numbers them and indexes them twice: by id,
for flows, and by remote ``(host, port)``, for RFC 3261 §18 connection reuse (a response or request
to a peer goes over any open connection with it, inbound or outbound, of the same transport).

TLS (:mod:`.tls`) and WebSocket (:mod:`.ws`, RFC 7118) connections are the same kind of connection
to the manager: they have an id, a flow and ``write_message``; until their handshake completes they
are only *pending* (counted against ``max_connections``, aborted at stop). WebSocket clients are never
dialled: a WS/WSS destination is reached over an open connection or not at all (430 Flow Failed).

:meth:`TransportManager.send` picks, in order: the connection the destination's flow names; for a
UDP flow, the listener the flow arrived on; else a UDP listener of the destination's address family,
an open TCP/TLS connection to the destination, or a new outbound connection (messages queue until it
is up; for TLS until the handshake verified the server's certificate against the destination's
name, or ``Destination.server_name``). A name that reaches here is resolved to its first A/AAAA
address (IP literals skip that, :mod:`.resolve`): RFC 3263 location (NAPTR, SRV, failover between targets) happens
before, in the proxy with :mod:`.locator`, which hands over addresses.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IReactorSocket, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from ..interfaces import Connection, MessageSink, SendError
from ..proxy.noise import NoiseLog
from ..sip.address import ip_literal
from ..sip.endpoint import Destination, Endpoint, Flow
from ..sip.message import Message
from ..sip.parser import DEFAULT_LIMITS, Limits
from .connections import ConnectionTable
from .listeners import Listener, ListenerIndex, adopt_v6only, advertised_host
from .resolve import resolve_first
from .tcp import SipClientFactory, SipServerFactory
from .udp import SipDatagramProtocol

if TYPE_CHECKING:
    from .tls import TlsContexts, TlsSettings
    from .tls_memory import IdleTlsReclaimer
    from .ws import SipWebSocketFactory
    from .ws_settings import WsSettings

__all__ = ["TransportManager", "Listener"]

log = Logger(namespace="edgeproxy.transport")

_WEBSOCKETS = ("WS", "WSS")
_UDP_RCVBUF = 4 * 1024 * 1024
_STOP_GRACE = 1.0


class TransportManager:
    """UDP and TCP transports of one node (RFC 3261 §18), implementing
    :class:`edgeproxy.interfaces.Sender`.

    ``reactor`` provides ``IReactorUDP``, ``IReactorTCP``, ``IReactorTime`` and the name resolver
    (``IReactorSocket`` too for ``::`` listeners). ``limits`` bound every parse; ``max_connections``
    caps open plus connecting TCP connections, inbound and outbound together (beyond it, accepted
    sockets are closed at once and sends that need a new connection fail with 503), and
    ``max_connections_per_source`` (0 = no cap) those of one remote address; ``message_timeout``
    (seconds, None/0 = none) bounds how long one SIP message may take to arrive on a stream;
    ``idle_timeout`` (seconds, None/0 = never) closes connections that received nothing for that long;
    ``connect_timeout`` bounds outbound connection set-up; ``advertise`` is the host wildcard
    listeners announce (see :meth:`listen`). ``tls`` (:class:`~edgeproxy.transport.tls.TlsSettings`)
    is needed for ``tls`` and ``wss`` listeners and configures outbound TLS; ``ws``
    (:class:`~edgeproxy.transport.ws.WsSettings`) configures ``ws``/``wss`` listeners. ``noise`` is
    the node's aggregated log of hostile input (:class:`~edgeproxy.proxy.noise.NoiseLog`), shared with
    the node so that one source's lines are bounded across the transports and the core together.

    The sink is not a constructor argument: it is given to :meth:`start`, which must come before
    :meth:`listen`; until then every send fails with ``SendError("Transport Not Started")``.
    """

    def __init__(
        self,
        reactor: Any,
        limits: Limits = DEFAULT_LIMITS,
        max_connections: int = 4096,
        idle_timeout: float | None = 300.0,
        connect_timeout: float = 5.0,
        advertise: str | None = None,
        tls: TlsSettings | None = None,
        ws: WsSettings | None = None,
        max_connections_per_source: int = 0,
        message_timeout: float | None = None,
        noise: NoiseLog | None = None,
    ) -> None:
        self.reactor = reactor
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.advertise = advertise
        self.backlog = 511
        self.tls_settings = tls
        self.ws_settings = ws
        self._tls: TlsContexts | None = None
        self._sink: MessageSink | None = None
        self._refusal: str | None = "Transport Not Started"  # why sends fail; None while running
        self._index = ListenerIndex()
        self._table = ConnectionTable(reactor, limits, self._index, max_connections, idle_timeout,
                                      max_connections_per_source, message_timeout, noise)
        self.noise = self._table.noise
        # the send path's lookups, held directly (both objects update them in place)
        self._udp = self._index.udp
        self._udp_default = self._index.udp_default
        self._connections = self._table.by_id
        self._by_remote = self._table.by_remote
        self._udp_flow_open = self._index.udp_flow_open

    # -- life cycle --------------------------------------------------------------------------------
    def start(self, sink: MessageSink) -> None:
        """Start with ``sink``, the node that receives every message and closed flow
        (:class:`~edgeproxy.interfaces.MessageSink`); once, before the first :meth:`listen`."""
        if self._sink is not None and self._sink is not sink:
            raise RuntimeError("the transports are already started with another sink")
        self._sink = sink
        self._refusal = None
        self._table.open(sink)

    @property
    def max_connections(self) -> int:
        return self._table.max_connections

    @property
    def idle_timeout(self) -> float | None:
        return self._table.idle_timeout

    @property
    def tls_reclaimer(self) -> IdleTlsReclaimer | None:
        """The :class:`~.tls_memory.IdleTlsReclaimer`, from the first TLS/WSS connection on."""
        return self._table.tls_reclaimer

    # -- listening ---------------------------------------------------------------------------------
    def listen(self, endpoint: Endpoint, advertise: str | None = None) -> "Deferred[Listener]":
        """Open a listener on ``endpoint`` (an IP literal; see :func:`parse_listen`); after :meth:`start`.

        Fires with the :class:`Listener`, or fails with ``CannotListenError`` / ``ValueError``
        (``RuntimeError`` before :meth:`start`). For a wildcard address (``0.0.0.0``, ``::``) the
        advertised host is ``advertise`` (this call's, else the manager's), if it is a name or an
        address of the listener's family, else a best guess: the source address of the default
        route (loopback without one). A ``::`` listener is IPv6-only (``IPV6_V6ONLY``), so that it
        can sit next to a ``0.0.0.0`` one on the same port; list both to serve both families.
        """
        try:
            listener = self._listen(endpoint, advertise)
        except Exception:
            return fail()
        return succeed(listener)

    def _listen(self, endpoint: Endpoint, advertise: str | None) -> Listener:
        sink = self._sink
        if sink is None:
            raise RuntimeError(f"cannot listen on {endpoint}: the transports are not started")
        literal = ip_literal(endpoint.host)
        if literal is None:
            raise ValueError(f"cannot listen on {endpoint}: host is not an IP address")
        family, host = literal
        transport = endpoint.transport.upper()
        reactor = self.reactor
        v6only = host == "::" and IReactorSocket.providedBy(reactor)
        protocol: SipDatagramProtocol | None = None
        port: Any  # the reactor's udp.Port or tcp.Port: an IListeningPort that is also an ISystemHandle
        if transport == "UDP":
            protocol = SipDatagramProtocol(sink, self.limits, endpoint, family, self.noise)
            packet = min(self.limits.max_message_size + 1, 65536)
            if v6only:
                port = adopt_v6only(socket.SOCK_DGRAM, endpoint.port, self.backlog,
                                    lambda fd: reactor.adoptDatagramPort(fd, socket.AF_INET6, protocol, packet))
            else:
                port = reactor.listenUDP(endpoint.port, protocol, interface=host, maxPacketSize=packet)
            try:
                port.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
            except Exception:  # best effort; the kernel caps it at net.core.rmem_max
                pass
        elif transport in ("TCP", "TLS", "WS", "WSS"):
            factory, outer = self._server_factory(transport, sink)
            if v6only:
                port = adopt_v6only(socket.SOCK_STREAM, endpoint.port, self.backlog,
                                    lambda fd: reactor.adoptStreamPort(fd, socket.AF_INET6, outer))
            else:
                port = reactor.listenTCP(endpoint.port, outer, backlog=self.backlog, interface=host)
        else:
            raise ValueError(f"cannot listen on {endpoint}: unsupported transport {endpoint.transport}")
        bound = Endpoint(transport, host, port.getHost().port)
        local = Endpoint(transport, advertised_host(host, family, advertise, self.advertise), bound.port)
        if protocol is not None:
            protocol.local = local
        else:
            factory.local = local
        listener = Listener(bound, local, family, port, protocol)
        self._index.add(listener)
        self._refusal = None
        assert self._sink is not None  # listen() refuses to run before start(sink)
        self._table.open(self._sink)
        log.info("listening on {bound} as {local}", bound=bound, local=local)
        return listener

    def _server_factory(self, transport: str,
                        sink: MessageSink) -> tuple[SipServerFactory | SipWebSocketFactory, Factory[Any]]:
        """The factory whose protocols serve a listener of ``transport`` (its ``local`` is set once
        the port is bound) and the factory that listens (the same, or a TLS wrapper around it)."""
        if transport == "TCP":
            tcp = SipServerFactory(self._table, sink)
            return tcp, tcp
        server = None
        if transport in ("TLS", "WSS"):
            server = self.tls_contexts().server
            if server is None:
                raise ValueError(f"a {transport.lower()} listener needs a TLS certificate and key")
        factory: SipServerFactory | SipWebSocketFactory
        if transport == "TLS":
            from .tls import SipTlsServerFactory

            factory = SipTlsServerFactory(self._table, sink, self.tls_contexts().settings.handshake_timeout)
        else:
            from .ws import SipWebSocketFactory, WsSettings

            factory = SipWebSocketFactory(self._table, sink, secure=transport == "WSS",
                                          settings=self.ws_settings or WsSettings())
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

    @property
    def listeners(self) -> list[Listener]:
        return list(self._index.listeners)

    def local_endpoints(self) -> list[Endpoint]:
        """The advertised endpoint of every listener, in the order they were opened."""
        return [lst.local for lst in self._index.listeners]

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        """The address to advertise (Via sent-by, Record-Route, Path) for ``transport`` toward
        ``remote`` (RFC 3261 §18.1.1); see :meth:`.ListenerIndex.local_endpoint`."""
        return self._index.local_endpoint(transport, remote)

    # -- connections -------------------------------------------------------------------------------
    @property
    def connections(self) -> ConnectionTable:
        """The :class:`~edgeproxy.interfaces.ConnectionRegistry` every stream protocol of this
        manager reports to."""
        return self._table

    @property
    def connection_count(self) -> int:
        """Open plus connecting connections (TCP, TLS, WebSocket; also TLS and WebSocket ones still
        in their handshake)."""
        return self._table.count

    def connections_by_transport(self) -> dict[str, int]:
        """Open connections by transport (``TCP``, ``TLS``, ``WS``, ``WSS``): counted when asked (the
        statistics), never kept up per message."""
        out: dict[str, int] = {}
        for conn in self._table.by_id.values():
            out[conn.transport_name] = out.get(conn.transport_name, 0) + 1
        return out

    def connection(self, connection_id: int) -> Connection | None:
        """The open connection with that id, if any."""
        return self._connections.get(connection_id)

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
        if self._refusal is not None:
            return fail(SendError(self._refusal))
        literal = ip_literal(remote.host)
        if transport in _WEBSOCKETS:
            # RFC 7118 §5: WebSocket clients are never dialled; only an open connection will do.
            return self._send_ws(transport, literal, remote.port, data)
        if literal is None:
            udp_default = self._udp_default
            resolved = resolve_first(self.reactor, remote.host, remote.port, transport,
                                     lambda family: transport != "UDP" or family in udp_default)
            return resolved.addCallback(lambda found: self._send_to(transport, found[0], found[1], remote.port,
                                                                    data, flow, remote.host))
        return self._send_to(transport, literal[0], literal[1], remote.port, data, flow, destination.server_name)

    def _write(self, conn: Connection, data: bytes) -> "Deferred[Flow]":
        try:
            conn.write_message(data)
        except Exception as exc:
            log.debug("sending on {flow} failed: {exc}", flow=conn.flow, exc=exc)
            return fail(SendError("Send Failed"))
        return succeed(conn.flow)  # type: ignore[arg-type]  # an indexed connection has its flow

    def _send_ws(self, transport: str, literal: tuple[int, str] | None, port: int,
                 data: bytes) -> "Deferred[Flow]":
        if literal is not None:
            for conn in reversed(self._by_remote.get((transport, literal[1], port), ())):
                if conn.writable:
                    return self._write(conn, data)
        return fail(SendError("Flow Failed", 430))

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
        d: Deferred[Flow] = Deferred()
        table = self._table
        dial = table.dials.get(key)
        if dial is not None:
            dial.queue.append((data, d))
            return d
        if not table.may_connect:
            return fail(SendError("Too Many Connections"))
        sink = self._sink
        assert sink is not None  # may_connect: started
        factory: SipClientFactory
        endpoint_type = TCP6ClientEndpoint if family == socket.AF_INET6 else TCP4ClientEndpoint
        endpoint: IStreamClientEndpoint = endpoint_type(self.reactor, host, port, timeout=self.connect_timeout)
        if transport == "TLS":
            from twisted.internet.endpoints import wrapClientTLS

            from .tls import SipTlsClientFactory

            try:
                creator = self.tls_contexts().client(server_name)
            except Exception as exc:
                log.error("cannot open a TLS connection to {host}:{port}: {exc}", host=host, port=port, exc=exc)
                return fail(SendError("TLS Not Configured"))
            endpoint = wrapClientTLS(creator, endpoint)
            dial = table.dial(transport, host, port)
            factory = SipTlsClientFactory(table, sink, dial, self.tls_contexts().settings.handshake_timeout)
        else:
            dial = table.dial(transport, host, port)
            factory = SipClientFactory(table, sink, dial)
        dial.queue.append((data, d))
        attempt = dial.attempt = endpoint.connect(factory)
        attempt.addErrback(lambda reason: table.dial_failed(dial, reason))
        return d

    # -- stopping ----------------------------------------------------------------------------------
    def stop(self) -> "Deferred[None]":
        """Close every listener and connection and fail queued sends; fires when all are closed.

        Connections get a graceful close, and are aborted after a short grace period. A stopped
        manager may :meth:`listen` again (with the sink it was started with)."""
        if self._sink is not None:
            self._refusal = "Transport Stopped"
        waits: list[Deferred[Any]] = [maybeDeferred(lst.port.stopListening) for lst in self._index.clear()]
        all_closed = self._table.close_all(_STOP_GRACE)
        if all_closed is not None:
            waits.append(all_closed)
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)
