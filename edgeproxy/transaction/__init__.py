"""The sans-IO transaction layer of RFC 3261 §17, with RFC 6026's Accepted state.

Four state machines (:class:`ClientInviteTransaction`, :class:`ClientNonInviteTransaction`,
:class:`ServerInviteTransaction`, :class:`ServerNonInviteTransaction`) take messages, TU requests and
``now`` in, and hand back small frozen actions (:class:`SendRequest`, :class:`SendResponse`,
:class:`DeliverResponse`, :class:`DeliverRequest`, :class:`Timeout`, :class:`TransportFailure`,
:class:`Terminated`). A :class:`TransactionTable` matches incoming messages to them (§17.1.3, §17.2.3,
§9.2) and drives every timer from one heap: ``get_timer()`` / ``handle_timer(now)``, as in aioquic.
A transaction knows no table: it exposes its next ``deadline`` and one ``on_change`` observer, which
the table (or any other driver) uses to reschedule it and to forget it when it terminates.
Timer values come from :class:`TimerSettings`. Nothing here performs I/O or reads a clock.
"""

from ._base import TIMER_CANCEL, Input, State, Transaction
from ._client import ClientInviteTransaction, ClientNonInviteTransaction, ClientTransaction
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
from ._server import ServerInviteTransaction, ServerNonInviteTransaction, ServerTransaction
from ._table import TransactionTable
from ._timers import TimerSettings

__all__ = [
    "Action", "DeliverRequest", "DeliverResponse", "SendRequest", "SendResponse", "Terminated", "Timeout",
    "TransactionError", "TransportFailure",
    "TIMER_CANCEL", "State", "Input", "Transaction", "ClientTransaction", "ServerTransaction",
    "ClientInviteTransaction", "ClientNonInviteTransaction", "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "TransactionTable", "TimerSettings",
]
