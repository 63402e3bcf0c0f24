"""Where digest credentials come from: OpenSIPS ``auth_db``'s ``subscriber`` table, or the
configuration file.

A store answers one question, :meth:`SubscriberStore.get`: the row of a username (and, with
``use_domain``, a domain), or ``None`` when there is none. Two stores:

* :class:`MemorySubscribers` -- the embedded default, ``[auth.users]`` of the configuration file.
* :class:`SubscriberTable` -- the ``subscriber`` table of MySQL/MariaDB, read as ``auth_db`` reads
  it (``db_url``, ``user_column``, ``domain_column``, ``password_column``, ``calculate_ha1``,
  ``use_domain``, ``load_credentials``), through a small ``adbapi`` connection pool.

Usernames and domains come from the network: anything longer than :data:`MAX_NAME` characters is
"no such user" without a query, and values are only ever query parameters.

A username of the form ``user@domain`` (some UAs send ``username="alice@example.com"``) is looked
up as OpenSIPS does: by its user part, and -- when domains are matched -- by its domain part instead
of the realm. Its HA1 is then over the whole ``alice@example.com``, which the table keeps in the
``ha1b`` column (OpenSIPS ``password_column_2``): without ``calculate_ha1`` that column's value is
the subscriber's only HA1 (``ha1["MD5"]``; none when the table has no such column or it is empty).
With ``calculate_ha1`` (and in :class:`MemorySubscribers`) the plain password serves, and the
subscriber's stored HA1s, which are over the bare user part, are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Protocol, Sequence

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import sqldb

__all__ = [
    "MAX_NAME",
    "MemorySubscribers",
    "Subscriber",
    "SubscriberStore",
    "SubscriberStoreError",
    "SubscriberTable",
]

log = Logger(namespace="edgeproxy.auth")

#: Usernames and domains longer than this are nobody's (no query is made).
MAX_NAME = 128

DEFAULT_HA1_COLUMNS: Mapping[str, str] = {"MD5": "ha1", "SHA-256": "ha1_sha256", "SHA-512-256": "ha1_sha512t256"}


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One row of the subscriber table: who may authenticate, and with what secret."""

    username: str
    domain: str
    #: plain text (OpenSIPS ``calculate_ha1 = 1``); ``None`` if only HA1s are stored
    password: str | None = None
    #: base algorithm ("MD5", "SHA-256", "SHA-512-256") -> hex HA1 over ``username:domain:password``
    ha1: Mapping[str, str] = field(default_factory=dict)
    #: extra columns loaded (OpenSIPS ``load_credentials``), e.g. ``{"rpid": ...}``
    attrs: Mapping[str, Any] = field(default_factory=dict)


class SubscriberStoreError(Exception):
    """The store could not answer (unreachable, timeout, bad table): the route sees -5 (generic error)."""


class SubscriberStore(Protocol):
    def get(self, username: str, domain: str | None) -> "Deferred[Subscriber | None]":
        """The subscriber ``username`` (in ``domain``). ``domain`` None (or the store's ``use_domain``
        false): match on the username only; of several rows, the first by primary key / insertion
        order."""
        ...

    def close(self) -> "Deferred[None] | None":
        ...


def _lookup_key(username: Any, domain: Any, use_domain: bool) -> tuple[str, str | None, bool] | None:
    """``(user, domain or None, at_form)`` to look up, or None for a name nobody can have.

    ``at_form``: the username was ``user@domain``; the user part is looked up, with the domain part
    as the domain (OpenSIPS ``auth_db``)."""
    if not isinstance(username, str) or not username or len(username) > MAX_NAME:
        return None
    if domain is not None and (not isinstance(domain, str) or len(domain) > MAX_NAME):
        return None
    at_form = False
    user, sep, user_domain = username.partition("@")
    if sep and user and user_domain:
        at_form = True
        if domain is not None:
            domain = user_domain
    else:
        user = username
    return user, (domain if use_domain else None), at_form


