"""MySQL/MariaDB database URLs, shared by everything that reads an OpenSIPS table.

OpenSIPS modules name their database with a ``db_url`` (``mysql://user:password@host:port/db``);
:mod:`edgeproxy.cluster.db` reads the ``clusterer`` table from one and :mod:`edgeproxy.auth.subscribers`
the ``subscriber`` table, :mod:`edgeproxy.permissions.db` the ``address`` table. They parse it, check
table and column names, build PyMySQL's connection arguments and word driver errors here, the same way;
their ``settings.py`` check the ``db_url`` and ``table`` keys with :func:`db_url_setting` and
:func:`table_setting`, and a whole table is read with :func:`fetch_rows`.

Nothing here imports Twisted; PyMySQL is imported by :func:`fetch_rows` when it runs (or by whoever
connects otherwise).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .config_error import ConfigError
from .config_schema import Context, show, text

__all__ = [
    "DatabaseURL",
    "DatabaseURLError",
    "SOCKET_PATHS",
    "IDENT",
    "connect_kwargs",
    "db_url_setting",
    "fetch_rows",
    "table_setting",
    "mysql_message",
    "parse_db_url",
    "quote_ident",
    "quote_table",
]

#: A plain (unquoted) MySQL identifier: a table, database or column name.
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,63}$")

#: Where MySQL/MariaDB servers put their Unix socket (Debian/Ubuntu, then the upstream default).
SOCKET_PATHS = ("/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock", "/tmp/mysql.sock")


class DatabaseURLError(ValueError):
    """A ``db_url`` or a table/column name that cannot be used; the message is one line."""


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

    @property
    def where(self) -> str:
        """``user@host:port/database``, for messages (no password)."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def parse_db_url(url: str) -> DatabaseURL:
    """Parse an OpenSIPS-style ``db_url``: ``mysql://[user[:password]@]host[:port]/database``.

    User and password may be percent-encoded; the port defaults to 3306. As with libmysqlclient,
    host ``localhost`` means the server's Unix socket when one is found (see :data:`SOCKET_PATHS`).
    Other schemes (OpenSIPS also knows postgres, sqlite...) are refused with a clear message.
    Raises :class:`DatabaseURLError`.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except (ValueError, AttributeError) as exc:
        raise DatabaseURLError(f"db_url: {exc}") from None
    if parts.scheme.lower() not in ("mysql", "mariadb"):
        raise DatabaseURLError(f"db_url: scheme {parts.scheme!r} is not supported (use mysql://)")
    if not parts.hostname:
        raise DatabaseURLError("db_url: no host")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise DatabaseURLError("db_url: expected one database name after the host, as in mysql://host/opensips")
    if parts.query or parts.fragment:
        raise DatabaseURLError("db_url: query parameters are not supported")
    return DatabaseURL(host=parts.hostname, port=port or 3306, user=unquote(parts.username or ""),
                       password=unquote(parts.password or ""), database=database)


def quote_table(name: str) -> str:
    """``table`` or ``database.table``, checked and back-quoted; anything else raises
    :class:`DatabaseURLError` (a bad name is refused, never interpolated into SQL)."""
    pieces = name.split(".") if isinstance(name, str) else [name]
    if len(pieces) > 2 or not all(isinstance(p, str) and IDENT.match(p) for p in pieces):
        raise DatabaseURLError(f"db table {name!r}: not a plain table name")
    return ".".join(f"`{p}`" for p in pieces)


def quote_ident(name: str, what: str = "column") -> str:
    """One plain identifier (a column name), checked and back-quoted; else :class:`DatabaseURLError`."""
    if not isinstance(name, str) or not IDENT.match(name):
        raise DatabaseURLError(f"db {what} {name!r}: not a plain {what} name")
    return f"`{name}`"


def connect_kwargs(db: DatabaseURL, connect_timeout: float) -> dict[str, Any]:
    """Keyword arguments for ``pymysql.connect`` (or ``adbapi.ConnectionPool("pymysql", ...)``).

    Like libmysqlclient (and so OpenSIPS), host ``localhost`` means the local Unix socket when one
    of :data:`SOCKET_PATHS` exists (TCP to localhost otherwise).
    """
    unix_socket = None
    if db.host == "localhost":
        unix_socket = next((p for p in SOCKET_PATHS if os.path.exists(p)), None)
    return {"host": db.host, "port": db.port, "user": db.user, "password": db.password,
            "database": db.database, "unix_socket": unix_socket, "charset": "utf8mb4",
            "connect_timeout": connect_timeout}


def mysql_message(exc: BaseException) -> str:
    """A driver error in one line: ``(code) message`` for MySQL errors, else the exception's text."""
    args = exc.args
    if len(args) >= 2:
        text = f"({args[0]}) {args[1]}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


# -- settings checkers (``[section] db_url = ...``, ``table = ...``) ------------------------------------------------

def db_url_setting(key: str, value: Any, ctx: Context) -> str:
    """A ``db_url`` key of the configuration: ``""`` (none) or a URL :func:`parse_db_url` takes."""
    url = text(key, value, ctx).strip()
    if url:
        try:
            parse_db_url(url)
        except DatabaseURLError as exc:
            raise ConfigError(key, str(exc).removeprefix("db_url: ")) from None
    return url


def table_setting(key: str, value: Any, ctx: Context) -> str:
    """A table name key of the configuration: ``table`` or ``database.table`` (:func:`quote_table`)."""
    name = text(key, value, ctx)
    try:
        quote_table(name)
    except DatabaseURLError:
        raise ConfigError(key, f"must be a plain SQL table name, got {show(value)}") from None
    return name


def optional_table_setting(key: str, value: Any, ctx: Context) -> str:
    """A table name key where ``""`` means none (``[acc] missed_table``), else as :func:`table_setting`."""
    name = text(key, value, ctx).strip()
    return table_setting(key, name, ctx) if name else ""


# -- reading a table --------------------------------------------------------------------------------------------------

def fetch_rows(db: DatabaseURL, query: str, table: str, error: type[Exception], *,
               timeout: float = 5.0, read_timeout: float = 30.0) -> list[dict[str, Any]]:
    """Blocking (run it in a thread): every row ``query`` selects, as dicts, over one short-lived
    PyMySQL connection. Failures raise ``error`` with one line: ``db user@host:port/db: cannot
    connect: (2003) ...`` or ``db table 'name': (1146) ...``."""
    try:
        import pymysql
        import pymysql.cursors
    except ImportError:  # pragma: no cover - depends on the installation
        raise error("db_url needs the PyMySQL package (pip install PyMySQL)") from None
    try:
        conn = pymysql.connect(**connect_kwargs(db, timeout), cursorclass=pymysql.cursors.DictCursor,
                               read_timeout=max(1, int(read_timeout)))
    except pymysql.MySQLError as exc:
        raise error(f"db {db.where}: cannot connect: {mysql_message(exc)}") from None
    try:
        with conn.cursor() as cursor:
            cursor.execute(query)
            return list(cursor.fetchall())
    except pymysql.MySQLError as exc:
        raise error(f"db table {table!r}: {mysql_message(exc)}") from None
    finally:
        conn.close()
