"""The statistics of the MI: ``get_statistics``, ``list_statistics``, ``reset_statistics`` (OpenSIPS
core) over our counters under OpenSIPS-like ``group:name`` keys; :data:`STATISTICS` is the table."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, MutableMapping

from .parts import NodeParts
from .rpc import MIError, invalid_params

__all__ = ["Stat", "STATISTICS", "StatisticsCommands"]


@dataclass(frozen=True)
class Stat:
    """One statistic: ``group:name``, how to read it, and how to reset it (None: not resettable,
    OpenSIPS's "non-incremental").

    For Prometheus (:mod:`.prometheus`), statistics that are one series of a group -- requests by
    method, replies by class -- name their ``family`` (the metric's name after the prefix) and their
    ``labels``; the others are a metric of their own, ``<group>_<name>``."""

    group: str
    name: str
    get: Callable[[], int | float]
    reset: Callable[[], None] | None = None
    family: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.group}:{self.name}"


#: How our counters appear to ``get_statistics``: (key, where it comes from, resettable).
#: Groups exist only when their part runs (``pike:`` with ``[pike]``, ``auth:`` with ``[auth]``, ...).
STATISTICS: tuple[tuple[str, str, bool], ...] = (
    ("core:rcv_requests", "node.stats['requests']: requests received (before routing)", True),
    ("core:rcv_replies", "node.stats['responses']: responses received", True),
    ("core:drop_requests", "node.stats['dropped']: requests a route dropped unanswered (msg.drop())", True),
    ("core:err_requests", "node.stats['route_errors']: requests whose route raised (answered 500)", True),
    ("core:bad_msg_hdr", "node.stats['malformed']: messages that failed to parse or whose headers the core "
                         "refused (answered 400/513 ... unless the source floods; logged aggregated)", True),
    ("core:rcv_requests_<method>", "node.methods: requests received by method (invite, ack, bye, cancel, "
                                   "register, options, info, update, prack, subscribe, notify, publish, "
                                   "message, refer, other)", True),
    ("core:rcv_replies_<N>xx", "node.reply_classes: responses received by class (1xx ... 6xx)", True),
    ("core:timestamp", "seconds since the node started", False),
    ("tm:UAS_transactions", "node.stats['relayed']: requests relayed statefully (t_relay)", True),
    ("tm:inuse_transactions", "transactions in the table now", False),
    ("tm:timeout_finalresponse", "node.stats['timeouts']: branches that got no reply at all in time "
                                 "(fr_timeout: Timer B/F or $T_fr_timeout)", True),
    ("tm:timeout_finalresponse_inv", "node.stats['timeouts_inv']: INVITE branches with no final after a "
                                     "provisional (fr_inv_timeout: Timer C or $T_fr_inv_timeout)", True),
    ("tm:<N>xx_transactions", "proxy.finals: final responses sent by server transactions, by class", True),
    ("sl:sent_replies", "node.stats['replied']: replies sent by routes (sl_send_reply, save)", True),
    ("usrloc:registered_users", "AoRs stored (with at least one contact)", False),
    ("usrloc:location-users", "AoRs of the location table (the same number)", False),
    ("usrloc:location-contacts", "contacts of the location table", False),
    ("usrloc:db_<counter>", "with [usrloc] SQL persistence: db_loaded_contacts, db_expired_on_load, "
                            "db_skipped_contacts (not revived at start), db_flushes, db_written_aors, "
                            "db_written_contacts, db_failures, db_syncs, db_unwritable_contacts (a value too long for "
                            "its column: kept in memory only)", True),
    ("usrloc:db_pending_aors", "AoRs changed and not yet written to SQL", False),
    ("usrloc:repl_<counter>", "with full sharing: repl_sent_aors, repl_messages, repl_received_aors, "
                              "repl_applied_aors, repl_malformed, repl_refused, sync_requests, sync_donations, "
                              "synced_contacts, sync_bytes", True),
    ("registrar:max_expires", "[registrar] max_expires", False),
    ("registrar:max_contacts", "[registrar] max_contacts", False),
    ("registrar:default_expire", "[registrar] default_expires", False),
    ("auth:<result>", "node.auth.stats: authorized, invalid_user, invalid_password, stale_nonce, "
                      "no_credentials, generic_error (www/proxy_authorize outcomes), backoff (refused "
                      "unchecked: the user or source was backed off), with [auth]", True),
    ("pike:flood_dropped", "node.stats['flood_dropped']: requests dropped by check_all, with [pike]", True),
    ("pike:blocked_ips", "sources blocked now", False),
    ("pike:tracked_ips", "sources counted now", False),
    ("pike:blocked_events", "times a source became blocked", True),
    ("nathelper:<counter>", "NatPinger.stats: keepalives, sip_pings, replies, send_failures, removed, "
                            "with natping_interval > 0", True),
    ("federation:<counter>", "the publisher's upserts, deletes, syncs, synced_records, failures, "
                             "cleaned_on_start, with [federation]", True),
    ("dns:<counter>", "the RFC 3263 locator's locations, queries, cache_hits, timeouts, "
                    "refused (over max_queries)", True),
    ("dispatcher:<counter>", "Dispatcher.stats: state_changes, selections, failovers, reloads, bad_rows, "
                             "probes_sent, probe_replies, probe_failures, with [dispatcher]", True),
    ("dispatcher:active_destinations", "destinations Active now (also inactive_, probing_destinations)", False),
    ("permissions:address_rows", "host rows of the address groups in use (address_dump)", False),
    ("permissions:subnet_rows", "subnet rows of the address groups in use (subnet_dump)", False),
    ("permissions:<counter>", "Permissions.stats: reloads, reload_failures, skipped_rows (malformed rows "
                              "of the last load), with address groups", True),
    ("dialog:active_dialogs", "confirmed dialogs now", False),
    ("dialog:early_dialogs", "early dialogs now", False),
    ("dialog:processed_dialogs", "dialogs created (create_dialog)", True),
    ("dialog:expired_dialogs", "dialogs that reached their lifetime", True),
    ("dialog:failed_dialogs", "dialogs whose INVITE got no 2xx", True),
    ("dialog:pings_sent", "in-dialog OPTIONS pings sent (create_dialog P/p; OpenSIPS counts none)", True),
    ("dialog:pings_failed", "pings answered 408/481 or not at all (each ends its dialog)", True),
    ("acc:<counter>", "call records, with [acc]: attempts (INVITE finals), missed (>= 300), cdrs (ended calls), "
                      "db_rows, db_failed (rows written to the acc tables, inserts that failed)", True),
)


def _counter(group: str, name: str, counters: MutableMapping[str, Any], key: str | None = None) -> Stat:
    key = key or name

    def reset() -> None:
        counters[key] = 0

    return Stat(group, name, lambda: counters.get(key, 0), reset)


def _gauge(group: str, name: str, get: Callable[[], int | float]) -> Stat:
    return Stat(group, name, get, None)


def _slot(group: str, name: str, counters: list[int], index: int, family: str, labels: tuple[tuple[str, str], ...]
          ) -> Stat:
    def reset() -> None:
        counters[index] = 0

    return Stat(group, name, lambda: counters[index], reset, family, labels)


def _by_method(methods: MutableMapping[str, int]) -> list[Stat]:
    out = []
    for method in list(methods):
        stat = _counter("core", f"rcv_requests_{method.lower()}", methods, method)
        out.append(Stat(stat.group, stat.name, stat.get, stat.reset, "core_rcv_requests_by_method",
                        (("method", method),)))
    return out


def _by_class(group: str, name: str, counters: list[int], family: str, first: int = 1) -> list[Stat]:
    """``name`` with ``N`` for each class ``first``..6 (``rcv_replies_{N}xx``), one series each of
    ``family``."""
    return [_slot(group, name.format(N=n), counters, n, family, (("class", f"{n}xx"),)) for n in range(first, 7)]


class StatisticsCommands:
    """The statistics commands, over the parts running now (a part of :class:`~.commands.MICommands`).
    ``wall`` and ``started_at`` give ``core:timestamp``."""

    parts: NodeParts
    wall: Callable[[], float]
    started_at: float

    def statistics(self) -> list[Stat]:
        """Every statistic of the parts running now, in ``list_statistics`` order."""
        parts = self.parts
        node = parts.node
        s = node.stats
        location = self.parts.location
        out = [
            _counter("core", "rcv_requests", s, "requests"),
            _counter("core", "rcv_replies", s, "responses"),
            _counter("core", "drop_requests", s, "dropped"),
            _counter("core", "err_requests", s, "route_errors"),
            _counter("core", "bad_msg_hdr", s, "malformed"),
            *_by_method(node.methods),
            *_by_class("core", "rcv_replies_{N}xx", node.reply_classes, "core_rcv_replies_by_class"),
            Stat("core", "timestamp", lambda: int(self.wall() - self.started_at), family="core_uptime_seconds"),
            _counter("tm", "UAS_transactions", s, "relayed"),
            _gauge("tm", "inuse_transactions", lambda: len(node.table)),
            _counter("tm", "timeout_finalresponse", s, "timeouts"),
            _counter("tm", "timeout_finalresponse_inv", s, "timeouts_inv"),
            *_by_class("tm", "{N}xx_transactions", node.proxy.finals, "tm_transactions_by_class", first=2),
            _counter("sl", "sent_replies", s, "replied"),
            _gauge("usrloc", "registered_users", lambda: len(location)),
            _gauge("usrloc", "location-users", lambda: len(location)),
            _gauge("usrloc", "location-contacts", self._contact_count),
        ]
        persistence = parts.persistence
        if persistence is not None:
            out += [_counter("usrloc", name, persistence.stats) for name in list(persistence.stats)]
            out.append(_gauge("usrloc", "db_pending_aors", lambda: persistence.pending))
        replication = parts.replication
        if replication is not None:
            out += [_counter("usrloc", name, replication.stats) for name in list(replication.stats)]
        settings = parts.registrar.settings
        out += [
            Stat("registrar", "max_expires", lambda: settings.max_expires, family="registrar_max_expires_seconds"),
            _gauge("registrar", "max_contacts", lambda: settings.max_contacts),
            Stat("registrar", "default_expire", lambda: settings.default_expires,
                 family="registrar_default_expire_seconds"),
        ]
        auth = node.auth
        if auth is not None:
            out += [_counter("auth", name, auth.stats) for name in list(auth.stats)]
        flood = node.flood
        if flood is not None:
            def reset_events() -> None:
                flood.blocked_events = 0

            out += [
                _counter("pike", "flood_dropped", s),
                _gauge("pike", "blocked_ips", lambda: len(flood.blocked())),
                _gauge("pike", "tracked_ips", lambda: len(flood)),
                Stat("pike", "blocked_events", lambda: flood.blocked_events, reset_events),
            ]
        pinger = node.pinger
        if pinger is not None:
            out += [_counter("nathelper", name, pinger.stats) for name in list(pinger.stats)]
        federation = parts.federation
        if federation is not None:
            counters = federation.publisher.stats
            out += [_counter("federation", name, counters) for name in list(counters)]
        ds = parts.dispatcher
        if ds is not None:
            out += [_counter("dispatcher", name, ds.stats) for name in list(ds.stats)]
            out += [_gauge("dispatcher", f"{state.lower()}_destinations", partial(ds.count, state))
                    for state in ("Active", "Inactive", "Probing")]
        permissions = parts.permissions
        if permissions is not None:
            out += [
                _gauge("permissions", "address_rows", lambda: len(permissions.table.hosts)),
                _gauge("permissions", "subnet_rows", lambda: len(permissions.table.subnets)),
            ]
            out += [_counter("permissions", name, permissions.stats) for name in list(permissions.stats)]
        dialogs = node.dialogs.table  # OpenSIPS dialog's statistics
        out += [_gauge("dialog", "active_dialogs", lambda: dialogs.active),
                _gauge("dialog", "early_dialogs", lambda: dialogs.early)]
        out += [_counter("dialog", name, dialogs.stats) for name in list(dialogs.stats)]
        acc = parts.acc  # [acc]: call records
        if acc is not None:
            out += [_counter("acc", name, acc.stats) for name in list(acc.stats)]
            for writer in acc.writers:
                table = getattr(writer, "stats", None)  # the SQL writer counts its rows; the JSON lines', none
                if isinstance(table, dict):
                    out += [_counter("acc", f"db_{name}", table, name) for name in list(table)]
        dns = getattr(getattr(node, "locator", None), "stats", None)  # the RFC 3263 locator's, with [dns]
        if isinstance(dns, dict):
            out += [_counter("dns", name, dns) for name in list(dns)]
        return out

    def _contact_count(self) -> int:
        """Contacts stored: O(1) from the in-memory table's counter (like ``len``, it may hold contacts
        expired since the expiry timer last ran, which it does at once on a running reactor)."""
        return self.parts.location.binding_count

    def _select(self, statistics: Any, allow_all: bool = True) -> list[Stat]:
        if isinstance(statistics, str):
            statistics = [statistics]
        if not isinstance(statistics, list) or not statistics or not all(isinstance(n, str) for n in statistics):
            raise invalid_params('statistics must be a list of names, e.g. ["all"], ["core:", "usrloc:"] '
                                 'or ["rcv_requests"]')
        stats = self.statistics()
        chosen: dict[str, Stat] = {}
        for name in statistics:
            name = name.strip()
            if name == "all" and allow_all:
                picked = stats
            elif len(name) > 1 and name.endswith(":"):
                group = name[:-1].lower()
                picked = [st for st in stats if st.group.lower() == group]
            else:
                lowered = name.lower()
                picked = [st for st in stats if st.key.lower() == lowered or st.name.lower() == lowered][:1]
            for st in picked:
                chosen.setdefault(st.key, st)
        if not chosen:
            raise MIError(404, "Statistics Not Found")
        return list(chosen.values())

    def get_statistics(self, statistics: Any) -> dict[str, int | float]:
        return {st.key: st.get() for st in self._select(statistics)}

    def list_statistics(self, statistics: Any = None) -> dict[str, str]:
        stats = self.statistics() if statistics is None else self._select(statistics, allow_all=False)
        return {st.key: "incremental" if st.reset is not None else "non-incremental" for st in stats}

    def reset_statistics(self, statistics: Any) -> str:
        for st in self._select(statistics, allow_all=False):
            if st.reset is not None:
                st.reset()
        return "OK"
