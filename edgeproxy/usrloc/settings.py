"""``[usrloc]``: how the location table survives a restart, under OpenSIPS usrloc's names.

::

    [usrloc]
    working_mode_preset = "single-instance-no-db"   # or ...-sql-write-back / ...-sql-write-through
    # db_mode = 2            # OpenSIPS's deprecated spelling: 0 no-db, 1 write-through, 2 write-back
    db_url = ""              # "sqlite:///var/lib/edgeproxy/location.db" or "mysql://user:pw@host/opensips"
    table = "location"       # OpenSIPS's location table (3.x schema, version 1013)
    timer_interval = 60      # s between two write-back flushes (OpenSIPS timer_interval)
    # cluster_mode = "full-sharing"   # every contact on every node of [cluster] (preset "full-sharing-cluster")

The presets are OpenSIPS's (``modules/usrloc/README.md`` ``working_mode_preset``; reference
opensips-modules.md §6.1): ``single-instance-no-db`` keeps contacts in memory only (lost on restart);
``single-instance-sql-write-back`` writes what changed every ``timer_interval`` and once more on a
clean shutdown; ``single-instance-sql-write-through`` writes every change as soon as it is made and
answers a REGISTER once its row is committed (:mod:`edgeproxy.usrloc.writethrough`). Both
SQL modes load the unexpired contacts at start (``restart_persistency = load-from-sql``). ``db_mode``
0/1/2 are the same three; giving both is an error, as in OpenSIPS. ``sql-only`` (no memory cache) is
not offered: every lookup would wait on the database.

``full-sharing-cluster`` (or ``cluster_mode = "full-sharing"``, which may be combined with an SQL
``db_mode``) replicates every change of the table to the other nodes of ``[cluster]`` and pulls the
whole table from a live peer when a node starts or a peer comes back (``sync-from-cluster``); see
:mod:`edgeproxy.usrloc.replication`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..config_error import ConfigError
from ..config_schema import Context, Section, choice, integer, seconds, show, text
from ..sqldb import DatabaseURLError, parse_db_url, table_setting

__all__ = ["UsrlocSettings", "SECTION", "PRESETS", "NO_DB", "WRITE_THROUGH", "WRITE_BACK", "FULL_SHARING",
           "CLUSTER_MODES"]

NO_DB = "single-instance-no-db"
WRITE_THROUGH = "single-instance-sql-write-through"
WRITE_BACK = "single-instance-sql-write-back"
FULL_SHARING = "full-sharing-cluster"
PRESETS = (NO_DB, WRITE_THROUGH, WRITE_BACK, FULL_SHARING)
CLUSTER_MODES = ("none", "full-sharing")
_DB_MODES = {0: NO_DB, 1: WRITE_THROUGH, 2: WRITE_BACK}


@dataclass(frozen=True)
class UsrlocSettings:
    """``[usrloc]`` (see the module docstring). ``db_url`` is ``sqlite://<path>`` (an embedded file,
    no server; a relative path is relative to the configuration file) or ``mysql://...``."""

    working_mode_preset: str = ""
    db_mode: int | None = None
    db_url: str = ""
    table: str = "location"
    timer_interval: float = 60.0
    cluster_mode: str = "none"

    @property
    def full_sharing(self) -> bool:
        """Whether contacts are replicated to every node of the cluster (OpenSIPS ``full-sharing``)."""
        return self.preset == FULL_SHARING or self.cluster_mode == "full-sharing"

    @property
    def preset(self) -> str:
        """The working mode: the preset, else ``db_mode``'s, else memory only."""
        if self.working_mode_preset:
            return self.working_mode_preset
        if self.db_mode is not None:
            return _DB_MODES[self.db_mode]
        return NO_DB

    @property
    def sql_write_mode(self) -> str:
        """``"none"``, ``"write-through"`` or ``"write-back"`` (OpenSIPS ``sql_write_mode``)."""
        preset = self.preset
        return "write-through" if preset == WRITE_THROUGH else "write-back" if preset == WRITE_BACK else "none"

    @property
    def persistent(self) -> bool:
        return self.sql_write_mode != "none"

    @property
    def sqlite_path(self) -> str | None:
        """The database file of a ``sqlite://`` URL, else None."""
        url = self.db_url.strip()
        return url[len("sqlite://"):] if url.lower().startswith("sqlite://") else None

    @property
    def where(self) -> str:
        """The database for log lines (no password)."""
        path = self.sqlite_path
        if path is not None:
            return f"sqlite:{path} table {self.table}"
        return f"{parse_db_url(self.db_url).where} table {self.table}"


def _db_url(key: str, value: Any, ctx: Context) -> str:
    url = text(key, value, ctx).strip()
    if not url:
        return ""
    if url.lower().startswith("sqlite:"):
        path = url.split(":", 1)[1]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError(key, 'a sqlite URL names a file: "sqlite:///var/lib/edgeproxy/location.db"')
        return "sqlite://" + ctx.path(path)
    try:
        parse_db_url(url)
    except DatabaseURLError as exc:
        raise ConfigError(key, f"{exc} (or sqlite:///path/to/file.db), got {show(value)}") from None
    return url


def _one_mode(section: Section[UsrlocSettings], values: Mapping[str, Any]) -> None:
    if "db_mode" in values and "working_mode_preset" in values:
        raise ConfigError("usrloc.db_mode", "give working_mode_preset or the older db_mode, not both")


def _db_needed(settings: UsrlocSettings) -> None:
    if settings.persistent and not settings.db_url:
        key = "usrloc.db_mode" if not settings.working_mode_preset else "usrloc.working_mode_preset"
        raise ConfigError(key, f'"{settings.preset}" needs usrloc.db_url (sqlite:///path/location.db or mysql://...)')


SECTION: Section[UsrlocSettings] = Section(UsrlocSettings, {
    "working_mode_preset": choice(*PRESETS),
    "db_mode": integer(0, 2),
    "db_url": _db_url,
    "table": table_setting,
    "timer_interval": seconds,
    "cluster_mode": choice(*CLUSTER_MODES),
}, before=_one_mode, after=_db_needed)
