"""The cluster node table: one :class:`NodeInfo` per row of OpenSIPS' ``clusterer`` table.

Sans-IO: no Twisted, no sockets. The rows come from the node configuration (a list of mappings) or
from SQL (:func:`edgeproxy.cluster.db.load_node_table`); both end up here and are checked the same
way, so a bad row is reported before anything listens.

The columns are those of the OpenSIPS ``clusterer`` table (``modules/clusterer`` README, "Usage
Example"; the blog's ``select * from clusterer``), minus the ``id`` row counter:

========================  ==========================================================================
``cluster_id``            cluster number (> 0); a node may be in several clusters
``node_id``               node number (> 0), unique in its cluster; ``my_node_id`` picks "me"
``url``                   the node's cluster link, ``bin:IP[:PORT]`` (proto_bin; default port 5555)
``state``                 1 enabled, 0 disabled (a disabled node is neither pinged nor listened to)
``no_ping_retries``       ping retries after a missed pong before the node is declared down
``priority``              kept for parity (OpenSIPS uses it to pick among equal-length relay paths)
``sip_addr``              the node's SIP address, bare ``host[:port]``; what ``cluster_check_addr``
                          compares against, and the "home" address of the federated location
``flags``                 ``seed`` or empty
``description``           free text
========================  ==========================================================================
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Iterable, Iterator, Mapping

__all__ = [
    "DEFAULT_BIN_PORT",
    "BinAddress",
    "NodeInfo",
    "NodeTable",
    "NodeTableError",
    "parse_bin_url",
    "sip_addr_host",
    "same_host",
    "normalize_ip",
]

#: Default TCP port of a ``bin:`` URL without one: OpenSIPS ``proto_bin``'s ``bin_port`` default.
DEFAULT_BIN_PORT = 5555

#: The table's columns, in the seed's order (without ``id``).
COLUMNS = ("cluster_id", "node_id", "url", "state", "no_ping_retries", "priority", "sip_addr",
           "flags", "description")
_DEFAULTS: dict[str, Any] = {"state": 1, "no_ping_retries": 3, "priority": 50, "sip_addr": None,
                             "flags": None, "description": None}


class NodeTableError(ValueError):
    """A node table row (or the table as a whole) cannot be used. ``str()`` is one line."""


@lru_cache(maxsize=1024)
def normalize_ip(text: str) -> str | None:
    """The canonical text of an IP literal (IPv4-mapped IPv6 as IPv4, no brackets), or ``None``.

    Cached (bounded): ``cluster_check_addr`` asks it about the source of every request a node of a
    cluster receives (``trusted_source``), and ``ipaddress`` parsing costs ~20 µs a REGISTER --
    the whole of what full sharing seemed to cost (issue 12)."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def same_host(a: str, b: str) -> bool:
    """Whether two hosts are the same: as addresses when both are IP literals, else as names."""
    na, nb = normalize_ip(a), normalize_ip(b)
    if na is not None and nb is not None:
        return na == nb
    return a.strip().lower().rstrip(".") == b.strip().lower().rstrip(".")


@dataclass(frozen=True)
class BinAddress:
    """Where a node's cluster link listens: an IP literal (canonical, no brackets) and a port."""

    host: str
    port: int

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"bin:[{self.host}]:{self.port}" if self.ipv6 else f"bin:{self.host}:{self.port}"


