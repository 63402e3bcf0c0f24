"""``[acc]``: call records (OpenSIPS ``acc``), as JSON lines to a file and/or rows of OpenSIPS's tables.

::

    [acc]
    file = "calls.jsonl"        # JSON lines, one record per call attempt and per ended call; "": none
    db_url = ""                 # mysql://user:pw@host/opensips: rows in OpenSIPS's acc/missed_calls tables
    table = "acc"               # OpenSIPS db_table_acc
    missed_table = "missed_calls"   # OpenSIPS db_table_missed_calls; "": no missed-call rows
    timeout = 5.0               # seconds a row's INSERT may take (then it is counted as failed, logged)

Off without the section; with it, at least one of ``file`` and ``db_url``. :data:`SECTION` is the table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .. import sqldb
from ..config_error import ConfigError
from ..config_schema import Context, Section, seconds, show

__all__ = ["AccSettings", "SECTION"]


@dataclass(frozen=True)
class AccSettings:
    """``[acc]`` (see the module docstring); ``file`` is absolute once loaded."""

    file: str = ""
    db_url: str = ""
    table: str = "acc"
    missed_table: str = "missed_calls"
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.file and not self.db_url:
            raise ValueError("acc needs file (JSON lines) or db_url (OpenSIPS's acc table), or both")


def _output_file(key: str, value: Any, ctx: Context) -> str:
    """A file to append to (relative to the config file's directory): its directory must exist."""
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a file path string, got {show(value)}")
    if not value.strip():
        return ""
    path = ctx.path(value.strip())
    if not os.path.isdir(os.path.dirname(path) or "."):
        raise ConfigError(key, f"no such directory for {show(path)}")
    return path


#: ``[acc]``: present, it turns call records on (the node holds None without it).
SECTION: Section[AccSettings] = Section(AccSettings, {
    "file": _output_file,
    "db_url": sqldb.db_url_setting,
    "table": sqldb.table_setting,
    "missed_table": sqldb.optional_table_setting,
    "timeout": seconds,
}, optional=True)
