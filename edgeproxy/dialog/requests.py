"""The requests the node sends itself in a dialog: the BYEs that end it (OpenSIPS
``dlg_req_within.c: send_leg_bye``) and the OPTIONS pings of ``create_dialog("Pp")``.

Each is built from what the node saw, as the party it stands in for would have built it (RFC 3261
§12.2.1.1, §15.1.1): Request-URI the other party's remote target, Route the route set beyond this
node, From/To with the dialog's tags, the Call-ID, and the next CSeq number of the party it speaks for.
A ping reuses that party's *last* CSeq number instead (0 when it sent none): it must not take a
number the party itself will use next, which would make the other side refuse that party's next
request as out of order (§12.2.2). OpenSIPS increments the CSeq and rewrites those of the later
requests; a UA that answers a repeated number with 500 is alive all the same (any answer but 408 and
481 is). Our Via is added by whoever sends it (it depends on the listener that faces the destination).
"""

from __future__ import annotations

from typing import Iterable

from ..sip.message import Headers, Request
from .model import Dialog

__all__ = ["bye_to_callee", "bye_to_caller", "ping_to_callee", "ping_to_caller"]


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


def bye_to_callee(dialog: Dialog, extra: Iterable[tuple[str, str]] = ()) -> Request:
    """The BYE the caller would send: the caller's next CSeq (the dialog's ``caller_cseq`` is then
    advanced by the table, so a later request of ours does not reuse it)."""
    assert dialog.callee_contact is not None and dialog.callee_tag is not None
    return _request("BYE", dialog.callee_contact, dialog.callee_routes, dialog.from_hdr,
                f"{dialog.to_hdr};tag={dialog.callee_tag}", dialog.call_id, dialog.caller_cseq + 1, extra)


def bye_to_caller(dialog: Dialog, extra: Iterable[tuple[str, str]] = ()) -> Request:
    """The BYE the callee would send: From the dialog's To with the callee's tag, To the INVITE's
    From, the callee's next CSeq (1 when the callee never sent a request: the caller has no remote
    sequence number yet, §12.2.2)."""
    assert dialog.callee_tag is not None
    return _request("BYE", dialog.caller_contact, dialog.caller_routes, f"{dialog.to_hdr};tag={dialog.callee_tag}",
                    dialog.from_hdr, dialog.call_id, dialog.callee_cseq + 1, extra)


def ping_to_callee(dialog: Dialog) -> Request:
    """The OPTIONS ping of the callee (``create_dialog("p")``), as from the caller, with the
    caller's last CSeq number (see the module docstring)."""
    assert dialog.callee_contact is not None and dialog.callee_tag is not None
    return _request("OPTIONS", dialog.callee_contact, dialog.callee_routes, dialog.from_hdr,
                    f"{dialog.to_hdr};tag={dialog.callee_tag}", dialog.call_id, dialog.caller_cseq, ())


def ping_to_caller(dialog: Dialog) -> Request:
    """The OPTIONS ping of the caller (``create_dialog("P")``), as from the callee, with the
    callee's last CSeq number (0 when it sent none: never above its first request's)."""
    assert dialog.callee_tag is not None
    return _request("OPTIONS", dialog.caller_contact, dialog.caller_routes,
                    f"{dialog.to_hdr};tag={dialog.callee_tag}", dialog.from_hdr, dialog.call_id, dialog.callee_cseq, ())
