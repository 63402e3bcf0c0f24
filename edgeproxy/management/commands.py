"""The MI commands: what OpenSIPS's Management Interface answers, over a running node's parts.

No HTTP here (see :mod:`edgeproxy.management.http`): :class:`MICommands` takes the parts of a
:class:`~edgeproxy.service.RunningNode` (any object with ``node``, ``location``, ``registrar`` and,
when they run, ``cluster``, ``federation``, ``pinger``) and :meth:`MICommands.execute` runs one
command by its OpenSIPS name with JSON-RPC ``params`` (an array or an object), returning a Deferred
that fires with JSON-able data shaped like OpenSIPS 3.x's, or fails with :class:`MIError`.

Parameters are matched as OpenSIPS matches a command's "recipes": no params, positional params by
count, or named params by their names. Errors carry OpenSIPS's codes: JSON-RPC's -32601 (no such
method), -32602 (params that fit no recipe, or a bad value), -32000 (the command itself failed: logged
with its traceback, never raised to the caller); and the command's own codes such as
``404 AOR not found``.

Commands (OpenSIPS module in brackets):

* ``ul_dump`` [usrloc] -- every AoR of the ``location`` table with its contacts; ``brief`` lists the
  AoRs only. ``ul_show_contact table_name aor``, ``ul_rm table_name aor`` and
  ``ul_rm_contact table_name aor contact``. The names of OpenSIPS 4 (``usrloc:dump``,
  ``usrloc:show_contact``, ``usrloc:rm``, ``usrloc:rm_contact``) are accepted too. Removals go
  through the location service, so its listeners (federation, NAT pinger) see them as any removal.
* ``get_statistics statistics``, ``list_statistics [statistics]``, ``reset_statistics statistics``
  [core] -- our counters under OpenSIPS-like ``group:name`` keys (:data:`STATISTICS` is the table).
* ``clusterer_list`` [clusterer] -- only while a cluster runs; ``pike_list`` [pike] -- only with
  ``[pike]``.
* ``uptime``, ``version``, ``which [command]``, ``help [mi_cmd]``, ``ps``, ``log_level [level [pid]]``
  [core].
"""

from __future__ import annotations

import inspect
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..registrar import format_q, received_uri
from .loglevel import LogLevelControl, level_name, opensips_level

__all__ = [
    "MIError", "MICommands", "Command", "Stat", "STATISTICS",
    "PARSE_ERROR", "INVALID_REQUEST", "METHOD_NOT_FOUND", "INVALID_PARAMS", "SERVER_ERROR",
]

log = Logger(namespace="edgeproxy.management")

# JSON-RPC 2.0 error codes (OpenSIPS mi/item.h uses the same, -32000 for a failed command)
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000

#: The one usrloc table (OpenSIPS "domain") a node has: what routes name in ``save("location")``.
TABLE = "location"

# OpenSIPS parser/msg_parser.h request_method bits; 0xffffffff is ALL_METHODS (no Allow header)
_METHOD_BITS = {"INVITE": 1, "CANCEL": 2, "ACK": 4, "BYE": 8, "INFO": 16, "OPTIONS": 32, "UPDATE": 64,
                "REGISTER": 128, "MESSAGE": 256, "SUBSCRIBE": 512, "NOTIFY": 1024, "PRACK": 2048,
                "REFER": 4096, "PUBLISH": 8192}
_METHOD_OTHER = 16384
ALL_METHODS = 0xFFFFFFFF


