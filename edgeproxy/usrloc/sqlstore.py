"""OpenSIPS's ``location`` table in SQLite (an embedded file, no server) or MySQL/MariaDB, behind one
blocking interface that :mod:`edgeproxy.usrloc.persistence` calls from a worker thread.

Both are Python DB-API drivers (``sqlite3`` from the standard library, PyMySQL) reading and writing
the same columns (:data:`~edgeproxy.usrloc.rows.COLUMNS`). A missing table is created with OpenSIPS's
schema (``scripts/{mysql,sqlite}/usrloc-create.sql``, version 1013), plus, in the SQLite file
edgeproxy owns, an index on ``username`` so that rewriting an AoR does not scan the table. A write
is one transaction: the rows of every changed AoR are deleted and its current contacts inserted,
so a crash leaves the table as it was before or after a flush, never half-written.

Nothing here imports Twisted; one connection, used by one thread at a time.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Iterable, Sequence

from .. import sqldb
from .rows import COLUMNS, LOAD_COLUMNS

__all__ = ["LocationTable", "SqliteLocationTable", "MysqlLocationTable", "TableError", "open_table"]

_MYSQL_SCHEMA = """CREATE TABLE IF NOT EXISTS {table} (
    contact_id BIGINT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    username CHAR(64) DEFAULT '' NOT NULL,
    domain CHAR(64) DEFAULT NULL,
    contact CHAR(255) DEFAULT '' NOT NULL,
    received CHAR(255) DEFAULT NULL,
    path CHAR(255) DEFAULT NULL,
    expires INT(10) UNSIGNED NOT NULL,
    q FLOAT(10,2) DEFAULT 1.0 NOT NULL,
    callid CHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    cseq INT(11) DEFAULT 13 NOT NULL,
    last_modified DATETIME DEFAULT '1900-01-01 00:00:01' NOT NULL,
    flags INT(11) DEFAULT 0 NOT NULL,
    cflags CHAR(255) DEFAULT NULL,
    user_agent CHAR(255) DEFAULT '' NOT NULL,
    socket CHAR(64) DEFAULT NULL,
    methods INT(11) DEFAULT NULL,
    sip_instance CHAR(255) DEFAULT NULL,
    kv_store TEXT(512) DEFAULT NULL,
    attr CHAR(255) DEFAULT NULL
) ENGINE=InnoDB"""

_SQLITE_SCHEMA = """CREATE TABLE IF NOT EXISTS {table} (
    contact_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    username CHAR(64) DEFAULT '' NOT NULL,
    domain CHAR(64) DEFAULT NULL,
    contact CHAR(255) DEFAULT '' NOT NULL,
    received CHAR(255) DEFAULT NULL,
    path CHAR(255) DEFAULT NULL,
    expires INTEGER NOT NULL,
    q FLOAT(10,2) DEFAULT 1.0 NOT NULL,
    callid CHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    cseq INTEGER DEFAULT 13 NOT NULL,
    last_modified DATETIME DEFAULT '1900-01-01 00:00:01' NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    cflags CHAR(255) DEFAULT NULL,
    user_agent CHAR(255) DEFAULT '' NOT NULL,
    socket CHAR(64) DEFAULT NULL,
    methods INTEGER DEFAULT NULL,
    sip_instance CHAR(255) DEFAULT NULL,
    kv_store TEXT(512) DEFAULT NULL,
    attr CHAR(255) DEFAULT NULL
)"""

_BATCH = 500  # AoRs per DELETE ... IN (...)
_MAX_STATEMENT = 512 * 1024  # bytes of VALUES per MySQL INSERT (max_allowed_packet is 16 MB by default)

#: An AoR's key columns: (username, domain or None).
Key = tuple[str, "str | None"]


class TableError(Exception):
    """The table cannot be reached or written; the message is one line naming the database."""


class LocationTable:
    """The location table over one DB-API connection (see the subclasses for the two drivers)."""

    placeholder = "?"
    null_safe_eq = "IS"  # SQLite's "=" that is true for NULL = NULL

    def __init__(self, table: str, where: str) -> None:
        self.table = sqldb.quote_table(table)
        self.where = where
        self._conn: Any = None

    # -- the driver's part ---------------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _create(self, cursor: Any) -> None:
        raise NotImplementedError

    def _errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def _message(self, exc: BaseException) -> str:
        return " ".join(str(exc).split()) or type(exc).__name__

    # -- operations (blocking) -----------------------------------------------------------------------
    def _run(self, work: Any) -> Any:
        """Run ``work(cursor)`` in one transaction; a driver error drops the connection (the next call
        reconnects) and becomes :class:`TableError`."""
        try:
            if self._conn is None:
                self._conn = self._connect()
                cursor = self._conn.cursor()
                self._create(cursor)
                self._conn.commit()
            cursor = self._conn.cursor()
            try:
                result = work(cursor)
                self._conn.commit()
            finally:
                cursor.close()
            return result
        except self._errors() as exc:
            self.close()
            raise TableError(f"{self.where}: {self._message(exc)}") from None

    #: How ``last_modified`` is selected (MySQL: as epoch seconds, which the driver does not convert).
    last_modified = "last_modified"

    def load(self, now: float) -> tuple[int, list[tuple[Any, ...]]]:
        """Delete the rows that expired (``expires`` not 0 and past); ``(how many, the other rows)``,
        each with the values of :data:`~edgeproxy.usrloc.rows.LOAD_COLUMNS` in that order -- one
        SELECT of only those columns, as tuples: a restarted node reads the whole table before it
        answers anything."""
        columns = ", ".join(self.last_modified if c == "last_modified" else c for c in LOAD_COLUMNS)
        p = self.placeholder

        def work(cursor: Any) -> tuple[int, list[tuple[Any, ...]]]:
            cursor.execute(f"DELETE FROM {self.table} WHERE expires <> 0 AND expires <= {p}", (int(now),))
            expired = max(0, cursor.rowcount)
            cursor.execute(f"SELECT {columns} FROM {self.table}")
            return expired, cursor.fetchall()

        return self._run(work)

    def write(self, keys: Sequence[Key], rows: Sequence[Any], use_domain: bool) -> None:
        """Replace the rows of the AoRs ``keys`` by ``rows`` (their current contacts, made by :meth:`encode`),
        atomically."""
        def work(cursor: Any) -> None:
            self._delete(cursor, keys, use_domain)
            self._insert(cursor, rows)

        self._run(work)

    def rewrite(self, rows: Sequence[Any]) -> None:
        """Empty the table and write ``rows`` (made by :meth:`encode`; OpenSIPS MI ``ul_sync``: "wipe SQL and
        rewrite from memory")."""
        def work(cursor: Any) -> None:
            cursor.execute(f"DELETE FROM {self.table}")
            self._insert(cursor, rows)

        self._run(work)

    def count(self) -> int:
        def work(cursor: Any) -> int:
            cursor.execute(f"SELECT COUNT(*) FROM {self.table}")
            return int(cursor.fetchone()[0])

        return self._run(work)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a connection already broken: nothing to close
                pass

    # -- statements ----------------------------------------------------------------------------------
    def _delete(self, cursor: Any, keys: Sequence[Key], use_domain: bool) -> None:
        p = self.placeholder
        keys = list(keys)
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start:start + _BATCH]
            if use_domain:
                cond = " OR ".join([f"(username = {p} AND domain {self.null_safe_eq} {p})"] * len(chunk))
                args: list[Any] = [v for key in chunk for v in key]
            else:
                cond = f"username IN ({', '.join([p] * len(chunk))})"
                args = [key[0] for key in chunk]
            cursor.execute(f"DELETE FROM {self.table} WHERE {cond}", args)

    def encode(self, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``rows`` as :meth:`write` takes them (the persistence calls it in the reactor, so that the
        worker thread has no Python work left to take the GIL for): here the tuples themselves,
        which the SQLite driver binds in C."""
        return list(rows)

    def _insert(self, cursor: Any, rows: Iterable[Any]) -> None:
        rows = list(rows)
        if not rows:
            return
        p = self.placeholder
        sql = f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES ({', '.join([p] * len(COLUMNS))})"
        cursor.executemany(sql, rows)


class SqliteLocationTable(LocationTable):
    """The table in a SQLite file (WAL journal: a committed flush survives the process being killed)."""

    def __init__(self, path: str, table: str) -> None:
        super().__init__(table, f"sqlite:{path}")
        self.path = path

    def _connect(self) -> Any:
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            raise sqlite3.OperationalError(f"no such directory: {directory}")
        conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _create(self, cursor: Any) -> None:
        cursor.execute(_SQLITE_SCHEMA.format(table=self.table))
        index = sqldb.quote_ident(self.table.replace("`", "").replace(".", "_") + "_username", "index")
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {self.table} (username)")

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)


class MysqlLocationTable(LocationTable):
    """The table in MySQL/MariaDB (``db_url``): OpenSIPS's own, when it is pointed at it."""

    placeholder = "%s"
    null_safe_eq = "<=>"
    last_modified = "UNIX_TIMESTAMP(last_modified)"  # session time zone, as OpenSIPS writes it; no datetime per row

    def __init__(self, url: str, table: str, timeout: float = 5.0) -> None:
        self.db = sqldb.parse_db_url(url)
        super().__init__(table, f"{self.db.where} table {table}")
        self.timeout = timeout

    def _connect(self) -> Any:
        import pymysql

        return pymysql.connect(**sqldb.connect_kwargs(self.db, self.timeout), read_timeout=60, write_timeout=60,
                               autocommit=False)

    def _create(self, cursor: Any) -> None:
        cursor.execute(_MYSQL_SCHEMA.format(table=self.table))

    def encode(self, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Each row as the text of its ``VALUES`` tuple, made here -- in the reactor, a slice at a time
        -- rather than by PyMySQL's ``executemany`` in the worker thread: its generic escaping (type
        dispatch for each of 18 values) cost ~10 µs of GIL time per contact, and Python work in the
        worker thread takes the GIL from the reactor for whole switch intervals (issue 12). Each
        column's type is known (:func:`~edgeproxy.usrloc.rows.binding_row`): numbers are formatted as
        numbers (anything else fails, it is never pasted) and strings by :func:`_literal`, whose
        output means the same with and without ``NO_BACKSLASH_ESCAPES``."""
        out = []
        for (user, domain, contact, received, path, expires, q, callid, cseq, modified, flags, cflags, agent, sock,
             methods, instance, kv_store, attr) in rows:
            out.append(f"({_literal(user)},{_literal(domain)},{_literal(contact)},{_literal(received)},"
                       f"{_literal(path)},{expires:d},{float(q)!r},{_literal(callid)},{cseq:d},{_literal(modified)},"
                       f"{flags:d},{_literal(cflags)},{_literal(agent)},{_literal(sock)},"
                       f"{'NULL' if methods is None else format(methods, 'd')},{_literal(instance)},"
                       f"{_literal(kv_store)},{_literal(attr)})")
        return out

    def _errors(self) -> tuple[type[BaseException], ...]:
        import pymysql

        return (pymysql.MySQLError, OSError)

    def _message(self, exc: BaseException) -> str:
        return sqldb.mysql_message(exc)

    def _insert(self, cursor: Any, rows: Iterable[Any]) -> None:
        """Multi-row INSERTs of :meth:`encode`'s values, each under ``_MAX_STATEMENT`` bytes."""
        head = f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES "
        values: list[str] = []
        size = 0
        for value in rows:
            values.append(value)
            size += len(value)
            if size > _MAX_STATEMENT:
                cursor.execute(head + ",".join(values))
                values, size = [], 0
        if values:
            cursor.execute(head + ",".join(values))


def _literal(text: str | None) -> str:
    """A MySQL string literal that reads the same whether or not the server escapes with backslashes:
    quotes doubled (standard SQL, valid in both modes); a string holding a backslash or a NUL -- the
    characters the two modes read differently -- as a hex literal of its UTF-8 (``_utf8mb4 X'...'``)."""
    if text is None:
        return "NULL"
    if "\\" in text or "\x00" in text:
        return "_utf8mb4 X'" + text.encode("utf-8").hex() + "'"
    return "'" + text.replace("'", "''") + "'"


def open_table(db_url: str, table: str) -> LocationTable:
    """The table a ``[usrloc] db_url`` names (``sqlite://<path>`` or ``mysql://...``); nothing is
    connected until the first operation."""
    if db_url.lower().startswith("sqlite://"):
        return SqliteLocationTable(db_url[len("sqlite://"):], table)
    return MysqlLocationTable(db_url, table)
