"""The stateful proxy engine (RFC 3261 §16) without sockets: route errors and local replies, stray
responses (§16.7 step 1), ACK matching after a 2xx (RFC 6026 §8.7), leak checks and more
transaction-level behaviour (Timer H, CANCEL corner cases, non-INVITE forking, TCP callers). The world
and cast are ``test_proxy_node.py``'s (``tests/support/proxy.py``)."""

from __future__ import annotations

import pytest
from support.proxy import (
    ALICE,
    ALICE_FLOW,
    BOB,
    BOB1_CONTACT,
    BOB2,
    BOB2_CONTACT,
    BOB2_FLOW,
    BOB_FLOW,
    BOB_TCP_FLOW,
    LOCAL_TCP,
    RR_UDP,
    World,
    answer,
    call_to_bob,
    cancel,
    forked,
    in_dialog,
    invite,
    module,
    non2xx_ack,
    only,
    requests,
    responses,
    rr_tcp,
    sip,
    voicemail_routes,
)
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel

from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.routing import RouteReply
from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.transaction import TimerSettings


@pytest.fixture
def world() -> World:
    return World()


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

