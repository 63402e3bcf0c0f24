"""Dialogs through a real node (OpenSIPS dialog): the states driven by the INVITE's responses, ACK
and BYE; lifetimes on a ``task.Clock``; a party's connection closing; profiles counting on every
path a call can end by; spoofed in-dialog requests. The node is the real one over a recording
sender (``support.proxy.World``); the sans-IO table is tested on its own in ``test_dialog.py``."""

from __future__ import annotations

from typing import Any

import pytest

from edgeproxy.dialog import DialogSettings, DialogState, DialogTable
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.routing import LookupResult
from edgeproxy.sip import Request, Response
from edgeproxy.transaction import TimerSettings
from support.proxy import (
    ALICE, ALICE_FLOW, BOB, BOB2, BOB_FLOW, BOB_TCP_FLOW, World, answer, cancel, in_dialog, invite, module,
    non2xx_ack, only, requests, sip,
)

SETTINGS = DialogSettings(default_timeout=3600, profiles_with_value=("caller",), profiles_no_value=("calls",))

USER_AGENT = ProxySettings().user_agent_header.partition(": ")[2]


async def dialog_route(msg: Any) -> None:
    """The shipped routes' dialog block, reduced: in-dialog requests by loose_route (which matches
    the dialog), INVITEs get a dialog with B, a per-caller profile and an optional lifetime."""
    if msg.has_totag():
        if msg.loose_route():
            msg.t_relay()
        elif not msg.is_method("ACK"):
            msg.sl_send_reply(404, "Not here")
        return
    if msg.is_method("REGISTER"):
        await msg.save("location")
        return
    if msg.is_method("INVITE"):
        if msg.get_profile_size("caller", msg.fU) >= 2:
            msg.sl_send_reply(486, "Too Many Calls")
            return
        assert msg.create_dialog("B")
        assert msg.set_dlg_profile("caller", msg.fU) and msg.set_dlg_profile("calls")
        lifetime = msg.header("X-Lifetime")
        if lifetime:
            msg.dlg_timeout = int(lifetime)
        msg.record_route()
    if await msg.lookup("location") != LookupResult.FOUND:
        msg.sl_send_reply(404, "Not Found")
        return
    msg.t_relay()


@pytest.fixture
def world() -> World:
    return World(module(dialog_route), dialogs=DialogTable(SETTINGS))


def table(w: World) -> DialogTable:
    return w.node.dialogs.table


def call(w: World, **kw: Any) -> Request:
    w.register()
    sent = w.receive(invite(**kw), ALICE_FLOW)
    return only(sent, lambda s: s.is_request("INVITE")).message  # type: ignore[return-value]


def answered(w: World, fwd: Request, flow: Any = BOB_FLOW) -> Response:
    ok = only(w.receive(answer(fwd, 200), flow)).message
    assert isinstance(ok, Response)
    return ok


def assert_counts_zero(w: World) -> None:
    t = table(w)
    assert len(t) == 0 and t.active == 0 and t.early == 0
    assert t.profile_size("caller") == 0 and t.profile_size("calls") == 0


