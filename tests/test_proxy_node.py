"""The stateful proxy engine (RFC 3261 §16) end to end, without sockets.

Every test drives a real :class:`~edgeproxy.proxy.node.Node` (the world of ``tests/support/proxy.py``)
with a ``task.Clock``, an in-memory recording :class:`~edgeproxy.interfaces.Sender`, a real InMemoryLocation + Registrar and a route
module (``routes/default.py`` or a small inline one). Messages go in as SIP text parsed by
``parse_datagram``; what the node sends is serialised and parsed back, so every assertion is on what
would be on the wire and where it would go. The downstream UA's answers are built from the request
the node actually sent (Via, From, To, Call-ID, CSeq copied, Record-Route mirrored, §8.2.6, §12.1.1).

Cast: Alice (caller, UDP 192.0.2.20:5060), Bob (callee, registered from UDP 192.0.2.10:5062, or over
TCP), the node listening on 127.0.0.1:5060 (UDP and TCP) for domain example.com.
"""

from __future__ import annotations

import pytest
from support.proxy import (
    ALICE,
    ALICE_FLOW,
    BOB,
    BOB2,
    BOB_FLOW,
    BOB_TCP_FLOW,
    LOCAL_UDP,
    RR_UDP,
    World,
    answer,
    call_to_bob,
    cancel,
    in_dialog,
    invite,
    module,
    non2xx_ack,
    only,
    requests,
    responses,
    rr_tcp,
    sip,
)
from twisted.internet.defer import Deferred

from edgeproxy.interfaces import SendError
from edgeproxy.sip import Response
from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.transaction import TimerSettings


@pytest.fixture
def world() -> World:
    return World()


# ---------------------------------------------------------------------------------------------------
# a basic call through routes/default.py
# ---------------------------------------------------------------------------------------------------


def test_register_is_answered_200_with_expires_and_to_tag_rfc3261_10_3(world: World) -> None:
    ok = world.register()
    assert ok.status == 200
    contact = ok.contacts[0]
    assert str(contact.uri) == "sip:bob@192.0.2.10:5062"
    assert contact.params.get("expires") == "3600"
    assert ok.to_tag  # §8.2.6.2: a final response carries a To tag
    assert world.location.get("bob")


def test_register_reply_goes_back_to_the_source_rfc3261_18_2_2(world: World) -> None:
    text = sip(
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKnat;rport",
        "Max-Forwards: 70",
        "From: <sip:bob@example.com>;tag=r1",
        "To: <sip:bob@example.com>",
        "Call-ID: reg-nat",
        "CSeq: 1 REGISTER",
        "Contact: <sip:bob@10.0.0.5:5062>",
    )
    sent = world.receive(text, Flow(LOCAL_UDP, Endpoint("UDP", "203.0.113.9", 34567)))
    ok = only(sent)
    assert ok.is_response(200)
    assert ok.remote == Endpoint("UDP", "203.0.113.9", 34567)  # received + rport (RFC 3581 §4)


def test_invite_is_forwarded_to_the_registered_contact_rfc3261_16_6(world: World) -> None:
    sent, fwd = call_to_bob(world)
    assert [s.message.status if s.is_response() else s.message.method for s in sent] == [100, "INVITE"]
    trying = sent[0]
    assert trying.remote == ALICE  # received/rport of Alice's Via
    assert trying.message.to_tag is None  # §8.2.6.2: no To tag on 100
    out = sent[1]
    assert out.remote == BOB
    assert fwd.uri_text == "sip:bob@192.0.2.10:5062"  # §16.6 step 2: Request-URI = the contact
    vias = fwd.vias
    assert len(vias) == 2
    assert vias[0].transport == "UDP" and (vias[0].host, vias[0].port) == ("127.0.0.1", 5060)
    assert vias[0].branch.startswith("z9hG4bK") and vias[0].branch != "z9hG4bKalice1"  # §16.6 step 8
    assert vias[1].branch == "z9hG4bKalice1"
    assert vias[1].received == "192.0.2.20" and vias[1].params["rport"] == "5060"  # §18.2.1, RFC 3581
    assert fwd.max_forwards == 69  # §16.6 step 3
    assert fwd.headers.values("record-route") == [RR_UDP]  # §16.6 step 4
    assert fwd.call_id == "call-1@192.0.2.20" and fwd.from_tag == "a1" and fwd.to_tag is None


