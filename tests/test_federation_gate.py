"""The gate in front of the MongoDB driver (edgeproxy/federation/gate.py), as pure logic: a
``task.Clock`` for time and hand-fired Deferreds for the driver. What the store does with it against a
real server is in tests/test_federation_mongo.py."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from edgeproxy.federation import OperationGate, StoreError, StoreOverloaded, StoreTimeout


class Driver:
    """Records each operation handed to the driver: (name, budget, its Deferred, cancelled?)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, float, Deferred]] = []
        self.cancelled: list[str] = []

    def start(self, name: str):
        def start(remaining: float) -> Deferred:
            d: Deferred = Deferred(lambda _d: self.cancelled.append(name))
            self.started.append((name, remaining, d))
            return d
        return start

    def names(self) -> list[str]:
        return [name for name, _, _ in self.started]

    def finish(self, name: str, value: Any = "ok") -> None:
        [d] = [d for n, _, d in self.started if n == name]
        d.callback(value)


_outcomes: weakref.WeakKeyDictionary[Deferred, list[Any]] = weakref.WeakKeyDictionary()


def outcome(d: Deferred) -> Any:
    """What a Deferred fired with (a Failure's exception), or ``"pending"``; may be asked again."""
    out = _outcomes.get(d)
    if out is None:
        out = _outcomes[d] = []
        d.addBoth(lambda r: out.append(r.value if isinstance(r, Failure) else r))
    return out[0] if out else "pending"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_at_most_limit_in_the_driver_the_rest_wait_in_order(clock: Clock) -> None:
    gate, drv = OperationGate(clock, 2, 10), Driver()
    results = [gate.submit(n, 1.0, drv.start(n)) for n in ("a", "b", "c", "d")]
    assert drv.names() == ["a", "b"] and (gate.running, gate.waiting) == (2, 2)
    drv.finish("b", "B")
    assert outcome(results[1]) == "B" and drv.names() == ["a", "b", "c"]
    drv.finish("a", "A")
    assert drv.names() == ["a", "b", "c", "d"] and gate.waiting == 0
    drv.finish("c")
    drv.finish("d")
    assert gate.running == 0 and [outcome(r) for r in results] == ["A", "B", "ok", "ok"]


def test_full_queue_refuses_lookups_at_once_but_writes_still_wait(clock: Clock) -> None:
    gate, drv = OperationGate(clock, 1, 2), Driver()
    gate.submit("running", 1.0, drv.start("running"))
    waiting = [gate.submit(f"w{i}", 1.0, drv.start(f"w{i}")) for i in range(2)]
    refused = gate.submit("homes", 1.0, drv.start("refused"))
    err = outcome(refused)
    assert isinstance(err, StoreOverloaded) and err.unavailable and err.waiting == 2
    assert "2 operations already waiting" in str(err)
    write = gate.submit("upsert_home", 5.0, drv.start("write"), bounded=False)
    assert outcome(write) == "pending" and gate.waiting == 3 and gate.stats["overloaded"] == 1
    assert all(outcome(d) == "pending" for d in waiting)


def test_a_lookup_that_would_only_time_out_in_the_queue_is_refused_at_once(clock: Clock) -> None:
    """At the recent pace (0.3 s per operation, 2 slots), a fifth waiting lookup would need
    (4/2 + 1) x 0.3 = 0.9 s: still in time for a 1 s deadline; the sixth (5/2 + 1) x 0.3 = 1.05 s
    would not be, and is refused now rather than failing a second later."""
    gate, drv = OperationGate(clock, 2, 100), Driver()
    for name in ("a", "b"):
        gate.submit(name, 1.0, drv.start(name))
    clock.advance(0.3)
    drv.finish("a")
    drv.finish("b")
    assert gate.latency == pytest.approx(0.3) and gate.expected_wait() == pytest.approx(0.3)
    for name in ("c", "d"):
        gate.submit(name, 1.0, drv.start(name))
    queued = [gate.submit(f"q{i}", 1.0, drv.start(f"q{i}")) for i in range(5)]
    assert all(outcome(d) == "pending" for d in queued) and gate.expected_wait() == pytest.approx(1.05)
    late = gate.submit("homes", 1.0, drv.start("late"))
    err = outcome(late)
    assert isinstance(err, StoreOverloaded) and err.expected_wait == pytest.approx(1.05)
    assert "about 1.05 s" in str(err) and gate.stats["shed_early"] == 1
    # a write with a longer deadline still queues
    assert outcome(gate.submit("upsert_home", 5.0, drv.start("w"), bounded=False)) == "pending"