def test_states_follow_180_200_ack_and_bye(world: World) -> None:
    fwd = call(world)
    dlg = only(list(table(world)))  # type: ignore[arg-type]
    assert dlg.state == DialogState.UNCONFIRMED and table(world).stats["processed_dialogs"] == 1
    world.receive(answer(fwd, 180), BOB_FLOW)
    assert dlg.state == DialogState.EARLY and table(world).early == 1
    ok = answered(world, fwd)
    assert dlg.state == DialogState.CONFIRMED_NA and table(world).active == 1 and table(world).early == 0
    assert dlg.callee_tag == "b1" and dlg.callee_contact == "sip:bob@192.0.2.10:5062"
    world.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bKack1"), ALICE_FLOW)
    assert dlg.state == DialogState.CONFIRMED
    assert table(world).profile_size("caller", "alice") == 1
    bye = only(world.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKbye1"), ALICE_FLOW))
    assert bye.is_request("BYE") and bye.remote == BOB  # still relayed as before
    assert dlg.state == DialogState.DELETED
    assert_counts_zero(world)


def test_lifetime_ends_the_call_with_a_bye_to_both_sides(world: World) -> None:
    fwd = call(world, extra=("X-Lifetime: 5",))
    ok = answered(world, fwd)
    world.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bKack1"), ALICE_FLOW)
    assert world.advance(4.9) == [] or not requests(world.sender.sent, "BYE")
    byes = requests(world.advance(0.2), "BYE")
    assert len(byes) == 2
    to_bob = only(byes, lambda s: s.remote == BOB).message
    to_alice = only(byes, lambda s: s.remote == ALICE).message
    # RFC 3261 §12.2.1.1: each as the other party would have sent it
    assert to_bob.uri_text == "sip:bob@192.0.2.10:5062" and to_bob.cseq.number == 2
    assert to_bob.from_tag == "a1" and to_bob.to_tag == "b1" and to_bob.call_id == ok.call_id
    assert to_alice.uri_text == "sip:alice@192.0.2.20:5060" and to_alice.from_tag == "b1"
    assert to_alice.to_tag == "a1" and to_alice.routes == [] and to_bob.routes == []
    assert to_bob.top_via.host == "127.0.0.1" and to_bob.top_via.branch.startswith("z9hG4bK")
    # requests of the node's own carry [proxy] user_agent_header (OpenSIPS's)
    assert to_bob.headers.values("user-agent") == to_alice.headers.values("user-agent") == [USER_AGENT]
    assert table(world).stats["expired_dialogs"] == 1
    assert_counts_zero(world)
    # their 200s are absorbed by the BYEs' own transactions: nothing goes anywhere
    assert world.receive(answer(to_bob, 200), BOB_FLOW) == []
    assert world.receive(answer(to_alice, 200), ALICE_FLOW) == []
    world.assert_drained()


def test_bye_over_udp_is_retransmitted_until_answered(world: World) -> None:
    fwd = call(world, extra=("X-Lifetime: 5",))
    answered(world, fwd)
    first = requests(world.advance(5), "BYE")
    assert len(first) == 2
    again = requests(world.run_for(0.6), "BYE")  # timer E (T1 = 0.5 s) resends both
    assert len(again) == 2


def test_without_b_flag_lifetime_ends_silently() -> None:
    async def route(msg: Any) -> None:
        if msg.is_method("REGISTER"):
            await msg.save("location")
            return
        msg.create_dialog()
        msg.dlg_timeout = 5
        msg.record_route()
        await msg.lookup("location")
        msg.t_relay()

    w = World(module(route), dialogs=DialogTable(SETTINGS))
    fwd = call(w)
    answered(w, fwd)
    assert requests(w.advance(6), "BYE") == []
    assert len(table(w)) == 0 and table(w).stats["expired_dialogs"] == 1


def test_callee_connection_lost_ends_the_call_both_ways(world: World) -> None:
    world.register(contacts=("<sip:bob@192.0.2.10:5062;transport=tcp>",), flow=BOB_TCP_FLOW)
    sent = world.receive(invite(), ALICE_FLOW)
    fwd = only(sent, lambda s: s.is_request("INVITE")).message
    assert isinstance(fwd, Request)
    ok = only(world.receive(answer(fwd, 200, contact="<sip:bob@192.0.2.10:5062;transport=tcp>"),
                            BOB_TCP_FLOW)).message
    assert isinstance(ok, Response)
    world.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bKack1"), ALICE_FLOW)
    world.node.flow_closed(BOB_TCP_FLOW)
    byes = requests(world.sender.take(), "BYE")
    to_alice = only(byes, lambda s: s.remote == ALICE)
    assert to_alice.message.from_tag == "b1" and to_alice.message.to_tag == "a1"
    to_bob = only(byes, lambda s: s.remote != ALICE)
    assert to_bob.destination.flow is not None and to_bob.destination.flow.connection_id == BOB_TCP_FLOW.connection_id
    assert_counts_zero(world)


def test_caller_connection_lost_sends_bye_to_callee() -> None:
    w = World(module(dialog_route), dialogs=DialogTable(SETTINGS))
    w.register()
    from edgeproxy.sip.endpoint import Endpoint, Flow
    from support.proxy import LOCAL_TCP
    alice_tcp = Flow(LOCAL_TCP, Endpoint("TCP", "192.0.2.20", 40001), 9)
    text = invite().replace("SIP/2.0/UDP 192.0.2.20:5060", "SIP/2.0/TCP 192.0.2.20:5060")
    fwd = only(w.receive(text, alice_tcp), lambda s: s.is_request("INVITE")).message
    answered(w, fwd)  # type: ignore[arg-type]
    w.node.flow_closed(alice_tcp)
    byes = requests(w.sender.take(), "BYE")
    assert {b.remote for b in byes} >= {BOB}
    assert only(byes, lambda s: s.remote == BOB).message.cseq.number == 2
    assert len(table(w)) == 0


@pytest.mark.parametrize("how", ["486", "cancel", "timer_c", "404"])
def test_failed_calls_leave_no_dialog_and_no_profile_count(world: World, how: str) -> None:
    if how == "timer_c":
        world = World(module(dialog_route), timers=TimerSettings(timer_c=10), dialogs=DialogTable(SETTINGS))
    if how == "404":
        sent = world.receive(invite("nobody"), ALICE_FLOW)  # the route creates, then answers 404
        assert only(sent, lambda s: s.is_response(404))
    else:
        fwd = call(world)
        world.receive(answer(fwd, 180), BOB_FLOW)
        if how == "486":
            out = world.receive(answer(fwd, 486), BOB_FLOW)
            final = only(out, lambda s: s.is_response(486)).message
            world.receive(non2xx_ack(final), ALICE_FLOW)  # type: ignore[arg-type]
        elif how == "cancel":
            world.receive(cancel(), ALICE_FLOW)
            world.receive(answer(fwd, 487), BOB_FLOW)
        else:
            assert only(world.advance(10.1), lambda s: s.is_response(408))  # timer C
    assert table(world).stats["failed_dialogs"] == 1
    assert_counts_zero(world)


def test_late_200_after_cancel_revives_the_dialog(world: World) -> None:
    fwd = call(world)
    world.receive(answer(fwd, 180), BOB_FLOW)
    world.receive(cancel(), ALICE_FLOW)
    assert len(table(world)) == 1  # still waiting for the branch's answer
    ok = answered(world, fwd)  # the 200 crossed the CANCEL (RFC 3261 §9.1): forwarded, call exists
    assert ok.status == 200 and table(world).active == 1 and table(world).profile_size("calls") == 1


def test_forking_one_dialog_early_branches_first_200_wins(world: World) -> None:
    world.register()
    world.register(contacts=("<sip:bob@192.0.2.11:5064>",), call_id="reg-bob-2")
    sent = world.receive(invite(), ALICE_FLOW)
    branches = requests(sent, "INVITE")
    assert len(branches) == 2 and len(table(world)) == 1
    a, b = (s.message for s in branches)
    flow_of = {BOB: BOB_FLOW}
    world.receive(answer(a, 180, to_tag="b1"), flow_of[BOB])
    from edgeproxy.sip.endpoint import Flow
    from support.proxy import LOCAL_UDP
    world.receive(answer(b, 180, to_tag="b2"), Flow(LOCAL_UDP, BOB2))
    dlg = only(list(table(world)))  # type: ignore[arg-type]
    assert dlg.state == DialogState.EARLY
    world.receive(answer(b, 200, to_tag="b2", contact="<sip:bob@192.0.2.11:5064>"), Flow(LOCAL_UDP, BOB2))
    assert dlg.callee_tag == "b2" and dlg.callee_contact == "sip:bob@192.0.2.11:5064"
    assert table(world).active == 1 and table(world).early == 0


def test_spoofed_bye_with_wrong_tags_ends_nothing(world: World) -> None:
    fwd = call(world)
    ok = answered(world, fwd)
    forged = in_dialog("BYE", ok, cseq=5, branch="z9hG4bKforged").replace(";tag=b1", ";tag=evil")
    world.receive(forged, ALICE_FLOW)
    assert table(world).active == 1
    stale = in_dialog("BYE", ok, cseq=1, branch="z9hG4bKreplay")  # right tags, CSeq not above the INVITE's
    world.receive(stale, ALICE_FLOW)
    assert table(world).active == 1
    world.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKbye"), ALICE_FLOW)
    assert_counts_zero(world)


def test_callee_bye_ends_the_dialog_downstream_reason(world: World) -> None:
    ended: list[str] = []

    class Listener:
        def dialog_created(self, d: Any) -> None: ended.append("created")
        def dialog_confirmed(self, d: Any, r: Response) -> None: ended.append(f"confirmed {r.status}")
        def dialog_failed(self, d: Any, s: int) -> None: ended.append(f"failed {s}")
        def dialog_ended(self, d: Any, reason: str) -> None: ended.append(reason)

    w = World(module(dialog_route), dialogs=DialogTable(SETTINGS, [Listener()]))
    fwd = call(w)
    answered(w, fwd)
    bye = sip("BYE sip:alice@192.0.2.20:5060 SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKbb",
              "Max-Forwards: 70", "Route: <sip:127.0.0.1:5060;lr>", "From: <sip:bob@example.com>;tag=b1",
              'To: "Alice" <sip:alice@example.com>;tag=a1', "Call-ID: call-1@192.0.2.20", "CSeq: 7 BYE")
    out = only(w.receive(bye, BOB_FLOW))
    assert out.is_request("BYE") and out.remote == ALICE
    assert ended == ["created", "confirmed 200", "Downstream BYE"]
    assert len(table(w)) == 0


def test_per_user_limit_refuses_the_third_call(world: World) -> None:
    world.register()
    for i in range(2):
        world.receive(invite(branch=f"z9hG4bKl{i}", call_id=f"limit-{i}"), ALICE_FLOW)
    third = world.receive(invite(branch="z9hG4bKl3", call_id="limit-3"), ALICE_FLOW)
    assert only(third, lambda s: s.is_response(486))
    assert table(world).profile_size("caller", "alice") == 2 and len(table(world)) == 2


def test_mi_style_end_sends_bye_both_ways(world: World) -> None:
    fwd = call(world)
    answered(world, fwd)
    dlg = only(list(table(world)))  # type: ignore[arg-type]
    assert world.node.dialogs.end(dlg, "MI Termination", [("Reason", 'SIP;text="admin"')])
    byes = requests(world.sender.take(), "BYE")
    assert len(byes) == 2 and all(b.message.headers.get("reason") == 'SIP;text="admin"' for b in byes)
    assert_counts_zero(world)


def test_mi_dialog_commands_and_statistics(world: World) -> None:
    from edgeproxy.management import MICommands, MIError
    from edgeproxy.service import RunningNode

    mi = MICommands(RunningNode(world.node, None, world.location, world.registrar))  # type: ignore[arg-type]

    def run(method: str, params: Any = None) -> Any:
        out: list[Any] = []
        mi.execute(method, params).addBoth(out.append)
        return out[0]

    fwd = call(world)
    answered(world, fwd)
    listed = run("dlg_list")["Dialogs"]
    assert len(listed) == 1
    d = listed[0]
    assert d["callid"] == "call-1@192.0.2.20" and d["state"] == 3 and d["caller_tag"] == "a1"
    assert d["from_uri"] == "sip:alice@example.com" and d["to_uri"] == "sip:bob@example.com"
    assert d["CALLEES"][0]["callee_tag"] == "b1" and d["CALLEES"][0]["callee_contact"] == "sip:bob@192.0.2.10:5062"
    assert run("dlg_list", ["nope"]) == {"Dialogs": []}
    assert run("profile_get_size", ["caller", "alice"]) == {
        "Profile": {"name": "caller", "value": "alice", "count": 1, "shared": "no", "replicated": "no"}}
    assert [x["ID"] for x in run("profile_list_dlgs", {"profile": "calls"})["Dialogs"]] == [d["ID"]]
    assert run("profile_get_size", ["nosuch"]).value.code == 404
    stats = run("get_statistics", [["dialog:"]])
    assert stats == {"dialog:active_dialogs": 1, "dialog:early_dialogs": 0, "dialog:processed_dialogs": 1,
                     "dialog:expired_dialogs": 0, "dialog:failed_dialogs": 0, "dialog:pings_sent": 0,
                     "dialog:pings_failed": 0}
    assert isinstance(run("dlg_end_dlg", ["1.1"]).value, MIError)
    assert run("dlg_end_dlg", [d["ID"], "Reason: SIP;text=\"ops\""]) == "OK"
    assert len(requests(world.sender.take(), "BYE")) == 2
    assert run("dlg_list") == {"Dialogs": []} and run("profile_get_size", ["caller"])["Profile"]["count"] == 0


def test_shipped_default_route_creates_dialogs_and_limits_per_user() -> None:
    import edgeproxy_routes.default as default
    from edgeproxy.routing.testing import RouteHarness

    h = RouteHarness(domains=["example.com"], params={"max_calls_per_user": 2},
                     dialog=DialogSettings(profiles_with_value=("caller",)))
    h.register("sip:bob@example.com", "sip:bob@192.0.2.10:5062")
    results = [h.run(default.request_route, invite(branch=f"z9hG4bKh{i}", call_id=f"h-{i}")) for i in range(3)]
    assert [r.relayed for r in results] == [True, True, False] and results[2].reply_code == 486
    assert h.dialogs.profile_size("caller", "alice") == 2 and len(h.dialogs) == 2
    h.dialogs.fail(h.dialogs.get("h-0", "a1"), 487)  # one call ends: a new one goes through
    assert h.run(default.request_route, invite(branch="z9hG4bKh4", call_id="h-4")).relayed
    # off by default: no limit, but every INVITE still gets its dialog
    free = RouteHarness(domains=["example.com"])
    free.register("sip:bob@example.com", "sip:bob@192.0.2.10:5062")
    assert all(free.run(default.request_route, invite(branch=f"z9hG4bKf{i}", call_id=f"f-{i}")).relayed
               for i in range(3))
    assert len(free.dialogs) == 3


def test_caller_connection_lost_while_ringing_cancels_the_call() -> None:
    from edgeproxy.sip.endpoint import Endpoint, Flow
    from support.proxy import LOCAL_TCP

    w = World(module(dialog_route), dialogs=DialogTable(SETTINGS))
    w.register()
    alice_tcp = Flow(LOCAL_TCP, Endpoint("TCP", "192.0.2.20", 40002), 11)
    text = invite().replace("SIP/2.0/UDP 192.0.2.20:5060", "SIP/2.0/TCP 192.0.2.20:5060")
    fwd = only(w.receive(text, alice_tcp), lambda s: s.is_request("INVITE")).message
    assert isinstance(fwd, Request)
    w.receive(answer(fwd, 180), BOB_FLOW)
    w.node.flow_closed(alice_tcp)
    sent = w.sender.take()
    down = only(sent, lambda s: s.is_request("CANCEL"))
    assert down.remote == BOB and down.message.top_via.branch == fwd.top_via.branch
    w.receive(answer(down.message, 200), BOB_FLOW)  # type: ignore[arg-type]
    w.receive(answer(fwd, 487), BOB_FLOW)
    assert table(w).stats["failed_dialogs"] == 1
    assert_counts_zero(w)


def test_mi_end_of_an_early_dialog_cancels_it(world: World) -> None:
    fwd = call(world)
    world.receive(answer(fwd, 180), BOB_FLOW)
    dlg = only(list(table(world)))  # type: ignore[arg-type]
    assert world.node.dialogs.end(dlg, "MI Termination")
    sent = world.sender.take()
    assert only(sent, lambda s: s.is_request("CANCEL")).remote == BOB
    out = world.receive(answer(fwd, 487), BOB_FLOW)
    assert only(out, lambda s: s.is_response(487)).remote == ALICE
    assert_counts_zero(world)


def test_route_sees_its_dialog_status_did_timeout_and_validation() -> None:
    seen: list[tuple[Any, ...]] = []

    async def route(msg: Any) -> None:
        if msg.has_totag():
            routed = msg.loose_route()
            seen.append((msg.method, msg.match_dialog(), msg.dlg_status, msg.validate_dialog(), msg.dlg_did,
                         msg.dlg_timeout, msg.is_in_profile("caller", "alice"), msg.is_in_profile("caller", "bob")))
            if routed:
                msg.t_relay()
            return
        if msg.is_method("REGISTER"):
            await msg.save("location")
            return
        assert msg.create_dialog("B") and msg.set_dlg_profile("caller", msg.fU)
        assert msg.dlg_status == 1 and msg.dlg_timeout == SETTINGS.default_timeout
        msg.dlg_timeout = 30
        msg.record_route()
        await msg.lookup("location")
        msg.t_relay()

    w = World(module(route), dialogs=DialogTable(SETTINGS))
    fwd = call(w)
    ok = answered(w, fwd)
    w.clock.advance(10)
    w.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bKa"), ALICE_FLOW)
    w.receive(in_dialog("INFO", ok, cseq=1, branch="z9hG4bKi"), ALICE_FLOW)  # CSeq not above the INVITE's
    w.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKb"), ALICE_FLOW)
    did = seen[0][4]
    assert seen == [
        ("ACK", True, 4, 1, did, 20, True, False),  # $DLG_timeout: seconds left of its 30
        ("INFO", True, 4, -1, did, 20, True, False),
        ("BYE", True, 5, 1, did, 0, True, False),  # the BYE ended it (state 5) as loose_route matched it
    ]
    forged = in_dialog("BYE", ok, cseq=9, branch="z9hG4bKx").replace(";tag=b1", ";tag=zz")
    w.receive(forged, ALICE_FLOW)
    assert seen[-1][:4] == ("BYE", False, None, -4)
