"""Small helpers shared by the transports: local-address guesses and the bytes of the reply to a
request that failed to parse."""

from __future__ import annotations

import socket

from ..sip.errors import SipParseError
from ..sip.parser import error_response

__all__ = ["guess_local_address", "error_reply", "peer_host"]


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


def peer_host(transport: object) -> str:
    """The remote address of a connection's transport ('' when it has none: tests' fakes)."""
    return peer_address(transport)[0]


def peer_address(transport: object) -> tuple[str, int]:
    """The remote address and port of a connection's transport (('', 0) when it has none)."""
    try:
        peer = transport.getPeer()  # type: ignore[attr-defined]
        return str(peer.host), int(peer.port)
    except Exception:
        return "", 0
