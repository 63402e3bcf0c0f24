"""The records of the stateful proxy: one per request handled, one per forwarded copy of it.

A :class:`RouteState` is what the route decided about one request (its destination set, flags, armed
failure/reply/branch routes, whether it was answered or relayed): the route's verbs write it, the
proxy reads it. A :class:`ServerContext` is the OpenSIPS transaction "cell" of a request handled
statefully (§16): its server transaction and its :class:`ClientBranch` es (§16.6). Every field is
declared here; nothing is hung on these objects from outside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..auth import AuthResult
from ..location import Binding, binding_destination
from ..sip.endpoint import Destination, Endpoint, Flow
from ..sip.message import Request, Response
from ..sip.uri import URI, SipURI, parse_uri
from .flowtoken import InvalidFlowToken, StaleFlowToken

if TYPE_CHECKING:  # pragma: no cover
    from ..auth import AuthOutcome
    from ..dialog import Dialog
    from ..dispatcher import Selection
    from ..transaction import ClientTransaction, ServerTransaction

__all__ = ["Branch", "RouteState", "ServerContext", "ClientBranch", "CancelBranch"]

RouteFunction = Callable[..., Any]


class Branch:
    """One target of the destination set (OpenSIPS ``$branch``): a Request-URI, an optional
    next hop (``$du``), the Path route set of the binding it came from, and its ``q``; a target
    found by ``lookup()`` also carries where its binding is reached (``destination``: a flow, the
    NAT source address) and the binding itself."""

    __slots__ = ("uri", "dst_uri", "path", "q", "destination", "binding")

    def __init__(self, uri: URI, dst_uri: SipURI | None = None, path: tuple[str, ...] = (),
                 q: float | None = None, destination: Destination | None = None,
                 binding: Binding | None = None) -> None:
        self.uri = uri
        self.dst_uri = dst_uri
        self.path = path
        self.q = q
        self.destination = destination
        self.binding = binding

    @classmethod
    def to_binding(cls, binding: Binding) -> "Branch":
        """The target a location binding stands for: its contact as Request-URI, the next hop and
        route set of :func:`~edgeproxy.location.binding_destination` (Path, flow, NAT)."""
        uri, destination, path = binding_destination(binding)
        return cls(uri, path=tuple(path), q=binding.q, destination=destination, binding=binding)

    @classmethod
    def via_node(cls, aor: str, sip_addr: str) -> "Branch":
        """The federation branch towards the node holding ``aor``: Request-URI ``sip:<aor>``, next
        hop that node's ``sip_addr`` (OpenSIPS's global-lookup branch)."""
        hop = parse_uri(f"sip:{sip_addr}")
        assert isinstance(hop, SipURI)
        return cls(parse_uri(f"sip:{aor}"), dst_uri=hop)

    def __repr__(self) -> str:
        return f"<Branch {self.uri} q={self.q}>"


class RouteState:
    """What the route decided about one request, written by the verbs and read by the proxy."""

    __slots__ = ("request", "source", "ctx", "ruri_changed", "branches", "dst_uri", "ruri_branch",
                 "record_routed", "nat", "sipping", "failure_route", "reply_route", "branch_route",
                 "replied", "reply_headers", "relayed", "dropped", "reply", "auth", "flow_error",
                 "flow_destination", "ruri_consumed", "fr_timeout", "fr_inv_timeout", "trusted", "started", "ds",
                 "context_info", "dialog", "dialog_check", "cseq_out",
                 "contact_fixed")

    def __init__(self, request: Request, source: Flow, ctx: "ServerContext | None" = None) -> None:
        self.request = request
        self.source = source  # where the request came from
        self.ctx = ctx  # the request's transaction cell, once it is handled statefully
        self.ruri_changed = False
        self.branches: list[Branch] = []  # append_branch() and lookup()'s other contacts
        self.dst_uri: SipURI | None = None  # $du
        self.ruri_branch: Branch | None = None  # lookup(): the Request-URI's own target data
        self.record_routed = False
        self.nat = False  # OpenSIPS nat_bflag: save() marks the contacts as behind NAT
        self.sipping = False  # nathelper sipping_bflag: save() has NAT contacts pinged with OPTIONS
        self.failure_route: RouteFunction | None = None  # t_on_failure()
        self.reply_route: RouteFunction | None = None  # t_on_reply()
        self.branch_route: RouteFunction | None = None  # t_on_branch()
        self.replied = False
        self.reply_headers: list[tuple[str, str]] = []  # append_to_reply()
        self.relayed = False
        self.dropped = False  # drop(): no reply at all
        self.reply: Response | None = None  # in failure_route: the winning reply
        self.auth: AuthOutcome | None = None  # the last www_authorize / proxy_authorize
        # loose_route() popped a Route with a forged (403) or stale (430) flow token
        self.flow_error: InvalidFlowToken | StaleFlowToken | None = None
        self.flow_destination: Destination | None = None  # loose_route(): the flow a token named
        # the Request-URI (and $du) relayed to: failure_route does not try it again (ruri consumed)
        self.ruri_consumed: tuple[str, str | None] | None = None
        # $T_fr_timeout / $T_fr_inv_timeout (OpenSIPS tm, seconds): this transaction's branches wait
        # so long for a first reply / for a final after one; None: the node's [timers]
        self.fr_timeout: float | None = None
        self.fr_inv_timeout: float | None = None
        self.context_info: str | None = None  # check_address(): the matching row's context_info
        self.trusted = False  # the source is a trusted address or another node (set on arrival)
        self.started = 0.0  # a REGISTER's arrival (clock seconds), for its processing time; else 0
        self.ds: Selection | None = None  # ds_select_dst(): the destination tried and those left
        self.dialog: Dialog | None = None  # create_dialog(), or the dialog an in-dialog request matched
        self.dialog_check = 0  # what validate_dialog() answers for a matched in-dialog request
        # the CSeq number the relayed copies carry (the dialog pinged their party, OpenSIPS dialog's
        # CSeq rewriting); responses upstream get the request's own back. None: unchanged
        self.cseq_out: int | None = None
        self.contact_fixed = False  # fix_nated_contact() ran (OpenSIPS allows it once per message)

    @property
    def proven(self) -> bool:
        """Whether the source has shown it receives what is sent to it -- it is trusted, or the route
        authenticated the request (digest credentials answer our challenge): only then is a final
        response retransmitted on Timer G over UDP (see :class:`ProxySettings`)."""
        auth = self.auth
        return self.trusted or (auth is not None and auth.result == AuthResult.AUTHORIZED)

    def ruri_key(self) -> tuple[str, str | None]:
        """The Request-URI and ``$du`` as relayed: what "ruri consumed" compares in a failure route."""
        return self.request.uri_text, str(self.dst_uri) if self.dst_uri is not None else None

    def adds_record_route(self) -> bool:
        """Whether our Record-Route goes on the forwarded request: the route asked for it and the
        request can start a dialog (never on REGISTER, ACK or CANCEL: RFC 3261 §16.6 step 4, §10)."""
        return self.record_routed and self.request.method not in ("REGISTER", "ACK", "CANCEL")

    def targets(self) -> list[Branch]:
        """The destination set: the Request-URI's branch (with ``$du`` or the flow named by a popped
        Route's flow token, RFC 5626 §5.3), then the appended branches."""
        first = self.ruri_branch
        if first is None:
            first = Branch(self.request.uri, dst_uri=self.dst_uri,
                           destination=None if self.dst_uri is not None else self.flow_destination)
        elif self.dst_uri is not None:
            first.dst_uri = self.dst_uri
        return [first, *self.branches]


