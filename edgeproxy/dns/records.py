"""What the RFC 3263 procedure asks the DNS and what it gets back, as plain values.

The procedure (:mod:`.rfc3263`) and the cache (:mod:`.cache`) work on these, never on a resolver
library's types, so both are tested with answers written by hand; the glue that talks to a real DNS
server (``edgeproxy.transport.locator``) converts its library's records into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Union

__all__ = ["Question", "Naptr", "Srv", "Record", "Answer", "NAPTR", "SRV", "A", "AAAA"]

NAPTR = "NAPTR"
SRV = "SRV"
A = "A"
AAAA = "AAAA"


class Question(NamedTuple):
    """One DNS question: a name (lower case, no trailing dot) and a record type (``"NAPTR"``,
    ``"SRV"``, ``"A"``, ``"AAAA"``). Hashable, so it keys the cache and the in-flight table."""

    name: str
    rtype: str

    @classmethod
    def of(cls, name: str, rtype: str) -> "Question":
        return cls(name.lower().rstrip("."), rtype)


@dataclass(frozen=True, slots=True)
class Naptr:
    """A NAPTR record (RFC 3403 §4.1); for SIP ``flags`` is ``"s"`` and ``replacement`` the SRV name."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Srv:
    """An SRV record (RFC 2782); a ``target`` of ``"."`` says the service is not offered there."""

    priority: int
    weight: int
    port: int
    target: str


#: An A or AAAA record is just its address text.
Record = Union[Naptr, Srv, str]


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to one :class:`Question`.

    ``records`` holds only records of the asked type. ``ttl`` is how long the answer may be reused
    (the smallest record TTL; for an empty or NXDOMAIN answer the negative TTL of RFC 2308).
    ``nxdomain`` says the name does not exist at all (nothing below it either, RFC 8020), which ends
    the procedure early; ``failed`` that the question got no usable answer (timeout, SERVFAIL,
    refused): treated as empty, and never cached.
    """

    records: tuple[Record, ...] = ()
    ttl: float = 0.0
    nxdomain: bool = False
    failed: bool = False

    @classmethod
    def failure(cls) -> "Answer":
        return cls(failed=True)
