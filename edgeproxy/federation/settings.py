"""Federation settings: a ``[federation]`` configuration table, checked with one-line errors.

The node configuration (:mod:`edgeproxy.config`) hands its ``[federation]`` table to
:func:`federation_settings`; errors are :class:`~edgeproxy.config_error.ConfigError` naming the key::

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

import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..config_error import ConfigError
from ..config_schema import Checker, Context, boolean, integer, seconds, unknown
from ..sip.address import canonical_host
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
    if canonical_host(host) is None:
        raise ConfigError(key, f"must be {wanted}, got {text!r}")
    if m["port"] is not None and not 1 <= int(m["port"]) <= 65535:
        raise ConfigError(key, f"port must be from 1 to 65535, got {text!r}")
    return text


_CHECKERS: dict[str, Checker] = {
    "refresh_interval": seconds, "record_ttl": seconds, "retry_interval": seconds,
    "max_retry_interval": seconds, "server_selection_timeout": seconds, "lookup_timeout": seconds,
    "write_timeout": seconds, "batch_size": integer(1), "cleanup_on_start": boolean, "unpublish_on_stop": boolean,
    "max_in_flight": integer(1), "max_waiting": integer(0),
}


def federation_settings(table: Mapping[str, Any], section: str = "federation") -> FederationSettings:
    """Check a ``[federation]`` table; raise :class:`~edgeproxy.config_error.ConfigError` (one line)."""
    if not isinstance(table, Mapping):
        raise ConfigError(section, "must be a table")
    known = sorted(f.name for f in fields(FederationSettings))
    for key in table:
        if key not in known:
            raise unknown(f"{section}.{key}", f"key in [{section}]", known)
    for required in ("cachedb_url", "sip_addr"):
        if required not in table:
            raise ConfigError(f"{section}.{required}", "is required when [federation] is present")
    url = table["cachedb_url"]
    try:
        parse_mongo_url(url)
    except MongoURLError as exc:
        raise ConfigError(f"{section}.cachedb_url", str(exc)) from None
    values: dict[str, Any] = {"cachedb_url": url.strip(),
                              "sip_addr": _sip_addr(f"{section}.sip_addr", table["sip_addr"])}
    here = Context(".")  # no key of the table is a path
    for key, check in _CHECKERS.items():
        if key in table:
            values[key] = check(f"{section}.{key}", table[key], here)
    settings = FederationSettings(**values)
    if settings.ttl <= settings.refresh_interval:
        raise ConfigError(f"{section}.record_ttl",
                          f"must be longer than refresh_interval ({settings.refresh_interval:g}), got {settings.ttl:g}")
    return settings
