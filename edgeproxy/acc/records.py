"""Call records: what one call attempt or one ended call leaves (OpenSIPS ``acc``), as data and as rows.

A :class:`CallRecord` is written as one JSON line (:meth:`CallRecord.json`) and, with a database, as
one row of OpenSIPS's tables (``scripts/mysql/acc-create.sql``: ``acc`` v7 and ``missed_calls`` v5;
:meth:`CallRecord.acc_row`, :meth:`CallRecord.missed_row`), so OpenSIPS's billing and CDR tools read
them unchanged. Two kinds:

* ``attempt`` -- an INVITE's first final response (answered, busy, cancelled 487, unanswered 408/480,
  refused ...): ``time`` is when the INVITE arrived, ``setup_time`` the seconds to that response.
* ``cdr`` -- a call that was answered and has ended (its dialog, OpenSIPS's ``cdr`` flag): ``time``
  is when the 2xx established it, ``duration`` the seconds to its end (BYE, lifetime, MI), and
  ``setup_time`` from the INVITE's arrival to the 2xx.

No Twisted, no I/O: :mod:`.writers` writes them, :mod:`.accounting` makes them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["CallRecord", "ACC_COLUMNS", "MISSED_COLUMNS"]

#: OpenSIPS's ``acc`` columns (without ``id``), in the order :meth:`CallRecord.acc_row` gives them.
ACC_COLUMNS = ("method", "from_tag", "to_tag", "callid", "sip_code", "sip_reason", "time", "duration",
               "ms_duration", "setuptime", "created")
#: One encoder for every record (``json.dumps`` with options builds a new one per call); ASCII output,
#: the C encoder's fast path.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
#: OpenSIPS's ``missed_calls`` columns (without ``id``).
MISSED_COLUMNS = ("method", "from_tag", "to_tag", "callid", "sip_code", "sip_reason", "time", "setuptime", "created")


@dataclass(frozen=True)
class CallRecord:
    """One record (see the module docstring). Times are epoch seconds; ``source`` and ``destination``
    are ``transport:host:port`` (``destination`` empty when the node answered the INVITE itself)."""

    kind: str  # "attempt" or "cdr"
    method: str
    from_uri: str
    to_uri: str
    from_tag: str
    to_tag: str
    call_id: str
    sip_code: int
    sip_reason: str
    time: float
    setup_time: float
    duration: float
    source: str
    destination: str
    end_reason: str = ""  # cdr: OpenSIPS's $DLG_end_reason ("Upstream BYE", "Lifetime Timeout", ...)
    dialog: bool = False  # attempt: answered with a dialog, so a cdr record follows when it ends

    def json(self) -> str:
        """One line of JSON (no newline): every field, times as epoch seconds with milliseconds."""
        data: dict[str, Any] = {
            "kind": self.kind, "method": self.method, "from_uri": self.from_uri, "to_uri": self.to_uri,
            "from_tag": self.from_tag, "to_tag": self.to_tag, "call_id": self.call_id, "sip_code": self.sip_code,
            "sip_reason": self.sip_reason, "time": round(self.time, 3), "setup_time": round(self.setup_time, 3),
            "duration": round(self.duration, 3), "source": self.source, "destination": self.destination,
        }  # not dataclasses.asdict: it deep-copies every field, once per call on the message path
        if self.kind == "attempt":
            data["dialog"] = self.dialog
        else:
            data["end_reason"] = self.end_reason
        return _ENCODER.encode(data)

    @property
    def in_acc_table(self) -> bool:
        """Whether the record is an ``acc`` row: an ended call, or an answered one whose end will not
        be seen (no dialog: OpenSIPS without ``cdr`` writes the 2xx)."""
        return self.kind == "cdr" or (self.sip_code < 300 and not self.dialog)

    @property
    def missed(self) -> bool:
        """An attempt that got no 2xx: a row of ``missed_calls`` (OpenSIPS's ``missed`` flag)."""
        return self.kind == "attempt" and self.sip_code >= 300

    def _common(self) -> list[Any]:
        return [self.method[:16], self.from_tag[:64], self.to_tag[:64], self.call_id[:64], str(self.sip_code)[:3],
                self.sip_reason[:32]]

    def acc_row(self) -> tuple[Any, ...]:
        """The ``acc`` row: ``duration`` whole seconds rounded up as OpenSIPS does (``ms_duration``
        exact), ``setuptime`` whole seconds, ``created`` when the INVITE arrived."""
        ms = int(round(self.duration * 1000))
        created = self.time - self.setup_time if self.kind == "cdr" else self.time
        return (*self._common(), _datetime(self.time), math.ceil(ms / 1000), ms, int(self.setup_time),
                _datetime(created))

    def missed_row(self) -> tuple[Any, ...]:
        """The ``missed_calls`` row."""
        return (*self._common(), _datetime(self.time), int(self.setup_time), _datetime(self.time))


def _datetime(epoch: float) -> str:
    """A DATETIME in the node's local time, as OpenSIPS's db_mysql writes ``time_t`` values."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
