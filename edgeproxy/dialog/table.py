"""The node's dialogs (OpenSIPS ``dlg_hash``): creation, the state machine driven by what goes through
the node, matching of in-dialog requests, lifetimes, profiles and the end of a dialog.

Sans-IO: the table reads no clock and sends nothing. Callers pass ``now``; where a dialog must be
ended with BYEs (lifetime expiry with the ``B`` flag, a party's connection gone, the MI's
``dlg_end_dlg``) the table returns the requests, each with its dialog and whether it goes to the
callee, and the caller sends them (:class:`edgeproxy.proxy.dialogs.DialogKeeper` does, in its own
client transactions, to where that party is reached).

Transitions (OpenSIPS ``dlg_hash.c: next_state_dlg``, reference §5.3):

====================================  ===========  ==========================================
event                                 from → to    what else
====================================  ===========  ==========================================
``create_dialog()``                   → 1          ``processed_dialogs`` + 1
1xx with a To tag                     1 → 2        (forking: every early branch, one dialog)
2xx (the first)                       1,2 → 3      lifetime armed; a late 2xx after a failure
                                                   revives a dialog no BYE ended (5 → 3)
negative final / dropped              1,2 → 5      ``failed_dialogs`` + 1
ACK                                   3 → 4
BYE (either side, matching tags)      3,4 → 5      "Upstream BYE" / "Downstream BYE"
lifetime / connection lost / MI       3,4 → 5      BYEs both ways (lifetime: only with ``B``)
ping answered 408/481 or not at all   3,4 → 5      BYEs both ways ("Ping Timeout")
====================================  ===========  ==========================================

Every path to state 5 goes through :meth:`DialogTable._delete`, which takes the dialog out of the
indexes and its profiles exactly once.
"""

from __future__ import annotations

import heapq
import zlib
from itertools import count
from typing import Iterable, Iterator, Sequence

from ..sip.endpoint import Flow
from ..sip.message import Request, Response
from .model import (
    FLAG_BYE_SEEN,
    FLAG_FAILED,
    FLAG_PING_CALLEE,
    FLAG_PING_CALLER,
    FLAG_PINGING_CALLEE,
    FLAG_PINGING_CALLER,
    Dialog,
    DialogListener,
    DialogState,
    parse_flags,
)
from .profiles import ProfileError, Profiles, profile_name
from .requests import to_callee, to_caller
from .settings import DialogSettings

__all__ = ["DialogTable", "DialogError", "Outgoing"]

Outgoing = list[tuple[Request, Dialog, bool]]  # requests to send: (request, its dialog, to the callee)


class DialogError(ValueError):
    """A dialog cannot be created from this request (no From tag, not an INVITE)."""


