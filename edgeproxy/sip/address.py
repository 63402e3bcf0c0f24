"""Addresses as configuration and the wire write them: the transports a node speaks, IP literals and
host names. One parser each, used by the configuration, the transports and the proxy alike.

Pure (the standard library's ``socket`` only for its address-family constants and
``inet_pton``/``inet_ntop``, which do no I/O).
"""

from __future__ import annotations

import functools
import re
import socket

__all__ = ["TRANSPORTS", "ip_literal", "is_ip", "canonical_host"]

TRANSPORTS = ("UDP", "TCP", "TLS", "WS", "WSS")
"""The transports a node listens on and sends over, as :class:`~edgeproxy.sip.endpoint.Endpoint`
spells them (RFC 3261 §18 makes UDP and TCP mandatory for proxies; TLS §26.2; WebSocket RFC 7118).
Configuration and listen specs write them lower-case."""

_FAMILIES = (socket.AF_INET, socket.AF_INET6)


@functools.lru_cache(maxsize=4096)
def ip_literal(host: str) -> tuple[int, str] | None:
    """``(address family, canonical text)`` when ``host`` is an IP literal, else None (a name).

    IPv6 may come with or without brackets and keeps a ``%scope`` suffix; the text is without
    brackets. Only IPv6 goes in brackets (RFC 3986 §3.2.2, RFC 3261 §25.1): ``[1.2.3.4]`` is None.
    Canonical text (RFC 5952) makes ``::1`` and ``0::1`` one address. Cached: hosts repeat.
    """
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    base, pct, scope = host.partition("%")
    for family in _FAMILIES:
        try:
            packed = socket.inet_pton(family, base)
        except (OSError, ValueError):
            continue
        if ((pct or bracketed) and family != socket.AF_INET6) or (pct and not scope):
            return None
        text = socket.inet_ntop(family, packed)
        return family, (f"{text}%{scope}" if pct else text)
    return None


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP literal (IPv6 with or without brackets)."""
    return ip_literal(host) is not None


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
_DOTTED_DIGITS = re.compile(r"[0-9.]+")


def canonical_host(text: str) -> str | None:
    """``text`` as a host: an IP literal in its canonical text (IPv6 without brackets, which are
    optional) or a DNS name lower-cased; None when it is neither (``1.2.3`` is a broken address, not
    a name)."""
    literal = ip_literal(text)
    if literal is not None:
        return literal[1]
    if ":" in text or "[" in text or _DOTTED_DIGITS.fullmatch(text):
        return None
    return text.lower() if _NAME.match(text) else None
