"""Small helpers shared by the transports: IP literals, local-address guesses and the salvage of a
request head for an error reply when the core could not (RFC 3261 §8.2.6.2)."""

from __future__ import annotations

import functools
import socket

from ..sip.errors import SipParseError
from ..sip.grammar import COMPACT_FORMS
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


_SALVAGED = frozenset({"via", "from", "to", "call-id", "cseq"})


def salvage_head(data: bytes | bytearray, limit: int, max_line: int) -> list[tuple[str, str]]:
    """Via, From, To, Call-ID and CSeq from the complete header lines at the start of ``data``.

    Used when the core raised without salvaging (an oversized or truncated message), so that the
    request can still be answered (§8.2.6.2 needs Via, Call-ID and CSeq). Looks at most at ``limit``
    octets and skips lines longer than ``max_line``; an unterminated last line is ignored.
    """
    window = bytes(data[:limit])
    end = window.find(b"\r\n\r\n")
    complete = end >= 0
    if complete:
        window = window[:end]
    lines = window.decode("utf-8", "surrogateescape").replace("\r\n", "\n").split("\n")
    if not complete:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    out: list[tuple[str, str]] = []
    last_kept = False
    for line in lines[1:]:
        if len(line) > max_line:
            last_kept = False
            continue
        if line[:1] in (" ", "\t"):
            if last_kept:
                k, v = out[-1]
                out[-1] = (k, f"{v} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        key = name.strip(" \t").lower()
        key = COMPACT_FORMS.get(key, key)
        last_kept = bool(sep) and key in _SALVAGED
        if last_kept:
            out.append((key, value.strip(" \t")))
    return out


def error_reply(exc: SipParseError, head: bytes | bytearray | None, limit: int, max_line: int) -> bytes | None:
    """The bytes of the reply to a request that failed to parse, or None when none is possible
    (a broken response is only dropped, §18.1.2; a request whose Via, Call-ID or CSeq cannot be
    found cannot be answered, §8.2.6.2; an ACK is never answered).

    ``head`` is the raw start of the offending message; it is only read when the core's error carries
    too little to reply (oversized messages, a datagram without the empty line).
    """
    if not exc.can_reply and exc.is_request is not False and head:
        is_request = exc.is_request
        if is_request is None:
            is_request = not bytes(head[:64]).lstrip(b"\r\n").startswith(b"SIP/")
        if not is_request:
            return None
        partial = salvage_head(head, limit, max_line)
        exc = SipParseError(exc.reason, exc.status, is_request=True, partial=partial, fatal=exc.fatal)
    if any(k == "cseq" and v.rsplit(None, 1)[-1:] == ["ACK"] for k, v in exc.partial):
        return None  # an ACK is never answered (§17.1.1.3, §17.2.1)
    response = error_response(exc)
    if response is None:
        return None
    return response.to_bytes()
