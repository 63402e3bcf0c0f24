"""The MI commands: what OpenSIPS's Management Interface answers, over a running node's parts.

No HTTP here (see :mod:`edgeproxy.management.http`): :class:`MICommands` takes the parts of a
:class:`~edgeproxy.service.RunningNode` (any :class:`~.parts.NodeParts`: ``node``, ``location``,
``registrar`` and, when they run, ``cluster``, ``federation``) and :meth:`MICommands.execute` runs one
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
  ``ul_sync table_name [aor]`` -- only with SQL persistence (``[usrloc]``): rewrite the SQL table
  from memory now (or one AoR's rows). ``ul_cluster_sync`` -- only with full sharing: pull the table
  from a peer.
* ``get_statistics statistics``, ``list_statistics [statistics]``, ``reset_statistics statistics``
  [core] -- our counters under OpenSIPS-like ``group:name`` keys (:data:`STATISTICS` is the table).
* ``ds_list [full]``, ``ds_set_state state group address``, ``ds_reload [inherit_state]`` [dispatcher]
  -- with ``[dispatcher]`` only (:mod:`.dispatcher`).
* ``address_reload [partition]``, ``address_dump [partition]``, ``subnet_dump [partition]``
  [permissions] -- only with address groups (:mod:`.permissions`).
* ``dlg_list [callid [from_tag]]``, ``dlg_end_dlg dialog_id [extra_hdrs]``, ``profile_get_size profile
  [value]``, ``profile_list_dlgs profile [value]`` [dialog] -- :mod:`.dialog`'s.
* ``clusterer_list`` [clusterer] -- only while a cluster runs; ``pike_list`` [pike] -- only with
  ``[pike]``.
* ``uptime``, ``version``, ``which [command]``, ``help [mi_cmd]``, ``ps``, ``log_level [level [pid]]``
  [core].

This module holds the command table, the dispatch and the core, clusterer and pike commands; the usrloc
commands are :mod:`.usrloc`'s, the statistics :mod:`.statistics`', the JSON-RPC vocabulary (errors,
parameter recipes) :mod:`.rpc`'s.
"""

from __future__ import annotations

import inspect
import os
import platform
import time
from typing import Any, Callable, Mapping

from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .dialog import DialogCommands
from .dispatcher import DispatcherCommands
from .loglevel import LogLevelControl, level_name, opensips_level
from .parts import NodeParts
from .permissions import PermissionsCommands
from .rpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SERVER_ERROR,
    Command,
    MIError,
    invalid_params,
)
from .statistics import STATISTICS, Stat, StatisticsCommands
from .usrloc import ALL_METHODS, TABLE, UsrlocCommands, contact_json, methods_mask

__all__ = [
    "MIError", "MICommands", "Command", "Stat", "STATISTICS", "NodeParts", "ALL_METHODS", "TABLE",
    "contact_json", "methods_mask",
    "PARSE_ERROR", "INVALID_REQUEST", "METHOD_NOT_FOUND", "INVALID_PARAMS", "SERVER_ERROR",
]

log = Logger(namespace="edgeproxy.management")

#: One row of the command table: name, recipes, the function, help text, whether it changes state.
_Row = tuple[str, tuple[tuple[str, ...], ...], Callable[..., Any], str, bool]


class MICommands(UsrlocCommands, StatisticsCommands, DispatcherCommands, PermissionsCommands,
                 DialogCommands):
    """The MI commands over the running node ``parts`` (see the module docstring).

    Parts are read when a command runs, so a cluster or federation started after this object was
    built is seen. ``log_control`` moves the log level (default: a :class:`LogLevelControl` over the
    filter twistd logs through); ``wall`` is the wall clock for ``uptime`` (``time.time``), and the
    start time is when this object was built.
    """

    def __init__(self, parts: NodeParts, *, log_control: LogLevelControl | None = None,
                 wall: Callable[[], float] = time.time, started_at: float | None = None) -> None:
        self.parts = parts
        self.wall = wall
        self.started_at = wall() if started_at is None else started_at
        if log_control is None:
            config = parts.config
            initial = config.node.log_level if config is not None else "info"
            log_control = LogLevelControl(node=parts.node, initial=initial)
        self.log_control = log_control
        self._commands: dict[str, Command] = {}
        for command in self._table():
            self._commands[command.name] = command

    # -- registry ------------------------------------------------------------------------------------
    def _table(self) -> list[Command]:
        def has_cluster() -> bool:
            return self.parts.cluster is not None

        def has_persistence() -> bool:
            return self.parts.persistence is not None

        def has_permissions() -> bool:
            return self.parts.permissions is not None

        def has_replication() -> bool:
            return self.parts.replication is not None

        def has_pike() -> bool:
            return self.parts.node.flood is not None

        def has_dispatcher() -> bool:
            return self.parts.dispatcher is not None

        usrloc: list[_Row] = [
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
        commands.append(Command("ul_sync", (("table_name",), ("table_name", "aor")), self.ul_sync,
                                "writes the location table (or one AoR) to the SQL table now", "usrloc",
                                changes=True, available=has_persistence))
        dialog: list[_Row] = [
            ("dlg_list", ((), ("callid",), ("callid", "from_tag")), self.dlg_list,
             "lists the dialogs (of a Call-ID, and caller tag)", False),
            ("dlg_end_dlg", (("dialog_id",), ("dialog_id", "extra_hdrs")), self.dlg_end_dlg,
             "ends a confirmed dialog with a BYE to both sides", True),
            ("profile_get_size", (("profile",), ("profile", "value")), self.profile_get_size,
             "counts the dialogs of a profile (with a value)", False),
            ("profile_list_dlgs", (("profile",), ("profile", "value")), self.profile_list_dlgs,
             "lists the dialogs of a profile (with a value)", False),
        ]
        for name, recipes, run, text, changes in dialog:
            commands.append(Command(name, recipes, run, text, "dialog", changes=changes))
        commands.append(Command("ul_cluster_sync", ((),), self.ul_cluster_sync,
                                "pulls the whole location table from another node of the cluster", "usrloc",
                                changes=True, available=has_replication))
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
            Command("ds_list", ((), ("full",), ("partition",), ("full", "partition")), self.ds_list,
                    "lists the dispatcher's destinations and their states", "dispatcher", available=has_dispatcher),
            Command("ds_set_state", (("state", "group", "address"),), self.ds_set_state,
                    "sets a destination's state: a(ctive), i(nactive), p(robing)", "dispatcher",
                    available=has_dispatcher, changes=True),
            Command("ds_reload", ((), ("partition",), ("inherit_state",), ("partition", "inherit_state")),
                    self.ds_reload, "reads the destinations again", "dispatcher", available=has_dispatcher,
                    changes=True),
            Command("address_reload", ((), ("partition",)), self.address_reload,
                    "reloads the address table (trusted address groups)", "permissions", available=has_permissions,
                    changes=True),
            Command("address_dump", ((), ("partition",)), self.address_dump,
                    "lists the host rows of the address groups", "permissions", available=has_permissions),
            Command("subnet_dump", ((), ("partition",)), self.subnet_dump,
                    "lists the subnet rows of the address groups", "permissions", available=has_permissions),
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

    # -- clusterer, pike -----------------------------------------------------------------------------
    def clusterer_list(self) -> dict[str, Any]:
        from ..cluster import LinkState

        cluster = self.parts.cluster
        if cluster is None:  # stopped since the command was looked up
            return {"Clusters": []}
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
        flood = self.parts.node.flood
        return {"IPs": list(flood.blocked()) if flood is not None else []}

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
