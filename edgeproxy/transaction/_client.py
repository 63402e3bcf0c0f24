"""The client transactions of RFC 3261 §17.1: INVITE (§17.1.1, Figure 5, with RFC 6026 §8.4's
Accepted) and non-INVITE (§17.1.2, Figure 6). The shared machinery and the theory of operation are in
:mod:`._base`."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from ..sip.message import Headers, Request, Response
from ._base import TIMER_CANCEL, Input, State, Table, Transaction, status_input
from ._events import Action, DeliverResponse, SendRequest, Timeout, TransactionError
from ._timers import TimerSettings

__all__ = ["ClientTransaction", "ClientInviteTransaction", "ClientNonInviteTransaction"]


class ClientTransaction(Transaction):
    """A client transaction (RFC 3261 §17.1): it sends one request and hands responses to the TU.

    The TU creates it with the request exactly as it will go on the wire (top Via with a fresh
    ``z9hG4bK`` branch already pushed, §8.1.1.7, §16.6 step 8), calls :meth:`start`, then feeds it
    the responses the table matched (§17.1.3).
    """

    __slots__ = ("_interval", "last_response")

    def __init__(self, request: Request, *, reliable: bool, timers: TimerSettings | None = None,
                 now: float = 0.0) -> None:
        super().__init__(request, reliable=reliable, timers=timers, now=now)
        self._interval = 0.0
        self.last_response: Response | None = None

    def receive_response(self, response: Response, now: float) -> list[Action]:
        """A response matched to this transaction by §17.1.3 arrived."""
        event = status_input(response.status, Input.RECV_1XX, Input.RECV_2XX, Input.RECV_300_699)
        return self._dispatch(event, now, response)

    def _deliver(self, now: float, response: Response) -> list[Action]:
        self.last_response = response
        return [DeliverResponse(response)]


class ClientInviteTransaction(ClientTransaction):
    """The INVITE client transaction of RFC 3261 §17.1.1 (Figure 5) with RFC 6026 §8.4 (Accepted).

    Calling: the INVITE is retransmitted on Timer A (T1, doubling, unreliable transports only) until
    a response or Timer B (64*T1). Proceeding: provisionals go to the TU. A 300-699 final is
    acknowledged here (§17.1.1.3, :attr:`ack`) and delivered; Completed re-sends the ACK for each
    retransmitted final until Timer D. A 2xx leads to Accepted, where every further 2xx (a
    retransmission, or another fork's answer) goes to the TU until Timer M (RFC 6026 §8.4): the ACK
    for a 2xx is the TU's business (§13.2.2.4), and for a proxy it is forwarded end to end.

    Timer C (§16.6 step 11) is armed here too, see the module's theory of operation.

    ``c_from_first_reply`` gives Timer C OpenSIPS's ``fr_inv_timeout`` meaning instead of the RFC's:
    not armed when the INVITE leaves -- until the first reply only Timer B (OpenSIPS ``fr_timeout``)
    runs -- but on entering Proceeding, by any 1xx including 100 (OpenSIPS ``tm``: the first reply
    switches the branch to the ``fr_inv_timeout`` timer list; ``$T_fr_inv_timeout``,
    ``modules/tm/README.md``). A route's per-transaction timers use it, so a short ``fr_inv_timeout``
    never cuts a branch that has not answered yet.
    """

    __slots__ = ("ack", "_c_from_first_reply")
    _INITIAL = State.CALLING
    is_invite = True

    def __init__(self, request: Request, *, reliable: bool, timers: TimerSettings | None = None,
                 now: float = 0.0, c_from_first_reply: bool = False) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"{request.method} needs a non-INVITE client transaction")
        super().__init__(request, reliable=reliable, timers=timers, now=now)
        self.ack: Request | None = None
        self._c_from_first_reply = c_from_first_reply

    def start(self, now: float) -> list[Action]:
        """Enter Calling: send the INVITE, arm Timer A (unreliable), Timer B and Timer C."""
        self._check_start()
        timers = self.timers
        if not self.reliable:
            self._interval = timers.a
            self._arm("A", timers.a, now)
        self._arm("B", timers.b, now)
        if timers.c is not None and not self._c_from_first_reply:
            self._arm("C", timers.c, now)
        self._settle()
        return [SendRequest(self.request)]

    def restart_timer_c(self, delay: float, now: float) -> None:
        """The TU changed the wait for a final after a provisional (OpenSIPS's ``$T_fr_inv_timeout``
        set in an ``onreply_route``, read when the provisional arrives, ``modules/tm/README.md``):
        Timer C, if it is running, runs ``delay`` from ``now`` instead. Nothing when it is not armed
        (not started yet, already fired, stopped by a final)."""
        if "C" in self._deadlines:
            self._arm("C", delay, now)
            self._settle()

    def cancel_sent(self, now: float) -> list[Action]:
        """The TU sent a CANCEL for this INVITE (§9.1, only allowed once a provisional arrived): if
        no final response comes within 64*T1 the transaction ends with ``Timeout("cancel")``."""
        return self._dispatch(Input.CANCEL_SENT, now, None)

    # -- side effects --------------------------------------------------------------------------------
    def _retransmit(self, now: float, timer: str) -> list[Action]:
        self._interval *= 2
        self._arm("A", self._interval, now)
        return [SendRequest(self.request, retransmit=True)]

    def _provisional(self, now: float, response: Response) -> list[Action]:
        if response.status != 100 and "C" in self._deadlines:
            self._arm("C", self.timers.c, now)  # type: ignore[arg-type]
        return self._deliver(now, response)

    def _ack_and_deliver(self, now: float, response: Response) -> list[Action]:
        self.ack = self.make_ack(response)
        return [SendRequest(self.ack), *self._deliver(now, response)]

    def _resend_ack(self, now: float, response: Response) -> list[Action]:
        assert self.ack is not None
        return [SendRequest(self.ack, retransmit=True)]

    def _timer_c_proceeding(self, now: float, timer: str) -> list[Action]:
        if TIMER_CANCEL not in self._deadlines:
            self._arm(TIMER_CANCEL, self.timers.cancel_wait, now)
        return [Timeout("C")]

    def _start_cancel_wait(self, now: float, arg: Any) -> list[Action]:
        if TIMER_CANCEL not in self._deadlines:
            self._arm(TIMER_CANCEL, self.timers.cancel_wait, now)
        return []

    # -- entry actions -------------------------------------------------------------------------------
    def _enter_proceeding(self, now: float, actions: list[Action]) -> None:
        self._disarm("A", "B")  # §17.1.1.2: no retransmissions in Proceeding; B only guards Calling
        if self._c_from_first_reply and self.timers.c is not None:
            self._arm("C", self.timers.c, now)  # OpenSIPS: fr_inv_timeout from the first reply on

    def _enter_completed(self, now: float, actions: list[Action]) -> None:
        self._disarm_all()
        if self.reliable:
            self._enter(State.TERMINATED, now, actions)
        else:
            self._arm("D", self.timers.d, now)

    def _enter_accepted(self, now: float, actions: list[Action]) -> None:
        self._disarm_all()
        self._arm("M", self.timers.m, now)

    def make_ack(self, response: Response) -> Request:
        """The ACK for a non-2xx final ``response`` (§17.1.1.3): Request-URI, Call-ID, From and CSeq
        number of the INVITE, CSeq method ACK, the To of the response (with its tag), one Via equal
        to the INVITE's top Via (so the same branch), and the INVITE's Route headers."""
        invite = self.request
        ih = invite.headers
        h = Headers()
        h.add("Via", ih.values("via")[0])
        h.add("Max-Forwards", "70")
        for route in ih.get_all("route"):
            h.add("Route", route)
        h.add("From", ih.get("from") or "")
        h.add("To", response.headers.get("to") or "")
        h.add("Call-ID", invite.call_id)
        h.add("CSeq", f"{invite.cseq.number} ACK")
        return Request("ACK", invite.uri_text, h)

    C, P, X, A, T = State.CALLING, State.PROCEEDING, State.COMPLETED, State.ACCEPTED, State.TERMINATED
    _TRANSITIONS: ClassVar[Table] = {
        # Calling: the INVITE is out, retransmitted on A until anything comes back
        (C, Input.TIMER_A): (_retransmit, C),
        (C, Input.TIMER_B): (Transaction._timeout, T),
        (C, Input.TIMER_C): (Transaction._timeout, T),  # §16.8: no provisional, as if 408
        (C, Input.RECV_1XX): (_provisional, P),
        (C, Input.RECV_2XX): (ClientTransaction._deliver, A),  # RFC 6026 §8.4
        (C, Input.RECV_300_699): (_ack_and_deliver, X),
        (C, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Proceeding: a provisional came; wait for the final (or Timer C)
        (P, Input.RECV_1XX): (_provisional, P),
        (P, Input.RECV_2XX): (ClientTransaction._deliver, A),
        (P, Input.RECV_300_699): (_ack_and_deliver, X),
        (P, Input.TIMER_C): (_timer_c_proceeding, P),  # §16.8: the TU must CANCEL now
        (P, Input.CANCEL_SENT): (_start_cancel_wait, P),
        (P, Input.TIMER_CANCEL): (Transaction._timeout, T),  # §9.1: give up 64*T1 after CANCEL
        (P, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Completed: absorb final retransmissions, each one re-ACKed, until D
        (X, Input.RECV_300_699): (_resend_ack, X),
        (X, Input.TIMER_D): (None, T),
        (X, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Accepted (RFC 6026): every 2xx to the TU until M
        (A, Input.RECV_2XX): (ClientTransaction._deliver, A),
        (A, Input.TIMER_M): (None, T),
        (A, Input.TRANSPORT_ERROR): (Transaction._transport_failure, A),
    }
    _ENTRY: ClassVar[dict[State, Callable[[Any, float, list[Action]], None]]] = {
        P: _enter_proceeding,
        X: _enter_completed,
        A: _enter_accepted,
        T: Transaction._enter_terminated,
    }
    del C, P, X, A, T


class ClientNonInviteTransaction(ClientTransaction):
    """The non-INVITE client transaction of RFC 3261 §17.1.2 (Figure 6).

    Trying: the request is retransmitted on Timer E (T1, doubling up to T2; unreliable only) until
    Timer F (64*T1). Proceeding: provisionals go to the TU and E keeps firing every T2. Any final
    (200-699) is delivered; Completed absorbs its retransmissions until Timer K (T4, zero when
    reliable). This machine also carries the CANCELs a proxy sends (§9.1, §16.10).
    """

    __slots__ = ()
    _INITIAL = State.TRYING

    def __init__(self, request: Request, *, reliable: bool, timers: TimerSettings | None = None,
                 now: float = 0.0) -> None:
        if request.method in ("INVITE", "ACK"):
            raise TransactionError(f"{request.method} cannot have a non-INVITE client transaction")
        super().__init__(request, reliable=reliable, timers=timers, now=now)

    def start(self, now: float) -> list[Action]:
        """Enter Trying: send the request, arm Timer E (unreliable) and Timer F."""
        self._check_start()
        timers = self.timers
        if not self.reliable:
            self._interval = timers.e
            self._arm("E", timers.e, now)
        self._arm("F", timers.f, now)
        self._settle()
        return [SendRequest(self.request)]

    def _retransmit_trying(self, now: float, timer: str) -> list[Action]:
        self._interval = min(2 * self._interval, self.timers.t2)
        self._arm("E", self._interval, now)
        return [SendRequest(self.request, retransmit=True)]

    def _retransmit_proceeding(self, now: float, timer: str) -> list[Action]:
        self._interval = self.timers.t2
        self._arm("E", self._interval, now)
        return [SendRequest(self.request, retransmit=True)]

    def _enter_completed(self, now: float, actions: list[Action]) -> None:
        self._disarm_all()
        if self.reliable:
            self._enter(State.TERMINATED, now, actions)
        else:
            self._arm("K", self.timers.k, now)

    Tr, P, X, T = State.TRYING, State.PROCEEDING, State.COMPLETED, State.TERMINATED
    _TRANSITIONS: ClassVar[Table] = {
        # Trying: the request is out, retransmitted on E
        (Tr, Input.TIMER_E): (_retransmit_trying, Tr),
        (Tr, Input.TIMER_F): (Transaction._timeout, T),
        (Tr, Input.RECV_1XX): (ClientTransaction._deliver, P),
        (Tr, Input.RECV_2XX): (ClientTransaction._deliver, X),
        (Tr, Input.RECV_300_699): (ClientTransaction._deliver, X),
        (Tr, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Proceeding: still retransmitting, now every T2
        (P, Input.TIMER_E): (_retransmit_proceeding, P),
        (P, Input.TIMER_F): (Transaction._timeout, T),
        (P, Input.RECV_1XX): (ClientTransaction._deliver, P),
        (P, Input.RECV_2XX): (ClientTransaction._deliver, X),
        (P, Input.RECV_300_699): (ClientTransaction._deliver, X),
        (P, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Completed: absorb response retransmissions until K
        (X, Input.TIMER_K): (None, T),
        (X, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
    }
    _ENTRY: ClassVar[dict[State, Callable[[Any, float, list[Action]], None]]] = {
        X: _enter_completed,
        T: Transaction._enter_terminated,
    }
    del Tr, P, X, T
