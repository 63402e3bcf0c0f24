"""The node: one object that owns the transaction table, runs route modules and drives the stateful
proxy of RFC 3261 §16 (OpenSIPS's ``tm`` + ``sl`` + ``rr``).

Theory of operation. Transports hand every valid message to :meth:`Node.message_received` with the
:class:`Flow` it came on. A request is first matched against server transactions (retransmissions and
the ACK of a non-2xx are absorbed there, §17.2.3); a CANCEL is answered here and cancels the
branches of the INVITE it matches (§16.10); anything else runs the route module's
``request_route``. The route's verbs call back into the node: ``t_relay`` creates one client
transaction per target (§16.6), serially by q groups and in parallel within a group; responses come
back through the client transactions and are forwarded or collected for the best-response choice of
§16.7. Transactions are sans-IO: they return actions (send, deliver, timeout) that the node executes;
the node arms one timer for the earliest transaction deadline.
"""

from __future__ import annotations

import binascii
import inspect
import os
from dataclasses import dataclass
from itertools import count
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..auth import Authenticator
from ..coroutine import run_eagerly
from ..dns import ServerQuery
from ..location import LookupResult
from ..registrar import Registrar, aor_of
from ..routing.api import Branch, RouteRequest, SIPError
from ..routing.loader import RouteModule
from ..sip.endpoint import Destination, Endpoint, Flow
from ..sip.errors import SipParseError, SipValueError
from ..sip.message import Headers, Request, Response
from ..sip.uri import SipURI, parse_uri
from ..transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    DeliverRequest,
    DeliverResponse,
    SendRequest,
    SendResponse,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Terminated,
    Timeout,
    TimerSettings,
    TransactionTable,
    TransportFailure,
)
from .flood import FloodDetector
from .flowtoken import FlowTokens, InvalidFlowToken
from .settings import ProxySettings
from .hops import loose_route, response_destination, stamp_received, uri_destination, uri_query

from ..interfaces import Locator, SendError, Sender

__all__ = ["Node", "ProxySettings"]

log = Logger(namespace="edgeproxy.proxy")


class ClientBranch:
    """One forwarded copy of a request and its client transaction (§16.6).

    A next hop named by a host name is first located (RFC 3263): until then the branch has no
    transaction and ``request`` is ``base``, the copy before our Via and Record-Route. Each target of
    the located list is then tried as a new ClientBranch with a new transaction (§4.3: a new Via
    branch), which takes the old one's place in its context; ``alternatives`` are the targets left,
    and a ``replaced`` branch's late events are ignored (its transaction only finishes its ACKs)."""

    __slots__ = ("ctx", "target", "request", "destination", "tx", "final", "provisional",
                 "cancel_wanted", "cancel_sent", "flow", "base", "alternatives", "replaced")

    def __init__(self, ctx: "ServerContext", target: Branch, request: Request, destination: Destination) -> None:
        self.ctx = ctx
        self.target = target
        self.request = request
        self.destination = destination
        self.tx: Any = None
        self.final: Response | None = None
        self.provisional = False
        self.cancel_wanted = False
        self.cancel_sent = False
        self.flow: Flow | None = None
        self.base: Request | None = None
        self.alternatives: list[Endpoint] | None = None
        self.replaced = False


class CancelBranch:
    """The client transaction of a CANCEL we generated (§9.1); its responses are absorbed."""

    __slots__ = ("destination",)

    def __init__(self, destination: Destination) -> None:
        self.destination = destination


class ServerContext:
    """Everything about one incoming request handled statefully (the OpenSIPS transaction "cell")."""

    __slots__ = ("request", "flow", "tx", "rr", "branches", "groups", "final_sent", "canceled",
                 "failure_running", "starting", "ruri_consumed", "live")

    def __init__(self, request: Request, flow: Flow) -> None:
        self.request = request
        self.flow = flow
        self.tx: Any = None
        self.rr: RouteRequest | None = None
        self.branches: list[ClientBranch] = []
        self.groups: list[list[Branch]] = []
        self.final_sent = False
        self.canceled = False
        self.failure_running = False
        self.starting = False  # a group's branches are being created: no best-response choice yet
        self.ruri_consumed: tuple[str, str | None] | None = None  # Request-URI (and $du) relayed to
        self.live = 0  # transactions of this context not yet terminated

    def release(self) -> None:
        """Break the context's reference cycles (route request, branches) once its last transaction
        has terminated, so it is freed by reference counting rather than by the cyclic garbage
        collector, whose full passes over a large heap stall the reactor for hundreds of ms."""
        rr = self.rr
        if rr is not None:
            rr._ctx = None  # type: ignore[attr-defined]
            rr.reply = None
            self.rr = None
        for b in self.branches:
            b.ctx = None  # type: ignore[assignment]
        self.branches = []
        self.groups = []


def _is_coroutine(x: Any) -> bool:
    return inspect.iscoroutine(x)


def _best_response(responses: list[Response]) -> Response:
    """§16.7 step 6: 6xx wins; else the lowest class: 3xx, then 4xx, then 5xx (as OpenSIPS's
    ``t_pick_branch``). Within a class the first branch wins, except 408/480/503 yield to any other."""
    def rank(r: Response) -> tuple[int, int]:
        cls = r.status // 100
        order = {6: 0, 2: 0, 3: 1, 4: 2, 5: 3}.get(cls, 4)
        soft = 1 if r.status in (408, 503, 480) else 0
        return (order, soft)

    return min(responses, key=rank)