def test_full_call_180_200_ack_bye_rfc3261_16_7_16_11_16_12(world: World) -> None:
    _, fwd = call_to_bob(world)

    # §16.7 steps 9-10: provisional and 2xx go upstream with our Via removed
    sent = world.receive(answer(fwd, 180), BOB_FLOW)
    ringing = only(sent)
    assert ringing.is_response(180) and ringing.remote == ALICE
    assert [v.branch for v in ringing.message.vias] == ["z9hG4bKalice1"]

    sent = world.receive(answer(fwd, 200), BOB_FLOW)
    ok = only(sent).message
    assert isinstance(ok, Response) and ok.status == 200 and only(sent).remote == ALICE
    assert [v.branch for v in ok.vias] == ["z9hG4bKalice1"]
    assert ok.headers.values("record-route") == [RR_UDP]
    assert ok.to_tag == "b1"

    # the ACK for a 2xx is end-to-end: loose-routed and forwarded statelessly (§16.11, §16.12)
    in_table = len(world.node.table)
    sent = world.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bKack1"), ALICE_FLOW)
    ack = only(sent)
    assert ack.is_request("ACK") and ack.remote == BOB
    assert ack.message.uri_text == "sip:bob@192.0.2.10:5062"
    assert ack.message.routes == []  # §16.4: our Route entry popped
    assert ack.message.max_forwards == 69
    assert ack.message.top_via.branch.startswith("z9hG4bK") and (ack.message.top_via.host == "127.0.0.1")
    assert len(world.node.table) == in_table  # no transaction for the ACK
    # a retransmitted ACK goes out again with the same branch (stateless: §16.11)
    again = only(world.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bKack1"), ALICE_FLOW))
    assert again.message.top_via.branch == ack.message.top_via.branch

    # BYE: loose-routed, relayed statefully, its 200 relayed back
    sent = world.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKbye1"), ALICE_FLOW)
    bye = only(sent)
    assert bye.is_request("BYE") and bye.remote == BOB
    assert bye.message.routes == [] and "record-route" not in bye.message.headers
    assert bye.message.top_via.branch.startswith("z9hG4bK")
    sent = world.receive(answer(bye.message, 200), BOB_FLOW)
    bye_ok = only(sent)
    assert bye_ok.is_response(200) and bye_ok.message.cseq.method == "BYE" and bye_ok.remote == ALICE
    assert [v.branch for v in bye_ok.message.vias] == ["z9hG4bKbye1"]
    world.assert_drained()


def test_callee_bye_is_loose_routed_back_to_the_caller_rfc3261_16_12(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 200), BOB_FLOW)
    # Bob's route set is the Record-Route of the INVITE in order (§12.1.1)
    bye = sip(
        "BYE sip:alice@192.0.2.20:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKbobbye",
        "Max-Forwards: 70",
        f"Route: {RR_UDP}",
        "From: <sip:bob@example.com>;tag=b1",
        'To: "Alice" <sip:alice@example.com>;tag=a1',
        "Call-ID: call-1@192.0.2.20",
        "CSeq: 1 BYE",
    )
    out = only(world.receive(bye, BOB_FLOW))
    assert out.is_request("BYE") and out.remote == ALICE and out.message.routes == []
    back = only(world.receive(answer(out.message, 200), ALICE_FLOW))
    assert back.is_response(200) and back.remote == BOB


# ---------------------------------------------------------------------------------------------------
# Record-Route and Route (§16.4, §16.6 step 4, RFC 5658 double Record-Route)
# ---------------------------------------------------------------------------------------------------


