"""The configuration of one edgeproxy node: a TOML file, checked completely before anything starts.

This replaces the global section and the ``modparam`` lines of an ``opensips.cfg``. Every key has a
default, so no file at all is a working single node (UDP and TCP on 127.0.0.1:5060, the shipped
``routes/default.py``, an in-memory location table). A file only names what differs::

    [node]
    listen = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    advertise = "203.0.113.7"

    [registrar]
    min_expires = 120

Theory of operation: :func:`load_config` reads the file with :mod:`tomllib`, lays the command-line
overrides over it, then walks a schema (:data:`_SCHEMA`: per section, the class it becomes and one
checker per key). Anything the schema does not know -- a misspelt section, a misspelt key, a string
where a number belongs, a value out of range -- raises :class:`ConfigError`, whose text is one line
naming the key and the problem, so ``twistd edgeproxy`` can refuse to start with a message an
operator can act on.

One description per setting: a section whose values a lower layer uses becomes that layer's own
settings class (``[registrar]`` is a :class:`~edgeproxy.registrar.RegistrarSettings`, ``[timers]`` a
:class:`~edgeproxy.transaction.TimerSettings`, ``[tls]`` a :class:`~edgeproxy.transport.tls.TlsSettings`
...), whose fields and defaults are the settings; this module only adds what a file needs on top --
key names, types and ranges, and the rare default where a node departs from the library's. Only
sections with no runtime class of their own (``[node]``, ``[cluster]``) have classes here.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from . import sqldb
from .auth.digest import ALGORITHMS, DigestError, canonical_algorithm
from .auth.settings import QOP_CHOICES, AuthSettings
from .config_error import ConfigError
from .dns.settings import DnsSettings, parse_dns_server
from .location.natping import NatPingSettings
from .management.settings import MISettings, parse_mi_listen
from .proxy.flood import FloodSettings
from .proxy.settings import ProxySettings
from .registrar.settings import RegistrarSettings
from .sip.parser import Limits
from .transaction import TimerSettings
from .transport.tls import TlsContexts, TlsSettings
from .transport.ws import WsSettings

if TYPE_CHECKING:
    from .federation.settings import FederationSettings

__all__ = [
    "Config",
    "ConfigError",
    "NodeConfig",
    "LimitsConfig",
    "ClusterConfig",
    "TRANSPORTS",
    "LOG_LEVELS",
    "load_config",
    "parse_listen_spec",
]

#: Transports a listener may use, as written in ``transport:host:port`` (RFC 3261 §18, RFC 7118).
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
#: Accepted ``node.log_level`` values, most to least verbose.
LOG_LEVELS = ("debug", "info", "warn", "error")


@dataclass(frozen=True)
class NodeConfig:
    """``[node]``: where the node listens and which route module decides what to do with requests.

    A config-only section: the service reads it to open listeners, load the route module and set up
    logging and the garbage collector, and no lower layer has a settings class for it.

    ``listen`` holds ``transport:host:port`` strings (IPv6 hosts in brackets). ``advertise`` is the
    host put in Via and Record-Route when the node listens on a wildcard address; ``domains`` the
    domains the node is responsible for (empty: every domain). IPv6 literals in ``advertise`` and
    ``domains`` are kept without brackets, as :class:`edgeproxy.sip.endpoint.Endpoint` holds them.
    ``route`` is an absolute ``.py`` path or a dotted module name; empty means ``routes.default``.
    """

    listen: tuple[str, ...] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    advertise: str = ""
    domains: tuple[str, ...] = ()
    route: str = ""
    log_level: str = "info"
    node_id: str | None = None
    gc_full_interval: float = 300.0


@dataclass(frozen=True, slots=True)
class LimitsConfig(Limits):
    """``[limits]``: the parser's :class:`~edgeproxy.sip.parser.Limits` (``max_message_size``,
    ``max_headers``, ``max_line_length``: inherited, so described there once) plus the two limits the
    transport manager takes as arguments rather than as a settings object. Being a ``Limits``, it is
    handed to the transports as their parser limits as it is.

    The node's defaults for the two are larger than :class:`~edgeproxy.transport.TransportManager`'s
    (which suit tests and embedding): an edge node holds many idle TCP/TLS/WS clients.
    """

    max_connections: int = 10000
    tcp_idle_timeout: float = 600.0


@dataclass(frozen=True)
class ClusterConfig:
    """``[cluster]``: OpenSIPS ``clusterer`` (node table, liveness) and usrloc's ``location_cluster``.

    Config-only: the cluster layer takes these as :class:`~edgeproxy.cluster.Cluster`'s arguments and
    has no settings class. ``my_node_id = 0`` (the default) runs a single node with no cluster. The
    node table comes from ``db_url`` (``mysql://user:pass@host:port/db``, table ``db_table``) or from
    ``[[cluster.nodes]]`` rows with the columns of the OpenSIPS table."""

    my_node_id: int = 0
    cluster_id: int = 1
    db_url: str = ""
    db_table: str = "clusterer"
    nodes: tuple[Mapping[str, Any], ...] = ()
    ping_interval: float = 4.0
    ping_timeout: float = 1.0
    node_timeout: float | None = None
    seed_fallback_interval: float = 5.0


# -- value checkers -------------------------------------------------------------------------------
#
# A checker takes (key, value, context) and returns the value to store, or raises ConfigError.

Checker = Callable[[str, Any, "_Context"], Any]


@dataclass
class _Context:
    base_dir: str  # relative route paths resolve against this: the config file's directory, or cwd


def _show(value: Any) -> str:
    """A value as the operator wrote it (TOML spelling), shortened to fit in one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_show(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "a table"
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(minimum: int, maximum: int | None = None) -> Checker:
    if maximum is None:
        wanted = f"an integer >= {minimum}"
    else:
        wanted = f"an integer from {minimum} to {maximum}"

    def check(key: str, value: Any, ctx: _Context) -> int:
        if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
            raise ConfigError(key, f"must be {wanted}, got {_show(value)}")
        return int(value)

    return check


def _seconds(key: str, value: Any, ctx: _Context) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(key, f"must be a number of seconds > 0, got {_show(value)}")
    return float(value)


def _boolean(key: str, value: Any, ctx: _Context) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {_show(value)}")
    return value


def _choice(*options: str, aliases: Mapping[str, str] | None = None) -> Checker:
    names = ", ".join(f'"{o}"' for o in options)

    def check(key: str, value: Any, ctx: _Context) -> str:
        if isinstance(value, str):
            v = value.strip().lower()
            v = (aliases or {}).get(v, v)
            if v in options:
                return v
        raise ConfigError(key, f"must be one of {names}, got {_show(value)}")

    return check


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def _host(text: str, *, brackets: str) -> str | None:
    """``text`` as a host (IPv4, IPv6 or DNS name), IPv6 returned without brackets; None if invalid.

    ``brackets`` is ``"required"`` for IPv6 inside ``host:port`` strings, ``"optional"`` elsewhere.
    """
    if text.startswith("[") and text.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            return None
    if ":" in text:
        if brackets == "required":
            return None
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", text):  # looks like a broken IPv4 address, not a name
        return None
    return text.lower() if _HOSTNAME.match(text) else None


_LISTEN = re.compile(r"^(?P<transport>[A-Za-z]+):(?P<host>\[[^\]]*\]|[^:\[\]]+):(?P<port>[0-9]{1,5})$")


def parse_listen_spec(spec: str) -> tuple[str, str, int]:
    """Split a listener spec ``transport:host:port`` into (transport, host, port).

    The transport is returned lower-case, the host as written (an IPv6 host keeps its brackets: it
    must have them, as in a SIP URI, RFC 3261 §19.1.1). Raises ValueError with the reason.
    """
    m = _LISTEN.match(spec.strip()) if isinstance(spec, str) else None
    if m is None:
        raise ValueError("must be \"transport:host:port\" (IPv6 host in brackets, e.g. \"udp:[::1]:5060\")")
    transport = m["transport"].lower()
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
    if _host(m["host"], brackets="required") is None:
        raise ValueError("host must be an IPv4 address, an IPv6 address in brackets or a DNS name")
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise ValueError("port must be from 1 to 65535")
    return transport, m["host"], port


def _listen(key: str, value: Any, ctx: _Context) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f"must be a non-empty list of \"transport:host:port\" strings, got {_show(value)}")
    specs: list[str] = []
    seen: set[tuple[str, str, int]] = set()
    for i, spec in enumerate(value):
        if not isinstance(spec, str):
            raise ConfigError(f"{key}[{i}]", f"must be a \"transport:host:port\" string, got {_show(spec)}")
        try:
            transport, host, port = parse_listen_spec(spec)
        except ValueError as exc:
            raise ConfigError(f"{key}[{i}]", f"{exc}, got {_show(spec)}") from None
        ident = (transport, _host(host, brackets="required") or host, port)
        if ident in seen:
            raise ConfigError(f"{key}[{i}]", f"listed twice: {_show(spec)}")
        seen.add(ident)
        specs.append(f"{transport}:{host}:{port}")
    return tuple(specs)


def _advertise(key: str, value: Any, ctx: _Context) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a host name or IP address string, got {_show(value)}")
    if value == "":
        return ""
    host = _host(value.strip(), brackets="optional")
    if host is None:
        raise ConfigError(key, f"must be a host name or IP address, got {_show(value)}")
    return host


def _domains(key: str, value: Any, ctx: _Context) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of domain names, got {_show(value)}")
    out: list[str] = []
    for i, d in enumerate(value):
        host = _host(d.strip(), brackets="optional") if isinstance(d, str) else None
        if host is None:
            raise ConfigError(f"{key}[{i}]", f"must be a domain name or IP address, got {_show(d)}")
        if host not in out:
            out.append(host)
    return tuple(out)


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _route(key: str, value: Any, ctx: _Context) -> str:
    """A route module: a ``.py`` file (relative to the config file's directory) or a dotted name.

    Only the spelling and the file's existence are checked here; importing the module and checking
    its functions is :func:`edgeproxy.routing.loader.load_route_module`'s job.
    """
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a .py file path or a dotted module name, got {_show(value)}")
    spec = value.strip()
    if spec == "":
        return ""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = os.path.normpath(os.path.join(ctx.base_dir, os.path.expanduser(spec)))
        if not os.path.isfile(path):
            raise ConfigError(key, f"no such file: {_show(path)}")
        return path
    if not _DOTTED.match(spec):
        raise ConfigError(key, f"must be a .py file path or a dotted module name, got {_show(value)}")
    return spec


def _seconds_or_zero(key: str, value: Any, ctx: _Context) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(key, f"must be a number of seconds >= 0, got {_show(value)}")
    return float(value)


def _node_id(key: str, value: Any, ctx: _Context) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        raise ConfigError(key, f"must be 1-64 letters, digits, '.', '_' or '-', got {_show(value)}")
    return value


def _node_rows(key: str, value: Any, ctx: _Context) -> tuple[Mapping[str, Any], ...]:
    """``[[cluster.nodes]]`` rows, checked as the clusterer table would be."""
    from .cluster import NodeTable, NodeTableError

    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of tables ([[cluster.nodes]]), got {_show(value)}")
    try:
        NodeTable.from_dicts(value)
    except NodeTableError as exc:
        raise ConfigError(key, str(exc)) from None
    return tuple(MappingProxyType(dict(row)) for row in value)


def _text(key: str, value: Any, ctx: _Context) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {_show(value)}")
    return value


# -- [tls] and [ws] -----------------------------------------------------------------------------------

_TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")


def _pem_file(key: str, value: Any, ctx: _Context) -> str:
    """A PEM file path (relative to the config file's directory); "" for none. Must exist."""
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a file path string, got {_show(value)}")
    if value.strip() == "":
        return ""
    path = os.path.normpath(os.path.join(ctx.base_dir, os.path.expanduser(value.strip())))
    if not os.path.isfile(path):
        raise ConfigError(key, f"no such file: {_show(path)}")
    return path


def _tls_version(empty_ok: bool) -> Checker:
    names = ", ".join(f'"{v}"' for v in _TLS_VERSIONS)

    def check(key: str, value: Any, ctx: _Context) -> str:
        if isinstance(value, float) and not isinstance(value, bool):
            value = f"{value:.1f}"  # min_version = 1.2 written as a TOML number
        if isinstance(value, str) and (value.strip() in _TLS_VERSIONS or (empty_ok and value.strip() == "")):
            return value.strip()
        raise ConfigError(key, f"must be one of {names}{' or empty' if empty_ok else ''}, got {_show(value)}")

    return check


def _sni(key: str, value: Any, ctx: _Context) -> Mapping[str, tuple[str, str]]:
    """``[tls.sni]``: ``"name" = { certificate = "...", key = "..." }`` per server name."""
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a table of server names ([tls.sni]), got {_show(value)}")
    out: dict[str, tuple[str, str]] = {}
    for name, pair in value.items():
        label = f"{key}.{name}"
        bare = name[2:] if name.startswith("*.") else name
        if not _HOSTNAME.match(bare) or _host(bare, brackets="optional") != bare.lower():
            raise ConfigError(label, "must be a DNS name (or *.parent), as a client sends it in SNI")
        if not isinstance(pair, dict):
            raise ConfigError(label, f"must be a table {{ certificate = \"...\", key = \"...\" }}, got {_show(pair)}")
        unknown = set(pair) - {"certificate", "key"}
        if unknown:
            raise _unknown(f"{label}.{sorted(unknown)[0]}", "key", ["certificate", "key"])
        if "certificate" not in pair or "key" not in pair:
            raise ConfigError(label, "needs both certificate and key")
        out[name.lower().rstrip(".")] = (_pem_file(f"{label}.certificate", pair["certificate"], ctx),
                                         _pem_file(f"{label}.key", pair["key"], ctx))
    return MappingProxyType(out)


def _zero_or_seconds(key: str, value: Any, ctx: _Context) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(key, f"must be a number of seconds >= 0 (0: off), got {_show(value)}")
    return float(value)


def _ws_path(key: str, value: Any, ctx: _Context) -> str:
    if not isinstance(value, str) or not (value == "*" or re.fullmatch(r"/[\x21-\x7e]*", value)):
        raise ConfigError(key, f'must be "*" (any path) or an HTTP path starting with "/", got {_show(value)}')
    return value


def _origins(key: str, value: Any, ctx: _Context) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f'must be a list of origins like "https://app.example.com", got {_show(value)}')
    out: list[str] = []
    for i, origin in enumerate(value):
        if not isinstance(origin, str) or not (origin == "*" or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s]+/?",
                                                                             origin)):
            raise ConfigError(f"{key}[{i}]", f'must be an origin like "https://app.example.com" (* wildcards allowed),'
                                             f" got {_show(origin)}")
        out.append(origin)
    return tuple(out)


