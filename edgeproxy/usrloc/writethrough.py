"""The registrar's location service in write-through mode: a save is answered once its row is
committed (OpenSIPS ``single-instance-sql-write-through``).

OpenSIPS's write-through writes the database inside ``save()``, synchronously with memory: the 200
OK leaves after the row is in the table, and when the database write fails the registrar answers
500 "Server Internal Error" (``insert_ucontact``/``update_ucontact`` return -1, ``rerrno``
``R_UL_INS_C``/``R_UL_UPD_C`` -> 500; reference opensips-semantics.md "Error codes"). OpenSIPS then
drops a new AoR from memory (``insert_contacts`` -> ``delete_urecord``) but keeps an updated contact
in memory although its row was not written. edgeproxy follows RFC 3261 §10.3 step 7 in both cases:
"If any one of them fails (for example, because the back-end database commit failed), the request
MUST fail with a 500 (Server Error) response and all tentative binding updates MUST be removed" --
the AoR goes back to what it held before the save, which is what the table still holds, so memory
and the table agree and a restart revives exactly what was acknowledged.

:class:`WriteThroughLocation` wraps the node's :class:`~edgeproxy.location.InMemoryLocation`:
:meth:`~WriteThroughLocation.replace` changes memory at once (lookups see the new binding, as in
OpenSIPS) and returns :meth:`Persistence.committed <edgeproxy.usrloc.persistence.Persistence.committed>`
-- group commit: every save made while one transaction is in flight goes in the next, so throughput
stays high while each REGISTER waits for one or two transactions. Only the registrar saves through
it; memory-only and write-back nodes give the registrar the table itself (no Deferred to wait on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

from twisted.python.failure import Failure

from ..location import Binding, InMemoryLocation, LocationListener, LocationUnavailable, LookupResult
from ..sip.endpoint import Flow
from ..sip.uri import SipURI

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from .persistence import Persistence

__all__ = ["WriteThroughLocation"]


class WriteThroughLocation:
    """A :class:`~edgeproxy.location.LocationService` whose :meth:`replace` fires when the change is
    committed to ``persistence``'s table (a write-through :class:`Persistence` of ``location``), or
    fails with :class:`~edgeproxy.location.LocationUnavailable` -- the change undone -- when the
    commit fails. Everything else is ``location``'s."""

    def __init__(self, location: InMemoryLocation, persistence: Persistence) -> None:
        if persistence.location is not location or persistence.mode != "write-through":
            raise ValueError("a write-through persistence of this location is needed")
        self.location = location
        self.persistence = persistence

    def replace(self, aor: str, bindings: Sequence[Binding]) -> "Deferred[None]":
        location = self.location
        before = location.stored((aor,))[0][1]
        location.replace(aor, bindings)
        after = location.stored((aor,))[0][1]
        d = self.persistence.committed()
        d.addErrback(self._undo, aor, before, after)
        return d

    def _undo(self, failure: Failure, aor: str, before: tuple[Binding, ...], after: tuple[Binding, ...]) -> None:
        """The commit failed: put the AoR back as it was, unless something else (an expiry, a closed
        flow, ``ul_rm``) changed it since -- then that newer state stands and is written by the next
        flush."""
        location = self.location
        if location.stored((aor,))[0][1] is after:
            location.replace(aor, before)
        raise LocationUnavailable(failure.getErrorMessage())

    def lookup(self, aor: str, method: str | None = None) -> "Deferred[tuple[LookupResult, list[Binding]]]":
        return self.location.lookup(aor, method)

    def contacts(self, aor: str) -> "Deferred[list[Binding]]":
        return self.location.contacts(aor)

    def remove(self, aor: str, uri: SipURI | None = None) -> "Deferred[int]":
        return self.location.remove(aor, uri)

    def remove_flow(self, flow: Flow) -> "Deferred[int]":
        return self.location.remove_flow(flow)

    def subscribe(self, listener: LocationListener) -> None:
        self.location.subscribe(listener)

    def unsubscribe(self, listener: LocationListener) -> None:
        self.location.unsubscribe(listener)

    def aors(self) -> Iterable[str]:
        return self.location.aors()

    def __len__(self) -> int:
        return len(self.location)
