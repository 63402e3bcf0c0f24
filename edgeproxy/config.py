"""The configuration of one edgeproxy node: a TOML file, checked completely before anything starts.

This replaces the global section and the ``modparam`` lines of an ``opensips.cfg``. Every key has a
default, so no file at all is a working single node (UDP and TCP on 127.0.0.1:5060, the shipped
``routes/default.py``, an in-memory location table). A file only names what differs::

    [node]
    listen = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    advertise = "203.0.113.7"

    [registrar]
    min_expires = 120

This module is the loader only. Each table is described where its settings class is, by a
:class:`~edgeproxy.config_schema.Section` (the class it becomes, a checker per key, the rules between
its keys): ``[registrar]`` in :mod:`edgeproxy.registrar.settings`, ``[timers]`` in
:mod:`edgeproxy.transaction.settings`, ``[tls]`` in :mod:`edgeproxy.transport.settings` ... (see
:data:`SECTIONS`). :func:`load_config` reads the file with :mod:`tomllib`, lays the command-line
overrides over it, reports unknown sections and keys (with a "did you mean" hint), hands each table
to its section, and checks the few rules that span sections. Every problem raises
:class:`ConfigError`, whose text is one line naming the key and the problem, so ``twistd edgeproxy``
can refuse to start with a message an operator can act on.

The sections are imported when a configuration is loaded, not when this module is: importing it
costs no transport, TLS or WebSocket library.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .config_error import ConfigError
from .config_schema import Context, Section, show, unknown

if TYPE_CHECKING:
    from .acc.settings import AccSettings
    from .auth.settings import AuthSettings
    from .cluster.settings import ClusterConfig
    from .dialog.settings import DialogSettings
    from .dispatcher.settings import DispatcherSettings
    from .dns.settings import DnsSettings
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
    from .usrloc.settings import UsrlocSettings

__all__ = ["Config", "ConfigError", "SECTIONS", "section", "load_config"]

#: Each table of the file and where it is described: ``(module, name of its Section)``, in the
#: order the tables are checked.
SECTIONS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "node": ("edgeproxy.node_settings", "SECTION"),
    "registrar": ("edgeproxy.registrar.settings", "SECTION"),
    "timers": ("edgeproxy.transaction.settings", "SECTION"),
    "proxy": ("edgeproxy.proxy.settings", "PROXY_SECTION"),
    "dns": ("edgeproxy.dns.settings", "SECTION"),
    "limits": ("edgeproxy.transport.settings", "LIMITS_SECTION"),
    "cluster": ("edgeproxy.cluster.settings", "SECTION"),
    "tls": ("edgeproxy.transport.settings", "TLS_SECTION"),
    "auth": ("edgeproxy.auth.settings", "SECTION"),
    "pike": ("edgeproxy.proxy.settings", "PIKE_SECTION"),
    "ws": ("edgeproxy.transport.settings", "WS_SECTION"),
    "nathelper": ("edgeproxy.location.settings", "SECTION"),
    "mi": ("edgeproxy.management.settings", "SECTION"),
    "metrics": ("edgeproxy.management.metrics_settings", "SECTION"),
    "acc": ("edgeproxy.acc.settings", "SECTION"),
    "dispatcher": ("edgeproxy.dispatcher.settings", "SECTION"),
    "usrloc": ("edgeproxy.usrloc.settings", "SECTION"),
    "permissions": ("edgeproxy.permissions.settings", "SECTION"),
    "dialog": ("edgeproxy.dialog.settings", "SECTION"),
})
#: Tables checked by their own code (``[federation]``) or not at all (``[route_params]``).
_FREE_FORM = ("route_params", "federation")


def section(name: str) -> Section[Any]:
    """The :class:`~edgeproxy.config_schema.Section` of table ``name`` (imported on first use)."""
    module, attribute = SECTIONS[name]
    found = getattr(importlib.import_module(module), attribute)
    if not isinstance(found, Section):
        raise TypeError(f"{module}.{attribute} is not a Section")
    return found


def _default(name: str) -> Callable[[], Any]:
    return lambda: section(name).default()


@dataclass(frozen=True)
class Config:
    """The whole configuration of one node, a section per attribute.

    ``registrar``, ``timers``, ``proxy``, ``tls``, ``ws`` and ``dns`` are the lower layers' own settings
    objects, handed to them as they are (``proxy`` holds the ``[proxy]`` keys; the service adds
    ``node.domains`` and the debug flag, which live in ``[node]``). ``federation`` is the
    :class:`~edgeproxy.federation.FederationSettings` when ``[federation]`` is present. ``source`` is
    the file the configuration was read from, if any; ``route_params`` is the free-form
    ``[route_params]`` table, handed to route modules as-is. ``Config()`` is what no file gives.
    """

    node: NodeConfig = field(default_factory=_default("node"))
    registrar: RegistrarSettings = field(default_factory=_default("registrar"))
    timers: TimerSettings = field(default_factory=_default("timers"))
    proxy: ProxySettings = field(default_factory=_default("proxy"))
    limits: LimitsConfig = field(default_factory=_default("limits"))
    cluster: ClusterConfig = field(default_factory=_default("cluster"))
    # TlsSettings.sni is a mapping: leave it out of the hash, so a Config stays hashable
    tls: TlsSettings = field(default_factory=_default("tls"), hash=False)
    ws: WsSettings = field(default_factory=_default("ws"))
    dns: DnsSettings = field(default_factory=_default("dns"))
    nathelper: NatPingSettings = field(default_factory=_default("nathelper"))  # natping_interval 0: off
    usrloc: UsrlocSettings = field(default_factory=_default("usrloc"))  # memory only by default
    federation: FederationSettings | None = None
    # None without an [auth] section: the route's authentication verbs then fail loudly
    auth: AuthSettings | None = field(default=None, hash=False)
    # None without a [pike] section: no flood detection, as OpenSIPS without the pike module
    pike: FloodSettings | None = None
    # None without an [mi] section: no management interface (OpenSIPS without mi_http)
    mi: MISettings | None = None
    # None without a [metrics] section: no Prometheus exposition
    metrics: MetricsSettings | None = None
    # None without an [acc] section: no call records
    acc: AccSettings | None = None
    # None without a [dispatcher] section: no destination sets (the ds_* verbs raise)
    dispatcher: DispatcherSettings | None = field(default=None, hash=False)
    # None without [permissions] and without route_params.freeswitch: no address groups
    permissions: PermissionsSettings | None = field(default=None, hash=False)
    dialog: DialogSettings = field(default_factory=_default("dialog"))  # [dialog]: OpenSIPS dialog's modparams
    route_params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    source: str | None = None


def _federation(table: Any, cluster: ClusterConfig) -> FederationSettings | None:
    """``[federation]``, checked by :func:`edgeproxy.federation.federation_settings`; ``sip_addr``
    defaults to this node's ``sip_addr`` in the ``[[cluster.nodes]]`` rows -- or, with
    ``cluster.db_url``, is left empty here and taken from this node's row when the table is read."""
    if table is None:
        return None
    from .federation.settings import federation_settings

    table = dict(table)
    from_db = "sip_addr" not in table and bool(cluster.my_node_id and cluster.db_url)
    if from_db:
        # the node table is read from the database at start-up (service._federation fills it in)
        table["sip_addr"] = "0.0.0.0"
    elif "sip_addr" not in table:
        row = cluster.my_row()
        if row is not None and row.sip_addr:
            table["sip_addr"] = row.sip_addr
    settings = federation_settings(table)
    return replace(settings, sip_addr="") if from_db else settings


