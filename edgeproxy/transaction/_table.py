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

Timers: every armed timer of every transaction sits in one binary heap as ``(deadline, sequence,
transaction, name)``. Re-arming or cancelling a timer does not touch the heap; the transaction's own
``_deadlines`` says which sequence number is current, and stale entries are skipped when they reach
the top (lazy deletion). When stale entries outnumber live ones the heap is rebuilt, so it stays
within a constant factor of the live timers and every operation is O(log n) amortised.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Iterator

from ..sip.message import Request, Response
from ._events import Action, TransactionError
from ._machine import ClientTransaction, ServerInviteTransaction, ServerTransaction, Transaction

__all__ = ["TransactionTable"]

_COMPACT_MIN = 1024
_HeapEntry = tuple[float, int, Transaction, str]


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
    pairs in deadline order.
    """

    __slots__ = ("_index", "_heap", "_live")

    def __init__(self) -> None:
        self._index: dict[tuple, Transaction] = {}
        self._heap: list[_HeapEntry] = []
        self._live = 0

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, tx: object) -> bool:
        return isinstance(tx, Transaction) and tx._table is self

    def __iter__(self) -> Iterator[Transaction]:
        return iter(list(self._index.values()))

    # -- membership ----------------------------------------------------------------------------------
    def add(self, tx: Transaction) -> None:
        """Index ``tx`` and take over its timers. Raises :class:`TransactionError` when a live
        transaction already has the same key (the TU should have matched the request first), when a
        client request has no branch (§8.1.1.7) or when ``tx`` is already in a table or over."""
        if tx._table is not None:
            raise TransactionError("transaction already in a table")
        if tx.terminated:
            raise TransactionError("transaction already terminated")
        request = tx.request
        if isinstance(tx, ClientTransaction):
            branch = request.top_via.branch
            if not branch:
                raise TransactionError("client request without a Via branch")
            key: tuple = ("c", branch, request.method)
        else:
            key = _server_key(request, request.method)
        if key in self._index:
            raise TransactionError(f"duplicate transaction {key[:3]!r}")
        self._index[key] = tx
        tx._key = key
        tx._table = self
        for name, (when, seq) in tx._deadlines.items():
            self._schedule(when, seq, tx, name)

    def remove(self, tx: Transaction) -> None:
        """Forget ``tx`` without terminating it (shutdown, or a TU that takes it elsewhere): it no
        longer matches and its timers no longer fire from this table."""
        if tx._table is self:
            self._live -= len(tx._deadlines)
            self._forget(tx)

    def _forget(self, tx: Transaction) -> None:
        if self._index.get(tx._key) is tx:  # type: ignore[arg-type]
            del self._index[tx._key]  # type: ignore[arg-type]
        tx._table = None
        tx._key = None

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
    def _schedule(self, when: float, seq: int, tx: Transaction, name: str) -> None:
        heap = self._heap
        heappush(heap, (when, seq, tx, name))
        self._live += 1
        if len(heap) > _COMPACT_MIN and len(heap) > 2 * self._live:
            self._compact()

    def _valid(self, entry: _HeapEntry) -> bool:
        tx = entry[2]
        if tx._table is not self:
            return False
        current = tx._deadlines.get(entry[3])
        return current is not None and current[1] == entry[1]

    def _compact(self) -> None:
        valid = self._valid
        heap = self._heap
        heap[:] = [entry for entry in heap if valid(entry)]  # in place: handle_timer holds it
        heapify(heap)
        self._live = len(heap)

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction in the table, or None."""
        heap = self._heap
        valid = self._valid
        while heap:
            if valid(heap[0]):
                return heap[0][0]
            heappop(heap)
        return None

    def handle_timer(self, now: float) -> list[tuple[Transaction, Action]]:
        """Fire every timer due at ``now``, earliest first (ties in arming order), and return what
        the transactions want done as ``(transaction, action)`` pairs."""
        heap = self._heap
        valid = self._valid
        out: list[tuple[Transaction, Action]] = []
        while heap and heap[0][0] <= now:
            entry = heappop(heap)
            if not valid(entry):
                continue
            tx = entry[2]
            for action in tx._expire(entry[3], now):
                out.append((tx, action))
        return out

    @property
    def timer_entries(self) -> int:
        """Entries in the timer heap, stale ones included (for monitoring the lazy deletion)."""
        return len(self._heap)