@dataclass(frozen=True)
class _Section:
    """One table of the file: the class it becomes and a checker per key.

    Each key is the field of ``cls`` of the same name; a key the file leaves out takes the class's own
    default, so a default is written once, next to the field it belongs to. ``defaults`` holds the
    rare exception: a key whose node default deliberately differs from the library's (each one says
    why in :data:`_SCHEMA`).
    """

    cls: type
    checkers: Mapping[str, Checker]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def value(self, values: Mapping[str, Any], key: str) -> Any:
        """What ``key`` will be: the checked value, else the node's default, else the class's."""
        if key in values:
            return values[key]
        if key in self.defaults:
            return self.defaults[key]
        return next(f.default for f in fields(self.cls) if f.name == key)

    def build(self, name: str, values: Mapping[str, Any]) -> Any:
        """The settings object. A settings class that still refuses the values (a rule between keys
        the schema does not check first) is reported as one line too, not as a traceback."""
        try:
            return self.cls(**{**self.defaults, **values})
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None

    def default(self) -> Any:
        """The section when the file does not have it."""
        return self.cls(**self.defaults)


def _dns_servers(key: str, value: Any, ctx: _Context) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f'must be a list of "ip[:port]" strings, got {_show(value)}')
    out = []
    for i, text in enumerate(value):
        try:
            out.append(parse_dns_server(text if isinstance(text, str) else "?"))
        except ValueError as exc:
            raise ConfigError(f"{key}[{i}]", f"{exc}, got {_show(text)}") from None
    return tuple(out)


