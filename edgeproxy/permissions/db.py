"""Reading OpenSIPS's ``address`` table (``permissions`` module, table version 5) from MySQL/MariaDB.

:func:`fetch_address_rows` is the blocking read (one short-lived PyMySQL connection, run in a worker
thread by :class:`~.service.Permissions`), in ``id`` order so that "the row loaded last" means what
it means in OpenSIPS. Columns: ``id, grp, ip, mask, port, proto, pattern, context_info``. The URL,
name and error-message helpers are :mod:`edgeproxy.sqldb`'s.
"""

from __future__ import annotations

from typing import Any

from .. import sqldb

__all__ = ["COLUMNS", "AddressTableError", "fetch_address_rows"]

COLUMNS = ("id", "grp", "ip", "mask", "port", "proto", "pattern", "context_info")


class AddressTableError(Exception):
    """The table could not be read at all (no server, no table, a missing column): one line."""


def fetch_address_rows(db_url: str, table: str = "address", *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Blocking: every row of the ``address`` table as a dict (run it in a thread)."""
    try:
        db = sqldb.parse_db_url(db_url)
        query = (f"SELECT {', '.join(sqldb.quote_ident(c) for c in COLUMNS)} FROM {sqldb.quote_table(table)} "
                 f"ORDER BY {sqldb.quote_ident('id')}")
    except sqldb.DatabaseURLError as exc:
        raise AddressTableError(str(exc)) from None
    try:
        import pymysql
        import pymysql.cursors
    except ImportError:  # pragma: no cover - depends on the installation
        raise AddressTableError("db_url needs the PyMySQL package (pip install PyMySQL)") from None
    try:
        conn = pymysql.connect(**sqldb.connect_kwargs(db, timeout), cursorclass=pymysql.cursors.DictCursor,
                               read_timeout=max(1, int(timeout)))
    except pymysql.MySQLError as exc:
        raise AddressTableError(f"db {db.where}: cannot connect: {sqldb.mysql_message(exc)}") from None
    try:
        with conn.cursor() as cursor:
            cursor.execute(query)
            return list(cursor.fetchall())
    except pymysql.MySQLError as exc:
        raise AddressTableError(f"db table {table!r}: {sqldb.mysql_message(exc)}") from None
    finally:
        conn.close()