def test_double_record_route_when_changing_transport_rfc3261_16_6_step4(world: World) -> None:
    world.register(contacts=("<sip:bob@192.0.2.10:5062;transport=tcp>",), flow=BOB_TCP_FLOW)
    sent = world.receive(invite(), ALICE_FLOW)
    out = only(sent, lambda s: s.is_request("INVITE"))
    # a client registered over TCP is reached over its connection (RFC 5626 §5.3)
    assert out.destination.flow == BOB_TCP_FLOW
    fwd = out.message
    assert fwd.top_via.transport == "TCP"
    # outbound-side (TCP) entry on top, inbound-side (UDP) below it (RFC 5658 §4); the TCP entry
    # faces Bob's connection and names it with a flow token (RFC 5626 §5.3)
    bob_rr = rr_tcp(world, BOB_TCP_FLOW)
    assert fwd.headers.values("record-route") == [bob_rr, RR_UDP]

    ok = only(world.receive(answer(fwd, 200, contact="<sip:bob@192.0.2.10:5062;transport=tcp>"),
                            BOB_TCP_FLOW)).message
    assert ok.headers.values("record-route") == [bob_rr, RR_UDP]
    # Alice's route set is the reverse: UDP entry first. loose_route pops both (§16.4)
    bye = only(world.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKbye2"), ALICE_FLOW))
    assert bye.is_request("BYE")
    assert bye.message.routes == []
    assert bye.remote == Endpoint("TCP", "192.0.2.10", 5062)
    assert bye.destination.flow.connection_id == BOB_TCP_FLOW.connection_id  # over Bob's connection
    assert bye.message.top_via.transport == "TCP"

    # and Bob's BYE the other way round: TCP entry first, both popped
    bob_bye = sip(
        "BYE sip:alice@192.0.2.20:5060 SIP/2.0",
        "Via: SIP/2.0/TCP 192.0.2.10:5062;branch=z9hG4bKbobbye2",
        "Max-Forwards: 70",
        f"Route: {bob_rr}, {RR_UDP}",
        "From: <sip:bob@example.com>;tag=b1",
        'To: "Alice" <sip:alice@example.com>;tag=a1',
        "Call-ID: call-1@192.0.2.20",
        "CSeq: 1 BYE",
    )
    out = only(world.receive(bob_bye, BOB_TCP_FLOW))
    assert out.is_request("BYE") and out.remote == ALICE and out.message.routes == []
    assert out.message.top_via.transport == "UDP"


def test_single_record_route_when_staying_on_one_interface_rfc3261_16_6_step4(world: World) -> None:
    _, fwd = call_to_bob(world)
    assert fwd.headers.values("record-route") == [RR_UDP]


def test_no_record_route_without_record_route_call(world: World) -> None:
    def route(msg):
        msg.ruri = "sip:bob@192.0.2.10:5062"
        msg.t_relay()

    w = World(module(route))
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    assert "record-route" not in fwd.headers


# ---------------------------------------------------------------------------------------------------
# Max-Forwards (§16.3 step 3, §16.6 step 3)
# ---------------------------------------------------------------------------------------------------


def test_max_forwards_zero_is_answered_483_rfc3261_16_3(world: World) -> None:
    world.register()
    sent = world.receive(invite(max_forwards=0), ALICE_FLOW)
    assert not requests(sent, "INVITE")
    final = only(sent, lambda s: s.is_response() and s.message.status >= 200)
    assert final.message.status == 483 and final.remote == ALICE


def relay_to_bob(msg):
    msg.ruri = "sip:bob@192.0.2.10:5062"
    msg.t_relay()


def test_max_forwards_missing_is_added_as_70_rfc3261_16_6_step3() -> None:
    # a route that does not add Max-Forwards itself (routes/default.py does, as OpenSIPS's
    # mf_process_maxfwd_header): the node adds the RFC's 70
    w = World(module(relay_to_bob))
    fwd = only(w.receive(invite(max_forwards=None), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    assert fwd.max_forwards == 70


def test_max_forwards_zero_is_answered_483_by_t_relay_rfc3261_16_3() -> None:
    w = World(module(relay_to_bob))
    sent = w.receive(invite(max_forwards=0), ALICE_FLOW)
    assert [s.message.status for s in sent] == [483]


def test_max_forwards_one_is_forwarded_as_zero_rfc3261_16_6_step3(world: World) -> None:
    _, fwd = call_to_bob(world, max_forwards=1)
    assert fwd.max_forwards == 0


# ---------------------------------------------------------------------------------------------------
# local answers and server-transaction behaviour (§16.3, §17.2)
# ---------------------------------------------------------------------------------------------------


def test_unregistered_callee_gets_404_and_ack_is_absorbed_rfc3261_17_2_1(world: World) -> None:
    sent = world.receive(invite("carol"), ALICE_FLOW)
    assert [s.message.status for s in sent] == [404]
    not_found = sent[0].message
    assert not_found.to_tag and sent[0].remote == ALICE
    # a retransmitted INVITE gets the 404 again (Completed), the ACK confirms, nothing more goes out
    again = world.receive(invite("carol"), ALICE_FLOW)
    assert [s.message.status for s in again] == [404]
    assert world.receive(non2xx_ack(not_found, uri="sip:carol@example.com"), ALICE_FLOW) == []
    assert world.advance(60) == []  # no Timer G retransmission after the ACK
    world.assert_drained()


def test_sl_send_reply_404_is_stateless_not_retransmitted_on_timer_g(world: World) -> None:
    """OpenSIPS's ``sl_send_reply`` keeps no transaction: the 404 goes out once per INVITE received
    (issue 16: Timer G made one spoofed INVITE worth eleven replies). A stateful reply to a proven
    source keeps Timer G: tests/test_attack_amplification.py."""
    world.receive(invite("carol"), ALICE_FLOW)
    assert world.advance(0.5) == []
    assert world.advance(1.0) == []


def test_retransmitted_invite_is_absorbed_and_100_resent_rfc3261_17_2_1(world: World) -> None:
    call_to_bob(world)
    again = world.receive(invite(), ALICE_FLOW)
    assert [s.message.status for s in again if s.is_response()] == [100]
    assert not requests(again, "INVITE")  # one INVITE downstream only


def test_retransmitted_invite_after_180_gets_the_180_rfc3261_17_2_1(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 180), BOB_FLOW)
    again = world.receive(invite(), ALICE_FLOW)
    assert [s.message.status for s in again] == [180]


def test_non_local_domain_is_refused_403(world: World) -> None:
    sent = world.receive(invite(uri="sip:bob@elsewhere.example.net"), ALICE_FLOW)
    assert [s.message.status for s in sent] == [403]


def test_in_dialog_request_without_route_gets_404(world: World) -> None:
    bye = sip(
        "BYE sip:bob@192.0.2.10:5062 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKlost;rport",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: lost",
        "CSeq: 2 BYE",
    )
    assert [s.message.status for s in world.receive(bye, ALICE_FLOW)] == [404]


# ---------------------------------------------------------------------------------------------------
# CANCEL (§9.1, §9.2, §16.10)
# ---------------------------------------------------------------------------------------------------


def test_cancel_before_answer_rfc3261_16_10_and_9_1(world: World) -> None:
    _, fwd = call_to_bob(world)

    # §16.10: the CANCEL is answered 200 at once; no CANCEL downstream before a provisional (§9.1)
    sent = world.receive(cancel(), ALICE_FLOW)
    ok = only(sent)
    assert ok.is_response(200) and ok.message.cseq.method == "CANCEL" and ok.remote == ALICE
    assert not requests(sent, "CANCEL")

    # the provisional arrives: now the CANCEL goes down, matching the INVITE (§9.1)
    sent = world.receive(answer(fwd, 180), BOB_FLOW)
    down = only(sent, lambda s: s.is_request("CANCEL"))
    assert down.remote == BOB
    c = down.message
    assert c.uri_text == fwd.uri_text
    assert c.headers.values("via") == [fwd.headers.values("via")[0]]  # same top Via, same branch
    assert c.call_id == fwd.call_id and c.from_tag == fwd.from_tag and c.to_tag is None
    assert c.cseq.number == fwd.cseq.number and c.cseq.method == "CANCEL"

    # Bob answers the CANCEL (absorbed) and the INVITE with 487
    assert world.receive(answer(c, 200), BOB_FLOW) == []
    sent = world.receive(answer(fwd, 487), BOB_FLOW)
    # §17.1.1.3: the ACK for the 487 is generated hop by hop, on the INVITE's branch
    ack = only(sent, lambda s: s.is_request("ACK"))
    assert ack.remote == BOB
    assert ack.message.top_via.branch == fwd.top_via.branch
    assert ack.message.uri_text == fwd.uri_text and ack.message.to_tag == "b1"
    assert ack.message.cseq.number == 1 and ack.message.cseq.method == "ACK"
    # §16.7: the 487 is the best (only) response: relayed upstream
    terminated = only(sent, lambda s: s.is_response())
    assert terminated.is_response(487) and terminated.remote == ALICE
    assert [v.branch for v in terminated.message.vias] == ["z9hG4bKalice1"]
    # Alice's ACK for the 487 is absorbed by the server transaction
    assert world.receive(non2xx_ack(terminated.message), ALICE_FLOW) == []
    world.assert_drained()


def test_cancel_after_provisional_goes_down_at_once_rfc3261_16_10(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 180), BOB_FLOW)
    sent = world.receive(cancel(), ALICE_FLOW)
    assert only(sent, lambda s: s.is_response()).is_response(200)
    assert only(sent, lambda s: s.is_request("CANCEL")).remote == BOB
    # a retransmitted CANCEL is answered again, but not sent down twice
    again = world.receive(cancel(), ALICE_FLOW)
    assert [s.message.status for s in again if s.is_response()] == [200]
    assert not requests(again, "CANCEL")


def test_cancel_retransmitted_downstream_on_timer_e_rfc3261_17_1_2(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 180), BOB_FLOW)
    world.receive(cancel(), ALICE_FLOW)
    assert [s.message.method for s in world.advance(0.5)] == ["CANCEL"]