# -- [auth] -------------------------------------------------------------------------------------------

def _identifier(key: str, value: Any, ctx: _Context) -> str:
    if not isinstance(value, str) or not sqldb.IDENT.match(value):
        raise ConfigError(key, f"must be a plain SQL name (letters, digits, _), got {_show(value)}")
    return value


def _identifiers(key: str, value: Any, ctx: _Context) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of column names, got {_show(value)}")
    return tuple(_identifier(f"{key}[{i}]", v, ctx) for i, v in enumerate(value))


def _algorithms(key: str, value: Any, ctx: _Context) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f'must be a non-empty list like ["SHA-256", "MD5"], got {_show(value)}')
    out = []
    for i, name in enumerate(value):
        try:
            # canonical_algorithm takes an absent name as MD5 (RFC 2617); in a list it is a mistake
            out.append(canonical_algorithm(name.strip() if isinstance(name, str) and name.strip() else "?"))
        except DigestError:
            raise ConfigError(f"{key}[{i}]", f"must be one of {', '.join(ALGORITHMS)}, got {_show(name)}") from None
    return tuple(out)


def _db_url(key: str, value: Any, ctx: _Context) -> str:
    text = _text(key, value, ctx)
    if text:
        try:
            sqldb.parse_db_url(text)
        except sqldb.DatabaseURLError as exc:
            raise ConfigError(key, str(exc).removeprefix("db_url: ")) from None
    return text


