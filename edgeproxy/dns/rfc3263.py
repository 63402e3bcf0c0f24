"""RFC 3263 §4 "Locating a SIP Server", as a pure procedure: which DNS questions to ask for a next
hop named by a host name, and the ordered list of transport addresses its answers give.

Why a generator: the procedure asks in rounds (NAPTR, then the SRV names NAPTR gave, then the
addresses of the SRV targets), and each round depends on the answers of the one before. Written as a
generator that yields a round of :class:`~.records.Question` s and is sent back their
:class:`~.records.Answer` s, the decisions (transport choice, RFC 2782 ordering, fallbacks) have no
I/O, no clock and no Twisted in them: tests drive it with hand-written answers and a seeded
``random.Random``, and the glue (``edgeproxy.transport.locator``) only fetches answers, from its
cache or a DNS server, and sends them in. A round whose answers are all cached completes without
yielding to the reactor.

The result is the failover list of RFC 3263 §4.3: every usable target in the order to try them, one
:class:`~edgeproxy.sip.endpoint.Endpoint` (transport, IP address, port) each.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Generator, Iterable, Mapping, Sequence

from ..sip.endpoint import Endpoint, default_port
from .records import AAAA, NAPTR, SRV, A, Answer, Naptr, Question, Srv

__all__ = [
    "ServerQuery",
    "Procedure",
    "SERVICES",
    "MAX_TARGETS",
    "locate",
    "select_naptr",
    "order_srv",
    "srv_name",
    "is_host_name",
]

#: NAPTR services (RFC 3263 §4.1) we can act on: service field → (transport, secure). ``D2W``
#: (WebSocket) is ignored: a proxy never dials WebSocket clients (RFC 7118 §5).
SERVICES: Mapping[str, tuple[str, bool]] = {
    "SIP+D2U": ("UDP", False),
    "SIP+D2T": ("TCP", False),
    "SIPS+D2T": ("TLS", True),
}
#: SRV prefixes of the fallback queries when there is no NAPTR (RFC 3263 §4.1), in our preference.
_FALLBACK = ("UDP", "TCP", "TLS")
#: At most this many targets (SRV target × address) in one failover list, and this many SRV targets
#: whose addresses are asked: a hostile zone cannot make one next hop cost hundreds of queries.
MAX_TARGETS = 16
_MAX_SRV_TARGETS = 8

#: What the procedure yields (a round of questions), is sent (their answers) and returns (targets).
Procedure = Generator[tuple[Question, ...], Mapping[Question, Answer], list[Endpoint]]


@dataclass(frozen=True, slots=True)
class ServerQuery:
    """What a next-hop URI asks of RFC 3263 (§4): its TARGET (``maddr`` or host, a name, lower case),
    whether it is a ``sips`` URI, and the transport and port it names explicitly, if any.

    ``server_name`` for TLS certificate checks is ``host`` (RFC 5922 §4: the domain of the URI, not
    the SRV target)."""

    host: str
    secure: bool = False
    transport: str | None = None
    port: int | None = None

    @property
    def default_transport(self) -> str:
        """UDP for ``sip``, TLS for ``sips`` (§4.1, when neither NAPTR nor SRV says otherwise)."""
        return self.transport or ("TLS" if self.secure else "UDP")


@functools.lru_cache(maxsize=4096)
def is_host_name(host: str) -> bool:
    """Whether ``host`` (a URI host, IPv6 with or without brackets) is a DNS name rather than an IP
    literal. Cached, since it runs for every forwarded request and IP literals must not pay for
    name-based routing (next hops repeat: trunks, registered contacts)."""
    if not host or ":" in host or host[0] == "[":
        return False
    if not host[-1].isdigit():
        return True  # a name never ends in a digit unless its last label is like "gw1"
    parts = host.split(".")
    return len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts)


def srv_name(transport: str, host: str) -> str:
    """The SRV owner name for ``transport`` at ``host`` (§4.2): ``_sips._tcp`` for TLS (a ``sip`` URI
    that wants TLS uses ``_sips`` too), else ``_sip._<proto>``."""
    if transport == "TLS":
        return f"_sips._tcp.{host}"
    return f"_sip._{transport.lower()}.{host}"


def select_naptr(records: Iterable[Naptr], secure: bool, transports: frozenset[str]) -> list[tuple[str, str]]:
    """§4.1: the usable NAPTR records as ``(transport, SRV name)``, by ``order`` then ``preference``.

    Usable: flag ``s`` (the replacement is an SRV name), a service of :data:`SERVICES` whose
    transport we can send on (``transports``), and for a ``sips`` URI a ``SIPS`` service only.
    Records of every order are kept (not only the lowest usable one, as RFC 3403 would for a generic
    DDDS application): the later ones are the §4.3 failover alternatives, as in OpenSIPS.
    """
    out: list[tuple[str, str]] = []
    for r in sorted(records, key=lambda r: (r.order, r.preference)):
        service = SERVICES.get(r.service.upper())
        if service is None or r.flags.lower() != "s":
            continue
        transport, is_secure = service
        if (secure and not is_secure) or transport not in transports:
            continue
        name = r.replacement.lower().rstrip(".")
        if name and (transport, name) not in out:
            out.append((transport, name))
    return out


def order_srv(records: Sequence[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782 ordering: lowest ``priority`` first; within one priority a weighted random order
    (weight-0 records first in the running sum, so they are picked rarely but never starved).
    Records whose target is ``.`` ("service decidedly not available") are dropped."""
    out: list[Srv] = []
    usable = [r for r in records if r.target not in (".", "")]
    for priority in sorted({r.priority for r in usable}):
        pending = sorted((r for r in usable if r.priority == priority), key=lambda r: r.weight != 0)
        while pending:
            total = sum(r.weight for r in pending)
            pick = rng.randint(0, total) if total else 0
            running = 0
            chosen = len(pending) - 1
            for i, r in enumerate(pending):
                running += r.weight
                if running >= pick:
                    chosen = i
                    break
            out.append(pending.pop(chosen))
    return out


