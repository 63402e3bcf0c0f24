"""The ``[dns]`` settings: RFC 3263 server location for next hops named by a host name.

::

    [dns]
    naptr = true        # OpenSIPS dns_try_naptr: NAPTR chooses the transport when the URI names none
    srv = true          # OpenSIPS dns_try_srv: SRV gives targets and ports when the URI has no port
    failover = true     # RFC 3263 §4.3: a failed target (transport error, timeout, 503) -> the next one
    servers = []        # "ip[:port]" DNS servers; []: the system's (/etc/resolv.conf)
    timeout = 2.0       # seconds all the lookups for one next hop may take together
    cache_size = 1024   # answers kept, each for its TTL; 0: no cache
    max_queries = 64    # DNS lookups in flight at once (each on its own random port, RFC 5452):
                        # beyond it a question fails at once (503) -- names in requests are the
                        # attacker's to choose (issue 16)

:class:`DnsSettings` is what the configuration's ``[dns]`` table becomes (:data:`SECTION` checks the
keys), and what the locator and the proxy read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config_error import ConfigError
from ..config_schema import Context, Section, boolean, integer, seconds, show
from ..sip.address import ip_literal

__all__ = ["DnsSettings", "parse_dns_server", "SECTION"]


@dataclass(frozen=True)
class DnsSettings:
    """See the module docstring; ``servers`` are ``(ip, port)`` pairs."""

    naptr: bool = True
    srv: bool = True
    failover: bool = True
    servers: tuple[tuple[str, int], ...] = ()
    timeout: float = 2.0
    cache_size: int = 1024
    max_queries: int = 64


_SERVER = re.compile(r"^(?P<host>\[[^\]]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?$")


def parse_dns_server(text: str) -> tuple[str, int]:
    """``"ip[:port]"`` (IPv6 in brackets when a port follows) → ``(ip, port)``, port 53 by default.
    A DNS server is never given by name (it would need a DNS server to be found). ValueError says why."""
    text = text.strip()
    bare = ip_literal(text)
    if bare is not None:
        return bare[1], 53  # a bare address, IPv6 without brackets too
    m = _SERVER.match(text)
    if m is None:
        raise ValueError('must be an IP address with an optional port, e.g. "127.0.0.1:53" or "[::1]:5353"')
    literal = ip_literal(m["host"])
    if literal is None:
        raise ValueError("must be an IP address (a DNS server is not looked up by name)")
    host = literal[1]
    port = int(m["port"]) if m["port"] else 53
    if not 1 <= port <= 65535:
        raise ValueError("port must be from 1 to 65535")
    return host, port


def _servers(key: str, value: Any, ctx: Context) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f'must be a list of "ip[:port]" strings, got {show(value)}')
    out = []
    for i, entry in enumerate(value):
        try:
            out.append(parse_dns_server(entry if isinstance(entry, str) else "?"))
        except ValueError as exc:
            raise ConfigError(f"{key}[{i}]", f"{exc}, got {show(entry)}") from None
    return tuple(out)


SECTION: Section[DnsSettings] = Section(DnsSettings, {
    "naptr": boolean,
    "srv": boolean,
    "failover": boolean,
    "servers": _servers,
    "timeout": seconds,
    "cache_size": integer(0),
    "max_queries": integer(1),
})
