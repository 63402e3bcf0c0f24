"""One dialog as the node keeps it (OpenSIPS ``dlg_cell``), and who may listen to dialogs.

A :class:`Dialog` holds only what the node needs to recognise the dialog's requests and to end it
itself with a BYE to each side (RFC 3261 §12.2.1.1, §15.1.1): Call-ID, both tags, the INVITE's From
and To, both parties' remote targets (Contact), the route set towards each of them (the Record-Route
entries beyond this node, in the order a request to that party carries them), the last CSeq each
party used, and the connection each party is on when it came on one (a browser, a TLS phone): where
a request to a party goes is worked out from these only when the node sends one
(:class:`~edgeproxy.proxy.dialogs.DialogKeeper`). ``__slots__`` and plain strings keep it small
(``bench/dialog_memory.py`` measures it).

States are OpenSIPS's numbers (``dlg_hash.h``, ``$DLG_status``): 1 unconfirmed, 2 early,
3 confirmed without ACK, 4 confirmed, 5 deleted.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from ..sip.endpoint import Flow

if TYPE_CHECKING:  # pragma: no cover
    from ..sip.message import Response

__all__ = ["DialogState", "Dialog", "DialogListener", "FLAG_BYE_ON_TIMEOUT", "FLAG_PING_CALLER",
           "FLAG_PING_CALLEE", "FLAG_PINGING_CALLER", "FLAG_PINGING_CALLEE", "parse_flags"]


class DialogState(IntEnum):
    """OpenSIPS's dialog states (``DLG_STATE_*``)."""

    UNCONFIRMED = 1
    EARLY = 2
    CONFIRMED_NA = 3
    CONFIRMED = 4
    DELETED = 5


#: ``create_dialog("B")``: a confirmed dialog reaching its lifetime is ended with a BYE to both
#: sides; without it the dialog is forgotten silently (OpenSIPS ``dlg_hash.h`` DLG_FLAG_BYEONTIMEOUT)
FLAG_BYE_ON_TIMEOUT = 1
#: ``create_dialog("P")`` / ``("p")``: the caller / callee of a confirmed dialog gets an in-dialog
#: OPTIONS every ``options_ping_interval``; 408 or 481 (or no answer) ends the dialog with BYEs
FLAG_PING_CALLER = 2
FLAG_PING_CALLEE = 4
FLAG_BYE_SEEN = 0x100  # a BYE went through (a late 2xx must not revive the dialog)
FLAG_FAILED = 0x200  # ended by a negative final response (a late 2xx may revive it, §5.3)
FLAG_PINGING_CALLER = 0x400  # a ping to the caller is waiting for its answer
FLAG_PINGING_CALLEE = 0x800


def parse_flags(flags: str) -> int:
    """``create_dialog`` flags (``dlg_hash.h: parse_create_dlg_flags``): ``B`` and the OPTIONS ping
    flags ``P`` (caller) / ``p`` (callee) are kept; the re-INVITE pings ``R``/``r`` and ``E`` are
    not implemented and, like unknown letters in OpenSIPS, skipped."""
    return ((FLAG_BYE_ON_TIMEOUT if "B" in flags else 0) | (FLAG_PING_CALLER if "P" in flags else 0)
            | (FLAG_PING_CALLEE if "p" in flags else 0))