class DialogTable:
    """Every dialog of the node, indexed by Call-ID and caller tag, by the connections of its parties,
    and by the time its lifetime ends. ``listeners`` hear every dialog's life (see
    :class:`~edgeproxy.dialog.model.DialogListener`); ``stats`` are OpenSIPS's counters."""

    def __init__(self, settings: DialogSettings | None = None, listeners: Sequence[DialogListener] = ()) -> None:
        self.settings = settings = settings or DialogSettings()
        self.listeners = tuple(listeners)
        self.profiles = Profiles(settings)
        # OpenSIPS's counters, and the pings' (OpenSIPS counts none): sent, and answered 408/481 or not
        self.stats = {"processed_dialogs": 0, "expired_dialogs": 0, "failed_dialogs": 0, "pings_sent": 0,
                      "pings_failed": 0}
        self._dialogs: dict[tuple[str, str], Dialog] = {}
        self._pinged: dict[Dialog, None] = {}  # confirmed dialogs with a ping flag, in confirmation order
        self._by_flow: dict[Flow, list[Dialog]] = {}
        self._timers: list[tuple[float, int, Dialog]] = []
        self._stale_timers = 0  # entries of dialogs ended or re-timed since (removed lazily, or compacted)
        self._ids = count(1)
        self._states = [0] * 6  # dialogs per state, 1..4

    # -- reading ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        """The live dialogs (a snapshot: the table may change while the caller walks it)."""
        return iter(list(self._dialogs.values()))

    def count(self, state: DialogState) -> int:
        return self._states[state]

    @property
    def active(self) -> int:
        """OpenSIPS ``active_dialogs``: confirmed dialogs."""
        return self._states[DialogState.CONFIRMED_NA] + self._states[DialogState.CONFIRMED]

    @property
    def early(self) -> int:
        """OpenSIPS ``early_dialogs``."""
        return self._states[DialogState.EARLY]

    def get(self, call_id: str, caller_tag: str) -> Dialog | None:
        return self._dialogs.get((call_id, caller_tag))

    def find(self, ident: str) -> list[Dialog]:
        """The dialogs an MI ``dialog_id`` names: its DID (``h_entry.h_id`` in hex) or a Call-ID."""
        entry, dot, hid = ident.partition(".")
        try:
            key = (int(entry, 16), int(hid, 16)) if dot else None
        except ValueError:
            key = None
        return [d for d in self._dialogs.values() if (d.h_entry, d.h_id) == key or d.call_id == ident]

    def match(self, request: Request) -> tuple[Dialog, bool] | None:
        """The dialog an in-dialog request belongs to, and whether it goes downstream (from the
        caller); None when its Call-ID and both tags name none of ours. In an early dialog any callee
        tag is one of its branches' (forking)."""
        from_tag, to_tag = request.from_tag, request.to_tag
        if from_tag is None or to_tag is None:
            return None
        call_id = request.call_id
        dlg = self._dialogs.get((call_id, from_tag))
        if dlg is not None and (dlg.callee_tag == to_tag or (dlg.callee_tag is None and not dlg.confirmed)):
            return dlg, True
        dlg = self._dialogs.get((call_id, to_tag))
        if dlg is not None and (dlg.callee_tag == from_tag or (dlg.callee_tag is None and not dlg.confirmed)):
            return dlg, False
        return None

    def next_deadline(self) -> float | None:
        """When the earliest lifetime ends (stale entries of dialogs gone or re-timed are skipped)."""
        timers = self._timers
        while timers:
            when, _, dlg = timers[0]
            if dlg.state != DialogState.DELETED and dlg.timeout_at == when:
                return when
            heapq.heappop(timers)
            self._stale_timers = max(0, self._stale_timers - 1)
        return None

    @property
    def pending_timers(self) -> int:
        """Entries in the lifetime heap, stale ones included (bounded: see :meth:`_went_stale`)."""
        return len(self._timers)

    def _went_stale(self) -> None:
        """A heap entry no longer counts (its dialog ended, or got another lifetime). Entries are left
        where they are, but when more than half the heap is stale it is rebuilt: an ended call must
        not stay in memory until its 12 h lifetime would have run out."""
        self._stale_timers += 1
        if self._stale_timers > 64 and self._stale_timers * 2 > len(self._timers):
            self._timers = [e for e in self._timers if e[2].state != DialogState.DELETED and e[2].timeout_at == e[0]]
            heapq.heapify(self._timers)
            self._stale_timers = 0

    # -- the state machine -----------------------------------------------------------------------------
    def create(self, request: Request, now: float, caller_flow: Flow | None, caller_routes: tuple[str, ...],
               flags: str = "") -> Dialog:
        """``create_dialog(flags)`` on an initial INVITE (the existing dialog when there is one)."""
        if request.method != "INVITE" or request.to_tag is not None:
            raise DialogError("create_dialog() needs an initial INVITE")
        tag = request.from_tag
        if not tag:
            raise DialogError("the INVITE has no From tag")
        call_id = request.call_id
        existing = self._dialogs.get((call_id, tag))
        if existing is not None:
            return existing
        contact = _target(request.headers.get("contact") or request.headers.get("from") or "")
        dlg = Dialog(zlib.crc32(call_id.encode("utf-8", "surrogateescape")) & 0xFFF, next(self._ids), call_id,
                     request.headers.get("from") or "", request.headers.get("to") or "", tag,
                     request.cseq.number, contact, caller_routes, caller_flow, parse_flags(flags),
                     now, self.settings.default_timeout)
        self._dialogs[(call_id, tag)] = dlg
        self._states[DialogState.UNCONFIRMED] += 1
        self.stats["processed_dialogs"] += 1
        if caller_flow is not None and caller_flow.connection_id is not None:
            self._by_flow.setdefault(caller_flow, []).append(dlg)
        for listener in self.listeners:
            listener.dialog_created(dlg)
        return dlg

    def _move(self, dlg: Dialog, state: DialogState) -> None:
        if dlg.state != DialogState.DELETED:
            self._states[dlg.state] -= 1
        dlg.state = state
        if state != DialogState.DELETED:
            self._states[state] += 1

    def provisional(self, dlg: Dialog, response: Response) -> None:
        """A 1xx with a To tag from one of the branches: the dialog is early."""
        if dlg.state == DialogState.UNCONFIRMED and response.to_tag:
            self._move(dlg, DialogState.EARLY)

    def confirm(self, dlg: Dialog, response: Response, now: float, callee_flow: Flow | None,
                callee_routes: tuple[str, ...]) -> bool:
        """The first 2xx: the callee's leg is the branch that sent it. False for a 2xx of another
        branch (the caller ends that one itself) or of a dialog a BYE already ended."""
        if dlg.confirmed or dlg.flags & FLAG_BYE_SEEN:
            return False
        if dlg.state == DialogState.DELETED:
            if not dlg.flags & FLAG_FAILED or (dlg.call_id, dlg.caller_tag) in self._dialogs:
                return False
            self._relink(dlg)  # a late 2xx after a failure (200 after CANCEL): the call exists
        dlg.callee_tag = response.to_tag or ""
        dlg.callee_contact = _target(response.headers.get("contact") or response.headers.get("to") or "")
        dlg.callee_routes = callee_routes
        dlg.callee_flow = callee_flow
        if callee_flow is not None and callee_flow.connection_id is not None and callee_flow != dlg.caller_flow:
            self._by_flow.setdefault(callee_flow, []).append(dlg)
        dlg.start = now
        self._move(dlg, DialogState.CONFIRMED_NA)
        self._arm(dlg, now + dlg.lifetime)
        if dlg.flags & (FLAG_PING_CALLER | FLAG_PING_CALLEE):
            self._pinged[dlg] = None
        for listener in self.listeners:
            listener.dialog_confirmed(dlg, response)
        return True

    def fail(self, dlg: Dialog, status: int) -> None:
        """The INVITE ended without a 2xx (``status`` went to the caller; 0: dropped unanswered)."""
        if dlg.state not in (DialogState.UNCONFIRMED, DialogState.EARLY):
            return
        dlg.flags |= FLAG_FAILED
        self.stats["failed_dialogs"] += 1
        self._delete(dlg)
        for listener in self.listeners:
            listener.dialog_failed(dlg, status)

    def in_dialog(self, dlg: Dialog, request: Request, downstream: bool) -> str | None:
        """An in-dialog request of ``dlg`` went through (``downstream``: from the caller): CSeq kept,
        ACK confirms, BYE ends a confirmed dialog. The end reason when it ended, else None."""
        method = request.method
        number = request.cseq.number
        if downstream:
            if method != "ACK" and number > dlg.caller_cseq:
                dlg.caller_cseq = number
        elif number > dlg.callee_cseq:
            dlg.callee_cseq = number
        if method == "ACK":
            if dlg.state == DialogState.CONFIRMED_NA:
                self._move(dlg, DialogState.CONFIRMED)
            return None
        if method != "BYE":
            return None
        dlg.flags |= FLAG_BYE_SEEN
        if not dlg.confirmed:
            return None  # an early BYE only marks the dialog (OpenSIPS: "has BYE")
        reason = "Upstream BYE" if downstream else "Downstream BYE"
        self._end(dlg, reason)
        return reason

    def relayed_cseq(self, dlg: Dialog, request: Request, downstream: bool) -> int | None:
        """The CSeq number the relayed copies of an in-dialog request carry, None for its own
        (OpenSIPS ``dlg_handlers.c: dlg_onroute``). Once the node has pinged the receiving party,
        its pings have taken numbers of the sender's sequence: each later request to the party gets
        the next of the node's numbers (``last_gen_cseq`` + 1), an ACK the number of the INVITE it
        acknowledges, and the responses upstream get the request's own number back (the proxy does
        that), so neither party sees a gap it did not make or a number twice (§12.2.1.1, §12.2.2)."""
        method = request.method
        if downstream:
            gen, inv = dlg.callee_gen_cseq, dlg.callee_inv_cseq
        else:
            gen, inv = dlg.caller_gen_cseq, dlg.caller_inv_cseq
        if method == "ACK":
            return (inv or gen) if gen else None
        out: int | None = None
        if gen:
            gen += 1
            out = gen
        if method == "INVITE":
            inv = out if out is not None else request.cseq.number
        if downstream:
            dlg.callee_gen_cseq, dlg.callee_inv_cseq = gen, inv
        else:
            dlg.caller_gen_cseq, dlg.caller_inv_cseq = gen, inv
        return out

    def validate(self, dlg: Dialog, request: Request, downstream: bool) -> int:
        """OpenSIPS ``validate_dialog()`` (``dlg_handlers.c: dlg_validate_dialog``) for an in-dialog
        request before it changes the dialog: -1 bad CSeq (an ACK must carry the CSeq of the request
        it acknowledges, anything else one above the last its sender used), -2 the Request-URI is not
        the remote target of a confirmed dialog, 1 valid. (-3, the route set, is not checked: the
        request's Route was ours and has been popped.)"""
        number = request.cseq.number
        if request.method == "ACK":
            if number not in (dlg.caller_cseq, dlg.callee_cseq):
                return -1
        elif number <= (dlg.caller_cseq if downstream else dlg.callee_cseq):
            return -1
        if dlg.confirmed and request.uri_text != (dlg.callee_contact if downstream else dlg.caller_contact):
            return -2
        return 1

    def set_timeout(self, dlg: Dialog, seconds: int, now: float) -> None:
        """``$DLG_timeout = seconds``: before confirmation the lifetime to use; after it, the seconds
        left from now."""
        if dlg.confirmed:
            dlg.lifetime = max(0, int(now - dlg.start)) + seconds
            self._arm(dlg, now + seconds)
        else:
            dlg.lifetime = seconds

    def timeout_left(self, dlg: Dialog, now: float) -> int:
        """``$DLG_timeout`` read: seconds left of a confirmed dialog, its lifetime before that, 0 once
        it has ended."""
        if dlg.state == DialogState.DELETED:
            return 0
        return max(0, round(dlg.timeout_at - now)) if dlg.confirmed else dlg.lifetime

    # -- ending ----------------------------------------------------------------------------------------
    def expire(self, now: float) -> Outgoing:
        """Dialogs whose lifetime has ended: with the ``B`` flag, BYEs to both sides; without it the
        dialog is forgotten silently, as OpenSIPS does (reference §0.7)."""
        out: Outgoing = []
        while True:
            when = self.next_deadline()
            if when is None or when > now:
                return out
            _, _, dlg = heapq.heappop(self._timers)
            dlg.timeout_at = 0.0  # its entry is gone: not a stale one
            self.stats["expired_dialogs"] += 1
            if dlg.bye_on_timeout:
                out += self.end(dlg, "Lifetime Timeout")
            else:
                self._end(dlg, "Lifetime Timeout")

    def flow_closed(self, flow: Flow) -> tuple[Outgoing, list[Dialog]]:
        """A party's connection is gone: each confirmed dialog over it ends with BYEs to both sides
        (the one over the dead connection is tried too: a TCP/TLS party may be dialled again); the
        dialogs not confirmed yet are returned for the caller to CANCEL (their INVITE is the proxy's)."""
        out: Outgoing = []
        early: list[Dialog] = []
        for dlg in self._by_flow.pop(flow, ()):
            if dlg.confirmed:
                out += self.end(dlg, "Connection Lost")
            elif dlg.state != DialogState.DELETED:
                early.append(dlg)
        return out, early

    def end(self, dlg: Dialog, reason: str, extra: Iterable[tuple[str, str]] = ()) -> Outgoing:
        """End a confirmed dialog from here (``dlg_end_dlg``, lifetime, lost connection): BYEs to
        the callee and to the caller, each with the next CSeq of the party it speaks for, or the
        next of the node's own to a party it pinged (OpenSIPS ``build_dlg_t``)."""
        if not dlg.confirmed:
            return []
        extra = tuple(extra)
        dlg.caller_cseq += 1
        dlg.callee_cseq += 1
        if dlg.callee_gen_cseq:
            dlg.callee_gen_cseq += 1
        if dlg.caller_gen_cseq:
            dlg.caller_gen_cseq += 1
        bye_callee = to_callee("BYE", dlg, dlg.callee_gen_cseq or dlg.caller_cseq, extra)
        bye_caller = to_caller("BYE", dlg, dlg.caller_gen_cseq or dlg.callee_cseq, extra)
        self._end(dlg, reason)
        return [(bye_callee, dlg, True), (bye_caller, dlg, False)]

    # -- pings (create_dialog("Pp"), OpenSIPS dlg_timer.c ping timer) ------------------------------------
    @property
    def pinged(self) -> int:
        """Confirmed dialogs with a ping flag."""
        return len(self._pinged)

    def pings(self) -> Outgoing:
        """One round of ``options_ping_interval``: an OPTIONS to each flagged party of every
        confirmed dialog whose last ping to it has been answered (one ping at a time per party).
        Each takes the next number of the node's own to that party: the other party's last + 1 at
        the first ping, then one more each time (OpenSIPS ``build_dialog_info``'s
        ``last_gen_cseq``), so a ping is never a number the party saw (a retransmission to it) nor
        below one (§12.2.2: refused as out of order); what the other party sends after is renumbered
        (:meth:`relayed_cseq`)."""
        out: Outgoing = []
        for dlg in self._pinged:
            if dlg.flags & FLAG_PING_CALLER and not dlg.flags & FLAG_PINGING_CALLER:
                dlg.flags |= FLAG_PINGING_CALLER
                dlg.caller_gen_cseq = (dlg.caller_gen_cseq or dlg.callee_cseq) + 1
                out.append((to_caller("OPTIONS", dlg, dlg.caller_gen_cseq), dlg, False))
            if dlg.flags & FLAG_PING_CALLEE and not dlg.flags & FLAG_PINGING_CALLEE:
                dlg.flags |= FLAG_PINGING_CALLEE
                dlg.callee_gen_cseq = (dlg.callee_gen_cseq or dlg.caller_cseq) + 1
                out.append((to_callee("OPTIONS", dlg, dlg.callee_gen_cseq), dlg, True))
        self.stats["pings_sent"] += len(out)
        return out

    def ping_answered(self, dlg: Dialog, callee: bool, status: int) -> Outgoing:
        """A ping's final answer (408: none in time). 408 and 481 (the party no longer knows the
        call) end the dialog with BYEs both ways, "Ping Timeout", whatever its ``B`` flag; any
        other answer means the party is there (OpenSIPS)."""
        dlg.flags &= ~(FLAG_PINGING_CALLEE if callee else FLAG_PINGING_CALLER)
        if status not in (408, 481):
            return []
        self.stats["pings_failed"] += 1
        if not dlg.confirmed:
            return []
        return self.end(dlg, "Ping Timeout")

    def _end(self, dlg: Dialog, reason: str) -> None:
        self._delete(dlg)
        for listener in self.listeners:
            listener.dialog_ended(dlg, reason)

    def _delete(self, dlg: Dialog) -> None:
        """State 5: out of the indexes and out of its profiles, exactly once."""
        if dlg.state == DialogState.DELETED:
            return
        self._move(dlg, DialogState.DELETED)
        self._dialogs.pop((dlg.call_id, dlg.caller_tag), None)
        for flow in (dlg.caller_flow, dlg.callee_flow):
            dialogs = self._by_flow.get(flow) if flow is not None else None
            if dialogs is not None:
                if dlg in dialogs:
                    dialogs.remove(dlg)
                if not dialogs:
                    del self._by_flow[flow]  # type: ignore[arg-type]
        for entry in dlg.profiles:
            self.profiles.release(entry)
        self._pinged.pop(dlg, None)
        if dlg.timeout_at:
            dlg.timeout_at = 0.0
            self._went_stale()

    def _relink(self, dlg: Dialog) -> None:
        """Bring a failed dialog back (a 2xx arrived after its failure)."""
        self._dialogs[(dlg.call_id, dlg.caller_tag)] = dlg
        dlg.state = DialogState.UNCONFIRMED
        self._states[DialogState.UNCONFIRMED] += 1
        dlg.flags &= ~FLAG_FAILED
        if dlg.caller_flow is not None and dlg.caller_flow.connection_id is not None:
            self._by_flow.setdefault(dlg.caller_flow, []).append(dlg)
        for entry in dlg.profiles:
            self.profiles.add(entry)

    def _arm(self, dlg: Dialog, when: float) -> None:
        if dlg.timeout_at == when:
            return  # armed for that instant already
        if dlg.timeout_at:
            self._went_stale()
        dlg.timeout_at = when
        heapq.heappush(self._timers, (when, dlg.h_id, dlg))

    # -- profiles --------------------------------------------------------------------------------------
    def set_profile(self, dlg: Dialog, name: str, value: str | None = None) -> None:
        """``set_dlg_profile(name, value)``: the dialog counts in the profile until it ends (the same
        dialog may be added more than once, as in OpenSIPS). ProfileError for an undeclared profile
        or a valued one without value."""
        entry = self.profiles.key(profile_name(name), value)
        if dlg.state == DialogState.DELETED:
            raise ProfileError("the dialog has ended")
        dlg.profiles += (entry,)
        self.profiles.add(entry)

    def unset_profile(self, dlg: Dialog, name: str, value: str | None = None) -> bool:
        """``unset_dlg_profile``: True when the dialog was in it (a valued profile without value: any
        of its values)."""
        has_value = self.profiles.has_value(name)
        kept: list[tuple[str, str]] = []
        removed = False
        for entry in dlg.profiles:
            if not removed and entry[0] == name and (value is None or not has_value or entry[1] == value):
                removed = True
                if dlg.state != DialogState.DELETED:
                    self.profiles.release(entry)
                continue
            kept.append(entry)
        dlg.profiles = tuple(kept)
        return removed

    def in_profile(self, dlg: Dialog, name: str, value: str | None = None) -> bool:
        """``is_in_profile``: whether the dialog is in the profile (with that value, if given)."""
        has_value = self.profiles.has_value(name)
        return any(n == name and (value is None or not has_value or v == value) for n, v in dlg.profiles)

    def profile_size(self, name: str, value: str | None = None) -> int:
        """``get_profile_size``."""
        return self.profiles.size(name, value)

    def profile_dialogs(self, name: str, value: str | None = None) -> list[Dialog]:
        """``profile_list_dlgs``: the dialogs in the profile (with that value, if given)."""
        return [d for d in self._dialogs.values() if self.in_profile(d, name, value)]


def _target(value: str) -> str:
    """The URI of the first name-addr of a Contact (or From/To) header value, as the party wrote it:
    the remote target its peer puts in the Request-URI (RFC 3261 §12.1.1), compared as text by
    :meth:`DialogTable.validate`. Not parsed: the node only needs it when it sends a BYE."""
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start)
        return value[start + 1:end] if end > start else value[start + 1:]
    return value.split(",", 1)[0].split(";", 1)[0].strip()