def _addresses(key: str, value: Any, ctx: _Context) -> tuple[str, ...]:
    """A list of IP addresses (``[pike] trusted``)."""
    if not isinstance(value, list):
        raise ConfigError(key, f'must be a list of IP addresses like ["10.0.1.50"], got {_show(value)}')
    out = []
    for i, text in enumerate(value):
        try:
            out.append(str(ipaddress.ip_address(text if isinstance(text, str) else "?")))
        except ValueError:
            raise ConfigError(f"{key}[{i}]", f"must be an IP address, got {_show(text)}") from None
    return tuple(out)


def _users(key: str, value: Any, ctx: _Context) -> Mapping[str, str]:
    """``[auth.users]``: ``"user[@domain]" = "password"``."""
    if not isinstance(value, dict):
        raise ConfigError(key, f'must be a table of "user[@domain]" = "password", got {_show(value)}')
    for name, password in value.items():
        if not name or any(c in name for c in ' \t"<>:;,') or name.count("@") > 1:
            raise ConfigError(f"{key}.{name}", "must be a user name, or user@domain")
        if not isinstance(password, str) or not password:
            raise ConfigError(f"{key}.{name}", "must be a non-empty password string")
    return MappingProxyType(dict(value))


# -- [mi] -------------------------------------------------------------------------------------------


