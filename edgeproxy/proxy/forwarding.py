"""Building the forwarded copies of a request (RFC 3261 §16.6) and finding where they go (RFC 3263).

:class:`Forwarder` owns this node's Via branch and To-tag identities, the RFC 5626 flow tokens of its
Record-Route entries, and the next-hop rules: a copy per target with its Request-URI, Max-Forwards,
Route (Path), Record-Route and Via; next hops named by a host name are located through the
:class:`~edgeproxy.interfaces.Locator`, and :meth:`Forwarder.try_next` builds the next attempt of
RFC 3263 §4.3 failover. It creates no transactions (that is :mod:`edgeproxy.proxy.engine`'s job) and
sends only the stateless forwards of §16.11.
"""

from __future__ import annotations

import binascii
import os
from itertools import count

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..dns import ServerQuery
from ..interfaces import Locator, Sender, SendError
from ..sip import grammar as g
from ..sip.endpoint import Destination, Endpoint, Flow
from ..sip.errors import SipValueError
from ..sip.message import Headers, Message, Request, Response
from ..sip.uri import URI, SipURI
from .context import Branch, ClientBranch, RouteState
from .flowtoken import FlowTokens
from .hops import uri_destination, uri_query
from .noise import NoiseLog
from .settings import ProxySettings

__all__ = ["Forwarder", "build_cancel", "cancel_reason", "rr_uri", "CancelHeaders", "REASON_NO_ANSWER",
           "REASON_COMPLETED_ELSEWHERE", "REASON_ORIGINATOR_CANCEL"]

log = Logger(namespace="edgeproxy.proxy")

_RELAY_TRANSPORTS = ("UDP", "TCP", "TLS")  # what a located next hop may use (RFC 3263 §4.1)


