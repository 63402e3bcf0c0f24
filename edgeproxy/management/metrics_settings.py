"""``[metrics]``: the Prometheus exposition's settings (OpenSIPS ``prometheus`` module: ``root``, ``prefix``).

Off without the section. With it, ``GET <path>`` answers the text exposition format on the MI's HTTP
listener (``[mi] listen``, OpenSIPS's ``httpd`` serving both ``mi_http`` and ``prometheus``), or on
a listener of its own when ``listen`` names one. Unlike OpenSIPS's ``statistics`` parameter, every
statistic is exported: nothing needs listing. :data:`SECTION` is the ``[metrics]`` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config_error import ConfigError
from ..config_schema import Context, Section, boolean, show
from .settings import check_listen, check_path, parse_mi_listen

__all__ = ["MetricsSettings", "SECTION"]


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``.

    * ``listen`` -- ``host:port`` of a listener for the metrics alone; ``""``: the MI's listener.
    * ``path`` -- the HTTP path (OpenSIPS ``root``, "metrics").
    * ``prefix`` -- the first part of every metric's name (OpenSIPS ``prefix``, "opensips").
    * ``process`` -- also the process's CPU seconds, resident memory, open files and start time
      (``process_*``, prometheus-client's process collector).
    """

    listen: str = ""
    path: str = "/metrics"
    prefix: str = "edgeproxy"
    process: bool = True

    def __post_init__(self) -> None:
        if self.listen:
            parse_mi_listen(self.listen)
        if not self.path.startswith("/"):
            raise ValueError("path must start with /")

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of ``listen``."""
        return parse_mi_listen(self.listen)


def _prefix(key: str, value: Any, ctx: Context) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", value):
        raise ConfigError(key, f"must be a metric name prefix (letters, digits, _), got {show(value)}")
    return value


#: ``[metrics]``: present, it turns the Prometheus exposition on (the node holds None without it).
SECTION: Section[MetricsSettings] = Section(MetricsSettings, {
    "listen": check_listen,
    "path": check_path,
    "prefix": _prefix,
    "process": boolean,
}, optional=True)