class MIError(Exception):
    """A JSON-RPC error answer: ``code``, ``message`` and optional ``data`` (OpenSIPS puts the details
    of -32602 there)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code} {message}" + (f" ({data})" if data is not None else ""))
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


def invalid_params(detail: str) -> MIError:
    return MIError(INVALID_PARAMS, "Invalid params", detail)


@dataclass(frozen=True)
class Command:
    """One MI command: its name, the parameter lists it accepts (OpenSIPS "recipes"), the function
    run with them as keywords, and for ``which``/``help`` its help text and module. ``list_param``
    names a command's one array parameter, which may also come as the positional params themselves
    (``get_statistics ["core:", "tm:"]``). ``changes`` marks commands logged at info level."""

    name: str
    recipes: tuple[tuple[str, ...], ...]
    run: Callable[..., Any]
    help: str
    module: str = "core"
    available: Callable[[], bool] = field(default=lambda: True)
    list_param: str | None = None
    changes: bool = False

    def describe(self) -> str:
        return " or ".join(f"({', '.join(r)})" if r else "no parameters" for r in self.recipes)

    def bind(self, params: Any) -> dict[str, Any]:
        """The keywords for :attr:`run` from JSON-RPC ``params``; raises -32602 when none fits."""
        if params is None or params == [] or params == {}:
            if () in self.recipes:
                return {}
            raise invalid_params(f"{self.name} takes {self.describe()}; no parameters were given")
        if isinstance(params, list):
            if self.list_param is not None:
                value = params[0] if len(params) == 1 and isinstance(params[0], list) else params
                return {self.list_param: value}
            matches = [r for r in self.recipes if r and len(r) == len(params)]
            if len(matches) == 1:
                return dict(zip(matches[0], params))
            raise invalid_params(f"{self.name} takes {self.describe()}; got {len(params)} positional "
                                 f"parameter{'s' if len(params) != 1 else ''}")
        if isinstance(params, dict):
            keys = set(params)
            for recipe in self.recipes:
                if recipe and set(recipe) == keys:
                    return dict(params)
            raise invalid_params(f"{self.name} takes {self.describe()}; got ({', '.join(params)})")
        raise invalid_params(f"{self.name} takes {self.describe()}; params must be an array or an object")


@dataclass(frozen=True)
class Stat:
    """One statistic: ``group:name``, how to read it, and how to reset it (None: not resettable,
    OpenSIPS's "non-incremental")."""

    group: str
    name: str
    get: Callable[[], int | float]
    reset: Callable[[], None] | None = None

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
    ("core:timestamp", "seconds since the node started", False),
    ("tm:UAS_transactions", "node.stats['relayed']: requests relayed statefully (t_relay)", True),
    ("tm:inuse_transactions", "transactions in the table now", False),
    ("sl:sent_replies", "node.stats['replied']: replies sent by routes (sl_send_reply, save)", True),
    ("usrloc:registered_users", "AoRs stored (with at least one contact)", False),
    ("usrloc:location-users", "AoRs of the location table (the same number)", False),
    ("usrloc:location-contacts", "contacts of the location table", False),
    ("registrar:max_expires", "[registrar] max_expires", False),
    ("registrar:max_contacts", "[registrar] max_contacts", False),
    ("registrar:default_expire", "[registrar] default_expires", False),
    ("auth:<result>", "node.auth.stats: authorized, invalid_user, invalid_password, stale_nonce, "
                      "no_credentials, generic_error (www/proxy_authorize outcomes), with [auth]", True),
    ("pike:flood_dropped", "node.stats['flood_dropped']: requests dropped by check_all, with [pike]", True),
    ("pike:blocked_ips", "sources blocked now", False),
    ("pike:tracked_ips", "sources counted now", False),
    ("pike:blocked_events", "times a source became blocked", True),
    ("nathelper:<counter>", "NatPinger.stats: keepalives, sip_pings, replies, send_failures, removed, "
                            "with natping_interval > 0", True),
    ("federation:<counter>", "the publisher's upserts, deletes, syncs, synced_records, failures, "
                             "cleaned_on_start, with [federation]", True),
    ("dns:<counter>", "the RFC 3263 locator's locations, queries, cache_hits, timeouts", True),
)


def _counter(group: str, name: str, counters: dict[str, Any], key: str | None = None) -> Stat:
    key = key or name

    def reset() -> None:
        counters[key] = 0

    return Stat(group, name, lambda: counters.get(key, 0), reset)


def _gauge(group: str, name: str, get: Callable[[], int | float]) -> Stat:
    return Stat(group, name, get, None)