class Dialog:
    """One call leg pair seen through this node (see the module docstring). Fields are written only
    by :class:`~edgeproxy.dialog.table.DialogTable`; everything else reads them."""

    __slots__ = ("h_entry", "h_id", "call_id", "from_hdr", "to_hdr", "caller_tag", "callee_tag", "state", "flags",
                 "caller_cseq", "callee_cseq", "caller_contact", "callee_contact", "caller_routes", "callee_routes",
                 "caller_flow", "callee_flow", "caller_gen_cseq", "callee_gen_cseq", "caller_inv_cseq",
                 "callee_inv_cseq", "created", "start", "lifetime",
                 "timeout_at", "profiles")

    def __init__(self, h_entry: int, h_id: int, call_id: str, from_hdr: str, to_hdr: str, caller_tag: str,
                 caller_cseq: int, caller_contact: str, caller_routes: tuple[str, ...], caller_flow: Flow | None,
                 flags: int, created: float, lifetime: int) -> None:
        self.h_entry = h_entry
        self.h_id = h_id
        self.call_id = call_id
        self.from_hdr = from_hdr  # the INVITE's From, with the caller's tag
        self.to_hdr = to_hdr  # the INVITE's To, without a tag
        self.caller_tag = caller_tag
        self.callee_tag: str | None = None
        self.state = DialogState.UNCONFIRMED
        self.flags = flags
        self.caller_cseq = caller_cseq  # the last CSeq number the caller used (the INVITE's first)
        self.callee_cseq = 0  # the last CSeq number the callee used; 0: none seen yet
        self.caller_contact = caller_contact  # remote target of requests to the caller
        self.callee_contact: str | None = None
        self.caller_routes = caller_routes  # Route set of a request from here to the caller
        self.callee_routes: tuple[str, ...] = ()
        self.caller_flow = caller_flow  # the flow the INVITE came on (a connection for a browser or TLS phone)
        self.callee_flow: Flow | None = None  # the flow the answered branch of the INVITE was sent on
        # OpenSIPS's per-leg last_gen_cseq: the last CSeq number the node put in a request to the
        # caller / callee once it pinged that party (its pings take numbers of their own); 0: never
        # pinged, the requests relayed to the party keep their numbers (see DialogTable.relayed_cseq)
        self.caller_gen_cseq = 0
        self.callee_gen_cseq = 0
        # last_inv_gen_cseq: the number the last INVITE to the party went with, for its ACK
        self.caller_inv_cseq = 0
        self.callee_inv_cseq = 0
        self.created = created
        self.start = 0.0  # when the 2xx confirmed it
        self.lifetime = lifetime  # seconds, from confirmation
        self.timeout_at = 0.0  # when its lifetime ends (confirmed dialogs), else 0
        self.profiles: tuple[tuple[str, str], ...] = ()  # (profile, value); value "" for no-value profiles

    @property
    def did(self) -> str:
        """The dialog id of the MI and of ``$DLG_did``: hash entry and id in hex, joined by ``.``."""
        return f"{self.h_entry:x}.{self.h_id:x}"

    @property
    def db_id(self) -> int:
        """OpenSIPS's ``db_id``: ``(h_entry << 32) + h_id``."""
        return (self.h_entry << 32) + self.h_id

    @property
    def confirmed(self) -> bool:
        return self.state in (DialogState.CONFIRMED_NA, DialogState.CONFIRMED)

    @property
    def bye_on_timeout(self) -> bool:
        return bool(self.flags & FLAG_BYE_ON_TIMEOUT)

    def __repr__(self) -> str:
        return f"<Dialog {self.did} {self.call_id} state {int(self.state)}>"


class DialogListener(Protocol):
    """Told of every dialog's life, in order (call records, gauges): given to the
    :class:`~edgeproxy.dialog.table.DialogTable` when it is built. A listener that raises is logged
    by nobody here: it must not raise."""

    def dialog_created(self, dialog: Dialog) -> None:
        """``create_dialog()`` made it (state 1)."""

    def dialog_confirmed(self, dialog: Dialog, response: "Response") -> None:
        """The INVITE's 2xx (``response``, as the callee sent it) confirmed it."""

    def dialog_failed(self, dialog: Dialog, status: int) -> None:
        """The INVITE got no 2xx: ``status`` is the final response the caller got (487 after a
        CANCEL, 408, ...; 0 when the request was dropped unanswered)."""

    def dialog_ended(self, dialog: Dialog, reason: str) -> None:
        """A confirmed dialog ended; ``reason`` is OpenSIPS's ``$DLG_end_reason`` ("Upstream BYE",
        "Downstream BYE", "Lifetime Timeout", "MI Termination", "Ping Timeout") or "Connection Lost"."""