class ServerContext:
    """Everything about one incoming request handled statefully (the OpenSIPS transaction "cell")."""

    __slots__ = ("request", "flow", "tx", "route", "branches", "groups", "final_sent", "canceled",
                 "failure_running", "starting", "live", "dialog")

    def __init__(self, request: Request, flow: Flow) -> None:
        self.request = request
        self.flow = flow
        self.tx: ServerTransaction | None = None
        self.route: RouteState | None = None
        self.branches: list[ClientBranch] = []
        self.groups: list[list[Branch]] = []  # q groups not tried yet (§16.6, serial forking)
        self.final_sent = False
        self.canceled = False
        self.failure_running = False
        self.starting = False  # a group's branches are being created: no best-response choice yet
        self.live = 0  # transactions of this context not yet terminated
        self.dialog: Dialog | None = None  # the dialog its INVITE creates (create_dialog)

    def shed(self, request: Request) -> None:
        """The request was answered here and never relayed: keep ``request`` (the transaction's
        slim copy) instead of the whole one, and let go of the route state (which holds the whole
        request too), so an answered transaction costs a few hundred bytes until it ends."""
        self.request = request
        self.route = None

    def release(self) -> None:
        """Break the context's reference cycles (route state, branches) once its last transaction
        has terminated, so it is freed by reference counting rather than by the cyclic garbage
        collector, whose full passes over a large heap stall the reactor for hundreds of ms."""
        route = self.route
        if route is not None:
            route.ctx = None
            route.reply = None
            self.route = None
        for b in self.branches:
            b.ctx = None
        self.branches = []
        self.groups = []


class ClientBranch:
    """One forwarded copy of a request and its client transaction (§16.6).

    A next hop named by a host name is first located (RFC 3263): until then the branch has no
    transaction and ``request`` is ``base``, the copy before our Via and Record-Route. Each target of
    the located list is then tried as a new ClientBranch with a new transaction (§4.3: a new Via
    branch), which takes the old one's place in its context; ``alternatives`` are the targets left,
    and a ``replaced`` branch's late events are ignored (its transaction only finishes its ACKs)."""

    __slots__ = ("ctx", "target", "request", "destination", "tx", "final", "provisional",
                 "cancel_wanted", "cancel_headers", "cancel_sent", "flow", "base", "alternatives", "replaced",
                 "received")

    def __init__(self, ctx: ServerContext, target: Branch, request: Request, destination: Destination) -> None:
        self.ctx: ServerContext | None = ctx  # None once the context is released
        self.target = target
        self.request = request
        self.destination = destination
        self.tx: ClientTransaction | None = None
        self.final: Response | None = None
        self.provisional = False
        self.cancel_wanted = False
        self.cancel_headers: tuple[tuple[str, str], ...] = ()  # the Reason of a CANCEL held until a 1xx
        self.cancel_sent = False
        self.flow: Flow | None = None
        self.base: Request | None = None
        self.alternatives: list[Endpoint] | None = None
        self.replaced = False
        self.received = False  # ``final`` came from the network (else we made it: t_local_replied)

    def send_destination(self) -> Destination:
        """Where this branch's requests (retransmissions, its CANCEL) go: over the flow its first
        send used, once known, so a connection-oriented branch stays on its connection."""
        dst = self.destination
        return Destination(dst.remote, self.flow or dst.flow, dst.flow_only, dst.server_name)


class CancelBranch:
    """The client transaction of a CANCEL we generated (§9.1); its responses are absorbed."""

    __slots__ = ("destination",)

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
