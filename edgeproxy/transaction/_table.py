"""The transaction table: matching (RFC 3261 §17.1.3, §17.2.3, §9.2) and one timer for all.

Matching is one dict lookup. Each transaction is indexed under one key, computed when it is added:

* client: ``("c", branch, method)`` — §17.1.3: the top Via branch of the response and its CSeq
  method (so the CANCEL of an INVITE, which shares the branch, is its own transaction);
* server, branch with the magic cookie: ``("s", branch, sent-by, method)`` — §17.2.3, with an ACK
  looked up under method INVITE;
* server, RFC 2543 peer (no cookie): ``("2543", Request-URI, To tag, From tag, Call-ID, CSeq number,
  method, top Via)`` — the fallback of §17.2.3. An ACK there carries the To tag of the *response*,
  so it is looked up with its own To tag (a re-INVITE, whose To tag was already set) and then with
  none (an initial INVITE), and accepted only if that tag is one the transaction sent in a final.

Branches compare exactly (case-sensitively), as sent-by hosts compare case-insensitively (§20.42).

Timers, as aioquic's owner drives a connection: the table never looks inside a transaction. Each one
exposes its next :attr:`~Transaction.deadline`, and while it is a member the table is its
:attr:`~Transaction.on_change` observer, told after any input that moved that deadline or terminated
it, whoever made the call (the TU calls the transactions directly). The heap holds ``(deadline,
sequence, transaction)``: an entry is pushed when a deadline moves and is current while it equals the
transaction's ``deadline``; stale entries are skipped when they reach the top (lazy deletion). When
entries outnumber twice the members the heap is rebuilt, so it stays within a constant factor of the
live transactions and every operation is O(log n) amortised. Termination reaches the table the same
way, and the transaction leaves the index at once.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from itertools import count
from typing import Callable, Iterator

from ..sip.message import Request, Response
from ._base import State, Transaction
from ._client import ClientTransaction
from ._events import Action, TransactionError
from ._server import ServerInviteTransaction, ServerTransaction

__all__ = ["TransactionTable"]

_COMPACT_MIN = 1024
_TERMINATED = State.TERMINATED
_HeapEntry = tuple[float, int, Transaction]


def _via_key(request: Request) -> tuple:
    via = request.top_via
    params = frozenset((k, v.lower() if v else v) for k, v in via.params.items())
    return (via.transport, via.host.lower(), via.port, params)


def _key_2543(request: Request, method: str, to_tag: str | None) -> tuple:
    """§17.2.3, last paragraphs: Request-URI, To tag, From tag, Call-ID, CSeq, top Via."""
    return ("2543", request.uri, to_tag, request.from_tag, request.call_id, request.cseq.number,
            method, _via_key(request))


def _server_key(request: Request, method: str) -> tuple:
    via = request.top_via
    if via.rfc3261_branch:
        return ("s", via.branch, via.sent_by, method)
    return _key_2543(request, method, request.to_tag)


class TransactionTable:
    """Every live transaction of one element, matched in O(1) and timed by one heap (RFC 3261
    §17.1.3, §17.2.3; the CANCEL lookup of §9.2).

    The TU adds a transaction right after creating it (before or after ``start``); the table removes
    it by itself when it reaches Terminated, whatever input drove it there. :meth:`get_timer` is the
    earliest deadline over all transactions, so an adapter needs a single ``callLater``; after any
    input, re-read it. :meth:`handle_timer` fires what is due and returns ``(transaction, action)``
    pairs, transactions in the order of their deadlines.
    """

    __slots__ = ("_index", "_keys", "_heap", "_order", "_observer")

    def __init__(self) -> None:
        self._index: dict[tuple, Transaction] = {}
        self._keys: dict[Transaction, tuple] = {}
        self._heap: list[_HeapEntry] = []
        self._order = count()
        # one bound method for every member: what ``on_change`` of a member is, and how we know it
        self._observer: Callable[[Transaction], None] = self._changed

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, tx: object) -> bool:
        return isinstance(tx, Transaction) and tx in self._keys

    def __iter__(self) -> Iterator[Transaction]:
        return iter(list(self._index.values()))

    # -- membership ----------------------------------------------------------------------------------
    def add(self, tx: Transaction) -> None:
        """Index ``tx`` and take over its timers (it gets the table as its ``on_change`` observer).
        Raises :class:`TransactionError` when a live transaction already has the same key (the TU
        should have matched the request first), when a client request has no branch (§8.1.1.7) or
        when ``tx`` is already in a table (or observed otherwise) or over."""
        if tx.on_change is not None:
            raise TransactionError("transaction already in a table")
        if tx.state is _TERMINATED:
            raise TransactionError("transaction already terminated")
        request = tx.request
        if isinstance(tx, ClientTransaction):
            branch = request.top_via.branch
            if not branch:
                raise TransactionError("client request without a Via branch")
            key: tuple = ("c", branch, request.method)
        else:
            key = _server_key(request, request.method)
        index = self._index
        if key in index:
            raise TransactionError(f"duplicate transaction {key[:3]!r}")
        index[key] = tx
        self._keys[tx] = key
        tx.on_change = self._observer
        if tx.deadline is not None:
            self._push(tx.deadline, tx)

    def remove(self, tx: Transaction) -> None:
        """Forget ``tx`` without terminating it (shutdown, or a TU that takes it elsewhere): it no
        longer matches and its timers no longer fire from this table."""
        if tx in self._keys:
            self._forget(tx)

    def _forget(self, tx: Transaction) -> None:
        del self._index[self._keys.pop(tx)]
        tx.on_change = None

    def _changed(self, tx: Transaction) -> None:
        """``on_change`` of every member: a new deadline to schedule, or the end (§17: "destroyed"
        on Terminated)."""
        if tx.state is _TERMINATED:
            self._forget(tx)
        elif tx.deadline is not None:
            self._push(tx.deadline, tx)

    # -- matching ------------------------------------------------------------------------------------
    def match_request(self, request: Request) -> ServerTransaction | None:
        """The server transaction ``request`` belongs to (§17.2.3), or None for a new request.

        With a magic-cookie branch: same branch, same sent-by, same method, except that an ACK
        matches the INVITE. A CANCEL never matches its INVITE here (it is a transaction of its own);
        use :meth:`find_invite_for_cancel`. Without the cookie, the RFC 2543 rules apply.
        """
        method = request.method
        via = request.top_via
        index = self._index
        if via.rfc3261_branch:
            tx = index.get(("s", via.branch, via.sent_by, "INVITE" if method == "ACK" else method))
            return tx  # type: ignore[return-value]
        to_tag = request.to_tag
        if method != "ACK":
            return index.get(_key_2543(request, method, to_tag))  # type: ignore[return-value]
        for tag in (to_tag, None) if to_tag is not None else (None,):
            tx = index.get(_key_2543(request, "INVITE", tag))
            if isinstance(tx, ServerInviteTransaction) and to_tag in tx.final_to_tags:
                return tx
        return None

    def match_response(self, response: Response) -> ClientTransaction | None:
        """The client transaction ``response`` belongs to (§17.1.3): top Via branch and CSeq method
        equal to the request's. None means a stray response (§16.7 step 1, §18.1.2)."""
        branch = response.top_via.branch
        if not branch:
            return None
        return self._index.get(("c", branch, response.cseq.method))  # type: ignore[return-value]

    def find_invite_for_cancel(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction a CANCEL targets (§9.2): matched as if the CANCEL were the
        INVITE (same branch and sent-by, or the RFC 2543 fields), in whatever state it is."""
        tx = self._index.get(_server_key(cancel, "INVITE"))
        return tx if isinstance(tx, ServerInviteTransaction) else None

    # -- timers --------------------------------------------------------------------------------------
    def _push(self, when: float, tx: Transaction) -> None:
        heap = self._heap
        heappush(heap, (when, next(self._order), tx))
        if len(heap) > _COMPACT_MIN and len(heap) > 2 * len(self._keys):
            self._compact()

    def _compact(self) -> None:
        observer = self._observer
        heap = self._heap
        # in place: handle_timer holds the list
        heap[:] = [e for e in heap if e[2].deadline == e[0] and e[2].on_change is observer]
        heapify(heap)

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction in the table, or None."""
        heap = self._heap
        observer = self._observer
        while heap:
            when, _, tx = heap[0]
            if tx.deadline == when and tx.on_change is observer:
                return when
            heappop(heap)
        return None

    def handle_timer(self, now: float) -> list[tuple[Transaction, Action]]:
        """Fire every timer due at ``now`` and return what the transactions want done as
        ``(transaction, action)`` pairs: transactions in the order of their deadlines (ties in the
        order the deadlines were set), each one's timers in its own deadline order."""
        heap = self._heap
        observer = self._observer
        out: list[tuple[Transaction, Action]] = []
        while heap and heap[0][0] <= now:
            when, _, tx = heappop(heap)
            if tx.deadline != when or tx.on_change is not observer:
                continue  # stale: the deadline moved (a newer entry has it) or tx left the table
            for action in tx.handle_timer(now):
                out.append((tx, action))
        return out

    @property
    def timer_entries(self) -> int:
        """Entries in the timer heap, stale ones included (for monitoring the lazy deletion)."""
        return len(self._heap)