def _mi_listen(key: str, value: Any, ctx: _Context) -> str:
    """``[mi] listen``: ``host:port`` of the management interface, "" for none."""
    text = _text(key, value, ctx).strip()
    if text:
        try:
            parse_mi_listen(text)
        except ValueError as exc:
            raise ConfigError(key, f"{exc}, got {_show(value)}") from None
    return text


def _mi_path(key: str, value: Any, ctx: _Context) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*", value):
        raise ConfigError(key, f'must be an HTTP path starting with "/", e.g. "/mi", got {_show(value)}')
    return value


# -- [nathelper] --------------------------------------------------------------------------------------


def _sip_method(key: str, value: Any, ctx: _Context) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{1,32}", value.strip()):
        raise ConfigError(key, f'must be a SIP method such as "OPTIONS", got {_show(value)}')
    return value.strip().upper()


def _sip_uri_or_empty(key: str, value: Any, ctx: _Context) -> str:
    from .sip.errors import SipValueError
    from .sip.uri import SipURI, parse_uri

    text = _text(key, value, ctx).strip()
    if not text:
        return ""
    try:
        ok = isinstance(parse_uri(text), SipURI) and not any(c in text for c in "<> \t\r\n")
    except SipValueError:
        ok = False
    if not ok:
        raise ConfigError(key, f'must be a sip: or sips: URI like "sip:pinger@example.com" ("": the node\'s), '
                               f"got {_show(value)}")
    return text


