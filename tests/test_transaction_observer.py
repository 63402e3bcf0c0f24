"""Transactions and their table keep out of each other's state (issue 9).

A transaction exposes its next deadline (``deadline`` / ``get_timer()``) and one observer,
``on_change``; it never knows a table. The table reads those public names, reschedules and forgets;
it never reaches into a transaction. Checked both ways: behaviourally (a transaction runs to its end
with no table at all; the observer is told exactly when the deadline moves or the transaction ends)
and statically (no module of one side names the other's private attributes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from edgeproxy.sip import Request, parse_datagram
from edgeproxy.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    SendRequest,
    SendResponse,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Terminated,
    Timeout,
    Transaction,
    TransactionError,
    TransactionTable,
)

PACKAGE = Path(__file__).resolve().parents[1] / "edgeproxy" / "transaction"
MACHINES = ("_base.py", "_client.py", "_server.py")
# the machine classes, whose own (inherited) underscored members the transition tables name
MACHINE_CLASSES = {"Transaction", "ClientTransaction", "ServerTransaction", "ClientInviteTransaction",
                   "ClientNonInviteTransaction", "ServerInviteTransaction", "ServerNonInviteTransaction"}


def request(method: str = "INVITE", branch: str = "z9hG4bKobs1") -> Request:
    msg = parse_datagram((
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.org>;tag=f1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: call-obs\r\n"
        f"CSeq: 1 {method}\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def drive_alone(tx: Transaction) -> list[tuple[float, object]]:
    """Fire a lone transaction's timers by its own deadline until it has none."""
    out = []
    while (when := tx.deadline) is not None:
        assert tx.get_timer() == when
        out.extend((when, a) for a in tx.handle_timer(when))
    return out


# =================================================================================================
# without a table
# =================================================================================================


def test_client_invite_runs_to_timer_b_without_a_table() -> None:
    """§17.1.1.2: A doubles from T1 until B (64*T1) ends it; nobody observes, nothing is missing."""
    tx = ClientInviteTransaction(request(), reliable=False)
    assert tx.deadline is None and tx.on_change is None
    assert tx.start(0.0) == [SendRequest(tx.request)]
    assert tx.deadline == 0.5
    timeline = drive_alone(tx)
    resent = [t for t, a in timeline if isinstance(a, SendRequest)]
    assert resent == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert timeline[-2:] == [(32.0, Timeout("B")), (32.0, Terminated())]
    assert tx.terminated and tx.deadline is None and tx.on_change is None


def test_server_transactions_run_to_their_end_without_a_table() -> None:
    """§17.2.1: G retransmits the final until H; §17.2.2: J absorbs retransmissions, then ends."""
    inv = ServerInviteTransaction(request(), reliable=False)
    inv.start(0.0)
    assert inv.deadline is None
    inv.send_response(inv.request.make_response(486, to_tag="t"), 1.0)
    assert inv.deadline == 1.5
    timeline = drive_alone(inv)
    assert [t for t, a in timeline if isinstance(a, SendResponse)][:3] == [1.5, 2.5, 4.5]
    assert timeline[-2:] == [(33.0, Timeout("H")), (33.0, Terminated())]

    opt = ServerNonInviteTransaction(request("OPTIONS"), reliable=False)
    opt.start(0.0)
    opt.send_response(opt.request.make_response(200, to_tag="t"), 2.0)
    assert drive_alone(opt) == [(34.0, Terminated())]
    assert opt.terminated and opt.deadline is None


# =================================================================================================
# the observer
# =================================================================================================


def test_on_change_is_told_when_the_deadline_moves_or_the_transaction_ends() -> None:
    tx = ClientNonInviteTransaction(request("OPTIONS"), reliable=False)
    seen: list[tuple[float | None, bool]] = []
    tx.on_change = lambda t: seen.append((t.deadline, t.terminated))
    tx.start(0.0)
    assert seen == [(0.5, False)]  # E
    tx.receive_response(tx.request.make_response(100), 0.2)
    assert seen == [(0.5, False)]  # Proceeding keeps E where it is: no news
    tx.handle_timer(0.5)
    assert seen[-1] == (4.5, False)  # E again, now every T2
    tx.receive_response(tx.request.make_response(200, to_tag="t"), 1.0)
    assert seen[-1] == (6.0, False)  # K = T4
    tx.receive_response(tx.request.make_response(200, to_tag="t"), 2.0)
    assert seen[-1] == (6.0, False) and len(seen) == 3  # a retransmission absorbed: no news
    assert tx.handle_timer(6.0) == [Terminated()]
    assert seen[-1] == (None, True)


def test_on_change_hears_the_end_even_when_no_timer_ran() -> None:
    """A reliable non-INVITE server transaction ends on its final at once (Timer J is zero)."""
    tx = ServerNonInviteTransaction(request("OPTIONS"), reliable=True)
    seen: list[bool] = []
    tx.on_change = lambda t: seen.append(t.terminated)
    tx.start(0.0)
    assert seen == []
    assert tx.send_response(tx.request.make_response(200, to_tag="t"), 0.1)[-1] == Terminated()
    assert seen == [True]


def test_the_table_is_the_observer_of_its_members_only() -> None:
    table = TransactionTable()
    tx = ClientInviteTransaction(request(), reliable=False)
    table.add(tx)
    assert tx.on_change is not None
    tx.start(0.0)
    assert table.get_timer() == tx.deadline == 0.5
    table.remove(tx)
    assert tx.on_change is None and table.get_timer() is None
    tx.handle_timer(0.5)  # driven alone again, the table hears nothing
    assert table.get_timer() is None and len(table) == 0
    observed = ClientInviteTransaction(request(branch="z9hG4bKobs2"), reliable=False)
    observed.on_change = lambda t: None
    with pytest.raises(TransactionError):
        table.add(observed)


# =================================================================================================
# statically: public names only across the line
# =================================================================================================


def _foreign_private(path: Path, allowed_owners: set[str]) -> list[str]:
    """``x._name`` accesses where ``x`` is neither ``self`` nor one of ``allowed_owners``."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in {"self"} | allowed_owners)):
            bad.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return bad


def test_the_table_touches_no_private_state_of_a_transaction() -> None:
    assert _foreign_private(PACKAGE / "_table.py", set()) == []


def test_the_machines_know_no_table() -> None:
    for name in MACHINES:
        path = PACKAGE / name
        assert _foreign_private(path, MACHINE_CLASSES) == [], name
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("_table", "transaction._table"), f"{name} imports the table"
            if isinstance(node, ast.Name):
                assert node.id != "TransactionTable", f"{name} names the table"
