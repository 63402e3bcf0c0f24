"""The four transaction state machines of RFC 3261 §17, with the Accepted state of RFC 6026.

Theory of operation
-------------------

A transaction is a request plus every response to it, over one hop (§17). This module holds the
four machines of §17.1.1, §17.1.2, §17.2.1 and §17.2.2, as amended by RFC 6026 §8, and nothing else:
no sockets, no clock, no addresses. Inputs come in as method calls carrying ``now`` (a float in
seconds, from whatever clock the caller uses); outputs go out as the small frozen dataclasses of
:mod:`._events`, in the order they must be carried out. A transaction is driven like an aioquic
connection: ``get_timer()`` is its next deadline (or ``None``), ``handle_timer(now)`` fires every timer
that is due. In a proxy one :class:`~edgeproxy.transaction.TransactionTable` drives them all.

Each machine is a table ``(state, input) → (side effect, next state)``, as in hyper-h2: read
``_TRANSITIONS`` of a class to see the whole of its figure. An input with no row in the current state
is ignored, which is how the RFC's "absorb" and "discard" rules read (a 1xx in Completed, a TU final
response in a server Completed state, §17.2.2). Rows whose side effect is ``None`` only change state.
Entering a state runs that state's entry action (``_ENTRY``): it arms the timers the RFC starts "when
entering" the state and cancels those it stops. An entry action whose timer is zero on a reliable
transport (D, I, J, K) goes straight on to Terminated, which is what a zero timer means; the caller
sees the transaction end in the same call. Entering Terminated disarms everything, removes the
transaction from its table and appends :class:`Terminated`.

Timers are named by their RFC letter and live in ``_deadlines`` as ``name → (deadline, sequence)``.
The sequence number makes every arming unique, which is what lets the table keep a heap with lazy
deletion: a heap entry whose sequence no longer matches the transaction's is stale and skipped.

What the TU still owns: destinations (``SendRequest`` goes where the TU sent the original request,
``SendResponse`` where §18.2.2 says), creating CANCEL requests (§9.1), forwarding ACKs for 2xx, and
deciding what a :class:`Timeout` means for its response context (§16.7, §16.8).

Deviations and choices, each for a reason:

* Timer C (§16.6 step 11) lives in the client INVITE transaction so one heap drives it. It is armed
  at start, restarted by 101-199 responses (§16.7 step 2; OpenSIPS ``restart_fr_on_each_reply``),
  and stopped by any final response. Fired in Calling, it ends the transaction like Timer B (§16.8:
  "behave as if the transaction received a 408"); fired in Proceeding, the TU must CANCEL (§16.8),
  so the transaction starts the §9.1 wait of 64*T1 (timer ``"cancel"``) for the final response and
  ends with ``Timeout("cancel")`` if none comes. :meth:`ClientInviteTransaction.cancel_sent` starts
  the same wait for a CANCEL the TU sends for its own reasons.
* The ACK for a non-2xx final goes out before the response is delivered to the TU: it is
  hop-by-hop and should not wait behind whatever the TU does with the response.
* A transport error ends the transaction in every state but Accepted (§17.1.4, §17.2.4). Accepted
  exists to absorb retransmissions until Timer L/M (RFC 6026 §8.4, §8.7), so there the TU is told
  and the transaction stays.
"""

from __future__ import annotations

import enum
from itertools import count
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from ..sip.message import Headers, Request, Response
from ._events import (
    Action,
    DeliverRequest,
    DeliverResponse,
    SendRequest,
    SendResponse,
    Terminated,
    Timeout,
    TransactionError,
    TransportFailure,
)
from ._timers import TimerSettings

if TYPE_CHECKING:
    from ._table import TransactionTable

__all__ = [
    "State",
    "Input",
    "Transaction",
    "ClientTransaction",
    "ServerTransaction",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "TIMER_CANCEL",
]

TIMER_CANCEL = "cancel"
"""Name of the §9.1 wait (64*T1 after a CANCEL) in ``Timeout.timer`` and ``deadlines``."""

