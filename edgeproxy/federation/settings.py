"""Federation settings: a ``[federation]`` configuration table, checked with one-line errors.

The node configuration (:mod:`edgeproxy.config`) can hand its ``[federation]`` table to
:func:`federation_settings`; errors are :class:`edgeproxy.config.ConfigError` naming the key::

    [federation]
    # OpenSIPS: modparam("usrloc", "cachedb_url", "mongodb://10.0.1.244:27017/opensipsDB.userlocation")
    cachedb_url = "mongodb://10.0.1.244:27017/opensipsDB.userlocation"
    # OpenSIPS: the clusterer table's sip_addr of this node (what other nodes relay to)
    sip_addr = "10.0.1.100"
    refresh_interval = 120      # s between re-publications of this node's live AoRs
    record_ttl = 360            # s a record lives without refresh (TTL index); default 3 x refresh
    retry_interval = 2          # s before the first retry after a failed write (doubles, max 30 s)
    server_selection_timeout = 1.0   # s; unless the URL sets serverSelectionTimeoutMS
    lookup_timeout = 1.0        # s a global lookup / raw query may take, queueing included, before failing (-3)
    write_timeout = 5.0         # s a write may take
    max_in_flight = 16          # store operations in the driver at once; the pool keeps this many connections
                                # open (unless the URL sets maxPoolSize / minPoolSize)
    max_waiting = 256           # lookups waiting for a free connection; beyond, refused at once (-3)
    batch_size = 1000           # records per bulk write when refreshing
    cleanup_on_start = true     # delete this node's leftover records at start-up
    unpublish_on_stop = true    # delete this node's records on a clean stop
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..config_error import ConfigError
from .url import MongoURL, MongoURLError, parse_mongo_url

__all__ = ["FederationSettings", "federation_settings"]


@dataclass(frozen=True)
class FederationSettings:
    """The checked ``[federation]`` table (see the module docstring for each key)."""

    cachedb_url: str
    sip_addr: str
    refresh_interval: float = 120.0
    record_ttl: float | None = None
    retry_interval: float = 2.0
    max_retry_interval: float = 30.0
    server_selection_timeout: float = 1.0
    lookup_timeout: float = 1.0
    write_timeout: float = 5.0
    max_in_flight: int = 16
    max_waiting: int = 256
    batch_size: int = 1000
    cleanup_on_start: bool = True
    unpublish_on_stop: bool = True

    @property
    def url(self) -> MongoURL:
        return parse_mongo_url(self.cachedb_url)

    @property
    def ttl(self) -> float:
        """``record_ttl``, or three refresh intervals."""
        return self.record_ttl if self.record_ttl is not None else 3 * self.refresh_interval


_HOSTPORT = re.compile(r"^(?P<host>\[[^\]]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?$")
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def _sip_addr(key: str, value: Any) -> str:
    wanted = "a bare host[:port] as other nodes reach this one (e.g. \"10.0.1.100\"; no \"sip:\")"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"must be {wanted}")
    text = value.strip()
    if text.lower().startswith(("sip:", "sips:")):
        raise ConfigError(key, f"must be {wanted}, got {text!r}")
    m = _HOSTPORT.match(text)
    if m is None:
        raise ConfigError(key, f"must be {wanted}, got {text!r}")
    host = m["host"]
    try:
        if host.startswith("["):
            ipaddress.IPv6Address(host[1:-1])
        elif re.fullmatch(r"[0-9.]+", host):
            ipaddress.IPv4Address(host)
        elif not _NAME.match(host):
            raise ValueError(host)
    except ValueError:
        raise ConfigError(key, f"must be {wanted}, got {text!r}") from None
    if m["port"] is not None and not 1 <= int(m["port"]) <= 65535:
        raise ConfigError(key, f"port must be from 1 to 65535, got {text!r}")
    return text


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(key, f"must be a number of seconds > 0, got {value!r}")
    return float(value)


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, f"must be an integer >= 1, got {value!r}")
    return value


def _count0(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, f"must be an integer >= 0, got {value!r}")
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


_CHECKERS = {
    "refresh_interval": _seconds, "record_ttl": _seconds, "retry_interval": _seconds,
    "max_retry_interval": _seconds, "server_selection_timeout": _seconds, "lookup_timeout": _seconds,
    "write_timeout": _seconds, "batch_size": _count, "cleanup_on_start": _flag, "unpublish_on_stop": _flag,
    "max_in_flight": _count, "max_waiting": _count0,
}


def federation_settings(table: Mapping[str, Any], section: str = "federation") -> FederationSettings:
    """Check a ``[federation]`` table; raise :class:`~edgeproxy.config.ConfigError` (one line)."""
    if not isinstance(table, Mapping):
        raise ConfigError(section, "must be a table")
    known = {f.name for f in fields(FederationSettings)}
    for key in table:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f'did you mean "{close[0]}"?' if close else "expected one of " + ", ".join(sorted(known))
            raise ConfigError(f"{section}.{key}", f"unknown key in [{section}] ({hint})")
    for required in ("cachedb_url", "sip_addr"):
        if required not in table:
            raise ConfigError(f"{section}.{required}", "is required when [federation] is present")
    url = table["cachedb_url"]
    try:
        parse_mongo_url(url)
    except MongoURLError as exc:
        raise ConfigError(f"{section}.cachedb_url", str(exc)) from None
    values: dict[str, Any] = {"cachedb_url": url.strip(), "sip_addr": _sip_addr(f"{section}.sip_addr", table["sip_addr"])}
    for key, check in _CHECKERS.items():
        if key in table:
            values[key] = check(f"{section}.{key}", table[key])
    settings = FederationSettings(**values)
    if settings.ttl <= settings.refresh_interval:
        raise ConfigError(f"{section}.record_ttl",
                          f"must be longer than refresh_interval ({settings.refresh_interval:g}), got {settings.ttl:g}")
    return settings
