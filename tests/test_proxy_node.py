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

from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel

from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.interfaces import SendError
from edgeproxy.routing import LookupResult
from edgeproxy.routing import RouteReply
from edgeproxy.routing.loader import RouteModule
from edgeproxy.sip import Request, Response
from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.transaction import TimerSettings
from support.proxy import (
    ALICE,
    ALICE_FLOW,
    BOB,
    BOB2,
    BOB3,
    BOB_FLOW,
    BOB_TCP_FLOW,
    LOCAL_TCP,
    LOCAL_UDP,
    RR_UDP,
    VOICEMAIL,
    Sent,
    World,
    answer,
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
    wire,
)


@pytest.fixture
def world() -> World:
    return World()


def call_to_bob(w: World, **kw: Any) -> tuple[list[Sent], Request]:
    """Register Bob, send Alice's INVITE; return what was sent and the INVITE that reached Bob."""
    w.register()
    sent = w.receive(invite(**kw), ALICE_FLOW)
    return sent, only(sent, lambda s: s.is_request("INVITE")).message  # type: ignore[return-value]


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


# ---------------------------------------------------------------------------------------------------
# forking (§16.6 step 11 ordering by q, §16.7 steps 5-7, §16.10 CANCEL of the other branches)
# ---------------------------------------------------------------------------------------------------

BOB1_CONTACT = "<sip:bob@192.0.2.10:5062>"
BOB2_CONTACT = "<sip:bob@192.0.2.11:5064>"
BOB3_CONTACT = "<sip:bob@192.0.2.12:5066>"
BOB2_FLOW = Flow(LOCAL_UDP, BOB2)
BOB3_FLOW = Flow(LOCAL_UDP, BOB3)


def forked(w: World, *contacts: str) -> dict[Endpoint, Request]:
    w.register(contacts=contacts)
    sent = w.receive(invite(), ALICE_FLOW)
    return {s.remote: s.message for s in requests(sent, "INVITE")}  # type: ignore[misc]


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


def voicemail_routes(failure: Callable[..., Any], armed: bool = True, **hooks: Any) -> RouteModule:
    async def request_route(msg):
        if msg.is_method("REGISTER"):
            await msg.save("location")
            return
        code = await msg.lookup("location")
        if code != LookupResult.FOUND:
            msg.sl_send_reply(404)
            return
        if armed:
            msg.t_on_failure(failure)
        msg.record_route()
        msg.t_relay()

    return module(request_route, **hooks)


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


# ---------------------------------------------------------------------------------------------------
# route errors and local replies
# ---------------------------------------------------------------------------------------------------


def test_route_raising_sip_error_replies_with_its_status() -> None:
    def request_route(msg):
        raise RouteReply(403, "Go Away")

    w = World(module(request_route))
    sent = w.receive(invite(), ALICE_FLOW)
    assert [(s.message.status, s.message.reason) for s in sent] == [(403, "Go Away")]
    assert sent[0].message.to_tag
    assert w.node.stats["route_errors"] == 0


def test_100_trying_only_when_the_route_does_not_answer_the_invite_at_once_rfc3261_17_2_1() -> None:
    """A route that answers in its synchronous part (404, 407, 403) sends no 100 (the TU answered
    within 200 ms); one that waits for something gets its 100 in the same turn, before the wait;
    one that relays sends it before the INVITE goes out."""
    from twisted.internet.defer import Deferred

    later: list[Deferred] = []

    async def waits(msg):
        d = Deferred()
        later.append(d)
        await d
        msg.sl_send_reply(486, "Busy Here")

    w = World(module(waits))
    assert [s.message.status for s in w.receive(invite(), ALICE_FLOW)] == [100]
    later[0].callback(None)
    assert [s.message.status for s in w.sender.take()] == [486]
    w = World(module(lambda msg: msg.sl_send_reply(404, "Not Found")))
    assert [s.message.status for s in w.receive(invite(), ALICE_FLOW)] == [404]


def test_async_route_raising_sip_error_replies_with_its_status() -> None:
    async def request_route(msg):
        await msg.lookup("location")
        raise RouteReply(488)

    w = World(module(request_route))
    assert [s.message.status for s in w.receive(invite(), ALICE_FLOW)] == [488]


def test_sip_error_on_register_is_answered_statelessly() -> None:
    def request_route(msg):
        raise RouteReply(403)

    w = World(module(request_route))
    text = sip(
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKregerr",
        "Max-Forwards: 70",
        "From: <sip:bob@example.com>;tag=r1",
        "To: <sip:bob@example.com>",
        "Call-ID: regerr",
        "CSeq: 1 REGISTER",
        "Contact: <sip:bob@192.0.2.10:5062>",
    )
    sent = w.receive(text, BOB_FLOW)
    assert [s.message.status for s in sent] == [403]


