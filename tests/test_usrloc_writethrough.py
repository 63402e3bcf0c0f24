"""usrloc write-through (``single-instance-sql-write-through``): the registrar's 200 OK leaves only
once the REGISTER's row is committed, saves made meanwhile share the next transaction (group commit),
and a failed commit answers 500 with the tentative binding withdrawn (RFC 3261 §10.3 step 7).

The real :class:`~edgeproxy.registrar.Registrar` over :class:`~edgeproxy.usrloc.writethrough.WriteThroughLocation`,
a real SQLite file and the test MariaDB; timers on ``task.Clock``; the worker thread replaced by a gate
the test opens, so the order "row committed, then 200" is observed, not assumed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from edgeproxy.location import ChangeJournal, InMemoryLocation, LookupResult
from edgeproxy.registrar import Registrar
from edgeproxy.sip import Response
from edgeproxy.usrloc import Persistence, open_table
from edgeproxy.usrloc.writethrough import WriteThroughLocation
from support import mariadb
from test_registrar import UDP, register

T0 = 1_700_000_000.0


class Gate:
    """The persistence's runner: each database operation waits until :meth:`open` runs it."""

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self.transactions = 0

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queued.append((f, args, d))
        return d

    def open(self) -> None:
        """Run the queued operations (and any they queue) inline."""
        while self.queued:
            f, args, d = self.queued.pop(0)
            self.transactions += 1
            maybeDeferred(f, *args).chainDeferred(d)


class Node:
    def __init__(self, db_url: str, table: str = "location") -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        journal = ChangeJournal()
        self.location = InMemoryLocation(self.clock, [journal])
        self.gate = Gate()
        self.table = open_table(db_url, table)
        self.persistence = Persistence(self.location, journal, self.table, mode="write-through", timer_interval=60,
                                       use_domain=False, clock=self.clock, runner=self.gate)
        self.registrar = Registrar(WriteThroughLocation(self.location, self.persistence), clock=self.clock)
        self.persistence.load()
        self.gate.open()
        self.persistence.start()

    def save(self, user: str, cseq: int = 1, expires: int = 600) -> Deferred[Response]:
        request = register(f"<sip:{user}@198.51.100.7:5062>;expires={expires}", to=f"<sip:{user}@example.com>",
                           call_id=f"c-{user}", cseq=cseq)
        return self.registrar.save(request, UDP)

    def turn(self) -> None:
        """One reactor turn: the write-through flush scheduled by a change starts."""
        self.clock.advance(0)

    def lookup(self, user: str) -> tuple[LookupResult, list[Any]]:
        result: list[Any] = []
        self.location.lookup(user).addCallback(result.append)
        return result[0]


