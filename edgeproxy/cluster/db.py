"""Loading the node table from MySQL/MariaDB, as OpenSIPS ``clusterer`` does with ``db_url``.

``load_node_table("mysql://user:pass@host:port/db")`` reads the ``clusterer`` table (the seed's
shape: id, cluster_id, node_id, url, state, no_ping_retries, priority, sip_addr, flags,
description) once, in a thread, and fires with the checked :class:`~.nodes.NodeInfo` rows.

Driver: PyMySQL, a pure-Python DB-API driver (no C client library to build), run through
``deferToThreadPool`` on the reactor's thread pool. The table is read once at start-up, so a
connection pool (``twisted.enterprise.adbapi``) would only add a second thread pool and shutdown
triggers to look after; one short-lived connection in a worker thread is all this needs.
PyMySQL is imported only when a database is actually used. The URL, name and error-message
helpers are :mod:`edgeproxy.sqldb`'s (shared with the subscriber table); their errors become
:class:`~.nodes.NodeTableError` here, with the same text.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from .. import sqldb
from ..sqldb import SOCKET_PATHS, DatabaseURL  # noqa: F401  (SOCKET_PATHS: still importable from here)
from .nodes import COLUMNS, NodeInfo, NodeTableError

__all__ = ["DatabaseURL", "parse_db_url", "load_node_table", "fetch_node_rows"]


def parse_db_url(url: str) -> DatabaseURL:
    """Parse an OpenSIPS-style ``db_url``: ``mysql://[user[:password]@]host[:port]/database``.

    :func:`edgeproxy.sqldb.parse_db_url`, raising :class:`~.nodes.NodeTableError` (same message)
    as the rest of the node table's loading does.
    """
    try:
        return sqldb.parse_db_url(url)
    except sqldb.DatabaseURLError as exc:
        raise NodeTableError(str(exc)) from None


def _quote_table(table: str) -> str:
    try:
        return sqldb.quote_table(table)
    except sqldb.DatabaseURLError as exc:
        raise NodeTableError(str(exc)) from None


def fetch_node_rows(db: DatabaseURL, table: str = "clusterer", *,
                    connect_timeout: float = 5.0) -> list[dict[str, Any]]:
    """Blocking: read the node table's rows as dicts (run it in a thread). Rows come ordered by
    ``cluster_id, node_id`` so the table order is stable."""
    query = f"SELECT {', '.join(COLUMNS)} FROM {_quote_table(table)} ORDER BY cluster_id, node_id"
    return sqldb.fetch_rows(db, query, table, NodeTableError, timeout=connect_timeout)


def load_node_table(db_url: str, table: str = "clusterer", *, reactor: Any = None,
                    connect_timeout: float = 5.0) -> Deferred:
    """Read the node table from ``db_url`` in a worker thread; fires with ``list[NodeInfo]``.

    Errors (bad URL, unreachable server, missing table, a bad row) fail the Deferred with a
    one-line :class:`~.nodes.NodeTableError`; a bad row is named by its cluster and node ids.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor
        reactor = default_reactor
    db = parse_db_url(db_url)
    _quote_table(table)  # refuse a bad name before going to a thread

    def convert(rows: list[dict[str, Any]]) -> list[NodeInfo]:
        out = []
        for row in rows:
            try:
                out.append(NodeInfo.from_mapping(row))
            except NodeTableError as exc:
                raise NodeTableError(f"db table {table!r}, row cluster {row.get('cluster_id')} node "
                                     f"{row.get('node_id')}: {exc}") from None
        return out

    d = deferToThreadPool(reactor, reactor.getThreadPool(), fetch_node_rows, db, table,
                          connect_timeout=connect_timeout)
    d.addCallback(convert)
    return d