def test_route_raising_other_exception_replies_500_and_logs_traceback(logged: list[dict]) -> None:
    def request_route(msg):
        raise ZeroDivisionError("oops")

    w = World(module(request_route))
    sent = w.receive(invite(), ALICE_FLOW)
    assert [s.message.status for s in sent] == [500]
    assert w.node.stats["route_errors"] == 1
    failures = [e for e in logged if "log_failure" in e]
    assert failures and failures[-1]["log_failure"].check(ZeroDivisionError)
    assert failures[-1]["log_level"] == LogLevel.critical


def test_route_neither_replying_nor_relaying_gets_no_reply_status_and_warning(logged: list[dict]) -> None:
    w = World(module(lambda msg: None))
    sent = w.receive(invite(), ALICE_FLOW)
    assert [s.message.status for s in sent] == [500]
    warnings = [e for e in logged if e.get("log_level") == LogLevel.warn and e.get("log_namespace") == "edgeproxy.proxy"]
    assert warnings and "neither replied nor relayed" in warnings[-1]["log_format"]
    # the status is configurable
    w = World(module(lambda msg: None), ProxySettings(domains=("example.com",), no_reply_status=404))
    assert [s.message.status for s in w.receive(invite(), ALICE_FLOW)] == [404]


def test_ack_route_doing_nothing_is_silent(logged: list[dict]) -> None:
    w = World(module(lambda msg: None))
    ack = sip(
        "ACK sip:bob@192.0.2.10:5062 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKlonelyack",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: lonely",
        "CSeq: 1 ACK",
    )
    assert w.receive(ack, ALICE_FLOW) == []
    assert not [e for e in logged if e.get("log_level") == LogLevel.warn]


def test_send_reply_302_lists_the_branches_as_contact() -> None:
    def request_route(msg):
        msg.append_branch("sip:bob@192.0.2.10:5062")
        msg.append_branch("sip:bob@192.0.2.11:5064")
        msg.send_reply(302, "Moved Temporarily")

    w = World(module(request_route))
    sent = w.receive(invite(), ALICE_FLOW)
    moved = sent[-1].message
    assert moved.status == 302
    assert moved.headers.values("contact") == ["<sip:bob@192.0.2.10:5062>", "<sip:bob@192.0.2.11:5064>"]
    assert not requests(sent, "INVITE")


def test_send_reply_302_lists_a_changed_ruri_first() -> None:
    def request_route(msg):
        msg.ruri = "sip:carol@192.0.2.40"
        msg.append_branch("sip:dave@192.0.2.41")
        msg.send_reply(302)

    w = World(module(request_route))
    moved = w.receive(invite(), ALICE_FLOW)[-1].message
    assert [str(c.uri) for c in moved.contacts] == ["sip:carol@192.0.2.40", "sip:dave@192.0.2.41"]


def test_second_reply_from_a_route_is_ignored() -> None:
    def request_route(msg):
        msg.sl_send_reply(404)
        msg.sl_send_reply(500)

    w = World(module(request_route))
    assert [s.message.status for s in w.receive(invite(), ALICE_FLOW)] == [404]


def test_t_relay_twice_relays_once() -> None:
    results: list[bool] = []

    def request_route(msg):
        msg.ruri = "sip:bob@192.0.2.10:5062"
        results.append(msg.t_relay())
        results.append(msg.t_relay())

    w = World(module(request_route))
    assert len(requests(w.receive(invite(), ALICE_FLOW), "INVITE")) == 1
    assert results == [True, False]


def test_provisional_reply_from_route_then_relay() -> None:
    def request_route(msg):
        msg.ruri = "sip:bob@192.0.2.10:5062"
        msg.t_relay()

    w = World(module(request_route), ProxySettings(domains=("example.com",), auto_100trying=False))
    sent = w.receive(invite(), ALICE_FLOW)
    assert [s.message.method for s in sent] == ["INVITE"]  # no 100 without auto_100trying


# ---------------------------------------------------------------------------------------------------
# stray responses (§16.7 step 1, §18.1.2)
# ---------------------------------------------------------------------------------------------------


def test_stray_response_with_foreign_branch_is_dropped(world: World) -> None:
    stray = sip(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsomeoneelse",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKalice9",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: stray",
        "CSeq: 1 INVITE",
    )
    assert world.receive(stray, BOB_FLOW) == []