def methods_mask(methods: Iterable[str] | None) -> int:
    """A contact's accepted methods as OpenSIPS's bit mask (ALL_METHODS when unknown)."""
    if methods is None:
        return ALL_METHODS
    mask = 0
    for m in methods:
        mask |= _METHOD_BITS.get(m.upper(), _METHOD_OTHER)
    return mask


def contact_json(binding: Any, now: float) -> dict[str, Any]:
    """One contact of ``ul_dump``/``ul_show_contact``, with OpenSIPS's keys: Contact, Expires (seconds
    left), Q, Callid, Cseq, User-agent, Received, Path, State, Flags, Cflags (``NAT``, ``SIPPING``),
    Socket (the listener it registered on), Methods (bit mask), SIP_instance (and Reg-Id)."""
    out: dict[str, Any] = {
        "Contact": str(binding.uri),
        "Expires": binding.expires_in(now),
        "Q": format_q(binding.q),
        "Callid": binding.call_id,
        "Cseq": binding.cseq,
    }
    if binding.user_agent:
        out["User-agent"] = binding.user_agent
    if binding.received is not None:
        out["Received"] = received_uri(binding.received)
    if binding.path:
        out["Path"] = ",".join(binding.path)
    out["State"] = "CS_NEW"  # OpenSIPS's state of a contact never written to a database
    out["Flags"] = 0
    out["Cflags"] = " ".join(name for name, on in (("NAT", binding.nat), ("SIPPING", binding.sipping)) if on)
    if binding.flow is not None:
        out["Socket"] = str(binding.flow.local)
    out["Methods"] = methods_mask(binding.methods)
    if binding.instance:
        out["SIP_instance"] = binding.instance
        if binding.reg_id is not None:
            out["Reg-Id"] = binding.reg_id
    return out


