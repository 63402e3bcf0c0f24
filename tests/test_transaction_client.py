"""Client transactions: RFC 3261 §17.1.1 (Figure 5), §17.1.2 (Figure 6) and RFC 6026 §8.4.

Time is a plain float; every timer expiry is asserted at its exact instant.
"""

from __future__ import annotations

import pytest
from support.transactions import run_timers

from edgeproxy.sip import Request, Response, parse_datagram
from edgeproxy.transaction import (
    TIMER_CANCEL,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    DeliverResponse,
    SendRequest,
    State,
    Terminated,
    Timeout,
    TimerSettings,
    TransactionError,
    TransportFailure,
)


def request(method: str = "INVITE", branch: str = "z9hG4bKclient1", *, routes: tuple[str, ...] = (),
            cseq: int = 7, transport: str = "UDP") -> Request:
    lines = [
        f"{method} sip:bob@example.com SIP/2.0",
        f"Via: SIP/2.0/{transport} proxy.example.net:5060;branch={branch}",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKupstream;received=192.0.2.1",
        "Max-Forwards: 69",
        *[f"Route: {r}" for r in routes],
        "From: \"Alice\" <sip:alice@example.org>;tag=from1",
        "To: <sip:bob@example.com>",
        "Call-ID: call-1@example.org",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@192.0.2.1>",
        "Content-Type: application/sdp",
        "",
        "v=0",
    ]
    msg = parse_datagram("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, to_tag: str | None = "to1") -> Response:
    return req.make_response(status, to_tag=to_tag)


def sends(timeline) -> list[float]:
    return [t for t, a in timeline if isinstance(a, SendRequest)]


def invite_tx(reliable: bool = False, timers: TimerSettings | None = None, **kw) -> ClientInviteTransaction:
    tx = ClientInviteTransaction(request("INVITE", **kw), reliable=reliable, timers=timers, now=0.0)
    assert tx.start(0.0) == [SendRequest(tx.request)]
    return tx


def non_invite_tx(reliable: bool = False, timers: TimerSettings | None = None,
                  method: str = "OPTIONS") -> ClientNonInviteTransaction:
    tx = ClientNonInviteTransaction(request(method), reliable=reliable, timers=timers, now=0.0)
    assert tx.start(0.0) == [SendRequest(tx.request)]
    return tx


# =================================================================================================
# INVITE client transaction, §17.1.1
# =================================================================================================


class TestInviteCalling:
    def test_start_enters_calling_and_arms_a_b_c(self) -> None:
        tx = invite_tx()
        assert tx.state is State.CALLING
        assert tx.deadlines == {"A": 0.5, "B": 32.0, "C": 180.0}
        assert tx.get_timer() == 0.5

    def test_timer_a_doubles_without_cap_until_timer_b_17_1_1_2(self) -> None:
        tx = invite_tx()
        timeline = run_timers(tx, 100.0)
        assert sends(timeline) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        resent = [a for _, a in timeline if isinstance(a, SendRequest)]
        assert all(a.retransmit and a.request is tx.request for a in resent)
        assert timeline[-2:] == [(32.0, Timeout("B")), (32.0, Terminated())]
        assert tx.state is State.TERMINATED
        assert tx.get_timer() is None

    def test_timer_a_follows_t1(self) -> None:
        tx = invite_tx(timers=TimerSettings(t1=0.25))
        timeline = run_timers(tx, 100.0)
        assert sends(timeline) == [0.25, 0.75, 1.75, 3.75, 7.75, 15.75]
        assert timeline[-2] == (16.0, Timeout("B"))

    def test_reliable_transport_never_retransmits_17_1_1_2(self) -> None:
        tx = invite_tx(reliable=True)
        assert "A" not in tx.deadlines
        timeline = run_timers(tx, 100.0)
        assert timeline == [(32.0, Timeout("B")), (32.0, Terminated())]

    def test_configured_timer_b(self) -> None:
        tx = invite_tx(reliable=True, timers=TimerSettings(timer_b=10.0))
        assert run_timers(tx, 100.0)[0] == (10.0, Timeout("B"))

    def test_provisional_moves_to_proceeding_and_stops_a_and_b(self) -> None:
        tx = invite_tx()
        run_timers(tx, 0.5)
        ringing = response(tx.request, 180)
        assert tx.receive_response(ringing, 0.7) == [DeliverResponse(ringing)]
        assert tx.state is State.PROCEEDING
        assert set(tx.deadlines) == {"C"}
        assert run_timers(tx, 100.0) == []
        assert tx.state is State.PROCEEDING

    def test_100_trying_moves_to_proceeding_too(self) -> None:
        tx = invite_tx()
        trying = response(tx.request, 100, to_tag=None)
        assert tx.receive_response(trying, 0.1) == [DeliverResponse(trying)]
        assert tx.state is State.PROCEEDING

    def test_non_2xx_final_in_calling_acks_and_completes(self) -> None:
        tx = invite_tx()
        busy = response(tx.request, 486)
        actions = tx.receive_response(busy, 0.2)
        assert actions == [SendRequest(tx.ack), DeliverResponse(busy)]
        assert tx.state is State.COMPLETED
        assert tx.deadlines == {"D": 32.2}

    def test_2xx_in_calling_moves_to_accepted_rfc6026(self) -> None:
        tx = invite_tx()
        ok = response(tx.request, 200)
        assert tx.receive_response(ok, 0.2) == [DeliverResponse(ok)]
        assert tx.state is State.ACCEPTED
        assert tx.ack is None  # the ACK for a 2xx is the TU's (§13.2.2.4)
        assert tx.deadlines == {"M": 32.2}

    def test_transport_error_in_calling_terminates_17_1_4(self) -> None:
        tx = invite_tx()
        assert tx.transport_error(0.1) == [TransportFailure(), Terminated()]
        assert tx.state is State.TERMINATED
        assert tx.get_timer() is None


class TestInviteProceeding:
    def proceeding(self, **kw) -> ClientInviteTransaction:
        tx = invite_tx(**kw)
        tx.receive_response(response(tx.request, 180), 1.0)
        return tx

    def test_every_provisional_is_delivered(self) -> None:
        tx = self.proceeding()
        again = response(tx.request, 183)
        assert tx.receive_response(again, 2.0) == [DeliverResponse(again)]
        assert tx.state is State.PROCEEDING

    def test_non_2xx_final_in_proceeding(self) -> None:
        tx = self.proceeding()
        decline = response(tx.request, 603)
        assert tx.receive_response(decline, 5.0) == [SendRequest(tx.ack), DeliverResponse(decline)]
        assert tx.state is State.COMPLETED
        assert tx.deadlines == {"D": 37.0}

    def test_2xx_in_proceeding(self) -> None:
        tx = self.proceeding()
        ok = response(tx.request, 200)
        assert tx.receive_response(ok, 5.0) == [DeliverResponse(ok)]
        assert tx.state is State.ACCEPTED
        assert tx.deadlines == {"M": 37.0}

    def test_transport_error_in_proceeding(self) -> None:
        tx = self.proceeding()
        assert tx.transport_error(2.0) == [TransportFailure(), Terminated()]


class TestTimerC:
    """§16.6 step 11, §16.7 step 2, §16.8."""

    def test_restarted_by_101_to_199_not_by_100(self) -> None:
        tx = invite_tx()
        tx.receive_response(response(tx.request, 100, to_tag=None), 10.0)
        assert tx.deadlines["C"] == 180.0
        tx.receive_response(response(tx.request, 180), 20.0)
        assert tx.deadlines["C"] == 200.0
        tx.receive_response(response(tx.request, 183), 50.0)
        assert tx.deadlines["C"] == 230.0
        tx.receive_response(response(tx.request, 100, to_tag=None), 60.0)
        assert tx.deadlines["C"] == 230.0

    def test_in_calling_acts_as_408_and_terminates(self) -> None:
        tx = invite_tx(reliable=True, timers=TimerSettings(timer_b=64.0, timer_c=20.0))
        assert run_timers(tx, 100.0) == [(20.0, Timeout("C")), (20.0, Terminated())]

    def test_in_proceeding_asks_tu_to_cancel_and_waits_64_t1(self) -> None:
        tx = invite_tx(timers=TimerSettings(timer_c=60.0))
        tx.receive_response(response(tx.request, 180), 1.0)
        assert run_timers(tx, 61.0) == [(61.0, Timeout("C"))]
        assert tx.state is State.PROCEEDING
        assert tx.deadlines == {TIMER_CANCEL: 93.0}
        terminated = response(tx.request, 487)
        assert tx.receive_response(terminated, 62.0) == [SendRequest(tx.ack), DeliverResponse(terminated)]
        assert tx.state is State.COMPLETED

    def test_no_final_after_the_cancel_ends_the_transaction_9_1(self) -> None:
        tx = invite_tx(timers=TimerSettings(timer_c=60.0))
        tx.receive_response(response(tx.request, 180), 1.0)
        timeline = run_timers(tx, 200.0)
        assert timeline == [(61.0, Timeout("C")), (93.0, Timeout(TIMER_CANCEL)), (93.0, Terminated())]

    def test_provisional_after_timer_c_fired_does_not_rearm_it(self) -> None:
        tx = invite_tx(timers=TimerSettings(timer_c=60.0))
        tx.receive_response(response(tx.request, 180), 1.0)
        run_timers(tx, 61.0)
        tx.receive_response(response(tx.request, 180), 70.0)
        assert tx.deadlines == {TIMER_CANCEL: 93.0}

    def test_cancel_sent_by_tu_starts_the_wait(self) -> None:
        tx = invite_tx()
        tx.receive_response(response(tx.request, 180), 1.0)
        assert tx.cancel_sent(4.0) == []
        assert tx.deadlines[TIMER_CANCEL] == 36.0
        assert tx.cancel_sent(5.0) == []
        assert tx.deadlines[TIMER_CANCEL] == 36.0  # the first CANCEL counts

    def test_cancel_sent_in_calling_is_ignored_9_1(self) -> None:
        tx = invite_tx()
        assert tx.cancel_sent(0.1) == []
        assert TIMER_CANCEL not in tx.deadlines

    def test_switched_off(self) -> None:
        tx = invite_tx(timers=TimerSettings(timer_c=None))
        assert "C" not in tx.deadlines
        tx.receive_response(response(tx.request, 180), 1.0)
        assert tx.get_timer() is None

    def test_stopped_by_final(self) -> None:
        tx = invite_tx()
        tx.receive_response(response(tx.request, 180), 1.0)
        tx.receive_response(response(tx.request, 200), 2.0)
        assert "C" not in tx.deadlines


class TestInviteCompleted:
    def completed(self, reliable: bool = False, **kw) -> ClientInviteTransaction:
        tx = invite_tx(reliable=reliable, **kw)
        tx.receive_response(response(tx.request, 180), 0.1)
        tx.receive_response(response(tx.request, 404), 1.0)
        return tx

    def test_ack_for_non_2xx_17_1_1_3(self) -> None:
        tx = self.completed(routes=("<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"))
        ack = tx.ack
        invite = tx.request
        assert ack is not None and ack.method == "ACK"
        assert ack.uri_text == invite.uri_text
        assert len(ack.vias) == 1
        assert ack.top_via == invite.top_via and ack.top_via.branch == "z9hG4bKclient1"
        assert ack.call_id == invite.call_id
        assert ack.headers.get("from") == invite.headers.get("from")
        assert ack.to_tag == "to1"
        assert ack.headers.get("to") == "<sip:bob@example.com>;tag=to1"
        assert tuple(ack.cseq) == (7, "ACK")
        assert ack.headers.get_all("route") == ["<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>"]
        assert ack.max_forwards == 70
        assert ack.body == b""
        assert "contact" not in ack.headers
        reparsed = parse_datagram(ack.to_bytes())
        assert reparsed == ack

    def test_retransmitted_final_is_acked_again_not_delivered(self) -> None:
        tx = self.completed()
        again = response(tx.request, 404)
        assert tx.receive_response(again, 2.0) == [SendRequest(tx.ack, retransmit=True)]
        assert tx.receive_response(again, 3.0) == [SendRequest(tx.ack, retransmit=True)]
        assert tx.state is State.COMPLETED

    def test_other_responses_absorbed(self) -> None:
        tx = self.completed()
        assert tx.receive_response(response(tx.request, 180), 2.0) == []
        assert tx.receive_response(response(tx.request, 200), 2.0) == []
        assert tx.state is State.COMPLETED

    def test_timer_d_terminates(self) -> None:
        tx = self.completed()
        assert run_timers(tx, 100.0) == [(33.0, Terminated())]

    def test_timer_d_configurable(self) -> None:
        tx = self.completed(timers=TimerSettings(timer_d=40.0))
        assert run_timers(tx, 100.0) == [(41.0, Terminated())]

    def test_reliable_terminates_at_once_timer_d_zero(self) -> None:
        tx = invite_tx(reliable=True)
        busy = response(tx.request, 486)
        actions = tx.receive_response(busy, 1.0)
        assert actions == [SendRequest(tx.ack), DeliverResponse(busy), Terminated()]
        assert tx.state is State.TERMINATED

    def test_transport_error_sending_ack(self) -> None:
        tx = self.completed()
        assert tx.transport_error(1.5) == [TransportFailure(), Terminated()]


class TestInviteAccepted:
    """RFC 6026 §8.4: the client INVITE transaction absorbs 2xx retransmissions and passes them up."""

    def accepted(self, reliable: bool = False) -> tuple[ClientInviteTransaction, Response]:
        tx = invite_tx(reliable=reliable)
        ok = response(tx.request, 200)
        tx.receive_response(ok, 2.0)
        return tx, ok

    def test_further_2xx_are_delivered(self) -> None:
        tx, ok = self.accepted()
        assert tx.receive_response(ok, 3.0) == [DeliverResponse(ok)]
        forked = response(tx.request, 200, to_tag="other-fork")
        assert tx.receive_response(forked, 4.0) == [DeliverResponse(forked)]
        assert tx.state is State.ACCEPTED

    def test_non_2xx_and_provisionals_ignored(self) -> None:
        tx, _ = self.accepted()
        assert tx.receive_response(response(tx.request, 180), 3.0) == []
        assert tx.receive_response(response(tx.request, 486), 3.0) == []
        assert tx.ack is None

    def test_timer_m_terminates_on_any_transport(self) -> None:
        for reliable in (False, True):
            tx, _ = self.accepted(reliable)
            assert run_timers(tx, 100.0) == [(34.0, Terminated())]

    def test_timer_m_configurable(self) -> None:
        tx = invite_tx(timers=TimerSettings(timer_m=5.0))
        tx.receive_response(response(tx.request, 200), 1.0)
        assert run_timers(tx, 100.0) == [(6.0, Terminated())]

    def test_transport_error_reported_but_state_kept(self) -> None:
        tx, _ = self.accepted()
        assert tx.transport_error(3.0) == [TransportFailure()]
        assert tx.state is State.ACCEPTED


class TestTimerCFromFirstReply:
    """``c_from_first_reply``: Timer C as OpenSIPS's fr_inv_timeout -- B alone until the first
    reply, then C from that reply (also a 100); the route's $T_fr_inv_timeout uses it."""

    def tx(self, reliable: bool = False, **timers: float) -> ClientInviteTransaction:
        tx = ClientInviteTransaction(request("INVITE"), reliable=reliable, timers=TimerSettings(**timers), now=0.0,
                                     c_from_first_reply=True)
        tx.start(0.0)
        return tx

    def test_not_armed_before_any_reply(self) -> None:
        tx = self.tx(timer_b=2.0, timer_c=1.0)
        assert tx.deadlines == {"A": 0.5, "B": 2.0}
        timeline = run_timers(tx, 10.0)
        assert timeline[-2:] == [(2.0, Timeout("B")), (2.0, Terminated())]
        assert Timeout("C") not in [a for _, a in timeline]

    def test_armed_by_the_first_reply_even_a_100(self) -> None:
        tx = self.tx(reliable=True, timer_b=2.0, timer_c=5.0)
        tx.receive_response(response(tx.request, 100, to_tag=None), 1.5)
        assert tx.deadlines == {"C": 6.5}
        tx.receive_response(response(tx.request, 180), 3.0)
        assert tx.deadlines == {"C": 8.0}  # restarted by 101-199 as usual
        assert run_timers(tx, 8.0) == [(8.0, Timeout("C"))]
        assert tx.state is State.PROCEEDING and set(tx.deadlines) == {TIMER_CANCEL}

    def test_restart_timer_c_moves_a_running_timer_only(self) -> None:
        tx = self.tx(reliable=True, timer_b=2.0, timer_c=120.0)
        tx.restart_timer_c(3.0, 1.0)
        assert tx.deadlines == {"B": 2.0}  # not running yet: nothing to move
        tx.receive_response(response(tx.request, 180), 1.5)
        tx.restart_timer_c(3.0, 1.5)
        assert tx.deadlines == {"C": 4.5} and tx.get_timer() == 4.5
        assert run_timers(tx, 5.0) == [(4.5, Timeout("C"))]
        tx.restart_timer_c(3.0, 6.0)
        assert "C" not in tx.deadlines  # fired: the cancel wait runs, C does not come back

    def test_switched_off_stays_off(self) -> None:
        tx = self.tx(reliable=True, timer_c=None)  # type: ignore[arg-type]
        tx.receive_response(response(tx.request, 180), 1.0)
        assert tx.get_timer() is None


class TestInviteMisuse:
    def test_terminated_ignores_everything(self) -> None:
        tx = invite_tx()
        tx.transport_error(0.0)
        assert tx.receive_response(response(tx.request, 200), 1.0) == []
        assert tx.receive_response(response(tx.request, 486), 1.0) == []
        assert tx.transport_error(1.0) == []
        assert tx.handle_timer(1000.0) == []

    def test_start_twice(self) -> None:
        tx = invite_tx()
        with pytest.raises(TransactionError):
            tx.start(1.0)

    def test_wrong_method(self) -> None:
        with pytest.raises(TransactionError):
            ClientInviteTransaction(request("OPTIONS"), reliable=False)
        with pytest.raises(TransactionError):
            ClientNonInviteTransaction(request("INVITE"), reliable=False)
        with pytest.raises(TransactionError):
            ClientNonInviteTransaction(request("ACK"), reliable=False)

    def test_repr_names_state(self) -> None:
        assert "Calling" in repr(invite_tx())


# =================================================================================================
# Non-INVITE client transaction, §17.1.2
# =================================================================================================


class TestNonInviteTrying:
    def test_timer_e_doubles_up_to_t2_until_timer_f(self) -> None:
        tx = non_invite_tx()
        assert tx.state is State.TRYING
        assert tx.deadlines == {"E": 0.5, "F": 32.0}
        timeline = run_timers(tx, 100.0)
        assert sends(timeline) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        assert timeline[-2:] == [(32.0, Timeout("F")), (32.0, Terminated())]
        assert tx.state is State.TERMINATED

    def test_timer_e_with_other_t2(self) -> None:
        tx = non_invite_tx(timers=TimerSettings(t1=0.5, t2=2.0))
        assert sends(run_timers(tx, 10.0)) == [0.5, 1.5, 3.5, 5.5, 7.5, 9.5]

    def test_reliable_never_retransmits(self) -> None:
        tx = non_invite_tx(reliable=True)
        assert run_timers(tx, 100.0) == [(32.0, Timeout("F")), (32.0, Terminated())]

    def test_configured_timer_f(self) -> None:
        tx = non_invite_tx(reliable=True, timers=TimerSettings(timer_f=30.0))
        assert run_timers(tx, 100.0)[0] == (30.0, Timeout("F"))

    def test_provisional_to_proceeding(self) -> None:
        tx = non_invite_tx()
        trying = response(tx.request, 100, to_tag=None)
        assert tx.receive_response(trying, 0.2) == [DeliverResponse(trying)]
        assert tx.state is State.PROCEEDING

    @pytest.mark.parametrize("status", [200, 202, 302, 404, 503, 603])
    def test_any_final_in_trying_completes(self, status: int) -> None:
        tx = non_invite_tx()
        final = response(tx.request, status)
        assert tx.receive_response(final, 0.2) == [DeliverResponse(final)]
        assert tx.state is State.COMPLETED
        assert tx.deadlines == {"K": 5.2}
        assert tx.last_response is final

    def test_transport_error(self) -> None:
        tx = non_invite_tx()
        assert tx.transport_error(0.1) == [TransportFailure(), Terminated()]


class TestNonInviteProceeding:
    def test_timer_e_fires_every_t2(self) -> None:
        tx = non_invite_tx()
        run_timers(tx, 0.5)
        tx.receive_response(response(tx.request, 100, to_tag=None), 0.6)
        timeline = run_timers(tx, 100.0)
        assert sends(timeline) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
        assert timeline[-2:] == [(32.0, Timeout("F")), (32.0, Terminated())]

    def test_provisionals_delivered(self) -> None:
        tx = non_invite_tx()
        tx.receive_response(response(tx.request, 100, to_tag=None), 0.1)
        p = response(tx.request, 183)
        assert tx.receive_response(p, 0.2) == [DeliverResponse(p)]
        assert tx.state is State.PROCEEDING

    def test_final_completes(self) -> None:
        tx = non_invite_tx()
        tx.receive_response(response(tx.request, 100, to_tag=None), 0.1)
        ok = response(tx.request, 200)
        assert tx.receive_response(ok, 3.0) == [DeliverResponse(ok)]
        assert tx.state is State.COMPLETED
        assert tx.deadlines == {"K": 8.0}

    def test_reliable_proceeding_no_retransmission(self) -> None:
        tx = non_invite_tx(reliable=True)
        tx.receive_response(response(tx.request, 100, to_tag=None), 0.1)
        assert tx.deadlines == {"F": 32.0}

    def test_transport_error(self) -> None:
        tx = non_invite_tx()
        tx.receive_response(response(tx.request, 100, to_tag=None), 0.1)
        assert tx.transport_error(0.2) == [TransportFailure(), Terminated()]


class TestNonInviteCompleted:
    def test_response_retransmissions_absorbed_until_timer_k(self) -> None:
        tx = non_invite_tx()
        ok = response(tx.request, 200)
        tx.receive_response(ok, 1.0)
        assert tx.receive_response(ok, 2.0) == []
        assert tx.receive_response(response(tx.request, 180), 2.0) == []
        assert run_timers(tx, 100.0) == [(6.0, Terminated())]

    def test_timer_k_follows_t4(self) -> None:
        tx = non_invite_tx(timers=TimerSettings(t4=2.5))
        tx.receive_response(response(tx.request, 200), 1.0)
        assert run_timers(tx, 100.0) == [(3.5, Terminated())]

    def test_reliable_terminates_at_once_timer_k_zero(self) -> None:
        tx = non_invite_tx(reliable=True)
        ok = response(tx.request, 200)
        assert tx.receive_response(ok, 1.0) == [DeliverResponse(ok), Terminated()]
        assert tx.state is State.TERMINATED

    def test_cancel_is_a_non_invite_transaction(self) -> None:
        tx = non_invite_tx(method="CANCEL")
        ok = response(tx.request, 200)
        assert tx.receive_response(ok, 1.0) == [DeliverResponse(ok)]

    def test_transport_error(self) -> None:
        tx = non_invite_tx()
        tx.receive_response(response(tx.request, 200), 1.0)
        assert tx.transport_error(2.0) == [TransportFailure(), Terminated()]


class TestTimerSettings:
    def test_defaults_table_4(self) -> None:
        t = TimerSettings()
        assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
        assert (t.a, t.b, t.c, t.d, t.e, t.f, t.g, t.h, t.i, t.j, t.k, t.l, t.m) == (
            0.5, 32.0, 180.0, 32.0, 0.5, 32.0, 0.5, 32.0, 5.0, 32.0, 5.0, 32.0, 32.0)
        assert t.cancel_wait == 32.0

    def test_64_t1_timers_follow_t1(self) -> None:
        t = TimerSettings(t1=1.0)
        assert (t.b, t.f, t.h, t.j, t.l, t.m) == (64.0,) * 6

    def test_zero_on_reliable(self) -> None:
        t = TimerSettings()
        assert [t.for_transport(x, True) for x in "DIJK"] == [0.0] * 4
        assert [t.for_transport(x, False) for x in "DIJK"] == [32.0, 5.0, 32.0, 5.0]
        assert t.for_transport("B", True) == 32.0
        with pytest.raises(ValueError):
            TimerSettings(timer_c=None).for_transport("C", False)

    @pytest.mark.parametrize("kw", [{"t1": 0}, {"t1": 1.0, "t2": 0.5}, {"t4": -1}, {"timer_b": 0},
                                    {"timer_c": -5}])
    def test_rejects_nonsense(self, kw) -> None:
        with pytest.raises(ValueError):
            TimerSettings(**kw)