class Forwarder:
    """§16.6 steps 1-8 for one target, the stateless forwarding of §16.11, and our identities."""

    def __init__(self, sender: Sender, settings: ProxySettings, locator: Locator | None = None,
                 flow_tokens: FlowTokens | None = None, noise: NoiseLog | None = None) -> None:
        self.sender = sender
        # the node's aggregated log of hostile input: sends nobody waits on fail per message (a
        # stray response's next Via, a stateless forward to a name from a Route), so a count each
        self.noise = noise
        self.settings = settings
        # RFC 3263 location of next hops named by a host name; None: such names go to the
        # transports as they are, which resolve their A/AAAA (no SRV, no failover)
        self.locator = locator
        self.flow_tokens = flow_tokens or FlowTokens()  # RFC 5626 flow tokens in our Record-Routes
        prefix = binascii.hexlify(os.urandom(4)).decode()
        self.branch_prefix = f"z9hG4bK{prefix}."  # every Via branch of ours starts with it
        self._branch_seq = count(1)
        self._tag = prefix
        # OpenSIPS server_signature / server_header: (name, value) put on the replies we make
        name, _, value = settings.server_header.partition(":")
        self.server = (name, value.strip()) if settings.server_signature else None
        # OpenSIPS user_agent_header: on requests we originate (never on relayed ones); "": none
        name, _, value = settings.user_agent_header.partition(":")
        self.user_agent = (name, value.strip()) if value else None

    # -- identities ----------------------------------------------------------------------------------
    def new_branch(self) -> str:
        """A fresh RFC 3261 §8.1.1.7 branch for a Via of ours."""
        return f"{self.branch_prefix}{next(self._branch_seq):x}"

    def to_tag(self, request: Request) -> str:
        """Our To tag for responses we generate to ``request`` (§8.2.6.2): the same for its
        retransmissions, so they are answered alike."""
        via = request.top_via
        key = f"{request.call_id}|{request.from_tag}|{via.branch}".encode("utf-8", "surrogateescape")
        return f"{self._tag}-{binascii.crc32(key):08x}"

    def is_flow_token(self, user: str | None) -> bool:
        """Whether a Route URI's user part is one of our flow tokens (forged ones count: they are
        ours to refuse, not to relay)."""
        return self.flow_tokens.looks_like(user)

    def flow_destination(self, flow: Flow, ruri: URI) -> Destination:
        """Where a request goes whose Route named ``flow``: over that connection. WebSocket clients
        cannot be reached otherwise (430 Flow Failed when it has closed); for TCP/TLS the Request-URI
        is sent to instead if it is routable over the same transport (or UDP from a TCP flow) and not
        an outbound (``ob``, RFC 5626) or ``.invalid`` contact. A UDP flow (a client behind NAT) is sent to from the
        listener its token faces, to the address it sends from: its NAT binding."""
        remote = flow.remote
        if flow.connection_id is None:
            return Destination(remote, flow)
        flow = Flow(self.sender.local_endpoint(remote.transport, remote) or flow.local, remote, flow.connection_id)
        fallback = self._contact_fallback(remote.transport, ruri)
        if fallback is not None:
            return Destination(fallback, flow)
        return Destination(remote, flow, flow_only=True)

    def stale_flow_destination(self, flow: Flow, ruri: URI) -> Destination | None:
        """Where a request goes whose Route named a connection of an earlier process of this node
        (:class:`~edgeproxy.proxy.flowtoken.StaleFlowToken`): as :meth:`flow_destination` once that
        connection has closed -- the Request-URI when a TCP/TLS client can be dialled there, else
        None: the request gets 430 Flow Failed (RFC 5626 §5.3, §11.5)."""
        fallback = self._contact_fallback(flow.remote.transport, ruri)
        return Destination(fallback) if fallback is not None else None

    @staticmethod
    def _contact_fallback(transport: str, ruri: URI) -> Endpoint | None:
        """Where a TCP/TLS client whose connection is gone is dialled (RFC 3261 §18): its Request-URI
        when routable over the same transport (or UDP from TCP); never for an outbound (``ob``) or
        ``.invalid`` contact, and a TLS flow never falls back to a transport in clear."""
        if transport not in ("TCP", "TLS") or not isinstance(ruri, SipURI) or "ob" in ruri.params:
            return None
        fallback = uri_destination(ruri)
        if not fallback.flow_only and (fallback.remote.transport == transport
                                       or (transport, fallback.remote.transport) == ("TCP", "UDP")):
            return fallback.remote
        return None

    # -- sending -------------------------------------------------------------------------------------
    def send(self, destination: Destination, message: Message) -> "Deferred[Flow]":
        """Send, logging (not raising) a failure: for messages nobody waits on."""
        d = self.sender.send(destination, message)
        d.addErrback(self._log_send_failure, destination)
        return d

    def _log_send_failure(self, failure: Failure, destination: Destination) -> None:
        self._note(destination.remote.host, "send failed", f"to {destination.remote}: {failure.getErrorMessage()}")

    def _note(self, source: str, kind: str, detail: str) -> None:
        noise = self.noise
        if noise is not None:
            noise.note(source, kind, detail)
        else:
            log.info("{kind}: {detail}", kind=kind, detail=detail)

    # -- next hops -----------------------------------------------------------------------------------
    def transports(self) -> frozenset[str]:
        """The transports a located next hop may use: those we have a listener for (Via needs one)."""
        return frozenset(t for t in _RELAY_TRANSPORTS if self.sender.local_endpoint(t) is not None)

    def locate(self, query: ServerQuery) -> "Deferred[list[Endpoint]]":
        """RFC 3263 targets for ``query``; a locator that raises is a failed resolution."""
        assert self.locator is not None, "a query is only made when a locator is configured"
        try:
            return self.locator.locate(query, self.transports())
        except Exception:
            log.failure("locating {host} failed", host=query.host)
            return fail(SendError("Name Resolution Failed"))

    def next_hop(self, request: Request, target: Branch) -> tuple[Destination, ServerQuery | None]:
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

    # -- §16.6 ---------------------------------------------------------------------------------------
    def prepare(self, request: Request, target: Branch, route: RouteState | None, in_flow: Flow,
                branch: str) -> tuple[Request, Destination, ServerQuery | None]:
        """§16.6 steps 1-8 for one target: copy, Request-URI, Max-Forwards, Route (Path), next hop,
        and then Record-Route and Via -- unless the next hop must be located first (a query is
        returned): those two depend on the transport and address family, which the location picks,
        so :meth:`stamp` adds them per target tried."""
        fwd = request.copy()
        if route is not None and route.cseq_out is not None:  # the dialog renumbers (DialogTable.relayed_cseq)
            fwd.headers.set("CSeq", f"{route.cseq_out} {request.method}")
        if str(target.uri) != request.uri_text:
            fwd.uri = target.uri
        mf = fwd.max_forwards
        fwd.max_forwards = (mf - 1) if mf is not None else self.settings.max_forwards_default
        for p in reversed(target.path):
            fwd.headers.push("Route", p)
        destination, query = self.next_hop(fwd, target)
        routes = fwd.routes
        if routes and isinstance(routes[0].uri, SipURI) and not routes[0].uri.lr:
            # §16.6 step 6: the next hop is a strict router: it gets the request with its URI as
            # Request-URI, and the Request-URI goes to the end of the route set
            fwd.headers.add("Route", f"<{fwd.uri_text}>")
            fwd.headers.pop_first_value("route")
            fwd.uri = routes[0].uri
        if query is None:
            self.stamp(fwd, destination, route, in_flow, branch)
        return fwd, destination, query

    def stamp(self, fwd: Request, destination: Destination, route: RouteState | None, in_flow: Flow,
              branch: str) -> None:
        """§16.6 steps 4 and 8 for a resolved next hop: Record-Route and our Via, from the listener
        that faces ``destination`` (SendError 503 when there is none; ``fwd`` is then unchanged)."""
        local = self.sender.local_endpoint(destination.remote.transport, destination.remote)
        if local is None:
            raise SendError(f"no {destination.remote.transport} listener", 503)
        if route is not None and route.adds_record_route():
            # RFC 5626 §5.3 / RFC 7118 §5: an entry facing a client on a connection names that
            # connection with a flow token; two entries when the request changes listener (RFC 5658)
            # or goes from one client's connection to another's, so each side's in-dialog requests
            # find the other side's connection
            inbound = in_flow.local
            # a UDP client's flow is named only when the route found it behind NAT (msg.nat,
            # nat_uac_test), or when it is reached at its NAT address (a NAT binding's flow)
            in_token = (self.flow_tokens.encode(in_flow) if in_flow.connection_id is not None
                        else self.flow_tokens.encode(in_flow, inbound) if route.nat else None)
            out_token = self.flow_tokens.encode(destination.flow, local)
            if ((self.settings.record_route_double and inbound != local)
                    or (in_token is not None and out_token is not None and in_token != out_token)):
                fwd.headers.push("Record-Route", rr_uri(inbound, in_token))
                fwd.headers.push("Record-Route", rr_uri(local, out_token))
            else:
                if in_token is not None and in_flow.connection_id is None and inbound != local:
                    in_token = None  # a UDP token is bound to its listener: not in another's URI
                fwd.headers.push("Record-Route", rr_uri(local, in_token or out_token))
        fwd.push_via(f"SIP/2.0/{local.transport} {local.hostport};branch={branch}")

    def reply_to(self, request: Request, status: int, reason: str | None = None, *,
                 to_tag: str | None = None) -> Response:
        """A response of our own to ``request`` (§8.2.6.2), with our ``Server`` header (OpenSIPS adds
        ``server_header`` to the replies it builds, not to those it relays; RFC 3261 §20.35)."""
        return self.sign(request.make_response(status, reason, to_tag=to_tag))

    def sign(self, response: Response) -> Response:
        """Our ``Server`` header on a response of ours: :meth:`reply_to`'s, or one another layer built
        for us from the request (the registrar's: it copies no Server, so none is looked for)."""
        if self.server is not None:
            response.headers.add(*self.server)
        return response

    def local_final(self, original: Request, request: Request, status: int, reason: str) -> Response:
        """A final response of ours for a branch that never got a transaction. The copy still gets a
        Via of ours, so it looks like any other branch's: forwarding it upstream pops our Via, not
        the caller's (§16.7 step 9)."""
        failed = request.copy()
        failed.push_via(f"SIP/2.0/UDP 0.0.0.0;branch={self.new_branch()}")
        return self.reply_to(failed, status, reason, to_tag=self.to_tag(original))

    def try_next(self, old: ClientBranch, targets: list[Endpoint]) -> ClientBranch | SendError:
        """RFC 3263 §4.3: ``old``'s request for the first of ``targets`` we have a listener for, as a
        new branch (new Via branch) that takes ``old``'s place in its context, the targets not tried
        staying with it for the next failover; or why none could be (a target is consumed either
        way). The caller starts its transaction."""
        ctx = old.ctx
        base = old.base
        assert ctx is not None and base is not None
        error = SendError("Name Resolution Failed")
        while targets:
            remote = targets.pop(0)
            destination = Destination(remote, server_name=old.destination.server_name)
            fwd = base.copy()
            try:
                self.stamp(fwd, destination, ctx.route, ctx.flow, self.new_branch())
            except SendError as exc:
                error = exc
                continue
            cb = ClientBranch(ctx, old.target, fwd, destination)
            cb.base = base
            cb.alternatives = targets
            ctx.branches[ctx.branches.index(old)] = cb
            old.replaced = True
            return cb
        return error

    def forward_stateless(self, route: RouteState, target: Branch) -> bool:
        """§16.11: forward without state (the ACK of a 2xx): the branch is derived from the incoming
        one so a retransmission gets the same branch."""
        request = route.request
        incoming = request.top_via.branch or request.call_id
        branch = f"z9hG4bK{self._tag}s{binascii.crc32(incoming.encode('utf-8', 'surrogateescape')):08x}"
        try:
            fwd, destination, query = self.prepare(request, target, route, route.source, branch)
        except (SendError, SipValueError) as exc:
            self._note(route.source.remote.host, "stateless forward failed", str(exc))
            return False
        if query is None:
            self.send(destination, fwd)
            return True

        def located(targets: list[Endpoint]) -> None:
            # stateless: no transaction to fail over with, the first usable target gets it (§16.11)
            for remote in targets:
                to = Destination(remote, server_name=destination.server_name)
                try:
                    self.stamp(fwd, to, route, route.source, branch)
                except SendError:
                    continue
                self.send(to, fwd)
                return
            self._note(route.source.remote.host, "stateless forward failed", f"{query.host}: no usable target")

        self.locate(query).addCallbacks(
            located, lambda f: self._note(route.source.remote.host, "stateless forward failed",
                                          f"{query.host}: {f.getErrorMessage()}"))
        return True


