"""Between the proxy core and the dialog table (:mod:`edgeproxy.dialog`): what the proxy sees of a
dialog's INVITE and in-dialog requests goes to the table, and the BYEs the table asks for leave here.

:class:`DialogKeeper` works out what the sans-IO table cannot: where each party is reached and which
Record-Route entries lie beyond this node on each side. A request to the caller carries the INVITE's
Record-Route entries as they arrived (the proxies between the caller and us, nearest first) and goes
to the first of them, else to the caller's connection (RFC 5626 flow: a browser, a TLS phone), else
to the caller's Contact -- where an in-dialog request from the callee would go through this node. A
request to the callee carries the 2xx's Record-Route entries above ours, in reverse (RFC 3261
§12.1.2), and goes to the first of them, else over the connection the INVITE's branch used, else to
the callee's Contact. Our own entries (one, or two with double Record-Route) are counted, not parsed:
the branch's copy of the INVITE carries exactly the entries the 2xx returns below the callee's side.
Destinations are worked out when a BYE is sent (:meth:`DialogKeeper.reach`), not for every call.

It owns the one reactor timer of the dialogs' lifetimes (:class:`~edgeproxy.deadline.EarliestDeadline`, armed
for the table's earliest deadline) and
sends each BYE in its own client transaction through the proxy (``start_local``), so BYEs over UDP are
retransmitted and their responses absorbed. It also owns the ping timer of ``create_dialog("Pp")``
(OpenSIPS ``options_ping_interval``): every interval while such dialogs exist, an OPTIONS to each
flagged party, in its own client transaction; a party that answers 408/481 or not at all (the
transaction's own timeout, Timer F) ends its dialog with BYEs both ways -- the way a UDP phone that
lost its network or a media server that died is noticed, where no connection closes to say so.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..deadline import EarliestDeadline
from ..dialog import Dialog, DialogTable, Outgoing
from ..sip.endpoint import Destination, Flow
from ..sip.errors import SipValueError
from ..sip.message import Response
from ..sip.uri import SipURI, parse_uri
from ..sip.values import parse_name_address
from .context import ClientBranch, RouteState, ServerContext
from .forwarding import CancelHeaders, Forwarder
from .hops import uri_destination
from .uac import LocalRequest

__all__ = ["DialogKeeper"]

log = Logger(namespace="edgeproxy.dialog")

StartLocal = Callable[[LocalRequest], None]  # StatefulProxy.start_local
CancelInvite = Callable[[ServerContext, CancelHeaders], None]  # StatefulProxy.cancel_invite


def _first_uri(values: Iterable[str]) -> SipURI | None:
    for value in values:
        try:
            uri = parse_name_address(value, "Record-Route").uri
        except SipValueError:
            return None
        return uri if isinstance(uri, SipURI) else None
    return None


def _contact_uri(text: str) -> SipURI | None:
    try:
        uri = parse_uri(text)
    except SipValueError:
        return None
    return uri if isinstance(uri, SipURI) else None


class DialogKeeper:
    """The proxy's side of the dialogs (see the module docstring)."""

    def __init__(self, table: DialogTable, forwarder: Forwarder, clock: IReactorTime, start_local: StartLocal,
                 cancel_invite: CancelInvite | None = None) -> None:
        self.table = table
        self.forwarder = forwarder
        self.clock = clock
        self.start_local = start_local
        self.cancel_invite = cancel_invite
        # the INVITE transaction of each dialog not confirmed yet: ending it early is CANCELling it
        self._setup: dict[Dialog, ServerContext] = {}
        self._lifetimes = EarliestDeadline(clock, self._fire)
        self._pings = EarliestDeadline(clock, self._ping)

    # -- where the parties are -------------------------------------------------------------------------
    def reach(self, dlg: Dialog, callee: bool) -> Destination | None:
        """Where a request of the node's to the callee (or the caller) of ``dlg`` goes first; None
        when its Contact is not a SIP URI and it is on no connection."""
        if callee:
            return self._reach(dlg.callee_routes, dlg.callee_flow, dlg.callee_contact or "")
        return self._reach(dlg.caller_routes, dlg.caller_flow, dlg.caller_contact)

    def _reach(self, routes: tuple[str, ...], flow: Flow | None, contact: str) -> Destination | None:
        uri = _first_uri(routes)
        if uri is not None:
            dest = uri_destination(uri)
            if flow is not None and flow.remote == dest.remote:
                return Destination(dest.remote, flow)
            return dest
        target = _contact_uri(contact)
        if flow is not None and flow.connection_id is not None and target is not None:
            return self.forwarder.flow_destination(flow, target)
        if target is not None:
            return uri_destination(target)
        return Destination(flow.remote, flow) if flow is not None else None

    # -- the route's verbs -----------------------------------------------------------------------------
    def create(self, route: RouteState, flags: str) -> Dialog:
        """``create_dialog(flags)`` for the INVITE ``route`` handles (DialogError when it cannot)."""
        request = route.request
        source = route.source
        routes = tuple(request.headers.values("record-route"))
        dlg = self.table.create(request, self.clock.seconds(), source, routes, flags)
        route.dialog = dlg
        if route.ctx is not None:
            route.ctx.dialog = dlg
            self._setup[dlg] = route.ctx
        return dlg

    def match(self, route: RouteState) -> Dialog | None:
        """OpenSIPS ``match_dialog()`` / the matching ``loose_route()`` does: the dialog of an
        in-dialog request (Call-ID and both tags), whose state the request then moves (ACK, BYE) and
        whose CSeqs it advances. A BYE whose CSeq is not above the last one its sender used ends
        nothing (a replay). ``route.dialog_check`` keeps what ``validate_dialog()`` answers."""
        if route.dialog is not None:
            return route.dialog
        found = self.table.match(route.request)
        if found is None:
            return None
        dlg, downstream = found
        route.dialog = dlg
        check = route.dialog_check = self.table.validate(dlg, route.request, downstream)
        if check == -1 and route.request.method == "BYE":
            log.info("BYE {call_id}: CSeq not above the last one seen, the dialog stays", call_id=dlg.call_id)
            return dlg
        self.table.in_dialog(dlg, route.request, downstream)
        route.cseq_out = self.table.relayed_cseq(dlg, route.request, downstream)
        return dlg

    # -- what the proxy core tells ---------------------------------------------------------------------
    def branch_response(self, ctx: ServerContext, cb: ClientBranch, response: Response) -> None:
        """A response on one of the INVITE's branches: a 1xx with a tag makes the dialog early, the
        first 2xx confirms it with the callee's leg from that branch."""
        dlg = ctx.dialog
        status = response.status
        if dlg is None or status >= 300 or status == 100:
            return
        if status < 200:
            self.table.provisional(dlg, response)
            return
        upstream = len(ctx.request.headers.values("record-route"))
        ours = len(cb.request.headers.values("record-route")) - upstream
        returned = response.headers.values("record-route")
        routes = tuple(reversed(returned[:max(0, len(returned) - ours - upstream)]))
        if self.table.confirm(dlg, response, self.clock.seconds(), cb.flow, routes):
            self._setup.pop(dlg, None)
            self.arm()
            if self.table.pinged:
                self._arm_pings()

    def answered(self, ctx: ServerContext, status: int) -> None:
        """The INVITE's final response upstream was negative (or, 0, it was dropped unanswered)."""
        if ctx.dialog is not None:
            self._setup.pop(ctx.dialog, None)
            self.table.fail(ctx.dialog, status)

    def flow_closed(self, flow: Flow) -> int:
        """A party's connection is gone: its confirmed dialogs end with BYEs both ways, the calls it
        was still placing are CANCELled (487 to nobody, CANCEL to the callee); how many. Those
        CANCELs carry no Reason: OpenSIPS ends an early dialog with ``t_cancel_trans(t, extra_hdrs)``
        (``dlg_end_dlg``), whose CANCELs have only the extra headers given -- none here -- and no
        RFC 3326 Reason of tm's own (those are for a received CANCEL, Timer C and a 2xx)."""
        outgoing, early = self.table.flow_closed(flow)
        if outgoing or early:
            log.info("{n} dialog(s) over {flow} end: the connection closed", n=len(outgoing) // 2 + len(early),
                     flow=flow.remote)
        self._send_all(outgoing)
        for dlg in early:
            self._cancel(dlg)
        return len(outgoing) // 2 + len(early)

    def _cancel(self, dlg: Dialog, headers: CancelHeaders = ()) -> bool:
        ctx = self._setup.get(dlg)
        if ctx is None or self.cancel_invite is None:
            return False
        self.cancel_invite(ctx, headers)
        return True

    def end(self, dlg: Dialog, reason: str, extra: Iterable[tuple[str, str]] = ()) -> bool:
        """End a dialog from here (``dlg_end_dlg``): a confirmed one with BYEs both ways, an early one
        by CANCELling its INVITE (OpenSIPS: CANCEL towards the callee, with the MI's extra headers,
        ``t_cancel_trans``); False when neither applies."""
        if not dlg.confirmed:
            return self._cancel(dlg, tuple(extra))
        outgoing = self.table.end(dlg, reason, extra)
        self._send_all(outgoing)
        return bool(outgoing)

    def set_timeout(self, dlg: Dialog, seconds: int) -> None:
        """``$DLG_timeout = seconds``."""
        self.table.set_timeout(dlg, seconds, self.clock.seconds())
        self.arm()

    # -- sending ---------------------------------------------------------------------------------------
    def _send_all(self, outgoing: Outgoing,
                  done: Callable[[Dialog, bool], Callable[[int], None]] | None = None) -> None:
        """Send the table's requests, each in its own client transaction; ``done(dialog, callee)``
        makes the callback of each one's final status (default: a failed BYE is logged)."""
        for request, dlg, callee in outgoing:
            method = request.method
            destination = self.reach(dlg, callee)
            if destination is None:
                log.info("cannot send {method} {call_id}: no way to reach the {who}", method=method,
                         call_id=request.call_id, who="callee" if callee else "caller")
                if done is not None:
                    done(dlg, callee)(503)
                continue
            local = self.forwarder.sender.local_endpoint(destination.remote.transport, destination.remote)
            if local is None:
                log.info("cannot send {method} {call_id} to {dest}: no {t} listener", method=method,
                         call_id=request.call_id, dest=destination.remote, t=destination.remote.transport)
                if done is not None:
                    done(dlg, callee)(503)
                continue
            request.push_via(f"SIP/2.0/{local.transport} {local.hostport};branch={self.forwarder.new_branch()}")
            finished = done(dlg, callee) if done is not None else partial(self._bye_done, request.call_id, destination)
            self.start_local(LocalRequest(request, destination, self.forwarder, finished))

    @staticmethod
    def _bye_done(call_id: str, destination: Destination, status: int) -> None:
        if status >= 300:
            log.info("BYE {call_id} to {dest}: {status}", call_id=call_id, dest=destination.remote, status=status)

    # -- the ping timer (create_dialog("Pp")) ----------------------------------------------------------
    def _arm_pings(self) -> None:
        """The next round in ``options_ping_interval``, unless one is due sooner already."""
        self._pings.arm(self.clock.seconds() + self.table.settings.options_ping_interval)

    def _ping(self) -> None:
        try:
            self._send_all(self.table.pings(), self._ping_callback)
        except Exception:
            log.failure("internal error pinging dialogs")
        if self.table.pinged:
            self._arm_pings()

    def _ping_callback(self, dlg: Dialog, callee: bool) -> Callable[[int], None]:
        return partial(self._ping_done, dlg, callee)

    def _ping_done(self, dlg: Dialog, callee: bool, status: int) -> None:
        outgoing = self.table.ping_answered(dlg, callee, status)
        if outgoing:
            log.info("dialog {did} {call_id}: the {who} answered its ping {status}: BYE both ways", did=dlg.did,
                     call_id=dlg.call_id, who="callee" if callee else "caller", status=status)
            self._send_all(outgoing)

    # -- the lifetime timer ----------------------------------------------------------------------------
    def arm(self) -> None:
        """(Re)arm the one timer for the earliest lifetime end."""
        self._lifetimes.arm(self.table.next_deadline())

    def _fire(self) -> None:
        try:
            outgoing = self.table.expire(self.clock.seconds())
            if outgoing:
                log.info("{n} dialog(s) reached their lifetime: BYE both ways", n=len(outgoing) // 2)
            self._send_all(outgoing)
        except Exception:
            log.failure("internal error expiring dialogs")
        self.arm()

    def stop(self) -> None:
        self._lifetimes.stop()
        self._pings.stop()
