"""Publishing this node's AoRs to the shared store (OpenSIPS ``federation-cachedb`` metadata, made
crash-proof).

:class:`FederationPublisher` is a :class:`~edgeproxy.location.LocationListener`. Like OpenSIPS
(reference §1.3) it writes the store when an AoR gets its first binding on this node (upsert) and when
it loses its last one (delete) — whatever the cause: unregister, ``Contact: *``, expiry, a closed flow.
Beyond OpenSIPS:

* **refresh** — every ``refresh_interval`` it re-upserts all of this node's live AoRs (in bulk writes
  of ``batch_size``), moving their ``expires_at`` ``record_ttl`` ahead, so the TTL index never expires a
  live record but does remove the records of a node that died;
* **start-up cleanup** — before publishing anything, it deletes the records whose ``home_ip`` is this
  node's address: leftovers of a previous run whose in-memory bindings are gone;
* **outages** — a failed write does not fail the registration (the location service has already
  changed; listeners cannot veto). The publisher marks itself *down*, stops issuing single writes
  (they would only wait for the server-selection timeout), remembers which AoRs changed, and retries
  with backoff (``retry_interval`` doubling up to ``max_retry_interval``). The first retry that gets
  through re-publishes every live AoR and deletes the records of AoRs that went meanwhile — nothing
  is lost and nobody has to re-register;
* **clean shutdown** — :meth:`stop` deletes this node's records (its bindings die with the process).

Theory of operation. ``_live`` mirrors the location's AoRs (seeded from ``location.aors()``, then kept
by the created/emptied events, which strictly alternate per AoR). The store is only ever told the
*current* state of an AoR (upsert if in ``_live``, else delete), never replayed events. Writes for one
AoR never overlap: an AoR with a write in flight is in ``_inflight``; an event for it meanwhile only
marks it ``_changed``, and when the write completes the AoR's then-current state is written again.
(Two concurrent writes of one ``_id`` could be applied in either order by MongoDB, leaving a deleted
AoR published.) AoRs whose store state may be wrong because a write failed or was suppressed are kept
in ``_missed``. A *sync* — the start-up pass, each refresh and each retry — writes deletes for the
missed AoRs that are not live and upserts for every live AoR not in flight; after a successful sync
the publisher is up again and writes what was missed meanwhile.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..location.service import LocationService

__all__ = ["FederationPublisher"]

log = Logger(namespace="edgeproxy.federation.publisher")


class FederationPublisher:
    """Keeps the store's records of this node (``home_ip == sip_addr``) equal to its live AoRs.

    ``location`` is the node's :class:`~edgeproxy.location.LocationService`; ``store`` a
    :class:`~edgeproxy.federation.MongoStore` (or anything with ``upsert_home``, ``delete_home``,
    ``sync_homes``, ``delete_node_records`` and ``ensure_indexes``); ``sip_addr`` this node's address as
    other nodes reach it (OpenSIPS clusterer ``sip_addr``: bare ``host[:port]``); ``clock`` an
    ``IReactorTime`` (the reactor; a ``task.Clock`` in tests) whose ``seconds()`` is wall-clock epoch
    time, since records carry absolute dates. ``record_ttl`` defaults to three refresh intervals.
    """

    def __init__(self, location: LocationService, store: Any, sip_addr: str, clock: Any, *,
                 refresh_interval: float = 120.0, record_ttl: float | None = None, retry_interval: float = 2.0,
                 max_retry_interval: float = 30.0, batch_size: int = 1000, cleanup_on_start: bool = True,
                 unpublish_on_stop: bool = True) -> None:
        if not sip_addr or sip_addr.startswith(("sip:", "sips:")):
            raise ValueError(f"sip_addr must be a bare host[:port] (OpenSIPS clusterer sip_addr), got {sip_addr!r}")
        if refresh_interval <= 0 or retry_interval <= 0 or batch_size < 1:
            raise ValueError("refresh_interval and retry_interval must be > 0 and batch_size >= 1")
        ttl = 3 * refresh_interval if record_ttl is None else record_ttl
        if ttl <= refresh_interval:
            raise ValueError(f"record_ttl ({ttl:g} s) must be longer than refresh_interval ({refresh_interval:g} s)")
        self.location = location
        self.store = store
        self.sip_addr = sip_addr
        self.clock = clock
        self.refresh_interval = float(refresh_interval)
        self.record_ttl = float(ttl)
        self.retry_interval = float(retry_interval)
        self.max_retry_interval = float(min(max_retry_interval, refresh_interval))
        self.batch_size = int(batch_size)
        self.cleanup_on_start = cleanup_on_start
        self.unpublish_on_stop = unpublish_on_stop

        self.running = False
        self._live: set[str] = set()
        self._inflight: set[str] = set()
        self._changed: set[str] = set()
        self._missed: set[str] = set()
        self._ready = False  # start-up cleanup done
        self._down = False  # a write failed and no sync has succeeded since
        self._syncing: Deferred | None = None
        self._sync_running = False  # set before _run_sync starts (it may complete synchronously)
        self._timer: Any = None
        self._failures = 0
        self._waiters: list[Deferred] = []
        self.stats = {"upserts": 0, "deletes": 0, "syncs": 0, "synced_records": 0, "failures": 0,
                      "cleaned_on_start": 0}

    # -- state ---------------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """False from a failed write until a sync gets through again (and before the first one)."""
        return self.running and self._ready and not self._down

    def status(self) -> dict[str, Any]:
        """A snapshot for operators: state, counts and the statistics."""
        return {"sip_addr": self.sip_addr, "running": self.running, "ready": self._ready, "down": self._down,
                "live_aors": len(self._live), "in_flight": len(self._inflight), "missed": len(self._missed),
                "next_sync_in": (self._timer.getTime() - self.clock.seconds()) if self._timer is not None else None,
                **self.stats}

    def settled(self) -> "Deferred[None]":
        """Fires once no write is in flight and no sync is running (at once if so now). For orderly
        shutdown and tests; a retry scheduled for later does not count as running."""
        if not self._inflight and not self._sync_running:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def _maybe_settled(self) -> None:
        if self._waiters and not self._inflight and not self._sync_running:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "Deferred[bool]":
        """Subscribe to the location and run the first sync: create the indexes, delete this node's
        leftovers (``cleanup_on_start``), publish the current AoRs. Fires True when that got through,
        False when the store was unreachable (the publisher then keeps retrying); never fails."""
        if self.running:
            return succeed(self.available)
        self.running = True
        self._live = set(self.location.aors())
        self.location.subscribe(self)
        return self.sync()

    def stop(self) -> "Deferred[None]":
        """Stop listening and retrying; with ``unpublish_on_stop``, delete this node's records (its
        in-memory bindings die with it) unless the store is known to be down. Never fails."""
        if not self.running:
            return succeed(None)
        self.running = False
        self.location.unsubscribe(self)
        self._cancel_timer()
        if not (self.unpublish_on_stop and self._ready and not self._down):
            return succeed(None)
        # Let writes and a sync in progress finish first, or their upserts could land after the delete.
        d = self.settled()
        d.addCallback(lambda _: self.store.delete_node_records(self.sip_addr))

        def done(result: Any) -> None:
            if isinstance(result, Failure):
                log.warn("federation: could not delete this node's records on stop: {err}",
                         err=result.getErrorMessage())
            else:
                log.info("federation: deleted {n} records of {addr} on stop", n=result, addr=self.sip_addr)

        return d.addBoth(done)

    # -- LocationListener ------------------------------------------------------------------------------
    def aor_created(self, aor: str) -> None:
        self._live.add(aor)
        self._write(aor)

    def aor_emptied(self, aor: str) -> None:
        self._live.discard(aor)
        self._write(aor)

    # -- single writes -------------------------------------------------------------------------------
    def _write(self, aor: str) -> None:
        """Bring the store's record of ``aor`` to its current state, now or as soon as possible."""
        if not self.running:
            return
        if aor in self._inflight:
            self._changed.add(aor)
            return
        if not self._ready or self._down:
            self._missed.add(aor)
            return
        self._inflight.add(aor)
        if aor in self._live:
            self.stats["upserts"] += 1
            d = self.store.upsert_home(aor, self.sip_addr, self.clock.seconds(), self.record_ttl)
        else:
            self.stats["deletes"] += 1
            d = self.store.delete_home(aor, self.sip_addr)
        d.addCallbacks(lambda _: self._done([aor], None), lambda f: self._done([aor], f))

    def _done(self, aors: list[str], failure: Failure | None) -> None:
        """Writes of ``aors`` completed (``failure`` None) or failed; write again what changed."""
        inflight = self._inflight
        for aor in aors:
            inflight.discard(aor)
        if failure is not None:
            self._missed.update(aors)
            self._failed(failure)
        changed = self._changed
        if changed:
            for aor in aors:
                if aor in changed:
                    changed.discard(aor)
                    self._write(aor)
        self._maybe_settled()

    def _failed(self, failure: Failure) -> None:
        self._mark_down(failure)
        if self.running and not self._sync_running:
            self._schedule(self._backoff())

    def _mark_down(self, failure: Failure) -> None:
        self.stats["failures"] += 1
        if not self._down:
            self._down = True
            log.warn("federation store unavailable ({err}); registrations go on locally, this node's AoRs "
                     "will be re-published when it answers", err=failure.getErrorMessage())

    # -- syncs ---------------------------------------------------------------------------------------
    def sync(self) -> "Deferred[bool]":
        """Run a sync now (the refresh/retry timer does this on its own): start-up cleanup if not done,
        deletes for AoRs that went while writes were failing, upserts for every live AoR. Fires True on
        success, False on failure (then a retry is scheduled); never fails. A sync already running is
        joined rather than doubled."""
        if self._syncing is not None:
            joined: Deferred[bool] = Deferred()

            def join(ok: bool) -> bool:
                joined.callback(ok)
                return ok

            self._syncing.addBoth(join)
            return joined
        if not self.running:
            return succeed(False)
        self._cancel_timer()
        self.stats["syncs"] += 1
        self._sync_running = True
        d = self._syncing = self._run_sync()
        d.addBoth(self._synced)
        return d

    @inlineCallbacks
    def _run_sync(self) -> Any:
        store = self.store
        # every sync, not once: a store that came back empty (restarted without its data) has lost
        # its TTL and aor indexes too; createIndexes on existing ones is a no-op
        yield store.ensure_indexes()
        if not self._ready:
            if self.cleanup_on_start:
                n = yield store.delete_node_records(self.sip_addr)
                self.stats["cleaned_on_start"] += n
                if n:
                    log.info("federation: deleted {n} leftover records of {addr}", n=n, addr=self.sip_addr)
            self._ready = True
        live, inflight, missed = self._live, self._inflight, self._missed
        absent = [a for a in missed if a not in live and a not in inflight]
        present = list(live)
        size = self.batch_size
        start = 0
        while start < len(present) or absent:
            chunk = present[start:start + max(0, size - len(absent))]
            start += len(chunk)
            ups = [a for a in chunk if a in live and a not in inflight]
            dels = [a for a in absent if a not in live and a not in inflight]
            absent = []
            batch = ups + dels
            if not batch:
                continue
            inflight.update(batch)
            missed.difference_update(batch)
            try:
                yield store.sync_homes(ups, dels, self.sip_addr, self.clock.seconds(), self.record_ttl)
            except Exception:
                self._done(batch, Failure())
                return False
            self.stats["synced_records"] += len(batch)
            self._done(batch, None)
        return True

    def _synced(self, result: Any) -> bool:
        try:
            return self._after_sync(result)
        finally:
            self._maybe_settled()

    def _after_sync(self, result: Any) -> bool:
        self._syncing = None
        self._sync_running = False
        if isinstance(result, Failure):  # the start-up cleanup failed
            self._mark_down(result)
            ok = False
        else:
            ok = bool(result)
        if not self.running:
            return ok
        if ok:
            self._failures = 0
            if self._down:
                self._down = False
                log.info("federation store answers again; {n} AoRs of {addr} re-published",
                         n=len(self._live), addr=self.sip_addr)
            missed, self._missed = self._missed, set()
            for aor in missed:
                self._write(aor)
            if not self._down:
                self._schedule(self.refresh_interval)
                return ok
        self._schedule(self._backoff())
        return ok

    def _backoff(self) -> float:
        delay = self.retry_interval * (2 ** min(self._failures, 16))
        self._failures += 1
        return min(delay, self.max_retry_interval)

    # -- timer ---------------------------------------------------------------------------------------
    def _schedule(self, delay: float) -> None:
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() <= self.clock.seconds() + delay:
                return
            timer.cancel()
        self._timer = self.clock.callLater(delay, self._tick)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _tick(self) -> None:
        self._timer = None
        if self.running:
            self.sync()
