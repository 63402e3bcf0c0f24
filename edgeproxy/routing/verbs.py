"""The route verbs: what ``lookup``, ``save``, ``loose_route``, ``t_relay``, ``sl_send_reply``, the
authentication and pike checks do -- one implementation, for the node and for
:class:`~edgeproxy.routing.testing.RouteHarness` alike.

:class:`RouteVerbs` decides (which targets, which reply, which status on a malformed input) and
writes the request's :class:`~edgeproxy.proxy.context.RouteState`; what leaves the node goes through
its :class:`ProxyCore`: the node's :class:`~edgeproxy.proxy.engine.StatefulProxy`, or the harness's
recorder. So a route unit-tested with the harness runs the very code the node runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..auth import Authenticator
from ..dialog import Dialog, DialogError
from ..dispatcher import Dispatcher
from ..interfaces import SendError
from ..location import Binding, LookupResult, uri_endpoint
from ..logcontext import message_context
from ..proxy.context import Branch, RouteState
from ..proxy.dialogs import DialogKeeper
from ..proxy.flood import FloodDetector
from ..proxy.flowtoken import InvalidFlowToken, StaleFlowToken
from ..proxy.forwarding import Forwarder
from ..proxy.hops import loose_route
from ..proxy.identity import LocalIdentity
from ..proxy.nat import fix_nated_contact, nat_uac_test
from ..proxy.noise import NoiseLog
from ..proxy.settings import ProxySettings
from ..registrar import Registrar, aor_of
from ..sip.errors import SipParseError, SipValueError
from ..sip.message import Request, Response
from ..sip.uri import SipURI, parse_uri
from ..transaction import TimerSettings
from .dsverbs import DispatcherVerbs
from .errors import RouteReply
from .permverbs import AddressView, PermissionVerbs
from .tmverbs import TmVerbs

if TYPE_CHECKING:  # pragma: no cover
    from ..cluster.nodes import NodeInfo
    from ..federation.lookup import GlobalLookup

__all__ = ["RouteVerbs", "ProxyCore", "ClusterView", "FederationView", "AddressView"]

log = Logger(namespace="edgeproxy.proxy")


class ProxyCore(Protocol):
    """Where the verbs' decisions take effect: replies and relays (the node's stateful proxy)."""

    def respond(self, route: RouteState, response: Response, stateful: bool) -> None: ...

    def relay(self, route: RouteState, targets: list[Branch]) -> bool: ...

    def drop(self, route: RouteState) -> None: ...

    def forward_ack(self, route: RouteState, target: Branch) -> bool: ...


class ClusterView(Protocol):
    """What the verbs ask of the cluster layer (:class:`edgeproxy.cluster.Cluster`)."""

    def cluster_check_addr(self, cluster_id: int, ip: str) -> bool: ...

    def node_for_sip_addr(self, ip: str, cluster_id: int | None = None) -> "NodeInfo | None": ...

    def is_up(self, node_id: int, cluster_id: int | None = None) -> bool: ...


class FederationView(Protocol):
    """What the verbs ask of the federation (:class:`edgeproxy.federation.Federation`)."""

    def global_lookup(self, aor: str, method: str | None = None) -> "Deferred[GlobalLookup]": ...

    def raw_query(self, command: Mapping[str, Any] | str) -> "Deferred[list[dict[str, Any]]]": ...


class RouteVerbs(DispatcherVerbs, TmVerbs, PermissionVerbs):
    """The OpenSIPS verbs behind :class:`~edgeproxy.routing.api.RouteRequest`, over a request's
    :class:`RouteState`."""

    def __init__(self, core: ProxyCore, forwarder: Forwarder, identity: LocalIdentity, registrar: Registrar,
                 settings: ProxySettings, clock: IReactorTime, stats: dict[str, int], *,
                 cluster: ClusterView | None = None, cluster_id: int = 1,
                 federation: FederationView | None = None, auth: Authenticator | None = None,
                 flood: FloodDetector | None = None, timers: TimerSettings | None = None,
                 dispatcher: Dispatcher | None = None, permissions: AddressView | None = None,
                 dialogs: DialogKeeper | None = None, noise: NoiseLog | None = None) -> None:
        self.core = core
        self.noise = noise  # the node's aggregated log of hostile input (None: a line each)
        self.forwarder = forwarder
        self.identity = identity
        self.registrar = registrar
        self.location = registrar.location
        self.settings = settings
        self.clock = clock
        self.stats = stats
        self.cluster = cluster
        self.cluster_id = cluster_id
        self.federation = federation
        self.auth = auth
        self.flood = flood
        self.timers = timers if timers is not None else TimerSettings()  # the node's [timers]
        self.dispatcher = dispatcher
        self.permissions = permissions  # [permissions] / route_params.freeswitch: the address groups
        self.dialogs = dialogs  # OpenSIPS dialog: create_dialog(), profiles, loose_route() matching

    # -- identity ------------------------------------------------------------------------------------
    def is_myself(self, host: str, port: int | None = None) -> bool:
        return self.identity.is_myself(host, port)

    def cluster_check_addr(self, cluster_id: int, ip: str) -> bool:
        """OpenSIPS ``cluster_check_addr``: ``ip`` is the sip_addr of another node of the cluster."""
        return self.cluster is not None and self.cluster.cluster_check_addr(cluster_id, ip)

    # -- replies -------------------------------------------------------------------------------------
    def reply(self, route: RouteState, code: int, reason: str | None, stateful: bool) -> None:
        """``sl_send_reply`` (``stateful`` False) / ``send_reply``: once per request, never to an
        ACK; our To tag; the route's ``append_to_reply`` headers; a 3xx carries the destination set
        as Contact, as OpenSIPS prints ``$branch``."""
        request = route.request
        if request.method == "ACK" or route.replied:
            return
        route.replied = True
        self.stats["replied"] += 1
        if self.settings.log_decisions:
            log.debug("{method} {call_id} from {src}: reply {code} {reason}", method=request.method,
                      **message_context(request), src=route.source.remote, code=code, reason=reason or "")
        response = self.forwarder.reply_to(request, code, reason, to_tag=self.forwarder.to_tag(request))
        for name, value in route.reply_headers:
            response.headers.add(name, value)
        if 300 <= code < 400:
            targets = ([] if not route.ruri_changed else [request.uri]) + [b.uri for b in route.branches]
            if targets:
                response.headers.add("Contact", ", ".join(f"<{t}>" for t in targets))
        self.core.respond(route, response, stateful)

    def answer_error(self, route: RouteState, error: BaseException) -> bool:
        """Answer what a route raised when it is an answer: a :class:`RouteReply` with its status
        (statefully, as ``send_reply``), a malformed header the route read (its credentials, say)
        with the status the :class:`~edgeproxy.sip.errors.SipParseError` carries -- the client's
        error, not a 500. False for anything else (a bug in the route: the caller answers 500)."""
        if isinstance(error, RouteReply):
            self.reply(route, error.code, error.reason, True)
            return True
        if isinstance(error, SipParseError):
            request = route.request
            noise = self.noise
            if noise is not None:  # a header the route read is broken: hostile input like a parse error
                self.stats["malformed"] = self.stats.get("malformed", 0) + 1
                noise.note(route.source.remote.host, "malformed",
                           f"{error.status} {error.reason} in {request.method} ({route.source.transport})")
            else:
                log.info("{method} {call_id} from {src}: {status} {reason}", method=request.method,
                         **message_context(request), src=route.source.remote, status=error.status,
                         reason=error.reason)
            self.reply(route, error.status, error.reason, False)
            return True
        return False

    def route_done(self, route: RouteState, name: str) -> None:
        """A route function returned: a request it neither answered nor relayed gets
        ``proxy.no_reply_status`` (with a warning: a route should always decide), unless it was an
        ACK (never answered), dropped (``drop()``: forgotten without a word) or cancelled."""
        request = route.request
        if route.replied or route.relayed or request.method == "ACK":
            return
        if route.dropped:
            self.stats["dropped"] += 1
            self.core.drop(route)
            return
        ctx = route.ctx
        if ctx is not None and ctx.canceled:
            return
        log.warn("route {route} neither replied nor relayed {method} {call_id}; answering {status}",
                 route=name, method=request.method, **message_context(request), status=self.settings.no_reply_status)
        self.reply(route, self.settings.no_reply_status, None, True)

    def route_failed(self, route: RouteState, failure: Failure, name: str) -> None:
        """A route function raised: an answer it meant (:meth:`answer_error`), else a bug in the
        route: logged with its traceback and answered 500."""
        if failure.value is not None and self.answer_error(route, failure.value):
            return
        request = route.request
        self.stats["route_errors"] += 1
        log.failure("route {route} raised on {method} {call_id}", failure, route=name, method=request.method,
                    **message_context(request))
        self.reply(route, 500, "Server Internal Error", True)

    # -- relaying ------------------------------------------------------------------------------------
    def relay(self, route: RouteState) -> bool:
        """``t_relay()``: 483 when Max-Forwards is spent, 403 for a forged flow token and 430 for one
        whose connection is gone with an earlier process (RFC 5626 §5.3); in a failure route the
        Request-URI already tried is not tried again unless the route changed it (OpenSIPS/Kamailio
        "ruri consumed"); False when nothing could be relayed."""
        request = route.request
        ctx = route.ctx
        in_failure_route = ctx is not None and ctx.failure_running
        if route.replied or (route.relayed and not in_failure_route):
            return False
        if route.flow_error is not None:
            self.reply(route, route.flow_error.status, route.flow_error.reason, False)  # (nothing for an ACK)
            return False
        if request.max_forwards == 0:
            self.reply(route, 483, "Too Many Hops", False)
            return True
        targets = route.targets()
        if (in_failure_route and route.ruri_branch is None
                and route.ruri_consumed == route.ruri_key()):
            targets = targets[1:]  # append_branch() + t_relay() goes to the new targets only
        if not targets:
            return False
        if request.method == "ACK":
            route.relayed = True
            return self.core.forward_ack(route, targets[0])
        return self.core.relay(route, targets)

    def loose_route(self, route: RouteState) -> bool:
        """OpenSIPS ``loose_route()`` plus RFC 5626 §5.3: when one of our popped Route URIs carries
        a flow token naming another connection than the one the request came on, the request goes
        over that connection (it is heading back to the client behind it); a token naming the
        arrival connection means the request comes from that client and is routed as usual. A
        token that fails its MAC gets 403 at ``t_relay``; one naming a connection of an earlier
        process goes to the Request-URI when a TCP/TLS client can be dialled there, else 430."""
        popped: list[SipURI] = []
        routed = loose_route(route.request, self.identity.is_myself, popped, self.forwarder.is_flow_token)
        source = route.source
        for uri in popped:
            if uri.user is None:
                continue  # our plain Record-Route entry: no token
            try:
                flow = self.forwarder.flow_tokens.decode(uri.user, uri_endpoint(uri))
            except InvalidFlowToken as exc:
                if self.noise is not None:  # forged tokens are hostile input: aggregated per source
                    self.noise.note(source.remote.host, "forged flow token",
                                    f"{route.request.method} with a forged flow token in its Route", route.request)
                else:
                    log.info("{method} {call_id} from {src}: Route with a forged flow token",
                             method=route.request.method, **message_context(route.request), src=source.remote)
                route.flow_error = exc
                break
            except StaleFlowToken as exc:
                route.flow_destination = self.forwarder.stale_flow_destination(exc.flow, route.request.uri)
                if route.flow_destination is None:
                    log.info("{method} {call_id} from {src}: Route names {flow}, a connection gone with a restart",
                             method=route.request.method, **message_context(route.request), src=source.remote,
                             flow=exc.flow.remote)
                    route.flow_error = exc
                break
            if flow is None or (flow.connection_id == source.connection_id
                                and (flow.connection_id is not None or flow.remote == source.remote)):
                continue  # the client behind this flow sent the request: routed as usual
            route.flow_destination = self.forwarder.flow_destination(flow, route.request.uri)
            break
        if routed and popped and route.flow_error is None and self.dialogs is not None:
            self.dialogs.match(route)  # OpenSIPS: loose_route() matches the dialog of what it routes
        return routed

    # -- dialogs (OpenSIPS dialog) -------------------------------------------------------------------
    def _keeper(self) -> DialogKeeper:
        if self.dialogs is None:
            raise RuntimeError("the route uses dialogs, but this node keeps none")
        return self.dialogs

    def create_dialog(self, route: RouteState, flags: str) -> bool:
        """``create_dialog(flags)``: True when the INVITE has its dialog (made now or before)."""
        try:
            self._keeper().create(route, flags)
        except DialogError as exc:
            log.info("{method} {call_id}: create_dialog(): {why}", method=route.request.method,
                     **message_context(route.request), why=exc)
            return False
        return True

    def dialog(self, route: RouteState) -> Dialog | None:
        """The request's dialog: the one it created, else the one its Call-ID and tags match
        (``match_dialog()``)."""
        if route.dialog is None and route.request.to_tag is not None:
            self._keeper().match(route)
        return route.dialog

    def validate_dialog(self, route: RouteState) -> int:
        """``validate_dialog()``: 1 valid, -1 bad CSeq, -2 Request-URI not the remote target, -4 no
        dialog (see :meth:`edgeproxy.dialog.DialogTable.validate`)."""
        if self.dialog(route) is None or route.dialog_check == 0:
            return -4
        return route.dialog_check

    def set_dlg_profile(self, route: RouteState, name: str, value: str | None) -> bool:
        """``set_dlg_profile(name, value)``: False without a dialog, or for a valued profile without
        a value; an undeclared profile is the route's error (ProfileError, answered 500)."""
        keeper = self._keeper()
        dlg = self.dialog(route)
        if dlg is None or (value is None and keeper.table.profiles.has_value(name)):
            return False
        keeper.table.set_profile(dlg, name, value)
        return True

    def unset_dlg_profile(self, route: RouteState, name: str, value: str | None) -> bool:
        dlg = self.dialog(route)
        return dlg is not None and self._keeper().table.unset_profile(dlg, name, value)

    def is_in_profile(self, route: RouteState, name: str, value: str | None) -> bool:
        dlg = self.dialog(route)
        return dlg is not None and self._keeper().table.in_profile(dlg, name, value)

    def get_profile_size(self, name: str, value: str | None) -> int:
        return self._keeper().table.profile_size(name, value)

    def dlg_timeout(self, route: RouteState) -> int | None:
        """``$DLG_timeout`` (read): seconds left of a confirmed dialog, else its lifetime."""
        dlg = self.dialog(route)
        return None if dlg is None else self._keeper().table.timeout_left(dlg, self.clock.seconds())

    def set_dlg_timeout(self, route: RouteState, seconds: int) -> None:
        dlg = self.dialog(route)
        if dlg is None:
            raise RuntimeError("$DLG_timeout set without a dialog (call create_dialog() first)")
        if seconds < 1:
            raise ValueError(f"$DLG_timeout must be at least 1 s, got {seconds}")
        self._keeper().set_timeout(dlg, int(seconds))

    # -- nathelper ----------------------------------------------------------------------------------
    def nat_uac_test(self, route: RouteState, flags: str | int) -> bool:
        """OpenSIPS nathelper ``nat_uac_test(flags)`` (see :mod:`edgeproxy.proxy.nat`); an unknown
        flag is the route's error (500, logged), as it is a startup error in OpenSIPS."""
        return nat_uac_test(route.request, route.source, flags)

    def fix_nated_contact(self, route: RouteState) -> bool:
        """OpenSIPS ``fix_nated_contact()``: the Contact URIs name the source address; once per
        request (a second call is False, "second attempt to change URI Contact")."""
        if route.contact_fixed:
            log.info("{method} {call_id}: second attempt to change URI Contact", method=route.request.method,
                     **message_context(route.request))
            return False
        route.contact_fixed = True
        return fix_nated_contact(route.request, route.source)

    # -- location ------------------------------------------------------------------------------------
    def lookup(self, route: RouteState, table: str, flags: str, aor: str | None) -> "Deferred[LookupResult]":
        """OpenSIPS ``lookup()``: on FOUND the Request-URI becomes the first contact and the others
        become branches. Flag ``m`` filters by method; flag ``g`` (federation) adds one branch per
        other node holding the AoR, unless the request came from a cluster node (it has crossed the
        cluster once already: the loop guard) or that node is down. A malformed AoR is ERROR (-3)."""
        request = route.request
        try:
            uri = parse_uri(aor if aor.startswith(("sip:", "sips:")) else f"sip:{aor}") if aor else request.uri
        except SipValueError:
            return succeed(LookupResult.ERROR)
        if not isinstance(uri, SipURI):
            return succeed(LookupResult.NOT_FOUND)
        key = aor_of(uri, self.registrar.settings.use_domain)
        method = request.method if "m" in flags else None
        federation = self.federation
        if "g" in flags and federation is not None and not self.cluster_check_addr(self.cluster_id,
                                                                                   route.source.remote.host):
            return federation.global_lookup(key, method).addCallback(self._global_found, route, key)
        d = maybeDeferred(self.location.lookup, key, method)

        def found(result: tuple[LookupResult, list[Binding]]) -> LookupResult:
            code, bindings = result
            if code != LookupResult.FOUND or not bindings:
                return code if code != LookupResult.FOUND else LookupResult.NOT_FOUND
            targets = [Branch.to_binding(b) for b in bindings if b.owner is None]
            if len(targets) < len(bindings):
                targets += self._owner_targets(route, key, bindings)
                if not targets:
                    return LookupResult.NOT_FOUND
            set_targets(route, targets)
            return LookupResult.FOUND

        def failed(failure: Failure) -> LookupResult:
            log.failure("lookup of {aor} failed", failure, aor=key)
            return LookupResult.ERROR

        return d.addCallbacks(found, failed)

    def _owner_targets(self, route: RouteState, key: str, bindings: list[Binding]) -> list[Branch]:
        """Full sharing (OpenSIPS ``full-sharing-cluster``): a contact bound to another node's
        connection (``Binding.owner``) is reached through that node, one branch per owner -- its
        ``sip_addr`` as next hop, the AoR at it as Request-URI, so that its own ``lookup()`` finds the
        connection -- as a global lookup's home node is. Never when the request came from a cluster
        node (it has crossed the cluster once: the loop guard), nor to a node the cluster layer sees
        down: that contact is skipped at once instead of waiting out timer B."""
        if self.cluster is None or self.cluster_check_addr(self.cluster_id, route.source.remote.host):
            return []
        from ..cluster.nodes import sip_addr_host  # a cluster is running: the package is loaded

        targets = []
        owners: set[str] = set()
        for b in bindings:
            owner = b.owner
            if owner is None or owner in owners:
                continue
            owners.add(owner)
            peer = self.cluster.node_for_sip_addr(sip_addr_host(owner) or owner, self.cluster_id)
            if peer is not None and not self.cluster.is_up(peer.node_id, self.cluster_id):
                continue  # a dead node is skipped, not waited for
            targets.append(Branch.via_node(key if "@" in key else f"{key}@{owner}", owner))
        if self.settings.log_decisions:
            log.debug("lookup {aor}: via the nodes holding its connections: {owners}", aor=key,
                      owners=", ".join(str(t.dst_uri) for t in targets) or "none up")
        return targets

    def _global_found(self, result: "GlobalLookup", route: RouteState, key: str) -> LookupResult:
        """Local contacts first, then a branch ``sip:<aor>`` via each live home node (OpenSIPS's
        federation lookup), never to this node."""
        if result.code != LookupResult.FOUND:
            return LookupResult(result.code)
        # imported here: the cluster package (AMP, the clusterer table) loads only on nodes that federate
        from ..cluster.nodes import sip_addr_host

        targets = [Branch.to_binding(b) for b in result.bindings if b.owner is None]
        if len(targets) < len(result.bindings):  # full sharing too: other nodes' connections via them
            targets += self._owner_targets(route, key, result.bindings)
        for home in result.homes:
            if self.cluster is not None:
                peer = self.cluster.node_for_sip_addr(sip_addr_host(home) or home, self.cluster_id)
                if peer is not None and not self.cluster.is_up(peer.node_id, self.cluster_id):
                    continue  # a dead node is skipped, not waited for
            targets.append(Branch.via_node(key, home))
        if not targets:
            return LookupResult.NOT_FOUND
        set_targets(route, targets)
        if self.settings.log_decisions:
            log.debug("global lookup {aor}: {n} local, homes {homes}", aor=key, n=len(result.bindings),
                      homes=", ".join(result.homes) or "none")
        return LookupResult.FOUND

    def save(self, route: RouteState, table: str, flags: str) -> "Deferred[bool]":
        """OpenSIPS ``save()``: store the REGISTER's bindings and answer it statelessly (flag ``r``:
        do not answer, the route will); True on 200."""
        request = route.request
        d = self.registrar.save(request, route.source, nat=route.nat, sipping=route.sipping)

        def saved(response: Response) -> bool:
            if self.settings.log_decisions:
                log.debug("REGISTER {call_id} from {src}: save -> {status}", **message_context(request),
                          src=route.source.remote, status=response.status)
            if "r" not in flags and not route.replied:
                route.replied = True
                self.stats["replied"] += 1
                if response.status >= 200 and request.to_tag is None:
                    self._add_to_tag(response, request)
                self.core.respond(route, self.forwarder.sign(response), False)
            return response.status == 200

        def failed(failure: Failure) -> bool:
            log.failure("save() failed for {call_id}", failure, **message_context(request))
            if not route.replied:
                self.reply(route, 500, "Server Internal Error", False)
            return False

        return d.addCallbacks(saved, failed)

    def _add_to_tag(self, response: Response, request: Request) -> None:
        to = response.headers.get("to")
        if to is not None and "tag=" not in to.lower():
            response.headers.set("To", f"{to};tag={self.forwarder.to_tag(request)}")

    def cache_raw_query(self, command: Mapping[str, Any] | str) -> "Deferred[list[dict[str, Any]]]":
        """OpenSIPS ``cache_raw_query`` on the federation store; fails when none is configured."""
        if self.federation is None:
            return fail(SendError("no federation store configured", 500))
        return self.federation.raw_query(command)

    # -- pike ----------------------------------------------------------------------------------------
    def trusted_source(self, ip: str) -> bool:
        """``[pike] trusted`` or another node of the cluster: never counted by pike, and proven to
        receive what is sent to it (its finals are retransmitted on Timer G)."""
        flood = self.flood
        return (flood is not None and flood.is_trusted(ip)) or self.cluster_check_addr(self.cluster_id, ip)

    def flood_check(self, ip: str) -> bool:
        """Count a request from ``ip``; False when it floods. Trusted sources and the other nodes of
        the cluster are never counted: their traffic is many users' traffic; nor the node's own
        addresses (requests it relayed to itself, issue 16)."""
        flood = self.flood
        if flood is None or self.trusted_source(ip) or self.identity.is_myself(ip):
            return True
        ok, change = flood.check_and_report(ip, self.clock.seconds())
        if change == "blocked":
            log.warn("pike: {ip} is flooding (over {n} requests per {unit:g} s): its requests are refused",
                     ip=ip, n=flood.settings.reqs_density_per_unit, unit=flood.settings.sampling_time_unit)
        elif change == "unblocked":
            log.info("pike: {ip} is below the limit again", ip=ip)
        return ok

    def pike_check_req(self, route: RouteState) -> bool:
        """OpenSIPS ``pike_check_req()``. With ``check_all`` every request was counted on arrival and
        only those that passed reach a route, so the answer is True without counting twice."""
        if self.flood is None:
            raise RuntimeError("the route calls pike_check_req(), but the node has no [pike] section")
        if self.flood.settings.check_all:
            return True
        return self.flood_check(route.source.remote.host)

    # -- authentication ------------------------------------------------------------------------------
    def authenticator(self) -> Authenticator | None:
        """The node's digest authenticator (``[auth]``), None without one."""
        return self.auth


def set_targets(route: RouteState, targets: list[Branch]) -> None:
    """What a successful ``lookup()`` leaves behind: the first target becomes the Request-URI
    (with its next hop), the others are appended to the destination set."""
    first, *rest = targets
    route.request.uri = first.uri
    route.ruri_changed = True
    route.ruri_branch = first
    route.branches.extend(rest)
