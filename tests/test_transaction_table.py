"""The transaction table: matching per RFC 3261 §17.1.3, §17.2.3 (with the RFC 2543 fallback) and
§9.2, removal on Terminated, and one timer heap for every transaction."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.sip import Request, Response, parse_datagram
from edgeproxy.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    SendRequest,
    SendResponse,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Terminated,
    Timeout,
    TimerSettings,
    TransactionError,
    TransactionTable,
)


def request(method: str = "INVITE", branch: str | None = "z9hG4bKb1", *, sent_by: str = "192.0.2.1:5060",
            uri: str = "sip:bob@example.com", to_tag: str | None = None, from_tag: str = "f1",
            call_id: str = "call-1", cseq: int = 1, cseq_method: str | None = None,
            transport: str = "UDP") -> Request:
    via = f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch is not None else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: <sip:alice@example.org>;tag={from_tag}",
        "To: <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "",
        "",
    ]
    msg = parse_datagram("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def server(table: TransactionTable, req: Request, now: float = 0.0, reliable: bool = False):
    cls = ServerInviteTransaction if req.method == "INVITE" else ServerNonInviteTransaction
    tx = cls(req, reliable=reliable, now=now)
    table.add(tx)
    tx.start(now)
    return tx


def client(table: TransactionTable, req: Request, now: float = 0.0, reliable: bool = False,
           timers: TimerSettings | None = None):
    cls = ClientInviteTransaction if req.method == "INVITE" else ClientNonInviteTransaction
    tx = cls(req, reliable=reliable, timers=timers, now=now)
    table.add(tx)
    tx.start(now)
    return tx


def response(req: Request, status: int, to_tag: str | None = "t1") -> Response:
    return req.make_response(status, to_tag=to_tag)


# =================================================================================================
# §17.2.3 with the magic cookie
# =================================================================================================


class TestServerMatching:
    def test_retransmission_matches(self) -> None:
        table = TransactionTable()
        tx = server(table, request())
        assert table.match_request(request()) is tx

    def test_ack_matches_the_invite(self) -> None:
        table = TransactionTable()
        tx = server(table, request())
        assert table.match_request(request("ACK", to_tag="t1")) is tx

    def test_cancel_does_not_match_the_invite(self) -> None:
        table = TransactionTable()
        server(table, request())
        assert table.match_request(request("CANCEL")) is None

    def test_cancel_matches_its_own_transaction(self) -> None:
        table = TransactionTable()
        invite = server(table, request())
        cancel = server(table, request("CANCEL"))
        assert table.match_request(request("CANCEL")) is cancel
        assert table.match_request(request()) is invite

    def test_other_method_same_branch_does_not_match(self) -> None:
        table = TransactionTable()
        server(table, request())
        assert table.match_request(request("OPTIONS")) is None

    def test_sent_by_must_match(self) -> None:
        table = TransactionTable()
        server(table, request())
        assert table.match_request(request(sent_by="192.0.2.2:5060")) is None
        assert table.match_request(request(sent_by="192.0.2.1:5070")) is None

    def test_sent_by_default_port_and_host_case(self) -> None:
        table = TransactionTable()
        tx = server(table, request(sent_by="Host.Example.COM"))
        assert table.match_request(request(sent_by="host.example.com:5060")) is tx

    def test_branch_compares_exactly(self) -> None:
        table = TransactionTable()
        server(table, request(branch="z9hG4bKabc"))
        assert table.match_request(request(branch="z9hG4bKABC")) is None

    def test_other_fields_do_not_matter_with_the_cookie(self) -> None:
        table = TransactionTable()
        tx = server(table, request())
        assert table.match_request(request(uri="sip:other@example.com", call_id="x", cseq=9)) is tx

    def test_new_branch_is_a_new_transaction(self) -> None:
        table = TransactionTable()
        server(table, request())
        assert table.match_request(request(branch="z9hG4bKb2")) is None
        assert table.match_request(request("ACK", branch="z9hG4bKack-for-2xx", to_tag="t1")) is None


class TestCancelLookup:
    """§9.2: the CANCEL targets the INVITE with the branch of its top Via."""

    def test_finds_the_invite(self) -> None:
        table = TransactionTable()
        tx = server(table, request())
        assert table.find_invite_for_cancel(request("CANCEL")) is tx

    def test_other_branch_or_sent_by(self) -> None:
        table = TransactionTable()
        server(table, request())
        assert table.find_invite_for_cancel(request("CANCEL", branch="z9hG4bKzz")) is None
        assert table.find_invite_for_cancel(request("CANCEL", sent_by="192.0.2.7")) is None

    def test_not_a_non_invite(self) -> None:
        table = TransactionTable()
        server(table, request("OPTIONS"))
        assert table.find_invite_for_cancel(request("CANCEL")) is None

    def test_found_in_any_state(self) -> None:
        table = TransactionTable()
        tx = server(table, request())
        tx.send_response(response(tx.request, 486), 1.0)
        assert table.find_invite_for_cancel(request("CANCEL")) is tx


# =================================================================================================
# §17.2.3, RFC 2543 fallback (no magic cookie)
# =================================================================================================


class TestRfc2543Matching:
    def test_invite_retransmission(self) -> None:
        table = TransactionTable()
        tx = server(table, request(branch=None))
        assert table.match_request(request(branch=None)) is tx

    def test_old_style_branch_is_no_cookie(self) -> None:
        table = TransactionTable()
        tx = server(table, request(branch="1234"))
        assert table.match_request(request(branch="1234")) is tx
        assert table.match_request(request(branch="5678")) is None  # the top Via differs

    def test_request_uri_compared_by_19_1_4(self) -> None:
        table = TransactionTable()
        tx = server(table, request(branch=None))
        assert table.match_request(request(branch=None, uri="sip:bob@EXAMPLE.COM")) is tx
        assert table.match_request(request(branch=None, uri="sip:carol@example.com")) is None

    @pytest.mark.parametrize("change", [
        {"call_id": "call-2"}, {"from_tag": "f2"}, {"cseq": 2}, {"to_tag": "x"},
        {"sent_by": "192.0.2.1:5062"},
    ])
    def test_each_field_counts(self, change) -> None:
        table = TransactionTable()
        server(table, request(branch=None))
        assert table.match_request(request(branch=None, **change)) is None

    def test_ack_needs_the_to_tag_of_the_final(self) -> None:
        table = TransactionTable()
        tx = server(table, request(branch=None))
        assert table.match_request(request("ACK", branch=None, to_tag="t9")) is None  # no final yet
        tx.send_response(response(tx.request, 486, to_tag="t9"), 1.0)
        assert table.match_request(request("ACK", branch=None, to_tag="t9")) is tx
        assert table.match_request(request("ACK", branch=None, to_tag="other")) is None
        assert table.match_request(request("ACK", branch=None, to_tag="t9", cseq=2)) is None

    def test_ack_for_a_reinvite(self) -> None:
        table = TransactionTable()
        tx = server(table, request(branch=None, to_tag="dialog"))
        tx.send_response(response(tx.request, 200, to_tag="ignored"), 1.0)  # To already tagged
        assert table.match_request(request("ACK", branch=None, to_tag="dialog")) is tx

    def test_ack_for_a_2xx_in_accepted(self) -> None:
        table = TransactionTable()
        tx = server(table, request(branch=None))
        tx.send_response(response(tx.request, 200, to_tag="a"), 1.0)
        tx.send_response(response(tx.request, 200, to_tag="b"), 1.1)
        assert table.match_request(request("ACK", branch=None, to_tag="a")) is tx
        assert table.match_request(request("ACK", branch=None, to_tag="b")) is tx

    def test_non_invite_includes_the_method(self) -> None:
        table = TransactionTable()
        tx = server(table, request("BYE", branch=None, to_tag="d"))
        assert table.match_request(request("BYE", branch=None, to_tag="d")) is tx
        assert table.match_request(request("INFO", branch=None, to_tag="d")) is None

    def test_cancel(self) -> None:
        table = TransactionTable()
        tx = server(table, request(branch=None))
        assert table.match_request(request("CANCEL", branch=None)) is None
        assert table.find_invite_for_cancel(request("CANCEL", branch=None)) is tx
        assert table.find_invite_for_cancel(request("CANCEL", branch=None, cseq=5)) is None


# =================================================================================================
# §17.1.3
# =================================================================================================


class TestResponseMatching:
    def test_branch_and_cseq_method(self) -> None:
        table = TransactionTable()
        invite = client(table, request())
        cancel = client(table, request("CANCEL"))
        assert table.match_response(response(invite.request, 487)) is invite
        assert table.match_response(response(cancel.request, 200)) is cancel

    def test_unknown_branch_is_stray(self) -> None:
        table = TransactionTable()
        client(table, request())
        assert table.match_response(response(request(branch="z9hG4bKother"), 200)) is None

    def test_no_branch_is_stray(self) -> None:
        table = TransactionTable()
        assert table.match_response(response(request(branch=None), 200)) is None

    def test_client_and_server_with_the_same_branch_do_not_mix(self) -> None:
        table = TransactionTable()
        srv = server(table, request())
        cli = client(table, request())
        assert table.match_request(request()) is srv
        assert table.match_response(response(request(), 180)) is cli


# =================================================================================================
# membership
# =================================================================================================


class TestMembership:
    def test_removed_when_a_timer_terminates_it(self) -> None:
        table = TransactionTable()
        tx = client(table, request("OPTIONS"), reliable=True)
        assert len(table) == 1 and tx in table
        assert table.handle_timer(32.0) == [(tx, Timeout("F")), (tx, Terminated())]
        assert len(table) == 0 and tx not in table
        assert table.match_response(response(tx.request, 200)) is None
        assert table.get_timer() is None

    def test_removed_when_an_input_terminates_it(self) -> None:
        table = TransactionTable()
        tx = server(table, request("OPTIONS"), reliable=True)
        tx.send_response(response(tx.request, 200), 0.1)
        assert tx.state is State.TERMINATED
        assert table.match_request(request("OPTIONS")) is None
        assert len(table) == 0

    def test_removed_on_transport_error(self) -> None:
        table = TransactionTable()
        tx = client(table, request())
        tx.transport_error(0.1)
        assert len(table) == 0
        assert table.get_timer() is None

    def test_a_new_transaction_may_reuse_the_key_after_termination(self) -> None:
        table = TransactionTable()
        tx = server(table, request("OPTIONS"), reliable=True)
        tx.send_response(response(tx.request, 200), 0.1)
        again = server(table, request("OPTIONS"))
        assert table.match_request(request("OPTIONS")) is again

    def test_remove_stops_matching_and_timers(self) -> None:
        table = TransactionTable()
        tx = client(table, request())
        table.remove(tx)
        assert len(table) == 0
        assert table.get_timer() is None
        assert table.handle_timer(1000.0) == []
        assert tx.state is State.CALLING and tx.get_timer() == 0.5

    def test_timers_armed_before_add_are_scheduled(self) -> None:
        table = TransactionTable()
        tx = ClientNonInviteTransaction(request("OPTIONS"), reliable=False, now=3.0)
        tx.start(3.0)
        table.add(tx)
        assert table.get_timer() == 3.5

    def test_duplicate_key(self) -> None:
        table = TransactionTable()
        server(table, request())
        with pytest.raises(TransactionError):
            server(table, request())
        with pytest.raises(TransactionError):
            client(table, request(branch=None))

    def test_add_twice_or_after_termination(self) -> None:
        table = TransactionTable()
        tx = client(table, request())
        with pytest.raises(TransactionError):
            table.add(tx)
        with pytest.raises(TransactionError):
            TransactionTable().add(tx)
        tx.transport_error(0.0)
        with pytest.raises(TransactionError):
            table.add(tx)

    def test_iteration(self) -> None:
        table = TransactionTable()
        a = client(table, request())
        b = server(table, request())
        assert set(table) == {a, b}


# =================================================================================================
# one heap for everything
# =================================================================================================


class TestTimers:
    def test_empty(self) -> None:
        table = TransactionTable()
        assert table.get_timer() is None
        assert table.handle_timer(1e9) == []

    def test_earliest_deadline_over_all(self) -> None:
        table = TransactionTable()
        client(table, request(branch="z9hG4bK1"), now=1.0, reliable=True)  # B at 33
        client(table, request("OPTIONS", branch="z9hG4bK2"), now=2.0)  # E at 2.5
        assert table.get_timer() == 2.5
        table.handle_timer(2.5)
        assert table.get_timer() == 3.5

    def test_nothing_fires_early(self) -> None:
        table = TransactionTable()
        client(table, request())
        assert table.handle_timer(0.49) == []
        assert [type(a) for _, a in table.handle_timer(0.5)] == [SendRequest]

    def test_cancelled_timers_do_not_fire(self) -> None:
        table = TransactionTable()
        tx = client(table, request())
        tx.receive_response(response(tx.request, 180), 0.1)  # cancels A and B, restarts C
        assert table.get_timer() == 180.1
        assert table.handle_timer(180.0) == []

    def test_ties_fire_in_arming_order(self) -> None:
        table = TransactionTable()
        txs = [client(table, request("OPTIONS", branch=f"z9hG4bK{i}"), reliable=True) for i in range(5)]
        fired = table.handle_timer(32.0)
        assert [tx for tx, a in fired if isinstance(a, Timeout)] == txs

    def test_restarted_timers_keep_the_heap_bounded(self) -> None:
        table = TransactionTable()
        tx = client(table, request())
        ringing = response(tx.request, 180)
        for i in range(10_000):
            tx.receive_response(ringing, 1.0 + i * 0.001)
        assert table.timer_entries <= 1100
        assert table.get_timer() == pytest.approx(1.0 + 9_999 * 0.001 + 180.0)

    def test_thousands_of_transactions_match_per_transaction_driving(self) -> None:
        """The table fires exactly what each transaction fires on its own, at the same instants,
        with global times never going backwards."""
        rng = random.Random(3261)
        n = 3000
        specs = []
        for i in range(n):
            kind = rng.choice(["ci", "cn", "si", "sn"])
            start = round(rng.uniform(0, 60), 3)
            reliable = rng.random() < 0.3
            inputs = []
            t = start
            for _ in range(rng.randint(0, 3)):
                t = round(t + rng.uniform(0, 20), 3)
                inputs.append((t, rng.choice([100, 180, 200, 486])))
            specs.append((i, kind, start, reliable, inputs))

        def build(i, kind, start, reliable):
            method = "INVITE" if kind[1] == "i" else "OPTIONS"
            req = request(method, branch=f"z9hG4bK{i}")
            cls = {"ci": ClientInviteTransaction, "cn": ClientNonInviteTransaction,
                   "si": ServerInviteTransaction, "sn": ServerNonInviteTransaction}[kind]
            return cls(req, reliable=reliable, timers=TimerSettings(timer_c=90.0), now=start)

        def apply(tx, status, t):
            resp = response(tx.request, status)
            if isinstance(tx, (ClientInviteTransaction, ClientNonInviteTransaction)):
                return tx.receive_response(resp, t)
            return tx.send_response(resp, t)

        # reference: every transaction on its own
        expected: dict[int, list] = {}
        for i, kind, start, reliable, inputs in specs:
            tx = build(i, kind, start, reliable)
            log = [(start, a) for a in tx.start(start)]
            for t, status in inputs:
                while (w := tx.get_timer()) is not None and w <= t:
                    log.extend((w, a) for a in tx.handle_timer(w))
                log.extend((t, a) for a in apply(tx, status, t))
            while (w := tx.get_timer()) is not None:
                log.extend((w, a) for a in tx.handle_timer(w))
            expected[i] = log

        # the table drives all of them together
        table = TransactionTable()
        events = []
        for i, kind, start, reliable, inputs in specs:
            events.append((start, 0, i, None))
            events.extend((t, 1, i, status) for t, status in inputs)
        events.sort()
        got: dict[int, list] = {i: [] for i in range(n)}
        txs: dict[int, object] = {}
        owner: dict[object, int] = {}
        clock = 0.0

        def fire_until(limit):
            nonlocal clock
            while (w := table.get_timer()) is not None and w <= limit:
                assert w >= clock
                clock = w
                for tx, a in table.handle_timer(w):
                    got[owner[tx]].append((w, a))

        for t, order, i, status in events:
            fire_until(t)
            clock = t
            if order == 0:
                tx = build(*specs[i][:4])
                txs[i], owner[tx] = tx, i
                table.add(tx)
                got[i].extend((t, a) for a in tx.start(t))
            else:
                tx = txs[i]
                got[i].extend((t, a) for a in apply(tx, status, t))
        fire_until(float("inf"))

        assert got == expected
        servers_waiting = sum(1 for tx in txs.values() if not tx.terminated)
        assert len(table) == servers_waiting
        assert all(isinstance(tx, (ServerInviteTransaction, ServerNonInviteTransaction))
                   and tx.state in (State.PROCEEDING, State.TRYING)
                   for tx in txs.values() if not tx.terminated)
        assert table.get_timer() is None

    def test_scale_twenty_thousand(self) -> None:
        table = TransactionTable()
        txs = [client(table, request("OPTIONS", branch=f"z9hG4bKs{i}"), now=i * 0.001) for i in range(20_000)]
        assert len(table) == 20_000
        for i in range(0, 20_000, 2):
            txs[i].receive_response(response(txs[i].request, 200), 0.5 + i * 0.001)
        assert all(table.match_response(response(tx.request, 200)) is tx for tx in txs[1::2])
        fired = table.handle_timer(1e6)
        assert sum(isinstance(a, Terminated) for _, a in fired) == 20_000
        assert len(table) == 0 and table.get_timer() is None


# =================================================================================================
# invariants under arbitrary input sequences
# =================================================================================================

_OPS = ["timer", "1xx", "2xx", "final", "request", "ack", "transport", "cancel_sent"]
_S = State
_STATES = {
    ClientInviteTransaction: {_S.CALLING, _S.PROCEEDING, _S.COMPLETED, _S.ACCEPTED, _S.TERMINATED},
    ClientNonInviteTransaction: {_S.TRYING, _S.PROCEEDING, _S.COMPLETED, _S.TERMINATED},
    ServerInviteTransaction: {_S.PROCEEDING, _S.COMPLETED, _S.CONFIRMED, _S.ACCEPTED, _S.TERMINATED},
    ServerNonInviteTransaction: {_S.TRYING, _S.PROCEEDING, _S.COMPLETED, _S.TERMINATED},
}


@settings(max_examples=300, deadline=None)
@given(
    cls=st.sampled_from(list(_STATES)),
    reliable=st.booleans(),
    steps=st.lists(st.tuples(st.floats(0, 40, allow_nan=False), st.sampled_from(_OPS)), max_size=25),
)
def test_invariants_hold_for_any_input_sequence(cls, reliable, steps) -> None:
    table = TransactionTable()
    invite = cls in (ClientInviteTransaction, ServerInviteTransaction)
    req = request("INVITE" if invite else "OPTIONS")
    extra = {"auto_100": True} if cls is ServerInviteTransaction else {}
    tx = cls(req, reliable=reliable, now=0.0, **extra)
    table.add(tx)
    batches = [tx.start(0.0)]
    now = 0.0
    is_client = cls in (ClientInviteTransaction, ClientNonInviteTransaction)
    for dt, op in steps:
        now += dt
        timed = [a for _, a in table.handle_timer(now)]
        if reliable:
            assert not any(isinstance(a, (SendRequest, SendResponse)) and a.retransmit for a in timed
                           if not (isinstance(a, SendRequest) and a.request.method == "ACK"))
        batches.append(timed)
        status = {"1xx": 180, "2xx": 200, "final": 486}.get(op)
        if status is not None:
            resp = response(req, status)
            batches.append(tx.receive_response(resp, now) if is_client else tx.send_response(resp, now))
        elif op == "request" and not is_client:
            batches.append(tx.receive_request(request(req.method), now))
        elif op == "ack" and not is_client:
            batches.append(tx.receive_request(request("ACK", to_tag="t1"), now))
        elif op == "transport":
            batches.append(tx.transport_error(now))
        elif op == "cancel_sent" and cls is ClientInviteTransaction:
            batches.append(tx.cancel_sent(now))

        assert tx.state in _STATES[cls]
        deadline = tx.get_timer()
        assert deadline is None or deadline >= now
        if tx.terminated:
            assert tx not in table and deadline is None and table.get_timer() is None
        else:
            assert tx in table and table.get_timer() == deadline

    flat = [a for batch in batches for a in batch]
    assert sum(isinstance(a, Terminated) for a in flat) == (1 if tx.terminated else 0)
    for batch in batches:
        assert all(not isinstance(a, Terminated) for a in batch[:-1])
    if tx.terminated:
        assert isinstance(flat[-1], Terminated)
    if is_client:  # every client transaction ends by itself (B, D, F, K, M, C + §9.1 wait)
        while (when := table.get_timer()) is not None and when < now + 10_000:
            table.handle_timer(when)
        assert tx.terminated and len(table) == 0


# =================================================================================================
# an adapter (that the layer imports no Twisted is tests/test_layers.py's)
# =================================================================================================


def test_one_calllater_drives_the_table() -> None:
    """A thin Twisted adapter (as the node has): one IDelayedCall for the earliest deadline."""
    task = pytest.importorskip("twisted.internet.task")
    clock = task.Clock()
    table = TransactionTable()
    sent: list[tuple[float, str]] = []
    pending = []

    def arm() -> None:
        when = table.get_timer()
        for call in pending:
            if call.active():
                call.cancel()
        pending.clear()
        if when is not None:
            pending.append(clock.callLater(max(0.0, when - clock.seconds()), fire))

    def fire() -> None:
        for tx, action in table.handle_timer(clock.seconds()):
            if isinstance(action, SendRequest):
                sent.append((clock.seconds(), tx.request.method))
        arm()

    client(table, request("INVITE", branch="z9hG4bKa"), now=0.0)
    clock.advance(0.25)
    client(table, request("OPTIONS", branch="z9hG4bKb"), now=clock.seconds())
    arm()
    clock.pump([0.25] * 20)
    assert sent == [(0.5, "INVITE"), (0.75, "OPTIONS"), (1.5, "INVITE"), (1.75, "OPTIONS"),
                    (3.5, "INVITE"), (3.75, "OPTIONS")]
