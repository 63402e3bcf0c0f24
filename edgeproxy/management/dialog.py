"""The dialog commands of the MI (OpenSIPS's dialog module): ``dlg_list``, ``dlg_end_dlg``,
``profile_get_size``, ``profile_list_dlgs``, over the node's dialog table, in OpenSIPS 3.x's JSON
shapes (``dlg_hash.c: internal_mi_print_dlg``, ``dlg_profile.c``)."""

from __future__ import annotations

import time
from typing import Any

from ..dialog import Dialog, DialogTable
from .parts import DialogControl, NodeParts
from .rpc import MIError, invalid_params

__all__ = ["DialogCommands", "dialog_json", "DialogControl"]


def _date(epoch: float) -> str:
    return time.ctime(epoch) if epoch else ""


def dialog_json(dlg: Dialog) -> dict[str, Any]:
    """One dialog as ``dlg_list`` prints it (the CSeq keys are crossed as in OpenSIPS: the dialog's
    ``callee_cseq`` beside the caller's fields, the ``caller_cseq`` in the callee's)."""
    caller_flow = dlg.caller_flow
    callee_flow = dlg.callee_flow
    out: dict[str, Any] = {
        "ID": dlg.did,
        "db_id": dlg.db_id,
        "state": int(dlg.state),
        "user_flags": 0,
        "timestart": int(dlg.start),
        "datestart": _date(dlg.start),
        "timeout": int(dlg.timeout_at),
        "dateout": _date(dlg.timeout_at),
        "callid": dlg.call_id,
        "from_uri": _uri(dlg.from_hdr),
        "to_uri": _uri(dlg.to_hdr),
        "caller_tag": dlg.caller_tag,
        "caller_contact": dlg.caller_contact,
        "callee_cseq": str(dlg.callee_cseq),
        "caller_route_set": ",".join(dlg.caller_routes),
        "caller_bind_addr": str(caller_flow.local) if caller_flow is not None else None,
        "CALLEES": [],
    }
    if dlg.callee_tag is not None:
        out["CALLEES"].append({
            "callee_tag": dlg.callee_tag,
            "callee_contact": dlg.callee_contact,
            "caller_cseq": str(dlg.caller_cseq),
            "callee_route_set": ",".join(dlg.callee_routes),
            "callee_bind_addr": str(callee_flow.local) if callee_flow is not None else None,
        })
    return out


def _uri(header: str) -> str:
    """The URI of a From/To header value (the text between ``<>``, or up to the first ``;``)."""
    start = header.find("<")
    if start >= 0:
        end = header.find(">", start)
        return header[start + 1:end if end > 0 else None]
    return header.split(";", 1)[0].strip()


def _extra_headers(text: Any) -> list[tuple[str, str]]:
    """``extra_hdrs`` of ``dlg_end_dlg``: header lines ("Name: value", CRLF-separated)."""
    if text is None:
        return []
    if not isinstance(text, str):
        raise invalid_params("extra_hdrs must be a string of header lines")
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(c in name.strip() for c in " \t") or "\r" in value:
            raise invalid_params(f"extra_hdrs: not a header line: {line!r}")
        out.append((name.strip(), value.strip()))
    return out


class DialogCommands:
    """The dialog commands, over ``parts.node.dialogs`` (a part of :class:`~.commands.MICommands`)."""

    parts: NodeParts

    def _dialogs(self) -> DialogControl:
        return self.parts.node.dialogs

    def dlg_list(self, callid: Any = None, from_tag: Any = None) -> dict[str, Any]:
        """``dlg_list [callid [from_tag]]``: every dialog, or those of a Call-ID (and caller tag)."""
        table = self._dialogs().table
        if callid is not None and not isinstance(callid, str) or from_tag is not None and not isinstance(from_tag, str):
            raise invalid_params("callid and from_tag must be strings")
        dialogs = [d for d in table if (callid is None or d.call_id == callid)
                   and (from_tag is None or d.caller_tag == from_tag)]
        return {"Dialogs": [dialog_json(d) for d in dialogs]}

    def dlg_end_dlg(self, dialog_id: Any, extra_hdrs: Any = None) -> str:
        """``dlg_end_dlg dialog_id [extra_hdrs]``: BYE both ways for a confirmed dialog named by its
        ID or Call-ID, CANCEL towards the callee for an early one; 404 when there is none."""
        if not isinstance(dialog_id, str) or not dialog_id:
            raise invalid_params("dialog_id must be a dialog ID or a Call-ID")
        extra = _extra_headers(extra_hdrs)
        control = self._dialogs()
        found = control.table.find(dialog_id.strip())
        if not found:
            raise MIError(404, "Requested Dialog not found")
        ended = [d for d in found if control.end(d, "MI Termination", extra)]
        if not ended:
            raise MIError(500, "Failed to end dialog")
        return "OK"

    def _profile(self, profile: Any, value: Any) -> tuple[DialogTable, str, str | None]:
        table = self._dialogs().table
        if not isinstance(profile, str) or (value is not None and not isinstance(value, str)):
            raise invalid_params("profile and value must be strings")
        if profile not in table.profiles.counts:
            raise MIError(404, "Profile not found")
        return table, profile, value

    def profile_get_size(self, profile: Any, value: Any = None) -> dict[str, Any]:
        """``profile_get_size profile [value]``."""
        table, name, val = self._profile(profile, value)
        return {"Profile": {"name": name, "value": val, "count": table.profile_size(name, val),
                            "shared": "no", "replicated": "yes" if name in table.profiles.replicated else "no"}}

    def profile_list_dlgs(self, profile: Any, value: Any = None) -> dict[str, Any]:
        """``profile_list_dlgs profile [value]``: the dialogs in the profile, as ``dlg_list``."""
        table, name, val = self._profile(profile, value)
        return {"Dialogs": [dialog_json(d) for d in table.profile_dialogs(name, val)]}
