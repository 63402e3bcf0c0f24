"""The node's address groups: the rows of the configuration file and of OpenSIPS's ``address`` table,
reloadable while the node runs (OpenSIPS MI ``address_reload``).

:class:`Permissions` holds one immutable :class:`~.address.AddressTable` and answers the route verbs
from it. :meth:`Permissions.reload` reads the database in a worker thread, checks every row (a bad
one is one log line and is left out, as OpenSIPS's loader skips it), builds a new table and swaps it
in at once -- OpenSIPS's double buffer: a check never sees half a load. A reload that cannot read the
table at all keeps the table in use and fails with :class:`~.db.AddressTableError`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from .address import AddressMatch, AddressRow, AddressRowError, AddressTable, parse_row
from .db import fetch_address_rows
from .settings import PermissionsSettings

__all__ = ["Permissions"]

log = Logger(namespace="edgeproxy.permissions")


class Permissions:
    """Address groups for ``check_address`` / ``check_source_address`` / ``get_source_group``.

    ``settings.address`` (the file's rows, and the shipped routes' default group) are in the table
    from construction on; the database's rows join at the first :meth:`reload` (the service runs it
    before the node listens). ``reactor`` runs the database read in its thread pool.
    """

    def __init__(self, settings: PermissionsSettings, reactor: Any = None) -> None:
        self.settings = settings
        self.reactor = reactor
        self.table = AddressTable(settings.address)
        self.stats: dict[str, int] = {"reloads": 0, "reload_failures": 0, "skipped_rows": 0}
        self._loading: Deferred[int] | None = None
        self._waiters: list[Deferred[int]] = []

    # -- the verbs' questions ------------------------------------------------------------------------
    def check(self, grp: int, ip: str, port: int, proto: str, pattern: str | None = None) -> AddressMatch:
        return self.table.check(grp, ip, port, proto, pattern)

    def source_group(self, ip: str, port: int) -> int:
        return self.table.source_group(ip, port)

    # -- loading -------------------------------------------------------------------------------------
    def reload(self) -> "Deferred[int]":
        """Re-read the sources; fires with the number of rows in use. A reload asked while one runs
        gets that one's result (the database is read once)."""
        if self._loading is not None:
            waiter: Deferred[int] = Deferred()
            self._waiters.append(waiter)
            return waiter
        if not self.settings.db_url:
            self._install(list(self.settings.address), 0)
            return succeed(len(self.table))
        if self.reactor is None:
            from twisted.internet import reactor as default_reactor

            self.reactor = default_reactor
        s = self.settings
        d: Deferred[list[dict[str, Any]]] = deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), fetch_address_rows, s.db_url, s.table, timeout=s.timeout)
        loading = self._loading = d.addCallbacks(self._loaded, self._failed)
        loading.addBoth(self._done)
        return loading

    def _done(self, result: Any) -> Any:
        self._loading = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        return result

    def _loaded(self, rows: list[dict[str, Any]]) -> int:
        good: list[AddressRow] = list(self.settings.address)
        skipped = 0
        for row in rows:
            try:
                good.append(parse_row(row))
            except AddressRowError as exc:
                skipped += 1
                log.warn("permissions: {table} row id {id} skipped: {why}", table=self.settings.table,
                         id=row.get("id"), why=exc)
        self._install(good, skipped)
        log.info("permissions: {rows} address rows loaded ({hosts} hosts, {subnets} subnets, {skipped} skipped)",
                 rows=len(self.table), hosts=len(self.table.hosts), subnets=len(self.table.subnets), skipped=skipped)
        return len(self.table)

    def _failed(self, failure: Failure) -> Failure:
        self.stats["reload_failures"] += 1
        log.error("permissions: reloading the address table failed, the old one stays: {why}",
                  why=failure.getErrorMessage())
        return failure

    def _install(self, rows: list[AddressRow], skipped: int) -> None:
        self.table = AddressTable(rows)
        self.stats["reloads"] += 1
        self.stats["skipped_rows"] = skipped
