"""Twisted glue: build a running node from a :class:`~edgeproxy.config.Config`.

``make_service(config)`` returns a ``MultiService`` whose start opens the listeners and whose stop
closes them and cancels every timer; ``twistd edgeproxy`` (see :mod:`edgeproxy.tap`) is a thin shell
around it, and tests call :func:`build_node` directly to run a node inside their reactor.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, replace
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from .auth import Authenticator, subscriber_store
from .config import Config, ConfigError
from .location import InMemoryLocation
from .location.natping import NatPinger
from .proxy.flood import FloodDetector
from .proxy.node import Node
from .registrar import Registrar
from .routing.loader import load_route_module
from .transport import TransportManager, parse_listen
from .transport.locator import DnsLocator

__all__ = ["make_service", "build_node", "RunningNode", "NodeService"]

log = Logger(namespace="edgeproxy.service")


@dataclass
class RunningNode:
    """The parts of one node, for tests and for the service."""

    node: Node
    transports: TransportManager
    location: InMemoryLocation
    registrar: Registrar
    config: Config | None = None
    cluster: Any = None
    federation: Any = None
    management: Any = None  # the MI listener (edgeproxy.management) with [mi] listen

    @property
    def pinger(self) -> Any:
        """The NAT pinger (``[nathelper]``), which the node holds: it takes its OPTIONS' replies."""
        return self.node.pinger

    @inlineCallbacks
    def start(self, listen: list[str], advertise: str = "") -> Any:
        c = self.config.cluster if self.config is not None else None
        if c is not None and c.my_node_id:
            from .cluster import Cluster, NodeTable, load_node_table

            rows = (yield load_node_table(c.db_url, c.db_table)) if c.db_url else NodeTable.from_dicts(c.nodes)
            self.cluster = Cluster(self.node.clock, c.my_node_id, rows, ping_interval=c.ping_interval,
                                   ping_timeout=c.ping_timeout, node_timeout=c.node_timeout,
                                   seed_fallback_interval=c.seed_fallback_interval)
            yield self.cluster.start()
            self.node.cluster = self.cluster
            self.node.cluster_id = c.cluster_id
            self.cluster.subscribe(self.node.cluster_node_changed)
        if self.config is not None and self.config.federation is not None:
            from .federation import Federation

            settings = self.config.federation
            if not settings.sip_addr:  # [federation] without sip_addr, node table in a database: the row's
                sip_addr = self.cluster.sip_addr_of(c.my_node_id) if self.cluster is not None else None
                if not sip_addr:
                    raise ConfigError("federation.sip_addr", f"not set, and node {c.my_node_id}'s row in "
                                                             f"table {c.db_table!r} has no sip_addr either")
                settings = replace(settings, sip_addr=sip_addr)
            self.federation = Federation(self.location, settings, reactor=self.node.clock)
            self.node.federation = self.federation
            self.federation.start()  # never waits for the store: a node whose store is down still serves
        for spec in listen:
            endpoint = parse_listen(spec)
            yield self.transports.listen(endpoint)
        for ep in self.transports.local_endpoints():
            self.node.add_local_endpoint(ep)
        if advertise:
            for ep in self.transports.local_endpoints():
                self.node.add_local_endpoint(type(ep)(ep.transport, advertise, ep.port))
        if self.node.pinger is not None:  # [nathelper]: From sip:pinger@<advertised host or first listener>
            endpoints = self.transports.local_endpoints()
            self.node.pinger.start(advertise or (endpoints[0].host if endpoints else "127.0.0.1"))
        mi = self.config.mi if self.config is not None else None
        if mi is not None and mi.enabled:  # [mi]: OpenSIPS's MI (JSON-RPC over HTTP) on loopback
            from .management import start_management

            self.management = start_management(self, mi, reactor=self.node.clock)

    @inlineCallbacks
    def stop(self) -> Any:
        if self.management is not None:
            yield self.management.stop()
        if self.federation is not None:
            yield self.federation.stop()
        self.node.stop()
        if self.node.pinger is not None:
            self.node.pinger.stop()
        if self.node.locator is not None:
            self.node.locator.stop()
        self.location.stop()
        if self.node.auth is not None:
            yield self.node.auth.close()
        yield self.transports.stop()
        if self.cluster is not None:
            yield self.cluster.stop()


