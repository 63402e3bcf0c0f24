"""Unit-testing route modules without a network.

:class:`RouteHarness` runs a route function against a request built from SIP text with the node's
own verbs (:class:`~edgeproxy.routing.verbs.RouteVerbs`) over a real
:class:`~edgeproxy.location.InMemoryLocation` and :class:`~edgeproxy.registrar.Registrar`, and
records what the route did (replies, relays, Record-Route, targets) instead of sending anything::

    from edgeproxy.routing.testing import RouteHarness
    import edgeproxy_routes.default as route

    h = RouteHarness(domains=["example.com"])
    h.register("sip:alice@example.com", "sip:alice@192.0.2.10:5062")
    result = h.run(route.request_route, INVITE_TEXT)
    assert result.relayed and result.record_routed
    assert str(result.targets[0].uri) == "sip:alice@192.0.2.10:5062"

Only where a request would leave the node does the harness differ from it: a reply or a relay is
recorded here (:class:`RouteResult`) instead of going through transactions and sockets.

Federation stand-ins: ``homes={"alice@example.com": ["10.0.2.100"]}`` are the other nodes a global
lookup (flag ``g``) finds in the shared store -- each becomes a branch ``sip:<aor>`` via
``sip:<home>``, after the local contacts, as on the node (the same
:func:`~edgeproxy.federation.global_lookup`), and not for a request from a ``cluster_peers`` address
(the loop guard); ``homes=StoreError(...)`` (any exception) is a store that is down. ``raw_query``
answers ``msg.cache_raw_query(command)``: a list of documents, a callable ``command -> documents``
(or raising), or an exception; the commands are kept in :attr:`RouteHarness.raw_queries`.

Dispatcher: ``dispatcher=config.dispatcher`` (a :class:`~edgeproxy.dispatcher.DispatcherSettings`
with its ``destinations``) gives the ``ds_*`` verbs the node's sets; ``harness.dispatcher`` is the
:class:`~edgeproxy.dispatcher.Dispatcher`, whose states a test may change
(``harness.dispatcher.set_state(dest, "i", "test")``) as probing would.

Address groups: ``permissions=config.permissions`` (a :class:`~edgeproxy.permissions.PermissionsSettings`)
gives ``check_address`` / ``check_source_address`` the rows of the file, including the default group
the node builds from ``route_params.freeswitch`` (built here too when ``permissions`` is not given);
the database's rows are the node's only. A :class:`~edgeproxy.permissions.Permissions` may be given.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from ..auth import Authenticator, AuthSettings, subscriber_store
from ..dialog import DialogSettings, DialogTable
from ..dispatcher import Dispatcher, DispatcherSettings
from ..federation.lookup import GlobalLookup, global_lookup
from ..federation.store import StoreError
from ..interfaces import SendError
from ..location import InMemoryLocation
from ..permissions import Permissions, PermissionsSettings, with_route_params_rows
from ..proxy.context import Branch, RouteState
from ..proxy.dialogs import DialogKeeper
from ..proxy.flood import FloodDetector, FloodSettings
from ..proxy.forwarding import Forwarder
from ..proxy.identity import LocalIdentity
from ..proxy.settings import ProxySettings
from ..proxy.uac import LocalRequest
from ..registrar import Registrar, RegistrarSettings
from ..sip.endpoint import Destination, Endpoint, Flow
from ..sip.errors import SipParseError
from ..sip.message import Message, Request, Response
from ..sip.parser import parse_datagram
from ..transaction import TimerSettings
from .api import RouteRequest
from .errors import RouteReply
from .verbs import RouteVerbs

__all__ = ["RouteHarness", "RouteResult"]


@dataclass
class RouteResult:
    """What a route did with one request."""

    request: RouteRequest
    state: RouteState
    replies: list[tuple[int, str | None, bool]] = field(default_factory=list)  # (code, reason, stateful)
    responses: list[Response] = field(default_factory=list)  # the replies as they would be sent
    relayed: bool = False
    targets: list[Branch] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def record_routed(self) -> bool:
        """Whether the relayed request carries our Record-Route (the route asked, and the method
        can have one), as on the wire."""
        return self.state.adds_record_route()

    @property
    def reply_code(self) -> int | None:
        return self.replies[-1][0] if self.replies else None

    @property
    def reply_headers(self) -> list[tuple[str, str]]:
        """Headers the route added to its replies (``append_to_reply``)."""
        return list(self.state.reply_headers)


class _Recorder:
    """The harness's :class:`~edgeproxy.routing.verbs.ProxyCore`: records instead of sending."""

    def __init__(self) -> None:
        self.result: RouteResult | None = None
        self.originated: list[tuple[Request, Destination]] = []  # BYEs the dialogs would send

    def start_local(self, owner: LocalRequest) -> None:
        self.originated.append((owner.request, owner.destination))

    def respond(self, route: RouteState, response: Response, stateful: bool) -> None:
        assert self.result is not None
        self.result.replies.append((response.status, response.reason, stateful))
        self.result.responses.append(response)

    def relay(self, route: RouteState, targets: list[Branch]) -> bool:
        assert self.result is not None
        route.relayed = True
        self.result.relayed = True
        self.result.targets = targets
        return True

    def forward_ack(self, route: RouteState, target: Branch) -> bool:
        return self.relay(route, [target])

    def drop(self, route: RouteState) -> None:
        """Nothing to forget: the harness keeps no transactions."""


