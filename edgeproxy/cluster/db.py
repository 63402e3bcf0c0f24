"""Loading the node table from MySQL/MariaDB, as OpenSIPS ``clusterer`` does with ``db_url``.

``load_node_table("mysql://user:pass@host:port/db")`` reads the ``clusterer`` table (the seed's
shape: id, cluster_id, node_id, url, state, no_ping_retries, priority, sip_addr, flags,
description) once, in a thread, and fires with the checked :class:`~.nodes.NodeInfo` rows.

Driver: PyMySQL, a pure-Python DB-API driver (no C client library to build), run through
``deferToThreadPool`` on the reactor's thread pool. The table is read once at start-up, so a
connection pool (``twisted.enterprise.adbapi``) would only add a second thread pool and shutdown
triggers to look after; one short-lived connection in a worker thread is all this needs.
PyMySQL is imported only when a database is actually used.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from .nodes import COLUMNS, NodeInfo, NodeTableError

__all__ = ["DatabaseURL", "parse_db_url", "load_node_table", "fetch_node_rows"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,63}$")

#: Where MySQL/MariaDB servers put their Unix socket (Debian/Ubuntu, then the upstream default).
SOCKET_PATHS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/tmp/mysql.sock")


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ``mysql://user:password@host:port/database`` (OpenSIPS ``db_url`` form)."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def __repr__(self) -> str:  # never print the password
        return (f"DatabaseURL(host={self.host!r}, port={self.port}, user={self.user!r}, "
                f"password='***', database={self.database!r})")


def parse_db_url(url: str) -> DatabaseURL:
    """Parse an OpenSIPS-style ``db_url``: ``mysql://[user[:password]@]host[:port]/database``.

    User and password may be percent-encoded; the port defaults to 3306. As with libmysqlclient,
    host ``localhost`` means the server's Unix socket when one is found (see :data:`SOCKET_PATHS`).
    Other schemes (OpenSIPS also knows postgres, sqlite...) are refused with a clear message.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except (ValueError, AttributeError) as exc:
        raise NodeTableError(f"db_url: {exc}") from None
    if parts.scheme.lower() not in ("mysql", "mariadb"):
        raise NodeTableError(f"db_url: scheme {parts.scheme!r} is not supported (use mysql://)")
    if not parts.hostname:
        raise NodeTableError("db_url: no host")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise NodeTableError("db_url: expected one database name after the host, as in mysql://host/opensips")
    if parts.query or parts.fragment:
        raise NodeTableError("db_url: query parameters are not supported")
    return DatabaseURL(host=parts.hostname, port=port or 3306, user=unquote(parts.username or ""),
                       password=unquote(parts.password or ""), database=database)


def _quote_table(table: str) -> str:
    pieces = table.split(".")
    if len(pieces) > 2 or not all(_IDENT.match(p) for p in pieces):
        raise NodeTableError(f"db table {table!r}: not a plain table name")
    return ".".join(f"`{p}`" for p in pieces)


def fetch_node_rows(db: DatabaseURL, table: str = "clusterer", *,
                    connect_timeout: float = 5.0) -> list[dict[str, Any]]:
    """Blocking: read the node table's rows as dicts (run it in a thread). Rows come ordered by
    ``cluster_id, node_id`` so the table order is stable."""
    try:
        import pymysql
        import pymysql.cursors
    except ImportError:  # pragma: no cover - depends on the installation
        raise NodeTableError("db_url needs the PyMySQL package (pip install PyMySQL)") from None
    query = f"SELECT {', '.join(COLUMNS)} FROM {_quote_table(table)} ORDER BY cluster_id, node_id"
    # Like libmysqlclient (and so OpenSIPS), "localhost" means the local Unix socket.
    unix_socket = None
    if db.host == "localhost":
        unix_socket = next((p for p in SOCKET_PATHS if os.path.exists(p)), None)
    try:
        conn = pymysql.connect(host=db.host, port=db.port, user=db.user, password=db.password,
                               database=db.database, unix_socket=unix_socket, charset="utf8mb4",
                               cursorclass=pymysql.cursors.DictCursor,
                               connect_timeout=connect_timeout, read_timeout=30)
    except pymysql.MySQLError as exc:
        raise NodeTableError(f"db {db.user}@{db.host}:{db.port}/{db.database}: cannot connect: "
                             f"{_mysql_message(exc)}") from None
    try:
        with conn.cursor() as cursor:
            cursor.execute(query)
            return list(cursor.fetchall())
    except pymysql.MySQLError as exc:
        raise NodeTableError(f"db table {table!r}: {_mysql_message(exc)}") from None
    finally:
        conn.close()


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


def _mysql_message(exc: Exception) -> str:
    args = getattr(exc, "args", ())
    if len(args) >= 2:
        return f"({args[0]}) {args[1]}"
    return str(exc) or type(exc).__name__