def parse_bin_url(url: str) -> BinAddress:
    """Parse ``bin:IP[:PORT]`` (IPv6 in brackets) as OpenSIPS ``proto_bin`` does.

    The port defaults to :data:`DEFAULT_BIN_PORT` (5555, ``proto_bin``'s ``bin_port``). The host must
    be a unicast IP literal: peers connect to it and inbound links are admitted by it, so neither a
    name nor a wildcard address can stand there. ``bins:`` (TLS) is not supported yet.

    >>> parse_bin_url("bin:10.0.1.100")
    BinAddress(host='10.0.1.100', port=5555)
    >>> parse_bin_url("bin:[::1]:5566")
    BinAddress(host='::1', port=5566)
    """
    if not isinstance(url, str):
        raise NodeTableError(f"url {url!r}: not a string")
    scheme, sep, rest = url.strip().partition(":")
    if not sep or scheme.lower() not in ("bin", "bins"):
        raise NodeTableError(f"url {url!r}: expected bin:IP[:PORT]")
    if scheme.lower() == "bins":
        raise NodeTableError(f"url {url!r}: bins: (TLS cluster links) is not supported yet")
    port_text = ""
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise NodeTableError(f"url {url!r}: bad bracketed IPv6 address")
        port_text = tail[1:] if tail else ""
        if tail and not port_text:
            raise NodeTableError(f"url {url!r}: empty port")
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
        if not port_text:
            raise NodeTableError(f"url {url!r}: empty port")
    else:
        host = rest  # IPv4 without port, or a bare IPv6 literal (no port possible then)
    canonical = normalize_ip(host)
    if canonical is None:
        raise NodeTableError(f"url {url!r}: host {host!r} is not an IP address")
    if ipaddress.ip_address(canonical).is_unspecified or ipaddress.ip_address(canonical).is_multicast:
        raise NodeTableError(f"url {url!r}: {canonical} cannot be a node's address")
    port = DEFAULT_BIN_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise NodeTableError(f"url {url!r}: bad port {port_text!r}")
        port = int(port_text)
    return BinAddress(canonical, port)


def sip_addr_host(sip_addr: str | None) -> str | None:
    """The host part of a ``sip_addr`` value (``host``, ``host:port``, ``[v6]:port`` or a bare IPv6).

    OpenSIPS' ``cluster_check_addr`` cuts ``sip_addr`` at the first ``:``; this does the same for
    IPv4 and names and also understands IPv6, which OpenSIPS does not.
    """
    if sip_addr is None:
        return None
    text = sip_addr.strip()
    if not text:
        return None
    if text.startswith("["):
        return text[1:].partition("]")[0] or None
    if normalize_ip(text) is not None:
        return text
    return text.partition(":")[0] or None