class MICommands:
    """The MI commands over the running node ``parts`` (see the module docstring).

    Parts are read when a command runs, so a cluster or federation started after this object was
    built is seen. ``log_control`` moves the log level (default: a :class:`LogLevelControl` over the
    filter twistd logs through); ``wall`` is the wall clock for ``uptime`` (``time.time``), and the
    start time is when this object was built.
    """

    def __init__(self, parts: Any, *, log_control: LogLevelControl | None = None,
                 wall: Callable[[], float] = time.time, started_at: float | None = None) -> None:
        self.parts = parts
        self.wall = wall
        self.started_at = wall() if started_at is None else started_at
        if log_control is None:
            config = getattr(parts, "config", None)
            initial = config.node.log_level if config is not None else "info"
            log_control = LogLevelControl(node=parts.node, initial=initial)
        self.log_control = log_control
        self._commands: dict[str, Command] = {}
        for command in self._table():
            self._commands[command.name] = command

    # -- registry ------------------------------------------------------------------------------------
    def _table(self) -> list[Command]:
        def has_cluster() -> bool:
            return getattr(self.parts, "cluster", None) is not None

        def has_pike() -> bool:
            return getattr(self.parts.node, "flood", None) is not None

        usrloc = [
            ("ul_dump", ((), ("brief",)), self.ul_dump, "dumps the whole location table (brief: AoRs only)", False),
            ("ul_show_contact", (("table_name", "aor"),), self.ul_show_contact, "shows the contacts of an AoR", False),
            ("ul_rm", (("table_name", "aor"),), self.ul_rm, "removes an AoR with all its contacts", True),
            ("ul_rm_contact", (("table_name", "aor", "contact"),), self.ul_rm_contact,
             "removes one contact of an AoR", True),
        ]
        commands = []
        for name, recipes, run, text, changes in usrloc:
            commands.append(Command(name, recipes, run, text, "usrloc", changes=changes))
        for name, recipes, run, text, changes in usrloc:  # OpenSIPS 4 names
            commands.append(Command("usrloc:" + name[3:], recipes, run, text + f" (= {name})", "usrloc",
                                    changes=changes))
        commands += [
            Command("get_statistics", (("statistics",),), self.get_statistics,
                    "prints the statistics (all, group: or one) realtime values", list_param="statistics"),
            Command("list_statistics", ((), ("statistics",)), self.list_statistics,
                    "lists the statistics and their types", list_param="statistics"),
            Command("reset_statistics", (("statistics",),), self.reset_statistics,
                    "resets incremental statistics", list_param="statistics", changes=True),
            Command("clusterer_list", ((),), self.clusterer_list, "lists the nodes of the clusters and their "
                    "link state", "clusterer", available=has_cluster),
            Command("pike_list", ((),), self.pike_list, "lists the blocked source addresses", "pike",
                    available=has_pike),
            Command("uptime", ((),), self.uptime, "prints uptime statistics"),
            Command("version", ((),), self.version, "prints the version string of the running node"),
            Command("which", ((), ("command",)), self.which, "lists the MI commands (or a command's parameters)"),
            Command("help", ((), ("mi_cmd",)), self.help, "prints information about an MI command"),
            Command("ps", ((),), self.ps, "lists the processes"),
            Command("log_level", ((), ("level",), ("level", "pid")), self.log_level,
                    "gets or sets the log level: -4..4 (OpenSIPS) or debug, info, warn, error, critical",
                    changes=True),
        ]
        return commands

    def command(self, name: str) -> Command | None:
        """The command called ``name`` if it exists and its part runs."""
        command = self._commands.get(name) if isinstance(name, str) else None
        if command is None or not command.available():
            return None
        return command

    def names(self) -> list[str]:
        return [name for name, c in self._commands.items() if c.available()]

    # -- running -------------------------------------------------------------------------------------
    def execute(self, method: str, params: Any = None, origin: str = "") -> "Deferred[Any]":
        """Run ``method`` with JSON-RPC ``params``. Fires with the result, or fails with
        :class:`MIError` (an unexpected exception becomes -32000, logged with its traceback)."""
        command = self.command(method)
        if command is None:
            return fail(MIError(METHOD_NOT_FOUND, "Method not found"))
        try:
            kwargs = command.bind(params)
        except MIError as exc:
            return fail(exc)

        def call() -> Any:
            result = command.run(**kwargs)
            if inspect.iscoroutine(result):
                return Deferred.fromCoroutine(result)
            return result

        d = maybeDeferred(call)

        def done(result: Any) -> Any:
            if command.changes and (command.name != "log_level" or kwargs):
                log.info("MI {method} {params} from {origin}: done", method=method, params=_short(params),
                         origin=origin or "?")
            return result

        def failed(failure: Failure) -> Failure:
            if failure.check(MIError, CancelledError):  # a timeout's cancellation is the caller's to report
                return failure
            log.failure("MI {method} {params} from {origin} failed", failure, method=method,
                        params=_short(params), origin=origin or "?")
            return Failure(MIError(SERVER_ERROR, "Server error", "the command failed; the node's log has why"))

        d.addCallbacks(done, failed)
        return d

    # -- usrloc --------------------------------------------------------------------------------------
    @property
    def location(self) -> Any:
        return self.parts.location

    def _now(self) -> float:
        return self.location.clock.seconds()

    def _aor(self, table_name: Any, aor: Any) -> str:
        """OpenSIPS ``mi_find_domain`` + ``mi_fix_aor``: the table must be ``location``; without
        ``use_domain`` a domain is dropped, with it one is required. A ``sip:`` URI is keyed as the
        registrar keys its To URI."""
        if not isinstance(table_name, str) or not isinstance(aor, str) or not aor:
            raise invalid_params("table_name and aor must be non-empty strings")
        if table_name != TABLE:
            raise MIError(404, "Table not found")
        aor = aor.strip()
        registrar = self.parts.registrar
        if aor.lower().startswith(("sip:", "sips:")):
            from ..sip.errors import SipValueError
            from ..sip.uri import SipURI, parse_uri

            try:
                uri = parse_uri(aor)
            except SipValueError:
                raise invalid_params(f"aor {aor!r} is not a valid URI") from None
            if isinstance(uri, SipURI):
                return registrar.aor_key(uri)
        if registrar.settings.use_domain:
            if "@" not in aor:
                raise MIError(400, "Domain missing in AOR")
            user, _, host = aor.rpartition("@")
            return f"{user}@{host.lower()}"
        return aor.split("@", 1)[0]

    async def ul_dump(self, brief: Any = None) -> dict[str, Any]:
        short = brief is not None and str(brief).strip().lower() not in ("0", "false", "")
        now = self._now()
        location = self.location
        get = getattr(location, "get", None)  # the in-memory table reads synchronously: no Deferred per AoR
        aors = []
        for aor in sorted(location.aors()):
            bindings = get(aor) if get is not None else await location.contacts(aor)
            if not bindings:
                continue
            entry: dict[str, Any] = {"AOR": aor}
            if not short:
                entry["Contacts"] = [contact_json(b, now) for b in bindings]
            aors.append(entry)
        return {"Domains": [{"name": TABLE, "AORs": aors}]}

    async def ul_show_contact(self, table_name: Any, aor: Any) -> dict[str, Any]:
        key = self._aor(table_name, aor)
        bindings = await self.location.contacts(key)
        if not bindings:
            raise MIError(404, "AOR not found")
        now = self._now()
        return {"AOR": key, "Contacts": [contact_json(b, now) for b in bindings]}

    async def ul_rm(self, table_name: Any, aor: Any) -> str:
        key = self._aor(table_name, aor)
        await self.location.remove(key)
        return "OK"  # as OpenSIPS: removing an AoR that is not there is no error

    async def ul_rm_contact(self, table_name: Any, aor: Any, contact: Any) -> str:
        key = self._aor(table_name, aor)
        if not isinstance(contact, str) or not contact.strip():
            raise invalid_params("contact must be a non-empty string")
        bindings = await self.location.contacts(key)
        if not bindings:
            raise MIError(404, "AOR not found")
        text = contact.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        wanted = None
        try:
            from ..sip.uri import parse_uri

            wanted = parse_uri(text)
        except Exception:  # not a URI: only an exact string can match
            wanted = None
        match = next((b for b in bindings if str(b.uri) == text or (wanted is not None and b.uri == wanted)), None)
        if match is None:
            raise MIError(404, "Contact not found")
        await self.location.remove(key, match.uri)
        return "OK"

    # -- statistics ----------------------------------------------------------------------------------
    def statistics(self) -> list[Stat]:
        """Every statistic of the parts running now, in ``list_statistics`` order."""
        parts = self.parts
        node = parts.node
        s = node.stats
        location = self.location
        out = [
            _counter("core", "rcv_requests", s, "requests"),
            _counter("core", "rcv_replies", s, "responses"),
            _counter("core", "drop_requests", s, "dropped"),
            _counter("core", "err_requests", s, "route_errors"),
            _gauge("core", "timestamp", lambda: int(self.wall() - self.started_at)),
            _counter("tm", "UAS_transactions", s, "relayed"),
            _gauge("tm", "inuse_transactions", lambda: len(node.table)),
            _counter("sl", "sent_replies", s, "replied"),
            _gauge("usrloc", "registered_users", lambda: len(location)),
            _gauge("usrloc", "location-users", lambda: len(location)),
            _gauge("usrloc", "location-contacts", self._contact_count),
        ]
        settings = parts.registrar.settings
        out += [
            _gauge("registrar", "max_expires", lambda: settings.max_expires),
            _gauge("registrar", "max_contacts", lambda: settings.max_contacts),
            _gauge("registrar", "default_expire", lambda: settings.default_expires),
        ]
        auth = getattr(node, "auth", None)
        if auth is not None:
            out += [_counter("auth", name, auth.stats) for name in list(auth.stats)]
        flood = getattr(node, "flood", None)
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
        federation = getattr(parts, "federation", None)
        publisher = getattr(federation, "publisher", None)
        if publisher is not None:
            out += [_counter("federation", name, publisher.stats) for name in list(publisher.stats)]
        locator = getattr(node, "locator", None)
        if isinstance(getattr(locator, "stats", None), dict):
            out += [_counter("dns", name, locator.stats) for name in list(locator.stats)]
        return out

    def _contact_count(self) -> int:
        """Contacts stored: O(1) from the in-memory table's counter (like ``len``, it may hold contacts
        expired since the expiry timer last ran, which it does at once on a running reactor)."""
        location = self.location
        count = getattr(location, "binding_count", None)
        if count is not None:
            return int(count)
        get = getattr(location, "get", None)
        return sum(len(get(aor)) for aor in location.aors()) if get is not None else 0

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

    # -- clusterer, pike -----------------------------------------------------------------------------
    def clusterer_list(self) -> dict[str, Any]:
        from ..cluster import LinkState

        cluster = self.parts.cluster
        clusters = []
        for cluster_id in cluster.clusters:
            nodes = []
            for row in cluster.nodes(cluster_id):
                state = cluster.link_state(row.node_id, cluster_id)
                up = cluster.is_up(row.node_id, cluster_id)
                link = "Up" if up else "Down" if state is LinkState.DOWN or not row.enabled else "Probe"
                nodes.append({
                    "node_id": row.node_id,
                    "url": row.url,
                    "link_state": link,
                    "next_hop": str(row.node_id) if up else "none",
                    "description": row.description or "none",
                    "state": "enabled" if row.enabled else "disabled",
                    "sip_addr": row.sip_addr or "",
                })
            clusters.append({"cluster_id": cluster_id, "Nodes": nodes})
        return {"Clusters": clusters}

    def pike_list(self) -> dict[str, Any]:
        return {"IPs": list(self.parts.node.flood.blocked())}

    # -- core ----------------------------------------------------------------------------------------
    def uptime(self) -> dict[str, str]:
        now = self.wall()
        return {"Now": time.ctime(now), "Up since": time.ctime(self.started_at),
                "Up time": f"{int(now - self.started_at)} [sec]"}

    def version(self) -> dict[str, str]:
        from twisted import __version__ as twisted_version

        from .. import __version__

        return {"Server": f"edgeproxy {__version__} (Twisted {twisted_version}, "
                          f"Python {platform.python_version()}, {platform.machine()}/{platform.system().lower()})"}

    def which(self, command: Any = None) -> list[Any]:
        if command is None:
            return self.names()
        found = self.command(command) if isinstance(command, str) else None
        if found is None:
            raise MIError(404, "unknown MI command")
        return [list(recipe) for recipe in found.recipes]

    def help(self, mi_cmd: Any = None) -> Any:
        if mi_cmd is None:
            return "Usage: help mi_cmd - returns information about 'mi_cmd'"
        found = self.command(mi_cmd) if isinstance(mi_cmd, str) else None
        if found is None:
            raise MIError(404, "unknown MI command")
        return {"Help": found.help, "Exported by": found.module}

    def _process_type(self) -> str:
        return "edgeproxy node (SIP, timers and MI on one Twisted reactor)"

    def ps(self) -> dict[str, Any]:
        return {"Processes": [{"ID": 0, "PID": os.getpid(), "Type": self._process_type()}]}

    def log_level(self, level: Any = None, pid: Any = None) -> dict[str, Any]:
        control = self.log_control
        if level is None:
            current = control.level
            return {"Processes": [{"PID": os.getpid(), "Log level": opensips_level(current),
                                   "Log level name": level_name(current), "Type": self._process_type()}]}
        if pid is not None:
            try:
                same = int(pid) == os.getpid()
            except (TypeError, ValueError):
                same = False
            if not same:
                raise invalid_params("Bad PID")
        try:
            new = control.set(level)
        except ValueError as exc:
            raise invalid_params(str(exc)) from None
        except LookupError as exc:
            raise MIError(500, "Log level not changed", str(exc)) from None
        key = "Log level" if pid is not None else "New global log level"
        return {key: opensips_level(new), "Log level name": level_name(new)}


def _short(params: Any, limit: int = 200) -> str:
    text = repr(params) if not isinstance(params, Mapping) else repr(dict(params))
    return text if len(text) <= limit else text[: limit - 3] + "..."
