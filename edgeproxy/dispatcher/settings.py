"""``[dispatcher]``: OpenSIPS's dispatcher module parameters, and the destinations when no database
holds them::

    [dispatcher]
    db_url = ""                   # mysql://user:pw@host/opensips: OpenSIPS's dispatcher table; "": the rows below
    table_name = "dispatcher"
    persistent_state = true       # read the rows' state column (OpenSIPS persistent_state)
    ds_ping_interval = 0          # seconds between probes of a destination; 0: no probing
    ds_ping_method = "OPTIONS"
    ds_ping_from = "sip:dispatcher@localhost"
    ds_probing_threshold = 3      # failed probes (or ds_mark_dst("p")) before a destination is Probing
    ds_probing_mode = 0           # 0: probe only Probing destinations; 1: every destination not Inactive
    ds_probing_list = []          # set ids to probe; []: every set
    options_reply_codes = []      # probe replies that count as alive besides 200, e.g. [403, 501]
    probe_timeout = 5.0           # seconds a probe may go unanswered (then it failed, as tm's 408)
    cluster_probing_mode = "all"  # with [cluster]: "all" nodes probe every destination, or "distributed" (a share each)

    [[dispatcher.destinations]]   # one table per row of OpenSIPS's dispatcher table
    setid = 1
    destination = "sip:10.0.1.50:5060"
    weight = 1                    # socket, state, probe_mode, priority, attrs, description as in the table

:class:`DispatcherSettings` is what the section becomes. Present, it switches the ``ds_*`` route
verbs on (the node holds None without it, and the verbs then raise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .. import sqldb
from ..config_error import ConfigError
from ..config_schema import (
    Checker,
    Context,
    Section,
    boolean,
    choice,
    integer,
    seconds,
    show,
    table_rows,
    text,
    zero_or_seconds,
)
from ..sip.errors import SipValueError
from ..sip.uri import SipURI, parse_uri
from .table import COLUMNS, RowError, destination_from_row

__all__ = ["DispatcherSettings", "SECTION", "CLUSTER_PROBING_MODES"]

CLUSTER_PROBING_MODES = ("all", "distributed")


@dataclass(frozen=True)
class DispatcherSettings:
    """See the module docstring; ``destinations`` are the rows of the file (with ``db_url`` empty)."""

    db_url: str = ""
    table_name: str = "dispatcher"
    persistent_state: bool = True
    ds_ping_interval: float = 0.0
    ds_ping_method: str = "OPTIONS"
    ds_ping_from: str = "sip:dispatcher@localhost"
    ds_probing_threshold: int = 3
    ds_probing_mode: int = 0
    ds_probing_list: tuple[int, ...] = ()
    options_reply_codes: tuple[int, ...] = ()
    probe_timeout: float = 5.0
    cluster_probing_mode: str = "all"
    destinations: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.db_url and self.destinations:
            raise ValueError("give either db_url (the dispatcher table) or [[dispatcher.destinations]], not both")
        if self.ds_probing_threshold < 1:
            raise ValueError("ds_probing_threshold must be >= 1")
        if self.ds_probing_mode not in (0, 1):
            raise ValueError("ds_probing_mode must be 0 or 1")
        if self.cluster_probing_mode not in CLUSTER_PROBING_MODES:
            raise ValueError(f"cluster_probing_mode must be one of {', '.join(CLUSTER_PROBING_MODES)}")

    @property
    def probing(self) -> bool:
        return self.ds_ping_interval > 0

    def alive(self, status: int) -> bool:
        """Whether a probe's reply says the destination is alive: 200, or one of ``options_reply_codes``."""
        return status == 200 or status in self.options_reply_codes

    def probes_set(self, setid: int) -> bool:
        return not self.ds_probing_list or setid in self.ds_probing_list


def _method(key: str, value: Any, ctx: Context) -> str:
    if not isinstance(value, str) or not value.strip().isalpha() or len(value.strip()) > 32:
        raise ConfigError(key, f'must be a SIP method such as "OPTIONS", got {show(value)}')
    return value.strip().upper()


def _from_uri(key: str, value: Any, ctx: Context) -> str:
    uri = text(key, value, ctx).strip()
    try:
        ok = isinstance(parse_uri(uri), SipURI) and not any(c in uri for c in "<> \t\r\n")
    except SipValueError:
        ok = False
    if not ok:
        raise ConfigError(key, f'must be a sip: URI like "sip:dispatcher@localhost", got {show(value)}')
    return uri


def _ints(low: int, high: int) -> Checker:
    def check(key: str, value: Any, ctx: Context) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
                                                  for v in value):
            raise ConfigError(key, f"must be a list of integers from {low} to {high}, got {show(value)}")
        return tuple(value)
    return check


def _destination(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """A ``[[dispatcher.destinations]]`` row, kept as written once it makes a destination: the file is
    checked before anything starts, so a bad row here stops the node with one line (a bad row of the
    database table is logged and skipped instead)."""
    destination_from_row(row)
    return dict(row)


#: ``[dispatcher]``: present, it switches the dispatcher on (the node holds None without it).
SECTION: Section[DispatcherSettings] = Section(DispatcherSettings, {
    "db_url": sqldb.db_url_setting,
    "table_name": sqldb.table_setting,
    "persistent_state": boolean,
    "ds_ping_interval": zero_or_seconds,
    "ds_ping_method": _method,
    "ds_ping_from": _from_uri,
    "ds_probing_threshold": integer(1, 1000),
    "ds_probing_mode": integer(0, 1),
    "ds_probing_list": _ints(0, 2**31 - 1),
    "options_reply_codes": _ints(100, 699),
    "probe_timeout": seconds,
    "cluster_probing_mode": choice(*CLUSTER_PROBING_MODES),
    "destinations": table_rows(COLUMNS, _destination, RowError),
}, optional=True)