#: Extra header lines of a CANCEL we generate, as (name, value) pairs.
CancelHeaders = tuple[tuple[str, str], ...]

# RFC 3326 Reason headers of the CANCELs OpenSIPS's tm generates, word for word:
#: a branch that rang and timed out (fr_inv_timeout, Timer C; ``timer.c: final_response_handler``)
REASON_NO_ANSWER: CancelHeaders = (("Reason", 'SIP;cause=480;text="NO_ANSWER"'),)
#: the other branches of an INVITE that was answered 2xx (``t_cancel.h: CANCEL_REASON_200``, RFC 3326 §2)
REASON_COMPLETED_ELSEWHERE: CancelHeaders = (("Reason", 'SIP ;cause=200 ;text="Call completed elsewhere"'),)
#: a CANCEL received without a Reason to pass on (``t_fwd.c: get_cancel_reason``, "normal clearing")
REASON_ORIGINATOR_CANCEL: CancelHeaders = (("Reason", 'SIP;cause=487;text="ORIGINATOR_CANCEL"'),)

_MAX_REASON_LINES = 4  # RFC 3326 allows one value per protocol (SIP, Q.850, ...)
_MAX_REASON_LENGTH = 256


def cancel_reason(cancel: Request, pass_reason: bool) -> CancelHeaders:
    """The Reason of the CANCELs that go to the branches of a CANCELled INVITE (OpenSIPS
    ``get_cancel_reason``): with ``pass_reason`` (tm's ``t_relay`` flag ``pass-reason-hdr``) the
    received CANCEL's own Reason lines (RFC 3326: e.g. ``SIP;cause=200;text="Call completed
    elsewhere"`` from a forking UA, so phones do not show a missed call), if every line is a
    well-formed and bounded RFC 3326 value; else OpenSIPS's ``487 ORIGINATOR_CANCEL``."""
    if pass_reason:
        lines = cancel.headers.get_all("reason")
        if (lines and len(lines) <= _MAX_REASON_LINES
                and all(len(v) <= _MAX_REASON_LENGTH and g.REASON_RE.fullmatch(v) for v in lines)):
            return tuple(("Reason", v.strip()) for v in lines)
    return REASON_ORIGINATOR_CANCEL


