"""Admission control in front of the MongoDB driver: a bounded number of operations in flight, a
bounded FIFO of the others, firm per-operation deadlines, and coalescing of identical reads.

Why this exists (measured with the federated benchmark, bench/README.md): PyMongo's asyncio
connection pool degrades sharply when more operations want a connection than it has idle ones. Every
checkout and check-in goes through one ``asyncio.Lock`` (shared with the ``maxConnecting`` condition),
each waiting checkout is an ``asyncio.wait_for`` around a ``Condition.wait`` (a task and a timer per
waiter), and new connections are opened two at a time. With a hundred checkouts waiting on a busy
event loop the pool handed out 150-200 connections per second while the server answered each ``find``
in 6 ms: checkouts waited 0.6-1.3 s, ran into the 1 s lookup budget, and every late lookup became a
failed call. Cancelling the driver's task from outside (what a ``Deferred.addTimeout`` does) while it
sits in that lock/condition code also left the pool unusable for minutes. So:

* at most ``limit`` operations are handed to the driver at a time — the pool is sized to match and
  pre-opened, so a checkout always finds an idle connection and never waits inside the driver;
* the others wait here, in a plain deque (no task, no timer per waiter beyond one ``callLater``);
  a lookup is refused at once with :class:`StoreOverloaded` when ``max_waiting`` are already waiting,
  or when the wait ahead of it, at the pace operations have been completing (a moving average of
  their time in the driver), would not leave it done before its deadline — it would only fail later
  and keep a call waiting for nothing;
* every operation has a deadline counted from its submission, queueing included. When it passes, the
  caller gets :class:`StoreTimeout` at once; a queued operation is dropped, a running one is *not*
  cancelled — the driver ends it under its own client-side timeout (set to the budget left at
  dispatch) and only then gives its slot back. A driver operation that outlives ``abandon_after`` is
  given up on (slot freed, logged) so a driver bug cannot eat the slots one by one;
* :meth:`OperationGate.coalesce` lets concurrent identical reads (the same AoR looked up by several
  calls at once) share one driver operation.

Everything here is plain Twisted (Deferreds and ``IReactorTime.callLater``), so it is unit-tested with
``twisted.internet.task.Clock``; the driver is whatever ``start(remaining_seconds)`` returns.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Hashable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..latency import LatencyHistogram

__all__ = ["OperationGate", "StoreError", "StoreTimeout", "StoreOverloaded"]

log = Logger(namespace="edgeproxy.federation.store")

#: Below this many seconds of budget left, an operation is not worth sending (it would time out in
#: the driver after a round-trip's worth of work on both sides).
MIN_BUDGET = 0.005


class StoreError(Exception):
    """A store operation failed.

    ``operation`` names it (``homes``, ``upsert_home`` …); ``unavailable`` is True when the store could
    not be reached or did not answer in time (no server selected, connection refused or reset,
    timeout, too many operations waiting) — the "store is down or overloaded" case — and False when
    MongoDB answered with an error. ``cause`` is the underlying exception. A node maps a failed global
    lookup to ``LookupResult.ERROR`` (-3), never to "not found".
    """

    def __init__(self, operation: str, cause: BaseException, unavailable: bool) -> None:
        self.operation = operation
        self.cause = cause
        self.unavailable = unavailable
        what = "store unavailable" if unavailable else "store error"
        text = " ".join(str(cause).split())[:300] or type(cause).__name__
        super().__init__(f"{operation}: {what}: {text}")


class StoreTimeout(StoreError):
    """The operation did not complete within its deadline (time spent queued here included)."""

    def __init__(self, operation: str, seconds: float, where: str) -> None:
        super().__init__(operation, TimeoutError(f"no answer within {seconds:g} s ({where})"), True)
        self.seconds = seconds
        self.where = where


class StoreOverloaded(StoreError):
    """Refused without being tried: ``max_waiting`` operations were already waiting for a slot, or the
    wait ahead (``expected_wait`` seconds at the recent pace) would outlast the operation's deadline."""

    def __init__(self, operation: str, waiting: int, expected_wait: float | None = None) -> None:
        text = f"{waiting} operations already waiting for the store"
        if expected_wait is not None:
            text += f" (about {expected_wait:.2f} s)"
        super().__init__(operation, OverflowError(text), True)
        self.waiting = waiting
        self.expected_wait = expected_wait


