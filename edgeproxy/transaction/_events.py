"""What transactions hand back: actions for the transport and events for the TU (RFC 3261 §17).

Every input method of a transaction returns a list of these, in the order they must be carried out.
They are the whole interface outward: a transaction never sends, never reads a clock and never knows
an address. The TU (the proxy core) owns destinations, so ``SendRequest`` goes to wherever the TU sent
the request the transaction was created with, and ``SendResponse`` to where §18.2.2 says responses go.

The set is deliberately small:

==================== ======================================================================
``SendRequest``      client: pass a request to the transport (first send, retransmission, ACK)
``SendResponse``     server: pass a response to the transport (first send or retransmission)
``DeliverResponse``  client → TU: a response the TU must see (§17.1.1.2, §17.1.2.2)
``DeliverRequest``   server → TU: an ACK for a 2xx in the Accepted state (RFC 6026 §8.7)
``Timeout``          a timer fired that ends or endangers the transaction (B, C, F, H, cancel)
``TransportFailure`` the TU reported a transport error; the transaction is over (§17.1.4, §17.2.4)
``Terminated``       always last: the transaction reached Terminated and left its table
==================== ======================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..sip.message import Request, Response

__all__ = [
    "Action",
    "SendRequest",
    "SendResponse",
    "DeliverResponse",
    "DeliverRequest",
    "Timeout",
    "TransportFailure",
    "Terminated",
    "TransactionError",
]


class TransactionError(Exception):
    """The TU used a transaction against the rules of RFC 3261 §17 (h11's ``LocalProtocolError``):
    starting one twice, creating one for ACK (§17: "ACK ... is not a transaction" for 2xx, and a
    non-2xx ACK belongs to its INVITE), or adding two transactions with the same key to one table.
    """


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Client transaction → transport: send ``request`` (§17.1.1.2, §17.1.2.2).

    ``retransmit`` is True for a retransmission (Timer A or E) and for a repeated ACK (§17.1.1.2:
    every retransmitted non-2xx final re-sends the ACK). The ACK for a non-2xx final is the one request
    here that the TU did not create (§17.1.1.3).
    """

    request: Request
    retransmit: bool = False


@dataclass(frozen=True, slots=True)
class SendResponse:
    """Server transaction → transport: send ``response`` (§17.2.1, §17.2.2, §18.2.2).

    ``retransmit`` is True when it is sent again (Timer G, or a retransmitted request).
    """

    response: Response
    retransmit: bool = False


@dataclass(frozen=True, slots=True)
class DeliverResponse:
    """Client transaction → TU: a response to act on (§17.1.1.2, §17.1.2.2; for 2xx retransmissions
    and forked 2xx in the Accepted state, RFC 6026 §8.4). Retransmissions of a non-2xx final are
    absorbed and never delivered."""

    response: Response


@dataclass(frozen=True, slots=True)
class DeliverRequest:
    """Server INVITE transaction → TU: an ACK that arrived in the Accepted state (RFC 6026 §8.7). It
    acknowledges a 2xx, which is end-to-end, so the TU (a proxy) forwards it like any in-dialog
    request. Retransmitted requests are never delivered: the transaction absorbs them."""

    request: Request


@dataclass(frozen=True, slots=True)
class Timeout:
    """A timer fired that the TU must act on; ``timer`` is the RFC's letter.

    ``"B"`` / ``"F"`` (§17.1.1.2, §17.1.2.2): no final response, the TU treats the request as having
    received 408 (§8.1.3.1, §16.7 step 6); the transaction terminates. ``"H"`` (§17.2.1): the ACK
    never came; the transaction terminates. ``"C"`` (§16.8): the proxy INVITE timer; in Calling
    the transaction terminates and the TU acts as on a 408; in Proceeding it stays alive and the TU
    MUST CANCEL the branch. ``"cancel"`` (§9.1): no final response within 64*T1 of a CANCEL; the
    transaction terminates.
    """

    timer: str


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """The transport could not send for this transaction (§17.1.4, §17.2.4, §18.4); the transaction
    terminates. For a client transaction the TU fails over or treats the branch as 503 (§16.7
    step 6 / RFC 3263)."""


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction entered the Terminated state (§17.1.1.2 "the client transaction MUST be
    destroyed the instant it enters Terminated"): it has left its table and the TU can forget it.
    Always the last action of a batch."""


Action = Union[
    SendRequest, SendResponse, DeliverResponse, DeliverRequest, Timeout, TransportFailure, Terminated
]
