"""How the node's log lines look: the message context on every text line, or one JSON object per line.

Lines about a SIP message carry ``call_id`` and ``tx`` as event keys
(:func:`edgeproxy.logcontext.message_context`), whatever their wording. :class:`ContextObserver`
puts them after the text of the line (``... [call_id=a84b4c76e66710 tx=z9hG4bK776asdhds]``) unless
the line's format already shows them, so an operator can ``grep`` one call's lines out of the log.
:func:`json_line` is the ``[node] log_format = "json"`` line for log shippers (Loki, Elasticsearch,
Vector ...): ``time`` (ISO 8601, UTC), ``level``, ``namespace``, ``message`` (the text line), the
event's own fields (``call_id``, ``tx``, ``flow``, ``method`` ...; values that are not JSON become
their text) and ``traceback`` for a failure. :func:`json_observer` writes those to a file.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, formatEvent
from zope.interface import implementer

__all__ = ["ContextObserver", "json_line", "json_observer", "CONTEXT_KEYS"]

#: The message context, in the order the text line shows it.
CONTEXT_KEYS = ("call_id", "tx")
# keys of Twisted's (and legacy twisted.python.log's) own, not the event's fields
_OWN = frozenset({"format", "message", "isError", "system", "time", "why", "failure", "log_trace"})


@implementer(ILogObserver)
class ContextObserver:
    """Hands every event to ``observer``, those with a message context with it shown after their text."""

    def __init__(self, observer: ILogObserver) -> None:
        self.observer = observer

    def __call__(self, event: dict[str, Any]) -> None:
        fmt = event.get("log_format")
        if isinstance(fmt, str) and any(k in event for k in CONTEXT_KEYS):
            shown = [f"{k}={{{k}}}" for k in CONTEXT_KEYS if k in event and f"{{{k}}}" not in fmt]
            if shown:
                event = dict(event, log_format=f"{fmt} [{' '.join(shown)}]")
        self.observer(event)


def _value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def json_line(event: dict[str, Any]) -> str | None:
    """One event as a line of JSON (see the module docstring)."""
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0.0), timezone.utc).isoformat(timespec="milliseconds"),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _OWN or key in out:
            continue
        out[key] = _value(value)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            out["traceback"] = failure.getTraceback()
        except Exception:  # a failure that cannot print itself still leaves its line
            out["traceback"] = repr(failure)
    return json.dumps(out, ensure_ascii=False) + "\n"


def json_observer(out: IO[Any]) -> ILogObserver:
    """Writes :func:`json_line` s to ``out`` (a file or twistd's log file)."""
    return FileLogObserver(out, json_line)
