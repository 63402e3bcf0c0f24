"""The heartbeat state machine (one peer) and the seed/sync status, driven by a fake clock.

A small harness plays the driver: it calls ``tick`` at ``next_deadline`` on a ``task.Clock`` and
plays a peer that answers (after a short round trip), stays silent, or refuses connections.
Expected instants follow the OpenSIPS ``clusterer`` rules described in ``edgeproxy.cluster.liveness``.
"""

from __future__ import annotations

import math

import pytest
from twisted.internet import task

from edgeproxy.cluster import Effect, LinkState, NodeLiveness, SyncStatus

RTT = 0.01


class Harness:
    """Drives one NodeLiveness against a simulated peer on a task.Clock."""

    def __init__(self, retries: int = 3, interval: float = 4.0, timeout: float = 1.0,
                 node_timeout: float | None = None) -> None:
        self.clock = task.Clock()
        self.m = NodeLiveness(retries, ping_interval=interval, ping_timeout=timeout,
                              node_timeout=node_timeout)
        self.peer = "alive"  # alive | silent | refusing
        self.pings: list[tuple[float, Effect]] = []
        self.events: list[tuple[float, Effect]] = []
        self._timer = None

    def now(self) -> float:
        return self.clock.seconds()

    def start(self) -> None:
        self._schedule()

    def feed(self, method) -> None:
        self._run(method(self.now()))
        self._schedule()

    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if effect in (Effect.PING, Effect.RETRY):
                self.pings.append((round(self.now(), 6), effect))
                if self.peer == "alive":
                    self.clock.callLater(RTT, self.feed, self.m.pong_received)
                elif self.peer == "refusing":
                    self.clock.callLater(0.001, self.feed, self.m.send_failed)
            else:
                self.events.append((round(self.now(), 6), effect))

    def _schedule(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        delay = max(0.0, self.m.next_deadline() - self.now())
        self._timer = self.clock.callLater(delay, self.feed, self.m.tick)

    def advance_to(self, t: float) -> None:
        """Advance to ``t``, stopping at every scheduled call so each runs at its exact instant."""
        while True:
            calls = [c.getTime() for c in self.clock.getDelayedCalls()]
            nxt = min(calls, default=math.inf)
            if nxt > t:
                self.clock.advance(max(0.0, t - self.now()))
                return
            self.clock.advance(max(0.0, nxt - self.now()))

    def ping_times(self, since: float = -math.inf) -> list[float]:
        return [t for t, _ in self.pings if t >= since - 1e-9]


def approx(x: float) -> object:
    return pytest.approx(x, abs=2e-3)


def test_fresh_node_is_probed_at_once_and_up_on_pong() -> None:
    h = Harness()
    assert h.m.state is LinkState.PROBE and not h.m.up
    h.start()
    h.advance_to(0.05)
    assert h.pings == [(0.0, Effect.PING)]
    assert h.events == [(approx(RTT), Effect.UP)]
    assert h.m.up and h.m.state is LinkState.UP


def test_idle_up_link_is_pinged_every_interval() -> None:
    h = Harness()
    h.start()
    h.advance_to(13.0)
    # next ping ping_interval after the last pong: 0, 4.01, 8.02, 12.03
    assert h.ping_times() == [0.0, approx(4.01), approx(8.02), approx(12.03)]
    assert [e for _, e in h.events] == [Effect.UP]


def test_silent_node_goes_down_after_retries_each_one_ping_timeout_apart() -> None:
    h = Harness(retries=3)
    h.start()
    h.advance_to(5.0)  # up, pinged at 0 and 4.01
    h.peer = "silent"
    h.advance_to(20.0)
    first_unanswered = 8.02
    pings = h.ping_times(since=first_unanswered)
    # the regular ping, then 3 retries 1 s apart; down 1 s after the last retry
    assert pings[:4] == [approx(first_unanswered + k) for k in range(4)]
    assert [e for _, e in h.pings if _ >= first_unanswered][:4] == [Effect.PING] + [Effect.RETRY] * 3
    assert h.events[-1] == (approx(first_unanswered + 4), Effect.DOWN)
    assert not h.m.up


def test_up_verdict_holds_while_retrying() -> None:
    h = Harness(retries=3)
    h.start()
    h.advance_to(1.0)
    h.peer = "silent"
    h.advance_to(4.01 + 1.5)  # ping at 4.01 missed at 5.01, first retry out
    assert h.m.state is LinkState.RETRYING and h.m.up
    assert h.m.retries_left == 2


def test_zero_retries_means_down_at_the_first_missed_pong() -> None:
    h = Harness(retries=0)
    h.start()
    h.advance_to(1.0)
    h.peer = "silent"
    h.advance_to(6.0)
    assert h.events[-1] == (approx(4.01 + 1.0), Effect.DOWN)
    assert Effect.RETRY not in [e for _, e in h.pings]


def test_down_node_is_reprobed_every_node_timeout_and_comes_back() -> None:
    h = Harness(retries=1, interval=4.0, timeout=1.0, node_timeout=10.0)
    h.start()
    h.advance_to(1.0)
    h.peer = "silent"
    h.advance_to(8.0)
    # ping 4.01 missed at 5.01 -> retry, missed at 6.01 -> DOWN
    assert h.events[-1] == (approx(6.01), Effect.DOWN)
    assert h.m.state is LinkState.DOWN
    h.advance_to(15.5)
    assert h.ping_times(since=6.5) == [approx(15.01)]  # last ping 5.01 + node_timeout
    h.advance_to(30.0)
    # each re-probe spends the retry budget silently (not up, so no DOWN event again)
    assert [e for _, e in h.events] == [Effect.UP, Effect.DOWN]
    h.peer = "alive"
    before = h.ping_times()[-1]
    h.advance_to(before + 12.0)
    assert h.events[-1][1] is Effect.UP
    assert h.events[-1][0] == approx(h.ping_times(since=before + 0.5)[0] + RTT)


def test_refused_connection_spends_the_budget_once_per_ping_timeout() -> None:
    h = Harness(retries=3)
    h.start()
    h.advance_to(1.0)
    h.peer = "refusing"
    h.advance_to(9.0)
    # regular ping at 4.01 refused; retries at 5.01, 6.01, 7.01, the last refusal makes it down
    assert h.ping_times(since=4.0)[:4] == [approx(4.01 + k) for k in range(4)]
    assert h.events[-1] == (approx(7.011), Effect.DOWN)
    assert h.m.state is LinkState.DOWN


def test_state_after_a_send_failure_waits_a_ping_timeout() -> None:
    m = NodeLiveness(2, ping_interval=4, ping_timeout=1)
    assert m.tick(0.0) == [Effect.PING]
    assert m.send_failed(0.1) == []
    assert m.state is LinkState.SEND_FAILED and m.next_deadline() == 1.0
    assert m.tick(0.5) == []
    assert m.tick(1.0) == [Effect.RETRY]
    assert m.state is LinkState.RETRYING
    assert m.send_failed(1.1) == []       # one retry left
    assert m.tick(2.0) == [Effect.RETRY]
    assert m.send_failed(2.1) == []       # never up: no DOWN effect, but DOWN
    assert m.state is LinkState.DOWN and not m.up


def test_ping_from_a_down_node_triggers_an_immediate_probe_not_up() -> None:
    m = NodeLiveness(0, ping_interval=4, ping_timeout=1, node_timeout=60)
    assert m.tick(0.0) == [Effect.PING]
    assert m.tick(1.0) == []              # missed, 0 retries: DOWN (never up: no effect)
    assert m.state is LinkState.DOWN and m.next_deadline() == 60.0
    assert m.ping_received(5.0) == []
    assert not m.up and m.state is LinkState.PROBE and m.next_deadline() == -math.inf
    assert m.tick(5.0) == [Effect.PING]
    assert m.pong_received(5.01) == [Effect.UP]


def test_ping_from_an_up_node_changes_nothing() -> None:
    m = NodeLiveness(3, ping_interval=4, ping_timeout=1)
    m.tick(0.0)
    m.pong_received(0.01)
    deadline = m.next_deadline()
    assert m.ping_received(1.0) == [] and m.state is LinkState.UP and m.next_deadline() == deadline


def test_link_lost_while_idle_reprobes_at_once() -> None:
    m = NodeLiveness(3, ping_interval=4, ping_timeout=1)
    m.tick(0.0)
    m.pong_received(0.01)
    assert m.link_lost(1.0) == []
    assert m.state is LinkState.PROBE and m.up
    assert m.tick(1.0) == [Effect.PING]


def test_link_lost_with_a_ping_in_flight_counts_as_a_send_failure() -> None:
    m = NodeLiveness(1, ping_interval=4, ping_timeout=1)
    m.tick(0.0)
    m.pong_received(0.01)
    assert m.tick(4.01) == [Effect.PING]
    assert m.link_lost(4.2) == []
    assert m.state is LinkState.SEND_FAILED and m.up
    assert m.tick(5.01) == [Effect.RETRY]
    assert m.send_failed(5.02) == [Effect.DOWN]


def test_late_pong_still_counts() -> None:
    m = NodeLiveness(3, ping_interval=4, ping_timeout=1)
    m.tick(0.0)
    assert m.tick(1.0) == [Effect.RETRY]   # first ping unanswered in time
    assert m.pong_received(1.2) == [Effect.UP]  # the answer to the first ping, late
    assert m.state is LinkState.UP and m.retries_left is None


def test_pong_refills_the_retry_budget() -> None:
    m = NodeLiveness(2, ping_interval=4, ping_timeout=1)
    m.tick(0.0)
    m.pong_received(0.01)
    m.tick(4.01)
    assert m.tick(5.01) == [Effect.RETRY] and m.retries_left == 1
    m.pong_received(5.05)
    assert m.retries_left is None
    m.tick(9.05)
    assert m.tick(10.05) == [Effect.RETRY] and m.retries_left == 1


def test_unexpected_send_failure_is_ignored() -> None:
    m = NodeLiveness(3)
    m.tick(0.0)
    m.pong_received(0.01)
    assert m.send_failed(0.5) == [] and m.state is LinkState.UP


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        NodeLiveness(-1)
    with pytest.raises(ValueError):
        NodeLiveness(3, ping_interval=0)
    with pytest.raises(ValueError):
        NodeLiveness(3, ping_timeout=-1)
    with pytest.raises(ValueError):
        SyncStatus(True, -1, 0.0)


# -- seed / sync --------------------------------------------------------------------------------


def test_seed_falls_back_to_synced_after_the_interval() -> None:
    clock = task.Clock()
    s = SyncStatus(seed=True, fallback_interval=5, now=clock.seconds())
    fired: list[float] = []

    def wake() -> None:
        if s.tick(clock.seconds()):
            fired.append(clock.seconds())

    clock.callLater(s.next_deadline() - clock.seconds(), wake)
    clock.advance(4.999)
    assert not s.synced and fired == []
    clock.advance(0.001)
    assert s.synced and s.how == "fallback" and fired == [5.0]
    assert s.next_deadline() == math.inf


def test_seed_with_a_donor_syncs_from_it_before_the_fallback() -> None:
    s = SyncStatus(seed=True, fallback_interval=5, now=0.0)
    assert s.donor_synced(2, 1.0)
    assert s.synced and s.how == "donor 2"
    assert not s.tick(5.0)          # nothing left to fall back from
    assert not s.donor_synced(3, 6.0)


def test_non_seed_waits_for_a_donor_forever() -> None:
    s = SyncStatus(seed=False, fallback_interval=5, now=0.0)
    assert s.next_deadline() == math.inf
    assert not s.tick(1e9) and not s.synced
    assert s.donor_synced(1, 1e9) and s.how == "donor 1"


def test_restart_rearms_the_fallback() -> None:
    s = SyncStatus(seed=True, fallback_interval=5, now=0.0)
    s.tick(5.0)
    s.restart(100.0)
    assert not s.synced and s.next_deadline() == 105.0
    assert not s.tick(104.0) and s.tick(105.0)


def test_zero_fallback_interval_is_synced_at_the_first_tick() -> None:
    s = SyncStatus(seed=True, fallback_interval=0, now=3.0)
    assert s.tick(3.0) and s.synced
