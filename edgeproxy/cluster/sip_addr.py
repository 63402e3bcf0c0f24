"""Whether a node's own ``sip_addr`` reaches it: checked at start-up, not found at the first call.

Other nodes send to this node's ``sip_addr`` (OpenSIPS clusterer's column, bare ``host[:port]``): a
federated global lookup's branch is ``sip:user@domain`` via ``sip:<sip_addr>`` (usrloc
``federation-cachedb-cluster``), a redirect's Contact is ``sip:user@<sip_addr>``. Without a port that
URI means 5060 (RFC 3261 §19.1.2) and, with no ``transport`` parameter, UDP (RFC 3263 §4.1). A second
node on one host listening on 5070 with ``sip_addr = "127.0.0.12"`` therefore receives nothing: the
caller's INVITE goes to 5060 and times out with nothing in this node's log. This module names that
mistake before anything listens. Sans-IO.
"""

from __future__ import annotations

from typing import Iterable

from ..sip.endpoint import Endpoint
from .nodes import normalize_ip, same_host, sip_addr_host

__all__ = ["SIP_DEFAULT_PORT", "sip_addr_port", "unreachable_sip_addr"]

#: The port of a SIP URI without one (RFC 3261 §19.1.2).
SIP_DEFAULT_PORT = 5060

_WILDCARDS = ("0.0.0.0", "::")


def sip_addr_port(sip_addr: str) -> int | None:
    """The port of ``host[:port]`` / ``[v6]:port`` (5060 when none is written); None when the port is
    not a number in 1-65535."""
    text = sip_addr.strip()
    if text.startswith("["):
        rest = text.partition("]")[2]
    elif normalize_ip(text) is not None:  # a bare IPv6 address has colons but no port
        rest = ""
    else:
        _, colon, port_text = text.partition(":")
        rest = colon + port_text
    if not rest:
        return SIP_DEFAULT_PORT
    port = rest[1:]
    if not rest.startswith(":") or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return int(port)


def _host_matches(host: str, listener: Endpoint, advertise: str) -> bool:
    if normalize_ip(host) is None:
        return True  # a DNS name: what it resolves to is not ours to check at start-up; the port is
    if listener.host in _WILDCARDS:
        return (":" in listener.host) == (":" in (normalize_ip(host) or ""))
    return same_host(host, listener.host) or bool(advertise and same_host(host, advertise))


def unreachable_sip_addr(sip_addr: str, listeners: Iterable[Endpoint], advertise: str = "") -> str | None:
    """Why requests sent to ``sip_addr`` would reach no UDP listener of this node, or None when one
    of ``listeners`` receives them. ``advertise`` (``node.advertise``) counts as this node's host."""
    host, port = sip_addr_host(sip_addr), sip_addr_port(sip_addr)
    if host is None or port is None:
        return f"must be host or host:port, got {sip_addr!r}"
    udp = [e for e in listeners if e.transport == "UDP"]
    if any(e.port == port and _host_matches(host, e, advertise) for e in udp):
        return None
    shown = ", ".join(str(e) for e in udp) or "none"
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    hint = ""
    same = [e for e in udp if _host_matches(host, e, advertise)]
    if same:
        hint = f"; write the port: \"{where.rsplit(':', 1)[0]}:{same[0].port}\""
    return (f"{sip_addr!r} matches no UDP listener of this node: other nodes send to {where}"
            f" (node.listen UDP: {shown}){hint}")