def test_deadline_counts_the_time_spent_waiting_and_the_driver_gets_what_is_left(clock: Clock) -> None:
    gate, drv = OperationGate(clock, 1, 10), Driver()
    gate.submit("first", 1.0, drv.start("first"))
    second = gate.submit("second", 1.0, drv.start("second"))
    clock.advance(0.3)
    drv.finish("first")
    [(_, budget, _)] = [s for s in drv.started if s[0] == "second"]
    assert budget == pytest.approx(0.7)
    clock.advance(0.7)  # second's deadline, counted from its submission
    err = outcome(second)
    assert isinstance(err, StoreTimeout) and err.where == "in the store" and err.unavailable


def test_queued_past_its_deadline_fails_then_is_never_sent(clock: Clock) -> None:
    gate, drv = OperationGate(clock, 1, 10), Driver()
    gate.submit("slow", 5.0, drv.start("slow"))
    queued = gate.submit("homes", 1.0, drv.start("late"))
    clock.advance(0.999)
    assert outcome(queued) == "pending"
    clock.advance(0.001)
    err = outcome(queued)
    assert isinstance(err, StoreTimeout) and err.where == "waiting for a free connection"
    assert "no answer within 1 s" in str(err) and gate.waiting == 0
    drv.finish("slow")
    assert drv.names() == ["slow"] and gate.stats["timeouts_queued"] == 1


def test_a_late_driver_is_not_cancelled_and_keeps_its_slot_until_it_ends(clock: Clock) -> None:
    """Cancelling PyMongo's task from outside is what wedged its pool: the caller is answered at the
    deadline, the driver ends on its own (its client-side timeout), only then is the slot reused."""
    gate, drv = OperationGate(clock, 1, 10), Driver()
    first = gate.submit("homes", 1.0, drv.start("first"))
    second = gate.submit("homes", 3.0, drv.start("second"))
    clock.advance(1.0)
    assert isinstance(outcome(first), StoreTimeout)
    assert drv.cancelled == [] and drv.names() == ["first"] and gate.running == 1
    clock.advance(0.2)
    drv.finish("first", "too late")  # the driver gave up (or answered) by itself
    assert drv.names() == ["first", "second"] and gate.stats["late_completions"] == 1
    drv.finish("second", "B")
    assert outcome(second) == "B"


def test_a_driver_that_never_returns_gives_its_slot_back_and_is_logged(clock: Clock) -> None:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        gate, drv = OperationGate(clock, 1, 10, abandon_after=10.0), Driver()
        stuck = gate.submit("homes", 1.0, drv.start("stuck"))
        after = gate.submit("upsert_home", 30.0, drv.start("after"), bounded=False)
        clock.advance(1.0)
        assert isinstance(outcome(stuck), StoreTimeout) and drv.names() == ["stuck"]
        clock.advance(10.0)
        assert drv.names() == ["stuck", "after"] and gate.stats["abandoned"] == 1
        assert any("still running" in e.get("log_format", "") for e in events)
        drv.finish("stuck")  # if it ever comes back, it does not free a second slot
        assert gate.running == 1 and gate.stats["late_completions"] == 1
        drv.finish("after", "A")
        assert outcome(after) == "A" and gate.running == 0
    finally:
        globalLogPublisher.removeObserver(events.append)


