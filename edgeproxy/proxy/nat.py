"""NAT detection and Contact fixing as OpenSIPS's ``nathelper`` does them (``nat_uac_test``,
``fix_nated_contact``), over a request and the flow it came on.

``nat_uac_test(flags)`` (nathelper ``nat_uac_test_f``): true when any of the tests the flags select
hits. Flags are OpenSIPS 3.x's names, comma-separated, or the bit mask of 2.x scripts (an int, or
digits such as ``"19"``):

====  ========================  ================================================================
bit   name                      hits when
====  ========================  ================================================================
1     ``private-contact``       a Contact URI host is a private address
2     ``diff-ip-src-via``       the top Via's host (or ``maddr``) is not the source address
4     ``private-via``           the top Via's host is a private address
8     ``private-sdp``           a ``c=`` line of the SDP body holds a private IPv4 address
16    ``diff-port-src-via``     the source port is not the Via port (5060 when it has none)
32    ``diff-ip-src-contact``   a Contact host is not the source address
64    ``diff-port-src-contact`` a Contact port (the transport's default when none) is not the source port
128   ``carrier-grade-nat``     not a test: 192.0.0.0/29 (RFC 6333) counts as private too
====  ========================  ================================================================

"Private" is nathelper's ``ip_addr_is_1918`` without its loopback: 10/8, 172.16/12, 192.168/16 and
the shared address space 100.64/10 (RFC 6598), IPv4 only. OpenSIPS also counts 127/8; edgeproxy does
not, because nothing on loopback is behind a NAT: a loopback Contact is a process on the node's own
host, reachable as it says.

One departure of necessity: the node stamps ``received`` (RFC 3261 §18.2.1) on the top Via before the
route runs, so ``diff-ip-src-via`` compares the sent-by host with the source address instead of
looking for a ``received`` parameter.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from ..sip.endpoint import Flow, default_port
from ..sip.errors import SipValueError
from ..sip.message import Request
from ..sip.uri import SipURI

__all__ = ["NAT_FLAGS", "parse_nat_flags", "nat_uac_test", "is_private", "fix_nated_contact", "NatFlagError"]

NAT_FLAGS = {
    "private-contact": 1,
    "diff-ip-src-via": 2,
    "private-via": 4,
    "private-sdp": 8,
    "diff-port-src-via": 16,
    "diff-ip-src-contact": 32,
    "diff-port-src-contact": 64,
    "carrier-grade-nat": 128,
}

_PRIVATE = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                    "100.64.0.0/10"))
_CGN = ipaddress.IPv4Network("192.0.0.0/29")
_SDP_C = re.compile(rb"^c=IN[ \t]+IP4[ \t]+([0-9.]+)", re.MULTILINE)
_FLAG_CACHE: dict[str | int, int] = {}


class NatFlagError(ValueError):
    """A ``nat_uac_test`` flag that nathelper does not know (a startup error in OpenSIPS)."""


def parse_nat_flags(flags: str | int) -> int:
    """The bit mask of ``flags``: names (``"private-contact,diff-port-src-via"``), digits or an int."""
    cached = _FLAG_CACHE.get(flags)
    if cached is not None:
        return cached
    if isinstance(flags, int):
        mask = flags
    elif flags.strip().isdigit():
        mask = int(flags.strip())
    else:
        mask = 0
        for name in flags.split(","):
            name = name.strip().lower()
            if not name:
                continue
            bit = NAT_FLAGS.get(name)
            if bit is None:
                raise NatFlagError(f"nat_uac_test: unknown flag {name!r} (known: {', '.join(NAT_FLAGS)})")
            mask |= bit
    if not 0 <= mask <= 255:
        raise NatFlagError(f"nat_uac_test: flags out of range: {flags!r}")
    if len(_FLAG_CACHE) < 256:
        _FLAG_CACHE[flags] = mask
    return mask


_FIRST_OCTETS = frozenset(("10", "172", "192", "100"))


def is_private(host: str, cgn: bool = False) -> bool:
    """Whether ``host`` is a private IPv4 literal (see the module docstring); names and IPv6: no."""
    if host.partition(".")[0] not in _FIRST_OCTETS:
        return False  # the usual public or loopback address: no parsing on the message path
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return any(address in net for net in _PRIVATE) or (cgn and address in _CGN)


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


def _same_ip(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return ipaddress.ip_address(_bare(a)) == ipaddress.ip_address(_bare(b))
    except ValueError:
        return False


def _contact_uris(request: Request) -> list[SipURI]:
    try:
        return [c.uri for c in request.contacts if isinstance(c.uri, SipURI)]
    except SipValueError:
        return []


def nat_uac_test(request: Request, source: Flow, flags: str | int) -> bool:
    """nathelper's ``nat_uac_test``: whether any selected test says the sender is behind NAT.
    Tests run in OpenSIPS's order (16, 2, 1, 8, 4, 32, 64) and stop at the first hit."""
    mask = parse_nat_flags(flags)
    src = source.remote
    cgn = bool(mask & 128)
    if mask & (2 | 4 | 16):
        via = request.top_via
        if mask & 16 and (via.port or 5060) != src.port:
            return True
        if mask & 2 and not _same_ip(via.maddr or via.host, src.host):
            return True
    if mask & 1 and any(is_private(_bare(u.host), cgn) for u in _contact_uris(request)):
        return True
    if mask & 8 and request.body:
        if any(is_private(m.decode("ascii"), cgn) for m in _SDP_C.findall(request.body)):
            return True
    if mask & 4 and is_private(_bare(request.top_via.host), cgn):
        return True
    if mask & 32 and any(not _same_ip(u.host, src.host) for u in _contact_uris(request)):
        return True
    if mask & 64:
        for u in _contact_uris(request):
            transport = (u.transport or ("tls" if u.secure else "udp")).upper()
            if (u.port if u.port is not None else default_port(transport)) != src.port:
                return True
    return False


def fix_nated_contact(request: Request, source: Flow) -> bool:
    """nathelper's ``fix_nated_contact()``: every Contact URI's host and port become the source
    address (IPv6 in brackets); user, scheme and other parameters stay, ``maddr`` goes. False when
    the request has a Contact that cannot be rewritten (``*``, a non-SIP URI) -- unchanged then."""
    values = request.headers.values("contact")
    if not values:
        return True
    if request.contact_star:
        return False
    try:
        contacts = request.contacts
    except SipValueError:
        return False
    src = source.remote
    host = f"[{src.host}]" if ":" in src.host else src.host
    fixed = []
    for c in contacts:
        if not isinstance(c.uri, SipURI):
            return False
        params = {k: v for k, v in c.uri.params.items() if k != "maddr"}
        fixed.append(str(replace(c, uri=c.uri.replace(host=host, port=src.port, params=params))))
    request.headers.remove("contact")
    request.headers.add("Contact", ", ".join(fixed))
    return True
