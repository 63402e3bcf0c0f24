"""The management interface: OpenSIPS's MI (JSON-RPC 2.0 over HTTP, ``mi_http``) for a node.

* :mod:`.commands` -- :class:`MICommands`: ``ul_dump``, ``ul_show_contact``, ``ul_rm``,
  ``ul_rm_contact``, ``get_statistics``, ``list_statistics``, ``reset_statistics``, ``clusterer_list``,
  ``pike_list``, ``uptime``, ``version``, ``which``, ``help``, ``ps``, ``log_level`` over a running
  node's parts, answering what OpenSIPS answers: the command table, dispatch and the core commands;
  :mod:`.usrloc` (the ``ul_*`` commands), :mod:`.dispatcher` (``ds_list``, ``ds_set_state``,
  ``ds_reload``) and :mod:`.statistics` (the counters and their commands) are its parts, :mod:`.rpc`
  the JSON-RPC vocabulary (:class:`MIError`, error codes, parameter recipes) and :mod:`.parts` what
  they read of a running node (:class:`~.parts.NodeParts`).
* :mod:`.http` -- the twisted.web resources at ``[mi] path`` and ``[metrics] path``,
  :func:`start_management` and :func:`start_metrics`.
* :mod:`.prometheus` -- the Prometheus collector over the statistics; :mod:`.metrics_settings` the
  ``[metrics]`` section.
* :mod:`.settings` -- :class:`MISettings`, the ``[mi]`` section (imported by the configuration, so
  this package loads twisted.web only when something else is asked for).
* :mod:`.loglevel` -- OpenSIPS's log levels onto the filter twistd logs through.
"""

from typing import Any

from .settings import MISettings

__all__ = ["MICommands", "MIError", "STATISTICS", "MIResource", "ManagementService", "start_management",
           "start_metrics", "LogLevelControl", "MISettings"]

_LAZY = {"MICommands": "commands", "MIError": "commands", "STATISTICS": "commands", "MIResource": "http",
         "ManagementService": "http", "start_management": "http", "start_metrics": "http",
         "LogLevelControl": "loglevel"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
