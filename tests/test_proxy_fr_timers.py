"""Per-transaction timers (OpenSIPS ``$T_fr_timeout`` / ``$T_fr_inv_timeout``, Kamailio ``t_set_fr``)
and what a failure route sees of a timed-out branch (``t_check_status``, ``t_local_replied``).

A real :class:`~edgeproxy.node.Node` on a ``task.Clock`` (``tests/support/proxy.py``); every
assertion is on what would be on the wire and when. The node's own timers are the defaults (Timer B
32 s, Timer C 120 s), so a branch that ends at 2 s ended by the route's timer, not by theirs.
"""

from __future__ import annotations

from typing import Any, Callable

from support.proxy import (
    ALICE_FLOW,
    BOB,
    BOB_FLOW,
    LOCAL_UDP,
    VOICEMAIL,
    World,
    answer,
    invite,
    module,
    only,
    requests,
    responses,
    sip,
)

from edgeproxy.routing import LookupResult
from edgeproxy.routing.loader import RouteModule
from edgeproxy.sip.endpoint import Flow
from edgeproxy.transaction import TimerSettings

VM_FLOW = Flow(LOCAL_UDP, VOICEMAIL)
VM_URI = "sip:bob@192.0.2.30:5060"


def timed_routes(before_relay: Callable[[Any], None], failure: Callable[[Any], None] | None) -> RouteModule:
    """Bob's calls go to his binding; ``before_relay`` sets the timers, ``failure`` is armed."""

    async def request_route(msg):
        if msg.is_method("REGISTER"):
            await msg.save("location")
            return
        if await msg.lookup("location") != LookupResult.FOUND:
            msg.sl_send_reply(404)
            return
        before_relay(msg)
        if failure is not None:
            msg.t_on_failure(failure)
        msg.t_relay()

    return module(request_route)


def seen_by(failure_log: list[dict[str, Any]], then: Callable[[Any], None] | None = None) -> Callable[[Any], None]:
    def failure_route(msg):
        failure_log.append({"code": msg.reply_code, "408": msg.t_check_status("408"),
                            "5xx": msg.t_check_status("5[0-9][0-9]"), "local": msg.t_local_replied("all"),
                            "last_local": msg.t_local_replied("last")})
        if then is not None:
            then(msg)
    return failure_route


def to_voicemail(msg) -> None:
    msg.ruri = VM_URI
    msg.t_relay()


def set_fr(seconds: float) -> Callable[[Any], None]:
    def before(msg):
        msg.T_fr_timeout = seconds
    return before


def test_fr_timeout_ends_a_silent_branch_with_a_local_408_and_the_failure_route_moves_on() -> None:
    log: list[dict[str, Any]] = []
    w = World(timed_routes(set_fr(2), seen_by(log, to_voicemail)))
    w.register()
    sent = w.receive(invite(), ALICE_FLOW)
    first = only(sent, lambda s: s.is_request("INVITE"))
    assert first.remote == BOB
    quiet = w.run_for(1.9)
    assert not requests(quiet, "INVITE") or all(s.remote == BOB for s in requests(quiet, "INVITE"))  # Timer A only
    assert log == []
    sent = w.run_for(0.2)
    assert log == [{"code": 408, "408": True, "5xx": False, "local": True, "last_local": True}]
    assert not requests(sent, "CANCEL")  # no provisional: nothing to cancel (OpenSIPS: no CANCEL either)
    vm = only(sent, lambda s: s.is_request("INVITE"))
    assert vm.remote == VOICEMAIL and vm.message.uri_text == VM_URI
    assert not responses(sent)
    assert w.node.stats["timeouts"] == 1 and w.node.stats["timeouts_inv"] == 0
    final = w.receive(answer(vm.message, 200, to_tag="vm", contact="<sip:vm@192.0.2.30>"), VM_FLOW)
    assert only(final, lambda s: s.is_response()).is_response(200)
    w.assert_drained()
    assert w.node.stats["timeouts"] == 1  # Timer B of the first branch never fired on top


def test_fr_timeout_without_a_failure_route_answers_408_upstream() -> None:
    w = World(timed_routes(set_fr(3), None))
    w.register()
    w.receive(invite(), ALICE_FLOW)
    assert not responses(w.run_for(2.9), 408)
    final = only(w.run_for(0.2), lambda s: s.is_response())
    assert final.is_response(408) and final.message.to_tag


def test_fr_inv_timeout_runs_from_the_provisional_and_cancels_the_branch() -> None:
    log: list[dict[str, Any]] = []

    def before(msg):
        msg.T_fr_timeout = 1
        msg.T_fr_inv_timeout = 3

    w = World(timed_routes(before, seen_by(log, to_voicemail)))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    w.run_for(0.5)
    ringing = w.receive(answer(fwd, 180), BOB_FLOW)
    assert only(ringing, lambda s: s.is_response()).is_response(180)
    sent = w.run_for(2.9)  # fr_timeout (1 s) no longer applies after the 180: nothing yet
    assert not requests(sent, "CANCEL") and log == []
    sent = w.run_for(0.2)
    cancel = only(sent, lambda s: s.is_request("CANCEL"))
    assert cancel.remote == BOB
    assert w.node.stats["timeouts_inv"] == 1 and w.node.stats["timeouts"] == 0
    # the branch counts as a local 408 at once (§16.8); Bob's 487 after the CANCEL is absorbed
    assert log == [{"code": 408, "408": True, "5xx": False, "local": True, "last_local": True}]
    assert only(sent, lambda s: s.is_request("INVITE")).remote == VOICEMAIL


