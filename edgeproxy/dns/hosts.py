"""The hosts file (``/etc/hosts``) as a table, parsed without I/O.

Why: next hops like ``localhost`` or a name an operator pinned in ``/etc/hosts`` resolved through
``getaddrinfo`` before RFC 3263 location existed; they must keep resolving the same way, without a
NAPTR/SRV question to a DNS server that knows nothing of them (and would make the call wait for its
timeout). Names found here are used as they are (see :func:`edgeproxy.dns.rfc3263.locate`).
"""

from __future__ import annotations

from ..sip.address import ip_literal

__all__ = ["parse_hosts"]


def parse_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """``{name: (address, ...)}`` from hosts(5) text: names lower case, addresses in file order
    (IPv6 scope suffixes and malformed lines skipped), comments ignored."""
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        literal = ip_literal(fields[0])
        if literal is None or "%" in literal[1]:
            continue
        address = literal[1]
        for name in fields[1:]:
            found = table.setdefault(name.lower().rstrip("."), [])
            if address not in found:
                found.append(address)
    return {name: tuple(addresses) for name, addresses in table.items()}
