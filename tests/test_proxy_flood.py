"""Flood detection per source (OpenSIPS pike): the detector on plain numbers, then the node's
``check_all`` drop and ``pike_check_req()`` with a real Node on a ``task.Clock``."""

from __future__ import annotations

import pytest

from edgeproxy.proxy.flood import FloodDetector, FloodSettings

A, B = "203.0.113.5", "198.51.100.7"


def detector(**kw) -> FloodDetector:
    kw.setdefault("sampling_time_unit", 2.0)
    kw.setdefault("reqs_density_per_unit", 10)
    return FloodDetector(FloodSettings(**kw))


def test_under_the_density_everything_passes() -> None:
    d = detector()
    assert all(d.check(A, 0.1 * i) for i in range(10))  # 10 in one unit: at the limit, not over it


def test_over_the_density_the_source_is_blocked_and_others_are_not() -> None:
    d = detector()
    verdicts = [d.check(A, 0.01 * i) for i in range(15)]
    assert verdicts == [True] * 10 + [False] * 5
    assert d.check(B, 0.2) and d.blocked() == [A]


def test_a_burst_straddling_two_units_is_seen_whole() -> None:
    d = detector()
    for i in range(8):
        assert d.check(A, 1.9 + i * 0.001)  # 8 at the end of unit 0
    # 8 more at the start of unit 1: the window still holds most of unit 0's 8
    assert not all(d.check(A, 2.0 + i * 0.001) for i in range(8))


def test_a_source_that_keeps_flooding_stays_blocked_and_one_that_stops_is_let_back() -> None:
    d = detector()
    for i in range(30):
        d.check(A, i * 0.05)  # 20 requests/s for 1.5 s
    assert not d.check(A, 1.5)
    assert not d.check(A, 2.1)  # a new unit, but the window still holds most of the last one
    assert d.check(A, 8.0)  # quiet for two units: back
    assert d.blocked() == []


def test_state_changes_are_reported_once_per_episode() -> None:
    d = detector(reqs_density_per_unit=2)
    changes = [d.check_and_report(A, 0.01 * i)[1] for i in range(6)]
    assert changes == [None, None, "blocked", None, None, None]
    assert d.check_and_report(A, 10.0) == (True, "unblocked") and d.blocked_events == 1


def test_idle_sources_are_forgotten_and_the_table_is_bounded() -> None:
    d = detector(remove_latency=5.0, max_tracked=3)
    for i, ip in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.3"]):
        d.check(ip, float(i))
    d.check("10.0.0.4", 3.0)  # full: the least recently seen goes
    assert len(d) == 3
    d.check("10.0.0.5", 20.0)  # everything else idle > 5 s: forgotten
    assert len(d) == 1


def test_spoofed_sources_cannot_grow_the_table() -> None:
    d = detector(max_tracked=100)
    for i in range(10_000):
        d.check(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", i * 0.0001)
    assert len(d) == 100


def test_a_clock_going_backwards_neither_crashes_nor_blocks() -> None:
    d = detector()
    d.check(A, 100.0)
    assert d.check(A, 50.0) and d.check(A, 50.5)


def test_trusted_sources_are_named() -> None:
    d = detector(trusted=("10.0.1.50",))
    assert d.is_trusted("10.0.1.50") and not d.is_trusted(A)


@pytest.mark.parametrize("kw", [dict(sampling_time_unit=0), dict(reqs_density_per_unit=0), dict(remove_latency=-1),
                                dict(max_tracked=0)])
def test_settings_refuse_nonsense(kw) -> None:
    with pytest.raises(ValueError):
        FloodSettings(**kw)


# -- in the node: pike_check_req() from a route ---------------------------------------------------------

def test_a_route_calling_pike_check_req_and_drop_answers_the_flooder_nothing_and_keeps_no_state() -> None:
    from support.proxy import BOB_FLOW, World, module, sip

    def route(msg):
        if not msg.pike_check_req():
            msg.drop()
            return
        msg.sl_send_reply(200, "OK")

    w = World(routes=module(route), flood=FloodDetector(FloodSettings(sampling_time_unit=1.0, reqs_density_per_unit=3)))
    answered = []
    for i in range(6):
        sent = w.receive(sip("MESSAGE sip:bob@example.com SIP/2.0",
                             f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKflood{i}", "Max-Forwards: 70",
                             "From: <sip:x@example.com>;tag=f", "To: <sip:bob@example.com>", f"Call-ID: flood-{i}",
                             "CSeq: 1 MESSAGE"), BOB_FLOW)
        answered.append([s.message.status for s in sent if s.is_response()])
    assert answered == [[200]] * 3 + [[]] * 3
    assert w.node.stats["dropped"] == 3
    w.assert_drained()  # the dropped requests' server transactions are gone, not waiting forever


def test_a_dropped_invite_leaves_no_transaction_behind() -> None:
    from support.proxy import BOB_FLOW, World, invite, module

    def route(msg):
        msg.drop()

    w = World(routes=module(route))
    sent = w.receive(invite(), BOB_FLOW)
    assert sent == []  # not even a 100 Trying: it waits for the route, which dropped the request
    assert len(w.node.table) == 0 and w.node.stats["dropped"] == 1
    w.assert_drained()
