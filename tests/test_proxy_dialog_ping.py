"""Dialog keepalive pings (OpenSIPS ``create_dialog("P")`` / ``("p")``, ``options_ping_interval``) on
the socket-less node of ``support.proxy.World``, timers on its ``task.Clock``:

* every interval, an in-dialog OPTIONS to each flagged party, built as the other party would send it
  (Request-URI its Contact, the dialog's tags, Call-ID), one at a time per party, with a CSeq above any
  the party saw (RFC 3261 §12.2.1.1; OpenSIPS ``last_gen_cseq``: the other party's last + 1, then one
  more per ping); the other party's later requests to it are renumbered on from there, and their
  responses get the original number back (OpenSIPS dialog's CSeq rewriting);
* any answer but 408/481 keeps the call; 481, or no answer within the transaction's timeout (Timer F),
  ends it with BYEs both ways ("Ping Timeout"), whatever the ``B`` flag;
* a call that ends otherwise is no longer pinged.
"""

from __future__ import annotations

from typing import Any

from support.proxy import ALICE, ALICE_FLOW, BOB, BOB_FLOW, World, answer, in_dialog, invite, module, only, requests

from edgeproxy.dialog import DialogSettings, DialogState, DialogTable
from edgeproxy.sip import Response
from edgeproxy.transaction import TimerSettings

INTERVAL = 10


def route(msg: Any) -> None:
    if msg.has_totag():
        if msg.loose_route():
            msg.t_relay()
        return
    msg.create_dialog(msg.header("X-Flags") or "")
    msg.record_route()
    msg.ruri = "sip:bob@192.0.2.10:5062"
    msg.t_relay()