def test_2xx_retransmission_after_the_transaction_ended_is_forwarded_rfc3261_16_7_step1(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 200), BOB_FLOW)
    world.assert_drained()  # Timer M/L ended both transactions
    sent = world.receive(answer(fwd, 200), BOB_FLOW)
    late = only(sent)
    assert late.is_response(200) and late.remote == ALICE
    assert [v.branch for v in late.message.vias] == ["z9hG4bKalice1"]


def test_stray_response_with_our_branch_but_no_other_via_is_dropped(world: World) -> None:
    branch = world.node.forwarder.branch_prefix + "ff"
    stray = sip(
        "SIP/2.0 200 OK",
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: stray2",
        "CSeq: 1 INVITE",
    )
    assert world.receive(stray, BOB_FLOW) == []


def test_100_from_downstream_is_not_forwarded_rfc3261_16_7_step3(world: World) -> None:
    _, fwd = call_to_bob(world)
    assert world.receive(answer(fwd, 100), BOB_FLOW) == []


def test_provisional_after_final_is_not_forwarded(world: World) -> None:
    out = forked(world, f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5")
    world.receive(answer(out[BOB], 200), BOB_FLOW)
    sent = world.receive(answer(out[BOB2], 183, to_tag="b2"), BOB2_FLOW)
    assert not responses(sent)


# ---------------------------------------------------------------------------------------------------
# ACK matching the INVITE server transaction after a 2xx (RFC 6026 §8.7) and leak checks
# ---------------------------------------------------------------------------------------------------


def test_ack_with_the_invite_branch_after_2xx_is_routed_end_to_end_rfc6026_8_7(world: World) -> None:
    _, fwd = call_to_bob(world)
    ok = only(world.receive(answer(fwd, 200), BOB_FLOW)).message
    # a UA that reuses the INVITE's branch for the 2xx ACK: it matches the Accepted server
    # transaction, which hands it to the TU, which routes it
    sent = world.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bKalice1"), ALICE_FLOW)
    ack = only(sent)
    assert ack.is_request("ACK") and ack.remote == BOB


def test_no_transaction_or_owner_leaks_after_calls(world: World) -> None:
    world.register()
    for i in range(5):
        sent = world.receive(invite(branch=f"z9hG4bKleak{i}", call_id=f"leak-{i}"), ALICE_FLOW)
        fwd = only(sent, lambda s: s.is_request("INVITE")).message
        world.receive(answer(fwd, 180), BOB_FLOW)
        if i % 3 == 0:
            ok = only(world.receive(answer(fwd, 200), BOB_FLOW)).message
            world.receive(in_dialog("ACK", ok, cseq=1, branch=f"z9hG4bKleakack{i}"), ALICE_FLOW)
            bye = only(world.receive(in_dialog("BYE", ok, cseq=2, branch=f"z9hG4bKleakbye{i}"), ALICE_FLOW))
            world.receive(answer(bye.message, 200), BOB_FLOW)
        elif i % 3 == 1:
            world.receive(cancel(branch=f"z9hG4bKleak{i}", call_id=f"leak-{i}"), ALICE_FLOW)
            c = requests(world.sender.sent, "CANCEL")
            world.receive(answer(fwd, 487), BOB_FLOW)
        else:
            busy = only(world.receive(answer(fwd, 486), BOB_FLOW), lambda s: s.is_response()).message
            world.receive(non2xx_ack(busy, branch=f"z9hG4bKleak{i}"), ALICE_FLOW)
    assert len(world.node.table) > 0
    world.assert_drained()


# ---------------------------------------------------------------------------------------------------
# more transaction-level behaviour: Timer H, CANCEL corner cases, non-INVITE forking, TCP callers
# ---------------------------------------------------------------------------------------------------


def test_unacknowledged_stateful_404_ends_on_timer_h_rfc3261_17_2_1() -> None:
    # retransmitted on Timer G: a stateful reply, to a source allowed RFC 3261's retransmissions
    world = World(module(lambda msg: msg.send_reply(404, "Not Found")),
                  ProxySettings(domains=("example.com",), retransmit_unauthenticated=True))
    world.receive(invite("carol"), ALICE_FLOW)
    sent = world.run_for(40)
    assert {s.message.status for s in sent} == {404}  # Timer G retransmissions only
    assert len(sent) >= 5
    assert len(world.node.table) == 0 and world.node.proxy.idle


def test_timer_c_before_any_provisional_answers_408_without_cancel_rfc3261_16_8() -> None:
    w = World(timers=TimerSettings(timer_c=5))
    call_to_bob(w)
    sent = w.run_for(5.1)
    assert not requests(sent, "CANCEL")
    assert [s.message.status for s in responses(sent)] == [408]
    w.assert_drained()


def test_cancelled_branch_that_never_answers_still_ends_the_call_rfc3261_9_1(world: World) -> None:
    """§9.1: a client INVITE transaction whose CANCEL got no final within 64*T1 is over; the caller
    (already answered 200 for its CANCEL) gets a final response for the INVITE."""
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 180), BOB_FLOW)
    world.receive(cancel(), ALICE_FLOW)
    sent = world.run_for(33)
    finals = {s.message.status for s in responses(sent) if s.message.cseq.method == "INVITE"}
    # one final (retransmitted on Timer G: Alice sends no ACK here); the node answers 408, the
    # branch's timeout (§16.7 step 6 treats it as a 408); 487 would serve the caller as well
    assert finals == {408}
    world.assert_drained()


