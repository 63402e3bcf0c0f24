"""The per-node in-memory location service (OpenSIPS usrloc ``single-instance-no-db`` /
``federation-cachedb`` local memory: contacts live only in this process and are lost on restart).

Theory of operation:

* ``_records`` maps each AoR to a small :class:`_Record`: its bindings (a tuple, usually of one or two)
  and the time of the expiry-heap entry that currently stands for it.
* Expiry uses a single ``callLater`` armed for the earliest entry of a heap of ``(time, aor)``. Each
  record has at most one *valid* entry — the one whose time equals ``record.scheduled``, at or before
  its earliest binding expiry. Entries made stale by a later change are deleted lazily when they reach
  the top. When a valid entry fires, the record's expired bindings are dropped and a new entry is
  pushed for the next expiry. Every operation is O(log n) in the number of AoRs (plus the handful of
  bindings of the AoR concerned).
* Reads filter on ``expires_at > now``, so an expired binding is never returned even when the timer has
  not run yet (a busy reactor, or a test Clock not advanced).
* ``_by_flow`` indexes the AoRs that have bindings on each connection-oriented flow (the ones that can
  close) — a bare AoR string in the usual one-client-per-connection case, a set otherwise — so
  :meth:`InMemoryLocation.remove_flow` does not scan; connection-less flows are not indexed (their
  removal scans every AoR — UDP "flows" never close).
"""

from __future__ import annotations

import heapq
from typing import Any, Iterable, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ..deadline import EarliestDeadline
from ..sip.endpoint import Flow
from ..sip.uri import SipURI
from .binding import Binding, LookupResult, order_key
from .journal import ChangeJournal
from .service import LocationListener

__all__ = ["InMemoryLocation"]

log = Logger()


class _Record:
    """One AoR's bindings and the time of its valid expiry-heap entry (None: none pushed)."""

    __slots__ = ("bindings", "scheduled")

    def __init__(self) -> None:
        self.bindings: tuple[Binding, ...] = ()
        self.scheduled: float | None = None


