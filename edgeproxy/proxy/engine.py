"""The transaction-stateful proxy core of RFC 3261 §16 (OpenSIPS's ``tm``): server and client
transactions, forking, CANCEL, and the response processing of §16.7.

Theory of operation. :class:`StatefulProxy` owns the transaction table and the one timer that wakes
it at the earliest transaction deadline. Transactions are sans-IO: they return actions (send,
deliver, timeout) that :meth:`StatefulProxy.execute` carries out. A request the route relays becomes
a :class:`~edgeproxy.proxy.context.ServerContext` with one client transaction per target (§16.6),
serially by q groups and in parallel within a group, started by
:class:`~edgeproxy.proxy.branches.BranchLauncher`; responses come back through the client
transactions and are forwarded or collected for the best-response choice of §16.7. What the route
module may do on the way (``onreply_route``, ``failure_route``, ``branch_route``, routing an ACK that
a transaction delivered) is asked of :class:`RouteHooks`, which the node implements.
"""

from __future__ import annotations

from typing import Iterable, Union

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..deadline import EarliestDeadline
from ..dialog import DialogTable
from ..latency import LatencyHistogram
from ..sip.endpoint import Flow
from ..sip.message import Request, Response
from ..transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    DeliverRequest,
    DeliverResponse,
    SendRequest,
    SendResponse,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    Terminated,
    Timeout,
    TimerSettings,
    Transaction,
    TransactionTable,
    TransportFailure,
)
from .branches import BranchLauncher
from .context import Branch, CancelBranch, ClientBranch, RouteState, ServerContext
from .dialogs import DialogKeeper
from .forwarding import (
    REASON_COMPLETED_ELSEWHERE,
    REASON_NO_ANSWER,
    CancelHeaders,
    Forwarder,
    build_cancel,
    cancel_reason,
)
from .hooks import CallObserver, HostMatcher, RouteHooks
from .hops import response_destination
from .noise import NoiseLog
from .responses import best_response, upstream_final
from .settings import ProxySettings
from .uac import LocalRequest

__all__ = ["StatefulProxy", "ProxyStats"]

log = Logger(namespace="edgeproxy.proxy")

Owner = Union[ServerContext, ClientBranch, CancelBranch, LocalRequest]
ProxyStats = dict[str, int]  # the node's counters (the MI's core:/tm:/sl: statistics)


