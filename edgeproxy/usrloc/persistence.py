"""Restart persistency of the location table: OpenSIPS usrloc's ``load-from-sql`` with
``sql_write_mode`` write-back or write-through (reference opensips-modules.md §6.1-6.4).

:class:`Persistence` sits beside the node's :class:`~edgeproxy.location.InMemoryLocation`; lookups
and saves never touch the database. What it does:

* **load** (:meth:`Persistence.load`, at start, before the node listens): deletes the rows that
  expired while the node was down, reads the others and puts the revivable ones in the table (see
  :func:`~edgeproxy.usrloc.rows.binding_from_values`); rows that are not revived are deleted by the first
  flush. An unreachable database fails the start (``StartupError``), as OpenSIPS does;
* **write-back**: every ``timer_interval`` the AoRs the table's :class:`~edgeproxy.location.ChangeJournal`
  collected are written -- each AoR's current contacts replace its rows, in one transaction -- and
  once more on a clean stop. A crash loses at most the changes of the last interval;
* **write-through**: the same write starts as soon as something changed, and changes made while one
  is in flight go together in the next (group commit). As in OpenSIPS, a REGISTER is answered only
  once its change is committed: the registrar saves through
  :class:`~edgeproxy.usrloc.writethrough.WriteThroughLocation`, which waits on :meth:`Persistence.committed`
  and answers 500 when the commit fails (see there). A crash loses nothing that was acknowledged;
* **ul_sync** (:meth:`Persistence.sync`): empty the table and write the whole memory table.

All database work runs in a worker thread (``deferToThread``), one operation at a time; the rows
are made in the reactor, a slice of AoRs per turn, so that the thread has almost no Python work
that would take the GIL from the reactor (see :meth:`Persistence._encode`). A failed write keeps
its AoRs for the next flush (logged once per outage; write-through tries again after
:data:`RETRY_DELAY`, or at once for a waiting save).
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable, Iterable, Sequence

from twisted.internet.defer import Deferred, DeferredLock, fail, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..location import Binding, ChangeJournal, InMemoryLocation
from .rows import binding_from_values, binding_row, fits, split_aor
from .sqlstore import LocationTable, TableError

__all__ = ["Persistence", "Runner", "TableError"]

log = Logger(namespace="edgeproxy.usrloc")

_SLICE = 500  # changed AoRs turned into rows per reactor turn (~1-3 ms)

#: Write-through: seconds before a failed transaction's AoRs are tried again when no save waits (a
#: save made meanwhile tries at once). Without it a database that fails fast -- refused connections,
#: a broken table -- was tried every reactor turn for as long as the outage lasted.
RETRY_DELAY = 1.0

#: Runs a blocking function off the reactor thread: ``runner(f, *args)`` -> Deferred of its result.
Runner = Callable[..., "Deferred[Any]"]


def _default_runner(f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
    from twisted.internet.threads import deferToThread

    return deferToThread(f, *args)


class Persistence:
    """Keeps ``table`` (a :class:`~edgeproxy.usrloc.sqlstore.LocationTable`) equal to ``location``,
    whose ``journal`` must be the one given here. ``mode`` is ``"write-back"`` or
    ``"write-through"``; ``timer_interval`` the write-back period (OpenSIPS ``timer_interval``);
    ``use_domain`` the registrar's; ``clock`` the location's; ``runner`` runs blocking work off the
    reactor (``deferToThread``; tests run it inline)."""

    def __init__(self, location: InMemoryLocation, journal: ChangeJournal, table: LocationTable, *, mode: str,
                 timer_interval: float, use_domain: bool, clock: IReactorTime, runner: Runner | None = None) -> None:
        if mode not in ("write-back", "write-through"):
            raise ValueError(f"mode must be write-back or write-through, not {mode!r}")
        if journal not in location.journals:
            raise ValueError("the location must record its changes in this journal")
        self.location = location
        self.journal = journal
        self.table = table
        self.mode = mode
        self.timer_interval = float(timer_interval)
        self.use_domain = use_domain
        self.clock = clock
        self.runner = runner or _default_runner
        self._lock = DeferredLock()  # one database operation at a time
        self._loop: LoopingCall | None = None
        self._running = False
        self._failing = False
        self._soon: IDelayedCall | None = None
        self._retrying = False  # write-through: the last transaction failed; _soon is the retry
        self._waiting: list[Deferred[None]] = []  # write-through: saves waiting for the next transaction
        self._writing: list[Deferred[None]] | None = None  # ... and for the one in flight
        self.stats = {"db_loaded_contacts": 0, "db_expired_on_load": 0, "db_skipped_contacts": 0, "db_flushes": 0,
                      "db_written_aors": 0, "db_written_contacts": 0, "db_failures": 0, "db_syncs": 0,
                      "db_unwritable_contacts": 0}

    @property
    def pending(self) -> int:
        """AoRs changed and not yet written."""
        return len(self.journal)

    # -- start ---------------------------------------------------------------------------------------
    @inlineCallbacks
    def load(self) -> Any:
        """Read the table into the location (before the node answers anything). Fires with the number
        of contacts loaded; fails with :class:`TableError` when the database cannot be read."""
        started = time.perf_counter()
        now = self.clock.seconds()
        use_domain = self.use_domain
        collecting = gc.isenabled()
        gc.disable()  # tens of thousands of long-lived objects: the collector would walk them over and over
        try:
            expired, rows = yield self._locked(self.table.load, now)
            read = time.perf_counter()
            grouped = yield self.runner(_bindings_by_aor, rows, now, use_domain)
            by_aor, skipped_aors, skipped = grouped
            built = time.perf_counter()
            self.location.replace_many(by_aor.items())  # one timer re-arm, no Deferred per AoR
        finally:
            if collecting:
                gc.enable()
        self.journal.take()  # what was just read needs no writing back ...
        self.journal.put_back(skipped_aors)  # ... except the AoRs whose rows were not all revived
        loaded = sum(len(b) for b in by_aor.values())
        self.stats["db_loaded_contacts"] += loaded
        self.stats["db_skipped_contacts"] += skipped
        self.stats["db_expired_on_load"] += expired
        done = time.perf_counter()
        log.info("usrloc: loaded {n} contacts of {aors} AoRs from {where} in {ms:.0f} ms (read {read:.0f}, bindings "
                 "{built:.0f}, table {insert:.0f}; {expired} expired while down, deleted; {skipped} not revived: "
                 "connection-bound or unreadable)", n=loaded, aors=len(by_aor), where=self.table.where,
                 ms=(done - started) * 1000, read=(read - started) * 1000, built=(built - read) * 1000,
                 insert=(done - built) * 1000, skipped=skipped, expired=expired)
        return loaded

    def start(self) -> None:
        """Begin writing back (after :meth:`load`)."""
        if self._running:
            return
        self._running = True
        if self.mode == "write-back":
            loop = self._loop = LoopingCall(self._tick)
            loop.clock = self.clock
            loop.start(self.timer_interval, now=False).addErrback(
                lambda f: log.failure("usrloc: the write-back timer stopped", f))
        else:
            self._wait_for_change()

    @inlineCallbacks
    def stop(self) -> Any:
        """Stop the timer, write what is pending (OpenSIPS's last-minute flush) and close the table."""
        if not self._running:
            return
        self._running = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        try:
            yield self.flush()
        except Exception:
            pass  # flush logged it
        yield self._locked(self.table.close)

    # -- writing -------------------------------------------------------------------------------------
    def committed(self) -> "Deferred[None]":
        """Fires once every change made to the location so far is in the table: with the transaction
        in flight when nothing changed since it started, else with the next one (write-through's group
        commit: one transaction for all the saves made while the previous one ran). Fails with
        :class:`TableError` when that transaction fails, or when the table is closed."""
        if not self._running:
            return fail(TableError(f"{self.table.where}: the location table is closed"))
        d: Deferred[None] = Deferred()
        if len(self.journal):
            self._waiting.append(d)
            if self._retrying and self._soon is not None and self._soon.active():
                self._soon.reset(0)  # this save need not wait for the retry: its own answer is due now
        elif self._writing is not None:
            self._writing.append(d)
        else:
            d.callback(None)
        return d

    def _tick(self) -> None:
        if not self._lock.locked:  # a flush still running takes the next interval's changes later
            self.flush().addErrback(lambda _: None)

    def _wait_for_change(self) -> None:
        if self._running:
            self.journal.when_changed().addCallback(self._changed)

    def _changed(self, _: object) -> None:
        # called inside the location's update: only schedule
        if self._running and (self._soon is None or not self._soon.active()):
            self._soon = self.clock.callLater(0, self._write_through)

    def _write_through(self) -> None:
        self._soon = None
        self._retrying = False
        self.flush().addCallbacks(lambda _: self._wait_for_change(), self._retry_later)

    def _retry_later(self, _: Failure) -> None:
        """The transaction failed (logged once per outage by :meth:`_flush`): its AoRs are in the
        journal again, tried in :data:`RETRY_DELAY` or by the next save."""
        if self._running:
            self._retrying = True
            self._soon = self.clock.callLater(0 if self._waiting else RETRY_DELAY, self._write_through)

    def flush(self) -> "Deferred[int]":
        """Write the AoRs changed since the last flush; fires with how many contacts were written (fails
        with :class:`TableError`; the AoRs are then kept for the next flush)."""
        return self._lock.run(self._flush)

    @inlineCallbacks
    def _flush(self) -> Any:
        aors = self.journal.take()
        waiting, self._waiting = self._waiting, []
        if not aors:
            _settle(waiting, None)
            return 0
        started = time.perf_counter()
        self._writing = waiting
        try:
            order = list(aors)
            rows = yield self._encode(order)
            use_domain = self.use_domain
            keys = [split_aor(aor, use_domain) for aor in order]
            yield self.runner(self.table.write, keys, rows, use_domain)
            written = len(rows)
        except Exception as exc:  # TableError; anything else is a bug, but the waiting saves must hear of it
            self._writing = None
            self.journal.put_back(aors)
            self.stats["db_failures"] += 1
            if not self._failing:
                self._failing = True
                log.warn("usrloc: cannot write the location table ({err}); {n} changed AoRs are kept for the next "
                         "flush", err=str(exc) or type(exc).__name__, n=len(aors))
            _settle(waiting, Failure(exc))
            raise
        self._writing = None
        _settle(waiting, None)
        if self._failing:
            self._failing = False
            log.info("usrloc: {where} answers again", where=self.table.where)
        self.stats["db_flushes"] += 1
        self.stats["db_written_aors"] += len(aors)
        self.stats["db_written_contacts"] += written
        level = log.info if self.mode == "write-back" else log.debug
        level("usrloc: wrote {aors} changed AoRs ({n} contacts) to {where} in {ms:.0f} ms", aors=len(aors),
              n=written, where=self.table.where, ms=(time.perf_counter() - started) * 1000)
        return written

    @inlineCallbacks
    def _encode(self, aors: list[str]) -> Any:
        """The rows of ``aors``' current contacts, encoded for the table, made in the reactor
        ``_SLICE`` AoRs per turn: Python work in the worker thread would hold the GIL for whole switch
        intervals (5 ms) each time the reactor let go of it for a system call -- a convoy that cut
        REGISTER/s by a third while a big flush ran (issue 12) -- and one big turn would stall the
        REGISTERs queued behind it. The thread is left only the driver's work (C for SQLite; sending
        the statement text for MySQL). An AoR changed again after its slice is in the journal again:
        the next flush writes it."""
        use_domain = self.use_domain
        stored = self.location.stored
        encode = self.table.encode
        clock = self.clock
        out: list[Any] = []
        for start in range(0, len(aors), _SLICE):
            if start:
                yield deferLater(clock, 0, lambda: None)  # let the REGISTERs waiting meanwhile in
            rows, unwritable = _rows(stored(aors[start:start + _SLICE]), clock.seconds(), use_domain)
            out.extend(encode(rows))
            if unwritable:
                self.stats["db_unwritable_contacts"] += unwritable
                log.warn("usrloc: {n} contacts kept in memory only: a value is too long for its column of "
                         "{where}", n=unwritable, where=self.table.where)
        return out

    def sync(self) -> "Deferred[int]":
        """OpenSIPS MI ``ul_sync``: empty the table and write every contact in memory. Fires with the
        number written."""
        return self._lock.run(self._sync)

    @inlineCallbacks
    def _sync(self) -> Any:
        started = time.perf_counter()
        self.journal.take()
        waiting, self._waiting = self._waiting, []
        aors = list(self.location.aors())
        self._writing = waiting
        try:
            rows = yield self._encode(aors)
            yield self.runner(self.table.rewrite, rows)
            written = len(rows)
        except Exception as exc:
            self._writing = None
            self.journal.put_back(set(aors))
            self.stats["db_failures"] += 1
            _settle(waiting, Failure(exc))
            raise
        self._writing = None
        _settle(waiting, None)
        self.stats["db_syncs"] += 1
        log.info("usrloc: ul_sync rewrote {where} with {n} contacts of {aors} AoRs in {ms:.0f} ms",
                 where=self.table.where, n=written, aors=len(aors), ms=(time.perf_counter() - started) * 1000)
        return written

    def _locked(self, f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        return self._lock.run(lambda: self.runner(f, *args))


def _rows(snapshot: list[tuple[str, tuple[Binding, ...]]], now: float, use_domain: bool
          ) -> tuple[list[tuple[Any, ...]], int]:
    """The rows of this node's own live contacts in ``snapshot`` (a replicated contact owned by
    another node is that node's to persist), and how many did not fit the table's columns
    (:func:`~edgeproxy.usrloc.rows.fits`: left out, or one hostile REGISTER fails every flush)."""
    rows = [binding_row(b, use_domain) for _, bindings in snapshot for b in bindings
            if b.expires_at > now and b.owner is None]
    if all(map(fits, rows)):
        return rows, 0
    kept = [row for row in rows if fits(row)]
    return kept, len(rows) - len(kept)


def _settle(waiting: list["Deferred[None]"], outcome: Failure | None) -> None:
    """Tell the saves waiting on a transaction (:meth:`Persistence.committed`) how it ended."""
    for d in waiting:
        if outcome is None:
            d.callback(None)
        else:
            d.errback(outcome)


def _bindings_by_aor(rows: Iterable[Sequence[Any]], now: float, use_domain: bool
                     ) -> tuple[dict[str, list[Binding]], set[str], int]:
    """In the worker thread: the revivable bindings of ``rows`` (:data:`~edgeproxy.usrloc.rows.LOAD_COLUMNS`)
    per AoR, the AoRs that had rows not revived, and how many those were."""
    by_aor: dict[str, list[Binding]] = {}
    skipped_aors: set[str] = set()
    skipped = 0
    for row in rows:
        b = binding_from_values(row, now, use_domain)
        if b is None:
            skipped += 1
            username, domain = str(row[0] or ""), row[1]
            skipped_aors.add(f"{username}@{domain}" if use_domain and domain else username)
            continue
        bindings = by_aor.get(b.aor)
        if bindings is None:
            by_aor[b.aor] = [b]
        else:
            bindings.append(b)
    return by_aor, skipped_aors, skipped


