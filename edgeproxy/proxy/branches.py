"""The client branches of a relayed request, from their target to their first send (RFC 3261 §16.6).

:class:`BranchLauncher` is the part of the proxy core that turns a target set into client
transactions: q groups are started one at a time, highest q first, the targets of a group in parallel
(§16.6, §16.7 step 6 starts the next group when one has failed). Each target's request is prepared by
the :class:`~edgeproxy.proxy.forwarding.Forwarder` (§16.6 steps 1-8); a next hop given by name is
located first (RFC 3263 §4; the lookup is asynchronous, the branch waits for it), then the
``branch_route`` runs and the client transaction starts and sends (§16.6 steps 9-11). A target that
gives no answer or refuses the send is replaced by the name's next target while DNS failover applies
(RFC 3263 §4.3, OpenSIPS ``tm``'s ``dns_failover``).

What happens to a branch after its first send -- its responses, its timers, its CANCEL -- is the
transaction core's (:class:`~edgeproxy.proxy.engine.StatefulProxy`), which it reaches through
:class:`BranchCore`: the launcher owns no transaction itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..dns import ServerQuery
from ..interfaces import SendError
from ..sip.endpoint import Destination, Endpoint, Flow
from ..sip.errors import SipValueError
from ..transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    SendRequest,
    TimerSettings,
    Transaction,
)
from .context import Branch, ClientBranch, ServerContext
from .forwarding import Forwarder
from .hooks import RouteHooks
from .noise import NoiseLog
from .settings import ProxySettings

__all__ = ["BranchLauncher", "BranchCore"]

log = Logger(namespace="edgeproxy.proxy")


class BranchCore(Protocol):
    """What a starting branch needs of the transaction core (the node's
    :class:`~edgeproxy.proxy.engine.StatefulProxy`): its transaction table, its timer, and the
    decision of §16.7 step 6 once a branch has a final response."""

    def own(self, tx: Transaction, owner: ClientBranch) -> None:
        """Enter ``tx`` in the transaction table, its events going to ``owner``."""

    def execute(self, tx: Transaction, actions: Iterable[object]) -> None:
        """Carry out the actions ``tx`` returned (send, deliver, timeout)."""

    def arm(self) -> None:
        """(Re)arm the timer for the earliest transaction deadline (after a callback changed it)."""

    def check_done(self, ctx: ServerContext) -> None:
        """Every branch of ``ctx`` may have a final response now: decide (§16.7 step 6)."""

    def branch_failed(self, cb: ClientBranch, status: int, reason: str) -> None:
        """``cb`` ended without a response of its own: it counts as ``status`` (§16.7 step 6)."""


class BranchLauncher:
    """Starts the client branches of a relayed request (§16.6) and fails them over (RFC 3263 §4.3)."""

    def __init__(self, core: BranchCore, clock: IReactorTime, forwarder: Forwarder, hooks: RouteHooks,
                 settings: ProxySettings, timers: TimerSettings, noise: NoiseLog) -> None:
        self.core = core
        self.clock = clock
        self.forwarder = forwarder
        self.hooks = hooks
        self.settings = settings
        self.timers = timers
        self.noise = noise
        self._branch_timers: dict[tuple[float | None, float | None], TimerSettings] = {}

    def start_group(self, ctx: ServerContext) -> None:
        """Start every target of ``ctx``'s next q group in parallel (§16.6), then let the core decide
        (every branch of the group may have failed already)."""
        group = ctx.groups.pop(0)
        # a branch may fail synchronously (a UDP send error): the context must not be decided
        # before every branch of the group exists (§16.7 step 6 waits for all branches)
        ctx.starting = True
        try:
            for target in group:
                self._start_branch(ctx, target)
        finally:
            ctx.starting = False
        self.core.check_done(ctx)

    def _start_branch(self, ctx: ServerContext, target: Branch) -> None:
        """§16.6 steps 1-8 for one target; a request that cannot be sent there (a bad URI, no
        transport) is the branch's local final response at once, like OpenSIPS's ``tm``."""
        fw = self.forwarder
        try:
            fwd, destination, query = fw.prepare(ctx.request, target, ctx.route, ctx.flow, fw.new_branch())
        except (SendError, SipValueError) as exc:
            cb = ClientBranch(ctx, target, ctx.request, Destination(Endpoint("UDP", "0.0.0.0", 0)))
            ctx.branches.append(cb)
            cb.final = fw.local_final(ctx.request, ctx.request, exc.status, exc.reason)
            return
        cb = ClientBranch(ctx, target, fwd, destination)
        ctx.branches.append(cb)
        if query is None:
            self._launch(cb)
            return
        cb.base = fwd
        fw.locate(query).addCallbacks(self._located, self._locate_failed, callbackArgs=(cb,),
                                      errbackArgs=(cb, query))

    def _located(self, targets: list[Endpoint], cb: ClientBranch) -> None:
        """The next hop's targets are known: send to the first one that can be tried."""
        ctx = cb.ctx
        if ctx is None or cb.final is not None or cb.replaced:
            return  # the transaction ended while the name was being looked up
        if ctx.canceled or ctx.final_sent:
            cb.final = self.forwarder.local_final(ctx.request, cb.request, 487, "Request Terminated")
        else:
            attempt = self.forwarder.try_next(cb, list(targets))
            if isinstance(attempt, ClientBranch):
                self._launch(attempt)
            else:
                # a name from the request (a Route, a Request-URI): counted per source, not a line each
                self.noise.note(ctx.flow.remote.host, "cannot locate",
                                f"{cb.destination.server_name}: " + (
                                    attempt.reason if targets
                                    else "Name Resolution Failed (no such name or no usable target)"), cb.request)
                cb.final = self.forwarder.local_final(ctx.request, cb.request, attempt.status, attempt.reason)
        if cb.final is not None:
            self.core.check_done(ctx)
        self.core.arm()

    def _locate_failed(self, failure: Failure, cb: ClientBranch, query: ServerQuery) -> None:
        """The name could not be located (RFC 3263 §4: no usable target): the branch ends with the
        lookup's status (503 unless the SendError says otherwise), as OpenSIPS ``tm`` does."""
        err = failure.value
        if not isinstance(err, SendError):
            log.failure("locating {host} failed", failure, host=query.host)
            err = SendError("Name Resolution Failed")
        ctx = cb.ctx
        self.noise.note(ctx.flow.remote.host if ctx is not None else query.host, "cannot locate",
                        f"{query.host}: {err.reason}", cb.request)
        if ctx is None or cb.final is not None or cb.replaced:
            return
        cb.final = self.forwarder.local_final(ctx.request, cb.request, err.status, err.reason)
        self.core.check_done(ctx)
        self.core.arm()

    def fail_over(self, cb: ClientBranch, why: str) -> bool:
        """Move ``cb`` to its next target if DNS failover applies (RFC 3263 §4.3: a timeout, a
        transport error or a 503, and the context still wants an answer); True when a new attempt
        was started."""
        ctx = cb.ctx
        if (not self.settings.dns_failover or ctx is None or cb.replaced or ctx.canceled or ctx.final_sent
                or not cb.alternatives):
            return False
        # a target that fails every call (a carrier's dead server) would be a line per call: the first
        # one per target per interval is said, the rest counted and summed up (issue 16)
        dest = cb.destination.remote
        self.noise.note(str(dest), "failover", f"{cb.request.method} to {dest} failed ({why}): trying the next "
                        f"target of {cb.destination.server_name}", cb.request)
        attempt = self.forwarder.try_next(cb, cb.alternatives)
        if isinstance(attempt, ClientBranch):
            self._launch(attempt)
            return True
        return False

    def _launch(self, cb: ClientBranch) -> None:
        """Run the branch route on ``cb``'s request, then start its client transaction and send it
        (§16.6 steps 9-11); an asynchronous branch route holds the branch back until it ends."""
        ctx = cb.ctx
        assert ctx is not None
        waiting = self.hooks.branch_route(ctx, cb.request)
        if waiting is None:
            self._start_transaction(cb)
            return
        waiting.addCallback(self._branch_route_done, cb)

    def _branch_route_done(self, _: None, cb: ClientBranch) -> None:
        """An asynchronous branch route has ended: send the branch, unless the request was
        cancelled or answered meanwhile (§16.10: nothing new leaves after a CANCEL)."""
        ctx = cb.ctx
        if ctx is None or cb.replaced or cb.final is not None:
            return
        if ctx.canceled or ctx.final_sent:
            cb.final = self.forwarder.local_final(ctx.request, cb.request, 487, "Request Terminated")
            self.core.check_done(ctx)
        else:
            self._start_transaction(cb)
        self.core.arm()

    def _start_transaction(self, cb: ClientBranch) -> None:
        """§16.6 step 10-11: the branch's client transaction (§17.1) with the route's per-transaction
        timers, and its first send; the sender's Deferred says over which flow it left or why not."""
        ctx = cb.ctx
        assert ctx is not None
        fwd = cb.request
        destination = cb.destination
        now = self.clock.seconds()
        reliable = destination.remote.reliable
        route = ctx.route
        timers = self.timers
        per_tx = route is not None and (route.fr_timeout is not None or route.fr_inv_timeout is not None)
        if per_tx:
            assert route is not None
            timers = self.branch_timers(route.fr_timeout, route.fr_inv_timeout)
        tx: ClientTransaction
        if fwd.method == "INVITE":
            tx = ClientInviteTransaction(fwd, reliable=reliable, timers=timers, now=now, c_from_first_reply=per_tx)
        else:
            tx = ClientNonInviteTransaction(fwd, reliable=reliable, timers=timers, now=now)
        cb.tx = tx
        ctx.live += 1
        self.core.own(tx, cb)
        for action in tx.start(now):
            if isinstance(action, SendRequest):
                d = self.forwarder.sender.send(destination, action.request)
                d.addCallbacks(self._branch_sent, self._branch_send_failed, callbackArgs=(cb,), errbackArgs=(cb,))
            else:
                self.core.execute(tx, (action,))

    def branch_timers(self, fr_timeout: float | None, fr_inv_timeout: float | None) -> TimerSettings:
        """The timers of a branch whose route set ``$T_fr_timeout`` / ``$T_fr_inv_timeout`` (OpenSIPS
        ``tm``, seconds; None: the node's): ``fr_timeout`` bounds the wait for any reply (Timer B of an
        INVITE, Timer F otherwise), ``fr_inv_timeout`` the wait for a final after the first reply
        (Timer C, armed from that reply: ``c_from_first_reply``). Read when the branch is sent, as
        OpenSIPS reads them, so a failure route's new value applies to the branches it adds.
        One TimerSettings per distinct pair, kept: routes use a handful of values."""
        key = (fr_timeout, fr_inv_timeout)
        timers = self._branch_timers.get(key)
        if timers is None:
            base = self.timers
            timers = replace(base, timer_b=fr_timeout if fr_timeout is not None else base.timer_b,
                             timer_f=fr_timeout if fr_timeout is not None else base.timer_f,
                             timer_c=fr_inv_timeout if fr_inv_timeout is not None else base.timer_c)
            if len(self._branch_timers) < 64:
                self._branch_timers[key] = timers
        return timers

    @staticmethod
    def _branch_sent(flow: Flow, cb: ClientBranch) -> None:
        """The flow the branch left on: the CANCEL follows it (§9.1: same destination as the request)."""
        cb.flow = flow

    def _branch_send_failed(self, failure: Failure, cb: ClientBranch) -> None:
        """The first send failed (§18.4 transport error): the name's next target when failover
        applies (RFC 3263 §4.3), else the branch ends with the error's status (§16.7 step 6)."""
        err = failure.value
        status = err.status if isinstance(err, SendError) else 503
        reason = err.reason if isinstance(err, SendError) else "Service Unavailable"
        if cb.final is None and cb.alternatives and self.fail_over(cb, reason):
            if cb.tx is not None:  # the failed attempt's transaction ends; its events are ignored now
                self.core.execute(cb.tx, cb.tx.transport_error(self.clock.seconds()))
            self.core.arm()
            return
        # once per call while a next hop refuses: one line per destination per interval, then counts
        self.noise.note(str(cb.destination.remote), "failed branch", failure.getErrorMessage(), cb.request)
        if cb.final is None:
            # the SendError's status is the branch's response (430 Flow Failed, 477 ...): record it
            # before the transaction's TransportFailure would count the branch as a plain 503
            self.core.branch_failed(cb, status, reason)
            if cb.tx is not None:
                self.core.execute(cb.tx, cb.tx.transport_error(self.clock.seconds()))
        self.core.arm()
