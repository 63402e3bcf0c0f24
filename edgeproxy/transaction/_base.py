"""What the four transaction machines of RFC 3261 §17 (with RFC 6026's Accepted) share.

Theory of operation
-------------------

A transaction is a request plus every response to it, over one hop (§17). :mod:`._client` holds the
machines of §17.1.1 and §17.1.2, :mod:`._server` those of §17.2.1 and §17.2.2, as amended by RFC 6026
§8; this module holds their states, inputs and the :class:`Transaction` base. No sockets, no clock,
no addresses: inputs come in as method calls carrying ``now`` (a float in seconds, from whatever
clock the caller uses); outputs go out as the small frozen dataclasses of :mod:`._events`, in the
order they must be carried out.

Each machine is a table ``(state, input) → (side effect, next state)``, as in hyper-h2: read
``_TRANSITIONS`` of a class to see the whole of its figure. An input with no row in the current state
is ignored, which is how the RFC's "absorb" and "discard" rules read (a 1xx in Completed, a TU final
response in a server Completed state, §17.2.2). Rows whose side effect is ``None`` only change state.
Entering a state runs that state's entry action (``_ENTRY``): it arms the timers the RFC starts "when
entering" the state and cancels those it stops. An entry action whose timer is zero on a reliable
transport (D, I, J, K) goes straight on to Terminated, which is what a zero timer means; the caller
sees the transaction end in the same call. Entering Terminated disarms everything and appends
:class:`Terminated`.

Timers, as in aioquic: a transaction is driven like a QUIC connection. Its armed timers live in
``_deadlines`` (RFC letter → deadline, in arming order); :attr:`Transaction.deadline` is the earliest
of them (or ``None``), kept current at the end of every input, and :meth:`Transaction.handle_timer`
fires every timer that is due. A transaction knows nothing of who drives it: whoever does (in a proxy,
one :class:`~edgeproxy.transaction.TransactionTable` for all of them) reads ``deadline`` and may set
the one observer :attr:`Transaction.on_change`, called with the transaction when an input moved
``deadline`` or terminated it — so the driver reschedules and forgets without either side touching the
other's state.

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
from typing import Any, Callable, ClassVar, Optional

from ..sip.message import Request
from ._events import Action, Terminated, Timeout, TransactionError, TransportFailure
from ._timers import TimerSettings

__all__ = ["State", "Input", "Transaction", "TIMER_CANCEL", "Handler", "Table", "status_input"]

TIMER_CANCEL = "cancel"
"""Name of the §9.1 wait (64*T1 after a CANCEL) in ``Timeout.timer`` and ``deadlines``."""

_DEFAULT_TIMERS = TimerSettings()


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
_TERMINATED = State.TERMINATED

Handler = Optional[Callable[[Any, float, Any], list[Action]]]
"""A row's side effect: ``(transaction, now, argument) → actions``, or None for a bare transition."""
Table = dict[tuple[State, Input], tuple[Handler, State]]
"""A machine's figure: ``(state, input) → (side effect, next state)``."""


def status_input(status: int, provisional: Input, success: Input, failure: Input) -> Input:
    """The input a response of ``status`` is: 1xx, 2xx or 300-699 (§17.1.1.2, §17.2.1)."""
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

    ``deadline`` (read it, do not set it) is the earliest armed timer or None, current after every
    input. ``on_change``, if set, is called with the transaction after an input that moved
    ``deadline`` or reached Terminated; a :class:`~edgeproxy.transaction.TransactionTable` sets it
    while the transaction is a member. A transaction used on its own needs neither: read
    :meth:`get_timer` and call :meth:`handle_timer`.
    """

    __slots__ = ("request", "reliable", "timers", "state", "created", "deadline", "on_change",
                 "_deadlines", "_started")

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
        self.deadline: float | None = None
        self.on_change: Callable[[Transaction], None] | None = None
        self._deadlines: dict[str, float] = {}
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
        return self.state is _TERMINATED

    # -- timers (aioquic style) ------------------------------------------------------------------------
    @property
    def deadlines(self) -> dict[str, float]:
        """Armed timers by RFC letter and their deadlines (a copy, for tests and diagnostics)."""
        return dict(self._deadlines)

    def get_timer(self) -> float | None:
        """The earliest deadline among the armed timers (:attr:`deadline`), or None when none is."""
        return self.deadline

    def handle_timer(self, now: float) -> list[Action]:
        """Fire, in deadline order (ties in arming order), every timer due at ``now``."""
        actions: list[Action] = []
        deadlines = self._deadlines
        while (when := self.deadline) is not None and when <= now:
            for name in deadlines:  # the first armed of the earliest
                if deadlines[name] == when:
                    break
            del deadlines[name]
            actions += self._dispatch(_TIMER_INPUTS[name], now, name)
        return actions

    def _arm(self, name: str, delay: float, now: float) -> None:
        deadlines = self._deadlines
        if name in deadlines:
            del deadlines[name]  # a restarted timer counts as armed last (tie order)
        deadlines[name] = now + delay

    def _disarm(self, *names: str) -> None:
        deadlines = self._deadlines
        for name in names:
            deadlines.pop(name, None)

    def _disarm_all(self) -> None:
        self._deadlines.clear()

    def _settle(self) -> None:
        deadlines = self._deadlines
        when = min(deadlines.values()) if deadlines else None
        if when != self.deadline:
            self.deadline = when
            if self.on_change is not None:
                self.on_change(self)

    # -- the machine ---------------------------------------------------------------------------------
    def _dispatch(self, event: Input, now: float, arg: Any) -> list[Action]:
        row = self._TRANSITIONS.get((self.state, event))
        if row is None:
            actions: list[Action] = []
        else:
            handler, target = row
            actions = handler(self, now, arg) if handler is not None else []
            if target is not self.state:
                self._enter(target, now, actions)
        self._settle()  # also without a row: a timer that fired there is gone all the same
        return actions

    def _enter(self, state: State, now: float, actions: list[Action]) -> None:
        self.state = state
        entry = self._ENTRY.get(state)
        if entry is not None:
            entry(self, now, actions)

    def _enter_terminated(self, now: float, actions: list[Action]) -> None:
        self._deadlines.clear()
        self.deadline = None
        actions.append(Terminated())
        if self.on_change is not None:
            self.on_change(self)

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
