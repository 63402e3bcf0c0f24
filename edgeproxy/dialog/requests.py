"""The requests the node sends itself in a dialog: the BYEs that end it (OpenSIPS
``dlg_req_within.c: send_leg_bye``) and the OPTIONS pings of ``create_dialog("Pp")``.

Each is built from what the node saw, as the party it stands in for would have built it (RFC 3261
§12.2.1.1, §15.1.1): Request-URI the other party's remote target, Route the route set beyond this
node, From/To with the dialog's tags, the Call-ID, and a CSeq number above any the receiving party
has seen in the dialog (§12.2.1.1: a new request's CSeq MUST be larger). The number is the table's
choice (:class:`~edgeproxy.dialog.table.DialogTable`): the next of the party the node speaks for, or,
once the node has pinged the receiving party, the next of the node's own numbers to it (OpenSIPS
``last_gen_cseq``; the table then renumbers what the other party sends it). Our Via is added by
whoever sends it (it depends on the listener that faces the destination).
"""

from __future__ import annotations

from typing import Iterable

from ..sip.message import Headers, Request
from .model import Dialog

__all__ = ["to_callee", "to_caller"]


def _request(method: str, uri: str, routes: tuple[str, ...], from_hdr: str, to_hdr: str, call_id: str, cseq: int,
             extra: Iterable[tuple[str, str]]) -> Request:
    h = Headers()
    for r in routes:
        h.add("Route", r)
    h.add("Max-Forwards", "70")
    h.add("From", from_hdr)
    h.add("To", to_hdr)
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {method}")
    for name, value in extra:
        h.add(name, value)
    h.add("Content-Length", "0")
    return Request(method, uri, h)


def to_callee(method: str, dialog: Dialog, cseq: int, extra: Iterable[tuple[str, str]] = ()) -> Request:
    """A request to the callee as the caller would send it (a BYE, a ``p`` ping), CSeq ``cseq``."""
    assert dialog.callee_contact is not None and dialog.callee_tag is not None
    return _request(method, dialog.callee_contact, dialog.callee_routes, dialog.from_hdr,
                    f"{dialog.to_hdr};tag={dialog.callee_tag}", dialog.call_id, cseq, extra)


def to_caller(method: str, dialog: Dialog, cseq: int, extra: Iterable[tuple[str, str]] = ()) -> Request:
    """A request to the caller as the callee would send it (a BYE, a ``P`` ping): From the dialog's
    To with the callee's tag, To the INVITE's From, CSeq ``cseq``."""
    assert dialog.callee_tag is not None
    return _request(method, dialog.caller_contact, dialog.caller_routes, f"{dialog.to_hdr};tag={dialog.callee_tag}",
                    dialog.from_hdr, dialog.call_id, cseq, extra)