def test_cancel_for_unknown_transaction_gets_481_rfc3261_9_2(world: World) -> None:
    sent = world.receive(cancel(branch="z9hG4bKnobody"), ALICE_FLOW)
    assert [s.message.status for s in sent] == [481]
    assert sent[0].remote == ALICE


def test_cancel_without_any_branch_answers_487_rfc3261_16_10() -> None:
    """A CANCEL that arrives while the route is still working (it has not relayed yet): the INVITE
    is answered 487 at once and the late t_relay is refused."""
    pending: list[Deferred] = []

    async def route(msg):
        d = Deferred()
        pending.append(d)
        await d
        msg.ruri = "sip:bob@192.0.2.10:5062"
        if not msg.t_relay():
            msg.sl_reply_error()

    w = World(module(route))
    assert [s.message.status for s in w.receive(invite(), ALICE_FLOW)] == [100]
    sent = w.receive(cancel(), ALICE_FLOW)
    assert sorted((s.message.status, s.message.cseq.method) for s in sent) == [(200, "CANCEL"), (487, "INVITE")]
    pending[0].callback(None)
    assert w.sender.take() == []  # nothing relayed, no second final
    w.assert_drained()


# ---------------------------------------------------------------------------------------------------
# failures of the callee (§16.7, §16.8, §17.1.1.3)
# ---------------------------------------------------------------------------------------------------