_DEFAULT_TIMERS = TimerSettings()
_sequence = count()


class State(enum.Enum):
    """Transaction states of RFC 3261 §17 (Figures 5-8) and RFC 6026 §8 (Accepted)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    """What can happen to a transaction: the edge labels of RFC 3261 Figures 5-8 ("1xx from TL",
    "Timer A fires", "Transport Err." ...) plus the TU's CANCEL of §9.1."""

    RECV_1XX = "1xx from TL"
    RECV_2XX = "2xx from TL"
    RECV_300_699 = "300-699 from TL"
    RECV_REQUEST = "request retransmission from TL"
    RECV_ACK = "ACK from TL"
    SEND_1XX = "1xx from TU"
    SEND_2XX = "2xx from TU"
    SEND_300_699 = "300-699 from TU"
    CANCEL_SENT = "CANCEL sent by TU"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_C = "C"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"
    TIMER_CANCEL = TIMER_CANCEL


_TIMER_INPUTS = {i.value: i for i in Input if i.name.startswith("TIMER_")}

Handler = Optional[Callable[[Any, float, Any], list[Action]]]
Table = dict[tuple[State, Input], tuple[Handler, State]]


def _status_input(status: int, provisional: Input, success: Input, failure: Input) -> Input:
    if status < 200:
        return provisional
    if status < 300:
        return success
    return failure


class Transaction:
    """What the four RFC 3261 §17 machines share: the request, the transport's reliability, the
    timer settings, the state and the armed timers.

    ``reliable`` says whether the transport toward the peer is reliable (TCP, TLS, WS, WSS, SCTP);
    it switches off retransmissions and zeroes timers D, I, J and K (§17.1.1.2, §17.2.1).
    ``now`` at construction is recorded as ``created``; nothing happens before :meth:`start`.
    """

    __slots__ = ("request", "reliable", "timers", "state", "created", "_deadlines", "_table", "_key",
                 "_started")

    _TRANSITIONS: ClassVar[Table] = {}
    _ENTRY: ClassVar[dict[State, Callable[[Any, float, list[Action]], None]]] = {}
    _INITIAL: ClassVar[State] = State.TERMINATED
    is_invite: ClassVar[bool] = False

    def __init__(self, request: Request, *, reliable: bool, timers: TimerSettings | None = None,
                 now: float = 0.0) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers if timers is not None else _DEFAULT_TIMERS
        self.state = self._INITIAL
        self.created = now
        self._deadlines: dict[str, tuple[float, int]] = {}
        self._table: TransactionTable | None = None
        self._key: tuple | None = None
        self._started = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.branch} {self.state.value}>"

    # -- identity ------------------------------------------------------------------------------------
    @property
    def branch(self) -> str | None:
        """The branch of the request's top Via: the transaction id of §17.1.3 / §17.2.3."""
        return self.request.top_via.branch

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    # -- timers (aioquic style) ------------------------------------------------------------------------
    @property
    def deadlines(self) -> dict[str, float]:
        """Armed timers by RFC letter and their deadlines (a copy, for tests and diagnostics)."""
        return {name: when for name, (when, _) in self._deadlines.items()}

    def get_timer(self) -> float | None:
        """The earliest deadline among the armed timers, or None when none is armed."""
        if not self._deadlines:
            return None
        return min(when for when, _ in self._deadlines.values())

    def handle_timer(self, now: float) -> list[Action]:
        """Fire, in deadline order, every timer due at ``now``. For a transaction driven on its own;
        in a :class:`TransactionTable` call the table's ``handle_timer`` instead."""
        actions: list[Action] = []
        deadlines = self._deadlines
        while deadlines:
            name, (when, _) = min(deadlines.items(), key=lambda item: item[1])
            if when > now:
                break
            actions.extend(self._expire(name, now))
        return actions

    def _arm(self, name: str, delay: float, now: float) -> None:
        entry = (now + delay, next(_sequence))
        old = self._deadlines.get(name)
        self._deadlines[name] = entry
        table = self._table
        if table is not None:
            if old is not None:
                table._live -= 1
            table._schedule(entry[0], entry[1], self, name)

    def _disarm(self, *names: str) -> None:
        deadlines = self._deadlines
        table = self._table
        for name in names:
            if deadlines.pop(name, None) is not None and table is not None:
                table._live -= 1

    def _disarm_all(self) -> None:
        if self._table is not None:
            self._table._live -= len(self._deadlines)
        self._deadlines.clear()

    def _expire(self, name: str, now: float) -> list[Action]:
        self._disarm(name)
        return self._dispatch(_TIMER_INPUTS[name], now, name)

    # -- the machine ---------------------------------------------------------------------------------
    def _dispatch(self, event: Input, now: float, arg: Any) -> list[Action]:
        row = self._TRANSITIONS.get((self.state, event))
        if row is None:
            return []
        handler, target = row
        actions = handler(self, now, arg) if handler is not None else []
        if target is not self.state:
            self._enter(target, now, actions)
        return actions

    def _enter(self, state: State, now: float, actions: list[Action]) -> None:
        self.state = state
        entry = self._ENTRY.get(state)
        if entry is not None:
            entry(self, now, actions)

    def _enter_terminated(self, now: float, actions: list[Action]) -> None:
        self._disarm_all()
        table = self._table
        if table is not None:
            table._forget(self)
        actions.append(Terminated())

    def _check_start(self) -> None:
        if self._started:
            raise TransactionError("transaction already started")
        self._started = True

    # -- inputs shared by all -------------------------------------------------------------------------
    def transport_error(self, now: float) -> list[Action]:
        """The transport failed to send something for this transaction (§17.1.4, §17.2.4): the TU is
        told with :class:`TransportFailure` and, except in Accepted, the transaction terminates."""
        return self._dispatch(Input.TRANSPORT_ERROR, now, None)

    # -- side effects shared by all -------------------------------------------------------------------
    def _timeout(self, now: float, timer: str) -> list[Action]:
        return [Timeout(timer)]

    def _transport_failure(self, now: float, arg: Any) -> list[Action]:
        return [TransportFailure()]


