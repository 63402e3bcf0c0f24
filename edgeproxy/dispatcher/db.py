"""Reading OpenSIPS's ``dispatcher`` table from MySQL/MariaDB (``db_url``), as ``ds_load_data`` does.

The whole table, every column of OpenSIPS 3.x's schema (``scripts/mysql/dispatcher-create.sql``,
table version 9: ``id, setid, destination, socket, state, probe_mode, weight, priority, attrs,
description``), no ORDER BY beyond the primary key (OpenSIPS's order is the table's; ``id`` makes it
stable). Blocking, run in a worker thread with one short-lived PyMySQL connection, like the cluster's
node table (:mod:`edgeproxy.cluster.db`): the table is read at start-up and on ``ds_reload`` only.
URL and name handling are :mod:`edgeproxy.sqldb`'s.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from .. import sqldb
from .table import COLUMNS

__all__ = ["DispatcherTableError", "fetch_rows", "load_rows"]


class DispatcherTableError(Exception):
    """The table could not be read (bad URL, server down, no such table); one line."""


def fetch_rows(url: str, table: str = "dispatcher", *, connect_timeout: float = 5.0) -> list[dict[str, Any]]:
    """Blocking: the table's rows as dicts, by ``id``."""
    try:
        db = sqldb.parse_db_url(url)
        name = sqldb.quote_table(table)
    except sqldb.DatabaseURLError as exc:
        raise DispatcherTableError(str(exc)) from None
    query = f"SELECT id, {', '.join(COLUMNS)} FROM {name} ORDER BY id"
    return sqldb.fetch_rows(db, query, table, DispatcherTableError, timeout=connect_timeout)


def load_rows(reactor: Any, url: str, table: str = "dispatcher") -> "Deferred[list[dict[str, Any]]]":
    """:func:`fetch_rows` in the reactor's thread pool."""
    return deferToThreadPool(reactor, reactor.getThreadPool(), fetch_rows, url, table)