class _Op:
    """One submitted operation: the caller's Deferred, its deadline timer, its place in the gate."""

    __slots__ = ("operation", "start", "timeout", "deadline", "result", "timer", "state", "abandon_timer",
                 "dispatched_at")

    def __init__(self, operation: str, start: Callable[[float], "Deferred[Any]"], timeout: float,
                 deadline: float, on_cancel: Callable[["_Op"], None]) -> None:
        self.operation = operation
        self.start = start
        self.timeout = timeout
        self.deadline = deadline
        # A caller cancelling its Deferred gets CancelledError (Deferred's default); a queued operation
        # is then skipped when its turn comes, a running one finishes in the driver untouched.
        self.result: Deferred[Any] = Deferred(lambda _d: on_cancel(self))
        self.timer: Any = None
        self.abandon_timer: Any = None
        self.dispatched_at = 0.0
        self.state = "new"  # new -> queued -> running -> done; queued -> dropped; running -> abandoned


class OperationGate:
    """At most ``limit`` operations in the driver; FIFO waiting; deadlines; coalescing.

    ``clock`` is an ``IReactorTime`` (the reactor; a ``task.Clock`` in tests). ``max_waiting`` bounds the
    queue for *bounded* submissions (lookups); unbounded ones (the publisher's writes, which it bounds
    itself and retries) always queue. ``abandon_after`` (seconds past an operation's deadline) is when
    a driver operation that never ended stops holding its slot.

    Invariant: after every call into the gate, either a slot is free and nothing is waiting, or all
    ``limit`` slots are taken.
    """

    #: weight of the newest sample in the moving average of the time operations spend in the driver
    LATENCY_WEIGHT = 0.1

    def __init__(self, clock: Any, limit: int, max_waiting: int, *, abandon_after: float = 10.0) -> None:
        if limit < 1 or max_waiting < 0:
            raise ValueError("limit must be >= 1 and max_waiting >= 0")
        self.clock = clock
        self.limit = limit
        self.max_waiting = max_waiting
        self.abandon_after = abandon_after
        self.running = 0
        self.waiting = 0  # operations in the queue still waiting (dropped/cancelled ones excluded)
        self._queue: deque[_Op] = deque()
        self._draining = False
        self._coalescing: dict[Hashable, list[Deferred[Any]]] = {}
        self.latency: float | None = None  # moving average of dispatch -> completion, seconds
        self.histogram = LatencyHistogram()  # every operation's dispatch -> completion (Prometheus)
        self.stats: dict[str, int] = {
            "submitted": 0, "dispatched": 0, "queued": 0, "max_waiting_seen": 0, "max_running": 0,
            "coalesced": 0, "timeouts_queued": 0, "timeouts_running": 0, "overloaded": 0, "shed_early": 0,
            "failed": 0,
            "late_completions": 0, "abandoned": 0,
        }

    # -- submission ----------------------------------------------------------------------------------
    def submit(self, operation: str, timeout: float, start: Callable[[float], "Deferred[Any]"], *,
               bounded: bool = True) -> "Deferred[Any]":
        """Run ``start(remaining_seconds)`` (which returns the driver's Deferred) when a slot is free,
        within ``timeout`` seconds from now; the returned Deferred fires with its result, or fails with
        :class:`StoreTimeout` at the deadline, or at once with :class:`StoreOverloaded` when the queue
        is full (``bounded`` submissions only)."""
        self.stats["submitted"] += 1
        now = self.clock.seconds()
        op = _Op(operation, start, timeout, now + timeout, self._cancelled)
        if self.running < self.limit and not self.waiting:
            self._dispatch(op, now)
            return op.result
        if bounded:
            expected = self.expected_wait()
            if self.waiting >= self.max_waiting or (expected is not None and expected >= timeout):
                self.stats["overloaded"] += 1
                if self.waiting < self.max_waiting:
                    self.stats["shed_early"] += 1
                op.state = "dropped"
                op.result.errback(StoreOverloaded(operation, self.waiting, expected))
                return op.result
        op.state = "queued"
        self.stats["queued"] += 1
        self.waiting += 1
        self.stats["max_waiting_seen"] = max(self.stats["max_waiting_seen"], self.waiting)
        self._queue.append(op)
        op.timer = self.clock.callLater(timeout, self._expire, op)
        return op.result

    def expected_wait(self) -> float | None:
        """Seconds a new operation would take from now to completion with every slot busy: the queue
        ahead of it drained ``limit`` at a time, then its own turn, at the recent pace; None before
        any operation has completed."""
        if self.latency is None:
            return None
        return (self.waiting / self.limit + 1.0) * self.latency

    def coalesce(self, key: Hashable, submit: Callable[[], "Deferred[Any]"],
                 copy: Callable[[Any], Any] = lambda value: value) -> "Deferred[Any]":
        """Share one in-flight operation among concurrent callers asking the same thing (``key``):
        the first caller's ``submit()`` runs, later callers wait for its outcome. Each caller gets its
        own Deferred (cancelling one does not disturb the others) and its own ``copy(result)``. A caller
        that joins gets the first caller's deadline, which is never later than its own would be."""
        waiters = self._coalescing.get(key)
        mine: Deferred[Any] = Deferred()
        if waiters is not None:
            self.stats["coalesced"] += 1
            waiters.append(mine)
            return mine
        self._coalescing[key] = [mine]
        submit().addBoth(self._fan_out, key, copy)
        return mine

    def _fan_out(self, result: Any, key: Hashable, copy: Callable[[Any], Any]) -> None:
        for d in self._coalescing.pop(key, []):
            if d.called:
                continue
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(copy(result))
        return None  # handed to every waiter: the shared Deferred ends here, handled

    # -- slots ---------------------------------------------------------------------------------------
    def _dispatch(self, op: _Op, now: float) -> None:
        remaining = op.deadline - now
        if remaining < MIN_BUDGET:
            self._time_out(op, "queued")
            return
        op.state = "running"
        op.dispatched_at = now
        self.running += 1
        self.stats["dispatched"] += 1
        self.stats["max_running"] = max(self.stats["max_running"], self.running)
        if op.timer is None:
            op.timer = self.clock.callLater(remaining, self._expire, op)
        op.abandon_timer = self.clock.callLater(remaining + self.abandon_after, self._abandon, op)
        try:
            driver = op.start(remaining)
        except Exception:
            self._finished(Failure(), op)
            return
        driver.addBoth(self._finished, op)

    def _finished(self, result: Any, op: _Op) -> None:
        if op.state != "running":  # abandoned meanwhile: its slot was already given back
            self.stats["late_completions"] += 1
            return None
        op.state = "done"
        elapsed = self.clock.seconds() - op.dispatched_at
        if self.latency is None:
            self.latency = elapsed
        else:
            self.latency += self.LATENCY_WEIGHT * (elapsed - self.latency)
        self.histogram.observe(elapsed)
        for timer in (op.timer, op.abandon_timer):
            if timer is not None and timer.active():
                timer.cancel()
        op.timer = op.abandon_timer = None
        self.running -= 1
        if isinstance(result, Failure):
            self.stats["failed"] += 1
        if op.result.called:  # the caller already got StoreTimeout (or cancelled)
            self.stats["late_completions"] += 1
        elif isinstance(result, Failure):
            op.result.errback(result)
        else:
            op.result.callback(result)
        self._next()
        return None  # the outcome went to the caller's Deferred

    def _next(self) -> None:
        """Hand free slots to waiting operations, oldest first. Not re-entered: a driver that completes
        synchronously inside ``_dispatch`` frees its slot and the loop below goes on."""
        if self._draining:
            return
        self._draining = True
        try:
            queue = self._queue
            while queue and self.running < self.limit:
                op = queue.popleft()
                if op.state != "queued":
                    continue  # timed out or cancelled while waiting
                self.waiting -= 1
                op.state = "new"
                self._dispatch(op, self.clock.seconds())
        finally:
            self._draining = False

    # -- deadlines, cancellation -------------------------------------------------------------------
    def _expire(self, op: _Op) -> None:
        op.timer = None
        if op.state in ("queued", "running"):
            self._time_out(op, op.state)

    def _time_out(self, op: _Op, where: str) -> None:
        self.stats["timeouts_queued" if where == "queued" else "timeouts_running"] += 1
        if op.state == "queued":
            self.waiting -= 1
        if op.state in ("new", "queued"):
            op.state = "dropped"
            if op.timer is not None and op.timer.active():
                op.timer.cancel()
            op.timer = None
        if not op.result.called:
            text = "waiting for a free connection" if where == "queued" else "in the store"
            op.result.errback(StoreTimeout(op.operation, op.timeout, text))

    def _cancelled(self, op: _Op) -> None:
        if op.state == "queued":
            op.state = "dropped"
            self.waiting -= 1
        if op.timer is not None and op.timer.active():
            op.timer.cancel()  # a running operation keeps its slot until the driver ends it
        op.timer = None

    def _abandon(self, op: _Op) -> None:
        op.abandon_timer = None
        if op.state != "running":
            return
        op.state = "abandoned"
        self.running -= 1
        self.stats["abandoned"] += 1
        log.error("federation store: {op} still running {s:g} s past its deadline; its slot is given back "
                  "(a driver operation that never returns: the store connection may be stuck)",
                  op=op.operation, s=self.abandon_after)
        if not op.result.called:
            op.result.errback(StoreTimeout(op.operation, op.timeout, "in the store"))
        self._next()
