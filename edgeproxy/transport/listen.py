"""Listen specs: ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``, ``udp:0.0.0.0`` (port 5060),
``tls:0.0.0.0:5061``, ``wss:[::]:443``."""

from __future__ import annotations

import socket

from ..sip.endpoint import Endpoint, default_port
from ._util import ip_literal

__all__ = ["SUPPORTED_TRANSPORTS", "parse_listen"]

SUPPORTED_TRANSPORTS = ("UDP", "TCP", "TLS", "WS", "WSS")
"""The transports :class:`~edgeproxy.transport.manager.TransportManager` can listen on (RFC 3261
§18 makes UDP and TCP mandatory for proxies; TLS §26.2, WebSocket RFC 7118)."""


def parse_listen(spec: str) -> Endpoint:
    """Parse ``TRANSPORT:HOST[:PORT]`` into an :class:`Endpoint` to pass to ``listen``.

    ``TRANSPORT`` is ``udp``, ``tcp``, ``tls``, ``ws`` or ``wss`` (any case). ``HOST`` is an IP
    literal; IPv6 in brackets (``[::1]``, ``[::]``); ``0.0.0.0`` and ``[::]`` mean every local address of that family.
    ``PORT`` defaults to 5060 (5061 for TLS, 80 for WS, 443 for WSS; RFC 3261 §19.1.2, RFC 7118);
    ``0`` asks the kernel for a free port (tests).
    The format is the one ``str(Endpoint)`` produces, so specs round-trip.

    Raises ValueError with a message that names the spec and what is wrong with it.
    """
    text = spec.strip()

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid listen spec {spec!r}: {why} (expected e.g. udp:0.0.0.0:5060 or tcp:[::1]:5060)")

    scheme, sep, rest = text.partition(":")
    if not sep or not scheme:
        raise bad("missing transport")
    transport = scheme.upper()
    if transport not in SUPPORTED_TRANSPORTS:
        raise bad(f"unsupported transport {scheme!r}; supported: {', '.join(t.lower() for t in SUPPORTED_TRANSPORTS)}")
    if not rest:
        raise bad("missing host")
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise bad("unterminated '[' around the IPv6 address")
        host, tail = rest[1:close], rest[close + 1 :]
        if tail and not tail.startswith(":"):
            raise bad(f"unexpected {tail!r} after ']'")
        has_port, port_text = bool(tail), tail[1:]
        want_v6 = True
    else:
        if rest.count(":") > 1:
            raise bad("IPv6 addresses must be written in brackets, e.g. udp:[::1]:5060")
        host, colon, port_text = rest.partition(":")
        has_port = bool(colon)
        want_v6 = False
    if not host:
        raise bad("missing host; use 0.0.0.0 or [::] for every address")
    literal = ip_literal(host)
    if literal is None:
        raise bad(f"host {host!r} is not an IP address (names are not resolved for listening)")
    family, canonical = literal
    if want_v6 != (family == socket.AF_INET6):
        raise bad("only IPv6 addresses go in brackets")
    if has_port:
        if not port_text.isascii() or not port_text.isdigit():
            raise bad(f"port {port_text!r} is not a number")
        port = int(port_text)
        if port > 65535:
            raise bad(f"port {port} is out of range 0-65535")
    else:
        port = default_port(transport)
    return Endpoint(transport, canonical, port)
