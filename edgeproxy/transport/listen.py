"""Listen specs: ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``, ``udp:0.0.0.0`` (port 5060),
``tls:0.0.0.0:5061``, ``wss:[::]:443``.

The one parser of them: the configuration checks ``node.listen`` and ``--listen`` with it when it is
loaded (``strict``: the port written and not 0), so what it accepts is exactly what the transport
manager is later asked to listen on.
"""

from __future__ import annotations

import socket

from ..sip.address import TRANSPORTS, ip_literal
from ..sip.endpoint import Endpoint, default_port

__all__ = ["ListenSpecError", "parse_listen"]

_EXAMPLE = '"transport:host:port" (IPv6 host in brackets, e.g. "udp:[::1]:5060")'


class ListenSpecError(ValueError):
    """A listen spec that cannot be used. ``reason`` is what is wrong (a phrase, no spec in it);
    ``str()`` is one line naming the spec as well."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"invalid listen spec {spec!r}: {reason}")


def parse_listen(spec: str, *, strict: bool = False) -> Endpoint:
    """Parse ``TRANSPORT:HOST[:PORT]`` into an :class:`Endpoint` to pass to ``listen``.

    ``TRANSPORT`` is ``udp``, ``tcp``, ``tls``, ``ws`` or ``wss`` (any case). ``HOST`` is an IP
    literal (names are not resolved for listening); IPv6 in brackets (``[::1]``, ``[::]``);
    ``0.0.0.0`` and ``[::]`` mean every local address of that family. ``PORT`` defaults to 5060
    (5061 for TLS, 80 for WS, 443 for WSS; RFC 3261 §19.1.2, RFC 7118); ``0`` asks the kernel for a
    free port (tests). ``strict`` (a node's configuration) wants the port written, from 1 to 65535.
    The format is the one ``str(Endpoint)`` produces, so specs round-trip.

    Raises :class:`ListenSpecError`.
    """
    text = spec.strip() if isinstance(spec, str) else ""

    def bad(why: str) -> ListenSpecError:
        return ListenSpecError(spec, why)

    scheme, sep, rest = text.partition(":")
    if not sep or not scheme:
        raise bad(f"must be {_EXAMPLE}")
    transport = scheme.upper()
    if transport not in TRANSPORTS:
        raise bad(f"transport must be one of {', '.join(t.lower() for t in TRANSPORTS)}")
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise bad(f"must be {_EXAMPLE}: unterminated '[' around the IPv6 address")
        host, tail = rest[1:close], rest[close + 1 :]
        if tail and not tail.startswith(":"):
            raise bad(f"must be {_EXAMPLE}: unexpected {tail!r} after ']'")
        has_port, port_text = bool(tail), tail[1:]
        want_v6 = True
    else:
        if rest.count(":") > 1:
            raise bad(f"must be {_EXAMPLE}")
        host, colon, port_text = rest.partition(":")
        has_port = bool(colon)
        want_v6 = False
    if not host:
        raise bad(f"must be {_EXAMPLE}: missing host (0.0.0.0 or [::] for every address)")
    if strict and not has_port:
        raise bad(f"must be {_EXAMPLE}")
    literal = ip_literal(host)
    if literal is None or "%" in literal[1]:
        raise bad("host must be an IPv4 address or an IPv6 address in brackets"
                  " (names are not resolved for listening)")
    family, canonical = literal
    if want_v6 != (family == socket.AF_INET6):
        raise bad("only IPv6 addresses go in brackets")
    lowest = 1 if strict else 0
    if has_port:
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
            raise bad(f"port must be a number from {lowest} to 65535, not {port_text!r}")
        port = int(port_text)
        if not lowest <= port <= 65535:
            raise bad(f"port must be from {lowest} to 65535")
    else:
        port = default_port(transport)
    return Endpoint(transport, canonical, port)
