"""The stateful proxy engine (RFC 3261 §16) without sockets: forking (§16.6 step 11, §16.7 steps 5-7,
§16.10) and the failure route (OpenSIPS ``t_on_failure``). The world and cast are ``test_proxy_node.py``'s
(``tests/support/proxy.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from support.proxy import (
    ALICE,
    ALICE_FLOW,
    BOB,
    BOB1_CONTACT,
    BOB2,
    BOB2_CONTACT,
    BOB2_FLOW,
    BOB3,
    BOB3_CONTACT,
    BOB3_FLOW,
    BOB_FLOW,
    LOCAL_UDP,
    RR_UDP,
    VOICEMAIL,
    World,
    answer,
    cancel,
    forked,
    invite,
    module,
    only,
    requests,
    responses,
    voicemail_routes,
)
from twisted.internet.defer import Deferred

from edgeproxy.interfaces import SendError
from edgeproxy.routing import LookupResult
from edgeproxy.sip.endpoint import Flow


@pytest.fixture
def world() -> World:
    return World()


# ---------------------------------------------------------------------------------------------------
# forking (§16.6 step 11 ordering by q, §16.7 steps 5-7, §16.10 CANCEL of the other branches)
# ---------------------------------------------------------------------------------------------------

def test_parallel_fork_equal_q_first_2xx_wins_and_others_are_cancelled_rfc3261_16_7_step5(world: World) -> None:
    out = forked(world, f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5")
    assert set(out) == {BOB, BOB2}  # both branches at once
    assert out[BOB].top_via.branch != out[BOB2].top_via.branch
    assert out[BOB2].uri_text == "sip:bob@192.0.2.11:5064"
    world.receive(answer(out[BOB2], 180, to_tag="b2"), BOB2_FLOW)
    sent = world.receive(answer(out[BOB], 200), BOB_FLOW)
    assert only(sent, lambda s: s.is_response()).is_response(200)
    cancel_down = only(sent, lambda s: s.is_request("CANCEL"))
    assert cancel_down.remote == BOB2 and cancel_down.message.top_via.branch == out[BOB2].top_via.branch
    # the cancelled branch's 487 is ACKed and not relayed; a 2xx from the loser would be relayed
    sent = world.receive(answer(out[BOB2], 487, to_tag="b2"), BOB2_FLOW)
    assert [s.message.method for s in sent] == ["ACK"]
    world.assert_drained()


def test_parallel_fork_every_2xx_is_forwarded_rfc3261_16_7_step5(world: World) -> None:
    out = forked(world, f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5")
    world.receive(answer(out[BOB], 200), BOB_FLOW)
    sent = world.receive(answer(out[BOB2], 200, to_tag="b2", contact=BOB2_CONTACT), BOB2_FLOW)
    relayed = only(sent, lambda s: s.is_response())
    assert relayed.is_response(200) and relayed.message.to_tag == "b2" and relayed.remote == ALICE


def test_parallel_fork_cancel_waits_for_the_losers_provisional_rfc3261_9_1(world: World) -> None:
    out = forked(world, f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5")
    sent = world.receive(answer(out[BOB], 200), BOB_FLOW)
    assert not requests(sent, "CANCEL")  # BOB2 sent nothing yet
    sent = world.receive(answer(out[BOB2], 180, to_tag="b2"), BOB2_FLOW)
    assert only(sent).is_request("CANCEL") and only(sent).remote == BOB2  # and no late 180 upstream


def test_serial_fork_by_q_higher_first_next_group_on_failure_rfc3261_16_6_step11(world: World) -> None:
    out = forked(world, f"{BOB2_CONTACT};q=0.5", f"{BOB1_CONTACT};q=1.0")
    assert set(out) == {BOB}  # only the q=1.0 group
    sent = world.receive(answer(out[BOB], 486), BOB_FLOW)
    assert only(sent, lambda s: s.is_request("ACK")).remote == BOB
    assert not responses(sent)  # the 486 is kept, not relayed: another group remains
    nxt = only(sent, lambda s: s.is_request("INVITE"))
    assert nxt.remote == BOB2 and nxt.message.uri_text == "sip:bob@192.0.2.11:5064"
    assert nxt.message.headers.values("record-route") == [RR_UDP]
    sent = world.receive(answer(nxt.message, 200, to_tag="b2", contact=BOB2_CONTACT), BOB2_FLOW)
    assert only(sent).is_response(200) and only(sent).message.to_tag == "b2"
    world.assert_drained()


def test_serial_fork_all_fail_best_response_upstream_rfc3261_16_7_step6(world: World) -> None:
    out = forked(world, f"{BOB2_CONTACT};q=0.5", f"{BOB1_CONTACT};q=1.0")
    nxt = only(world.receive(answer(out[BOB], 486), BOB_FLOW), lambda s: s.is_request("INVITE")).message
    sent = world.receive(answer(nxt, 404, to_tag="b2"), BOB2_FLOW)
    final = only(sent, lambda s: s.is_response())
    assert final.message.status in (404, 486)
    world.assert_drained()


def test_6xx_stops_forking_and_cancels_pending_branches_rfc3261_16_7_step5(world: World) -> None:
    out = forked(world, f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5", f"{BOB3_CONTACT};q=0.1")
    assert set(out) == {BOB, BOB2}
    world.receive(answer(out[BOB2], 180, to_tag="b2"), BOB2_FLOW)
    sent = world.receive(answer(out[BOB], 603), BOB_FLOW)
    assert not responses(sent)  # §16.7 step 5: a 6xx is not forwarded at once
    assert only(sent, lambda s: s.is_request("CANCEL")).remote == BOB2
    sent = world.receive(answer(out[BOB2], 487, to_tag="b2"), BOB2_FLOW)
    assert not requests(sent, "INVITE")  # the q=0.1 group never starts
    final = only(sent, lambda s: s.is_response())
    assert final.is_response(603)
    world.assert_drained()


def test_6xx_in_serial_fork_skips_the_remaining_groups_rfc3261_16_7_step5(world: World) -> None:
    out = forked(world, f"{BOB2_CONTACT};q=0.5", f"{BOB1_CONTACT};q=1.0")
    sent = world.receive(answer(out[BOB], 600), BOB_FLOW)
    assert not requests(sent, "INVITE")
    assert only(sent, lambda s: s.is_response()).is_response(600)


@pytest.mark.parametrize(
    "statuses, expected",
    [
        ((503, 404), 404),  # the lowest class wins (§16.7 step 6)
        ((503, 486, 404), {486, 404}),  # any response of the class (§16.7 step 6: "MAY select any")
        ((408, 486), 486),  # a locally meaningful 408 yields to a real answer
        ((503, 503), 500),  # a chosen 503 is sent as 500 (§16.7 step 6)
        ((500, 503), 500),
        ((302, 404), 302),  # 3xx is a lower class than 4xx (§16.7 step 6, OpenSIPS t_pick_branch)
        ((404, 603), 603),  # 6xx beats everything
    ],
)
def test_best_response_selection_rfc3261_16_7_step6(world: World, statuses: tuple[int, ...], expected: Any) -> None:
    contacts = [BOB1_CONTACT, BOB2_CONTACT, BOB3_CONTACT][: len(statuses)]
    flows = [BOB_FLOW, BOB2_FLOW, BOB3_FLOW]
    remotes = [BOB, BOB2, BOB3]
    out = forked(world, *(f"{c};q=0.5" for c in contacts))
    final = None
    for i, status in enumerate(statuses):
        extra = ("Contact: <sip:bob@192.0.2.99>",) if status == 302 else ()
        sent = world.receive(answer(out[remotes[i]], status, to_tag=f"b{i}", extra=extra), flows[i])
        got = [s for s in sent if s.is_response()]
        if i < len(statuses) - 1:
            assert not got
        else:
            final = only(got).message
    assert final is not None
    assert final.status in (expected if isinstance(expected, set) else {expected})


def test_401_and_407_challenges_are_merged_rfc3261_16_7_step7(world: World) -> None:
    out = forked(world, f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5")
    world.receive(answer(out[BOB], 401, extra=('WWW-Authenticate: Digest realm="one", nonce="n1"',)), BOB_FLOW)
    sent = world.receive(answer(out[BOB2], 407, to_tag="b2",
                                extra=('Proxy-Authenticate: Digest realm="two", nonce="n2"',)), BOB2_FLOW)
    final = only(sent, lambda s: s.is_response()).message
    assert final.status in (401, 407)
    assert final.headers.get_all("www-authenticate") == ['Digest realm="one", nonce="n1"']
    assert final.headers.get_all("proxy-authenticate") == ['Digest realm="two", nonce="n2"']


def test_challenges_of_two_401s_are_merged_rfc3261_16_7_step7(world: World) -> None:
    out = forked(world, f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5")
    world.receive(answer(out[BOB], 401, extra=('WWW-Authenticate: Digest realm="one", nonce="n1"',)), BOB_FLOW)
    sent = world.receive(answer(out[BOB2], 401, to_tag="b2",
                                extra=('WWW-Authenticate: Digest realm="two", nonce="n2"',)), BOB2_FLOW)
    final = only(sent, lambda s: s.is_response()).message
    assert sorted(final.headers.get_all("www-authenticate")) == [
        'Digest realm="one", nonce="n1"', 'Digest realm="two", nonce="n2"']


def test_cancel_of_a_forked_invite_cancels_every_branch_rfc3261_16_10(world: World) -> None:
    out = forked(world, f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5")
    world.receive(answer(out[BOB], 180), BOB_FLOW)
    world.receive(answer(out[BOB2], 180, to_tag="b2"), BOB2_FLOW)
    sent = world.receive(cancel(), ALICE_FLOW)
    assert {s.remote for s in requests(sent, "CANCEL")} == {BOB, BOB2}
    assert not responses(world.receive(answer(out[BOB], 487), BOB_FLOW))
    final = only(world.receive(answer(out[BOB2], 487, to_tag="b2"), BOB2_FLOW), lambda s: s.is_response())
    assert final.is_response(487)
    world.assert_drained()


def test_cancel_in_serial_fork_does_not_start_the_next_group_rfc3261_16_10(world: World) -> None:
    out = forked(world, f"{BOB2_CONTACT};q=0.5", f"{BOB1_CONTACT};q=1.0")
    world.receive(answer(out[BOB], 180), BOB_FLOW)
    world.receive(cancel(), ALICE_FLOW)
    sent = world.receive(answer(out[BOB], 487), BOB_FLOW)
    assert not requests(sent, "INVITE")
    assert only(sent, lambda s: s.is_response()).is_response(487)


# ---------------------------------------------------------------------------------------------------
# failure_route (OpenSIPS t_on_failure; §16.7 step 6 "the proxy MAY ... forward to new targets")
# ---------------------------------------------------------------------------------------------------


def test_failure_route_appends_a_branch_and_relays_on_486(world: World) -> None:
    seen: list[tuple[int | None, int | None]] = []

    def to_voicemail(msg):
        seen.append((msg.reply_code, msg.reply.status if msg.reply is not None else None))
        if msg.reply_code == 486:
            msg.append_branch("sip:bob@192.0.2.30:5060")
            msg.t_relay()

    w = World(voicemail_routes(to_voicemail))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(fwd, 486), BOB_FLOW)
    assert seen == [(486, 486)]
    assert only(sent, lambda s: s.is_request("ACK")).remote == BOB
    assert not responses(sent)
    vm = only(sent, lambda s: s.is_request("INVITE"))  # the new target only: Bob is not re-tried
    assert vm.remote == VOICEMAIL and vm.message.uri_text == "sip:bob@192.0.2.30:5060"
    assert vm.message.top_via.branch != fwd.top_via.branch
    assert vm.message.headers.values("record-route") == [RR_UDP]
    sent = w.receive(answer(vm.message, 200, to_tag="vm", contact="<sip:vm@192.0.2.30>"), Flow(LOCAL_UDP, VOICEMAIL))
    assert only(sent).is_response(200) and only(sent).message.to_tag == "vm"
    w.assert_drained()


def test_failure_route_changing_ruri_relays_to_the_new_uri(world: World) -> None:
    def to_voicemail(msg):
        msg.ruri = "sip:bob@192.0.2.30:5060"
        msg.t_relay()

    w = World(voicemail_routes(to_voicemail))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(fwd, 486), BOB_FLOW)
    assert only(sent, lambda s: s.is_request("INVITE")).remote == VOICEMAIL


def test_failure_route_send_reply_replaces_the_best_response() -> None:
    def later(msg):
        msg.send_reply(480, "Try Later")

    w = World(voicemail_routes(later))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(fwd, 486), BOB_FLOW)
    final = only(sent, lambda s: s.is_response())
    assert final.is_response(480) and final.message.reason == "Try Later" and final.remote == ALICE
    w.assert_drained()


def test_failure_route_doing_nothing_forwards_the_best_response() -> None:
    w = World(voicemail_routes(lambda msg: None))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    assert only(w.receive(answer(fwd, 486), BOB_FLOW), lambda s: s.is_response()).is_response(486)


def test_failure_route_is_one_shot_unless_rearmed() -> None:
    calls: list[int | None] = []

    def again(msg):
        calls.append(msg.reply_code)
        msg.append_branch("sip:bob@192.0.2.30:5060")
        msg.t_relay()

    w = World(voicemail_routes(again))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    vm = only(w.receive(answer(fwd, 486), BOB_FLOW), lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(vm, 404, to_tag="vm"), Flow(LOCAL_UDP, VOICEMAIL))
    assert calls == [486]
    assert only(sent, lambda s: s.is_response()).message.status in (404, 486)


def test_async_failure_route_is_awaited() -> None:
    async def to_voicemail(msg):
        code = await msg.lookup("location", aor="sip:vm@example.com")
        assert code == LookupResult.NOT_FOUND
        msg.send_reply(480)

    w = World(voicemail_routes(to_voicemail))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    assert only(w.receive(answer(fwd, 486), BOB_FLOW), lambda s: s.is_response()).is_response(480)


def test_module_level_failure_route_runs_without_t_on_failure() -> None:
    def failure_route(msg):
        msg.send_reply(480, "Module Level")

    w = World(voicemail_routes(None, armed=False, failure_route=failure_route))  # type: ignore[arg-type]
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    final = only(w.receive(answer(fwd, 486), BOB_FLOW), lambda s: s.is_response())
    assert final.message.reason == "Module Level"


def test_failure_route_does_not_run_for_a_cancelled_call_rfc3261_16_10() -> None:
    calls: list[int | None] = []
    w = World(voicemail_routes(lambda msg: calls.append(msg.reply_code)))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    w.receive(answer(fwd, 180), BOB_FLOW)
    w.receive(cancel(), ALICE_FLOW)
    final = only(w.receive(answer(fwd, 487), BOB_FLOW), lambda s: s.is_response())
    assert final.is_response(487) and calls == []


def test_failure_route_relay_whose_send_fails_still_answers() -> None:
    """The failure route relays to a target that fails at once: the caller still gets a final."""
    def to_voicemail(msg):
        msg.append_branch("sip:bob@192.0.2.30:5060")
        msg.t_relay()

    w = World(voicemail_routes(to_voicemail))
    w.register()
    w.sender.fail_to[VOICEMAIL] = SendError("Connection Refused", 503)
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(fwd, 486), BOB_FLOW)
    final = only(sent, lambda s: s.is_response())
    assert final.is_response(486)  # 486 beats the 503 of the failed voicemail branch
    w.assert_drained()


def test_onreply_route_sees_every_response() -> None:
    seen: list[int] = []

    def request_route(msg):
        msg.ruri = "sip:bob@192.0.2.10:5062"
        msg.t_relay()

    w = World(module(request_route, onreply_route=lambda msg, reply: seen.append(reply.status)))
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    w.receive(answer(fwd, 100), BOB_FLOW)
    w.receive(answer(fwd, 180), BOB_FLOW)
    w.receive(answer(fwd, 200), BOB_FLOW)
    assert seen == [100, 180, 200]


def test_branch_route_can_edit_each_forwarded_copy() -> None:
    def request_route(msg):
        msg.ruri = "sip:bob@192.0.2.10:5062"
        msg.append_branch("sip:bob@192.0.2.11:5064")
        msg.t_on_branch(lambda msg, fwd: fwd.headers.add("X-Branch", str(fwd.uri)))
        msg.t_relay()

    w = World(module(request_route))
    sent = requests(w.receive(invite(), ALICE_FLOW), "INVITE")
    assert sorted(s.message.headers.get("x-branch") for s in sent) == [
        "sip:bob@192.0.2.10:5062", "sip:bob@192.0.2.11:5064"]


def two_branches(msg):
    msg.ruri = "sip:bob@192.0.2.10:5062"
    msg.append_branch("sip:bob@192.0.2.11:5064")
    msg.t_relay()


def test_module_level_branch_route_runs_for_every_branch() -> None:
    """A module's ``branch_route(msg, request)`` runs without ``t_on_branch`` (it used to be checked at
    load time and never called)."""
    def branch_route(msg, request):
        request.headers.add("X-Branch", f"{msg.method} {request.uri}")

    w = World(module(two_branches, branch_route=branch_route))
    sent = requests(w.receive(invite(), ALICE_FLOW), "INVITE")
    assert sorted(s.message.headers.get("x-branch") for s in sent) == [
        "INVITE sip:bob@192.0.2.10:5062", "INVITE sip:bob@192.0.2.11:5064"]


def test_async_branch_route_holds_its_branch_until_it_ends() -> None:
    """An ``async def`` branch route runs (it used to be a coroutine nobody awaited), and a branch
    whose route awaits leaves only when the route is done, with what the route wrote."""
    gates: dict[str, Deferred] = {}

    async def branch_route(msg, request):
        gates[str(request.uri)] = gate = Deferred()
        request.headers.add("X-Checked", await gate)

    w = World(module(two_branches, branch_route=branch_route))
    assert requests(w.receive(invite(), ALICE_FLOW), "INVITE") == []  # both held back
    gates["sip:bob@192.0.2.11:5064"].callback("second")
    first_out = requests(w.sender.take(), "INVITE")
    assert [(str(s.message.uri), s.message.headers.get("x-checked")) for s in first_out] == [
        ("sip:bob@192.0.2.11:5064", "second")]
    gates["sip:bob@192.0.2.10:5062"].callback("first")
    assert [s.message.headers.get("x-checked") for s in requests(w.sender.take(), "INVITE")] == ["first"]


def test_async_branch_route_of_a_cancelled_call_sends_nothing() -> None:
    """A branch still in its branch route when the caller cancels never leaves; the caller gets 487."""
    gate: Deferred = Deferred()

    async def branch_route(msg, request):
        await gate

    def one_branch(msg):
        msg.ruri = "sip:bob@192.0.2.10:5062"
        msg.t_relay()

    w = World(module(one_branch, branch_route=branch_route))
    w.receive(invite(), ALICE_FLOW)
    sent = w.receive(cancel(), ALICE_FLOW)
    assert any(s.is_response(200) for s in sent)  # the CANCEL's own 200
    gate.callback(None)
    out = w.sender.take()
    assert not any(s.is_request("INVITE") for s in out)
    assert [s.message.status for s in out if s.is_response()] == [487]

