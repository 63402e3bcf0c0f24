"""The server transactions of RFC 3261 §17.2: INVITE (§17.2.1, Figure 7, with RFC 6026 §8.5-§8.7's
Accepted) and non-INVITE (§17.2.2, Figure 8). The shared machinery and the theory of operation are in
:mod:`._base`."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from ..sip.message import Request, Response
from ._base import Input, State, Table, Transaction, status_input
from ._events import Action, DeliverRequest, SendResponse, TransactionError
from ._timers import TimerSettings

__all__ = ["ServerTransaction", "ServerInviteTransaction", "ServerNonInviteTransaction"]


class ServerTransaction(Transaction):
    """A server transaction (RFC 3261 §17.2): created by the TU for a request that matched no
    transaction (§17.2.3), it absorbs retransmissions of that request and sends the TU's responses,
    retransmitting them as the RFC requires.

    ``last_response`` is the latest response the TU sent through it; ``final_to_tags`` the To tags
    of its final responses, which only RFC 2543 ACK matching needs (§17.2.3), so it stays empty for a
    request whose branch has the magic cookie.
    """

    __slots__ = ("last_response", "final_to_tags")

    def __init__(self, request: Request, *, reliable: bool, timers: TimerSettings | None = None,
                 now: float = 0.0) -> None:
        super().__init__(request, reliable=reliable, timers=timers, now=now)
        self.last_response: Response | None = None
        self.final_to_tags: tuple[str | None, ...] = ()

    def receive_request(self, request: Request, now: float) -> list[Action]:
        """A request matched to this transaction by §17.2.3 arrived: a retransmission of the request
        that created it, or (INVITE) an ACK."""
        event = Input.RECV_ACK if request.method == "ACK" else Input.RECV_REQUEST
        return self._dispatch(event, now, request)

    def send_response(self, response: Response, now: float) -> list[Action]:
        """The TU sends ``response`` (§17.2.1, §17.2.2). A response the current state cannot take
        (a second final, anything after Terminated) is discarded and returns no action (§17.2.2:
        "MUST be discarded"); check :attr:`state` to tell."""
        event = status_input(response.status, Input.SEND_1XX, Input.SEND_2XX, Input.SEND_300_699)
        return self._dispatch(event, now, response)

    def shed_request(self) -> None:
        """Keep of the request only what matching (§17.2.3) and responses (§8.2.6.2) need
        (:meth:`~edgeproxy.sip.message.Request.transaction_copy`): for a transaction answered
        locally, which waits up to Timer H for nothing but an ACK or a retransmission."""
        self.request = self.request.transaction_copy()

    def _send(self, now: float, response: Response) -> list[Action]:
        self.last_response = response
        if response.status >= 200 and not self.request.top_via.rfc3261_branch:
            tag = response.to_tag
            if tag not in self.final_to_tags:
                self.final_to_tags += (tag,)
        return [SendResponse(response)]

    def _resend(self, now: float, request: Request) -> list[Action]:
        if self.last_response is None:
            return []
        return [SendResponse(self.last_response, retransmit=True)]


class ServerInviteTransaction(ServerTransaction):
    """The INVITE server transaction of RFC 3261 §17.2.1 (Figure 7) with RFC 6026 §8.5-§8.7.

    Proceeding: a retransmitted INVITE re-sends the latest provisional. With ``auto_100`` the
    transaction sends 100 Trying as soon as it starts (OpenSIPS ``auto_100trying``; §17.2.1 allows it
    whenever the TU may take over 200 ms). A 300-699 from the TU leads to Completed: the response is
    retransmitted on Timer G (T1, doubling up to T2; unreliable only) and on every retransmitted
    INVITE, until the ACK (→ Confirmed, absorbing ACKs for Timer I) or Timer H (→ ``Timeout("H")``).
    A 2xx leads to Accepted (RFC 6026 §8.7): retransmitted INVITEs are absorbed, further 2xx from
    the TU are sent, an ACK is passed to the TU (:class:`DeliverRequest`), until Timer L.

    ``retransmit_final`` False (set by the TU before it sends the final) leaves Timer G unarmed: the
    final goes out once and again only for each retransmitted INVITE. A proxy does that for a
    source that never proved it receives (a spoofed UDP address): Timer G would otherwise send it
    ten copies for one datagram, a reflection amplifier (issue 16; OpenSIPS's ``sl_send_reply``
    never retransmits either). Timer H still bounds the wait for the ACK.
    """

    __slots__ = ("auto_100", "_interval", "retransmit_final")
    _INITIAL = State.PROCEEDING
    is_invite = True

    def __init__(self, request: Request, *, reliable: bool, timers: TimerSettings | None = None,
                 now: float = 0.0, auto_100: bool = False) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"{request.method} needs a non-INVITE server transaction")
        super().__init__(request, reliable=reliable, timers=timers, now=now)
        self.auto_100 = auto_100
        self._interval = 0.0
        self.retransmit_final = True

    def start(self, now: float) -> list[Action]:
        """The transaction exists, in Proceeding; sends 100 Trying if ``auto_100`` (§17.2.1). The
        request itself is not delivered: the TU created the transaction from it."""
        self._check_start()
        if self.auto_100:
            return self._send(now, self.request.make_response(100))
        return []

    def _retransmit_final(self, now: float, timer: str) -> list[Action]:
        self._interval = min(2 * self._interval, self.timers.t2)
        self._arm("G", self._interval, now)
        return [SendResponse(self.last_response, retransmit=True)]  # type: ignore[arg-type]

    def _deliver_ack(self, now: float, request: Request) -> list[Action]:
        return [DeliverRequest(request)]

    def _enter_completed(self, now: float, actions: list[Action]) -> None:
        timers = self.timers
        if not self.reliable and self.retransmit_final:
            self._interval = timers.g
            self._arm("G", timers.g, now)
        self._arm("H", timers.h, now)

    def _enter_confirmed(self, now: float, actions: list[Action]) -> None:
        self._disarm_all()
        if self.reliable:
            self._enter(State.TERMINATED, now, actions)
        else:
            self._arm("I", self.timers.i, now)

    def _enter_accepted(self, now: float, actions: list[Action]) -> None:
        self._disarm_all()
        self._arm("L", self.timers.l, now)

    P, X, Cf, A, T = State.PROCEEDING, State.COMPLETED, State.CONFIRMED, State.ACCEPTED, State.TERMINATED
    _TRANSITIONS: ClassVar[Table] = {
        # Proceeding: waiting for the TU; retransmitted INVITEs get the latest provisional
        (P, Input.RECV_REQUEST): (ServerTransaction._resend, P),
        (P, Input.SEND_1XX): (ServerTransaction._send, P),
        (P, Input.SEND_2XX): (ServerTransaction._send, A),  # RFC 6026 §8.5
        (P, Input.SEND_300_699): (ServerTransaction._send, X),
        (P, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Completed: the non-2xx final is retransmitted until the ACK comes
        (X, Input.RECV_REQUEST): (ServerTransaction._resend, X),
        (X, Input.RECV_ACK): (None, Cf),
        (X, Input.TIMER_G): (_retransmit_final, X),
        (X, Input.TIMER_H): (Transaction._timeout, T),
        (X, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Confirmed: absorb ACK retransmissions until I (no rows for them: ignored)
        (Cf, Input.TIMER_I): (None, T),
        (Cf, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Accepted (RFC 6026 §8.7): absorb INVITEs, send 2xx, ACKs to the TU, until L
        (A, Input.RECV_REQUEST): (None, A),
        (A, Input.RECV_ACK): (_deliver_ack, A),
        (A, Input.SEND_2XX): (ServerTransaction._send, A),
        (A, Input.TIMER_L): (None, T),
        (A, Input.TRANSPORT_ERROR): (Transaction._transport_failure, A),
    }
    _ENTRY: ClassVar[dict[State, Callable[[Any, float, list[Action]], None]]] = {
        X: _enter_completed,
        Cf: _enter_confirmed,
        A: _enter_accepted,
        T: Transaction._enter_terminated,
    }
    del P, X, Cf, A, T


class ServerNonInviteTransaction(ServerTransaction):
    """The non-INVITE server transaction of RFC 3261 §17.2.2 (Figure 8).

    Trying: retransmissions are absorbed until the TU answers. Proceeding (after a provisional from
    the TU): each retransmission re-sends the latest provisional. Completed (after a final): each
    retransmission re-sends the final, until Timer J (64*T1, zero when reliable). Further finals
    from the TU are discarded. A stateful proxy does not send 100 for non-INVITE (§16.2), so there is
    no ``auto_100`` here.
    """

    __slots__ = ()
    _INITIAL = State.TRYING

    def __init__(self, request: Request, *, reliable: bool, timers: TimerSettings | None = None,
                 now: float = 0.0) -> None:
        if request.method in ("INVITE", "ACK"):
            raise TransactionError(f"{request.method} cannot have a non-INVITE server transaction")
        super().__init__(request, reliable=reliable, timers=timers, now=now)

    def start(self, now: float) -> list[Action]:
        """The transaction exists, in Trying; nothing to send yet."""
        self._check_start()
        return []

    def _enter_completed(self, now: float, actions: list[Action]) -> None:
        if self.reliable:
            self._enter(State.TERMINATED, now, actions)
        else:
            self._arm("J", self.timers.j, now)

    Tr, P, X, T = State.TRYING, State.PROCEEDING, State.COMPLETED, State.TERMINATED
    _TRANSITIONS: ClassVar[Table] = {
        # Trying: nothing to re-send yet, retransmissions are absorbed
        (Tr, Input.RECV_REQUEST): (None, Tr),
        (Tr, Input.SEND_1XX): (ServerTransaction._send, P),
        (Tr, Input.SEND_2XX): (ServerTransaction._send, X),
        (Tr, Input.SEND_300_699): (ServerTransaction._send, X),
        (Tr, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Proceeding: retransmissions get the latest provisional
        (P, Input.RECV_REQUEST): (ServerTransaction._resend, P),
        (P, Input.SEND_1XX): (ServerTransaction._send, P),
        (P, Input.SEND_2XX): (ServerTransaction._send, X),
        (P, Input.SEND_300_699): (ServerTransaction._send, X),
        (P, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
        # Completed: retransmissions get the final until J; TU finals discarded (no rows)
        (X, Input.RECV_REQUEST): (ServerTransaction._resend, X),
        (X, Input.TIMER_J): (None, T),
        (X, Input.TRANSPORT_ERROR): (Transaction._transport_failure, T),
    }
    _ENTRY: ClassVar[dict[State, Callable[[Any, float, list[Action]], None]]] = {
        X: _enter_completed,
        T: Transaction._enter_terminated,
    }
    del Tr, P, X, T