def build_cancel(invite: Request, extra: CancelHeaders = ()) -> Request:
    """§9.1: the CANCEL of a forwarded INVITE: its top Via, Route set, From, To, Call-ID and CSeq
    number; Max-Forwards 70; then ``extra`` (an RFC 3326 Reason, the MI's extra headers)."""
    h = Headers()
    h.add("Via", invite.headers.values("via")[0])
    for v in invite.headers.get_all("route"):
        h.add("Route", v)
    h.add("Max-Forwards", "70")
    h.add("From", invite.headers.get("from") or "")
    h.add("To", invite.headers.get("to") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq.number} CANCEL")
    for name, value in extra:
        h.add(name, value)
    return Request("CANCEL", invite.uri_text, h)


def rr_uri(local: Endpoint, token: str | None = None) -> str:
    """Our Record-Route URI for the listener ``local``: ``transport=ws`` for WS and WSS alike (RFC 7118
    errata 5937), a flow token as user part and ``ob`` when it faces a client's connection (RFC 5626)."""
    kind = local.transport
    transport = "" if kind == "UDP" else f";transport={'ws' if kind in ('WS', 'WSS') else kind.lower()}"
    if token is None:
        return f"<sip:{local.hostport}{transport};lr>"
    return f"<sip:{token}@{local.hostport}{transport};lr;ob>"