def test_cancel_after_the_final_response_is_answered_200_and_goes_nowhere_rfc3261_16_10(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 200), BOB_FLOW)
    sent = world.receive(cancel(), ALICE_FLOW)
    assert [s.message.status for s in sent] == [200]
    assert not requests(sent, "CANCEL")


def test_cancel_of_a_branch_that_got_only_100_waits_for_a_provisional_rfc3261_9_1(world: World) -> None:
    """100 Trying is a provisional response: §9.1 allows the CANCEL as soon as it arrives."""
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 100), BOB_FLOW)
    sent = world.receive(cancel(), ALICE_FLOW)
    assert only(sent, lambda s: s.is_request("CANCEL")).remote == BOB


def test_non_invite_parallel_fork_first_2xx_only_and_no_cancel_rfc3261_16_7_step5(world: World) -> None:
    world.register(contacts=(f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5"))
    message = sip(
        "MESSAGE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKmsg1;rport",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        "Call-ID: msg-1",
        "CSeq: 1 MESSAGE",
        "Content-Type: text/plain",
        body="hello",
    )
    sent = world.receive(message, ALICE_FLOW)
    assert not responses(sent)  # no 100 Trying for a non-INVITE (§16.2 / §17.2.2)
    out = {s.remote: s.message for s in requests(sent, "MESSAGE")}
    assert set(out) == {BOB, BOB2}
    assert all(m.body == b"hello" for m in out.values())
    sent = world.receive(answer(out[BOB2], 202, to_tag="b2"), BOB2_FLOW)
    assert [s.message.status for s in sent] == [202]
    assert not requests(sent, "CANCEL")  # a non-INVITE is never cancelled (§9.1)
    assert world.receive(answer(out[BOB], 200), BOB_FLOW) == []  # one final only
    world.assert_drained()


def test_non_invite_retransmission_gets_the_final_again_rfc3261_17_2_2(world: World) -> None:
    world.register()
    options = sip(
        "OPTIONS sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKopt1;rport",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        "Call-ID: opt-1",
        "CSeq: 1 OPTIONS",
    )
    fwd = only(world.receive(options, ALICE_FLOW)).message
    assert world.receive(options, ALICE_FLOW) == []  # Trying: absorbed
    world.receive(answer(fwd, 200), BOB_FLOW)
    assert [s.message.status for s in world.receive(options, ALICE_FLOW)] == [200]  # Completed
    world.assert_drained()


def test_tcp_caller_gets_responses_on_its_connection_and_double_record_route_rfc3261_18_2_2(world: World) -> None:
    world.register()
    alice_tcp = Flow(LOCAL_TCP, Endpoint("TCP", "192.0.2.20", 50123), 11)
    text = invite().replace("SIP/2.0/UDP 192.0.2.20:5060", "SIP/2.0/TCP 192.0.2.20:5060")
    sent = world.receive(text, alice_tcp)
    trying = only(sent, lambda s: s.is_response())
    assert trying.destination.flow == alice_tcp
    fwd = only(sent, lambda s: s.is_request("INVITE")).message
    assert fwd.top_via.transport == "UDP"
    # outbound (UDP) side on top; the TCP entry below names Alice's connection (RFC 5626)
    assert fwd.headers.values("record-route") == [RR_UDP, rr_tcp(world, alice_tcp)]
    assert fwd.vias[1].received == "192.0.2.20" and fwd.vias[1].params["rport"] == "50123"
    sent = world.receive(answer(fwd, 486), BOB_FLOW)
    busy = only(sent, lambda s: s.is_response())
    assert busy.destination.flow == alice_tcp
    # reliable transport: no Timer G retransmission of the 486 (§17.2.1)
    assert world.run_for(2) == []


def test_tcp_to_tcp_single_record_route_rfc3261_16_6_step4(world: World) -> None:
    """One listener, but two clients' connections: an entry for each, naming its connection (RFC
    5626 §5.3), so that each side's in-dialog requests reach the other's connection. A callee that
    is dialled (no connection known yet) leaves a single entry, naming the caller's connection."""
    world.register(contacts=("<sip:bob@192.0.2.10:5062;transport=tcp>",), flow=BOB_TCP_FLOW)
    alice_tcp = Flow(LOCAL_TCP, Endpoint("TCP", "192.0.2.20", 50123), 11)
    text = invite().replace("SIP/2.0/UDP 192.0.2.20:5060", "SIP/2.0/TCP 192.0.2.20:5060")
    fwd = only(world.receive(text, alice_tcp), lambda s: s.is_request("INVITE")).message
    assert fwd.headers.values("record-route") == [rr_tcp(world, BOB_TCP_FLOW), rr_tcp(world, alice_tcp)]

    w = World()
    w.register(contacts=("<sip:bob@192.0.2.10:5062;transport=tcp>",))  # over UDP: the contact is dialled
    fwd = only(w.receive(text.replace("call-1@", "call-2@"), alice_tcp), lambda s: s.is_request("INVITE")).message
    assert fwd.headers.values("record-route") == [rr_tcp(w, alice_tcp)]


def test_async_route_absorbs_retransmissions_and_arms_timers_after_relaying() -> None:
    """A route that waits on something slow (a database): retransmitted INVITEs are absorbed by the
    server transaction created at arrival, and the client transaction's timers run once it relays."""
    gate: list[Deferred] = []

    async def slow(msg):
        d = Deferred()
        gate.append(d)
        await d
        msg.ruri = "sip:bob@192.0.2.10:5062"
        msg.t_relay()

    w = World(module(slow))
    assert [s.message.status for s in w.receive(invite(), ALICE_FLOW)] == [100]
    assert [s.message.status for s in w.receive(invite(), ALICE_FLOW)] == [100]
    gate[0].callback(None)
    assert len(gate) == 1  # the retransmission did not run the route again
    assert [s.message.method for s in w.sender.take()] == ["INVITE"]
    assert [s.message.method for s in w.run_for(0.6)] == ["INVITE"]  # Timer A after the async relay


def test_async_route_failing_later_answers_500(logged: list[dict]) -> None:
    gate: list[Deferred] = []

    async def slow(msg):
        d = Deferred()
        gate.append(d)
        await d

    w = World(module(slow))
    w.receive(invite(), ALICE_FLOW)
    gate[0].errback(RuntimeError("database down"))
    assert [s.message.status for s in w.sender.take()] == [500]
    assert [e for e in logged if "log_failure" in e and "raised" in e["log_format"]]
    w.assert_drained()


def test_async_route_can_catch_the_error_of_an_awaited_deferred() -> None:
    gate: list[Deferred] = []

    async def careful(msg):
        d = Deferred()
        gate.append(d)
        try:
            await d
        except RuntimeError:
            msg.sl_send_reply(503, "Database Down")

    w = World(module(careful))
    w.receive(invite(), ALICE_FLOW)
    gate[0].errback(RuntimeError("database down"))
    assert [(s.message.status, s.message.reason) for s in w.sender.take()] == [(503, "Database Down")]


def test_append_to_reply_adds_headers_to_the_routes_reply() -> None:
    """OpenSIPS ``append_to_reply``: a 503 that says when to come back (Retry-After)."""

    def busy(msg):
        msg.append_to_reply("Retry-After: 5\r\n")
        msg.sl_send_reply(503, "Service Unavailable")

    w = World(module(busy))
    [sent] = [s for s in w.receive(invite(), ALICE_FLOW) if s.message.status >= 200]
    assert (sent.message.status, sent.message.headers.get("Retry-After")) == (503, "5")


def test_append_to_reply_refuses_what_is_not_a_header_line() -> None:
    def bad(msg):
        msg.append_to_reply("no colon here")

    w = World(module(bad))
    assert [s.message.status for s in w.receive(invite(), ALICE_FLOW) if s.message.status >= 200] == [500]


def test_failure_route_t_relay_without_new_target_returns_false_and_best_is_forwarded() -> None:
    results: list[bool] = []

    def retry_same(msg):
        results.append(msg.t_relay())

    w = World(voicemail_routes(retry_same))
    w.register()
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(fwd, 486), BOB_FLOW)
    assert results == [False]
    assert not requests(sent, "INVITE")
    assert only(sent, lambda s: s.is_response()).is_response(486)


def test_failure_route_after_serial_groups_exhausted_only() -> None:
    """failure_route runs once every branch of every q group has failed, not per group."""
    calls: list[int | None] = []
    w = World(voicemail_routes(lambda msg: calls.append(msg.reply_code)))
    w.register(contacts=(f"{BOB2_CONTACT};q=0.5", f"{BOB1_CONTACT};q=1.0"))
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    nxt = only(w.receive(answer(fwd, 486), BOB_FLOW), lambda s: s.is_request("INVITE")).message
    assert calls == []
    w.receive(answer(nxt, 480, to_tag="b2"), BOB2_FLOW)
    assert calls == [486]  # 480 yields to 486 in the best-response choice


def test_stats_count_requests_responses_and_relays(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 200), BOB_FLOW)
    assert world.node.stats["requests"] == 2  # REGISTER, INVITE
    assert world.node.stats["responses"] == 1
    assert world.node.stats["relayed"] == 1