#: The schema of the file, section by section: what each table becomes, its keys and their checkers.
_SCHEMA: dict[str, _Section] = {
    "node": _Section(NodeConfig, {
        "listen": _listen,
        "advertise": _advertise,
        "domains": _domains,
        "route": _route,
        "log_level": _choice(*LOG_LEVELS, aliases={"warning": "warn"}),
        "node_id": _node_id,
        "gc_full_interval": _seconds_or_zero,
    }),
    "registrar": _Section(RegistrarSettings, {
        "default_expires": _integer(1),
        "min_expires": _integer(0),
        "max_expires": _integer(0),
        "min_expires_mode": _choice("clamp", "reject"),
        "max_contacts": _integer(0),
        "use_domain": _boolean,
        "path_mode": _choice("ignore", "off", "lazy", "strict"),
        "outbound": _boolean,
        "flow_timer": _integer(0),
    }),
    "timers": _Section(TimerSettings, {
        "t1": _seconds,
        "t2": _seconds,
        "t4": _seconds,
        "timer_b": _seconds,
        "timer_f": _seconds,
        "timer_c": _seconds,
    }, defaults={
        # A node is a proxy in front of PBXs and trunks: OpenSIPS's fr_inv_timeout (Kamailio's
        # fr_inv_timer) of 120 s, what operators moving from them expect. TimerSettings keeps the
        # RFC's "greater than 3 minutes" (180 s) for the transaction layer used on its own.
        "timer_c": 120.0,
    }),
    "proxy": _Section(ProxySettings, {
        "record_route_double": _boolean,
        "auto_100trying": _boolean,
        "no_reply_status": _integer(400, 699),
        "max_forwards_default": _integer(1, 255),
    }),
    "dns": _Section(DnsSettings, {
        "naptr": _boolean,
        "srv": _boolean,
        "failover": _boolean,
        "servers": _dns_servers,
        "timeout": _seconds,
        "cache_size": _integer(0),
    }),
    "limits": _Section(LimitsConfig, {
        "max_message_size": _integer(1024, 16 * 1024 * 1024),
        "max_headers": _integer(8, 100000),
        "max_line_length": _integer(256, 16 * 1024 * 1024),
        "max_connections": _integer(1),
        "tcp_idle_timeout": _seconds,
    }),
    "cluster": _Section(ClusterConfig, {
        "my_node_id": _integer(0),
        "cluster_id": _integer(1),
        "db_url": _text,
        "db_table": _text,
        "nodes": _node_rows,
        "ping_interval": _seconds,
        "ping_timeout": _seconds,
        "node_timeout": _seconds,
        "seed_fallback_interval": _seconds,
    }),
    "tls": _Section(TlsSettings, {
        "certificate": _pem_file,
        "key": _pem_file,
        "ca": _pem_file,
        "min_version": _tls_version(False),
        "max_version": _tls_version(True),
        "ciphers": _text,
        "groups": _text,
        "require_client_cert": _boolean,
        "verify_server": _boolean,
        "handshake_timeout": _seconds,
        "sni": _sni,
    }),
    "auth": _Section(AuthSettings, {
        "secret": _text,
        "nonce_expire": _seconds,
        "nonce_reuse": _boolean,
        "qop": _choice(*QOP_CHOICES),
        "algorithms": _algorithms,
        "db_url": _db_url,
        "table": _identifier,
        "calculate_ha1": _boolean,
        "use_domain": _boolean,
        "password_column": _identifier,
        "load_credentials": _identifiers,
        "timeout": _seconds,
        "users": _users,
    }),
    "pike": _Section(FloodSettings, {
        "sampling_time_unit": _seconds,
        "reqs_density_per_unit": _integer(1),
        "remove_latency": _seconds,
        "check_all": _boolean,
        "trusted": _addresses,
        "max_tracked": _integer(1),
    }),
    "ws": _Section(WsSettings, {
        "path": _ws_path,
        "origins": _origins,
        "max_message_size": _integer(0, 16 * 1024 * 1024),
        "ping_interval": _zero_or_seconds,
        "ping_timeout": _zero_or_seconds,
        "idle_timeout": _zero_or_seconds,
        "max_connections": _integer(0),
        "handshake_timeout": _seconds,
    }),
    "nathelper": _Section(NatPingSettings, {
        "natping_interval": _zero_or_seconds,
        "natping_partitions": _integer(1, 1000),
        "natping_tcp": _boolean,
        "sipping_method": _sip_method,
        "sipping_from": _sip_uri_or_empty,
        "remove_on_timeout": _boolean,
        "max_pings_lost": _integer(1, 1000),
    }),
    "mi": _Section(MISettings, {
        "listen": _mi_listen,
        "path": _mi_path,
        "allow_remote": _boolean,
        "token": _text,
        "max_request_size": _integer(1024, 16 * 1024 * 1024),
        "timeout": _seconds,
    }),
}


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

    node: NodeConfig = field(default_factory=_SCHEMA["node"].default)
    registrar: RegistrarSettings = field(default_factory=_SCHEMA["registrar"].default)
    timers: TimerSettings = field(default_factory=_SCHEMA["timers"].default)
    proxy: ProxySettings = field(default_factory=_SCHEMA["proxy"].default)
    limits: LimitsConfig = field(default_factory=_SCHEMA["limits"].default)
    cluster: ClusterConfig = field(default_factory=_SCHEMA["cluster"].default)
    # TlsSettings.sni is a mapping: leave it out of the hash, so a Config stays hashable
    tls: TlsSettings = field(default_factory=_SCHEMA["tls"].default, hash=False)
    ws: WsSettings = field(default_factory=_SCHEMA["ws"].default)
    dns: DnsSettings = field(default_factory=_SCHEMA["dns"].default)
    nathelper: NatPingSettings = field(default_factory=_SCHEMA["nathelper"].default)  # natping_interval 0: off
    federation: FederationSettings | None = None
    # None without an [auth] section: the route's authentication verbs then fail loudly
    auth: AuthSettings | None = field(default=None, hash=False)
    # None without a [pike] section: no flood detection, as OpenSIPS without the pike module
    pike: FloodSettings | None = None
    # None without an [mi] section: no management interface (OpenSIPS without mi_http)
    mi: MISettings | None = None
    route_params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    source: str | None = None