def sqlite_rows(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT username, cseq FROM location ORDER BY username").fetchall()


def test_the_200_leaves_after_the_row_is_committed(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    node = Node(f"sqlite://{db}")
    seen: list[tuple[int, list[tuple[str, int]]]] = []
    node.save("alice").addCallback(lambda r: seen.append((r.status, sqlite_rows(db))))
    assert seen == [] and node.lookup("alice")[0] == LookupResult.FOUND  # memory first, as OpenSIPS
    node.turn()
    assert seen == [] and sqlite_rows(db) == []  # the transaction is queued, not committed: no 200 yet
    node.gate.open()
    assert seen == [(200, [("alice", 1)])]  # the row was in the table when the 200 was made


def test_saves_made_during_a_transaction_share_the_next(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    node = Node(f"sqlite://{db}")
    before = node.gate.transactions
    statuses: dict[str, int] = {}
    node.save("alice").addCallback(lambda r: statuses.__setitem__("alice", r.status))
    node.turn()  # alice's transaction is in flight ...
    for user in ("bob", "carol", "dave"):  # ... while three more REGISTERs arrive
        node.save(user).addCallback(lambda r, u=user: statuses.__setitem__(u, r.status))
    node.turn()
    node.gate.open()  # alice's commits; the next starts at once with bob, carol and dave
    assert statuses == {"alice": 200}
    node.turn()
    node.gate.open()
    assert statuses == {"alice": 200, "bob": 200, "carol": 200, "dave": 200}
    assert node.gate.transactions - before == 2  # four saves, two transactions
    assert [r[0] for r in sqlite_rows(db)] == ["alice", "bob", "carol", "dave"]


def alice_saved_then_table_broken(tmp_path: Path) -> tuple[Node, Path]:
    """A node whose table holds alice (cseq 1, 600 s), then breaks: every INSERT fails."""
    db = tmp_path / "loc.db"
    node = Node(f"sqlite://{db}")
    first: list[Response] = []
    node.save("alice").addCallback(first.append)
    node.turn()
    node.gate.open()
    assert first[0].status == 200
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE location")
        conn.execute("CREATE TABLE location (username CHAR(64))")
    return node, db


def test_a_failed_commit_answers_500_and_withdraws_the_binding(tmp_path: Path) -> None:
    node, db = alice_saved_then_table_broken(tmp_path)
    replies: list[Response] = []
    node.save("alice", cseq=2, expires=900).addCallback(replies.append)  # a refresh of alice
    node.save("bob").addCallback(replies.append)  # a new AoR
    node.turn()
    node.gate.open()
    assert [(r.status, r.reason) for r in replies] == [(500, "Server Internal Error")] * 2
    # RFC 3261 §10.3 step 7: the tentative updates are removed; memory holds what the table holds
    status, (alice,) = node.lookup("alice")
    assert status == LookupResult.FOUND and alice.cseq == 1 and alice.expires_at == T0 + 600
    assert node.lookup("bob")[0] == LookupResult.NOT_FOUND
    assert node.persistence.stats["db_failures"] == 1
    with sqlite3.connect(db) as conn:  # repaired: the table is created again on the next connection
        conn.execute("DROP TABLE location")
    again: list[Response] = []
    node.save("bob", cseq=2).addCallback(again.append)
    node.turn()
    node.gate.open()
    assert again[0].status == 200 and ("bob", 2) in sqlite_rows(db)


def test_memory_only_and_write_back_saves_have_no_wait(tmp_path: Path) -> None:
    """The wrapper is the write-through registrar's only: refuses a write-back persistence."""
    clock = Clock()
    journal = ChangeJournal()
    location = InMemoryLocation(clock, [journal])
    back = Persistence(location, journal, open_table(f"sqlite://{tmp_path}/l.db", "location"), mode="write-back",
                       timer_interval=60, use_domain=False, clock=clock)
    with pytest.raises(ValueError):
        WriteThroughLocation(location, back)


def test_committed_on_a_stopped_persistence_fails(tmp_path: Path) -> None:
    node = Node(f"sqlite://{tmp_path}/loc.db")
    node.persistence.stop()
    node.gate.open()
    replies: list[Response] = []
    node.save("alice").addCallback(replies.append)
    assert replies[0].status == 500 and node.lookup("alice")[0] == LookupResult.NOT_FOUND


def test_mariadb_row_exists_when_the_200_is_made() -> None:
    conn = mariadb.connect_or_skip()
    table = mariadb.unique_name("location")

    def rows() -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(f"SELECT username, cseq FROM `{table}` ORDER BY username")
            return list(cur.fetchall())

    try:
        node = Node(mariadb.DB_URL, table)
        seen: list[tuple[int, list[tuple[Any, ...]]]] = []
        node.save("alice").addCallback(lambda r: seen.append((r.status, rows())))
        node.turn()
        assert seen == [] and rows() == []
        node.gate.open()
        assert seen == [(200, [("alice", 1)])]
        node.table.close()
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        conn.close()


def test_two_saves_of_one_aor_in_a_failed_commit_are_both_withdrawn(tmp_path: Path) -> None:
    """Two REGISTERs of one AoR while the table fails: both answered 500, and the AoR goes back to
    what it held before the first (RFC 3261 §10.3 step 7). The registrar runs one save of an AoR at a
    time, so the second is tentative only after the first was withdrawn: a withdrawal never restores
    another save's tentative binding, which the next flush would write."""
    node, db = alice_saved_then_table_broken(tmp_path)
    replies: list[Response] = []
    node.save("alice", cseq=2, expires=900).addCallback(replies.append)
    node.save("alice", cseq=3, expires=1200).addCallback(replies.append)  # waits for the first
    node.turn()
    node.gate.open()
    assert [r.status for r in replies] == [500]
    node.turn()
    node.gate.open()
    assert [r.status for r in replies] == [500, 500]
    status, (alice,) = node.lookup("alice")
    assert status == LookupResult.FOUND and (alice.cseq, alice.expires_at) == (1, T0 + 600)
    with sqlite3.connect(db) as conn:  # repaired: the next flush writes memory as it is
        conn.execute("DROP TABLE location")
    node.clock.advance(1)
    node.gate.open()
    assert sqlite_rows(db) == [("alice", 1)]  # not the refused cseq 2


def test_a_failing_table_is_tried_again_each_second_not_each_turn(tmp_path: Path) -> None:
    """A failed transaction's AoRs stay to be written, but a database that fails fast is not tried
    on every reactor turn for as long as the outage lasts: again after RETRY_DELAY, or at once for a
    save waiting for its answer."""
    from edgeproxy.usrloc.persistence import RETRY_DELAY

    node, db = alice_saved_then_table_broken(tmp_path)
    replies: list[Response] = []
    node.save("alice", cseq=2).addCallback(replies.append)
    for _ in range(20):
        node.turn()
        node.gate.open()
    assert [r.status for r in replies] == [500] and node.persistence.stats["db_failures"] == 1
    node.clock.advance(RETRY_DELAY)
    node.gate.open()
    assert node.persistence.stats["db_failures"] == 2
    node.save("bob").addCallback(replies.append)  # a save during the wait is tried at once
    node.turn()
    node.gate.open()
    assert [r.status for r in replies] == [500, 500] and node.persistence.stats["db_failures"] == 3
    with sqlite3.connect(db) as conn:  # repaired: alice's row (cseq 1) is written by the next retry
        conn.execute("DROP TABLE location")
    node.clock.advance(RETRY_DELAY)
    node.gate.open()
    assert sqlite_rows(db) == [("alice", 1)]
