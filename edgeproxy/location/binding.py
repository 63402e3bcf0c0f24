"""One registered contact (RFC 3261 §10.3 "binding") and the lookup return codes.

A :class:`Binding` carries what RFC 3261 §10.3 step 7 requires a registrar to keep (contact URI,
expiry, Call-ID, CSeq) plus what OpenSIPS usrloc keeps per contact and our proxy needs to reach the
client again: the Path route set (RFC 3327), the source address and flow of the REGISTER (OpenSIPS
``received``/socket; RFC 5626 flows), the instance-id and reg-id (RFC 5626/5627), the methods the
contact accepts (method filtering), the User-Agent and the NAT flag (OpenSIPS ``nat_bflag``).

Bindings are immutable values: the registrar builds new ones and hands the complete set to
:meth:`LocationService.replace`, so a reader never sees a half-updated binding.

Memory: the target is at most 2 KB per registered contact at 100,000 contacts (see
``python bench/location_memory.py``). Hence ``slots``, a shared empty mapping instead of a
per-binding dict when there are no extra contact parameters, and interned/shared values for strings
and sets that repeat across bindings (User-Agent, method sets).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Iterable, Mapping

from ..sip.endpoint import Endpoint, Flow
from ..sip.uri import SipURI

__all__ = ["Binding", "LookupResult", "EMPTY_PARAMS", "shared_methods", "shared_string", "order_key"]

EMPTY_PARAMS: Mapping[str, str | None] = MappingProxyType({})
"""The ``contact_params`` of every binding without extra contact parameters (one shared object)."""


class LookupResult(IntEnum):
    """What :meth:`LocationService.lookup` found; the values are OpenSIPS's ``lookup()`` return codes
    (``lib/reg/lookup.c``) so route modules written against ``$retcode`` keep working:
    ``FOUND`` 1, ``NOT_FOUND`` -1 (no AoR, or only expired bindings), ``METHOD_NOT_ALLOWED`` -2
    (bindings exist but none accepts the method; only with method filtering, flag ``m``) and
    ``ERROR`` -3 (bad AoR, storage failure). The documented script maps -1/-3 to 404 and -2 to 405.
    """

    FOUND = 1
    NOT_FOUND = -1
    METHOD_NOT_ALLOWED = -2
    ERROR = -3


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """A binding of an address-of-record to a contact (RFC 3261 §10.3), as OpenSIPS usrloc keeps it.

    Construct with keywords only. Fields:

    * ``aor`` — the canonical AoR key (see :func:`edgeproxy.registrar.aor_of`).
    * ``uri`` — the Contact URI; it becomes the Request-URI of requests for the AoR (§16.5).
    * ``contact_params`` — other Contact header parameters worth keeping and echoing in the 200 OK,
      chiefly RFC 3840 feature tags (``+sip.ice``, ``methods``, ``audio`` …). Read-only; the shared
      :data:`EMPTY_PARAMS` when there are none.
    * ``expires_at`` — absolute expiry on the location service's clock (``IReactorTime.seconds()``).
    * ``q`` — the Contact ``q`` value (§20.10) or None when the UA sent none (ordered as 0, OpenSIPS's
      ``default_q``).
    * ``call_id`` / ``cseq`` — of the REGISTER that last wrote the binding, for the §10.3 step 7
      ordering check.
    * ``path`` — the RFC 3327 Path header values of that REGISTER, top first; they become the Route
      set of requests sent to the contact (RFC 3327 §5).
    * ``received`` — the source of the REGISTER. Always stored (OpenSIPS only stores it when
      ``fix_nated_register`` ran), because WebSocket clients register unreachable ``.invalid``
      contacts (RFC 7118 §5) and connection-oriented clients must be reached over their connection.
    * ``flow`` — the flow the REGISTER arrived on (RFC 5626 §3.3), so a request goes back over the same
      connection; the location service drops the binding when that connection closes
      (:meth:`LocationService.remove_flow`).
    * ``instance`` / ``reg_id`` — ``+sip.instance`` (without the quotes, e.g. ``<urn:uuid:…>``) and
      ``reg-id`` (RFC 5626 §4.1, RFC 5627): a binding with the same instance (and reg-id) replaces this
      one even when the Contact URI changed.
    * ``methods`` — the methods the contact accepts (``methods`` Contact parameter, RFC 3840 §9, else
      the REGISTER's Allow header); None means unknown, i.e. every method (OpenSIPS: contacts
      registered without Allow accept all methods).
    * ``user_agent`` — the REGISTER's User-Agent (operator display, OpenSIPS ``user_agent`` column).
    * ``nat`` — OpenSIPS ``nat_bflag``: requests go to ``received`` rather than to the contact URI.
    * ``sipping`` — OpenSIPS nathelper's ``sipping_bflag``: a NAT binding kept open with SIP requests
      (OPTIONS) rather than 4-byte keep-alives (see :mod:`edgeproxy.location.natping`).
    * ``last_modified`` — when the binding was last written; orders bindings of equal q (most
      recent first).
    * ``owner`` — full sharing (OpenSIPS ``full-sharing-cluster``): the ``sip_addr`` of the cluster
      node holding the connection this contact is bound to; requests for it are relayed to that node
      (never sent from here), and not at all while it is down. None: a contact this node reaches itself.
    """

    aor: str
    uri: SipURI
    expires_at: float
    call_id: str
    cseq: int
    received: Endpoint | None = None
    flow: Flow | None = None
    q: float | None = None
    contact_params: Mapping[str, str | None] = field(default_factory=lambda: EMPTY_PARAMS)
    path: tuple[str, ...] = ()
    instance: str | None = None
    reg_id: int | None = None
    methods: frozenset[str] | None = None
    user_agent: str | None = None
    nat: bool = False
    sipping: bool = False
    last_modified: float = 0.0
    owner: str | None = None

    def __hash__(self) -> int:
        # The generated hash would fail on the ``contact_params`` mapping; hash the identifying fields
        # (equal bindings have equal ones) so bindings can live in sets and dict keys.
        return hash((self.aor, self.uri, self.call_id, self.cseq, self.expires_at))

    def expires_in(self, now: float) -> int:
        """Whole seconds left at ``now`` (rounded up, never negative): the ``expires`` Contact parameter
        of a 200 OK to REGISTER (§10.3 step 8)."""
        left = self.expires_at - now
        return math.ceil(left) if left > 0 else 0

    def expired(self, now: float) -> bool:
        """True once the binding's time has run out (it is then invisible to lookups)."""
        return self.expires_at <= now

    def allows(self, method: str) -> bool:
        """Whether the contact accepts ``method`` (OpenSIPS method filtering)."""
        return self.methods is None or method.upper() in self.methods


def order_key(binding: Binding) -> tuple[float, float]:
    """Sort key for contacts: highest q first, then most recently modified first (OpenSIPS
    ``lookup()`` order; a contact without q counts as q=0, OpenSIPS's ``default_q``)."""
    q = binding.q
    return (-(q if q is not None else 0.0), -binding.last_modified)


# -- sharing of repeated values -------------------------------------------------------------------
_METHOD_SETS: dict[frozenset[str], frozenset[str]] = {}
_MAX_SHARED = 4096


def shared_methods(methods: Iterable[str]) -> frozenset[str]:
    """An upper-cased frozenset of ``methods``, shared with every other binding that has the same set
    (a deployment sees a handful of distinct Allow headers, not one per contact)."""
    value = frozenset(m.upper() for m in methods if m)
    shared = _METHOD_SETS.get(value)
    if shared is not None:
        return shared
    if len(_METHOD_SETS) < _MAX_SHARED:
        _METHOD_SETS[value] = value
    return value


def shared_string(value: str | None, limit: int = 256) -> str | None:
    """``value`` truncated to ``limit`` characters and interned, so equal User-Agent strings of many
    bindings are one object."""
    if value is None:
        return None
    return sys.intern(value[:limit])