def test_busy_486_is_relayed_and_acked_hop_by_hop_rfc3261_17_1_1_3(world: World) -> None:
    _, fwd = call_to_bob(world)
    sent = world.receive(answer(fwd, 486), BOB_FLOW)
    ack = only(sent, lambda s: s.is_request("ACK"))
    assert ack.remote == BOB and ack.message.top_via.branch == fwd.top_via.branch
    busy = only(sent, lambda s: s.is_response())
    assert busy.is_response(486) and busy.remote == ALICE
    # a retransmitted 486 is re-ACKed, not relayed again
    again = world.receive(answer(fwd, 486), BOB_FLOW)
    assert [s.message.method for s in again] == ["ACK"]
    assert world.receive(non2xx_ack(busy.message), ALICE_FLOW) == []
    world.assert_drained()


def test_timer_c_cancels_and_answers_408_rfc3261_16_8() -> None:
    w = World(timers=TimerSettings(timer_c=10))
    _, fwd = call_to_bob(w)
    w.receive(answer(fwd, 180), BOB_FLOW)
    w.advance(9.9)
    sent = w.advance(0.2)
    down = only(sent, lambda s: s.is_request("CANCEL"))
    assert down.remote == BOB and down.message.top_via.branch == fwd.top_via.branch
    timeout = only(sent, lambda s: s.is_response())
    assert timeout.is_response(408) and timeout.remote == ALICE
    # Bob's late 487 is ACKed and absorbed (the context already answered)
    sent = w.receive(answer(fwd, 487), BOB_FLOW)
    assert [s.message.method for s in sent if s.is_request()] == ["ACK"]
    assert not responses(sent)
    w.assert_drained()


def test_late_2xx_after_timer_c_408_is_still_forwarded_rfc3261_16_7_step5() -> None:
    """Timer C fired, the branch was CANCELled and 408 went upstream; the callee answered 200 in the
    race. A 2xx is always forwarded (§16.7 step 5), here statelessly since the server transaction
    is Completed, exactly as a 2xx arriving after the client transaction ended (§16.7 step 1), so
    the caller can ACK and BYE it (§13.2.2.4) instead of the callee retransmitting into the void."""
    w = World(timers=TimerSettings(timer_c=10))
    _, fwd = call_to_bob(w)
    w.receive(answer(fwd, 180), BOB_FLOW)
    assert [s.message.status for s in responses(w.advance(10.1))] == [408]
    late = only(w.receive(answer(fwd, 200), BOB_FLOW))
    assert late.is_response(200) and late.remote == ALICE
    assert [v.branch for v in late.message.vias] == ["z9hG4bKalice1"]
    w.assert_drained()