def test_failures_reach_the_caller_and_free_the_slot(clock: Clock) -> None:
    gate = OperationGate(clock, 1, 10)
    boom = StoreError("homes", RuntimeError("boom"), False)
    first = gate.submit("homes", 1.0, lambda remaining: fail(boom))
    assert outcome(first) is boom and gate.running == 0

    def raising(remaining: float) -> Deferred:
        raise RuntimeError("could not even start")

    assert isinstance(outcome(gate.submit("homes", 1.0, raising)), RuntimeError) and gate.running == 0


def test_drivers_completing_synchronously_drain_a_long_queue_without_recursion(clock: Clock) -> None:
    gate, drv = OperationGate(clock, 1, 5000), Driver()
    gate.submit("blocker", 1.0, drv.start("blocker"))
    queued = [gate.submit("homes", 1.0, lambda remaining, i=i: succeed(i)) for i in range(3000)]
    drv.finish("blocker")
    assert [outcome(d) for d in queued] == list(range(3000)) and gate.running == 0 and gate.waiting == 0


def test_a_caller_cancelling_while_queued_is_skipped(clock: Clock) -> None:
    gate, drv = OperationGate(clock, 1, 10), Driver()
    gate.submit("a", 1.0, drv.start("a"))
    b = gate.submit("b", 1.0, drv.start("b"))
    c = gate.submit("c", 1.0, drv.start("c"))
    b.cancel()
    assert isinstance(outcome(b), CancelledError) and gate.waiting == 1
    drv.finish("a")
    assert drv.names() == ["a", "c"]
    drv.finish("c", "C")
    assert outcome(c) == "C"


def test_concurrent_identical_reads_share_one_driver_operation(clock: Clock) -> None:
    gate, drv = OperationGate(clock, 4, 10), Driver()
    submit = lambda: gate.submit("homes", 1.0, drv.start("alice"))  # noqa: E731
    callers = [gate.coalesce(("homes", "alice"), submit, list) for _ in range(5)]
    other = gate.coalesce(("homes", "bob"), lambda: gate.submit("homes", 1.0, drv.start("bob")), list)
    assert drv.names() == ["alice", "bob"] and gate.stats["coalesced"] == 4
    drv.finish("alice", ["10.0.2.100"])
    values = [outcome(d) for d in callers]
    assert values == [["10.0.2.100"]] * 5
    assert len({id(v) for v in values}) == 5  # each caller has its own copy
    assert outcome(other) == "pending"
    # once answered, the next lookup of alice is a new round-trip
    gate.coalesce(("homes", "alice"), lambda: gate.submit("homes", 1.0, drv.start("alice again")), list)
    assert drv.names()[-1] == "alice again"


def test_coalesced_callers_share_a_failure_and_cancelling_one_leaves_the_others(clock: Clock) -> None:
    gate, drv = OperationGate(clock, 4, 10), Driver()
    submit = lambda: gate.submit("homes", 1.0, drv.start("alice"))  # noqa: E731
    a, b, c = (gate.coalesce("alice", submit) for _ in range(3))
    b.cancel()
    clock.advance(1.0)
    assert isinstance(outcome(a), StoreTimeout) and isinstance(outcome(c), StoreTimeout)
    assert isinstance(outcome(b), CancelledError) and drv.cancelled == []


def test_a_lookup_refused_as_overloaded_is_refused_to_every_coalesced_caller(clock: Clock) -> None:
    gate, drv = OperationGate(clock, 1, 0), Driver()
    gate.submit("blocker", 1.0, drv.start("blocker"))
    d = gate.coalesce("alice", lambda: gate.submit("homes", 1.0, drv.start("alice")))
    assert isinstance(outcome(d), StoreOverloaded)
    assert gate.coalesce("alice", lambda: succeed(["x"])) is not d  # nothing left in flight for alice


def test_bad_limits_are_refused(clock: Clock) -> None:
    with pytest.raises(ValueError):
        OperationGate(clock, 0, 10)
    with pytest.raises(ValueError):
        OperationGate(clock, 1, -1)