def call(flags: str, timers: TimerSettings | None = None) -> tuple[World, Response]:
    table = DialogTable(DialogSettings(options_ping_interval=INTERVAL))
    w = World(module(route), timers=timers, dialogs=table)
    fwd = only(w.receive(invite(extra=(f"X-Flags: {flags}",)), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    ok = only(w.receive(answer(fwd, 200), BOB_FLOW)).message
    w.receive(in_dialog("ACK", ok, cseq=1, branch="z9hG4bKack1"), ALICE_FLOW)
    return w, ok


def dialog(w: World) -> Any:
    return only(list(w.node.dialogs.table))  # type: ignore[arg-type]


def test_p_pings_the_callee_as_the_caller_would_and_a_200_keeps_the_call() -> None:
    w, ok = call("p")
    assert requests(w.advance(INTERVAL - 0.1), "OPTIONS") == []
    ping = only(requests(w.advance(0.2), "OPTIONS"))
    assert ping.remote == BOB
    m = ping.message
    assert m.uri_text == "sip:bob@192.0.2.10:5062" and m.from_tag == "a1" and m.to_tag == "b1"
    assert m.call_id == ok.call_id and (m.cseq.number, m.cseq.method) == (2, "OPTIONS")  # above the INVITE's 1
    assert m.routes == [] and m.top_via.host == "127.0.0.1"
    assert w.receive(answer(m, 200), BOB_FLOW) == []  # absorbed by the ping's own transaction
    again = only(requests(w.advance(INTERVAL), "OPTIONS"))  # and again next interval, one number on
    assert again.remote == BOB and again.message.cseq.number == 3
    assert dialog(w).state == DialogState.CONFIRMED
    assert w.node.dialogs.table.stats["pings_sent"] == 2 and w.node.dialogs.table.stats["pings_failed"] == 0


def test_the_pinging_side_s_later_requests_are_renumbered_and_their_responses_restored() -> None:
    """OpenSIPS ``dlg_onroute``: after pings took 2 and 3 of Alice's sequence towards Bob, her
    re-INVITE 2 reaches Bob as 4, its ACK as 4, her BYE 3 as 5; Alice gets her own numbers back."""
    w, ok = call("p")
    for _ in range(2):
        ping = only(requests(w.advance(INTERVAL + 0.1), "OPTIONS")).message
        w.receive(answer(ping, 200), BOB_FLOW)
    reinvite = only(requests(w.receive(in_dialog("INVITE", ok, cseq=2, branch="z9hG4bKre1"), ALICE_FLOW),
                             "INVITE")).message
    assert (reinvite.cseq.number, reinvite.cseq.method) == (4, "INVITE")
    up = [s.message for s in w.receive(answer(reinvite, 200), BOB_FLOW) if s.remote == ALICE]
    assert [r.cseq.number for r in up if isinstance(r, Response) and r.status == 200] == [2]
    ack = only(requests(w.receive(in_dialog("ACK", ok, cseq=2, branch="z9hG4bKack2"), ALICE_FLOW), "ACK")).message
    assert ack.cseq.number == 4
    bye = only(requests(w.receive(in_dialog("BYE", ok, cseq=3, branch="z9hG4bKbye2"), ALICE_FLOW), "BYE")).message
    assert bye.cseq.number == 5
    up = [s.message for s in w.receive(answer(bye, 200), BOB_FLOW)]
    assert [(r.status, r.cseq.number) for r in up if isinstance(r, Response)] == [(200, 3)]
    assert len(w.node.dialogs.table) == 0


def test_capital_p_pings_the_caller_as_the_callee_would() -> None:
    w, _ = call("P")
    ping = only(requests(w.advance(INTERVAL + 0.1), "OPTIONS"))
    m = ping.message
    assert ping.remote == ALICE and m.uri_text == "sip:alice@192.0.2.20:5060"
    assert m.from_tag == "b1" and m.to_tag == "a1" and m.cseq.number == 1  # the callee never sent one


def test_any_other_answer_is_alive_even_a_500() -> None:
    w, _ = call("p")
    ping = only(requests(w.advance(INTERVAL + 0.1), "OPTIONS")).message
    w.receive(answer(ping, 500), BOB_FLOW)
    assert dialog(w).state == DialogState.CONFIRMED and not requests(w.sender.sent, "BYE")


def test_a_481_ends_the_call_with_byes_both_ways_even_without_b() -> None:
    w, _ = call("Pp")
    pings = requests(w.advance(INTERVAL + 0.1), "OPTIONS")
    assert sorted(p.remote.host for p in pings) == ["192.0.2.10", "192.0.2.20"]
    to_bob = only(pings, lambda s: s.remote == BOB).message
    sent = w.receive(answer(to_bob, 481), BOB_FLOW)
    byes = requests(sent, "BYE")
    assert sorted(b.remote.host for b in byes) == ["192.0.2.10", "192.0.2.20"]
    # each BYE takes the next of the node's numbers to a party it pinged: the pings took 2 (to Bob) and 1
    assert only(byes, lambda s: s.remote == BOB).message.cseq.number == 3
    assert only(byes, lambda s: s.remote == ALICE).message.cseq.number == 2
    assert len(w.node.dialogs.table) == 0
    assert w.node.dialogs.table.stats["pings_failed"] == 1
    # the other party's ping is answered late: nothing more happens, and no ping follows
    to_alice = only(pings, lambda s: s.remote == ALICE).message
    assert w.receive(answer(to_alice, 200), ALICE_FLOW) == []
    assert requests(w.advance(INTERVAL * 2), "OPTIONS") == []


def test_no_answer_is_a_timeout_and_one_ping_at_a_time() -> None:
    w, _ = call("p", TimerSettings(t1=0.5))  # Timer F = 64 * T1 = 32 s > the interval
    first = only(requests(w.advance(INTERVAL + 0.1), "OPTIONS")).message
    again = requests(w.run_for(INTERVAL), "OPTIONS")  # retransmissions only, no second ping
    assert again and {s.message.top_via.branch for s in again} == {first.top_via.branch}
    sent = w.run_for(32)
    byes = {b.message.top_via.branch: b.remote.host for b in requests(sent, "BYE")}  # (and their retransmissions)
    assert sorted(byes.values()) == ["192.0.2.10", "192.0.2.20"]
    assert len(w.node.dialogs.table) == 0


def test_a_call_ended_by_bye_is_no_longer_pinged_and_without_flags_nothing_is() -> None:
    w, ok = call("p")
    w.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKbye1"), ALICE_FLOW)
    assert requests(w.advance(INTERVAL * 3), "OPTIONS") == []
    w2, _ = call("B")
    assert requests(w2.advance(INTERVAL * 3), "OPTIONS") == []


def test_shipped_routes_take_their_dialog_flags_from_route_params() -> None:
    import edgeproxy_routes.default as default
    from edgeproxy.dialog import FLAG_BYE_ON_TIMEOUT, FLAG_PING_CALLEE, FLAG_PING_CALLER
    from edgeproxy.routing.testing import RouteHarness

    for params, flags in (({}, FLAG_BYE_ON_TIMEOUT),
                          ({"dialog_flags": "BPp"}, FLAG_BYE_ON_TIMEOUT | FLAG_PING_CALLER | FLAG_PING_CALLEE)):
        h = RouteHarness(domains=["example.com"], params=params)
        h.register("sip:bob@example.com", "sip:bob@192.0.2.10:5062")
        assert h.run(default.request_route, invite()).relayed
        assert only(list(h.dialogs)).flags == flags  # type: ignore[arg-type]