# ===================================================================================================
# Client transactions (§17.1)
# ===================================================================================================


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
        event = _status_input(response.status, Input.RECV_1XX, Input.RECV_2XX, Input.RECV_300_699)
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
    """

    __slots__ = ("ack",)
    _INITIAL = State.CALLING
    is_invite = True

    def __init__(self, request: Request, *, reliable: bool, timers: TimerSettings | None = None,
                 now: float = 0.0) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"{request.method} needs a non-INVITE client transaction")
        super().__init__(request, reliable=reliable, timers=timers, now=now)
        self.ack: Request | None = None

    def start(self, now: float) -> list[Action]:
        """Enter Calling: send the INVITE, arm Timer A (unreliable), Timer B and Timer C."""
        self._check_start()
        timers = self.timers
        if not self.reliable:
            self._interval = timers.a
            self._arm("A", timers.a, now)
        self._arm("B", timers.b, now)
        if timers.c is not None:
            self._arm("C", timers.c, now)
        return [SendRequest(self.request)]

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


# ===================================================================================================
# Server transactions (§17.2)
# ===================================================================================================


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
        event = _status_input(response.status, Input.SEND_1XX, Input.SEND_2XX, Input.SEND_300_699)
        return self._dispatch(event, now, response)

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
    """

    __slots__ = ("auto_100", "_interval")
    _INITIAL = State.PROCEEDING
    is_invite = True

    def __init__(self, request: Request, *, reliable: bool, timers: TimerSettings | None = None,
                 now: float = 0.0, auto_100: bool = False) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"{request.method} needs a non-INVITE server transaction")
        super().__init__(request, reliable=reliable, timers=timers, now=now)
        self.auto_100 = auto_100
        self._interval = 0.0

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
        if not self.reliable:
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