def _int_field(row: Mapping[str, Any], key: str, *, minimum: int | None = None) -> int:
    value = row[key]
    if isinstance(value, bool) or value is None:
        raise NodeTableError(f"{key}: expected an integer, got {value!r}")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise NodeTableError(f"{key}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise NodeTableError(f"{key}: must be >= {minimum}, got {value}")
    return value


def _opt_text(row: Mapping[str, Any], key: str) -> str | None:
    value = row[key]
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        raise NodeTableError(f"{key}: expected text, got {value!r}")
    value = value.strip()
    return value or None


@dataclass(frozen=True)
class NodeInfo:
    """One row of the node table (OpenSIPS ``clusterer``), checked on construction.

    Construct it directly or with :meth:`from_mapping` (config dicts, SQL rows). Derived views:
    :attr:`bin` (the parsed ``url``), :attr:`enabled`, :attr:`seed`, :attr:`sip_host`.
    """

    cluster_id: int
    node_id: int
    url: str
    state: int = 1
    no_ping_retries: int = 3
    priority: int = 50
    sip_addr: str | None = None
    flags: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        for key in ("cluster_id", "node_id", "state", "no_ping_retries", "priority"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise NodeTableError(f"{key}: expected an integer, got {value!r}")
        for key in ("cluster_id", "node_id"):
            if getattr(self, key) < 1:
                raise NodeTableError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.no_ping_retries < 0:
            raise NodeTableError(f"no_ping_retries: must be >= 0, got {self.no_ping_retries}")
        if self.state not in (0, 1):
            raise NodeTableError(f"state: must be 1 (enabled) or 0 (disabled), got {self.state}")
        for key in ("sip_addr", "flags", "description"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise NodeTableError(f"{key}: expected text, got {value!r}")
        parse_bin_url(self.url)
        if self.sip_addr is not None and self.sip_addr.strip().lower().startswith(("sip:", "sips:")):
            raise NodeTableError(
                f"sip_addr {self.sip_addr!r}: write host[:port] without a scheme "
                "(OpenSIPS prepends sip: itself)")
        unknown = self.flag_set - {"seed"}
        if unknown:
            raise NodeTableError(f"flags {self.flags!r}: unknown flag(s) {', '.join(sorted(unknown))}"
                                 " (only 'seed' is defined)")

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> NodeInfo:
        """Build from a mapping with the table's column names (``id`` is accepted and ignored).

        ``cluster_id``, ``node_id`` and ``url`` are required; the others default like the OpenSIPS
        table (state 1, no_ping_retries 3, priority 50, NULL text). Integers may be given as
        decimal strings; empty text counts as NULL. Unknown keys are an error (likely a typo).
        """
        unknown = sorted(set(row) - set(COLUMNS) - {"id"})
        if unknown:
            raise NodeTableError(f"unknown column(s) {', '.join(map(repr, unknown))}; "
                                 f"known: {', '.join(COLUMNS)}")
        missing = [k for k in ("cluster_id", "node_id", "url") if row.get(k) is None]
        if missing:
            raise NodeTableError(f"missing {', '.join(missing)}")
        full = {**_DEFAULTS, **{k: v for k, v in row.items() if k != "id"}}
        for key in ("state", "no_ping_retries", "priority"):
            if full[key] is None:
                full[key] = _DEFAULTS[key]
        url = _opt_text(full, "url")
        if url is None:
            raise NodeTableError("missing url")
        return cls(
            cluster_id=_int_field(full, "cluster_id", minimum=1),
            node_id=_int_field(full, "node_id", minimum=1),
            url=url,
            state=_int_field(full, "state"),
            no_ping_retries=_int_field(full, "no_ping_retries", minimum=0),
            priority=_int_field(full, "priority"),
            sip_addr=_opt_text(full, "sip_addr"),
            flags=_opt_text(full, "flags"),
            description=_opt_text(full, "description"),
        )

    @cached_property
    def bin(self) -> BinAddress:
        """The parsed ``url``."""
        return parse_bin_url(self.url)

    @property
    def enabled(self) -> bool:
        """``state == 1``."""
        return self.state == 1

    @property
    def flag_set(self) -> frozenset[str]:
        """The comma-separated ``flags``, lower-cased."""
        if not self.flags:
            return frozenset()
        return frozenset(f.strip().lower() for f in self.flags.split(",") if f.strip())

    @property
    def seed(self) -> bool:
        """Whether ``flags`` holds ``seed`` (falls back to "synced" after seed_fallback_interval)."""
        return "seed" in self.flag_set

    @cached_property
    def sip_host(self) -> str | None:
        """The host of ``sip_addr`` (see :func:`sip_addr_host`), or ``None``."""
        return sip_addr_host(self.sip_addr)


class NodeTable:
    """The checked set of rows: (cluster_id, node_id) is unique, rows kept in their given order."""

    def __init__(self, rows: Iterable[NodeInfo]) -> None:
        self._rows: tuple[NodeInfo, ...] = tuple(rows)
        self._by_key: dict[tuple[int, int], NodeInfo] = {}
        for row in self._rows:
            if not isinstance(row, NodeInfo):
                raise NodeTableError(f"expected NodeInfo rows, got {type(row).__name__}")
            key = (row.cluster_id, row.node_id)
            if key in self._by_key:
                raise NodeTableError(f"cluster {key[0]}: node_id {key[1]} is listed twice")
            self._by_key[key] = row

    @classmethod
    def from_dicts(cls, rows: Iterable[Mapping[str, Any]]) -> NodeTable:
        """Build from mappings (config file); errors name the row (0-based) and its node."""
        out = []
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise NodeTableError(f"node row {index}: expected a table of columns, got {row!r}")
            try:
                out.append(NodeInfo.from_mapping(row))
            except NodeTableError as exc:
                raise NodeTableError(f"node row {index}{_row_label(row)}: {exc}") from None
        return cls(out)

    @property
    def rows(self) -> tuple[NodeInfo, ...]:
        return self._rows

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def clusters(self) -> tuple[int, ...]:
        """Cluster ids in order of first appearance."""
        return tuple(dict.fromkeys(r.cluster_id for r in self._rows))

    def nodes(self, cluster_id: int) -> tuple[NodeInfo, ...]:
        """Every row of one cluster (this node included)."""
        return tuple(r for r in self._rows if r.cluster_id == cluster_id)

    def get(self, cluster_id: int, node_id: int) -> NodeInfo | None:
        return self._by_key.get((cluster_id, node_id))

    def __repr__(self) -> str:
        return f"NodeTable({list(self._rows)!r})"


def _row_label(row: Mapping[str, Any]) -> str:
    if "cluster_id" in row and "node_id" in row:
        return f" (cluster {row['cluster_id']}, node {row['node_id']})"
    return ""