class _Listeners:
    """A :class:`~edgeproxy.interfaces.Sender` with listeners and no network: the verbs only ask it
    which address faces a peer (flow tokens); sending is an error."""

    def __init__(self, local: Endpoint) -> None:
        self.local = local

    def send(self, destination: Destination, message: Message) -> "Deferred[Flow]":
        return fail(SendError("RouteHarness does not send"))

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        return Endpoint(transport, self.local.host, self.local.port)


class _Peers:
    """``cluster_peers={1: ["10.0.2.100"]}``: the other nodes' addresses, all up."""

    def __init__(self, peers: Mapping[int, list[str]]) -> None:
        self.peers = peers

    def cluster_check_addr(self, cluster_id: int, ip: str) -> bool:
        return ip in self.peers.get(cluster_id, ())

    def node_for_sip_addr(self, ip: str, cluster_id: int | None = None) -> None:
        return None

    def is_up(self, node_id: int, cluster_id: int | None = None) -> bool:
        return True


class _Store:
    """The federation store of ``homes`` and ``raw_query`` (see the module docstring)."""

    def __init__(self, location: InMemoryLocation, homes: Mapping[str, list[str]] | BaseException | None,
                 raw_query: list[dict[str, Any]] | Callable[[Any], list[dict[str, Any]]] | BaseException | None,
                 sip_addr: str) -> None:
        self.location = location
        self.known = homes
        self.answer = raw_query
        self.sip_addr = sip_addr
        self.queries: list[Any] = []

    def homes(self, aor: str) -> list[str]:
        if isinstance(self.known, BaseException):
            raise StoreError("homes", self.known, False)
        return list((self.known or {}).get(aor, ()))

    def global_lookup(self, aor: str, method: str | None = None) -> "Deferred[GlobalLookup]":
        return global_lookup(self.location, self, self.sip_addr, aor, method)

    def raw_query(self, command: Mapping[str, Any] | str) -> "Deferred[list[dict[str, Any]]]":
        self.queries.append(command)
        answer = self.answer
        if answer is None:
            return fail(RuntimeError("no federation store configured (RouteHarness(raw_query=...))"))
        if isinstance(answer, BaseException):
            return fail(answer)
        if callable(answer):
            return maybeDeferred(answer, command)
        return succeed([dict(doc) for doc in answer])