# ---------------------------------------------------------------------------------------------------
# Path (RFC 3327 §5): the stored route set leads to the edge proxy, hop-by-hop requests follow it
# ---------------------------------------------------------------------------------------------------

EDGE = Endpoint("UDP", "192.0.2.50", 5060)
EDGE_FLOW = Flow(LOCAL_UDP, EDGE)


def register_via_edge(w: World) -> None:
    text = sip(
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKedge1",
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKbobreg;received=203.0.113.9;rport=34567",
        "Max-Forwards: 69",
        "Path: <sip:192.0.2.50:5060;lr>",
        "Supported: path",
        "From: <sip:bob@example.com>;tag=r1",
        "To: <sip:bob@example.com>",
        "Call-ID: reg-edge",
        "CSeq: 1 REGISTER",
        "Contact: <sip:bob@10.0.0.5:5062>",
    )
    ok = only(w.receive(text, EDGE_FLOW))
    assert ok.is_response(200) and ok.remote == EDGE
    assert ok.message.headers.values("path") == ["<sip:192.0.2.50:5060;lr>"]


def test_request_to_a_binding_with_path_goes_to_the_first_path_hop_rfc3327_5(world: World) -> None:
    register_via_edge(world)
    sent = world.receive(invite(), ALICE_FLOW)
    out = only(sent, lambda s: s.is_request("INVITE"))
    assert out.remote == EDGE
    assert out.message.uri_text == "sip:bob@10.0.0.5:5062"
    assert out.message.headers.values("route") == ["<sip:192.0.2.50:5060;lr>"]
    # the hop-by-hop CANCEL and the ACK for a non-2xx carry the same Route (§9.1, §17.1.1.3)
    world.receive(answer(out.message, 180), EDGE_FLOW)
    c = only(world.receive(cancel(), ALICE_FLOW), lambda s: s.is_request("CANCEL"))
    assert c.remote == EDGE and c.message.headers.values("route") == ["<sip:192.0.2.50:5060;lr>"]
    ack = only(world.receive(answer(out.message, 487), EDGE_FLOW), lambda s: s.is_request("ACK"))
    assert ack.remote == EDGE and ack.message.headers.values("route") == ["<sip:192.0.2.50:5060;lr>"]