def test_timer_c_is_restarted_by_provisionals_rfc3261_16_7_step2() -> None:
    w = World(timers=TimerSettings(timer_c=10))
    _, fwd = call_to_bob(w)
    w.receive(answer(fwd, 180), BOB_FLOW)
    w.advance(8)
    w.receive(answer(fwd, 183), BOB_FLOW)
    assert not requests(w.advance(8), "CANCEL")
    assert requests(w.advance(2.1), "CANCEL")


def test_timer_b_without_any_response_answers_408_rfc3261_17_1_1_2(world: World) -> None:
    _, fwd = call_to_bob(world)
    sent = world.run_for(31.9)
    assert len(requests(sent, "INVITE")) == 6  # Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5
    sent = world.advance(0.2)
    assert not requests(sent, "CANCEL")  # no provisional: no CANCEL (§9.1)
    timeout = only(sent)
    assert timeout.is_response(408) and timeout.remote == ALICE
    world.assert_drained()


def test_non_invite_timer_f_answers_408_rfc3261_17_1_2_2(world: World) -> None:
    _, fwd = call_to_bob(world)
    ok = only(world.receive(answer(fwd, 200), BOB_FLOW)).message
    bye = only(world.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKbyeF"), ALICE_FLOW))
    sent = world.run_for(32.1)
    timeout = only(sent, lambda s: s.is_response())
    assert timeout.is_response(408) and timeout.message.cseq.method == "BYE"
    assert len(requests(sent, "BYE")) >= 5  # Timer E retransmissions
    world.assert_drained()


# ---------------------------------------------------------------------------------------------------
# transport failures (§16.7 step 6, §17.1.4)
# ---------------------------------------------------------------------------------------------------


def test_send_failure_503_becomes_500_upstream_rfc3261_16_7_step6(world: World) -> None:
    """A branch whose send fails counts as a 503 (§17.1.4 / RFC 3263); a 503 chosen as the best
    response is forwarded as 500 (§16.7 step 6), so Alice never retries elsewhere on our account."""
    world.register()
    world.sender.fail_to[BOB] = SendError("Connection Refused", 503)
    sent = world.receive(invite(), ALICE_FLOW)
    assert len(requests(sent, "INVITE")) == 1  # the attempt
    final = only(sent, lambda s: s.is_response() and s.message.status >= 200)
    assert final.message.status == 500 and final.remote == ALICE
    world.assert_drained()


def test_send_failure_status_of_send_error_is_the_branch_response(world: World) -> None:
    """SendError.status is "what the proxy answers for the branch" (sender.py): 430 Flow Failed for
    a dead RFC 5626 flow reaches the caller as 430, not as a 500."""
    world.register()
    world.sender.fail_to[BOB] = SendError("Flow Failed", 430)
    sent = world.receive(invite(), ALICE_FLOW)
    final = only(sent, lambda s: s.is_response() and s.message.status >= 200)
    assert final.message.status == 430
    world.assert_drained()


def test_branch_without_listener_for_its_transport_fails_the_branch_rfc3261_16_7(world: World) -> None:
    """No TLS listener: the target cannot be tried at all; the branch counts as 503 → 500 upstream
    (and the caller still gets an answer)."""
    def route(msg):
        msg.ruri = "sips:bob@192.0.2.10:5061"
        msg.t_relay()

    w = World(module(route))
    sent = w.receive(invite(), ALICE_FLOW)
    assert not requests(sent, "INVITE")
    final = only(sent, lambda s: s.is_response() and s.message.status >= 200)
    assert final.message.status == 500 and final.remote == ALICE
    w.assert_drained()


def test_parallel_fork_survives_one_failed_send_rfc3261_16_7(world: World) -> None:
    """One target of a parallel group fails synchronously: the other branch still runs and its
    answer is the one Alice gets."""
    world.register(contacts=("<sip:bob@192.0.2.10:5062>", "<sip:bob@192.0.2.11:5064>"))
    world.sender.fail_to[BOB] = SendError("Connection Refused", 503)
    sent = world.receive(invite(), ALICE_FLOW)
    assert not [s for s in sent if s.is_response() and s.message.status >= 200], sent
    fwd2 = only(sent, lambda s: s.is_request("INVITE") and s.remote == BOB2).message
    sent = world.receive(answer(fwd2, 200, to_tag="b2"), Flow(LOCAL_UDP, BOB2))
    assert only(sent).is_response(200)