def test_short_fr_inv_timeout_does_not_cut_a_branch_that_has_not_answered_yet() -> None:
    """OpenSIPS: before the first reply only fr_timeout runs (here 5 s), not fr_inv_timeout (1 s)."""
    def before(msg):
        msg.T_fr_timeout = 5
        msg.T_fr_inv_timeout = 1

    w = World(timed_routes(before, None))
    w.register()
    w.receive(invite(), ALICE_FLOW)
    assert not responses(w.run_for(4.9), 408)
    assert only(w.run_for(0.2), lambda s: s.is_response()).is_response(408)


def test_received_503_is_not_local_and_matches_5xx() -> None:
    log: list[dict[str, Any]] = []
    w = World(timed_routes(set_fr(2), seen_by(log, to_voicemail)))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(fwd, 503), BOB_FLOW)
    assert log == [{"code": 503, "408": False, "5xx": True, "local": False, "last_local": False}]
    assert only(sent, lambda s: s.is_request("INVITE")).remote == VOICEMAIL


def test_value_set_in_the_failure_route_applies_to_the_branches_it_adds() -> None:
    log: list[dict[str, Any]] = []

    def shorter_then_voicemail(msg):
        msg.T_fr_timeout = 1
        to_voicemail(msg)

    w = World(timed_routes(set_fr(2), seen_by(log, shorter_then_voicemail)))
    w.register()
    w.receive(invite(), ALICE_FLOW)
    only(w.run_for(2.1), lambda s: s.is_request("INVITE") and s.remote == VOICEMAIL)
    assert not responses(w.run_for(0.8), 408)
    final = only(w.run_for(0.3), lambda s: s.is_response())
    assert final.is_response(408)  # the voicemail branch's own 1 s


def test_non_invite_fr_timeout_replaces_timer_f() -> None:
    w = World(timed_routes(set_fr(2), None))
    w.register()
    message = sip(
        "MESSAGE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKmsg1",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        "Call-ID: msg-1@192.0.2.20",
        "CSeq: 1 MESSAGE",
        body="hi",
    )
    fwd = only(w.receive(message, ALICE_FLOW), lambda s: s.is_request("MESSAGE")).message
    w.receive(answer(fwd, 100, contact=None), BOB_FLOW)  # Timer F runs on after a provisional (§17.1.2.2)
    assert not responses(w.run_for(1.9), 408)
    assert only(w.run_for(0.2), lambda s: s.is_response()).is_response(408)
    assert w.node.stats["timeouts"] == 1 and w.node.stats["timeouts_inv"] == 0  # _inv is INVITE's (tm)


def test_reading_defaults_t_set_fr_in_ms_and_t_reset_fr() -> None:
    seen: list[tuple[Any, ...]] = []

    def before(msg):
        seen.append((msg.T_fr_timeout, msg.T_fr_inv_timeout))
        msg.t_set_fr(60000, 2500)
        seen.append((msg.T_fr_timeout, msg.T_fr_inv_timeout))
        msg.t_set_fr(0, 1000)  # 0 leaves fr_inv_timeout as it is (Kamailio)
        seen.append((msg.T_fr_timeout, msg.T_fr_inv_timeout))
        msg.t_reset_fr()
        seen.append((msg.T_fr_timeout, msg.T_fr_inv_timeout))
        msg.T_fr_timeout = 4
        msg.T_fr_inv_timeout = 0  # 0: the default (OpenSIPS is_timeout_set)
        seen.append((msg.T_fr_timeout, msg.T_fr_inv_timeout))

    w = World(timed_routes(before, None), timers=TimerSettings(t1=0.25, timer_c=90))
    w.register()
    w.receive(invite(), ALICE_FLOW)
    assert seen == [(16.0, 90), (2.5, 60.0), (1.0, 60.0), (16.0, 90), (4.0, 90)]


def test_a_bad_value_is_the_routes_error_500() -> None:
    w = World(timed_routes(set_fr(-1), None))
    w.register()
    sent = w.receive(invite(), ALICE_FLOW)
    assert only(sent, lambda s: s.is_response() and s.message.status >= 200).is_response(500)
    assert not requests(sent, "INVITE")


def test_fr_inv_timeout_set_in_the_onreply_route_applies_to_the_running_branch() -> None:
    """OpenSIPS reads $T_fr_inv_timeout when the provisional arrives, after onreply_route ran."""
    log: list[dict[str, Any]] = []

    def on_reply(msg, reply):
        if reply.status == 180:
            msg.T_fr_inv_timeout = 3

    def arm(msg):
        msg.t_on_reply(on_reply)

    w = World(timed_routes(arm, seen_by(log)))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    w.receive(answer(fwd, 100), BOB_FLOW)
    assert not requests(w.run_for(5), "CANCEL")  # after a 100 only: the node's Timer C (120 s) runs
    w.receive(answer(fwd, 180), BOB_FLOW)
    assert not requests(w.run_for(2.9), "CANCEL")
    cancel = only(w.run_for(0.2), lambda s: s.is_request("CANCEL"))
    assert cancel.remote == BOB and log[0]["code"] == 408