def test_next_hop_strict_router_gets_the_request_uri_rewritten_rfc3261_16_6_step6(world: World) -> None:
    """The route set leads on to an RFC 2543 strict router (no ``lr``): the forwarded copy carries
    it as Request-URI and the old Request-URI as the last Route value, and goes to it."""
    bye = sip(
        "BYE sip:bob@192.0.2.10:5062 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKstrict;rport",
        "Max-Forwards: 70",
        f"Route: {RR_UDP}, <sip:192.0.2.60:5070>, <sip:192.0.2.61;lr>",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: strict-1",
        "CSeq: 2 BYE",
    )
    out = only(world.receive(bye, ALICE_FLOW))
    assert out.is_request("BYE") and out.remote == Endpoint("UDP", "192.0.2.60", 5070)
    assert out.message.uri_text == "sip:192.0.2.60:5070"
    assert [str(r.uri) for r in out.message.routes] == ["sip:192.0.2.61;lr", "sip:bob@192.0.2.10:5062"]


def test_next_hop_loose_router_keeps_the_request_uri_rfc3261_16_6_step6(world: World) -> None:
    bye = sip(
        "BYE sip:bob@192.0.2.10:5062 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKloose;rport",
        "Max-Forwards: 70",
        f"Route: {RR_UDP}, <sip:192.0.2.61:5070;lr>",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: loose-1",
        "CSeq: 2 BYE",
    )
    out = only(world.receive(bye, ALICE_FLOW))
    assert out.remote == Endpoint("UDP", "192.0.2.61", 5070)
    assert out.message.uri_text == "sip:bob@192.0.2.10:5062"
    assert [str(r.uri) for r in out.message.routes] == ["sip:192.0.2.61:5070;lr"]