_FREE_FORM = ("route_params", "federation")
#: Sections that switch a feature on by being there (Config holds None without them).
_OPTIONAL = ("auth", "pike", "mi")


def _federation(table: Any, cluster: ClusterConfig) -> FederationSettings | None:
    """``[federation]``, checked by :func:`edgeproxy.federation.federation_settings`; ``sip_addr``
    defaults to this node's ``sip_addr`` in the ``[[cluster.nodes]]`` rows -- or, with
    ``cluster.db_url``, is left empty here and taken from this node's row when the table is read."""
    if table is None:
        return None
    from .federation.settings import federation_settings

    table = dict(table)
    from_db = False
    if "sip_addr" not in table and cluster.my_node_id:
        if cluster.db_url:
            # the node table is read from the database at start-up (RunningNode.start fills it in)
            table["sip_addr"] = "0.0.0.0"
            from_db = True
        for row in () if from_db else cluster.nodes:
            if int(row["node_id"]) == cluster.my_node_id and row.get("sip_addr"):
                table["sip_addr"] = row["sip_addr"]
                break
    settings = federation_settings(table)
    return replace(settings, sip_addr="") if from_db else settings


def _unknown(key: str, what: str, known: list[str]) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f'did you mean "{close[0]}"?' if close else "expected one of " + ", ".join(sorted(known))
    return ConfigError(key, f"unknown {what} ({hint})")


def _check_timers(values: Mapping[str, Any]) -> None:
    """``timers.t2 >= t1``, checked before :class:`TimerSettings` is built: it refuses the values
    itself, but with a ValueError that does not name the key to change."""
    timers = _SCHEMA["timers"]
    t1, t2 = timers.value(values, "t1"), timers.value(values, "t2")
    if t2 < t1:
        raise ConfigError("timers.t2", f"must be >= timers.t1 ({t1:g}), got {t2:g}")


def _cross_checks(config: Config) -> None:
    """Constraints between keys, reported against the key an operator would change."""
    r = config.registrar
    if r.max_expires and r.min_expires > r.max_expires:
        raise ConfigError("registrar.min_expires",
                          f"must be <= registrar.max_expires ({r.max_expires}), got {r.min_expires}")
    c = config.cluster
    if c.my_node_id and not c.db_url and not c.nodes:
        raise ConfigError("cluster.my_node_id", "needs a node table: cluster.db_url or [[cluster.nodes]]")
    if c.my_node_id and c.nodes and not any(
            int(r["node_id"]) == c.my_node_id and int(r["cluster_id"]) == c.cluster_id for r in c.nodes):
        raise ConfigError("cluster.my_node_id", f"node {c.my_node_id} is not in cluster {c.cluster_id}'s rows")
    if config.federation is not None and not c.my_node_id:
        raise ConfigError("federation", "needs a cluster (cluster.my_node_id): records carry its sip_addr")
    _check_tls(config)
    if config.mi is not None and config.mi.remote and not config.mi.allow_remote:
        raise ConfigError("mi.listen", f"{config.mi.listen} is not a loopback address: the MI can remove "
                                       "registrations, so set mi.allow_remote = true (and mi.token) to mean it")
    lim = config.limits
    if r.flow_timer and lim.tcp_idle_timeout and r.flow_timer >= lim.tcp_idle_timeout:
        # UAs keep-alive at 80-100 % of Flow-Timer (RFC 5626 §4.4.1): at or above the idle timeout
        # the node would close their quiet TCP/TLS flows under them
        raise ConfigError("registrar.flow_timer",
                          f"must be < limits.tcp_idle_timeout ({lim.tcp_idle_timeout:g}), got {r.flow_timer}")
    if lim.max_line_length > lim.max_message_size:
        raise ConfigError("limits.max_line_length",
                          f"must be <= limits.max_message_size ({lim.max_message_size}), got {lim.max_line_length}")


