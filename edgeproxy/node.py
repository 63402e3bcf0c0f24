"""The node: receives every message from the transports, runs the route module, owns the timers.

Theory of operation. Transports hand every valid message to :meth:`Node.message_received` with the
:class:`~edgeproxy.sip.endpoint.Flow` it came on (the node is their
:class:`~edgeproxy.interfaces.MessageSink`). A request is first matched against server transactions
(retransmissions and the ACK of a non-2xx are absorbed there, RFC 3261 §17.2.3); a CANCEL is answered
and cancels the branches of the INVITE it matches (§16.10); anything else runs the route module's
``request_route`` with a :class:`~edgeproxy.routing.RouteRequest` over the node's
:class:`~edgeproxy.routing.verbs.RouteVerbs`. Relays and the transactions behind them are the
:class:`~edgeproxy.proxy.engine.StatefulProxy`'s; it asks the node back (:class:`RouteHooks`) when a
reply, failure or branch route is due. Responses go to the proxy's client transactions; one that
matches none is the NAT pinger's, or a stray forwarded statelessly.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any, Callable, Mapping, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .auth import Authenticator
from .coroutine import run_eagerly
from .dialog import DialogTable
from .dispatcher import Dispatcher
from .interfaces import Locator, Sender
from .latency import LatencyHistogram
from .location import LocationService
from .proxy.context import RouteState, ServerContext
from .proxy.engine import StatefulProxy
from .proxy.flood import FloodDetector
from .proxy.flowtoken import FlowTokens
from .proxy.forwarding import Forwarder
from .proxy.hooks import CallObserver
from .proxy.hops import stamp_received
from .proxy.identity import LocalIdentity
from .proxy.noise import NoiseLog
from .proxy.settings import ProxySettings
from .proxy.uac import LocalUac
from .registrar import Registrar
from .routing.api import RouteRequest
from .routing.loader import RouteModule
from .routing.verbs import AddressView, ClusterView, FederationView, RouteVerbs
from .sip.endpoint import Endpoint, Flow
from .sip.errors import SipParseError, SipValueError
from .sip.message import Message, Request, Response
from .sip.parser import bounded_error_response
from .transaction import TimerSettings, TransactionTable

__all__ = ["Node", "NodeCluster", "PingReplies"]

log = Logger(namespace="edgeproxy.proxy")

_STATS = ("requests", "responses", "relayed", "replied", "route_errors", "flood_dropped", "dropped", "timeouts",
          "timeouts_inv", "malformed")
#: Methods counted by name (Kamailio/OpenSIPS ``core:rcv_requests_<method>``); any other is ``OTHER``:
#: a method is a token from the network, so its name never becomes a key of its own.
METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "UPDATE", "PRACK", "SUBSCRIBE",
           "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "OTHER")


class NodeCluster(ClusterView, Protocol):
    """The cluster as the node uses it: the verbs' view plus the node table's SIP addresses."""

    def sip_addr_of(self, node_id: int) -> str | None: ...


class PingReplies(Protocol):
    """The NAT pinger (:class:`edgeproxy.location.natping.NatPinger`): its OPTIONS are sent without
    a transaction, so their replies come to the node as strays and are handed over."""

    def response_received(self, response: Response) -> bool: ...


class Node:
    """One edgeproxy node: the :class:`~edgeproxy.interfaces.MessageSink` of the transports and the
    runner of its route module. Every collaborator is given here; nothing is attached later."""

    def __init__(
        self,
        clock: IReactorTime,
        sender: Sender,
        registrar: Registrar,
        routes: RouteModule,
        settings: ProxySettings = ProxySettings(),
        timers: TimerSettings | None = None,
        route_params: Mapping[str, Any] | None = None,
        *,
        locator: Locator | None = None,
        cluster: NodeCluster | None = None,
        cluster_id: int = 1,
        federation: FederationView | None = None,
        auth: Authenticator | None = None,
        flood: FloodDetector | None = None,
        pinger: PingReplies | None = None,
        dispatcher: Dispatcher | None = None,
        permissions: AddressView | None = None,
        dialogs: DialogTable | None = None,
        calls: CallObserver | None = None,
        flow_tokens: FlowTokens | None = None,
        noise: NoiseLog | None = None,
    ) -> None:
        self.clock = clock
        self.registrar = registrar
        self.location: LocationService = registrar.location
        self.routes = routes
        self.settings = settings
        self.route_params: Mapping[str, Any] = route_params if route_params is not None else {}
        self.locator = locator
        self.cluster = cluster
        self.cluster_id = cluster_id
        self.federation = federation
        self.auth = auth
        self.flood = flood
        self.pinger = pinger
        self.dispatcher = dispatcher
        self.permissions = permissions
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        # what the statistics and Prometheus read (counters only on the message path): requests by
        # method, responses received by class (index status // 100), REGISTER processing times
        self.methods: dict[str, int] = dict.fromkeys(METHODS, 0)
        self.reply_classes: list[int] = [0] * 7
        self.register_time = LatencyHistogram()
        # malformed input and flood drops: one line per source per interval (the transports' too)
        self.noise = noise if noise is not None else NoiseLog(clock)
        self.identity = LocalIdentity(settings.domains)
        # RFC 5626 flow tokens of our Record-Routes; a random key unless given (see service.build_node)
        self.forwarder = Forwarder(sender, settings, locator, flow_tokens, noise=self.noise)
        timers = timers or TimerSettings()
        self.proxy = StatefulProxy(clock, self.forwarder, self, settings, timers, self.stats, dialogs,
                                   noise=self.noise, calls=calls)
        self.dialogs = self.proxy.dialogs  # the dialog table (.table) and what ends dialogs from here
        self.verbs = RouteVerbs(self.proxy, self.forwarder, self.identity, registrar, settings, clock, self.stats,
                                cluster=cluster, cluster_id=cluster_id, federation=federation, auth=auth,
                                flood=flood, timers=timers, dispatcher=dispatcher, permissions=permissions,
                                dialogs=self.dialogs, noise=self.noise)
        # requests of the node's own (the dispatcher's probes), through the proxy's transactions
        self.uac = LocalUac(self.proxy, self.forwarder, clock)

    # -- identity and state --------------------------------------------------------------------------
    def add_local_endpoint(self, endpoint: Endpoint) -> None:
        """Teach the node an address it is reachable at (listeners, advertised names)."""
        self.identity.add_endpoint(endpoint)

    @property
    def table(self) -> TransactionTable:
        """The transaction table (its size is the MI's ``tm:inuse_transactions``)."""
        return self.proxy.table

    def set_log_decisions(self, enabled: bool) -> None:
        """One debug line per routing decision, or none (the MI's ``log_level`` follows the level)."""
        settings = self.settings = replace(self.settings, log_decisions=enabled)
        self.proxy.settings = self.forwarder.settings = self.verbs.settings = settings

    def stop(self) -> None:
        self.proxy.stop()
        self.noise.stop()

    # -- MessageSink ---------------------------------------------------------------------------------
    def message_received(self, message: Message, flow: Flow) -> None:
        """Entry point for every valid message from the transports."""
        try:
            if isinstance(message, Request):
                self.stats["requests"] += 1
                methods = self.methods
                if message.method in methods:
                    methods[message.method] += 1
                else:
                    methods["OTHER"] += 1
                flood = self.flood
                if flood is not None and flood.settings.check_all and not self.verbs.flood_check(flow.remote.host):
                    self.stats["flood_dropped"] += 1  # dropped unanswered, as pike's scripts do
                else:
                    self._on_request(message, flow)
            elif isinstance(message, Response):
                self.stats["responses"] += 1
                self.reply_classes[message.status // 100] += 1
                if not self.proxy.receive_response(message):
                    pinger = self.pinger
                    if pinger is None or not pinger.response_received(message):
                        self.proxy.forward_stray(message)
        except SipValueError as exc:
            self.stats["malformed"] += 1
            self.noise.note(flow.remote.host, "malformed", f"{exc.status} {exc.reason} ({flow.transport})", message)
            if isinstance(message, Request) and message.method != "ACK":
                # bounded as a parse error's reply (the top Via, sane-sized From/To/Call-ID/CSeq)
                reply = bounded_error_response(exc.status, exc.reason,
                                               [(k, v) for k, _, v in message.headers.items()])
                if reply is not None:
                    self.proxy.send_stateless(reply, flow)
        except Exception:
            log.failure("internal error handling message from {flow}", flow=flow)
        self.proxy.arm()

    def malformed_received(self, error: SipParseError, flow: Flow, size: int) -> bool:
        """A message that failed to parse, before the transport answers it (issue 16): counted by
        pike like any message -- a flooding source's broken messages are not answered either -- and
        logged aggregated (:class:`~edgeproxy.proxy.noise.NoiseLog`); False: do not answer."""
        self.stats["malformed"] += 1
        host = flow.remote.host
        flood = self.flood
        if flood is not None and flood.settings.check_all and not self.verbs.flood_check(host):
            self.stats["flood_dropped"] += 1
            self.noise.note(host, "dropped while flooding")
            return False
        self.noise.note(host, "malformed", f"{error.status} {error.reason} ({size} octets over {flow.transport})")
        return True

    def flow_closed(self, flow: Flow) -> None:
        """A connection went away. WebSocket clients cannot be reached any other way (RFC 7118 §5),
        so their bindings go with the connection and calls to them get 404/480 at once instead of a
        timeout; TCP/TLS bindings stay, since their contact can be dialled again (RFC 3261 §18).
        The calls of a party on that connection end with a BYE to both sides (dialogs): nobody
        else would tell the other party (Kamailio issue 4404)."""
        try:
            self.dialogs.flow_closed(flow)
        except Exception:
            log.failure("ending the dialogs of {flow} failed", flow=flow)
        self.proxy.arm()
        if flow.transport in ("WS", "WSS"):
            d = self.location.remove_flow(flow)
            d.addErrback(lambda f: log.failure("removing bindings of {flow} failed", f, flow=flow))

    def _on_request(self, request: Request, flow: Flow) -> None:
        stamp_received(request, flow)
        if request.method == "CANCEL":
            self.proxy.cancel(request, flow)
            return
        if self.proxy.absorb(request):
            return
        if request.method in ("ACK", "REGISTER"):
            # an ACK is never answered; a REGISTER is answered statelessly like OpenSIPS's save(),
            # its retransmissions recognised by the registrar's Call-ID/CSeq rule: a context is made
            # only if the route relays it
            self._route(request, flow, None)
            return
        # the server transaction exists at arrival, so retransmissions are absorbed while an async
        # route runs; an INVITE's 100 Trying follows the route's synchronous part (see trying())
        ctx = self.proxy.open(request, flow)
        self._route(request, flow, ctx)
        self.proxy.trying(ctx)

    # -- running route modules -----------------------------------------------------------------------
    def _msg(self, state: RouteState) -> RouteRequest:
        return RouteRequest(state, self.verbs, self.route_params)

    def _route(self, request: Request, flow: Flow, ctx: ServerContext | None) -> None:
        state = RouteState(request, flow, ctx)
        state.trusted = self.verbs.trusted_source(flow.remote.host)
        if ctx is not None:
            ctx.route = state
        elif request.method == "REGISTER":
            state.started = self.clock.seconds()  # the register_time histogram (_route_done)
        self._call(state, self.routes.request_route, (self._msg(state),), self._route_done)

    def _call(self, state: RouteState, fn: Callable[..., Any], args: tuple[Any, ...],
              done: Callable[[RouteState], None]) -> None:
        """Run a route function (``def`` or ``async def``) and then ``done``; a route that raises is
        answered (:meth:`_route_error`)."""
        try:
            result = fn(*args)
        except Exception:
            self._route_error(Failure(), state)
            return
        if inspect.iscoroutine(result):
            result = run_eagerly(result)
        if isinstance(result, Deferred):
            if result.called and not isinstance(result.result, Failure):
                result.addErrback(lambda _: None)
                done(state)  # finished synchronously: no re-arming needed
                return
            result.addCallbacks(lambda _: done(state), self._route_error, errbackArgs=(state,))
            result.addBoth(self._after_async)
        else:
            done(state)

    def _after_async(self, result: object) -> None:
        self.proxy.arm()

    def _route_done(self, state: RouteState) -> None:
        self.verbs.route_done(state, self.routes.name)
        if state.started:
            self.register_time.observe(self.clock.seconds() - state.started)

    def _route_error(self, failure: Failure, state: RouteState) -> None:
        self.verbs.route_failed(state, failure, self.routes.name)

    # -- RouteHooks: what the proxy core asks of the route module ------------------------------------
    def reply_route(self, ctx: ServerContext, response: Response) -> None:
        state = ctx.route
        hook = None if state is None else state.reply_route or self.routes.onreply_route
        if state is not None and hook is not None:
            self._run_hook("onreply_route", hook, self._msg(state), response)

    def branch_route(self, ctx: ServerContext, request: Request) -> "Deferred[None] | None":
        """The armed (``t_on_branch``) or module-level ``branch_route(msg, request)`` for a branch
        about to leave: ``request`` is the branch's own copy, which it may change. An ``async def``
        that waits holds the branch back until it ends (the Deferred returned)."""
        state = ctx.route
        hook = None if state is None else state.branch_route or self.routes.branch_route
        if state is None or hook is None:
            return None
        return self._run_hook("branch_route", hook, self._msg(state), request)

    def _run_hook(self, name: str, hook: Callable[..., Any], *args: Any) -> "Deferred[None] | None":
        """Run a reply or branch route; its errors are logged, never the transaction's. A Deferred
        when it is still waiting (an ``async def`` awaiting), else None."""
        try:
            result = hook(*args)
        except Exception:
            log.failure("{name} raised", name=name)
            return None
        if inspect.iscoroutine(result):
            result = run_eagerly(result)
        if isinstance(result, Deferred):
            result.addErrback(lambda f: log.failure("{name} raised", f, name=name))
            if not result.called:
                waiting: Deferred[None] = result.addBoth(lambda _: None)
                return waiting
        return None

    def failure_route(self, ctx: ServerContext, best: Response) -> bool:
        """Run the armed (``t_on_failure``, one shot as in OpenSIPS) or module-level failure route;
        it sees ``best`` as ``msg.reply`` and may relay to new branches or reply."""
        state = ctx.route
        hook = None if state is None else state.failure_route or self.routes.failure_route
        if state is None or hook is None:
            return False
        ctx.failure_running = True
        state.reply = best
        state.replied = False
        state.failure_route = None
        before = len(ctx.branches)
        self._call(state, hook, (self._msg(state),), lambda _: self.proxy.failure_route_done(ctx, best, before))
        return True

    def ack_route(self, request: Request, flow: Flow) -> None:
        self._route(request, flow, None)

    # -- cluster -------------------------------------------------------------------------------------
    def cluster_node_changed(self, node_id: int, up: bool) -> None:
        """Cluster subscriber: when a node is declared down, the branches still waiting for its answer
        (relayed to it by a global lookup, or in-dialog, before the verdict) end at once with 480, as
        if it had answered so, instead of running into timer C or B (32 s with the default T1)."""
        cluster = self.cluster
        if up or cluster is None:
            return
        sip_addr = cluster.sip_addr_of(node_id)
        if not sip_addr:
            return
        from .cluster.nodes import same_host, sip_addr_host  # a cluster is running: the package is loaded

        host = sip_addr_host(sip_addr) or sip_addr
        tail = sip_addr.rsplit("]", 1)[-1] if sip_addr.startswith("[") else sip_addr
        port = int(tail.rsplit(":", 1)[1]) if tail.count(":") == 1 else None
        self.proxy.end_branches_to(lambda h: same_host(h, host), port, f"cluster node {node_id} is down")
