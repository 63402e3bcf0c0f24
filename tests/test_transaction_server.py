"""Server transactions: RFC 3261 §17.2.1 (Figure 7), §17.2.2 (Figure 8) and RFC 6026 §8.5-§8.7."""

from __future__ import annotations

import pytest
from support.transactions import run_timers

from edgeproxy.sip import Request, parse_datagram
from edgeproxy.transaction import (
    DeliverRequest,
    SendResponse,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Terminated,
    Timeout,
    TimerSettings,
    TransactionError,
    TransportFailure,
)


def request(method: str = "INVITE", branch: str = "z9hG4bKuac1", *, cseq_method: str | None = None,
            to_tag: str | None = None) -> Request:
    lines = [
        f"{method} sip:bob@example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.org>;tag=from1",
        "To: <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: call-1@example.org",
        f"CSeq: 3 {cseq_method or method}",
        "",
        "",
    ]
    msg = parse_datagram("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def ack(to_tag: str = "to1") -> Request:
    return request("ACK", to_tag=to_tag)


def invite_tx(reliable: bool = False, timers: TimerSettings | None = None,
              auto_100: bool = False) -> ServerInviteTransaction:
    tx = ServerInviteTransaction(request(), reliable=reliable, timers=timers, now=0.0, auto_100=auto_100)
    tx.start(0.0)
    return tx


def non_invite_tx(reliable: bool = False, timers: TimerSettings | None = None,
                  method: str = "REGISTER") -> ServerNonInviteTransaction:
    tx = ServerNonInviteTransaction(request(method), reliable=reliable, timers=timers, now=0.0)
    assert tx.start(0.0) == []
    return tx


# =================================================================================================
# INVITE server transaction, §17.2.1
# =================================================================================================


class TestInviteProceeding:
    def test_auto_100_sends_trying_at_creation(self) -> None:
        tx = ServerInviteTransaction(request(), reliable=False, now=0.0, auto_100=True)
        actions = tx.start(0.0)
        assert len(actions) == 1 and isinstance(actions[0], SendResponse)
        trying = actions[0].response
        assert trying.status == 100 and trying.reason == "Trying"
        assert trying.to_tag is None  # §8.2.6.2
        assert trying.top_via.branch == "z9hG4bKuac1"
        assert tx.state is State.PROCEEDING
        assert tx.get_timer() is None

    def test_without_auto_100_nothing_is_sent(self) -> None:
        tx = ServerInviteTransaction(request(), reliable=False, now=0.0)
        assert tx.start(0.0) == []
        assert tx.state is State.PROCEEDING

    def test_retransmitted_invite_resends_latest_provisional(self) -> None:
        tx = invite_tx(auto_100=True)
        trying = tx.last_response
        assert tx.receive_request(request(), 0.5) == [SendResponse(trying, retransmit=True)]
        ringing = tx.request.make_response(180, to_tag="to1")
        assert tx.send_response(ringing, 1.0) == [SendResponse(ringing)]
        assert tx.receive_request(request(), 1.5) == [SendResponse(ringing, retransmit=True)]
        assert tx.state is State.PROCEEDING

    def test_retransmitted_invite_before_any_provisional_is_absorbed(self) -> None:
        tx = invite_tx()
        assert tx.receive_request(request(), 0.5) == []

    def test_non_2xx_final_enters_completed(self) -> None:
        tx = invite_tx()
        busy = tx.request.make_response(486, to_tag="to1")
        assert tx.send_response(busy, 2.0) == [SendResponse(busy)]
        assert tx.state is State.COMPLETED
        assert tx.deadlines == {"G": 2.5, "H": 34.0}

    def test_2xx_enters_accepted_rfc6026(self) -> None:
        tx = invite_tx()
        ok = tx.request.make_response(200, to_tag="to1")
        assert tx.send_response(ok, 2.0) == [SendResponse(ok)]
        assert tx.state is State.ACCEPTED
        assert tx.deadlines == {"L": 34.0}

    def test_transport_error(self) -> None:
        tx = invite_tx(auto_100=True)
        assert tx.transport_error(0.1) == [TransportFailure(), Terminated()]
        assert tx.state is State.TERMINATED


class TestInviteCompleted:
    def completed(self, reliable: bool = False, **kw) -> ServerInviteTransaction:
        tx = invite_tx(reliable=reliable, **kw)
        tx.send_response(tx.request.make_response(404, to_tag="to1"), 1.0)
        return tx

    def test_timer_g_doubles_up_to_t2_until_timer_h(self) -> None:
        tx = self.completed()
        timeline = run_timers(tx, 100.0)
        resent = [t for t, a in timeline if isinstance(a, SendResponse)]
        assert resent == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
        assert all(a.response is tx.last_response and a.retransmit for _, a in timeline
                   if isinstance(a, SendResponse))
        assert timeline[-2:] == [(33.0, Timeout("H")), (33.0, Terminated())]

    def test_reliable_no_timer_g_but_timer_h(self) -> None:
        tx = self.completed(reliable=True)
        assert tx.deadlines == {"H": 33.0}
        assert run_timers(tx, 100.0) == [(33.0, Timeout("H")), (33.0, Terminated())]

    def test_configured_timer_h(self) -> None:
        tx = self.completed(reliable=True, timers=TimerSettings(timer_h=10.0))
        assert run_timers(tx, 100.0)[0] == (11.0, Timeout("H"))

    def test_retransmitted_invite_resends_final(self) -> None:
        tx = self.completed()
        assert tx.receive_request(request(), 1.2) == [SendResponse(tx.last_response, retransmit=True)]
        assert tx.state is State.COMPLETED

    def test_ack_confirms_and_stops_g_and_h(self) -> None:
        tx = self.completed()
        run_timers(tx, 1.5)
        assert tx.receive_request(ack(), 1.7) == []
        assert tx.state is State.CONFIRMED
        assert tx.deadlines == {"I": 6.7}

    def test_further_tu_finals_discarded(self) -> None:
        tx = self.completed()
        assert tx.send_response(tx.request.make_response(500, to_tag="to1"), 1.1) == []
        assert tx.send_response(tx.request.make_response(200, to_tag="to1"), 1.1) == []
        assert tx.last_response.status == 404
        assert tx.state is State.COMPLETED

    def test_transport_error(self) -> None:
        tx = self.completed()
        assert tx.transport_error(1.1) == [TransportFailure(), Terminated()]


class TestInviteConfirmed:
    def confirmed(self, reliable: bool = False, **kw):
        tx = invite_tx(reliable=reliable, **kw)
        tx.send_response(tx.request.make_response(480, to_tag="to1"), 1.0)
        return tx, tx.receive_request(ack(), 2.0)

    def test_absorbs_acks_and_invites_until_timer_i(self) -> None:
        tx, _ = self.confirmed()
        assert tx.receive_request(ack(), 3.0) == []
        assert tx.receive_request(request(), 3.0) == []
        assert tx.send_response(tx.request.make_response(500), 3.0) == []
        assert run_timers(tx, 100.0) == [(7.0, Terminated())]

    def test_timer_i_follows_t4(self) -> None:
        tx, _ = self.confirmed(timers=TimerSettings(t4=1.0))
        assert run_timers(tx, 100.0) == [(3.0, Terminated())]

    def test_transport_error(self) -> None:
        tx, _ = self.confirmed()
        assert tx.transport_error(3.0) == [TransportFailure(), Terminated()]
        assert tx.get_timer() is None

    def test_reliable_terminates_on_ack_timer_i_zero(self) -> None:
        tx, actions = self.confirmed(reliable=True)
        assert actions == [Terminated()]
        assert tx.state is State.TERMINATED
        assert tx.get_timer() is None


class TestInviteAccepted:
    """RFC 6026 §8.7."""

    def accepted(self, reliable: bool = False, **kw):
        tx = invite_tx(reliable=reliable, **kw)
        ok = tx.request.make_response(200, to_tag="to1")
        tx.send_response(ok, 1.0)
        return tx, ok

    def test_retransmitted_invite_absorbed_not_answered(self) -> None:
        tx, _ = self.accepted()
        assert tx.receive_request(request(), 1.5) == []
        assert tx.state is State.ACCEPTED

    def test_ack_passed_to_tu(self) -> None:
        tx, _ = self.accepted()
        the_ack = ack()
        assert tx.receive_request(the_ack, 1.5) == [DeliverRequest(the_ack)]
        assert tx.receive_request(the_ack, 1.6) == [DeliverRequest(the_ack)]
        assert tx.state is State.ACCEPTED

    def test_further_2xx_from_tu_sent(self) -> None:
        tx, ok = self.accepted()
        assert tx.send_response(ok, 2.0) == [SendResponse(ok)]
        forked = tx.request.make_response(200, to_tag="to2")
        assert tx.send_response(forked, 2.5) == [SendResponse(forked)]
        assert tx.state is State.ACCEPTED

    def test_non_2xx_from_tu_discarded(self) -> None:
        tx, _ = self.accepted()
        assert tx.send_response(tx.request.make_response(180, to_tag="to1"), 2.0) == []
        assert tx.send_response(tx.request.make_response(487, to_tag="to1"), 2.0) == []

    def test_no_retransmission_of_2xx_by_the_transaction(self) -> None:
        tx, _ = self.accepted()
        assert run_timers(tx, 100.0) == [(33.0, Terminated())]

    def test_timer_l_on_any_transport_and_configurable(self) -> None:
        tx, _ = self.accepted(reliable=True, timers=TimerSettings(timer_l=8.0))
        assert run_timers(tx, 100.0) == [(9.0, Terminated())]

    def test_transport_error_reported_state_kept(self) -> None:
        tx, _ = self.accepted()
        assert tx.transport_error(2.0) == [TransportFailure()]
        assert tx.state is State.ACCEPTED
        assert tx.deadlines == {"L": 33.0}


class TestInviteMisuse:
    def test_wrong_methods(self) -> None:
        with pytest.raises(TransactionError):
            ServerInviteTransaction(request("BYE"), reliable=False)
        with pytest.raises(TransactionError):
            ServerNonInviteTransaction(request("INVITE"), reliable=False)
        with pytest.raises(TransactionError):
            ServerNonInviteTransaction(ack(), reliable=False)

    def test_start_twice(self) -> None:
        tx = invite_tx()
        with pytest.raises(TransactionError):
            tx.start(0.0)

    def test_terminated_ignores_everything(self) -> None:
        tx = invite_tx()
        tx.transport_error(0.0)
        assert tx.send_response(tx.request.make_response(200, to_tag="x"), 1.0) == []
        assert tx.receive_request(request(), 1.0) == []
        assert tx.receive_request(ack(), 1.0) == []

    def test_ack_in_proceeding_ignored(self) -> None:
        tx = invite_tx()
        assert tx.receive_request(ack(), 1.0) == []
        assert tx.state is State.PROCEEDING


# =================================================================================================
# Non-INVITE server transaction, §17.2.2
# =================================================================================================


class TestNonInvite:
    def test_trying_absorbs_retransmissions(self) -> None:
        tx = non_invite_tx()
        assert tx.state is State.TRYING
        assert tx.receive_request(request("REGISTER"), 0.5) == []
        assert tx.get_timer() is None

    def test_provisional_moves_to_proceeding_and_is_resent(self) -> None:
        tx = non_invite_tx()
        trying = tx.request.make_response(100)
        assert tx.send_response(trying, 0.1) == [SendResponse(trying)]
        assert tx.state is State.PROCEEDING
        assert tx.receive_request(request("REGISTER"), 0.5) == [SendResponse(trying, retransmit=True)]
        later = tx.request.make_response(183, to_tag="t")
        assert tx.send_response(later, 0.6) == [SendResponse(later)]
        assert tx.receive_request(request("REGISTER"), 0.7) == [SendResponse(later, retransmit=True)]

    @pytest.mark.parametrize("via_proceeding", [False, True])
    def test_final_completes_and_is_resent_until_timer_j(self, via_proceeding: bool) -> None:
        tx = non_invite_tx()
        if via_proceeding:
            tx.send_response(tx.request.make_response(100), 0.1)
        ok = tx.request.make_response(200, to_tag="to1")
        assert tx.send_response(ok, 1.0) == [SendResponse(ok)]
        assert tx.state is State.COMPLETED
        assert tx.deadlines == {"J": 33.0}
        assert tx.receive_request(request("REGISTER"), 2.0) == [SendResponse(ok, retransmit=True)]
        assert run_timers(tx, 100.0) == [(33.0, Terminated())]

    def test_no_timer_driven_retransmission_of_responses(self) -> None:
        tx = non_invite_tx()
        tx.send_response(tx.request.make_response(404, to_tag="to1"), 1.0)
        assert all(not isinstance(a, SendResponse) for _, a in run_timers(tx, 100.0))

    def test_further_finals_discarded_17_2_2(self) -> None:
        tx = non_invite_tx()
        ok = tx.request.make_response(200, to_tag="to1")
        tx.send_response(ok, 1.0)
        assert tx.send_response(tx.request.make_response(500, to_tag="to1"), 1.5) == []
        assert tx.send_response(tx.request.make_response(180, to_tag="to1"), 1.5) == []
        assert tx.last_response is ok

    def test_timer_j_configurable(self) -> None:
        tx = non_invite_tx(timers=TimerSettings(timer_j=5.0))
        tx.send_response(tx.request.make_response(200, to_tag="to1"), 1.0)
        assert run_timers(tx, 100.0) == [(6.0, Terminated())]

    def test_reliable_terminates_at_once_timer_j_zero(self) -> None:
        tx = non_invite_tx(reliable=True)
        ok = tx.request.make_response(200, to_tag="to1")
        assert tx.send_response(ok, 1.0) == [SendResponse(ok), Terminated()]
        assert tx.state is State.TERMINATED

    @pytest.mark.parametrize("stage", ["trying", "proceeding", "completed"])
    def test_transport_error(self, stage: str) -> None:
        tx = non_invite_tx()
        if stage != "trying":
            tx.send_response(tx.request.make_response(100 if stage == "proceeding" else 200, to_tag="t"), 0.1)
        assert tx.transport_error(0.5) == [TransportFailure(), Terminated()]
        assert tx.get_timer() is None

    def test_cancel_gets_its_own_transaction(self) -> None:
        tx = non_invite_tx(method="CANCEL")
        ok = tx.request.make_response(200, to_tag="to1")
        assert tx.send_response(ok, 0.0) == [SendResponse(ok)]