# -- the configuration file's users ---------------------------------------------------------------


class MemorySubscribers:
    """The embedded default: subscribers from the configuration file (``[auth.users]``).

    Usernames match exactly; domains without regard to case (they are host names).
    """

    def __init__(self, users: Mapping[str, str] | Iterable[Subscriber] = (), *, use_domain: bool = False) -> None:
        self.use_domain = use_domain
        self._rows: dict[tuple[str, str], Subscriber] = {}
        self._first: dict[str, Subscriber] = {}  # username -> first added (its row, updated in place)
        if isinstance(users, Mapping):
            for key, password in users.items():
                if not isinstance(key, str) or not isinstance(password, str):
                    raise ValueError(f"auth users: {key!r} = {password!r}: expected \"user[@domain]\" = \"password\"")
                user, _, domain = key.rpartition("@") if "@" in key else (key, "", "")
                if not user:
                    raise ValueError(f"auth users: {key!r}: no user name")
                self.add(Subscriber(user, domain, password=password))
        else:
            for subscriber in users:
                self.add(subscriber)

    def add(self, subscriber: Subscriber) -> None:
        """Add ``subscriber``, replacing the one with the same username and domain."""
        if not isinstance(subscriber, Subscriber):
            raise TypeError(f"expected a Subscriber, not {type(subscriber).__name__}")
        key = (subscriber.username, subscriber.domain.lower())
        self._rows[key] = subscriber
        first = self._first.get(subscriber.username)
        if first is None or (first.username, first.domain.lower()) == key:
            self._first[subscriber.username] = subscriber

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, username: str, domain: str | None) -> "Deferred[Subscriber | None]":
        found = _lookup_key(username, domain, self.use_domain)
        if found is None:
            return succeed(None)
        user, domain, at_form = found
        subscriber = self._first.get(user) if domain is None else self._rows.get((user, domain.lower()))
        if subscriber is not None and at_form and subscriber.ha1:
            subscriber = replace(subscriber, ha1={})  # HA1s over "user", not "user@domain"
        return succeed(subscriber)

    def close(self) -> None:
        return None


# -- the subscriber table ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Schema:
    """The queries for the table's columns as found (read once, at the first lookup): user and
    domain are selected first, then the secrets, then the ``load_credentials`` columns."""

    secrets: tuple[tuple[str, str], ...]  # (algorithm or "password", column)
    at_secrets: tuple[tuple[str, str], ...]  # the same for a "user@domain" username
    missing_ha1: tuple[str, ...]          # HA1 columns the table lacks (logged once)
    #: the SELECT for (a "user@domain" username, a domain to match): built once, not per lookup
    select: Mapping[tuple[bool, bool], str] = field(default_factory=dict)


class _Call:
    """One lookup in flight: set ``expired`` once its answer is no longer wanted."""

    __slots__ = ("out", "timer", "started", "expired", "retried")

    def __init__(self) -> None:
        self.out: Deferred | None = None
        self.timer: Any = None
        self.started = False   # the worker reached the query: a failure before it is a connect failure
        self.expired = False   # read by the worker: skip a query whose answer nobody waits for
        self.retried = False