def _check_tls(config: Config) -> None:
    """A ``tls``/``wss`` listener needs a certificate; the files and the OpenSSL settings must load
    (the same check the transport makes at start-up, done here so twistd refuses with one line)."""
    tls = config.tls
    for i, spec in enumerate(config.node.listen):
        transport = spec.split(":", 1)[0]
        if transport in ("tls", "wss") and not (tls.certificate and tls.key):
            raise ConfigError(f"node.listen[{i}]", f"a {transport} listener needs tls.certificate and tls.key,"
                                                   f" got {_show(spec)}")
    if bool(tls.certificate) != bool(tls.key):
        raise ConfigError("tls.key" if tls.certificate else "tls.certificate",
                          "tls.certificate and tls.key go together (both or neither)")
    if tls.require_client_cert and not tls.ca:
        raise ConfigError("tls.require_client_cert", "needs tls.ca, the authorities client certificates must chain to")
    if tls.max_version and _TLS_VERSIONS.index(tls.max_version) < _TLS_VERSIONS.index(tls.min_version):
        raise ConfigError("tls.max_version", f"must be >= tls.min_version ({tls.min_version}), got {tls.max_version}")
    if tls.sni and not tls.certificate:
        raise ConfigError("tls.sni", "needs a default tls.certificate and tls.key as well")
    if tls == TlsSettings():
        return
    try:
        TlsContexts(tls)
    except ValueError as exc:
        text = str(exc)
        key = next((k for marker, k in (("TLS ciphers", "tls.ciphers"), ("TLS groups", "tls.groups"),
                                        ("CA bundle", "tls.ca"), ("TLS key", "tls.key"),
                                        ("TLS certificate", "tls.certificate"), ("sni", "tls.sni"))
                    if marker in text), "tls")
        raise ConfigError(key, text) from None


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


def load_config(path: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and check the configuration.

    ``path`` is a TOML file, or None for the built-in defaults. ``overrides`` maps dotted keys
    (``"node.listen"``) to values that replace the file's -- the command-line options; they are
    checked like the file's values and their errors say they came from the command line. Relative
    route paths in the file resolve against the file's directory, those from the command line
    against the current directory. Raises :class:`ConfigError`.
    """
    raw: dict[str, Any] = _read(path) if path is not None else {}
    file_dir = os.path.dirname(os.path.abspath(path)) if path is not None else os.getcwd()

    sections: dict[str, dict[str, Any]] = {}
    for name, table in raw.items():
        if name in _FREE_FORM:
            if not isinstance(table, dict):
                raise ConfigError(name, f"must be a table ([{name}]), got {_show(table)}")
            continue
        if name not in _SCHEMA:
            raise _unknown(name, "section", list(_SCHEMA) + list(_FREE_FORM))
        if not isinstance(table, dict):
            raise ConfigError(name, f"must be a table ([{name}]), got {_show(table)}")
        for key, value in table.items():
            sections.setdefault(name, {})[key] = (value, f"{name}.{key}", file_dir)

    for dotted, value in (overrides or {}).items():
        name, _, key = dotted.partition(".")
        if name not in _SCHEMA:
            raise _unknown(name, "section", list(_SCHEMA))
        sections.setdefault(name, {})[key] = (value, dotted, None)

    checked: dict[str, dict[str, Any]] = {}
    for name, section in _SCHEMA.items():
        values = checked[name] = {}
        for key, (value, label, base_dir) in sections.get(name, {}).items():
            from_file = base_dir is not None
            try:
                if key not in section.checkers:
                    raise _unknown(label, f"key in [{name}]", list(section.checkers))
                values[key] = section.checkers[key](label, value, _Context(base_dir if from_file else os.getcwd()))
            except ConfigError as exc:
                if from_file:
                    raise
                raise ConfigError(f"{exc.key} (command line)", exc.problem) from None
    _check_timers(checked["timers"])
    built = {name: section.build(name, checked[name]) for name, section in _SCHEMA.items()
             if name not in _OPTIONAL or name in raw or name in sections}

    params = raw.get("route_params", {})
    federation = _federation(raw.get("federation"), built["cluster"])
    config = Config(**built, route_params=MappingProxyType(dict(params)), federation=federation,
                    source=os.path.abspath(path) if path is not None else None)
    _cross_checks(config)
    return config
