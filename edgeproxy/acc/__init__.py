"""Call records (OpenSIPS ``acc``): one record per call attempt and per ended call, as JSON lines to a
file and as rows of OpenSIPS's ``acc`` / ``missed_calls`` tables.

* :mod:`.records` -- :class:`CallRecord`, its JSON line and its rows (no I/O);
* :mod:`.accounting` -- :class:`Accounting`, which makes them from what the proxy core and the dialog
  table report;
* :mod:`.writers` -- :class:`JsonLinesFile` and :class:`AccTable`;
* :mod:`.settings` -- the ``[acc]`` section.
"""

from .accounting import Accounting, RecordWriter
from .records import ACC_COLUMNS, MISSED_COLUMNS, CallRecord
from .settings import AccSettings

__all__ = ["Accounting", "RecordWriter", "CallRecord", "AccSettings", "ACC_COLUMNS", "MISSED_COLUMNS",
           "accounting_for"]


def accounting_for(settings: AccSettings, clock: object, reactor: object = None) -> Accounting:
    """The node's :class:`Accounting` for ``[acc]``: its file and/or its tables."""
    from .writers import AccTable, JsonLinesFile

    writers: list[RecordWriter] = []
    if settings.file:
        writers.append(JsonLinesFile(settings.file))
    if settings.db_url:
        writers.append(AccTable(settings.db_url, settings.table, settings.missed_table, reactor=reactor,
                                timeout=settings.timeout))
    return Accounting(writers, clock)  # type: ignore[arg-type]