class StatefulProxy:
    """Server/client transactions of the proxy and what happens between them (§16.6-§16.10)."""

    def __init__(self, clock: IReactorTime, forwarder: Forwarder, hooks: RouteHooks, settings: ProxySettings,
                 timers: TimerSettings, stats: ProxyStats, dialogs: DialogTable | None = None,
                 noise: NoiseLog | None = None, calls: CallObserver | None = None) -> None:
        self.clock = clock
        self.forwarder = forwarder
        self.hooks = hooks
        self.settings = settings
        self.timers = timers
        self.stats = stats
        self.table = TransactionTable()
        # finals sent, by status // 100 (tm's 2xx_transactions ...); INVITE arrival -> first final
        self.finals: list[int] = [0] * 7
        self.setup_time = LatencyHistogram()
        self.noise = noise if noise is not None else NoiseLog(clock)  # the node's: failed branches, aggregated
        self.calls = calls  # [acc]: every INVITE's first final response
        self._owners: dict[Transaction, Owner] = {}
        self._timer = EarliestDeadline(clock, self._fire)  # the one reactor timer of the transactions
        # create_dialog(): what the INVITEs' transactions show goes to the table (OpenSIPS dialog)
        self.dialogs = DialogKeeper(dialogs if dialogs is not None else DialogTable(), forwarder, clock,
                                    self.start_local, self.cancel_invite)
        # the client branches of a relayed request, up to their first send (§16.6, RFC 3263 §4.3)
        self.launcher = BranchLauncher(self, clock, forwarder, hooks, settings, timers, self.noise)

    @property
    def idle(self) -> bool:
        """No transaction is owned and no timer is armed (everything has been cleaned up)."""
        return not self._owners and self._timer.armed is None

    # -- timers --------------------------------------------------------------------------------------
    def arm(self) -> None:
        """(Re)arm the one reactor timer for the earliest transaction deadline."""
        self._timer.arm(self.table.get_timer())

    def _fire(self) -> None:
        try:
            for tx, action in self.table.handle_timer(self.clock.seconds()):
                self.execute(tx, (action,))
        except Exception:
            log.failure("internal error in transaction timers")
        self.arm()

    def stop(self) -> None:
        self._timer.stop()
        self.dialogs.stop()

    # -- executing transaction actions ---------------------------------------------------------------
    def execute(self, tx: Transaction, actions: Iterable[object]) -> None:
        owner = self._owners.get(tx)
        for action in actions:
            if isinstance(owner, LocalRequest) and not isinstance(action, Terminated):
                owner.handle(action)  # a request of the node's own (a dispatcher probe)
            elif isinstance(action, SendResponse):
                if isinstance(owner, ServerContext):
                    self.forwarder.send(response_destination(action.response, owner.flow), action.response)
            elif isinstance(action, SendRequest):
                if isinstance(owner, CancelBranch):
                    self.forwarder.send(owner.destination, action.request)
                elif isinstance(owner, ClientBranch):
                    self.forwarder.send(owner.send_destination(), action.request)
            elif isinstance(action, DeliverResponse):
                if isinstance(owner, ClientBranch):
                    self._branch_response(owner, action.response)
            elif isinstance(action, DeliverRequest):
                if isinstance(owner, ServerContext):
                    self.hooks.ack_route(action.request, owner.flow)
            elif isinstance(action, Timeout):
                if isinstance(owner, ClientBranch):
                    if owner.final is None and not owner.replaced:
                        # OpenSIPS tm: timeout_finalresponse (no reply at all) / _inv (after a 1xx)
                        key = "timeouts_inv" if owner.provisional and owner.request.method == "INVITE" else "timeouts"
                        self.stats[key] = self.stats.get(key, 0) + 1
                    # no answer at all from this target (not even 1xx): RFC 3263 §4.3, the next one
                    if owner.alternatives and not owner.provisional and self.launcher.fail_over(owner, "timeout"):
                        continue
                    self.branch_failed(owner, 408, "Request Timeout")
            elif isinstance(action, TransportFailure):
                if isinstance(owner, ClientBranch):
                    self.branch_failed(owner, 503, "Service Unavailable")
            elif isinstance(action, Terminated):
                gone = self._owners.pop(tx, None)
                ctx = gone if isinstance(gone, ServerContext) else gone.ctx if isinstance(gone, ClientBranch) else None
                if ctx is not None:
                    ctx.live -= 1
                    if ctx.live <= 0:
                        ctx.release()

    def own(self, tx: Transaction, owner: Owner) -> None:
        """Enter ``tx`` in the transaction table; its actions go to ``owner`` (:meth:`execute`)."""
        self._owners[tx] = owner
        self.table.add(tx)

    def start_local(self, owner: LocalRequest) -> None:
        """Start the client transaction of a request of the node's own (:mod:`.uac`; the BYEs that
        end a dialog, :mod:`.dialogs`)."""
        now = self.clock.seconds()
        tx = ClientNonInviteTransaction(owner.request, reliable=owner.destination.remote.reliable,
                                        timers=self.timers, now=now)
        self.own(tx, owner)
        self.execute(tx, tx.start(now))
        self.arm()

    # -- requests ------------------------------------------------------------------------------------
    def absorb(self, request: Request) -> bool:
        """A request that matches a server transaction (a retransmission, the ACK of a non-2xx,
        §17.2.3) is that transaction's: True when it was taken."""
        tx = self.table.match_request(request)
        if tx is None:
            return False
        self.execute(tx, tx.receive_request(request, self.clock.seconds()))
        return True

    def open(self, request: Request, flow: Flow) -> ServerContext:
        """The context of a new request, with its server transaction at arrival so retransmissions
        are absorbed while an asynchronous route runs; no 100 Trying yet (see :meth:`trying`)."""
        ctx = ServerContext(request, flow)
        self._server_tx(ctx, trying=False)
        return ctx

    def trying(self, ctx: ServerContext) -> None:
        """The deferred 100 Trying of an INVITE: sent once, before the request is relayed or when the
        route's synchronous part ends without a final answer. A route that answers at once (404, a
        407 challenge, 403) needs none (§17.2.1: the TU answers within 200 ms)."""
        tx = ctx.tx
        if (tx is not None and tx.is_invite and self.settings.auto_100trying and not ctx.final_sent
                and tx.last_response is None and self._owners.get(tx) is ctx):
            self.execute(tx, tx.send_response(self.forwarder.reply_to(ctx.request, 100), self.clock.seconds()))

    def _server_tx(self, ctx: ServerContext, trying: bool = True) -> ServerTransaction:
        """The server transaction of ``ctx``, created if it has none yet; an INVITE's sends 100 Trying
        at once with ``proxy.auto_100trying`` unless ``trying`` is False (the caller sends it)."""
        if ctx.tx is not None:
            return ctx.tx
        now = self.clock.seconds()
        reliable = ctx.flow.remote.reliable
        tx: ServerTransaction
        if ctx.request.method == "INVITE":
            tx = ServerInviteTransaction(ctx.request, reliable=reliable, timers=self.timers, now=now,
                                         auto_100=self.settings.auto_100trying and trying)
        else:
            tx = ServerNonInviteTransaction(ctx.request, reliable=reliable, timers=self.timers, now=now)
        ctx.tx = tx
        ctx.live += 1
        self.own(tx, ctx)
        self.execute(tx, tx.start(now))
        return tx

    def drop(self, route: RouteState) -> None:
        """``drop()`` of a request handled statefully: see :meth:`discard`."""
        if route.ctx is not None:
            self.discard(route.ctx)

    def discard(self, ctx: ServerContext) -> None:
        """``drop()``: forget the request's server transaction without answering it (it was made on
        arrival to absorb retransmissions; left alone it would wait forever for a final response)."""
        if ctx.tx is None or ctx.final_sent or ctx.branches:
            return
        if ctx.dialog is not None:
            self.dialogs.answered(ctx, 0)
        self.table.remove(ctx.tx)
        if self._owners.pop(ctx.tx, None) is ctx:
            ctx.live -= 1
        if ctx.live <= 0:
            ctx.release()

    def cancel(self, cancel: Request, flow: Flow) -> None:
        """§16.10: answer the CANCEL ourselves, then cancel every pending branch of its INVITE."""
        inv_tx = self.table.find_invite_for_cancel(cancel)
        ctx = self._owners.get(inv_tx) if inv_tx is not None else None
        to_tag = self.forwarder.to_tag(cancel)
        if not isinstance(ctx, ServerContext):
            self.send_stateless(self.forwarder.reply_to(cancel, 481, to_tag=to_tag), flow)
            return
        self.send_stateless(self.forwarder.reply_to(cancel, 200, to_tag=to_tag), flow)
        self.cancel_invite(ctx, cancel_reason(cancel, self.settings.pass_cancel_reason))

    def cancel_invite(self, ctx: ServerContext, headers: CancelHeaders = ()) -> None:
        """Cancel every pending branch of ``ctx``'s INVITE and answer it 487 (§16.10): for a CANCEL,
        or when the node ends an early dialog itself (its caller's connection is gone, the MI).
        ``headers`` go in each branch's CANCEL (the RFC 3326 Reason)."""
        if ctx.canceled:
            return
        ctx.canceled = True
        ctx.groups = []
        if ctx.final_sent:
            return
        pending = [b for b in ctx.branches if b.final is None]
        if not pending:
            # the route has not relayed yet (or everything already failed): end it here
            if ctx.route is not None:
                ctx.route.replied = True
            self._respond(ctx, self.forwarder.reply_to(ctx.request, 487, "Request Terminated",
                                                       to_tag=self.forwarder.to_tag(ctx.request)))
            return
        for b in pending:
            self._cancel_branch(b, headers)

    # -- replies (the ProxyCore of the route verbs) --------------------------------------------------
    def respond(self, route: RouteState, response: Response, stateful: bool) -> None:
        """A response of the route's: ``send_reply``/``t_reply`` (``stateful``) through the server
        transaction; ``sl_send_reply`` statelessly, as OpenSIPS's ``sl`` module: one reply per request
        received, nothing retransmitted on a timer, a retransmitted request routed and answered again
        (issue 16: the transaction's Timer G made one spoofed INVITE worth eleven 404s). The
        transaction made on arrival is forgotten for a stateless final; it still carries a
        provisional, and a final of a request already relayed (a failure route's)."""
        ctx = route.ctx
        if ctx is not None and (stateful or (ctx.tx is not None and (ctx.branches or response.status < 200))):
            self._respond(ctx, response)
            return
        if ctx is not None and response.status >= 200:
            self.discard(ctx)
        self.send_stateless(response, route.source)

    def send_stateless(self, response: Response, flow: Flow) -> None:
        self.forwarder.send(response_destination(response, flow), response)

    def _respond(self, ctx: ServerContext, response: Response) -> None:
        """Send a response through the server transaction (creating it if needed)."""
        tx = self._server_tx(ctx)
        status = response.status
        if status >= 200:
            if not ctx.final_sent:
                self.finals[status // 100] += 1  # tm's <N>xx_transactions, once per transaction
                if tx.is_invite:  # post-dial delay plus ringing: what the caller waited for an answer
                    setup = self.clock.seconds() - tx.created
                    self.setup_time.observe(setup)
                    if self.calls is not None:
                        self._account(ctx, response, setup)
            ctx.final_sent = True
            if response.status >= 300 and ctx.dialog is not None:
                self.dialogs.answered(ctx, response.status)
            if isinstance(tx, ServerInviteTransaction) and not tx.reliable:
                route = ctx.route
                tx.retransmit_final = self.settings.retransmit_unauthenticated or (route is not None and route.proven)
            if not ctx.branches:
                # answered here: only an ACK or a retransmission can still come (until Timer H/J)
                tx.shed_request()
                ctx.shed(tx.request)
        actions = tx.send_response(response, self.clock.seconds())
        if not actions and 200 <= response.status < 300 and ctx.request.method == "INVITE":
            # §16.7 step 5: a 2xx is always forwarded, even after a negative final (Timer C's 408
            # racing the callee's 200): the server transaction no longer takes it, so statelessly,
            # as a 2xx arriving after the client transaction (§16.7 step 1), for the caller to ACK
            self.forwarder.send(response_destination(response, ctx.flow), response)
            return
        self.execute(tx, actions)

    # -- relaying (§16.6) ----------------------------------------------------------------------------
    def relay(self, route: RouteState, targets: list[Branch]) -> bool:
        """Relay ``route``'s request statefully to ``targets``: q groups tried serially, highest
        first, the targets of a group in parallel (§16.6). False when the request was cancelled."""
        request = route.request
        ctx = route.ctx
        if ctx is None:
            ctx = route.ctx = ServerContext(request, route.source)
            ctx.route = route
        if ctx.canceled:
            return False
        self._server_tx(ctx)
        self.trying(ctx)
        route.relayed = True
        self.stats["relayed"] += 1
        if self.settings.log_decisions:
            log.debug("{method} {call_id} from {src}: relay to {targets}", method=request.method,
                      call_id=request.call_id, src=route.source.remote,
                      targets=", ".join(f"{t.uri} q={t.q}" for t in targets))
        groups: dict[float, list[Branch]] = {}
        for t in targets:
            groups.setdefault(1.0 if t.q is None else t.q, []).append(t)
        ctx.groups = [groups[q] for q in sorted(groups, reverse=True)]
        route.ruri_consumed = route.ruri_key()
        route.branches = []
        route.ruri_branch = None
        self.launcher.start_group(ctx)
        return True

    def forward_ack(self, route: RouteState, target: Branch) -> bool:
        """An ACK for a 2xx is forwarded statelessly (§16.11)."""
        return self.forwarder.forward_stateless(route, target)

    # -- responses (§16.7) ---------------------------------------------------------------------------
    def receive_response(self, response: Response) -> bool:
        """A response from the network: True when it matched a client transaction (§17.1.3)."""
        tx = self.table.match_response(response)
        if tx is None:
            return False
        self.execute(tx, tx.receive_response(response, self.clock.seconds()))
        return True

    def forward_stray(self, response: Response) -> None:
        """A response matching no transaction (§16.7 step 1 / §18.1.2): forwarded statelessly when it
        carries our Via (a 2xx retransmission after our transaction ended), else dropped."""
        via = response.top_via
        if not (via.branch or "").startswith(self.forwarder.branch_prefix):
            log.debug("dropping stray response {status} {call_id}", status=response.status,
                      call_id=response.call_id)
            return
        out = response.copy()
        out.pop_via()
        if not out.headers.get("via"):
            return
        self.forwarder.send(response_destination(out, None), out)

    def _branch_response(self, cb: ClientBranch, response: Response) -> None:
        ctx = cb.ctx
        if ctx is None or cb.replaced:  # released, or a target we failed over from: nobody waits
            return
        status = response.status
        self.hooks.reply_route(ctx, response)
        if ctx.dialog is not None:
            self.dialogs.branch_response(ctx, cb, response)
        if status < 200:
            route = ctx.route
            if route is not None and route.fr_inv_timeout is not None and isinstance(cb.tx, ClientInviteTransaction):
                # OpenSIPS reads $T_fr_inv_timeout when a provisional arrives: the onreply route's value
                cb.tx.restart_timer_c(route.fr_inv_timeout, self.clock.seconds())
            cb.provisional = True
            if cb.cancel_wanted:
                self._cancel_branch(cb, cb.cancel_headers)
            if status == 100 or ctx.final_sent:
                return
            self._forward_response(ctx, response)
            return
        if cb.final is not None and status >= 300:
            return  # the branch already ended (timer C, transport error): late final absorbed
        if status == 503 and cb.alternatives and self.launcher.fail_over(cb, "503"):
            return  # RFC 3261 §21.5.4 / 3263 §4.3 (OpenSIPS and Kamailio DNS failover on 503)
        cb.final = response
        cb.received = True
        if status < 300:
            if ctx.request.method == "INVITE" or not ctx.final_sent:
                self._forward_response(ctx, response)
                ctx.final_sent = True
        if status < 300 or status >= 600:
            # a 2xx or 6xx ends the search (§16.7 step 5, §16.7 step 4 for 6xx)
            ctx.groups = []
            # OpenSIPS (build_cancel): "Call completed elsewhere" after a 2xx (RFC 3326), no Reason after a 6xx
            reason = REASON_COMPLETED_ELSEWHERE if status < 300 else ()
            for other in ctx.branches:
                if other is not cb and other.final is None:
                    self._cancel_branch(other, reason)
            if status < 300:
                return
        self.check_done(ctx)

    def branch_failed(self, cb: ClientBranch, status: int, reason: str) -> None:
        """Timer B/C/F, a transport error or a dead cluster node ended a branch: it counts as
        ``status`` (§16.7 step 6, §16.8)."""
        ctx = cb.ctx
        if cb.final is not None or ctx is None or cb.replaced:
            return
        if status == 408 and cb.provisional and cb.request.method == "INVITE":
            # §16.8: timer C ($T_fr_inv_timeout) fired: CANCEL the branch, with OpenSIPS's Reason
            self._cancel_branch(cb, REASON_NO_ANSWER)
        # generated here, so it gets our To tag like any local final response (§8.2.6.2, §16.9)
        cb.final = self.forwarder.reply_to(cb.request, status, reason, to_tag=self.forwarder.to_tag(ctx.request))
        self.check_done(ctx)

    def check_done(self, ctx: ServerContext) -> None:
        """When every branch has a final response: the next q group, else the failure route, else
        the best response upstream (§16.7 step 6)."""
        if ctx.final_sent or ctx.failure_running or ctx.starting:
            return
        if any(b.final is None for b in ctx.branches):
            return
        if ctx.groups and not ctx.canceled:
            self.launcher.start_group(ctx)
            return
        finals = [b.final for b in ctx.branches if b.final is not None]
        if not finals:
            return
        best = best_response(finals)
        if not ctx.canceled and self.hooks.failure_route(ctx, best):
            return
        self.forward_best(ctx, best)

    def failure_route_done(self, ctx: ServerContext, best: Response, branches_before: int) -> None:
        """A failure route has ended: nothing more when it replied; its new branches decide when it
        relayed (they may all have failed already, while the route held the decision back);
        otherwise ``best`` goes upstream."""
        ctx.failure_running = False
        route = ctx.route
        if route is not None and route.replied:
            return
        if len(ctx.branches) > branches_before:
            self.check_done(ctx)
            return
        self.forward_best(ctx, best)

    def forward_best(self, ctx: ServerContext, best: Response) -> None:
        self._forward_response(ctx, upstream_final(best, [b.final for b in ctx.branches]))

    def _forward_response(self, ctx: ServerContext, response: Response) -> None:
        """§16.7 steps 9-10: drop our Via and send through the server transaction (with the
        request's own CSeq when its dialog renumbered the relayed copies, OpenSIPS dialog)."""
        out = response.copy()
        out.pop_via()
        if not out.headers.get("via"):
            return
        route = ctx.route
        if route is not None and route.cseq_out is not None:
            out.headers.set("CSeq", ctx.request.headers.get("cseq") or "")
        self._respond(ctx, out)

    def _cancel_branch(self, cb: ClientBranch, headers: CancelHeaders = ()) -> None:
        """§9.1 / §16.10: CANCEL a pending INVITE branch once it has had a provisional response,
        with ``headers`` (its RFC 3326 Reason)."""
        tx = cb.tx
        if cb.final is not None or cb.cancel_sent or not isinstance(tx, ClientInviteTransaction):
            return
        if not cb.provisional:
            if not cb.cancel_wanted:
                cb.cancel_wanted, cb.cancel_headers = True, headers
            return
        cb.cancel_sent = True
        cancel = build_cancel(cb.request, headers)
        destination = cb.send_destination()
        now = self.clock.seconds()
        cancel_tx = ClientNonInviteTransaction(cancel, reliable=destination.remote.reliable, timers=self.timers,
                                               now=now)
        self.own(cancel_tx, CancelBranch(destination))
        self.execute(cancel_tx, cancel_tx.start(now))
        self.execute(tx, tx.cancel_sent(now))

    def _account(self, ctx: ServerContext, response: Response, setup: float) -> None:
        """An INVITE's first final response, for its call record: where the branch that gave it went."""
        status = response.status
        chosen = next((b for b in ctx.branches if b.final is not None and b.final.status == status), None)
        destination = chosen.destination.remote if chosen is not None else None
        assert self.calls is not None
        try:
            self.calls.invite_final(ctx.request, response, ctx.flow, destination, setup, ctx.dialog is not None)
        except Exception:
            log.failure("call record of {call_id} failed", call_id=ctx.request.call_id)

    def transactions_by_transport(self) -> dict[tuple[str, str], int]:
        """``("server"|"client", transport)`` -> transactions now: a walk made when scraped."""
        out: dict[tuple[str, str], int] = {}
        for owner in self._owners.values():
            if isinstance(owner, ServerContext):
                key = ("server", owner.flow.transport)
            else:  # a branch, or the CANCEL of one
                key = ("client", owner.destination.remote.transport)
            out[key] = out.get(key, 0) + 1
        return out

    def end_branches_to(self, same_host: HostMatcher, port: int | None, why: str) -> int:
        """End with 480 every branch still waiting for an answer from ``host`` (``port``: any when
        None), as if it had answered so; the number ended."""
        stranded = [cb for cb in self._owners.values()
                    if isinstance(cb, ClientBranch) and cb.final is None and cb.ctx is not None
                    and same_host(cb.destination.remote.host)
                    and (port is None or cb.destination.remote.port == port)]
        noise = self.noise
        for cb in stranded:
            # a node that goes down strands every call relayed to it: one line per destination per
            # interval with the count, not one per branch (issue 16)
            noise.note(str(cb.destination.remote), "branch ended", f"{cb.request.method} {cb.request.call_id}: {why}",
                       cb.request)
            self.branch_failed(cb, 480, "Temporarily Unavailable")
        if stranded:
            self.arm()
        return len(stranded)