# ---------------------------------------------------------------------------------------------------
# closed flows (RFC 7118 §5, RFC 5626 §5.3)
# ---------------------------------------------------------------------------------------------------


def test_closed_websocket_flow_takes_its_bindings_rfc7118_5(world: World) -> None:
    ws_local = Endpoint("WS", "127.0.0.1", 8080)
    world.sender.listeners["WS"] = ws_local
    ws_flow = Flow(ws_local, Endpoint("WS", "203.0.113.70", 61000), 21)
    text = sip(
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKws1",
        "Max-Forwards: 70",
        "From: <sip:bob@example.com>;tag=w1",
        "To: <sip:bob@example.com>",
        "Call-ID: reg-ws",
        "CSeq: 1 REGISTER",
        "Contact: <sip:bob@df7jal23ls0d.invalid;transport=ws>",
    )
    ok = only(world.receive(text, ws_flow))
    assert ok.is_response(200) and ok.destination.flow == ws_flow
    out = only(world.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE"))
    assert out.destination.flow == ws_flow and out.destination.flow_only  # never dial a browser
    world.node.flow_closed(ws_flow)
    sent = world.receive(invite(branch="z9hG4bKafterclose", call_id="after-close"), ALICE_FLOW)
    assert [s.message.status for s in sent] == [404]


def test_closed_tcp_flow_keeps_its_bindings_rfc3261_18(world: World) -> None:
    world.register(contacts=("<sip:bob@192.0.2.10:5062;transport=tcp>",), flow=BOB_TCP_FLOW)
    world.node.flow_closed(BOB_TCP_FLOW)
    assert requests(world.receive(invite(), ALICE_FLOW), "INVITE")


def test_2xx_retransmission_is_forwarded_again_rfc6026_8_4(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 200), BOB_FLOW)
    again = only(world.receive(answer(fwd, 200), BOB_FLOW))
    assert again.is_response(200) and again.remote == ALICE


def test_provisional_retransmission_is_forwarded_again_rfc3261_16_7(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 180), BOB_FLOW)
    assert only(world.receive(answer(fwd, 180), BOB_FLOW)).is_response(180)


