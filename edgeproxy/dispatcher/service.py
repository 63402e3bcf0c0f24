"""The node's dispatcher: the destination sets, their reloading and every change of their state.

:class:`Dispatcher` holds the current :class:`~.table.DispatcherTable` and is the one place a
destination's state changes -- from a route (``ds_mark_dst``), the MI (``ds_set_state``), a probe
result or another node of the cluster -- so each change is one log line, one statistic, and one call
to the listeners (the cluster link shares them). ``reload()`` re-reads the rows (the configuration's,
or OpenSIPS's ``dispatcher`` table through ``db_url``), builds a new table, lets destinations that
stay keep their state (OpenSIPS ``inherit_state``) and swaps it in; a row that cannot be used is one
log line and the rest loads; a table that cannot be read leaves the old one in place.

The selection logic itself is pure (:mod:`.select`); what a route asks is answered by the verbs
(:mod:`edgeproxy.routing.verbs`) over this object.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from .settings import DispatcherSettings
from .table import INACTIVE, PROBING, Destination, DispatcherTable, build_table

__all__ = ["Dispatcher", "StateListener", "ReloadListener", "RowLoader", "Resolver"]

log = Logger(namespace="edgeproxy.dispatcher")

#: Told of every local state change: (set id, destination URI, new state bits).
StateListener = Callable[[int, str, int], None]
#: Told when ``ds_reload`` swapped a new table in.
ReloadListener = Callable[[], None]
#: Reads the rows again (the ``dispatcher`` table); fires with dicts of OpenSIPS's columns.
RowLoader = Callable[[], "Deferred[list[dict[str, Any]]]"]
#: The IP addresses a destination named by a host name stands for (the node's RFC 3263 locator).
Resolver = Callable[[Destination], "Deferred[list[str]]"]


class Dispatcher:
    """The destination sets of a node (see the module docstring). ``load_rows`` reads the database
    table (with ``db_url``); without it the configuration's rows are used. ``rand(n)`` picks an
    integer in ``[0, n)`` for algorithm 6."""

    def __init__(self, settings: DispatcherSettings, load_rows: RowLoader | None = None,
                 rand: Callable[[int], int] | None = None, resolve: Resolver | None = None) -> None:
        self.settings = settings
        self.load_rows = load_rows
        # destinations named by a host name get their addresses (for ds_is_in_list) when loaded, as
        # OpenSIPS resolves them at load time; a new lookup only on ds_reload
        self.resolve = resolve
        self.rand = rand or random.randrange
        self.table = DispatcherTable()
        self.stats: dict[str, int] = {"state_changes": 0, "selections": 0, "failovers": 0, "reloads": 0,
                                      "bad_rows": 0, "probes_sent": 0, "probe_replies": 0, "probe_failures": 0}
        self._listeners: list[StateListener] = []
        self._reload_listeners: list[ReloadListener] = []
        if load_rows is None:
            self.load(settings.destinations)

    def subscribe(self, listener: StateListener, reloaded: ReloadListener | None = None) -> None:
        """Tell ``listener`` of every local state change, and ``reloaded`` of every ``ds_reload``."""
        self._listeners.append(listener)
        if reloaded is not None:
            self._reload_listeners.append(reloaded)

    # -- loading -------------------------------------------------------------------------------------
    def load(self, rows: Sequence[Mapping[str, Any]], inherit_state: bool = True) -> int:
        """Swap in the table of ``rows``; the number of destinations loaded."""
        table, errors = build_table(rows, self.settings.persistent_state)
        for error in errors:
            log.warn("dispatcher: skipping {row}", row=error)
        self.stats["bad_rows"] += len(errors)
        if inherit_state:
            table.inherit(self.table)
        self.table = table
        if self.resolve is not None:
            for dest in table.destinations():
                if dest.is_name:
                    self._resolve(dest)
        return len(table)

    def _resolve(self, dest: Destination) -> None:
        assert self.resolve is not None

        def found(addresses: list[str]) -> None:
            dest.addresses = tuple(dict.fromkeys(addresses))
            if not addresses:
                log.warn("dispatcher: set {setid} destination {uri}: {host} does not resolve (ds_is_in_list "
                         "does not match it; probing finds it dead)", setid=dest.setid, uri=dest.uri, host=dest.host)

        def failed(failure: Failure) -> None:
            log.warn("dispatcher: set {setid} destination {uri}: resolving {host} failed: {why}", setid=dest.setid,
                     uri=dest.uri, host=dest.host, why=failure.getErrorMessage())

        maybeDeferred(self.resolve, dest).addCallbacks(found, failed)

    def reload(self, inherit_state: bool = True) -> "Deferred[int]":
        """``ds_reload``: read the rows again and swap the table in; fires with the number of
        destinations, or fails (the old table stays) when the table cannot be read."""
        if self.load_rows is None:
            return succeed(self._loaded(self.settings.destinations, inherit_state))
        d: Deferred[Any] = maybeDeferred(self.load_rows)
        d.addCallback(self._loaded, inherit_state)

        def failed(failure: Failure) -> Failure:
            log.error("dispatcher: cannot read the destinations, keeping the {n} loaded: {why}", n=len(self.table),
                      why=failure.getErrorMessage())
            return failure

        d.addErrback(failed)
        return d

    def _loaded(self, rows: Sequence[Mapping[str, Any]], inherit_state: bool) -> int:
        n = self.load(rows, inherit_state)
        self.stats["reloads"] += 1
        log.info("dispatcher: {n} destinations in {sets} sets loaded", n=n, sets=len(self.table.sets))
        for listener in list(self._reload_listeners):
            try:
                listener()
            except Exception:
                log.failure("dispatcher: a reload listener failed")
        return n

    # -- state ---------------------------------------------------------------------------------------
    def set_state(self, dest: Destination, letter: str, reason: str) -> bool:
        """Apply ``a``/``i``/``p`` to ``dest`` (OpenSIPS's rules, :meth:`Destination.mark`); a change
        is logged, counted and told to the listeners. True when the state changed."""
        before = dest.state_name
        changed = dest.mark(letter, self.settings.ds_probing_threshold)
        if changed:
            self._changed(dest, before, reason, share=True)
        return changed

    def probe_result(self, dest: Destination, status: int, reason: str = "") -> None:
        """A probe's reply (408: none in time; 503: could not be sent or resolved). Alive: both bits
        cleared and the failure count reset. Dead: counted as ``p`` -- only for destinations probed in
        every state (``ds_probing_mode = 1`` or the row's ``probe_mode = 1``); a Probing destination
        probed because it is Probing stays Probing (``ds_options_callback``)."""
        if self.settings.alive(status):
            self.stats["probe_replies"] += 1
            dest.failure_count = 0
            if dest.flags:
                before = dest.state_name
                dest.flags = 0
                self._changed(dest, before, f"{status} probing reply", share=True)
            return
        self.stats["probe_failures"] += 1
        if self.settings.ds_probing_mode == 1 or dest.probe_mode == 1:
            before = dest.state_name
            if dest.mark("p", self.settings.ds_probing_threshold):
                self._changed(dest, before, f"{dest.failure_count} failed probes, last {status} {reason}".rstrip(),
                              share=True)

    def apply_remote(self, setid: int, uri: str, flags: int, node: str) -> bool:
        """A state another node of the cluster decided: applied as it is, without the threshold, and
        not shared again (``replicated info``). False for a destination this node does not have."""
        dest = self.table.find(setid, uri)
        if dest is None:
            return False
        flags &= INACTIVE | PROBING
        if dest.flags == flags:
            return True
        before = dest.state_name
        dest.flags = flags
        if not flags:
            dest.failure_count = 0
        self._changed(dest, before, f"replicated from {node}", share=False)
        return True

    def apply_synced(self, states: Iterable[tuple[int, str, int]]) -> tuple[int, list[str]]:
        """States a peer sent in a cluster sync (OpenSIPS: at start-up and after ``ds_reload``, from a
        donor): copied as they are, without the threshold, without telling the listeners, and
        without a log line each (``sync from cluster: state copied, no event``) -- the caller logs
        the sync once. The number of destinations found, and ``set:uri old -> new`` of those whose
        state it changed."""
        found, changes = 0, []
        for setid, uri, flags in states:
            dest = self.table.find(setid, uri)
            if dest is None:
                continue
            found += 1
            flags &= INACTIVE | PROBING
            if dest.flags == flags:
                continue
            before = dest.state_name
            dest.flags = flags
            if not flags:
                dest.failure_count = 0
            changes.append(f"{setid}:{dest.uri} {before} -> {dest.state_name}")
        self.stats["state_changes"] += len(changes)
        return found, changes

    def _changed(self, dest: Destination, before: str, reason: str, share: bool) -> None:
        self.stats["state_changes"] += 1
        log.info("dispatcher: set {setid} destination {uri}: {before} -> {after} ({reason})", setid=dest.setid,
                 uri=dest.uri, before=before, after=dest.state_name, reason=reason)
        if not share:
            return
        for listener in list(self._listeners):
            try:
                listener(dest.setid, dest.uri, dest.flags)
            except Exception:
                log.failure("dispatcher: a state listener failed")

    # -- counts --------------------------------------------------------------------------------------
    def count(self, state: str) -> int:
        """Destinations in ``state`` (``Active``, ``Inactive``, ``Probing``) now."""
        return sum(1 for d in self.table.destinations() if d.state_name == state)