def build_node(config: Config, reactor: Any = None) -> RunningNode:
    """Wire transports, location, registrar, route module and proxy for ``config``.

    The configuration's sections are the layers' own settings objects (see :mod:`edgeproxy.config`),
    so they are handed over as they are: nothing here restates a setting.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    routes = load_route_module(config.node.route)
    location = InMemoryLocation(reactor)
    registrar = Registrar(location, config.registrar, reactor)
    # [node] keys the proxy needs too: the domains it answers for and per-decision debug lines
    settings = replace(config.proxy, domains=tuple(config.node.domains),
                       log_decisions=config.node.log_level == "debug", dns_failover=config.dns.failover)
    limits = config.limits
    transports = TransportManager(
        reactor,
        None,
        limits=limits,  # a LimitsConfig is the parser's Limits
        max_connections=limits.max_connections,
        idle_timeout=limits.tcp_idle_timeout,
        advertise=config.node.advertise or None,
        tls=config.tls,
        ws=config.ws,
    )
    node = Node(reactor, transports, registrar, routes, settings, config.timers,
                route_params=dict(getattr(config, "route_params", {}) or {}))
    node.locator = DnsLocator(reactor, config.dns)  # RFC 3263 for next hops named by a host name
    if config.pike is not None:  # [pike]: flood detection per source address
        node.flood = FloodDetector(config.pike)
    if config.auth is not None:  # [auth]: the routes' www_authorize / proxy_authorize
        node.auth = Authenticator(config.auth, subscriber_store(config.auth, reactor), reactor)
    transports.sink = node
    if config.nathelper.enabled:  # NAT keep-alives, started with the listeners
        node.pinger = NatPinger(location, transports, config.nathelper, reactor)
    if routes.setup is not None:
        routes.setup(node)
    return RunningNode(node, transports, location, registrar, config)


class GarbagePolicy:
    """When CPython's cyclic garbage collector may run.

    The message path makes no cyclic garbage (transaction contexts break their cycles when they
    end), yet CPython's automatic full collections walk the whole heap — every live transaction and
    binding — whenever it has grown by a quarter: at a few hundred calls/s that was a 50-170 ms stall
    every second, collecting nothing. So: everything built at start-up is frozen out of the
    collector's sight, young generations are collected as usual, and the full pass runs on a timer
    (``node.gc_full_interval`` seconds; 0 leaves CPython's defaults alone).
    """

    def __init__(self, interval: float, clock: Any = None) -> None:
        self.interval = interval
        self.clock = clock
        self._loop: Any = None

    def start(self) -> None:
        gc.freeze()
        if not self.interval:
            return
        self._defaults = gc.get_threshold()
        gc.set_threshold(2_000, 10, 1_000_000_000)  # young generations only, automatically
        from twisted.internet.task import LoopingCall

        self._loop = LoopingCall(self.collect)
        if self.clock is not None:
            self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def collect(self) -> int:
        import time

        started = time.perf_counter()
        found = gc.collect()
        log.info("full garbage collection: {found} objects in {ms:.0f} ms", found=found,
                 ms=(time.perf_counter() - started) * 1000)
        return found

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            gc.set_threshold(*self._defaults)


class NodeService(service.Service):
    """Starts and stops one :class:`RunningNode` with the twistd application."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.running_node: RunningNode | None = None

    def startService(self) -> None:
        super().startService()
        self.running_node = build_node(self.config)
        d = self.running_node.start(list(self.config.node.listen), self.config.node.advertise)

        def started(_: Any) -> None:
            self._gc = GarbagePolicy(self.config.node.gc_full_interval)
            self._gc.start()
            log.info("edgeproxy listening on {listen}, route {route}",
                     listen=", ".join(self.config.node.listen), route=self.running_node.node.routes.name)

        def failed(f: Any) -> None:
            log.failure("edgeproxy failed to start", f)
            from twisted.internet import reactor

            if IReactorCore.providedBy(reactor) and reactor.running:
                reactor.stop()

        d.addCallbacks(started, failed)

    def stopService(self) -> Deferred | None:
        super().stopService()
        if getattr(self, "_gc", None) is not None:
            self._gc.stop()
        if self.running_node is not None:
            return self.running_node.stop()
        return None


def make_service(config: Config) -> service.MultiService:
    """The twistd service of one node."""
    top = service.MultiService()
    NodeService(config).setServiceParent(top)
    return top
