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
    return sqldb.fetch_rows(db, query, table, AddressTableError, timeout=timeout, read_timeout=timeout)