# ---------------------------------------------------------------------------------------------------
# property: any interleaving of downstream answers, CANCEL and time keeps the response context sane
# ---------------------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_STATUSES = [100, 180, 183, 200, 404, 486, 487, 503, 603]
_CONTACT_SETS = [
    (f"{BOB1_CONTACT};q=0.5",),
    (f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5"),
    (f"{BOB1_CONTACT};q=1.0", f"{BOB2_CONTACT};q=0.5"),
    (f"{BOB1_CONTACT};q=1.0", f"{BOB2_CONTACT};q=0.5", f"{BOB3_CONTACT};q=0.5"),
]
_FLOWS = {BOB: BOB_FLOW, BOB2: BOB2_FLOW, BOB3: BOB3_FLOW}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_forked_invite_any_interleaving_answers_once_and_drains(data: st.DataObject) -> None:
    """Alice acts as a UA (she ACKs every negative final); each Bob answers whatever and whenever.
    Responses that match no transaction any more are forwarded statelessly (§16.7 step 1) and
    kept apart: the invariants are about what the response context decides."""
    w = World(timers=TimerSettings(timer_c=20))
    w.register(contacts=data.draw(st.sampled_from(_CONTACT_SETS)))
    log: list[Sent] = []
    decided: list[Response] = []  # finals the response context sent upstream
    provisional_from: set[Endpoint] = set()
    tags = {BOB: "b1", BOB2: "b2", BOB3: "b3"}

    def record(sent: list[Sent], stray: bool = False) -> None:
        log.extend(sent)
        for s in sent:
            m = s.message
            if s.is_request("CANCEL"):
                assert s.remote in provisional_from  # §9.1: never before a provisional
            if isinstance(m, Response):
                assert s.remote == ALICE
                if m.cseq.method == "INVITE" and m.status >= 200:
                    if not stray:
                        assert m.status != 503  # §16.7 step 6
                        decided.append(m)
                    if m.status >= 300:  # Alice's ACK for a negative final (§17.1.1.3)
                        record(w.receive(non2xx_ack(m), ALICE_FLOW))

    def invites() -> dict[Endpoint, Request]:
        return {s.remote: s.message for s in log if s.is_request("INVITE")}  # type: ignore[misc]

    record(w.receive(invite(), ALICE_FLOW))
    for _ in range(data.draw(st.integers(0, 12))):
        kind = data.draw(st.sampled_from(["respond", "respond", "respond", "cancel", "advance"]))
        if kind == "respond" and invites():
            remote = data.draw(st.sampled_from(sorted(invites(), key=str)))
            status = data.draw(st.sampled_from(_STATUSES))
            if status < 200:
                provisional_from.add(remote)
            response = wire(answer(invites()[remote], status, to_tag=tags[remote]))
            stray = w.node.table.match_response(response) is None
            record(w.receive(response, _FLOWS[remote]), stray)
        elif kind == "cancel":
            record(w.receive(cancel(), ALICE_FLOW))
        else:
            w.clock.pump([0.5] * int(data.draw(st.sampled_from([0.5, 5.0, 25.0])) / 0.5))
            record(w.sender.take())
    w.clock.pump([1.0] * 300)
    record(w.sender.take())

    # the caller gets an answer; at most one negative answer (retransmissions aside) and never one
    # after a 2xx; every transaction ends and nothing is left behind
    assert decided, log
    assert len({m.status for m in decided if m.status >= 300}) <= 1, [m.status for m in decided]
    first_2xx = next((i for i, m in enumerate(decided) if m.status < 300), len(decided))
    assert all(m.status < 300 for m in decided[first_2xx:]), [m.status for m in decided]
    assert len(w.node.table) == 0 and w.node.proxy.idle


def test_single_record_route_setting_when_changing_transport_rfc3261_16_6_step4() -> None:
    w = World(settings=ProxySettings(domains=("example.com",), record_route_double=False))
    w.register(contacts=("<sip:bob@192.0.2.10:5062;transport=tcp>",), flow=BOB_TCP_FLOW)
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    assert fwd.headers.values("record-route") == [rr_tcp(w, BOB_TCP_FLOW)]


def test_ipv6_call_record_route_and_loose_route_rfc5118() -> None:
    local6 = Endpoint("UDP", "2001:db8::1", 5060)
    alice6 = Endpoint("UDP", "2001:db8::20", 5060)
    bob6 = Endpoint("UDP", "2001:db8::10", 5062)
    w = World()
    w.sender.listeners["UDP"] = local6
    w.node.add_local_endpoint(local6)
    alice_flow, bob_flow = Flow(local6, alice6), Flow(local6, bob6)
    w.register(contacts=("<sip:bob@[2001:db8::10]:5062>",), flow=bob_flow)
    text = invite().replace("192.0.2.20:5060", "[2001:db8::20]:5060")
    sent = w.receive(text, alice_flow)
    assert only(sent, lambda s: s.is_response()).remote == alice6
    out = only(sent, lambda s: s.is_request("INVITE"))
    assert out.remote == bob6
    assert out.message.headers.values("record-route") == ["<sip:[2001:db8::1]:5060;lr>"]
    assert out.message.top_via.host == "[2001:db8::1]"
    ok = only(w.receive(answer(out.message, 200, contact="<sip:bob@[2001:db8::10]:5062>"), bob_flow)).message
    bye = in_dialog("BYE", ok, cseq=2, branch="z9hG4bKv6bye").replace("192.0.2.20:5060", "[2001:db8::20]:5060")
    fwd_bye = only(w.receive(bye, alice_flow))
    assert fwd_bye.remote == bob6 and fwd_bye.message.routes == []


def test_locally_generated_branch_responses_carry_a_to_tag_rfc3261_8_2_6_2_16_9(world: World) -> None:
    """A 408 for a branch that timed out (or a 500 for one that could not be sent) is generated by
    the proxy: like any final response it gets a To tag (§8.2.6.2, §16.9), so the caller can ACK it."""
    call_to_bob(world)
    sent = world.run_for(32.2)
    timeout = only(sent, lambda s: s.is_response())
    assert timeout.is_response(408) and timeout.message.to_tag

    w = World()
    w.register()
    w.sender.fail_to[BOB] = SendError("Connection Refused", 503)
    final = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_response() and s.message.status >= 200)
    assert final.message.status == 500 and final.message.to_tag

    w = World(module(lambda msg: setattr(msg, "ruri", "tel:+15551234") or msg.t_relay()))
    final = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_response() and s.message.status >= 200)
    assert final.message.status == 416 and final.message.to_tag  # §16.6 step 7: no route to tel:
