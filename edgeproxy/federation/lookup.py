"""Global lookup: local bindings plus the other nodes that hold the AoR (OpenSIPS ``lookup("location",
"g")`` in ``federation-cachedb`` mode, reference §1.4).

The local lookup and the store query run concurrently. The store gives the ``home_ip`` of every node
holding the AoR; this node's own address is skipped (its contacts are the local bindings). Each other
node becomes a remote target that a proxy relays to as OpenSIPS does: Request-URI ``sip:<aor>``,
next hop (``$du``) ``sip:<home_ip>``, after all local branches (:meth:`GlobalLookup.remote_targets`).

Result codes (:class:`~edgeproxy.location.LookupResult`, OpenSIPS's ``lookup()`` codes):

* ``FOUND`` (1) — local bindings and/or remote nodes;
* ``NOT_FOUND`` (-1) / ``METHOD_NOT_ALLOWED`` (-2) — the local result when no other node holds the AoR;
* ``ERROR`` (-3) — the store failed, did not answer within ``lookup_timeout`` (1 s by default,
  waiting for a free connection included), or the query was refused because too many were already
  waiting (:class:`~edgeproxy.federation.StoreOverloaded`), and there is no usable local binding. When
  the store fails but local bindings exist, the result is ``FOUND`` with those bindings and ``error``
  set: calls to users registered on this node keep working during an outage. A failed query is never
  ``NOT_FOUND``: the shipped routes answer -3 with 503 + Retry-After (routes/federated.py), not the
  404 of -1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred
from twisted.logger import Logger

from ..location.binding import Binding, LookupResult
from .store import StoreError

__all__ = ["GlobalLookup", "global_lookup", "remote_target"]

log = Logger(namespace="edgeproxy.federation.lookup")


def remote_target(aor: str, home_ip: str) -> tuple[str, str]:
    """(Request-URI, next hop) of the branch towards the node ``home_ip`` holding ``aor``: OpenSIPS's
    ``FL_EXTRA_HOP`` branch, ``sip:<aor>`` via ``sip:<home_ip>``."""
    return f"sip:{aor}", f"sip:{home_ip}"


@dataclass(frozen=True)
class GlobalLookup:
    """What a global lookup found.

    ``code`` — the OpenSIPS return code (see the module docstring); ``bindings`` — the local bindings in
    lookup order (method-filtered when a method was given); ``homes`` — the ``sip_addr`` of the *other*
    nodes holding the AoR; ``error`` — the :class:`StoreError` when the store part failed, else None.
    """

    aor: str
    code: LookupResult
    bindings: list[Binding] = field(default_factory=list)
    homes: list[str] = field(default_factory=list)
    error: StoreError | None = None

    def remote_targets(self) -> list[tuple[str, str]]:
        """(Request-URI, next hop) for each remote node, in store order (:func:`remote_target`)."""
        return [remote_target(self.aor, home) for home in self.homes]


def global_lookup(location: Any, store: Any, sip_addr: str, aor: str, method: str | None = None,
                  store_up: bool = True) -> "Deferred[GlobalLookup]":
    """Look ``aor`` up locally (``location.lookup(aor, method)``) and in the store (``store.homes``),
    concurrently; fires with a :class:`GlobalLookup` and never fails (a store failure is ``ERROR``
    unless local bindings were found; a local failure is ``ERROR``). ``store_up=False`` (the store is
    known to be down) skips the store instead of waiting for its timeout on every call."""
    if not aor:
        from twisted.internet.defer import succeed

        return succeed(GlobalLookup(aor, LookupResult.ERROR))
    local = maybeDeferred(location.lookup, aor, method)
    if store_up:
        remote = maybeDeferred(store.homes, aor)
    else:
        remote = fail(StoreError("homes", ConnectionError("store is down"), True))
    both = DeferredList([local, remote], consumeErrors=True)

    def combine(results: list[tuple[bool, Any]]) -> GlobalLookup:
        (local_ok, local_value), (remote_ok, remote_value) = results
        if not local_ok:
            log.failure("global lookup of {aor}: local lookup failed", local_value, aor=aor)
            return GlobalLookup(aor, LookupResult.ERROR)
        code, bindings = local_value
        if not remote_ok:
            error = remote_value.value if isinstance(remote_value.value, StoreError) else StoreError(
                "homes", remote_value.value, False)
            log.warn("global lookup of {aor}: store failed: {err}", aor=aor, err=str(error))
            if code == LookupResult.FOUND:
                return GlobalLookup(aor, LookupResult.FOUND, list(bindings), [], error)
            return GlobalLookup(aor, LookupResult.ERROR, [], [], error)
        homes = [h for h in remote_value if h != sip_addr]
        if code == LookupResult.FOUND or homes:
            return GlobalLookup(aor, LookupResult.FOUND, list(bindings) if code == LookupResult.FOUND else [], homes)
        return GlobalLookup(aor, code, [], [])

    return both.addCallback(combine)