class Node:
    """One edgeproxy node: the :class:`MessageSink` of the transports and the actions behind route
    modules' verbs."""

    def __init__(
        self,
        clock: IReactorTime,
        sender: Sender,
        registrar: Registrar,
        routes: RouteModule,
        settings: ProxySettings = ProxySettings(),
        timers: TimerSettings | None = None,
        route_params: dict[str, Any] | None = None,
    ) -> None:
        self.clock = clock
        self.sender = sender
        self.registrar = registrar
        self.location = registrar.location
        self.routes = routes
        self.settings = settings
        self.timers = timers or TimerSettings()
        self.route_params = route_params if route_params is not None else {}
        self.table = TransactionTable()
        self._owners: dict[Any, Any] = {}
        self._timer: IDelayedCall | None = None
        prefix = binascii.hexlify(os.urandom(4)).decode()
        self._branch_prefix = f"z9hG4bK{prefix}."
        self._branch_seq = count(1)
        self._tag = prefix
        self.flow_tokens = FlowTokens()  # RFC 5626 flow tokens in our Record-Route URIs
        self._local_hosts: set[str] = set()
        self._domains = {d.lower() for d in settings.domains}
        self.cluster: Any = None  # an edgeproxy.cluster.Cluster when clustering is configured
        self.federation: Any = None  # an edgeproxy.federation.Federation with [federation]
        self.auth: Authenticator | None = None  # digest authentication, with [auth]
        self.pinger: Any = None  # an edgeproxy.location.natping.NatPinger: takes its OPTIONS' replies
        self.flood: FloodDetector | None = None  # pike flood detection, with [pike]
        self.cluster_id = 1
        # RFC 3263 location of next hops named by a host name (edgeproxy.transport.locator); None: such
        # names go to the transports as they are, which resolve their A/AAAA (no SRV, no failover)
        self.locator: Locator | None = None
        self.stats = {"requests": 0, "responses": 0, "relayed": 0, "replied": 0, "route_errors": 0,
                      "flood_dropped": 0, "dropped": 0}

    # -- identity ------------------------------------------------------------------------------------
    def add_local_endpoint(self, endpoint: Endpoint) -> None:
        """Teach the node an address it is reachable at (listeners, advertised names)."""
        self._local_hosts.add(f"{endpoint.host.lower()}:{endpoint.port}")
        self._local_hosts.add(endpoint.host.lower())

    def is_myself(self, host: str, port: int | None = None) -> bool:
        host = host.lower()
        if host.startswith("["):
            host = host[1:-1]
        if host in self._domains:
            return True
        if port is None:
            return host in self._local_hosts
        return f"{host}:{port}" in self._local_hosts

    def cluster_check_addr(self, cluster_id: int, ip: str) -> bool:
        """OpenSIPS ``cluster_check_addr``: ``ip`` is the sip_addr of another node of the cluster."""
        return self.cluster is not None and self.cluster.cluster_check_addr(cluster_id, ip)

    def _new_branch(self) -> str:
        return f"{self._branch_prefix}{next(self._branch_seq):x}"

    def _to_tag(self, request: Request) -> str:
        via = request.top_via
        key = f"{request.call_id}|{request.from_tag}|{via.branch}".encode("utf-8", "surrogateescape")
        return f"{self._tag}-{binascii.crc32(key):08x}"

    # -- MessageSink ---------------------------------------------------------------------------------
    def message_received(self, message: Request | Response, flow: Flow) -> None:
        """Entry point for every valid message from the transports."""
        try:
            if isinstance(message, Request):
                self.stats["requests"] += 1
                flood = self.flood
                if flood is not None and flood.settings.check_all and not self.flood_check(flow.remote.host):
                    self.stats["flood_dropped"] += 1  # dropped unanswered, as pike's scripts do
                else:
                    self._on_request(message, flow)
            else:
                self.stats["responses"] += 1
                self._on_response(message, flow)
        except SipValueError as exc:
            log.info("dropping message from {flow}: {reason}", flow=flow, reason=exc.reason)
            if isinstance(message, Request) and message.method != "ACK":
                self._send_stateless(message.make_response(exc.status, exc.reason), flow)
        except Exception:
            log.failure("internal error handling message from {flow}", flow=flow)
        self._arm()

    def flow_closed(self, flow: Flow) -> None:
        """A connection went away. WebSocket clients cannot be reached any other way (RFC 7118 §5),
        so their bindings go with the connection and calls to them get 404/480 at once instead of a
        timeout; TCP/TLS bindings stay, since their contact can be dialled again (RFC 3261 §18)."""
        if flow.transport in ("WS", "WSS"):
            d = self.location.remove_flow(flow)
            d.addErrback(lambda f: log.failure("removing bindings of {flow} failed", f, flow=flow))

    # -- timers --------------------------------------------------------------------------------------
    def _arm(self) -> None:
        when = self.table.get_timer()
        timer = self._timer
        if when is None:
            if timer is not None and timer.active():
                timer.cancel()
            self._timer = None
            return
        if timer is not None and timer.active():
            if timer.getTime() <= when:
                return
            timer.cancel()
        self._timer = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        try:
            for tx, action in self.table.handle_timer(self.clock.seconds()):
                self._run(tx, (action,))
        except Exception:
            log.failure("internal error in transaction timers")
        self._arm()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- executing transaction actions ---------------------------------------------------------------
    def _run(self, tx: Any, actions: Any) -> None:
        owner = self._owners.get(tx)
        for action in actions:
            if isinstance(action, SendResponse):
                ctx: ServerContext = owner
                self._send(response_destination(action.response, ctx.flow), action.response)
            elif isinstance(action, SendRequest):
                if owner is not None:
                    dst = owner.destination
                    self._send(dst if isinstance(owner, CancelBranch)
                               else Destination(dst.remote, owner.flow or dst.flow, dst.flow_only, dst.server_name),
                               action.request)
            elif isinstance(action, DeliverResponse):
                if isinstance(owner, ClientBranch):
                    self._branch_response(owner, action.response)
            elif isinstance(action, DeliverRequest):
                # an ACK for a 2xx that matched the INVITE server transaction (RFC 6026 Accepted):
                # it is end-to-end, route it like any in-dialog request
                if owner is not None:
                    self._route(action.request, owner.flow, None)
            elif isinstance(action, Timeout):
                if isinstance(owner, ClientBranch):
                    # no answer at all from this target (not even 1xx): RFC 3263 §4.3, the next one
                    if owner.alternatives and not owner.provisional and self._fail_over(owner, "timeout"):
                        continue
                    self._branch_failed(owner, 408, "Request Timeout")
            elif isinstance(action, TransportFailure):
                if isinstance(owner, ClientBranch):
                    self._branch_failed(owner, 503, "Service Unavailable")
            elif isinstance(action, Terminated):
                gone = self._owners.pop(tx, None)
                ctx = gone if isinstance(gone, ServerContext) else getattr(gone, "ctx", None)
                if ctx is not None:
                    ctx.live -= 1
                    if ctx.live <= 0:
                        ctx.release()

    def _send(self, destination: Destination, message: Request | Response) -> "Deferred[Flow]":
        d = self.sender.send(destination, message)
        d.addErrback(self._log_send_failure, destination, message)
        return d

    def _log_send_failure(self, failure: Failure, destination: Destination, message: Any) -> None:
        log.info("send to {dest} failed: {why}", dest=destination.remote, why=failure.getErrorMessage())

    def _send_stateless(self, response: Response, flow: Flow) -> None:
        self._send(response_destination(response, flow), response)

    # -- requests ------------------------------------------------------------------------------------
    def _on_request(self, request: Request, flow: Flow) -> None:
        stamp_received(request, flow)
        if request.method == "CANCEL":
            self._on_cancel(request, flow)
            return
        tx = self.table.match_request(request)
        if tx is not None:
            self._run(tx, tx.receive_request(request, self.clock.seconds()))
            return
        if request.method == "ACK":
            self._route(request, flow, None)
            return
        if request.method == "REGISTER":
            # answered statelessly like OpenSIPS's save(), its retransmissions recognised by the
            # registrar's Call-ID/CSeq rule; a context is made only if the route relays it
            self._route(request, flow, None)
            return
        # the server transaction exists at arrival, so retransmissions are absorbed while an async
        # route runs. An INVITE's 100 Trying waits for the route's synchronous part: a route that
        # answers at once (404, a 407 challenge, 403) needs none (§17.2.1: the TU answers within
        # 200 ms), which saves a send on every refused call; one that relays or awaits gets it in
        # the same turn of the reactor, before anything is read from the network again.
        ctx = ServerContext(request, flow)
        self._server_tx(ctx, trying=False)
        self._route(request, flow, ctx)
        self._trying(ctx)

    def _trying(self, ctx: ServerContext) -> None:
        """The deferred 100 Trying of an INVITE (see :meth:`_on_request`): sent once, before the
        request is relayed or when the route's synchronous part ends without a final answer."""
        tx = ctx.tx
        if (tx is not None and tx.is_invite and self.settings.auto_100trying and not ctx.final_sent
                and tx.last_response is None and self._owners.get(tx) is ctx):
            self._run(tx, tx.send_response(ctx.request.make_response(100), self.clock.seconds()))

    def _server_tx(self, ctx: ServerContext, trying: bool = True) -> Any:
        """Create the server transaction of ``ctx`` if it has none yet; an INVITE's sends 100 Trying
        at once with ``proxy.auto_100trying`` unless ``trying`` is False (the caller sends it)."""
        if ctx.tx is not None:
            return ctx.tx
        now = self.clock.seconds()
        reliable = ctx.flow.remote.reliable
        if ctx.request.method == "INVITE":
            tx = ServerInviteTransaction(ctx.request, reliable=reliable, timers=self.timers, now=now,
                                         auto_100=self.settings.auto_100trying and trying)
        else:
            tx = ServerNonInviteTransaction(ctx.request, reliable=reliable, timers=self.timers, now=now)
        ctx.tx = tx
        self._owners[tx] = ctx
        ctx.live += 1
        self.table.add(tx)
        self._run(tx, tx.start(now))
        return tx

    def _on_cancel(self, cancel: Request, flow: Flow) -> None:
        """§16.10: answer the CANCEL ourselves, then cancel every pending branch of its INVITE."""
        inv_tx = self.table.find_invite_for_cancel(cancel)
        ctx = self._owners.get(inv_tx) if inv_tx is not None else None
        if ctx is None:
            self._send_stateless(cancel.make_response(481, to_tag=self._to_tag(cancel)), flow)
            return
        self._send_stateless(cancel.make_response(200, to_tag=self._to_tag(cancel)), flow)
        if ctx.canceled:
            return
        ctx.canceled = True
        ctx.groups = []
        if ctx.final_sent:
            return
        pending = [b for b in ctx.branches if b.final is None]
        if not pending:
            # the route has not relayed yet (or everything already failed): end it here
            self._reply_ctx(ctx, 487, "Request Terminated")
            return
        for b in pending:
            self._cancel_branch(b)

    # -- running route modules -----------------------------------------------------------------------
    def _route(self, request: Request, flow: Flow, ctx: ServerContext | None) -> None:
        rr = RouteRequest(request, flow, self, self.route_params)
        rr._ctx = ctx  # type: ignore[attr-defined]
        if ctx is not None:
            ctx.rr = rr
        self._call_route(rr, self.routes.request_route, (rr,), self._route_done)

    def _call_route(self, rr: RouteRequest, fn: Callable[..., Any], args: tuple, done: Callable[[RouteRequest], None]) -> None:
        try:
            result = fn(*args)
        except Exception:
            self._route_error(Failure(), rr)
            return
        if _is_coroutine(result):
            result = run_eagerly(result)
        if isinstance(result, Deferred):
            if result.called and not isinstance(result.result, Failure):
                result.addErrback(lambda _: None)
                done(rr)  # finished synchronously: no re-arming needed
                return
            result.addCallbacks(lambda _: done(rr), self._route_error, errbackArgs=(rr,))
            result.addBoth(self._after_async)
        else:
            done(rr)

    def _after_async(self, result: Any) -> Any:
        self._arm()
        return None

    def _route_done(self, rr: RouteRequest) -> None:
        if rr.replied or rr.relayed or rr.request.method == "ACK":
            return
        if rr.dropped:
            self._discard(rr)
            return
        ctx = getattr(rr, "_ctx", None)
        if ctx is not None and ctx.canceled:
            return
        log.warn("route {route} neither replied nor relayed {method} {call_id}; answering {status}",
                 route=self.routes.name, method=rr.request.method, call_id=rr.request.call_id,
                 status=self.settings.no_reply_status)
        self.reply(rr, self.settings.no_reply_status, None, True)

    def _discard(self, rr: RouteRequest) -> None:
        """``drop()``: forget the request's server transaction without answering it (it was made on
        arrival to absorb retransmissions; left alone it would wait forever for a final response)."""
        self.stats["dropped"] += 1
        ctx: ServerContext | None = getattr(rr, "_ctx", None)
        if ctx is None or ctx.tx is None or ctx.final_sent or ctx.branches:
            return
        self.table.remove(ctx.tx)
        if self._owners.pop(ctx.tx, None) is ctx:
            ctx.live -= 1
        if ctx.live <= 0:
            ctx.release()

    def _route_error(self, failure: Failure, rr: RouteRequest) -> None:
        if failure.check(SIPError):
            err: SIPError = failure.value  # type: ignore[assignment]
            if not rr.replied and rr.request.method != "ACK":
                self.reply(rr, err.code, err.reason, True)
            return
        if failure.check(SipParseError):
            # a header the route read is malformed (e.g. its credentials): the client's error, answered
            # with the status the error carries, not a 500
            bad: SipParseError = failure.value  # type: ignore[assignment]
            log.info("{method} {call_id} from {src}: {status} {reason}", method=rr.request.method,
                     call_id=rr.request.call_id, src=rr.source.remote, status=bad.status, reason=bad.reason)
            if not rr.replied and rr.request.method != "ACK":
                self.reply(rr, bad.status, bad.reason, False)
            return
        self.stats["route_errors"] += 1
        log.failure("route {route} raised on {method} {call_id}", failure, route=self.routes.name,
                    method=rr.request.method, call_id=rr.request.call_id)
        if not rr.replied and rr.request.method != "ACK":
            self.reply(rr, 500, "Server Internal Error", True)

    # -- RouteActions: replies -----------------------------------------------------------------------
    def reply(self, rr: RouteRequest, code: int, reason: str | None, stateful: bool) -> None:
        request = rr.request
        if request.method == "ACK" or rr.replied:
            return
        rr.replied = True
        self.stats["replied"] += 1
        if self.settings.log_decisions:
            log.debug("{method} {call_id} from {src}: reply {code} {reason}", method=request.method,
                      call_id=request.call_id, src=rr.source.remote, code=code, reason=reason or "")
        response = request.make_response(code, reason, to_tag=self._to_tag(request))
        for name, value in rr.reply_headers:  # the route's append_to_reply(), e.g. Retry-After on a 503
            response.headers.add(name, value)
        if 300 <= code < 400:
            targets = ([] if not rr.ruri_changed else [request.uri]) + [b.uri for b in rr.branches]
            if targets:
                response.headers.add("Contact", ", ".join(f"<{t}>" for t in targets))
        ctx: ServerContext | None = getattr(rr, "_ctx", None)
        if ctx is not None and (ctx.tx is not None or stateful):
            self._respond(ctx, response)
        else:
            self._send_stateless(response, rr.source)

    def _reply_ctx(self, ctx: ServerContext, code: int, reason: str | None) -> None:
        if ctx.rr is not None:
            ctx.rr.replied = True
        self._respond(ctx, ctx.request.make_response(code, reason, to_tag=self._to_tag(ctx.request)))

    def _respond(self, ctx: ServerContext, response: Response) -> None:
        """Send a response through the server transaction (creating it if needed)."""
        tx = self._server_tx(ctx)
        if response.status >= 200:
            ctx.final_sent = True
        actions = tx.send_response(response, self.clock.seconds())
        if not actions and 200 <= response.status < 300 and ctx.request.method == "INVITE":
            # §16.7 step 5: a 2xx is always forwarded, even after a negative final (Timer C's 408
            # racing the callee's 200): the server transaction no longer takes it, so statelessly,
            # as a 2xx arriving after the client transaction (§16.7 step 1), for the caller to ACK
            self._send(response_destination(response, ctx.flow), response)
            return
        self._run(tx, actions)

    # -- RouteActions: location ----------------------------------------------------------------------
    def lookup(self, rr: RouteRequest, table: str, flags: str, aor: str | None) -> "Deferred[LookupResult]":
        """OpenSIPS ``lookup()``: on FOUND the Request-URI becomes the first contact and the others
        become branches. Flag ``m`` filters by method; flag ``g`` (federation) adds one branch per
        other node holding the AoR, unless the request came from a cluster node (it has crossed the
        cluster once already: the loop guard) or that node is down."""
        try:
            uri = parse_uri(aor if aor.startswith(("sip:", "sips:")) else f"sip:{aor}") if aor else rr.request.uri
        except SipValueError:
            return succeed(LookupResult.ERROR)
        if not isinstance(uri, SipURI):
            return succeed(LookupResult.NOT_FOUND)
        key = aor_of(uri, self.registrar.settings.use_domain)
        method = rr.request.method if "m" in flags else None
        if "g" in flags and self.federation is not None and not self.cluster_check_addr(self.cluster_id, rr.source_ip):
            return self.federation.global_lookup(key, method).addCallback(self._global_found, rr, key)
        d = maybeDeferred(self.location.lookup, key, method)

        def found(result: tuple[LookupResult, list[Any]]) -> LookupResult:
            code, bindings = result
            if code != LookupResult.FOUND or not bindings:
                return code if code != LookupResult.FOUND else LookupResult.NOT_FOUND
            rr.set_targets([Branch.to_binding(b) for b in bindings])
            return LookupResult.FOUND

        def failed(failure: Failure) -> LookupResult:
            log.failure("lookup of {aor} failed", failure, aor=key)
            return LookupResult.ERROR

        return d.addCallbacks(found, failed)

    def _global_found(self, result: Any, rr: RouteRequest, key: str) -> LookupResult:
        """Local contacts first, then a branch ``sip:<aor>`` via each live home node (OpenSIPS's
        federation lookup), never to this node."""
        if result.code != LookupResult.FOUND:
            return LookupResult(result.code)
        targets = [Branch.to_binding(b) for b in result.bindings]
        for home in result.homes:
            if self.cluster is not None:
                peer = self.cluster.node_for_sip_addr(home.rsplit(":", 1)[0] if home.count(":") == 1 else home,
                                                      self.cluster_id)
                if peer is not None and not self.cluster.is_up(peer.node_id, self.cluster_id):
                    continue  # a dead node is skipped, not waited for
            targets.append(Branch.via_node(key, home))
        if not targets:
            return LookupResult.NOT_FOUND
        rr.set_targets(targets)
        if self.settings.log_decisions:
            log.debug("global lookup {aor}: {n} local, homes {homes}", aor=key, n=len(result.bindings),
                      homes=", ".join(result.homes) or "none")
        return LookupResult.FOUND

    def cache_raw_query(self, rr: RouteRequest, command: Any) -> "Deferred[list[dict[str, Any]]]":
        """OpenSIPS ``cache_raw_query`` on the federation store; fails when none is configured."""
        if self.federation is None:
            return fail(SendError("no federation store configured", 500))
        return self.federation.raw_query(command)

    # -- flood detection (pike) ----------------------------------------------------------------------
    def flood_check(self, ip: str) -> bool:
        """Count a request from ``ip``; False when it floods. Trusted sources and the other nodes of
        the cluster are never counted: their traffic is many users' traffic."""
        flood = self.flood
        if flood is None or flood.is_trusted(ip) or self.cluster_check_addr(self.cluster_id, ip):
            return True
        ok, change = flood.check_and_report(ip, self.clock.seconds())
        if change == "blocked":
            log.warn("pike: {ip} is flooding (over {n} requests per {unit:g} s): its requests are refused",
                     ip=ip, n=flood.settings.reqs_density_per_unit, unit=flood.settings.sampling_time_unit)
        elif change == "unblocked":
            log.info("pike: {ip} is below the limit again", ip=ip)
        return ok

    def pike_check_req(self, rr: RouteRequest) -> bool:
        """OpenSIPS ``pike_check_req()``. With ``check_all`` every request was counted on arrival and
        only those that passed reach a route, so the answer is True without counting twice."""
        if self.flood is None:
            raise RuntimeError("the route calls pike_check_req(), but the node has no [pike] section")
        if self.flood.settings.check_all:
            return True
        return self.flood_check(rr.source_ip)

    # -- RouteActions: authentication ----------------------------------------------------------------
    def authenticator(self) -> Authenticator | None:
        return self.auth

    def cluster_node_changed(self, node_id: int, up: bool) -> None:
        """Cluster subscriber: when a node is declared down, the branches still waiting for its answer
        (relayed to it by a global lookup, or in-dialog, before the verdict) end at once with 480, as
        if it had answered so, instead of running into timer C or B (32 s with the default T1)."""
        if up or self.cluster is None:
            return
        sip_addr = self.cluster.sip_addr_of(node_id)
        if not sip_addr:
            return
        from ..cluster.nodes import same_host, sip_addr_host

        host = sip_addr_host(sip_addr) or sip_addr
        tail = sip_addr.rsplit("]", 1)[-1] if sip_addr.startswith("[") else sip_addr
        port = int(tail.rsplit(":", 1)[1]) if tail.count(":") == 1 else None
        stranded = [cb for cb in self._owners.values()
                    if isinstance(cb, ClientBranch) and cb.final is None and cb.ctx is not None
                    and same_host(cb.destination.remote.host, host)
                    and (port is None or cb.destination.remote.port == port)]
        for cb in stranded:
            log.info("{method} {call_id}: branch to {dest} ends, cluster node {node} is down",
                     method=cb.request.method, call_id=cb.request.call_id, dest=cb.destination.remote,
                     node=node_id)
            self._branch_failed(cb, 480, "Temporarily Unavailable")
        if stranded:
            self._arm()

    def save(self, rr: RouteRequest, table: str, flags: str) -> "Deferred[bool]":
        request = rr.request
        d = self.registrar.save(request, rr.source, nat=rr.nat, sipping=rr.sipping)

        def saved(response: Response) -> bool:
            if self.settings.log_decisions:
                log.debug("REGISTER {call_id} from {src}: save -> {status}", call_id=request.call_id,
                          src=rr.source.remote, status=response.status)
            if "r" not in flags and not rr.replied:
                rr.replied = True
                self.stats["replied"] += 1
                if response.status >= 200 and request.to_tag is None:
                    self._add_to_tag(response, request)
                self._send_stateless(response, rr.source)
            return response.status == 200

        def failed(failure: Failure) -> bool:
            log.failure("save() failed for {call_id}", failure, call_id=request.call_id)
            if not rr.replied:
                self.reply(rr, 500, "Server Internal Error", False)
            return False

        return d.addCallbacks(saved, failed)

    def _add_to_tag(self, response: Response, request: Request) -> None:
        to = response.headers.get("to")
        if to is not None and "tag=" not in to.lower():
            response.headers.set("To", f"{to};tag={self._to_tag(request)}")

    # -- RouteActions: routing -----------------------------------------------------------------------
    def loose_route(self, rr: RouteRequest) -> bool:
        """OpenSIPS ``loose_route()`` plus RFC 5626 §5.3: when one of our popped Route URIs carries
        a flow token naming another connection than the one the request came on, the request goes
        over that connection (it is heading back to the client behind it); a token naming the
        arrival connection means the request comes from that client and is routed as usual. A
        token that fails its MAC gets 403 at ``t_relay``."""
        popped: list[SipURI] = []
        routed = loose_route(rr.request, self.is_myself, popped, self._is_flow_token)
        arrival = rr.source.connection_id if rr.source is not None else None
        for uri in popped:
            try:
                flow = self.flow_tokens.decode(uri.user)
            except InvalidFlowToken:
                log.info("{method} {call_id} from {src}: Route with a forged or stale flow token",
                         method=rr.request.method, call_id=rr.request.call_id, src=rr.source.remote)
                rr._flow_error = True  # type: ignore[attr-defined]
                break
            if flow is None or flow.connection_id == arrival:
                continue
            rr._flow_dst = self._flow_destination(flow, rr.request.uri)  # type: ignore[attr-defined]
            break
        return routed

    def _is_flow_token(self, user: str) -> bool:
        try:
            return self.flow_tokens.decode(user) is not None
        except InvalidFlowToken:
            return True

    def _flow_destination(self, flow: Flow, ruri: Any) -> Destination:
        """Where a request goes whose Route named ``flow``: over that connection. WebSocket clients
        cannot be reached otherwise (430 Flow Failed when it has closed); for TCP/TLS the Request-URI
        is dialled instead if it is routable over the same transport and not an outbound (``ob``,
        RFC 5626) or ``.invalid`` contact."""
        remote = flow.remote
        flow = Flow(self.sender.local_endpoint(remote.transport, remote) or flow.local, remote, flow.connection_id)
        if remote.transport in ("TCP", "TLS") and isinstance(ruri, SipURI) and "ob" not in ruri.params:
            fallback = uri_destination(ruri)
            if not fallback.flow_only and fallback.remote.transport == remote.transport:
                return Destination(fallback.remote, flow)
        return Destination(remote, flow, flow_only=True)

    def relay(self, rr: RouteRequest) -> bool:
        request = rr.request
        ctx: ServerContext | None = getattr(rr, "_ctx", None)
        if rr.replied or (rr.relayed and (ctx is None or not ctx.failure_running)):
            return False
        if getattr(rr, "_flow_error", False):
            self.reply(rr, 403, "Invalid Flow Token", False)  # RFC 5626 §5.3 (nothing for an ACK)
            return False
        if request.max_forwards == 0:
            self.reply(rr, 483, "Too Many Hops", False)
            return True
        targets = self._targets(rr)
        if (ctx is not None and ctx.failure_running and rr.ruri_branch is None
                and ctx.ruri_consumed == (request.uri_text, str(rr.dst_uri) if rr.dst_uri else None)):
            # in failure_route the Request-URI already tried is not tried again unless the route
            # changed it (OpenSIPS/Kamailio "ruri consumed"): append_branch() + t_relay() goes to
            # the new targets only
            targets = targets[1:]
        if not targets:
            return False
        if request.method == "ACK":
            rr.relayed = True
            return self._forward_stateless(rr, targets[0])
        if ctx is None:
            ctx = ServerContext(request, rr.source)
            rr._ctx = ctx  # type: ignore[attr-defined]
            ctx.rr = rr
        if ctx.canceled:
            return False
        self._server_tx(ctx)
        self._trying(ctx)
        rr.relayed = True
        self.stats["relayed"] += 1
        if self.settings.log_decisions:
            log.debug("{method} {call_id} from {src}: relay to {targets}", method=request.method,
                      call_id=request.call_id, src=rr.source.remote,
                      targets=", ".join(f"{t.uri} q={t.q}" for t in targets))
        groups: dict[float, list[Branch]] = {}
        for t in targets:
            groups.setdefault(1.0 if t.q is None else t.q, []).append(t)
        ctx.groups = [groups[q] for q in sorted(groups, reverse=True)]
        ctx.ruri_consumed = (request.uri_text, str(rr.dst_uri) if rr.dst_uri else None)
        rr.branches = []
        rr.ruri_branch = None
        self._start_group(ctx)
        return True

    def _targets(self, rr: RouteRequest) -> list[Branch]:
        first = rr.ruri_branch or Branch(rr.request.uri, dst_uri=rr.dst_uri)
        if rr.ruri_branch is None and rr.dst_uri is not None:
            first.dst_uri = rr.dst_uri
        elif rr.ruri_branch is None:
            # the flow named by a popped Route's flow token (RFC 5626 §5.3); set_dst() overrides it
            first.destination = getattr(rr, "_flow_dst", None)
        return [first, *rr.branches]

    def _next_hop(self, request: Request, target: Branch) -> tuple[Destination, ServerQuery | None]:
        """§16.6 step 7: where ``request`` goes for ``target`` (a flow, ``$du``, the top Route or the
        Request-URI), and what RFC 3263 must look up first when that URI names a host (None for IP
        literals, and for every hop when no locator is configured)."""
        if target.destination is not None:
            return target.destination, None
        uri = target.dst_uri
        if uri is None:
            routes = request.routes
            top = routes[0].uri if routes else None
            if isinstance(top, SipURI):
                uri = top
            elif isinstance(target.uri, SipURI):
                uri = target.uri
            else:
                raise SendError("Unsupported URI Scheme", 416)
        destination = uri_destination(uri)
        if self.locator is None:
            return destination, None
        query = uri_query(uri)
        if query is not None:
            destination = Destination(destination.remote, destination.flow, destination.flow_only, query.host)
        return destination, query

    def _transports(self) -> frozenset[str]:
        """The transports a located next hop may use: those we have a listener for (Via needs one)."""
        return frozenset(t for t in ("UDP", "TCP", "TLS") if self.sender.local_endpoint(t) is not None)

    def _start_group(self, ctx: ServerContext) -> None:
        group = ctx.groups.pop(0)
        # a branch may fail synchronously (a UDP send error): the context must not be decided
        # before every branch of the group exists (§16.7 step 6 waits for all branches)
        ctx.starting = True
        try:
            for target in group:
                self._start_branch(ctx, target)
        finally:
            ctx.starting = False
        self._check_done(ctx)

    def _prepare(self, request: Request, target: Branch, rr: RouteRequest | None, in_flow: Flow,
                 branch: str) -> tuple[Request, Destination, ServerQuery | None]:
        """§16.6 steps 1-8 for one target: copy, Request-URI, Max-Forwards, Route (Path), next hop,
        and then Record-Route and Via -- unless the next hop must be located first (a query is
        returned): those two depend on the transport and address family, which the location picks,
        so :meth:`_stamp` adds them per target tried."""
        fwd = request.copy()
        if str(target.uri) != request.uri_text:
            fwd.uri = target.uri
        mf = fwd.max_forwards
        fwd.max_forwards = (mf - 1) if mf is not None else self.settings.max_forwards_default
        for p in reversed(target.path):
            fwd.headers.push("Route", p)
        destination, query = self._next_hop(fwd, target)
        routes = fwd.routes
        if routes and isinstance(routes[0].uri, SipURI) and not routes[0].uri.lr:
            # §16.6 step 6: the next hop is a strict router: it gets the request with its URI as
            # Request-URI, and the Request-URI goes to the end of the route set
            fwd.headers.add("Route", f"<{fwd.uri_text}>")
            fwd.headers.pop_first_value("route")
            fwd.uri = routes[0].uri
        if query is None:
            self._stamp(fwd, destination, rr, in_flow, branch)
        return fwd, destination, query

    def _stamp(self, fwd: Request, destination: Destination, rr: RouteRequest | None, in_flow: Flow,
               branch: str) -> None:
        """§16.6 steps 4 and 8 for a resolved next hop: Record-Route and our Via, from the listener
        that faces ``destination`` (SendError 503 when there is none; ``fwd`` is then unchanged)."""
        local = self.sender.local_endpoint(destination.remote.transport, destination.remote)
        if local is None:
            raise SendError(f"no {destination.remote.transport} listener", 503)
        if rr is not None and rr.record_routed and fwd.method not in ("REGISTER", "ACK", "CANCEL"):
            # RFC 5626 §5.3 / RFC 7118 §5: an entry facing a client on a connection names that
            # connection with a flow token; two entries when the request changes listener (RFC 5658)
            # or goes from one client's connection to another's, so each side's in-dialog requests
            # find the other side's connection
            inbound = in_flow.local
            in_token = self.flow_tokens.encode(in_flow)
            out_token = self.flow_tokens.encode(destination.flow)
            if ((self.settings.record_route_double and inbound != local)
                    or (in_token is not None and out_token is not None and in_token != out_token)):
                fwd.headers.push("Record-Route", _rr_uri(inbound, in_token))
                fwd.headers.push("Record-Route", _rr_uri(local, out_token))
            else:
                fwd.headers.push("Record-Route", _rr_uri(local, in_token or out_token))
        fwd.push_via(f"SIP/2.0/{local.transport} {local.hostport};branch={branch}")

    def _start_branch(self, ctx: ServerContext, target: Branch) -> None:
        branch = self._new_branch()
        try:
            fwd, destination, query = self._prepare(ctx.request, target, ctx.rr, ctx.flow, branch)
        except (SendError, SipValueError) as exc:
            cb = ClientBranch(ctx, target, ctx.request, Destination(Endpoint("UDP", "0.0.0.0", 0)))
            ctx.branches.append(cb)
            cb.final = self._local_final(ctx, ctx.request, exc.status, exc.reason)
            return
        cb = ClientBranch(ctx, target, fwd, destination)
        ctx.branches.append(cb)
        if query is None:
            self._launch(cb)
            return
        cb.base = fwd
        try:
            located = self.locator.locate(query, self._transports())  # type: ignore[union-attr]
        except Exception:
            log.failure("locating {host} failed", host=query.host)
            located = fail(SendError("Name Resolution Failed"))
        located.addCallbacks(self._located, self._locate_failed, callbackArgs=(cb,), errbackArgs=(cb, query))

    def _local_final(self, ctx: ServerContext, request: Request, status: int, reason: str) -> Response:
        """A final response of ours for a branch that never got a transaction. The copy still gets a
        Via of ours, so it looks like any other branch's: _forward_response pops our Via, not the
        caller's (§16.7 step 9)."""
        failed = request.copy()
        failed.push_via(f"SIP/2.0/UDP 0.0.0.0;branch={self._new_branch()}")
        return failed.make_response(status, reason, to_tag=self._to_tag(ctx.request))

    def _located(self, targets: list[Endpoint], cb: ClientBranch) -> None:
        """The next hop's targets are known: send to the first one that can be tried."""
        ctx = cb.ctx
        if ctx is None or cb.final is not None or cb.replaced:
            return  # the transaction ended while the name was being looked up
        if ctx.canceled or ctx.final_sent:
            cb.final = self._local_final(ctx, cb.request, 487, "Request Terminated")
        else:
            error = self._try_next(cb, list(targets))
            if error is not None:
                log.info("cannot locate {host}: {why}", host=cb.destination.server_name,
                         why=error.reason if targets else "Name Resolution Failed (no such name or no usable target)")
                cb.final = self._local_final(ctx, cb.request, error.status, error.reason)
        if cb.final is not None:
            self._check_done(ctx)
        self._arm()

    def _locate_failed(self, failure: Failure, cb: ClientBranch, query: ServerQuery) -> None:
        err = failure.value
        if not isinstance(err, SendError):
            log.failure("locating {host} failed", failure, host=query.host)
            err = SendError("Name Resolution Failed")
        log.info("cannot locate {host}: {why}", host=query.host, why=err.reason)
        ctx = cb.ctx
        if ctx is None or cb.final is not None or cb.replaced:
            return
        cb.final = self._local_final(ctx, cb.request, err.status, err.reason)
        self._check_done(ctx)
        self._arm()

    def _try_next(self, old: ClientBranch, targets: list[Endpoint]) -> SendError | None:
        """RFC 3263 §4.3: send ``old``'s request to the first of ``targets`` we have a listener for,
        as a new branch (new transaction, new Via branch) taking ``old``'s place in its context;
        the targets not tried stay with it for the next failover. None when one was launched, else
        why none could be (a target is consumed either way)."""
        ctx = old.ctx
        base = old.base
        assert base is not None
        error = SendError("Name Resolution Failed")
        while targets:
            remote = targets.pop(0)
            destination = Destination(remote, server_name=old.destination.server_name)
            fwd = base.copy()
            try:
                self._stamp(fwd, destination, ctx.rr, ctx.flow, self._new_branch())
            except SendError as exc:
                error = exc
                continue
            cb = ClientBranch(ctx, old.target, fwd, destination)
            cb.base = base
            cb.alternatives = targets
            ctx.branches[ctx.branches.index(old)] = cb
            old.replaced = True
            self._launch(cb)
            return None
        return error

    def _fail_over(self, cb: ClientBranch, why: str) -> bool:
        """Move ``cb`` to its next target if DNS failover applies (the context still wants an
        answer); True when a new attempt was started."""
        ctx = cb.ctx
        if (not self.settings.dns_failover or ctx is None or cb.replaced or ctx.canceled or ctx.final_sent
                or not cb.alternatives):
            return False
        log.info("{method} to {dest} failed ({why}): trying the next target of {name}", method=cb.request.method,
                 dest=cb.destination.remote, why=why, name=cb.destination.server_name)
        return self._try_next(cb, cb.alternatives) is None

    def _launch(self, cb: ClientBranch) -> None:
        """Start ``cb``'s client transaction and send its request (§16.6 steps 9-11)."""
        ctx = cb.ctx
        fwd = cb.request
        destination = cb.destination
        now = self.clock.seconds()
        if ctx.rr is not None and ctx.rr.branch_route is not None:
            try:
                ctx.rr.branch_route(ctx.rr, fwd)
            except Exception:
                log.failure("branch_route raised")
        reliable = destination.remote.reliable
        if fwd.method == "INVITE":
            tx = ClientInviteTransaction(fwd, reliable=reliable, timers=self.timers, now=now)
        else:
            tx = ClientNonInviteTransaction(fwd, reliable=reliable, timers=self.timers, now=now)
        cb.tx = tx
        self._owners[tx] = cb
        ctx.live += 1
        self.table.add(tx)
        actions = tx.start(now)
        for action in actions:
            if isinstance(action, SendRequest):
                d = self.sender.send(destination, action.request)
                d.addCallbacks(self._branch_sent, self._branch_send_failed, callbackArgs=(cb,), errbackArgs=(cb,))
            else:
                self._run(tx, (action,))

    def _branch_sent(self, flow: Flow, cb: ClientBranch) -> None:
        cb.flow = flow

    def _branch_send_failed(self, failure: Failure, cb: ClientBranch) -> None:
        err = failure.value
        status = err.status if isinstance(err, SendError) else 503
        reason = err.reason if isinstance(err, SendError) else "Service Unavailable"
        if cb.final is None and cb.alternatives and self._fail_over(cb, reason):
            if cb.tx is not None:  # the failed attempt's transaction ends; its events are ignored now
                self._run(cb.tx, cb.tx.transport_error(self.clock.seconds()))
            self._arm()
            return
        log.info("branch to {dest} failed: {why}", dest=cb.destination.remote, why=failure.getErrorMessage())
        if cb.final is None:
            # the SendError's status is the branch's response (430 Flow Failed, 477 ...): record it
            # before the transaction's TransportFailure would count the branch as a plain 503
            self._branch_failed(cb, status, reason)
            if cb.tx is not None:
                self._run(cb.tx, cb.tx.transport_error(self.clock.seconds()))
        self._arm()

    def _forward_stateless(self, rr: RouteRequest, target: Branch) -> bool:
        """§16.11: forward without state (ACK for 2xx): the branch is derived from the incoming one so
        a retransmission gets the same branch."""
        incoming = rr.request.top_via.branch or rr.request.call_id
        branch = f"z9hG4bK{self._tag}s{binascii.crc32(incoming.encode('utf-8', 'surrogateescape')):08x}"
        try:
            fwd, destination, query = self._prepare(rr.request, target, rr, rr.source, branch)
        except (SendError, SipValueError) as exc:
            log.info("stateless forward failed: {why}", why=exc)
            return False
        if query is None:
            self._send(destination, fwd)
            return True

        def located(targets: list[Endpoint]) -> None:
            # stateless: no transaction to fail over with, the first usable target gets it (§16.11)
            for remote in targets:
                to = Destination(remote, server_name=destination.server_name)
                try:
                    self._stamp(fwd, to, rr, rr.source, branch)
                except SendError:
                    continue
                self._send(to, fwd)
                return
            log.info("stateless forward to {host}: no usable target", host=query.host)

        try:
            d = self.locator.locate(query, self._transports())  # type: ignore[union-attr]
        except Exception:
            log.failure("locating {host} failed", host=query.host)
            return False
        d.addCallbacks(located, lambda f: log.info("stateless forward to {host} failed: {why}", host=query.host,
                                                   why=f.getErrorMessage()))
        return True

    # -- responses -----------------------------------------------------------------------------------
    def _on_response(self, response: Response, flow: Flow) -> None:
        tx = self.table.match_response(response)
        if tx is None:
            self._stray_response(response)
            return
        self._run(tx, tx.receive_response(response, self.clock.seconds()))

    def _stray_response(self, response: Response) -> None:
        """A response matching no transaction (§16.7 step 1 / §18.1.2): forward it statelessly when
        it carries our Via (a 2xx retransmission after our transaction ended), else drop it. Replies
        to the NAT pinger's OPTIONS (stateless, no transaction) are its own and go no further."""
        pinger = self.pinger
        if pinger is not None and pinger.response_received(response):
            return
        via = response.top_via
        if not (via.branch or "").startswith(self._branch_prefix):
            log.debug("dropping stray response {status} {call_id}", status=response.status,
                      call_id=response.call_id)
            return
        out = response.copy()
        out.pop_via()
        if not out.headers.get("via"):
            return
        self._send(response_destination(out, None), out)

    def _branch_response(self, cb: ClientBranch, response: Response) -> None:
        ctx = cb.ctx
        if ctx is None or cb.replaced:  # released, or a target we failed over from: nobody waits
            return
        status = response.status
        rr = ctx.rr
        if rr is not None:
            hook = rr.reply_route or self.routes.onreply_route
            if hook is not None:
                try:
                    hook(rr, response)
                except Exception:
                    log.failure("onreply_route raised")
        if status < 200:
            cb.provisional = True
            if cb.cancel_wanted:
                self._cancel_branch(cb)
            if status == 100 or ctx.final_sent:
                return
            self._forward_response(ctx, response)
            return
        if cb.final is not None and status >= 300:
            return  # the branch already ended (timer C, transport error): late final absorbed
        if status == 503 and cb.alternatives and self._fail_over(cb, "503"):
            return  # RFC 3261 §21.5.4 / 3263 §4.3 (OpenSIPS and Kamailio DNS failover on 503)
        cb.final = response
        if status < 300:
            if ctx.request.method == "INVITE" or not ctx.final_sent:
                self._forward_response(ctx, response)
                ctx.final_sent = True
            ctx.groups = []
            for other in ctx.branches:
                if other is not cb and other.final is None:
                    self._cancel_branch(other)
            return
        if status >= 600:
            ctx.groups = []
            for other in ctx.branches:
                if other is not cb and other.final is None:
                    self._cancel_branch(other)
        self._check_done(ctx)

    def _branch_failed(self, cb: ClientBranch, status: int, reason: str) -> None:
        """Timer B/C/F or a transport error ended a branch: it counts as ``status`` (§16.7 step 6,
        §16.8)."""
        if cb.final is not None or cb.ctx is None or cb.replaced:
            return
        if status == 408 and cb.provisional and cb.request.method == "INVITE":
            self._cancel_branch(cb)  # §16.8: timer C fired, CANCEL the branch
        # generated here, so it gets our To tag like any local final response (§8.2.6.2, §16.9)
        cb.final = cb.request.make_response(status, reason, to_tag=self._to_tag(cb.ctx.request))
        self._check_done(cb.ctx)

    def _check_done(self, ctx: ServerContext) -> None:
        if ctx.final_sent or ctx.failure_running or ctx.starting:
            return
        if any(b.final is None for b in ctx.branches):
            return
        if ctx.groups and not ctx.canceled:
            self._start_group(ctx)
            return
        finals = [b.final for b in ctx.branches if b.final is not None]
        if not finals:
            return
        best = _best_response(finals)
        rr = ctx.rr
        failure = (rr.failure_route if rr is not None else None) or self.routes.failure_route
        if failure is not None and rr is not None and not ctx.canceled:
            ctx.failure_running = True
            rr.reply = best
            rr.reply_code = best.status
            rr.replied = False
            before = len(ctx.branches)

            def done(rr: RouteRequest) -> None:
                ctx.failure_running = False
                if rr.replied:
                    return
                if len(ctx.branches) > before:
                    # the new branches may all have failed already (a synchronous send error)
                    # while failure_running held the decision back: decide now if so
                    self._check_done(ctx)
                    return
                self._forward_best(ctx, best)

            rr.failure_route = None  # one shot, as t_on_failure in OpenSIPS
            self._call_route(rr, failure, (rr,), done)
            return
        self._forward_best(ctx, best)

    def _forward_best(self, ctx: ServerContext, best: Response) -> None:
        out = best
        if best.status == 503:
            out = best.copy()
            out.status, out.reason = 500, "Server Internal Error"  # §16.7 step 6
        if best.status in (401, 407):
            out = _merge_challenges(ctx, best)
        self._forward_response(ctx, out)

    def _forward_response(self, ctx: ServerContext, response: Response) -> None:
        """§16.7 steps 9-10: drop our Via and send through the server transaction."""
        out = response.copy()
        out.pop_via()
        if not out.headers.get("via"):
            return
        self._respond(ctx, out)

    def _cancel_branch(self, cb: ClientBranch) -> None:
        """§9.1 / §16.10: CANCEL a pending INVITE branch once it has had a provisional response."""
        if cb.final is not None or cb.cancel_sent or cb.request.method != "INVITE" or cb.tx is None:
            return
        if not cb.provisional:
            cb.cancel_wanted = True
            return
        cb.cancel_sent = True
        inv = cb.request
        h = Headers()
        h.add("Via", inv.headers.values("via")[0])
        for name in ("route",):
            for v in inv.headers.get_all(name):
                h.add("Route", v)
        h.add("Max-Forwards", "70")
        h.add("From", inv.headers.get("from") or "")
        h.add("To", inv.headers.get("to") or "")
        h.add("Call-ID", inv.call_id)
        h.add("CSeq", f"{inv.cseq.number} CANCEL")
        cancel = Request("CANCEL", inv.uri_text, h)
        dst = cb.destination
        destination = Destination(dst.remote, cb.flow or dst.flow, dst.flow_only, dst.server_name)
        now = self.clock.seconds()
        tx = ClientNonInviteTransaction(cancel, reliable=destination.remote.reliable, timers=self.timers, now=now)
        self._owners[tx] = CancelBranch(destination)
        self.table.add(tx)
        self._run(tx, tx.start(now))
        self._run(cb.tx, cb.tx.cancel_sent(now))


def _rr_uri(local: Endpoint, token: str | None = None) -> str:
    """Our Record-Route URI for the listener ``local``: ``transport=ws`` for WS and WSS alike (RFC 7118
    errata 5937), a flow token as user part and ``ob`` when it faces a client's connection (RFC 5626)."""
    kind = local.transport
    transport = "" if kind == "UDP" else f";transport={'ws' if kind in ('WS', 'WSS') else kind.lower()}"
    if token is None:
        return f"<sip:{local.hostport}{transport};lr>"
    return f"<sip:{token}@{local.hostport}{transport};lr;ob>"


def _merge_challenges(ctx: ServerContext, best: Response) -> Response:
    """§16.7 step 7: a 401/407 upstream carries every challenge the branches got."""
    out = best.copy()
    for b in ctx.branches:
        if b.final is None or b.final is best or b.final.status not in (401, 407):
            continue
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            for v in b.final.headers.get_all(name):
                out.headers.add(name, v)
    return out

