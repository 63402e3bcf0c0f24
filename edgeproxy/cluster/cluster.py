"""Cluster membership and node liveness for one edgeproxy node (OpenSIPS ``clusterer``).

A :class:`Cluster` is built from the node table (config rows or SQL, see :mod:`.nodes` and
:mod:`.db`) and ``my_node_id``. Once started it listens on this node's ``bin:`` URL, pings every
enabled peer of every cluster it belongs to, and keeps a :class:`~.liveness.NodeLiveness` per
(cluster, peer). Routes and the proxy ask it who is up (:meth:`Cluster.up_nodes`,
:meth:`Cluster.is_up`), whether a source address is a fellow node
(:meth:`Cluster.cluster_check_addr`), and can :meth:`Cluster.subscribe` to up/down changes.

Only listed nodes may use the cluster link: a connection from an address that is not the ``url`` IP
of an enabled peer is closed unanswered, and a ping that names an unknown node, a disabled one, or a
node whose ``url`` IP is not the connection's source is refused and its connection closed. Both are
logged (namespace ``edgeproxy.cluster``), as are up/down transitions ("cluster 1: node 2 is UP").
Like OpenSIPS' BIN links, this is address-based admission, not authentication: run the cluster link
on a private network.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionClosed
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from .admission import RefusalLog, ping_problem
from .link import Chunk, InboundLink, LinkFactory, Message, OutboundLink, Ping, PingRefused
from .liveness import Effect, LinkState, NodeLiveness, SyncStatus
from .nodes import BinAddress, NodeInfo, NodeTable, NodeTableError, normalize_ip, same_host

__all__ = ["Cluster", "Subscriber", "CapabilityHandler"]

log = Logger(namespace="edgeproxy.cluster")

#: ``callback(node_id, up)``, called on every change of a peer's up/down verdict.
Subscriber = Callable[[int, bool], None]

#: ``handler(cluster_id, node_id, payload)``: data a peer sent to a capability (:meth:`Cluster.send_all`).
CapabilityHandler = Callable[[int, int, str], None]


class _OneLink(Factory):
    """Client factory handing out one prepared protocol, quietly (no start/stop log lines)."""

    noisy = False

    def __init__(self, proto: OutboundLink) -> None:
        self.proto = proto

    def buildProtocol(self, addr: Any) -> OutboundLink:
        self.proto.factory = self
        return self.proto


class _Peer:
    """An outbound link to one peer URL, shared by every (cluster, node) row with that URL."""

    def __init__(self, addr: BinAddress) -> None:
        self.addr = addr
        self.link: OutboundLink | None = None
        self.connecting: Deferred | None = None
        self.pending: dict[tuple[int, int], None] = {}  # pings waiting for the connection
        self.keys: list[tuple[int, int]] = []           # (cluster_id, node_id) using this URL


class Cluster:
    """This node's view of its clusters, and the heartbeat that keeps it current.

    ``nodes`` is the whole node table (a :class:`NodeTable` or :class:`NodeInfo` rows);
    ``my_node_id`` selects this node, which must be listed (with one ``url``) in every cluster it
    belongs to. Clusters without a row for this node are ignored. Timing parameters mirror the
    OpenSIPS ``clusterer`` modparams, in seconds: ``ping_interval`` (4), ``ping_timeout`` (1; OpenSIPS
    gives it in ms), ``node_timeout`` (how long a DOWN node waits before being pinged again; OpenSIPS
    defaults it to 60 s, here to ``ping_interval``) and ``seed_fallback_interval`` (5).

    :meth:`start` and :meth:`stop` return Deferreds (listening; everything closed).
    """

    def __init__(self, reactor: Any, my_node_id: int, nodes: NodeTable | Iterable[NodeInfo], *,
                 ping_interval: float = 4.0, ping_timeout: float = 1.0,
                 seed_fallback_interval: float = 5, node_timeout: float | None = None) -> None:
        self._reactor = reactor
        self.table = nodes if isinstance(nodes, NodeTable) else NodeTable(nodes)
        self.my_node_id = my_node_id
        self.ping_interval = float(ping_interval)
        self.ping_timeout = float(ping_timeout)
        self.node_timeout = float(ping_interval if node_timeout is None else node_timeout)
        self.seed_fallback_interval = float(seed_fallback_interval)
        if min(self.ping_interval, self.ping_timeout, self.node_timeout) <= 0:
            raise ValueError("ping_interval, ping_timeout and node_timeout must be > 0")
        if self.seed_fallback_interval < 0:
            raise ValueError("seed_fallback_interval must be >= 0")

        mine = [r for r in self.table if r.node_id == my_node_id]
        if not mine:
            raise NodeTableError(f"my_node_id {my_node_id} is not in the node table")
        urls = {r.bin for r in mine}
        if len(urls) > 1:
            raise NodeTableError(f"node {my_node_id} has several urls ({', '.join(sorted(map(str, urls)))}); "
                                 "one listener serves all its clusters")
        self._my_rows = {r.cluster_id: r for r in mine}
        self.my_node: NodeInfo = mine[0]
        self.my_bin: BinAddress = mine[0].bin
        #: Member clusters in table order (including those where this node is disabled).
        self.clusters: tuple[int, ...] = tuple(c for c in self.table.clusters() if c in self._my_rows)
        self._peers_of: dict[int, tuple[NodeInfo, ...]] = {
            c: tuple(r for r in self.table.nodes(c) if r.node_id != my_node_id) for c in self.clusters}
        for c, rows in self._peers_of.items():
            for r in rows:
                if r.bin == self.my_bin:
                    raise NodeTableError(f"cluster {c}: node {r.node_id} has this node's url {r.url}")

        self._live: dict[tuple[int, int], NodeLiveness] = {}
        self._node_up: dict[int, bool] = {}  # last verdict told to subscribers
        self._links: dict[BinAddress, _Peer] = {}
        self._sync: dict[int, SyncStatus] = {}
        for c in self._active_clusters():
            for r in self._peers_of[c]:
                if r.enabled:
                    self._links.setdefault(r.bin, _Peer(r.bin)).keys.append((c, r.node_id))
        self._reset_liveness()
        #: Source IPs that may open a cluster link: the url IPs of the enabled peers.
        self._admitted = {self._row(key).bin.host for key in self._live}
        self._subscribers: list[Subscriber] = []
        self._capabilities: dict[str, CapabilityHandler] = {}
        self._inbound: set[InboundLink] = set()
        self._closing: dict[Any, Deferred] = {}
        self._refused = RefusalLog(reactor)
        self._port: Any = None
        self._timer: Any = None
        self._running = False

    # ---------------------------------------------------------------- queries (routes, proxy)

    def nodes(self, cluster_id: int | None = None) -> tuple[NodeInfo, ...]:
        """The other nodes of ``cluster_id`` (all member clusters when ``None``, one row per node).

        As in OpenSIPS, this node is kept apart (see :attr:`my_node`) and is never in the list.
        """
        if cluster_id is not None:
            return self._peers_of.get(cluster_id, ())
        seen: dict[int, NodeInfo] = {}
        for c in self.clusters:
            for r in self._peers_of[c]:
                seen.setdefault(r.node_id, r)
        return tuple(seen.values())

    def up_nodes(self, cluster_id: int | None = None) -> tuple[NodeInfo, ...]:
        """The other nodes currently up, in table order (e.g. candidates for a global lookup)."""
        return tuple(r for r in self.nodes(cluster_id) if self.is_up(r.node_id, cluster_id))

    def is_up(self, node_id: int, cluster_id: int | None = None) -> bool:
        """Whether node ``node_id`` answers our pings (in ``cluster_id``, or in any shared cluster).

        A node is up from its first pong until its ping retries are spent (see
        :mod:`.liveness`); disabled and unknown nodes are never up. This node itself is up while the
        cluster runs; nothing is up while it is stopped.
        """
        if not self._running:
            return False
        if node_id == self.my_node_id:
            return True
        if cluster_id is not None:
            live = self._live.get((cluster_id, node_id))
            return bool(live and live.up)
        return any(live.up for (c, n), live in self._live.items() if n == node_id)

    def link_state(self, node_id: int, cluster_id: int | None = None) -> LinkState | None:
        """The heartbeat phase with a peer (first shared cluster when ``cluster_id`` is ``None``)."""
        for (c, n), live in self._live.items():
            if n == node_id and (cluster_id is None or c == cluster_id):
                return live.state
        return None

    def cluster_check_addr(self, cluster_id: int, ip: str, mode: str = "sip") -> bool:
        """True when ``ip`` belongs to ANOTHER node of ``cluster_id`` (OpenSIPS ``cluster_check_addr``).

        Mode ``"sip"`` (the OpenSIPS default) compares ``ip`` with each peer's ``sip_addr`` host (the
        part before the port); ``"bin"`` compares it with the peer's ``url`` IP. This node is never a
        match, an unknown cluster gives false, and the peers' up/down state does not matter (OpenSIPS
        ``ip_check`` does not look at it either). IP literals compare as addresses (IPv4-mapped IPv6
        matches IPv4), so IPv6 works, which it does not in OpenSIPS. Note the OpenSIPS caveat: with an
        HA pair behind a VIP, ``sip_addr`` is the VIP while packets come from the real IP.
        """
        if mode not in ("sip", "bin"):
            raise ValueError(f"cluster_check_addr mode must be 'sip' or 'bin', not {mode!r}")
        if not isinstance(ip, str) or not ip:
            return False
        for r in self._peers_of.get(cluster_id, ()):
            host = r.sip_host if mode == "sip" else r.bin.host
            if host is not None and same_host(host, ip):
                return True
        return False

    def sip_addr_of(self, node_id: int) -> str | None:
        """The ``sip_addr`` of a node (this one included) as written in the table, or ``None``."""
        for c in self.clusters:
            r = self.table.get(c, node_id)
            if r is not None:
                return r.sip_addr
        return None

    def node_for_sip_addr(self, ip: str, cluster_id: int | None = None) -> NodeInfo | None:
        """The node whose ``sip_addr`` host is ``ip`` (this node included), e.g. to map a federated
        location's ``home_ip`` to a node. When several share it (an HA pair behind a VIP) this node
        wins, then an up node, then table order."""
        clusters = self.clusters if cluster_id is None else (cluster_id,)
        found = [r for c in clusters if c in self._my_rows for r in self.table.nodes(c)
                 if r.sip_host is not None and same_host(r.sip_host, ip)]
        if not found:
            return None
        found.sort(key=lambda r: (r.node_id != self.my_node_id, not self.is_up(r.node_id)))
        return found[0]

    def is_synced(self, cluster_id: int) -> bool:
        """Whether this node counts as synced in ``cluster_id`` (seed fallback or a synced donor up)."""
        sync = self._sync.get(cluster_id)
        return bool(sync and sync.synced)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(node_id, up)`` whenever a peer's verdict changes (up in any shared
        cluster counts as up). Returns a function that unsubscribes. Exceptions are logged."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
        return unsubscribe

    def register_capability(self, name: str, handler: CapabilityHandler) -> None:
        """Receive what peers :meth:`send_all` to capability ``name`` (one handler per name)."""
        self._capabilities[name] = handler

    def send_all(self, cluster_id: int, capability: str, payload: str) -> int:
        """Send ``payload`` to ``capability`` on every peer of ``cluster_id`` that is up, over our links
        to them (OpenSIPS clusterer ``send_all``); best effort, no answer awaited. The number sent."""
        return sum(self._send(row, cluster_id, capability, payload) for row in self.up_nodes(cluster_id))

    def send_to(self, cluster_id: int, node_id: int, capability: str, payload: str) -> bool:
        """Send ``payload`` to ``capability`` on node ``node_id`` over our link to it (OpenSIPS
        clusterer ``send_to``); best effort. False when there is no link to that node now."""
        row = self.table.get(cluster_id, node_id)
        return row is not None and self._send(row, cluster_id, capability, payload)

    def send_acked(self, cluster_id: int, node_id: int, capability: str, payload: str) -> Deferred | None:
        """:meth:`send_to` as a :class:`~.link.Chunk`: a Deferred that fires once node ``node_id`` has
        handled ``payload`` (fails when the link is lost first), for a bulk sender to keep only a few
        in flight; None when there is no link to that node now."""
        row = self.table.get(cluster_id, node_id)
        link = self._link_to(row) if row is not None else None
        if link is None:
            return None
        try:
            return link.callRemote(Chunk, cluster_id=cluster_id, node_id=self.my_node_id, capability=capability,
                                   payload=payload)
        except Exception as exc:  # the link went away under us
            log.debug("cluster: {cap} chunk to node {n} not sent: {why}", cap=capability, n=node_id, why=exc)
            return None

    def _link_to(self, row: NodeInfo) -> OutboundLink | None:
        peer = self._links.get(row.bin)
        link = peer.link if peer is not None else None
        return link if link is not None and link.transport is not None else None

    def _send(self, row: NodeInfo, cluster_id: int, capability: str, payload: str) -> bool:
        """One :class:`Message` to ``row``'s node over our open link to it; False when there is none."""
        link = self._link_to(row)
        if link is None:
            return False
        try:
            link.callRemote(Message, cluster_id=cluster_id, node_id=self.my_node_id, capability=capability,
                            payload=payload)
        except Exception as exc:  # the link went away under us: its loss is handled elsewhere
            log.debug("cluster: {cap} data to node {n} not sent: {why}", cap=capability, n=row.node_id, why=exc)
            return False
        return True

    @property
    def running(self) -> bool:
        return self._running

    @property
    def listening_port(self) -> Any:
        """The Twisted listening port (``getHost()`` tells the bound address), or ``None``."""
        return self._port

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Deferred:
        """Listen on this node's ``bin:`` URL and start pinging. Fires when listening."""
        if self._running:
            return succeed(None)
        factory = LinkFactory(self, self._admit)
        try:
            self._port = self._reactor.listenTCP(self.my_bin.port, factory, interface=self.my_bin.host)
        except Exception:
            return fail()
        self._running = True
        self._reset_liveness()
        now = self._reactor.seconds()
        for c in self._active_clusters():
            self._sync[c] = SyncStatus(self._my_rows[c].seed, self.seed_fallback_interval, now)
        log.info("cluster: node {node} listening on {url} (clusters {clusters})",
                 node=self.my_node_id, url=str(self.my_bin), clusters=list(self.clusters))
        self._wake()
        return succeed(None)

    def stop(self) -> Deferred:
        """Stop pinging, close the listener and every link. Fires when all is closed.

        From then on no node counts as up; subscribers are not told (this node is going away, the
        peers are not). :meth:`start` may be called again and begins from scratch."""
        if not self._running and self._port is None:
            return succeed(None)
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waits: list[Deferred] = []
        if self._port is not None:
            waits.append(maybeDeferred(self._port.stopListening))
            self._port = None
        for peer in self._links.values():
            peer.pending.clear()
            if peer.connecting is not None:
                peer.connecting.cancel()
            if peer.link is not None:
                waits.append(self._close(peer.link))
        for link in list(self._inbound):
            waits.append(self._close(link))
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    # ---------------------------------------------------------------- heartbeat driver

    def _reset_liveness(self) -> None:
        """A fresh heartbeat machine per enabled peer of each cluster where this node is enabled."""
        self._live = {
            key: NodeLiveness(self._row(key).no_ping_retries, ping_interval=self.ping_interval,
                              ping_timeout=self.ping_timeout, node_timeout=self.node_timeout)
            for peer in self._links.values() for key in peer.keys}
        self._node_up = {}
        self._unreachable: set[tuple[int, int]] = set()

    def _active_clusters(self) -> list[int]:
        return [c for c in self.clusters if self._my_rows[c].enabled]

    def _wake(self) -> None:
        self._timer = None
        if not self._running:
            return
        now = self._reactor.seconds()
        for key, live in list(self._live.items()):
            self._apply(key, live.tick(now))
        for c, sync in self._sync.items():
            if sync.tick(now):
                log.info("cluster {c}: no donor within {t} s, seed node {node} falls back to synced",
                         c=c, t=self.seed_fallback_interval, node=self.my_node_id)
        self._schedule()

    def _schedule(self) -> None:
        if not self._running:
            return
        due = min([live.next_deadline() for live in self._live.values()]
                  + [s.next_deadline() for s in self._sync.values()] + [math.inf])
        if due == math.inf:
            return
        now = self._reactor.seconds()
        delay = max(0.0, due - now)
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= now + delay:
                return
            self._timer.cancel()
        self._timer = self._reactor.callLater(delay, self._wake)

    def _apply(self, key: tuple[int, int], effects: list[Effect]) -> None:
        cluster_id, node_id = key
        for effect in effects:
            if effect is Effect.PING or effect is Effect.RETRY:
                live = self._live[key]
                if effect is Effect.RETRY and live.up:
                    log.info("cluster {c}: node {n} not answering, retrying ({left} retries left)",
                             c=cluster_id, n=node_id, left=live.retries_left)
                self._send_ping(key)
            elif effect is Effect.UP:
                self._unreachable.discard(key)
                log.info("cluster {c}: node {n} is UP", c=cluster_id, n=node_id)
                self._verdict_changed(node_id)
            elif effect is Effect.DOWN:
                log.warn("cluster {c}: node {n} is DOWN", c=cluster_id, n=node_id)
                self._verdict_changed(node_id)
        if self._live[key].state is LinkState.DOWN:
            if not effects and key not in self._unreachable:  # never up so far: say it once
                self._unreachable.add(key)
                log.info("cluster {c}: node {n} not reachable at {url} (yet)", c=cluster_id, n=node_id,
                         url=str(self._peer_for(key).addr))
            self._drop_dead_link(self._peer_for(key))

    def _drop_dead_link(self, peer: _Peer) -> None:
        """Abort the connection to a URL whose nodes are all DOWN. Unanswered pings would pile up
        on it, and a half-open TCP connection (peer rebooted, state lost on the path) would never
        carry a pong again; the next probe dials afresh."""
        if peer.link is None or peer.link.transport is None:
            return
        if all(self._live[k].state is LinkState.DOWN for k in peer.keys):
            log.debug("cluster: dropping the link to {url}: no node there is up", url=str(peer.addr))
            peer.link.abort()

    def _verdict_changed(self, node_id: int) -> None:
        up = self.is_up(node_id)
        if self._node_up.get(node_id, False) == up:
            return
        self._node_up[node_id] = up
        for callback in list(self._subscribers):
            try:
                callback(node_id, up)
            except Exception:
                log.failure("cluster subscriber {cb!r} raised on node {n} up={up}",
                            cb=callback, n=node_id, up=up)

    # ---------------------------------------------------------------- outbound pings

    def _row(self, key: tuple[int, int]) -> NodeInfo:
        row = self.table.get(*key)
        assert row is not None
        return row

    def _peer_for(self, key: tuple[int, int]) -> _Peer:
        return self._links[self._row(key).bin]

    def _send_ping(self, key: tuple[int, int]) -> None:
        peer = self._peer_for(key)
        if peer.link is not None:
            self._call_ping(peer, peer.link, key)
            return
        peer.pending[key] = None
        if peer.connecting is None:
            self._connect(peer)

    def _connect(self, peer: _Peer) -> None:
        cls = TCP6ClientEndpoint if peer.addr.ipv6 else TCP4ClientEndpoint
        endpoint = cls(self._reactor, peer.addr.host, peer.addr.port, timeout=self.ping_timeout,
                       bindAddress=(self.my_bin.host, 0))
        link = OutboundLink(self._outbound_lost)
        d = endpoint.connect(_OneLink(link))
        peer.connecting = d

        def connected(proto: OutboundLink) -> None:
            peer.connecting = None
            if not self._running:
                proto.close()
                return
            peer.link = proto
            pending, peer.pending = list(peer.pending), {}
            for key in pending:
                self._call_ping(peer, proto, key)

        def failed(reason: Failure) -> None:
            peer.connecting = None
            if not self._running:
                return
            log.debug("cluster: cannot connect to {url}: {why}", url=str(peer.addr),
                      why=reason.getErrorMessage())
            now = self._reactor.seconds()
            pending, peer.pending = list(peer.pending), {}
            for key in pending:
                self._apply(key, self._live[key].send_failed(now))
            self._schedule()

        d.addCallbacks(connected, failed)

    def _call_ping(self, peer: _Peer, link: OutboundLink, key: tuple[int, int]) -> None:
        cluster_id, node_id = key
        d = link.callRemote(Ping, cluster_id=cluster_id, node_id=self.my_node_id, to_node_id=node_id)

        def pong(answer: dict[str, Any]) -> None:
            if not self._running:
                return
            if answer.get("node_id") != node_id:
                log.warn("cluster {c}: {url} answered as node {other}, expected node {n}; ignored",
                         c=cluster_id, url=str(peer.addr), other=answer.get("node_id"), n=node_id)
                return
            now = self._reactor.seconds()
            self._apply(key, self._live[key].pong_received(now))
            sync = self._sync.get(cluster_id)
            if answer.get("synced") and sync is not None and sync.donor_synced(node_id, now):
                log.info("cluster {c}: synced from donor node {n}", c=cluster_id, n=node_id)
            self._schedule()

        def error(reason: Failure) -> None:
            if reason.check(ConnectionClosed):
                return  # the link's loss is handled once, in _outbound_lost
            if reason.check(PingRefused):
                log.warn("cluster {c}: node {n} at {url} refused our ping: {why}", c=cluster_id,
                         n=node_id, url=str(peer.addr), why=reason.getErrorMessage())
            else:
                log.info("cluster {c}: ping to node {n} failed: {why}", c=cluster_id, n=node_id,
                         why=reason.getErrorMessage())
            # no pong: the ping_timeout will count it as missed

        d.addCallbacks(pong, error)

    def _outbound_lost(self, link: OutboundLink) -> None:
        waiter = self._closing.pop(link, None)
        if waiter is not None:
            waiter.callback(None)
        peer = next((p for p in self._links.values() if p.link is link), None)
        if peer is None:
            return
        peer.link = None
        if not self._running:
            return
        log.debug("cluster: link to {url} lost", url=str(peer.addr))
        now = self._reactor.seconds()
        for key in peer.keys:
            self._apply(key, self._live[key].link_lost(now))
        self._schedule()

    # ---------------------------------------------------------------- inbound side

    def _admit(self, host: str) -> bool:
        ip = normalize_ip(host) or host
        if self._running and ip in self._admitted:
            return True
        self._refused.warn(ip, "cluster: refused link from {ip}: not the address of a listed node", ip=ip)
        return False

    def inbound_opened(self, link: InboundLink) -> None:
        self._inbound.add(link)

    def inbound_closed(self, link: InboundLink) -> None:
        self._inbound.discard(link)
        waiter = self._closing.pop(link, None)
        if waiter is not None:
            waiter.callback(None)

    def answer_ping(self, link: InboundLink, cluster_id: int, node_id: int,
                    to_node_id: int) -> dict[str, Any]:
        """Check a peer's ping (called by the inbound link); refuse and close on any mismatch."""
        problem = self._check_ping(link.peer_ip, cluster_id, node_id, to_node_id)
        if problem is not None:
            self._refused.warn(link.peer_ip, "cluster: refused ping from {ip} (cluster {c}, node {n}): {problem}",
                              ip=link.peer_ip, c=cluster_id, n=node_id, problem=problem)
            self._reactor.callLater(0, link.close)
            raise PingRefused(problem)
        now = self._reactor.seconds()
        self._apply((cluster_id, node_id), self._live[(cluster_id, node_id)].ping_received(now))
        self._schedule()
        return {"node_id": self.my_node_id, "synced": self.is_synced(cluster_id)}

    def message_received(self, link: InboundLink, cluster_id: int, node_id: int, capability: str,
                         payload: str) -> None:
        """Data from a peer for a capability: checked like its pings, then handed to the handler."""
        problem = self._check_ping(link.peer_ip, cluster_id, node_id, self.my_node_id)
        handler = self._capabilities.get(capability)
        if problem is not None or handler is None:
            self._refused.warn(link.peer_ip, "cluster: ignored {cap} data from {ip} (node {n}): {problem}",
                              cap=capability, ip=link.peer_ip, n=node_id, problem=problem or "no such capability")
            return
        try:
            handler(cluster_id, node_id, payload)
        except Exception:
            log.failure("cluster: capability {cap} failed on data from node {n}", cap=capability, n=node_id)

    def _check_ping(self, ip: str, cluster_id: int, node_id: int, to_node_id: int) -> str | None:
        if not self._running:
            return "node stopping"
        return ping_problem(self.table, self._my_rows, self.my_node_id, ip, cluster_id, node_id, to_node_id)

    # ---------------------------------------------------------------- helpers

    def _close(self, proto: InboundLink | OutboundLink) -> Deferred:
        d: Deferred = Deferred()
        self._closing[proto] = d
        proto.abort()  # prompt even when a hung peer no longer reads
        return d