class SubscriberTable:
    """The OpenSIPS ``subscriber`` table in MySQL/MariaDB (``auth_db``'s ``db_url``, ``user_column``,
    ``domain_column``, ``password_column``, ``calculate_ha1``, ``use_domain``, ``load_credentials``).

    ``calculate_ha1`` true reads ``password_column`` (plain text); false reads ``ha1_columns``
    (algorithm -> column), of which those the table lacks (an older schema without
    ``ha1_sha512t256``) are skipped with one log line; ``ha1b_column`` (``password_column_2``)
    serves ``user@domain`` usernames (see the module docstring). The table's columns are read once,
    at the first lookup (``SHOW COLUMNS``); a missing user, domain, password or ``load_credentials``
    column, or no HA1 column at all, fails the lookups with :class:`SubscriberStoreError`.

    Every lookup is one parameterised ``SELECT ... LIMIT 1`` in a pool thread; one that has not
    answered within ``timeout`` seconds fails with :class:`SubscriberStoreError` (its late answer is
    dropped). Bad URLs and column names raise :class:`~edgeproxy.sqldb.DatabaseURLError` (a
    ``ValueError``) here, at start-up.
    """

    def __init__(self, db_url: str, table: str = "subscriber", *, reactor: Any = None,
                 user_column: str = "username", domain_column: str = "domain",
                 password_column: str = "password",
                 ha1_columns: Mapping[str, str] = DEFAULT_HA1_COLUMNS,
                 ha1b_column: str | None = "ha1b",
                 calculate_ha1: bool = False,
                 use_domain: bool = False, load_credentials: Sequence[str] = (),
                 timeout: float = 2.0, pool_min: int = 1, pool_max: int = 4) -> None:
        self._db = sqldb.parse_db_url(db_url)
        self._table = sqldb.quote_table(table)
        self._where = f"subscriber table {table!r} at {self._db.where}"
        if isinstance(load_credentials, str):
            load_credentials = (load_credentials,)
        names = [user_column, domain_column, password_column, *ha1_columns.values(), *load_credentials]
        if ha1b_column is not None:
            names.append(ha1b_column)
        for name in names:
            sqldb.quote_ident(name)
        if not timeout > 0:
            raise ValueError(f"subscriber table: timeout must be positive, not {timeout!r}")
        if not (0 <= pool_min <= pool_max and pool_max >= 1):
            raise ValueError(f"subscriber table: need 0 <= pool_min <= pool_max, pool_max >= 1 "
                             f"(got {pool_min}, {pool_max})")
        self.user_column = user_column
        self.domain_column = domain_column
        self.password_column = password_column
        self.ha1_columns = dict(ha1_columns)
        self.ha1b_column = ha1b_column
        self.calculate_ha1 = calculate_ha1
        self.use_domain = use_domain
        self.load_credentials = tuple(load_credentials)
        self.timeout = float(timeout)
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self._reactor = reactor
        self._schema: _Schema | None = None
        self._logged_schema = False
        self._inflight = 0
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred] = []
        try:
            # The socket timeouts free a worker stuck on a server that stopped answering soon
            # after its caller was answered with an error; the deadline itself is ours (below).
            io_timeout = self.timeout + 1.0
            self._pool = adbapi.ConnectionPool(
                "pymysql", **sqldb.connect_kwargs(self._db, self.timeout),
                read_timeout=io_timeout, write_timeout=io_timeout,
                cp_min=pool_min, cp_max=pool_max, cp_reconnect=True, cp_noisy=False, cp_reactor=reactor)
        except ImportError:  # pragma: no cover - PyMySQL is a dependency
            raise SubscriberStoreError("auth db_url needs the PyMySQL package (pip install PyMySQL)") from None
        self._pool.connectionFactory = _QuietConnection
        # At shutdown, wait (without blocking the reactor) for the queries in flight, then stop the
        # pool; adbapi's own trigger would join busy threads from the reactor thread.
        self._shutdown_id = reactor.addSystemEventTrigger("before", "shutdown", self.close)

    def __repr__(self) -> str:
        return f"<SubscriberTable {self._where}>"

    # -- lookups ------------------------------------------------------------------------------------
    def get(self, username: str, domain: str | None) -> "Deferred[Subscriber | None]":
        if self._closing:
            return fail(SubscriberStoreError(f"{self._where}: closed"))
        found = _lookup_key(username, domain, self.use_domain)
        if found is None:
            return succeed(None)
        call = _Call()
        out: Deferred[Subscriber | None] = Deferred(lambda _: self._cancel(call))
        call.out = out
        call.timer = self._reactor.callLater(self.timeout, self._expire, call)
        self._run(call, *found)
        return out

    def _run(self, call: _Call, user: str, domain: str | None, at_form: bool) -> None:
        self._inflight += 1
        d = self._pool.runInteraction(self._lookup, call, user, domain, at_form)
        d.addBoth(self._answered, call, user, domain, at_form)

    def _lookup(self, trans: Any, call: _Call, user: str, domain: str | None,
                at_form: bool) -> tuple[_Schema, tuple | None] | None:
        """In a pool thread: the row, or None when the caller gave up before the query ran."""
        call.started = True
        if call.expired:
            return None
        schema = self._schema or self._read_schema(trans)
        params = (user,) if domain is None else (user, domain)
        trans.execute(schema.select[at_form, domain is not None], params)
        return schema, trans.fetchone()

    def _read_schema(self, trans: Any) -> _Schema:
        """In a pool thread: which of the configured columns the table has."""
        trans.execute(f"SHOW COLUMNS FROM {self._table}")
        rows = trans.fetchall()
        present = {_text(r[0]).lower(): _text(r[0]) for r in rows}
        primary = [_text(r[0]) for r in rows if _text(r[3]) == "PRI"]

        def need(column: str, why: str) -> str:
            if column.lower() not in present:
                raise SubscriberStoreError(f"{self._where}: no column {column!r} ({why})")
            return column

        need(self.user_column, "user_column")
        need(self.domain_column, "domain_column")
        for column in self.load_credentials:
            need(column, "load_credentials")
        missing = tuple(c for c in self.ha1_columns.values() if c.lower() not in present)
        if self.calculate_ha1:
            secrets: tuple[tuple[str, str], ...] = (("password", need(self.password_column, "calculate_ha1")),)
            at_secrets = secrets
        else:
            secrets = tuple((alg, c) for alg, c in self.ha1_columns.items() if c.lower() in present)
            if not secrets:
                raise SubscriberStoreError(f"{self._where}: none of the HA1 columns "
                                           f"{', '.join(self.ha1_columns.values())} exists")
            ha1b = self.ha1b_column
            at_secrets = (("MD5", ha1b),) if ha1b is not None and ha1b.lower() in present else ()
        order_by = f" ORDER BY {sqldb.quote_ident(primary[0])}" if len(primary) == 1 else ""
        user, domain = sqldb.quote_ident(self.user_column), sqldb.quote_ident(self.domain_column)
        select = {}
        for at_form, chosen in ((False, secrets), (True, at_secrets)):
            columns = ", ".join(sqldb.quote_ident(c)
                                for c in (self.user_column, self.domain_column, *(c for _, c in chosen),
                                          *self.load_credentials))
            for with_domain in (False, True):
                where = f"{user} = %s" + (f" AND {domain} = %s" if with_domain else "")
                select[at_form, with_domain] = f"SELECT {columns} FROM {self._table} WHERE {where}{order_by} LIMIT 1"
        return _Schema(secrets, at_secrets, missing, select)

    def _answered(self, result: tuple[_Schema, tuple | None] | Failure | None, call: _Call, user: str,
                  domain: str | None, at_form: bool) -> None:
        self._inflight -= 1
        try:
            if isinstance(result, Failure) and call.started and not call.expired and not call.retried \
                    and _is_connection_lost(result):
                call.retried = True  # a pooled connection the server had closed: once more, fresh
                call.started = False
                self._run(call, user, domain, at_form)
                return
            if isinstance(result, tuple):
                self._learn(result[0])
            if call.expired or call.out is None or call.out.called:
                return  # answered already (deadline, cancelled): the late result is dropped
            if isinstance(result, Failure):
                value: Any = self._store_error(result, call)
            else:
                try:
                    value = self._subscriber(*result, at_form) if result is not None else None
                except Exception:
                    value = Failure()
            call.timer.cancel()
            out, call.out = call.out, None
            if isinstance(value, (Failure, Exception)):
                out.errback(value)
            else:
                out.callback(value)
        finally:
            if self._closing and self._inflight == 0:
                self._stop_pool()

    def _learn(self, schema: _Schema) -> None:
        """Keep the columns a worker found (reactor thread), and say once which HA1s are missing."""
        if self._schema is None:
            self._schema = schema
        if schema.missing_ha1 and not self.calculate_ha1 and not self._logged_schema:
            self._logged_schema = True
            log.info("auth: {where} has no column {missing}: those HA1s are not available",
                     where=self._where, missing=", ".join(schema.missing_ha1))

    def _subscriber(self, schema: _Schema, row: tuple | None, at_form: bool) -> Subscriber | None:
        if row is None:
            return None
        secrets = schema.at_secrets if at_form else schema.secrets
        password = None
        ha1: dict[str, str] = {}
        for (name, _), value in zip(secrets, row[2:2 + len(secrets)], strict=True):
            if value is None:
                continue
            value = _text(value)
            if name == "password":
                password = value
            elif value:
                ha1[name] = value.lower()
        attrs = dict(zip(self.load_credentials, row[2 + len(secrets):], strict=True))
        return Subscriber(_text(row[0]), _text(row[1] or ""), password=password, ha1=ha1, attrs=attrs)

    def _store_error(self, failure: Failure, call: _Call) -> Failure | SubscriberStoreError:
        """The driver's errors as one-line SubscriberStoreErrors; anything else (a bug) unchanged."""
        exc = failure.value
        if isinstance(exc, SubscriberStoreError):
            return exc
        if failure.check(adbapi.ConnectionLost):
            return SubscriberStoreError(f"{self._where}: connection lost")
        if not isinstance(exc, self._pool.dbapi.Error):
            return failure
        if not call.started:
            return SubscriberStoreError(f"{self._where}: cannot connect: {sqldb.mysql_message(exc)}")
        self._schema = None  # the table may have changed: read its columns again next time
        return SubscriberStoreError(f"{self._where}: {sqldb.mysql_message(exc)}")

    def _expire(self, call: _Call) -> None:
        call.expired = True
        out, call.out = call.out, None
        if out is not None and not out.called:
            out.errback(SubscriberStoreError(f"{self._where}: no answer within {self.timeout:g} s"))

    def _cancel(self, call: _Call) -> None:
        call.expired = True
        call.out = None
        if call.timer is not None and call.timer.active():
            call.timer.cancel()

    # -- closing --------------------------------------------------------------------------------------
    def close(self) -> "Deferred[None]":
        """Refuse new lookups, wait for those in flight (each ends within about ``timeout`` + 1 s
        once the server stops answering), then stop the pool's threads. Safe to call again."""
        if not self._closing:
            self._closing = True
            if self._shutdown_id is not None:
                try:
                    self._reactor.removeSystemEventTrigger(self._shutdown_id)
                except (ValueError, KeyError):  # pragma: no cover - already run
                    pass
                self._shutdown_id = None
            if self._inflight == 0:
                self._stop_pool()
        if self._closed:
            return succeed(None)
        d: Deferred = Deferred()
        self._close_waiters.append(d)
        return d

    def _stop_pool(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()  # no query in flight: the idle threads exit at once
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)


#: PyMySQL's "the connection is gone" codes: server has gone away, lost connection (during a query).
_GONE = (2006, 2013, 2055)


def _is_connection_lost(failure: Failure) -> bool:
    """The pooled connection died under the query (the server closed it while idle, restarted...)."""
    if failure.check(adbapi.ConnectionLost):
        return True
    exc = failure.value
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return type(exc).__module__.startswith("pymysql") and bool(args) and (args[0] in _GONE or (
        type(exc).__name__ == "InterfaceError" and args[0] == 0))


class _QuietConnection(adbapi.Connection):
    """adbapi's pooled connection, minus the two "Rollback failed" tracebacks it logs when the
    driver has already closed a dead connection: that connection is dropped from the pool quietly,
    the query's own error goes to the caller, and the thread's next query connects afresh."""

    def rollback(self) -> None:
        if not getattr(self._connection, "open", True):
            self._pool.disconnect(self._connection)
            return
        super().rollback()


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)
