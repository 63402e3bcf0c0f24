"""Twisted glue: build a running node from a configuration (:class:`NodeConfiguration`, which the
loader's :class:`~edgeproxy.config.Config` is).

``make_service(config)`` returns a ``MultiService`` whose start opens the listeners and whose stop
closes them and cancels every timer; ``twistd edgeproxy`` (see :mod:`edgeproxy.tap`) is a thin shell
around it, and tests call :func:`build_node` directly to run a node inside their reactor.
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from twisted.application import service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure

from .acc import Accounting, accounting_for
from .auth import Authenticator, subscriber_store
from .cluster import Cluster, NodeTable
from .config_error import ConfigError
from .dialog import DialogTable
from .dialog.replication import ProfileReplication
from .dispatcher import Dispatcher
from .dispatcher.prober import Prober
from .gcpolicy import GarbagePolicy
from .location import ChangeJournal, InMemoryLocation, LocationService
from .location.natping import NatPinger
from .node import Node
from .permissions import Permissions
from .proxy.flood import FloodDetector
from .proxy.flowtoken import FlowTokens, load_key
from .proxy.noise import NoiseLog
from .registrar import Registrar
from .routing.loader import load_route_module
from .sdnotify import sd_notify
from .transport import TransportManager, parse_listen
from .transport.locator import DnsLocator

if TYPE_CHECKING:  # pragma: no cover - imported when [federation] is configured (it needs pymongo)
    from .acc import AccSettings
    from .auth.settings import AuthSettings
    from .cluster.settings import ClusterConfig
    from .dialog.settings import DialogSettings
    from .dispatcher.settings import DispatcherSettings
    from .dns.settings import DnsSettings
    from .federation import Federation
    from .federation.settings import FederationSettings
    from .location.natping import NatPingSettings
    from .management.metrics_settings import MetricsSettings
    from .management.settings import MISettings
    from .node_settings import NodeConfig
    from .permissions.settings import PermissionsSettings
    from .proxy.flood import FloodSettings
    from .proxy.settings import ProxySettings
    from .registrar.settings import RegistrarSettings
    from .transaction import TimerSettings
    from .transport.settings import LimitsConfig
    from .transport.tls import TlsSettings
    from .transport.ws_settings import WsSettings
    from .usrloc import Persistence
    from .usrloc.replication import Replication
    from .usrloc.settings import UsrlocSettings

__all__ = ["make_service", "build_node", "load_node", "RunningNode", "NodeService", "NodeConfiguration",
           "StartupError", "state_directory"]

log = Logger(namespace="edgeproxy.service")


class NodeConfiguration(Protocol):
    """What the service reads of a node's configuration, a section's settings per attribute (the
    loader's :class:`~edgeproxy.config.Config` is one; the loader sits above this module)."""

    @property
    def node(self) -> NodeConfig: ...
    @property
    def registrar(self) -> RegistrarSettings: ...
    @property
    def timers(self) -> TimerSettings: ...
    @property
    def proxy(self) -> ProxySettings: ...
    @property
    def limits(self) -> LimitsConfig: ...
    @property
    def cluster(self) -> ClusterConfig: ...
    @property
    def tls(self) -> TlsSettings: ...
    @property
    def ws(self) -> WsSettings: ...
    @property
    def dns(self) -> DnsSettings: ...
    @property
    def nathelper(self) -> NatPingSettings: ...
    @property
    def federation(self) -> FederationSettings | None: ...
    @property
    def auth(self) -> AuthSettings | None: ...
    @property
    def pike(self) -> FloodSettings | None: ...
    @property
    def mi(self) -> MISettings | None: ...
    @property
    def metrics(self) -> MetricsSettings | None: ...
    @property
    def dispatcher(self) -> DispatcherSettings | None: ...
    @property
    def usrloc(self) -> UsrlocSettings: ...
    @property
    def permissions(self) -> PermissionsSettings | None: ...
    @property
    def dialog(self) -> DialogSettings: ...
    @property
    def acc(self) -> AccSettings | None: ...
    @property
    def route_params(self) -> Mapping[str, Any]: ...
    @property
    def source(self) -> str | None: ...


class Stoppable(Protocol):
    def stop(self) -> Any: ...


@dataclass
class RunningNode:
    """The parts of one node, for tests and for the service."""

    node: Node
    transports: TransportManager
    location: InMemoryLocation
    registrar: Registrar
    config: NodeConfiguration | None = None
    cluster: Cluster | None = None
    federation: Federation | None = None
    management: Stoppable | None = None  # the MI listener (edgeproxy.management) with [mi] listen
    pinger: NatPinger | None = None  # [nathelper]; the node holds it too: it takes its OPTIONS' replies
    metrics: Stoppable | None = None  # the Prometheus listener, with [metrics] listen
    dispatcher: Dispatcher | None = None  # [dispatcher]; the node's verbs hold it too
    prober: Prober | None = None  # [dispatcher] ds_ping_interval > 0
    persistence: Persistence | None = None  # [usrloc] write-back / write-through to SQL
    replication: Replication | None = None  # [usrloc] full sharing over the cluster link
    permissions: Permissions | None = None  # [permissions] / route_params.freeswitch; the verbs hold it too
    acc: Accounting | None = None  # [acc]: call records; the proxy core and the dialog table report to it
    profile_replication: ProfileReplication | None = None  # [dialog] /b profiles over the cluster link

    @inlineCallbacks
    def start(self, listen: list[str], advertise: str = "") -> Any:
        persistence = self.persistence
        if persistence is not None:  # the contacts of the last run, before anything is answered or published
            try:
                yield persistence.load()
            except Exception as exc:
                raise StartupError(f"usrloc: cannot load the location table: {exc}") from None
            persistence.start()
        if self.replication is not None:  # before the cluster: the first peer up is asked for its table
            self.replication.start()
        if self.cluster is not None:
            yield self.cluster.start()
        if self.profile_replication is not None:
            self.profile_replication.start()
        if self.federation is not None:
            self.federation.start()  # never waits for the store: a node whose store is down still serves
        if self.dispatcher is not None and self.dispatcher.load_rows is not None:
            yield self.dispatcher.reload()  # the dispatcher table (db_url): a node without it does not start
        if self.permissions is not None and self.permissions.settings.db_url:
            yield self.permissions.reload()  # the address table (db_url): a node without it does not start
        for spec in listen:
            endpoint = parse_listen(spec)
            yield self.transports.listen(endpoint)
        for ep in self.transports.local_endpoints():
            self.node.add_local_endpoint(ep)
        if advertise:
            for ep in self.transports.local_endpoints():
                self.node.add_local_endpoint(type(ep)(ep.transport, advertise, ep.port))
        pinger = self.pinger
        if pinger is not None:  # [nathelper]: From sip:pinger@<advertised host or first listener>
            endpoints = self.transports.local_endpoints()
            pinger.start(advertise or (endpoints[0].host if endpoints else "127.0.0.1"))
        if self.prober is not None:
            self.prober.start()
        mi = self.config.mi if self.config is not None else None
        metrics = self.config.metrics if self.config is not None else None
        if mi is not None and mi.enabled:  # [mi]: OpenSIPS's MI (JSON-RPC over HTTP) on loopback
            from .management import start_management

            # [metrics] without a listen of its own: GET <path> on the MI's listener
            self.management = start_management(self, mi, reactor=self.node.clock,
                                               metrics=metrics if metrics is not None and not metrics.listen else None)
        if metrics is not None and metrics.listen:
            from .management import start_metrics

            self.metrics = start_metrics(self, metrics, reactor=self.node.clock)

    @inlineCallbacks
    def stop(self) -> Any:
        if self.management is not None:
            yield self.management.stop()
        if self.metrics is not None:
            yield self.metrics.stop()
        if self.federation is not None:
            yield self.federation.stop()
        if self.prober is not None:
            self.prober.stop()
        self.node.stop()
        pinger = self.pinger
        if pinger is not None:
            pinger.stop()
        if self.node.locator is not None:
            self.node.locator.stop()
        self.location.stop()
        if self.replication is not None:
            self.replication.stop()
        if self.profile_replication is not None:
            self.profile_replication.stop()
        if self.persistence is not None:  # the last-minute flush (OpenSIPS write-back on shutdown)
            yield self.persistence.stop()
        if self.node.auth is not None:
            yield self.node.auth.close()
        yield self.transports.stop()
        if self.acc is not None:  # after everything that may still end a call
            for closing in self.acc.close():
                if isinstance(closing, Deferred):
                    yield closing
        if self.cluster is not None:
            yield self.cluster.stop()


def load_node(config: NodeConfiguration, reactor: Any = None) -> "Deferred[RunningNode]":
    """:func:`build_node`, after reading the cluster's node table from its database when
    ``[cluster] db_url`` names one (OpenSIPS clusterer's ``db_mode``)."""
    c = config.cluster
    if c is None or not c.my_node_id or not c.db_url:
        return maybeDeferred(build_node, config, reactor)
    from .cluster import load_node_table

    return load_node_table(c.db_url, c.db_table).addCallback(lambda rows: build_node(config, reactor, rows))


def build_node(config: NodeConfiguration, reactor: Any = None, node_table: NodeTable | None = None) -> RunningNode:
    """Wire transports, location, registrar, route module, cluster, federation and proxy for
    ``config``; ``node_table`` is the cluster's node table when it comes from a database (see
    :func:`load_node`), else the configuration's ``[[cluster.nodes]]`` are used.

    The configuration's sections are the layers' own settings objects (see :mod:`edgeproxy.config`),
    so they are handed over as they are: nothing here restates a setting. Every collaborator is
    built before the object that uses it, and given to it as it is built.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    routes = load_route_module(config.node.route)
    usrloc = config.usrloc
    journal = ChangeJournal() if usrloc is not None and usrloc.persistent else None
    shared = ChangeJournal() if usrloc is not None and usrloc.full_sharing else None
    location = InMemoryLocation(reactor, [j for j in (journal, shared) if j is not None])
    persistence = _persistence(config, reactor, location, journal)
    registrar = Registrar(_saving(location, persistence), config.registrar, reactor)
    # [node] keys the proxy needs too: the domains it answers for and per-decision debug lines
    settings = replace(config.proxy, domains=tuple(config.node.domains),
                       log_decisions=config.node.log_level == "debug", dns_failover=config.dns.failover)
    cluster = _cluster(config, reactor, node_table)
    federation = _federation(config, reactor, location, cluster)
    usrloc_replication = _replication(config, reactor, location, shared, cluster)
    limits = config.limits
    # hostile input, aggregated: one line per source per interval for the transports and the node together
    noise = NoiseLog(reactor)
    transports = TransportManager(
        reactor,
        limits=limits,  # a LimitsConfig is the parser's Limits
        max_connections=limits.max_connections,
        max_connections_per_source=limits.max_connections_per_source,
        message_timeout=limits.message_timeout or None,
        idle_timeout=limits.tcp_idle_timeout,
        advertise=config.node.advertise or None,
        tls=config.tls,
        ws=config.ws,
        noise=noise,
    )
    # NAT keep-alives (started with the listeners)
    pinger = (NatPinger(location, transports, config.nathelper, reactor,
                        user_agent_header=config.proxy.user_agent_header)
              if config.nathelper.enabled else None)
    locator = DnsLocator(reactor, config.dns)
    dispatcher = _dispatcher(config, reactor, locator)
    permissions_settings = config.permissions
    permissions = Permissions(permissions_settings, reactor) if permissions_settings is not None else None
    acc_settings = config.acc
    acc = accounting_for(acc_settings, reactor, reactor) if acc_settings is not None else None
    # [dialog]: OpenSIPS dialog (create_dialog, profiles, lifetimes); [acc] hears how calls end
    dialogs = DialogTable(config.dialog, listeners=[acc] if acc is not None else [])
    node = Node(
        reactor, transports, registrar, routes, settings, config.timers,
        route_params=dict(config.route_params),
        locator=locator,  # RFC 3263 for next hops named by a host name
        cluster=cluster,
        cluster_id=config.cluster.cluster_id if config.cluster is not None else 1,
        federation=federation,
        # [auth]: the routes' www_authorize / proxy_authorize
        auth=(Authenticator(config.auth, subscriber_store(config.auth, reactor), reactor, noise=noise)
              if config.auth else None),
        # [pike]: per source address; pike_list evaluated at the reactor's time
        flood=FloodDetector(config.pike, reactor.seconds) if config.pike is not None else None,
        pinger=pinger,
        dispatcher=dispatcher,
        permissions=permissions,  # address groups: check_address / check_source_address
        dialogs=dialogs,
        calls=acc,  # [acc]: every INVITE's first final response is a call attempt record
        flow_tokens=_flow_tokens(config),
        noise=noise,
    )
    # [dispatcher] with [cluster]: state changes go to the other nodes (OpenSIPS dispatcher cluster_id)
    replication = None
    if dispatcher is not None and cluster is not None and config.cluster is not None:
        from .dispatcher.clustering import DispatcherReplication

        replication = DispatcherReplication(dispatcher, cluster, config.cluster.cluster_id, clock=reactor,
                                             fallback=cluster.seed_fallback_interval)
    # [dispatcher] ds_ping_interval: probes go out as the node's own client transactions
    prober = (Prober(dispatcher, node.uac, reactor, replication.responsible if replication is not None else None)
              if dispatcher is not None and dispatcher.settings.probing else None)
    if cluster is not None:
        cluster.subscribe(node.cluster_node_changed)
    transports.start(node)  # the sink, given as the transports start (node and transports need each other)
    if routes.setup is not None:
        routes.setup(node)
    # [dialog] profile_replication_cluster: the /b profiles' counts shared with the other nodes
    profile_replication = None
    dlg = config.dialog
    if cluster is not None and dlg.profile_replication_cluster:
        profile_replication = ProfileReplication(dialogs.profiles, cluster, dlg.profile_replication_cluster, reactor,
                                                 dlg.replicate_profiles_timer / 1000, dlg.replicate_profiles_expire)
    return RunningNode(node, transports, location, registrar, config, cluster, federation, pinger=pinger,
                       dispatcher=dispatcher, prober=prober, persistence=persistence, permissions=permissions,
                       replication=usrloc_replication, acc=acc, profile_replication=profile_replication)


def _dispatcher(config: NodeConfiguration, reactor: Any, locator: DnsLocator) -> Dispatcher | None:
    """``[dispatcher]``: the destinations of the file, or of OpenSIPS's table (read when the node starts);
    host names are resolved with the node's RFC 3263 locator (``[dns]``)."""
    settings = config.dispatcher
    if settings is None:
        return None
    from .proxy.hops import uri_query

    def resolve(dest: Any) -> Deferred[list[str]]:
        query = uri_query(dest.dst_uri)
        if query is None:
            return succeed([])
        located = locator.locate(query, frozenset(("UDP", "TCP", "TLS")))
        return located.addCallback(lambda endpoints: [ep.host for ep in endpoints])

    if not settings.db_url:
        return Dispatcher(settings, resolve=resolve)
    from .dispatcher.db import load_rows

    return Dispatcher(settings, load_rows=lambda: load_rows(reactor, settings.db_url, settings.table_name),
                      resolve=resolve)


def _persistence(config: NodeConfiguration, reactor: Any, location: InMemoryLocation,
                 journal: ChangeJournal | None) -> Persistence | None:
    """``[usrloc]`` with an SQL write mode: the table's writer (imported only then)."""
    if journal is None:
        return None
    from .usrloc import Persistence, open_table

    settings = config.usrloc
    return Persistence(location, journal, open_table(settings.db_url, settings.table), mode=settings.sql_write_mode,
                       timer_interval=settings.timer_interval, use_domain=config.registrar.use_domain, clock=reactor)


def _saving(location: InMemoryLocation, persistence: Persistence | None) -> LocationService:
    """Where the registrar saves: the table itself, or -- write-through -- the table through a wrapper
    that answers once the change is committed (imported only then; memory-only and write-back keep
    the registrar's path as it is)."""
    if persistence is None or persistence.mode != "write-through":
        return location
    from .usrloc.writethrough import WriteThroughLocation

    return WriteThroughLocation(location, persistence)


def _replication(config: NodeConfiguration, reactor: Any, location: InMemoryLocation, journal: ChangeJournal | None,
                 cluster: Cluster | None) -> Replication | None:
    """``[usrloc]`` full sharing: every change to the other nodes of the cluster (imported only then)."""
    if journal is None:
        return None
    if cluster is None:
        raise ConfigError("usrloc.cluster_mode", "full sharing needs a cluster (cluster.my_node_id)")
    from .usrloc.replication import Replication

    return Replication(location, journal, cluster, config.cluster.cluster_id, use_domain=config.registrar.use_domain,
                       clock=reactor, fallback=cluster.seed_fallback_interval)


def state_directory(config: NodeConfiguration, environ: Mapping[str, str] = os.environ) -> str:
    """Where what must survive a restart is kept: ``node.state_dir`` when set; else systemd's
    ``$STATE_DIRECTORY`` (``StateDirectory=`` in packaging/edgeproxy.service: /var/lib/edgeproxy,
    writable under ``ProtectSystem=strict``, where /etc is not); else the configuration file's
    directory; "" when there is none of these (no configuration file)."""
    if config.node.state_dir:
        return config.node.state_dir
    # systemd may list several directories, separated by colons: the first is ours
    from_systemd = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if from_systemd:
        return from_systemd
    return os.path.dirname(config.source) if config.source else ""


def _flow_tokens(config: NodeConfiguration) -> FlowTokens:
    """The flow-token key that survives a restart: ``[proxy] flow_token_secret``, else the key kept
    in the state directory (:func:`state_directory`). Without either (no
    configuration file), or when the file cannot be used (a warning says why), a key of this process
    only: the UDP calls of NATed phones then lose their in-dialog requests across a restart."""
    state_dir = state_directory(config)
    key, why = load_key(config.proxy.flow_token_secret, Path(state_dir) if state_dir else None)
    if why is not None:
        log.warn("flow tokens: {why}; using a key of this process only (in-dialog requests to NATed "
                 "UDP phones will not survive a restart)", why=why)
    return FlowTokens(key)


def _cluster(config: NodeConfiguration, reactor: Any, node_table: NodeTable | None) -> Cluster | None:
    c = config.cluster
    if c is None or not c.my_node_id:
        return None
    if node_table is None:
        if c.db_url:
            raise ConfigError("cluster.db_url", "the node table is read from the database first: use load_node()")
        node_table = NodeTable.from_dicts(c.nodes)
    return Cluster(reactor, c.my_node_id, node_table, ping_interval=c.ping_interval, ping_timeout=c.ping_timeout,
                   node_timeout=c.node_timeout, seed_fallback_interval=c.seed_fallback_interval)


def _federation(config: NodeConfiguration, reactor: Any, location: InMemoryLocation,
                cluster: Cluster | None) -> Federation | None:
    settings = config.federation
    if settings is None:
        return None
    from .federation import Federation

    if not settings.sip_addr:  # [federation] without sip_addr, node table in a database: the row's
        c = config.cluster
        node_id = c.my_node_id if c is not None else None
        sip_addr = cluster.sip_addr_of(node_id) if cluster is not None and node_id else None
        table = c.db_table if c is not None else "clusterer"
        if not sip_addr:
            raise ConfigError("federation.sip_addr", f"not set, and node {node_id}'s row in "
                                                     f"table {table!r} has no sip_addr either")
        # the file's sip_addr was checked with the configuration; the row's only now that it is read
        config.node.check_sip_addr(f"node {node_id}'s row in table {table!r}: sip_addr", sip_addr)
        settings = replace(settings, sip_addr=sip_addr)
    return Federation(location, settings, reactor=reactor)


class StartupError(Exception):
    """The node could not start; the message is the one-line reason (e.g. "cannot listen on
    udp:127.0.0.1:5060: Address already in use")."""


def startup_reason(failure: Failure) -> str:
    """One line saying why starting failed: the error's own message, without a traceback."""
    err = failure.value
    if isinstance(err, CannotListenError):
        why = err.socketError.strerror if isinstance(err.socketError, OSError) and err.socketError.strerror \
            else str(err.socketError)
        return f"cannot listen on {err.interface or '*'}:{err.port}: {why}"
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, (ConfigError, StartupError)) else f"{type(err).__name__}: {text}"


