"""The one reactor timer at the earliest deadline (``edgeproxy.deadline``), used by the
proxy's transactions and by the dialogs' lifetimes and pings, on a ``task.Clock``."""

from __future__ import annotations

from twisted.internet.task import Clock

from edgeproxy.deadline import EarliestDeadline


def timer() -> tuple[Clock, EarliestDeadline, list[float]]:
    clock = Clock()
    fired: list[float] = []
    return clock, EarliestDeadline(clock, lambda: fired.append(clock.seconds())), fired


def test_an_earlier_deadline_moves_the_one_call_a_later_one_leaves_it() -> None:
    clock, t, fired = timer()
    t.arm(10.0)
    t.arm(20.0)  # later: the call stays at 10
    assert len(clock.getDelayedCalls()) == 1 and t.armed == 10.0
    t.arm(4.0)  # earlier: moved
    assert len(clock.getDelayedCalls()) == 1 and t.armed == 4.0
    clock.advance(3.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [4.0] and t.armed is None and clock.getDelayedCalls() == []  # once; the owner re-arms


def test_none_disarms_a_past_deadline_fires_at_once_and_stop_cancels() -> None:
    clock, t, fired = timer()
    t.arm(5.0)
    t.arm(None)
    assert t.armed is None and clock.getDelayedCalls() == []
    clock.advance(10)
    t.arm(3.0)  # already past
    clock.advance(0)
    assert fired == [10.0]
    t.arm(12.0)
    t.stop()
    t.stop()  # twice is harmless
    clock.advance(5)
    assert fired == [10.0] and clock.getDelayedCalls() == []


def test_the_owner_may_arm_again_from_inside_fire() -> None:
    clock = Clock()
    fired: list[float] = []

    def fire() -> None:
        fired.append(clock.seconds())
        if len(fired) < 3:
            t.arm(clock.seconds() + 1)

    t = EarliestDeadline(clock, fire)
    t.arm(1.0)
    clock.pump([1, 1, 1, 1])
    assert fired == [1.0, 2.0, 3.0] and t.armed is None