class InMemoryLocation:
    """A :class:`~edgeproxy.location.LocationService` held in this process's memory.

    ``clock`` is an ``IReactorTime`` (the reactor, or ``twisted.internet.task.Clock`` in tests); it gives
    "now" for expiry and runs the expiry timer. Every Deferred returned has already fired. Call
    :meth:`stop` on shutdown to cancel the timer. Each of ``journals`` (SQL persistence's, cluster
    replication's) is told every AoR that changes, whatever the cause (see
    :mod:`edgeproxy.location.journal`).
    """

    def __init__(self, clock: Any, journals: Sequence[ChangeJournal] = ()) -> None:
        self.clock = clock
        self.journals = tuple(journals)
        self._records: dict[str, _Record] = {}
        self._heap: list[tuple[float, str]] = []
        self._timer = EarliestDeadline(self.clock, self._expire)  # the one reactor call, at the heap's top
        self._listeners: list[LocationListener] = []
        self._by_flow: dict[Flow, str | set[str]] = {}  # an AoR, or a set when several share it
        self._count = 0

    # -- LocationService -----------------------------------------------------------------------------
    def replace(self, aor: str, bindings: Sequence[Binding]) -> "Deferred[None]":
        self._put(aor, bindings, self.clock.seconds(), arm=True)
        return succeed(None)

    def replace_many(self, items: Iterable[tuple[str, Sequence[Binding]]]) -> int:
        """:meth:`replace` for many AoRs, synchronously, with one re-arm of the expiry timer and no
        Deferred per AoR: a full-sharing bulk sync writes 100,000 AoRs in a row (OpenSIPS usrloc
        ``ul_cluster_sync``; issue 12 wants them in under 5 s). The number of AoRs holding bindings
        afterwards among ``items``."""
        now = self.clock.seconds()
        put = self._put
        written = sum(put(aor, bindings, now, arm=False) for aor, bindings in items)
        self._arm()
        return written

    def lookup(self, aor: str, method: str | None = None) -> "Deferred[tuple[LookupResult, list[Binding]]]":
        if not aor:
            return succeed((LookupResult.ERROR, []))
        live = self._live(aor)
        if not live:
            return succeed((LookupResult.NOT_FOUND, []))
        if method is not None:
            live = [b for b in live if b.allows(method)]
            if not live:
                return succeed((LookupResult.METHOD_NOT_ALLOWED, []))
        return succeed((LookupResult.FOUND, live))

    def contacts(self, aor: str) -> "Deferred[list[Binding]]":
        return succeed(self._live(aor))

    def remove(self, aor: str, uri: SipURI | None = None) -> "Deferred[int]":
        record = self._records.get(aor)
        if record is None:
            return succeed(0)
        now = self.clock.seconds()
        if uri is None:
            gone = [b for b in record.bindings if b.expires_at > now]
            self._drop(aor, record)
            return succeed(len(gone))
        keep = [b for b in record.bindings if b.uri != uri]
        removed = sum(1 for b in record.bindings if b.uri == uri and b.expires_at > now)
        self._update(aor, record, keep)
        return succeed(removed)

    def remove_flow(self, flow: Flow) -> "Deferred[int]":
        if flow.connection_id is not None:
            indexed = self._by_flow.get(flow)
            aors: Iterable[str] = () if indexed is None else [indexed] if type(indexed) is str else list(indexed)
        else:
            aors = [a for a, r in self._records.items() if any(b.flow == flow for b in r.bindings)]
        now = self.clock.seconds()
        removed = 0
        for aor in aors:
            record = self._records.get(aor)
            if record is None:
                continue
            keep = []
            for b in record.bindings:
                if b.flow == flow:
                    removed += b.expires_at > now
                else:
                    keep.append(b)
            self._update(aor, record, keep)
        return succeed(removed)

    def subscribe(self, listener: LocationListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unsubscribe(self, listener: LocationListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def aors(self) -> list[str]:
        now = self.clock.seconds()
        return [a for a, r in self._records.items() if any(b.expires_at > now for b in r.bindings)]

    def __len__(self) -> int:
        return len(self._records)

    # -- extras --------------------------------------------------------------------------------------
    @property
    def binding_count(self) -> int:
        """How many bindings are stored (statistics; like ``len`` it may include just-expired ones)."""
        return self._count

    def get(self, aor: str) -> list[Binding]:
        """The live bindings of ``aor`` in lookup order, synchronously (this store never blocks)."""
        return self._live(aor)

    def stored(self, aors: Iterable[str]) -> list[tuple[str, tuple[Binding, ...]]]:
        """Each of ``aors`` with its bindings as stored -- unsorted, possibly including some that just
        expired (the caller filters on ``expires_at``), ``()`` when it has none -- without the list and
        the sort of :meth:`get`: what a persistent usrloc copies for every changed AoR at each flush,
        in the reactor (issue 12)."""
        records = self._records
        out: list[tuple[str, tuple[Binding, ...]]] = []
        append = out.append
        for aor in aors:
            record = records.get(aor)
            append((aor, record.bindings if record is not None else ()))
        return out

    def stop(self) -> None:
        """Cancel the expiry timer (service shutdown). Bindings stay readable; a later change re-arms it."""
        self._timer.stop()

    # -- internals -----------------------------------------------------------------------------------
    def _live(self, aor: str) -> list[Binding]:
        record = self._records.get(aor)
        if record is None:
            return []
        now = self.clock.seconds()
        live = [b for b in record.bindings if b.expires_at > now]
        live.sort(key=order_key)
        return live

    def _put(self, aor: str, bindings: Sequence[Binding], now: float, *, arm: bool) -> bool:
        """The one write of :meth:`replace` and :meth:`replace_many`: store the live ``bindings`` (or
        drop the AoR when none is), schedule their expiry (``arm`` False: the caller re-arms the
        timer once after many). Whether the AoR holds bindings afterwards."""
        live = [b for b in bindings if b.expires_at > now]
        record = self._records.get(aor)
        if not live:
            if record is not None:
                self._drop(aor, record)
            return False
        created = record is None
        if record is None:
            record = self._records[aor] = _Record()
        self._set(aor, record, live)
        self._schedule(aor, record, arm=arm)
        if created:
            self._emit("aor_created", aor)
        return True

    def _set(self, aor: str, record: _Record, bindings: Sequence[Binding]) -> None:
        """Store ``bindings`` (or none, from :meth:`_drop`) in ``record``, keeping the flow index, the
        counter and the journal right."""
        for journal in self.journals:
            journal.add(aor)
        old = record.bindings
        self._count += len(bindings) - len(old)
        old_flows = {b.flow for b in old if b.flow is not None and b.flow.connection_id is not None}
        new_flows = {b.flow for b in bindings if b.flow is not None and b.flow.connection_id is not None}
        by_flow = self._by_flow
        for flow in old_flows - new_flows:
            aors = by_flow.get(flow)
            if aors is None:
                continue
            if isinstance(aors, str):
                if aors == aor:
                    del by_flow[flow]
            else:
                aors.discard(aor)
                if len(aors) == 1:
                    by_flow[flow] = next(iter(aors))
        for flow in new_flows - old_flows:
            aors = by_flow.get(flow)
            if aors is None:
                by_flow[flow] = aor  # the common case: one AoR per connection, no set
            elif isinstance(aors, str):
                if aors != aor:
                    by_flow[flow] = {aors, aor}
            else:
                aors.add(aor)
        record.bindings = tuple(bindings)  # a tuple is smaller than a list

    def _update(self, aor: str, record: _Record, keep: list[Binding]) -> None:
        """After a removal: store what is left, or drop the record when nothing is."""
        if len(keep) == len(record.bindings):
            return
        if keep:
            self._set(aor, record, keep)
        else:
            self._drop(aor, record)

    def _drop(self, aor: str, record: _Record) -> None:
        """Delete the AoR (its heap entry goes stale) and tell the listeners."""
        self._set(aor, record, [])
        del self._records[aor]
        self._emit("aor_emptied", aor)

    def _schedule(self, aor: str, record: _Record, *, arm: bool = True) -> None:
        """Make sure the record has a valid heap entry no later than its earliest expiry (``arm``
        False: the caller re-arms the timer once after many)."""
        earliest = min(b.expires_at for b in record.bindings)
        if record.scheduled is not None and record.scheduled <= earliest:
            return
        record.scheduled = earliest
        heapq.heappush(self._heap, (earliest, aor))
        if arm:
            self._arm()

    def _arm(self) -> None:
        """Point the single timer at the earliest valid heap entry (discarding stale tops)."""
        heap = self._heap
        records = self._records
        while heap:
            when, aor = heap[0]
            record = records.get(aor)
            if record is not None and record.scheduled == when:
                break
            heapq.heappop(heap)
        self._timer.arm(heap[0][0] if heap else None)

    def _expire(self) -> None:
        """The timer fired: purge every record whose entry is due, then re-arm."""
        now = self.clock.seconds()
        heap = self._heap
        records = self._records
        while heap and heap[0][0] <= now:
            when, aor = heapq.heappop(heap)
            record = records.get(aor)
            if record is None or record.scheduled != when:
                continue  # stale entry
            record.scheduled = None
            keep = [b for b in record.bindings if b.expires_at > now]
            if keep:
                if len(keep) != len(record.bindings):
                    self._set(aor, record, keep)
                earliest = min(b.expires_at for b in keep)
                record.scheduled = earliest
                heapq.heappush(heap, (earliest, aor))
            else:
                self._drop(aor, record)
        self._arm()

    def _emit(self, event: str, aor: str) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, event)(aor)
            except Exception:
                log.failure("location listener {listener!r} failed on {event} {aor}",
                            listener=listener, event=event, aor=aor)
