"""Where call records go: a JSON-lines file (:class:`JsonLinesFile`) and OpenSIPS's ``acc`` /
``missed_calls`` tables in MySQL/MariaDB (:class:`AccTable`).

The file is opened for appending, line-buffered: a record is on disk as one whole line when it is
written (a log shipper tailing the file never reads half a record), and a crash loses none written.
The tables are written through a small ``adbapi`` pool (PyMySQL, as the subscriber table is read), one
``INSERT`` per record off the reactor thread; a failed or late insert is counted and logged (at most
one line per failure streak), never raised to the call it is about.
"""

from __future__ import annotations

from typing import Any, TextIO

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import sqldb
from .records import ACC_COLUMNS, MISSED_COLUMNS, CallRecord

__all__ = ["JsonLinesFile", "AccTable"]

log = Logger(namespace="edgeproxy.acc")


class JsonLinesFile:
    """Appends one JSON line per record to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: TextIO | None = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()

    def write(self, record: CallRecord) -> None:
        if self._file is not None:
            self._file.write(record.json() + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class AccTable:
    """Rows of OpenSIPS's ``table`` (``acc``) and ``missed_table`` (``missed_calls``; "": none)."""

    def __init__(self, db_url: str, table: str = "acc", missed_table: str = "missed_calls", *, reactor: Any = None,
                 timeout: float = 5.0, pool_max: int = 2) -> None:
        db = sqldb.parse_db_url(db_url)
        self.where = db.where
        self._acc_sql = _insert(table, ACC_COLUMNS)
        self._missed_sql = _insert(missed_table, MISSED_COLUMNS) if missed_table else None
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.stats = {"rows": 0, "failed": 0}
        self._failing = False
        self._pending: set[Deferred[Any]] = set()
        self._pool = adbapi.ConnectionPool(
            "pymysql", **sqldb.connect_kwargs(db, timeout), read_timeout=timeout, write_timeout=timeout,
            autocommit=True, cp_min=1, cp_max=pool_max, cp_reconnect=True, cp_noisy=False, cp_reactor=reactor)

    def write(self, record: CallRecord) -> None:
        if record.missed:
            if self._missed_sql is None:
                return
            sql, row = self._missed_sql, record.missed_row()
        elif record.in_acc_table:
            sql, row = self._acc_sql, record.acc_row()
        else:
            return  # answered, with a dialog: its acc row is written when it ends
        d = self._pool.runOperation(sql, row)
        self._pending.add(d)
        d.addCallbacks(self._written, self._failed, errbackArgs=(record,))
        d.addBoth(self._settled, d)

    def _written(self, _: Any) -> None:
        self.stats["rows"] += 1
        if self._failing:
            self._failing = False
            log.info("acc: writing to {where} works again", where=self.where)

    def _failed(self, failure: Failure, record: CallRecord) -> None:
        self.stats["failed"] += 1
        if not self._failing:  # one line per streak of failures, not one per call
            self._failing = True
            log.error("acc: cannot write the record of {call_id} to {where}: {why} (further failures are counted: "
                      "acc:db_failed)", call_id=record.call_id, where=self.where, why=failure.getErrorMessage())

    def _settled(self, _: Any, d: Deferred[Any]) -> None:
        self._pending.discard(d)

    def close(self) -> Deferred[Any]:
        """Wait for the rows in flight, then close the pool."""
        from twisted.internet.defer import DeferredList

        waiting = DeferredList(list(self._pending), consumeErrors=True) if self._pending else succeed(None)
        return waiting.addBoth(lambda _: self._pool.close())


def _insert(table: str, columns: tuple[str, ...]) -> str:
    cols = ", ".join(sqldb.quote_ident(c) for c in columns)
    return f"INSERT INTO {sqldb.quote_table(table)} ({cols}) VALUES ({', '.join(['%s'] * len(columns))})"
