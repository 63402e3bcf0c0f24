"""What a log line about a SIP message carries: :func:`message_context`.

The fields every log line about a message carries as event keys: ``call_id`` (the Call-ID, what an
operator searches for when a customer says "my call dropped") and ``tx`` (the top Via branch: the
RFC 3261 §17 transaction id, the same in a packet capture). The text log shows them after the
message (``[call_id=... tx=...]``, :mod:`edgeproxy.management.logformat`) and the JSON log as fields,
whatever the line's own wording. (How many lines hostile input may cause is
:class:`edgeproxy.proxy.noise.NoiseLog`'s.) No Twisted: the callers log with their own ``Logger``.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["message_context", "MessageContext"]


class MessageContext(TypedDict, total=False):
    """The fields of a log line about a message (each only when the message has it)."""

    call_id: str
    tx: str


def message_context(message: Any) -> MessageContext:
    """``{"call_id": ..., "tx": ...}`` of a parsed request or response; a header that cannot be read
    (the message is why the line is written) is left out rather than raising."""
    out: MessageContext = {}
    try:
        out["call_id"] = message.call_id
    except Exception:  # a missing or malformed Call-ID: the line says what is wrong with it
        pass
    try:
        branch = message.top_via.branch
        if branch:
            out["tx"] = branch
    except Exception:
        pass
    return out
