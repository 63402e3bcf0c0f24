"""Small helpers shared by the transports: IP literals, local-address guesses and the bytes of the
reply to a request that failed to parse."""

from __future__ import annotations

import functools
import socket

from ..sip.errors import SipParseError
from ..sip.parser import error_response

__all__ = ["ip_literal", "guess_local_address", "error_reply"]

_FAMILIES = (socket.AF_INET, socket.AF_INET6)


@functools.lru_cache(maxsize=4096)
def ip_literal(host: str) -> tuple[int, str] | None:
    """``(address family, canonical text)`` when ``host`` is an IP literal, else None (a name).

    IPv6 may come with or without brackets and keeps a ``%scope`` suffix. Canonical text makes
    ``::1`` and ``0::1`` the same key in the connection index. Cached: destinations repeat.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    base, pct, scope = host.partition("%")
    for family in _FAMILIES:
        try:
            packed = socket.inet_pton(family, base)
        except (OSError, ValueError):
            continue
        if pct and family != socket.AF_INET6:
            return None
        text = socket.inet_ntop(family, packed)
        return family, (f"{text}%{scope}" if pct else text)
    return None


def guess_local_address(family: int) -> str:
    """The source address the kernel would pick for a default-routed destination, used as the
    advertised host of a wildcard listener when no ``advertise`` is configured.

    Connecting a UDP socket sends nothing; it only selects a route. Falls back to loopback when
    there is no route (a host without network)."""
    probe = ("192.0.2.1", 9) if family == socket.AF_INET else ("2001:db8::1", 9)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(probe)
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1" if family == socket.AF_INET else "::1"


def error_reply(exc: SipParseError) -> bytes | None:
    """The bytes of the reply to a request that failed to parse, or None when none is possible.

    The core's :func:`~edgeproxy.sip.parser.error_response` decides (a broken response or ACK is only
    dropped, §18.1.2, §17; a request without Via or CSeq cannot be answered, §8.2.6.2); the parsers
    fill ``exc.partial`` for every error of a request, oversized and truncated ones included, so the
    transports never look at the raw bytes again.
    """
    response = error_response(exc)
    return None if response is None else response.to_bytes()