def _cross_checks(config: Config) -> None:
    """Rules between sections, reported against the key an operator would change."""
    if config.federation is not None and not config.cluster.my_node_id:
        raise ConfigError("federation", "needs a cluster (cluster.my_node_id): records carry its sip_addr")
    _check_sip_addr(config)
    tls = config.tls
    for i, spec in enumerate(config.node.listen):
        transport = spec.split(":", 1)[0]
        if transport in ("tls", "wss") and not (tls.certificate and tls.key):
            raise ConfigError(f"node.listen[{i}]", f"a {transport} listener needs tls.certificate and tls.key,"
                                                   f" got {show(spec)}")
    if config.metrics is not None and not config.metrics.listen and not (config.mi is not None and config.mi.enabled):
        raise ConfigError("metrics.listen", "not set, and there is no [mi] listen to serve the metrics on: "
                                            'set one of them (e.g. listen = "127.0.0.1:9102")')
    dialog = config.dialog
    if config.route_params.get("max_calls_per_user") and not {"caller", "caller/b"} & set(dialog.profiles_with_value):
        # the shipped routes count a user's calls in the profile "caller" (set_dlg_profile)
        raise ConfigError("dialog.profiles_with_value", 'route_params.max_calls_per_user needs the profile '
                                                        '"caller": profiles_with_value = ["caller"]')
    if dialog.profile_replication_cluster and not config.cluster.my_node_id:
        raise ConfigError("dialog.profile_replication_cluster", "profiles are shared with the nodes of a cluster: "
                                                                "set cluster.my_node_id and the node table")
    if config.usrloc.full_sharing and not config.cluster.my_node_id:
        raise ConfigError("usrloc.cluster_mode", "full sharing replicates to the nodes of a cluster: "
                                                 "set cluster.my_node_id and the node table")
    r, lim = config.registrar, config.limits
    if r.flow_timer and lim.tcp_idle_timeout and r.flow_timer >= lim.tcp_idle_timeout:
        # UAs keep-alive at 80-100 % of Flow-Timer (RFC 5626 §4.4.1): at or above the idle timeout
        # the node would close their quiet TCP/TLS flows under them
        raise ConfigError("registrar.flow_timer",
                          f"must be < limits.tcp_idle_timeout ({lim.tcp_idle_timeout:g}), got {r.flow_timer}")


