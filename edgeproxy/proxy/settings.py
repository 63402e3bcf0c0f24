"""The ``[proxy]`` settings: how the stateful proxy forwards (OpenSIPS ``tm``/``rr`` knobs)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProxySettings"]


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