def exit_with_failure(reason: str) -> None:
    """A start-up failure found once the reactor runs: stop it, and when twistd has finished (pid file
    removed, logs flushed) end the process with status 1, which is what a supervisor looks at."""
    from twisted.internet import reactor

    def exit_1() -> None:
        sys.stderr.write(f"edgeproxy: cannot start: {reason}\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    atexit.register(exit_1)
    if IReactorCore.providedBy(reactor):
        if reactor.running:
            reactor.stop()
        else:
            reactor.callWhenRunning(reactor.stop)


class NodeService(service.Service):
    """Starts and stops one :class:`RunningNode` with the twistd application."""

    def __init__(self, config: NodeConfiguration) -> None:
        self.config = config
        self.running_node: RunningNode | None = None
        self._gc: GarbagePolicy | None = None  # once the node listens

    def startService(self) -> None:
        """Build and start the node. A failure known before this returns (a port taken, an address not
        on this host, a certificate unreadable: binding is synchronous) raises :class:`StartupError`,
        which twistd turns into exit status 1 -- in the foreground, and as a daemon through the
        parent's status pipe. One that comes later (the cluster's node table, a database) is logged
        in one line, stops the reactor and makes the process exit with status 1 once twistd is done."""
        super().startService()
        d = load_node(self.config)

        def built(running: RunningNode) -> Deferred[RunningNode]:
            self.running_node = running
            starting = running.start(list(self.config.node.listen), self.config.node.advertise)
            return starting.addCallback(lambda _: running)

        d.addCallback(built)

        def started(running: RunningNode) -> None:
            self._gc = GarbagePolicy(self.config.node.gc_full_interval)
            self._gc.start()
            log.info("edgeproxy listening on {listen}, route {route}",
                     listen=", ".join(self.config.node.listen), route=running.node.routes.name)
            # systemd Type=notify: ready only now, with every listener bound
            sd_notify(f"READY=1\nSTATUS=listening on {', '.join(self.config.node.listen)}")

        d.addCallback(started)
        failures: list[Failure] = []
        d.addErrback(failures.append)
        if failures:  # failed before returning: twistd reports it and exits 1
            raise StartupError(startup_reason(failures[0])) from failures[0].value

        def late_failure(_: object) -> None:
            if not failures:
                return
            reason = startup_reason(failures[0])
            log.critical("edgeproxy: cannot start: {reason}", reason=reason)
            sd_notify(f"STATUS=cannot start: {reason}")
            exit_with_failure(reason)

        d.addCallback(late_failure)

    def stopService(self) -> Deferred | None:
        super().stopService()
        sd_notify("STOPPING=1")
        if self._gc is not None:
            self._gc.stop()
        if self.running_node is not None:
            return self.running_node.stop()
        return None


def make_service(config: NodeConfiguration) -> service.MultiService:
    """The twistd service of one node."""
    top = service.MultiService()
    NodeService(config).setServiceParent(top)
    return top
