"""The proxy's tables of the configuration and their checks: ``[proxy]`` (:class:`ProxySettings`, how
the stateful proxy forwards: OpenSIPS ``tm``/``rr`` knobs) and ``[pike]``
(:class:`~edgeproxy.proxy.flood.FloodSettings`).

``[proxy]`` sets only the knobs an operator writes; the service adds ``node.domains`` and the debug
flag, which live in ``[node]``. ``[pike]`` is optional: without it the node has no flood detection,
as OpenSIPS without the pike module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config_error import ConfigError
from ..config_schema import Context, Section, boolean, integer, seconds, show
from ..sip.address import ip_literal
from .flood import FloodSettings

__all__ = ["ProxySettings", "PROXY_SECTION", "PIKE_SECTION"]


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Proxy behaviour knobs, named after their OpenSIPS counterparts where one exists."""

    record_route_double: bool = True  # rr enable_double_rr
    auto_100trying: bool = True  # tm auto_100trying
    no_reply_status: int = 500  # a route that neither replies nor relays
    max_forwards_default: int = 70  # §8.1.1.6
    domains: tuple[str, ...] = ()  # local domains (``uri == myself``); empty = the listeners only
    log_decisions: bool = False  # one debug line per routing decision (log_level = "debug")
    dns_failover: bool = True  # RFC 3263 §4.3 across a located next hop's targets (tm use_dns_failover)
    # Timer G for an INVITE's final response to a UDP source that is neither trusted nor authenticated
    # by the route: off, the final is re-sent once per retransmitted INVITE (no reflection amplifier)
    retransmit_unauthenticated: bool = False


PROXY_SECTION: Section[ProxySettings] = Section(ProxySettings, {
    "record_route_double": boolean,
    "auto_100trying": boolean,
    "no_reply_status": integer(400, 699),
    "max_forwards_default": integer(1, 255),
    "retransmit_unauthenticated": boolean,
})


def _addresses(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    """A list of IP addresses (``[pike] trusted``), in their canonical text."""
    if not isinstance(value, list):
        raise ConfigError(key, f'must be a list of IP addresses like ["10.0.1.50"], got {show(value)}')
    out = []
    for i, entry in enumerate(value):
        literal = ip_literal(entry) if isinstance(entry, str) else None
        if literal is None:
            raise ConfigError(f"{key}[{i}]", f"must be an IP address, got {show(entry)}")
        out.append(literal[1])
    return tuple(out)


PIKE_SECTION: Section[FloodSettings] = Section(FloodSettings, {
    "sampling_time_unit": seconds,
    "reqs_density_per_unit": integer(1),
    "remove_latency": seconds,
    "check_all": boolean,
    "trusted": _addresses,
    "max_tracked": integer(1),
}, optional=True)
