"""The BYEs the node sends itself to end a dialog (OpenSIPS ``dlg_req_within.c: send_leg_bye``).

Each is built from what the node saw, as the party it stands in for would have built it (RFC 3261
§12.2.1.1, §15.1.1): Request-URI the other party's remote target, Route the route set beyond this
node, From/To with the dialog's tags, the Call-ID, and the next CSeq number of the party it speaks for.
Our Via is added by whoever sends it (it depends on the listener that faces the destination).
"""

from __future__ import annotations

from typing import Iterable

from ..sip.message import Headers, Request
from .model import Dialog

__all__ = ["bye_to_callee", "bye_to_caller"]


def _bye(uri: str, routes: tuple[str, ...], from_hdr: str, to_hdr: str, call_id: str, cseq: int,
         extra: Iterable[tuple[str, str]]) -> Request:
    h = Headers()
    for r in routes:
        h.add("Route", r)
    h.add("Max-Forwards", "70")
    h.add("From", from_hdr)
    h.add("To", to_hdr)
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} BYE")
    for name, value in extra:
        h.add(name, value)
    h.add("Content-Length", "0")
    return Request("BYE", uri, h)


def bye_to_callee(dialog: Dialog, extra: Iterable[tuple[str, str]] = ()) -> Request:
    """The BYE the caller would send: the caller's next CSeq (the dialog's ``caller_cseq`` is then
    advanced by the table, so a later request of ours does not reuse it)."""
    assert dialog.callee_contact is not None and dialog.callee_tag is not None
    return _bye(dialog.callee_contact, dialog.callee_routes, dialog.from_hdr,
                f"{dialog.to_hdr};tag={dialog.callee_tag}", dialog.call_id, dialog.caller_cseq + 1, extra)


def bye_to_caller(dialog: Dialog, extra: Iterable[tuple[str, str]] = ()) -> Request:
    """The BYE the callee would send: From the dialog's To with the callee's tag, To the INVITE's
    From, the callee's next CSeq (1 when the callee never sent a request: the caller has no remote
    sequence number yet, §12.2.2)."""
    assert dialog.callee_tag is not None
    return _bye(dialog.caller_contact, dialog.caller_routes, f"{dialog.to_hdr};tag={dialog.callee_tag}",
                dialog.from_hdr, dialog.call_id, dialog.callee_cseq + 1, extra)
