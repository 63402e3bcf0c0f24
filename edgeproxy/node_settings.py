"""``[node]``: where the node listens and which route module decides what to do with requests.

::

    [node]
    listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]  # transport:host:port; IPv6 as [::1]
    advertise = ""          # host for Via / Record-Route when listening on 0.0.0.0 or [::]
    domains = []            # domains the node is responsible for; []: every domain
    route = ""              # a .py file (relative to the config file) or a dotted module; "": edgeproxy_routes.default
    log_level = "info"      # debug, info, warn, error; or OpenSIPS's 4 ... -4
    log_format = "text"     # "json": one JSON object per line (time, level, namespace, message, call_id, tx, ...)
    gc_full_interval = 300  # s between full garbage collections; 0: Python's own schedule
    state_dir = ""          # kept across restarts (flow-token key); "": the config file's directory

A section of the service (``edgeproxy.service`` opens the listeners, loads the route module and
sets up logging and the garbage collector): no lower layer has a settings class for it. Listen specs
are checked by the transports' own parser (:func:`edgeproxy.transport.listen.parse_listen`), so a
spec the file may hold is one the node can listen on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from .config_error import ConfigError
from .config_schema import Context, Section, choice, path_text, show, zero_or_seconds
from .sip.address import canonical_host
from .transport.listen import ListenSpecError, parse_listen

__all__ = ["NodeConfig", "LOG_LEVELS", "SECTION"]

#: Accepted ``node.log_level`` values, most to least verbose.
LOG_LEVELS = ("debug", "info", "warn", "error")


@dataclass(frozen=True)
class NodeConfig:
    """``[node]`` (see the module docstring).

    ``listen`` holds ``transport:host:port`` strings as :class:`~edgeproxy.sip.endpoint.Endpoint`
    prints them (transport lower-case, IPv6 hosts in brackets). ``advertise`` and ``domains`` keep
    IPv6 literals without brackets, as :class:`~edgeproxy.sip.endpoint.Endpoint` holds them.
    ``route`` is an absolute ``.py`` path or a dotted module name; empty means ``edgeproxy_routes.default``.
    """

    listen: tuple[str, ...] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    advertise: str = ""
    domains: tuple[str, ...] = ()
    route: str = ""
    log_level: str = "info"
    log_format: str = "text"  # "json": one JSON object per line, for log shippers
    node_id: str | None = None
    gc_full_interval: float = 300.0
    state_dir: str = ""  # what must survive a restart (the flow-token key); "": the config file's directory

    def check_sip_addr(self, key: str, sip_addr: str) -> None:
        """Raise ``ConfigError(key, ...)`` when ``sip_addr`` -- where other nodes send to this one --
        reaches none of its UDP listeners (:func:`edgeproxy.cluster.sip_addr.unreachable_sip_addr`):
        the file's value when the configuration is checked, a node table row's when it is read."""
        from .cluster.sip_addr import unreachable_sip_addr

        problem = unreachable_sip_addr(sip_addr, [parse_listen(s) for s in self.listen], self.advertise)
        if problem is not None:
            raise ConfigError(key, problem)


def _listen(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f"must be a non-empty list of \"transport:host:port\" strings, got {show(value)}")
    specs: list[str] = []
    for i, spec in enumerate(value):
        if not isinstance(spec, str):
            raise ConfigError(f"{key}[{i}]", f"must be a \"transport:host:port\" string, got {show(spec)}")
        try:
            endpoint = parse_listen(spec, strict=True)
        except ListenSpecError as exc:
            raise ConfigError(f"{key}[{i}]", f"{exc.reason}, got {show(spec)}") from None
        if str(endpoint) in specs:
            raise ConfigError(f"{key}[{i}]", f"listed twice: {show(spec)}")
        specs.append(str(endpoint))
    return tuple(specs)


def _advertise(key: str, value: Any, ctx: Context) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a host name or IP address string, got {show(value)}")
    if value == "":
        return ""
    host = canonical_host(value.strip())
    if host is None:
        raise ConfigError(key, f"must be a host name or IP address, got {show(value)}")
    return host


def _domains(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of domain names, got {show(value)}")
    out: list[str] = []
    for i, d in enumerate(value):
        host = canonical_host(d.strip()) if isinstance(d, str) else None
        if host is None:
            raise ConfigError(f"{key}[{i}]", f"must be a domain name or IP address, got {show(d)}")
        if host not in out:
            out.append(host)
    return tuple(out)


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _route(key: str, value: Any, ctx: Context) -> str:
    """A route module: a ``.py`` file (relative to the config file's directory) or a dotted name.

    Only the spelling and the file's existence are checked here; importing the module and checking
    its functions is :func:`edgeproxy.routing.loader.load_route_module`'s job.
    """
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a .py file path or a dotted module name, got {show(value)}")
    spec = value.strip()
    if spec == "":
        return ""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = ctx.path(spec)
        if not os.path.isfile(path):
            raise ConfigError(key, f"no such file: {show(path)}")
        return path
    if not _DOTTED.match(spec):
        raise ConfigError(key, f"must be a .py file path or a dotted module name, got {show(value)}")
    return spec


#: OpenSIPS's numeric ``log_level`` (L_DBG 4 ... L_ALERT -3) as the nearest level of ours: below error
#: (L_CRIT, L_ALERT) the node has nothing quieter, so those print errors too.
_OPENSIPS_LEVELS = {4: "debug", 3: "info", 2: "info", 1: "warn", 0: "error", -1: "error", -2: "error", -3: "error",
                    -4: "error"}
_level_name = choice(*LOG_LEVELS, aliases={"warning": "warn"})


def _log_level(key: str, value: Any, ctx: Context) -> str:
    """A name of :data:`LOG_LEVELS` or, as in ``opensips.cfg``, a number from -4 to 4 (``log_level = 4``;
    ``--log-level 4`` gives the same as text)."""
    number = value.strip() if isinstance(value, str) else value
    if isinstance(number, str) and number.lstrip("-").isdigit():
        number = int(number)
    if isinstance(number, int) and not isinstance(number, bool):
        if number in _OPENSIPS_LEVELS:
            return _OPENSIPS_LEVELS[number]
        raise ConfigError(key, f"must be an OpenSIPS level from -4 to 4 or one of {', '.join(LOG_LEVELS)},"
                               f" got {number}")
    return _level_name(key, value, ctx)


def _node_id(key: str, value: Any, ctx: Context) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        raise ConfigError(key, f"must be 1-64 letters, digits, '.', '_' or '-', got {show(value)}")
    return value


def _state_dir(key: str, value: Any, ctx: Context) -> str:
    """A directory (relative to the config file's), made at start-up if missing; "" for the default."""
    path = path_text(key, value, ctx, "directory")
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(key, f"not a directory: {show(path)}")
    return path


SECTION: Section[NodeConfig] = Section(NodeConfig, {
    "listen": _listen,
    "advertise": _advertise,
    "domains": _domains,
    "route": _route,
    "log_level": _log_level,
    "log_format": choice("text", "json"),
    "node_id": _node_id,
    "gc_full_interval": zero_or_seconds,  # 0: CPython's own collection schedule
    "state_dir": _state_dir,
})