def locate(query: ServerQuery, transports: frozenset[str], rng: random.Random, *, naptr: bool = True,
           srv: bool = True, static: Sequence[str] | None = None) -> Procedure:
    """The RFC 3263 §4 procedure for ``query``; returns the §4.3 failover list (may be empty: the
    name could not be resolved).

    ``transports`` are those we can send on (a listener exists): NAPTR and the SRV fallback only pick
    among them. ``naptr``/``srv`` switch those steps off (OpenSIPS ``dns_try_naptr``/``dns_try_srv``;
    without SRV, NAPTR is pointless and skipped too). ``static`` are the host's addresses from the
    hosts file, if it is there: such a host is used as it is, with no DNS question at all.

    Steps: a port in the URI means A/AAAA only (§4.2) on the explicit or default transport; an
    explicit transport skips NAPTR but still asks that transport's SRV (§4.2); otherwise NAPTR picks
    the transports (§4.1), falling back to SRV queries for each transport we support, then to A/AAAA
    on UDP (TLS for ``sips``) port 5060/5061. A name that does not exist (NXDOMAIN) ends it at once.
    """
    host = query.host
    if static is not None:
        return _at(query.default_transport, list(static), query.port)
    if query.port is not None or not srv:
        return _at(query.default_transport, (yield from _addresses(host)), query.port)
    plan: list[tuple[str, str]] = []
    if query.transport is not None:
        plan = [(query.transport, srv_name(query.transport, host))]
    else:
        if naptr:
            question = Question(host, NAPTR)
            answer = (yield (question,))[question]
            if answer.nxdomain:
                return []
            plan = select_naptr((r for r in answer.records if isinstance(r, Naptr)), query.secure, transports)
        if not plan:
            plan = [(t, srv_name(t, host)) for t in _FALLBACK
                    if t in transports and (t == "TLS" or not query.secure)]
    found: list[tuple[str, Srv]] = []
    any_srv = False
    if plan:
        questions = tuple(Question(name, SRV) for _, name in plan)
        answers = yield questions
        for (transport, _), question in zip(plan, questions, strict=True):
            records = [r for r in answers[question].records if isinstance(r, Srv)]
            any_srv = any_srv or bool(records)
            found += [(transport, r) for r in order_srv(records, rng)]
    if not any_srv:
        transport = query.transport or (plan[0][0] if plan else query.default_transport)
        return _at(transport, (yield from _addresses(host)), None)
    return (yield from _resolve_targets(found))


def _at(transport: str, addresses: list[str], port: int | None) -> list[Endpoint]:
    port = port if port is not None else default_port(transport)
    return [Endpoint(transport, address, port) for address in addresses[:MAX_TARGETS]]


def _addresses(name: str) -> Generator[tuple[Question, ...], Mapping[Question, Answer], list[str]]:
    """A then AAAA addresses of ``name`` (IPv4 first: a listener of each family decides later which
    can be used, and IPv4 is what SIP trunks mostly listen on)."""
    if not is_host_name(name):
        return [name.strip("[]")]
    qa, qaaaa = Question(name, A), Question(name, AAAA)
    answers = yield (qa, qaaaa)
    return [r for q in (qa, qaaaa) for r in answers[q].records if isinstance(r, str)]


def _resolve_targets(found: list[tuple[str, Srv]]) -> Generator[tuple[Question, ...], Mapping[Question, Answer],
                                                                list[Endpoint]]:
    names: list[str] = []
    for _, r in found:
        name = r.target.lower().rstrip(".")
        if name not in names and len(names) < _MAX_SRV_TARGETS:
            names.append(name)
    questions = tuple(q for name in names if is_host_name(name) for q in (Question(name, A), Question(name, AAAA)))
    answers = (yield questions) if questions else {}
    out: list[Endpoint] = []
    for transport, r in found:
        name = r.target.lower().rstrip(".")
        if name not in names:
            continue
        if is_host_name(name):
            addresses = [a for rtype in (A, AAAA) for a in answers[Question(name, rtype)].records
                         if isinstance(a, str)]
        else:
            addresses = [name.strip("[]")]  # an IP literal as SRV target: wrong (RFC 2782), but plain
        for address in addresses:
            endpoint = Endpoint(transport, address, r.port)
            if endpoint not in out:
                out.append(endpoint)
    return out[:MAX_TARGETS]
