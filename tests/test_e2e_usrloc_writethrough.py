"""End to end: usrloc write-through answers a REGISTER only once its row is committed, and 500 when
the commit fails (OpenSIPS ``single-instance-sql-write-through``; RFC 3261 §10.3 step 7).

The real ``twistd edgeproxy`` with ``working_mode_preset = "single-instance-sql-write-through"``,
on an embedded SQLite file and on OpenSIPS's ``location`` table in MariaDB, REGISTERs over UDP
(tests/support/registrations.py's raw loader, retransmitting as timer E does):

* the test holds the table's write lock (SQLite ``BEGIN IMMEDIATE``; MariaDB ``LOCK TABLES ...
  WRITE``) from its own connection while a REGISTER arrives: the 200 comes only after the lock is
  released, and the row is in the table when it does;
* the table is dropped under the running node: the next REGISTER gets 500 and its AoR stays
  unregistered (``ul_dump`` through the ``opensips`` MI client); the node's connection to the table
  is then renewed and the table created again, and the next REGISTER gets 200.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import mariadb
from support.ports import free_port
from support.registrations import Registration, register_many
from support.sipp_harness import LOOPBACK, edgeproxy_node

try:
    from opensips.mi import OpenSIPSMI
except ImportError:  # pragma: no cover - installed by .[test]; under CI a missing client fails
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("the opensips package is not installed (pip install '.[test]')", allow_module_level=True)

HOLD = 1.5  # s the test keeps the table locked


class SqliteTable:
    """The test's own connection to the node's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def rows(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT username FROM location ORDER BY username")]

    def lock(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")  # the write lock: the node's transaction waits (busy timeout)

    def unlock(self) -> None:
        self.conn.execute("COMMIT")

    def drop(self) -> None:
        self.conn.execute("DROP TABLE location")


class MariadbTable:
    """The test's own connection to the node's MariaDB table."""

    def __init__(self, conn: Any, name: str) -> None:
        self.conn, self.name = conn, name

    def run(self, sql: str) -> list[Any]:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def rows(self) -> list[str]:
        return [r[0] for r in self.run(f"SELECT username FROM `{self.name}` ORDER BY username")]

    def lock(self) -> None:
        self.run(f"LOCK TABLES `{self.name}` WRITE")

    def unlock(self) -> None:
        self.run("UNLOCK TABLES")

    def drop(self) -> None:
        self.run(f"DROP TABLE `{self.name}`")


@pytest.fixture(params=["sqlite", "mariadb"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, Any]]:
    if request.param == "sqlite":
        path = tmp_path / "location.db"
        lite = SqliteTable(path)
        yield f"sqlite://{path}", "location", lite
        lite.conn.close()
        return
    maria = MariadbTable(mariadb.connect_or_skip(), mariadb.unique_name("location"))
    try:
        yield mariadb.DB_URL, maria.name, maria
    finally:
        maria.unlock()
        maria.run(f"DROP TABLE IF EXISTS `{maria.name}`")
        maria.conn.close()


def test_write_through_answers_after_the_commit_and_500_when_it_fails(table: tuple[str, str, Any],
                                                                      tmp_path: Path) -> None:
    url, name, db = table
    port, mi_port = free_port(), free_port()
    config = {"usrloc": {"working_mode_preset": "single-instance-sql-write-through", "db_url": url, "table": name},
              "mi": {"listen": f"{LOOPBACK}:{mi_port}"}}
    mi = OpenSIPSMI(conn="http", url=f"http://{LOOPBACK}:{mi_port}/mi")
    target = (LOOPBACK, port)
    with edgeproxy_node(tmp_path / "node", config=config, transports=("udp",), port=port, log_level="info"):
        assert register_many(target, [Registration("alice", f"sip:alice@{LOOPBACK}:9")]).ok == 1
        assert db.rows() == ["alice"]  # committed by the time the 200 came

        # the table is locked by another writer: the REGISTER is answered once the lock is gone
        db.lock()
        released: list[float] = []

        def release() -> None:
            time.sleep(HOLD)
            released.append(time.monotonic())
            db.unlock()

        holder = threading.Thread(target=release)
        holder.start()
        try:
            outcome = register_many(target, [Registration("bob", f"sip:bob@{LOOPBACK}:9")], timeout=30)
            answered = time.monotonic()
        finally:
            holder.join()
        assert outcome.ok == 1
        assert released and answered >= released[0]  # not before the row could be committed
        assert db.rows() == ["alice", "bob"]

        # the table disappears: the commit fails, 500, and carol is not registered
        db.drop()
        failed = register_many(target, [Registration("carol", f"sip:carol@{LOOPBACK}:9")], timeout=30)
        assert failed.statuses[500] == 1, failed.statuses
        # the next transaction reconnects, creates the table again and writes dave (and carol's AoR,
        # kept from the failed one: empty, so no row)
        assert register_many(target, [Registration("dave", f"sip:dave@{LOOPBACK}:9")], timeout=30).ok == 1
        assert db.rows() == ["dave"]
        dump = mi.execute("ul_dump", ["brief"])
        assert {a["AOR"] for a in dump["Domains"][0]["AORs"]} == {"alice", "bob", "dave"}  # carol withdrawn