class RouteHarness:
    """The node's route verbs with in-memory collaborators, recording what leaves."""

    def __init__(self, domains: list[str] | tuple[str, ...] = (), local: Endpoint = Endpoint("UDP", "127.0.0.1", 5060),
                 settings: RegistrarSettings | None = None, params: dict[str, Any] | None = None,
                 cluster_peers: dict[int, list[str]] | None = None,
                 homes: Mapping[str, list[str]] | BaseException | None = None,
                 raw_query: list[dict[str, Any]] | Callable[[Any], list[dict[str, Any]]] | BaseException | None = None,
                 cluster_id: int = 1, auth: AuthSettings | None = None,
                 pike: FloodSettings | None = None, location: InMemoryLocation | None = None,
                 dispatcher: DispatcherSettings | Dispatcher | None = None,
                 permissions: PermissionsSettings | Permissions | None = None,
                 dialog: DialogSettings | None = None, timers: TimerSettings | None = None) -> None:
        self.clock = Clock()
        # [auth]: the node's Authenticator over [auth.users] (an in-memory store), on the harness clock
        self.auth = Authenticator(auth, subscriber_store(auth), self.clock) if auth is not None else None
        # a location service of the test's own (e.g. one whose lookups fail) instead of a fresh one
        self.location = location if location is not None else InMemoryLocation(self.clock)
        self.registrar = Registrar(self.location, settings or RegistrarSettings(), self.clock)
        self.local = local
        self.params = params or {}
        self.stats: dict[str, int] = {"replied": 0, "relayed": 0, "dropped": 0, "route_errors": 0}
        proxy_settings = ProxySettings(domains=tuple(domains))
        self.forwarder = Forwarder(_Listeners(local), proxy_settings)
        self._recorder = _Recorder()
        self.store = (_Store(self.location, homes, raw_query, local.host)
                      if homes is not None or raw_query is not None else None)
        self.flood = FloodDetector(pike) if pike is not None else None
        # [dispatcher]: the sets of its [[dispatcher.destinations]] (or a Dispatcher of the test's own)
        self.dispatcher = Dispatcher(dispatcher) if isinstance(dispatcher, DispatcherSettings) else dispatcher
        # address groups: the file's rows of config.permissions (as the node loads them, with the
        # route_params.freeswitch default group), or a Permissions of the test's own
        if permissions is None:
            permissions = with_route_params_rows(None, self.params)
        self.permissions = Permissions(permissions) if isinstance(permissions, PermissionsSettings) else permissions
        # [dialog]: a real table; dialogs are created and profiled, never answered (no responses here)
        self.dialogs = DialogTable(dialog or DialogSettings())
        keeper = DialogKeeper(self.dialogs, self.forwarder, self.clock, self._recorder.start_local)
        self.verbs = RouteVerbs(self._recorder, self.forwarder, LocalIdentity(domains, [local]), self.registrar,
                                proxy_settings, self.clock, self.stats,
                                cluster=_Peers(cluster_peers or {}), cluster_id=cluster_id,
                                federation=self.store, auth=self.auth, flood=self.flood,
                                dispatcher=self.dispatcher, permissions=self.permissions, dialogs=keeper,
                                timers=timers)  # [timers]: what msg.T_fr_timeout reads until it is set

    @property
    def raw_queries(self) -> list[Any]:
        """The commands ``msg.cache_raw_query`` ran, in order."""
        return self.store.queries if self.store is not None else []

    # -- setup ---------------------------------------------------------------------------------------
    def register(self, aor: str, contact: str, expires: int = 3600,
                 source: Endpoint = Endpoint("UDP", "192.0.2.10", 5062)) -> Response:
        """Register ``contact`` for ``aor`` through the real registrar; returns its reply."""
        text = (
            f"REGISTER sip:{aor.split('@', 1)[-1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source.hostport};branch=z9hG4bK-reg{len(self.location)}\r\n"
            f"From: <{aor}>;tag=reg\r\nTo: <{aor}>\r\nCall-ID: reg-{aor}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <{contact}>;expires={expires}\r\nContent-Length: 0\r\n\r\n"
        )
        request = parse_datagram(text.encode())
        assert isinstance(request, Request)
        out: list[Response] = []
        self.registrar.save(request, Flow(self.local, source)).addCallback(out.append)
        return out[0]

    # -- running -------------------------------------------------------------------------------------
    def run(self, route: Callable[..., Any], message: str | bytes | Request,
            source: Endpoint = Endpoint("UDP", "192.0.2.20", 5060)) -> RouteResult:
        """Run ``route`` on ``message`` (SIP text or a Request) and return what it did. Routes that
        await Deferreds from this harness complete synchronously. As on the node, a
        :class:`~edgeproxy.routing.api.RouteReply` is answered statefully; a malformed header the
        route read is answered with its own status; any other exception is recorded in ``error``."""
        if isinstance(message, Request):
            request = message
        else:
            data = message.encode() if isinstance(message, str) else message
            parsed = parse_datagram(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
            assert isinstance(parsed, Request)
            request = parsed
        state = RouteState(request, Flow(self.local, source))
        msg = RouteRequest(state, self.verbs, self.params)
        result = self._recorder.result = RouteResult(msg, state)
        if request.method == "CANCEL":
            # as on the node, a CANCEL never reaches the route: the proxy answers it (§16.10), and
            # the harness has no INVITE transaction for it to match
            self.verbs.reply(state, 481, None, False)
            return result
        try:
            outcome = route(msg)
            if inspect.iscoroutine(outcome):
                failures: list[Failure] = []
                ensureDeferred(outcome).addErrback(failures.append)
                if failures:
                    failures[0].raiseException()
        except Exception as exc:  # noqa: BLE001 - answered as the node answers it, and recorded
            failure = Failure()
            if not isinstance(exc, (RouteReply, SipParseError)):
                result.error = exc
            self.verbs.route_failed(state, failure, "harness")
        else:
            self.verbs.route_done(state, "harness")
        return result