def _check_sip_addr(config: Config) -> None:
    """This node's ``sip_addr`` (``[federation]``'s, else its ``[[cluster.nodes]]`` row's) must reach one of
    its UDP listeners: other nodes send there (:mod:`edgeproxy.cluster.sip_addr`). A row read from
    ``cluster.db_url`` is checked by :mod:`edgeproxy.service` when it is read."""
    row = config.cluster.my_row()
    row_key = f"cluster.nodes (node_id {config.cluster.my_node_id}) sip_addr"
    fed = config.federation
    if fed is not None and fed.sip_addr:  # defaults to the row's
        key = row_key if row is not None and row.sip_addr == fed.sip_addr else "federation.sip_addr"
        sip_addr = fed.sip_addr
    elif row is not None and row.sip_addr:
        key, sip_addr = row_key, row.sip_addr
    else:
        return
    config.node.check_sip_addr(key, sip_addr)


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(path, "is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(path, "permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "not valid TOML: the file is not UTF-8") from None


# (value, dotted key to name in errors, directory relative paths resolve against; None: command line)
_Given = tuple[Any, str, str | None]


def _given(raw: Mapping[str, Any], file_dir: str, overrides: Mapping[str, Any]) -> dict[str, dict[str, _Given]]:
    """The file's tables and the overrides, key by key; unknown sections and non-tables refused."""
    given: dict[str, dict[str, _Given]] = {}
    for name, table in raw.items():
        if name not in SECTIONS and name not in _FREE_FORM:
            raise unknown(name, "section", list(SECTIONS) + list(_FREE_FORM))
        if not isinstance(table, dict):
            raise ConfigError(name, f"must be a table ([{name}]), got {show(table)}")
        if name in SECTIONS:
            given[name] = {key: (value, f"{name}.{key}", file_dir) for key, value in table.items()}
    for dotted, value in overrides.items():
        name, _, key = dotted.partition(".")
        if name not in SECTIONS:
            raise unknown(name, "section", list(SECTIONS))
        given.setdefault(name, {})[key] = (value, dotted, None)
    return given


def _check_keys(name: str, sect: Section[Any], given: Mapping[str, _Given]) -> dict[str, Any]:
    """Each key of one table through its checker; errors from the command line say so."""
    values: dict[str, Any] = {}
    for key, (value, label, base_dir) in given.items():
        try:
            if key not in sect.checkers:
                raise unknown(label, f"key in [{name}]", list(sect.checkers))
            values[key] = sect.checkers[key](label, value, Context(base_dir if base_dir is not None else os.getcwd()))
        except ConfigError as exc:
            if base_dir is not None:
                raise
            raise ConfigError(f"{exc.key} (command line)", exc.problem) from None
    return values


def load_config(path: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and check the configuration.

    ``path`` is a TOML file, or None for the built-in defaults. ``overrides`` maps dotted keys
    (``"node.listen"``) to values that replace the file's -- the command-line options; they are
    checked like the file's values and their errors say they came from the command line. Relative
    paths in the file resolve against the file's directory, those from the command line against the
    current directory. Raises :class:`ConfigError`.
    """
    raw: dict[str, Any] = _read(path) if path is not None else {}
    file_dir = os.path.dirname(os.path.abspath(path)) if path is not None else os.getcwd()
    given = _given(raw, file_dir, overrides or {})
    sections = {name: section(name) for name in SECTIONS}
    checked = {name: _check_keys(name, sect, given.get(name, {})) for name, sect in sections.items()}
    built = {name: sect.build(name, checked[name]) for name, sect in sections.items()
             if not sect.optional or name in given}
    cluster: ClusterConfig = built["cluster"]
    route_params = MappingProxyType(dict(raw.get("route_params", {})))
    from .permissions.settings import with_route_params_rows

    built["permissions"] = with_route_params_rows(built.get("permissions"), route_params)
    config = Config(**built, route_params=route_params,
                    federation=_federation(raw.get("federation"), cluster),
                    source=os.path.abspath(path) if path is not None else None)
    _cross_checks(config)
    return config
