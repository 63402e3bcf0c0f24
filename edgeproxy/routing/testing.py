"""Unit-testing route modules without a network.

:class:`RouteHarness` runs a route function against a request built from SIP text, over a real
:class:`~edgeproxy.location.InMemoryLocation` and :class:`~edgeproxy.registrar.Registrar`, and records
what the route did (replies, relays, Record-Route, branches) instead of sending anything::

    from edgeproxy.routing.testing import RouteHarness
    import routes.default as route

    h = RouteHarness(domains=["example.com"])
    h.register("sip:alice@example.com", "sip:alice@192.0.2.10:5062")
    result = h.run(route.request_route, INVITE_TEXT)
    assert result.relayed and result.record_routed
    assert str(result.targets[0].uri) == "sip:alice@192.0.2.10:5062"

Federation stand-ins: ``homes={"alice@example.com": ["10.0.2.100"]}`` are the other nodes a global
lookup (flag ``g``) finds in the shared store -- each becomes a branch ``sip:<aor>`` via
``sip:<home>``, after the local contacts, as the node does, and not for a request from a
``cluster_peers`` address (the loop guard); ``homes=StoreError(...)`` (any exception) is a store that
is down. ``raw_query`` answers ``msg.cache_raw_query(command)``: a list of documents, a callable
``command -> documents`` (or raising), or an exception; the commands are kept in
:attr:`RouteHarness.raw_queries`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock

from ..auth import Authenticator, AuthSettings, subscriber_store
from ..location import InMemoryLocation, LookupResult
from ..registrar import Registrar, RegistrarSettings, aor_of
from ..proxy.hops import loose_route
from ..sip.endpoint import Endpoint, Flow
from ..sip.message import Request, Response
from ..sip.parser import parse_datagram
from ..sip.uri import SipURI, parse_uri
from .api import Branch, RouteRequest, SIPError

__all__ = ["RouteHarness", "RouteResult"]


@dataclass
class RouteResult:
    """What a route did with one request."""

    request: RouteRequest
    replies: list[tuple[int, str | None, bool]] = field(default_factory=list)  # (code, reason, stateful)
    relayed: bool = False
    targets: list[Branch] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def record_routed(self) -> bool:
        return self.request.record_routed

    @property
    def reply_code(self) -> int | None:
        return self.replies[-1][0] if self.replies else None

    @property
    def reply_headers(self) -> list[tuple[str, str]]:
        """Headers the route added to its replies (``append_to_reply``)."""
        return list(self.request.reply_headers)


class RouteHarness:
    """In-memory :class:`~edgeproxy.routing.api.RouteActions` with a real location service."""

    def __init__(self, domains: list[str] | tuple[str, ...] = (), local: Endpoint = Endpoint("UDP", "127.0.0.1", 5060),
                 settings: RegistrarSettings | None = None, params: dict[str, Any] | None = None,
                 cluster_peers: dict[int, list[str]] | None = None,
                 homes: Mapping[str, list[str]] | BaseException | None = None,
                 raw_query: list[dict[str, Any]] | Callable[[Any], list[dict[str, Any]]] | BaseException | None = None,
                 cluster_id: int = 1, auth: AuthSettings | None = None) -> None:
        self.clock = Clock()
        # [auth]: the node's Authenticator over [auth.users] (an in-memory store), on the harness clock
        self.auth = Authenticator(auth, subscriber_store(auth), self.clock) if auth is not None else None
        self.flooding: set[str] = set()  # sources msg.pike_check_req() reports as flooding
        self.location = InMemoryLocation(self.clock)
        self.registrar = Registrar(self.location, settings or RegistrarSettings(), self.clock)
        self.local = local
        self.domains = {d.lower() for d in domains}
        self.params = params or {}
        self.cluster_peers = cluster_peers or {}
        self.homes = homes
        self.raw_query = raw_query
        self.raw_queries: list[Any] = []
        self.cluster_id = cluster_id
        self._result: RouteResult | None = None

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
        d = self.registrar.save(request, Flow(self.local, source))
        out: list[Response] = []
        d.addCallback(out.append)
        return out[0]

    # -- running -------------------------------------------------------------------------------------
    def run(self, route: Callable[..., Any], message: str | bytes | Request,
            source: Endpoint = Endpoint("UDP", "192.0.2.20", 5060)) -> RouteResult:
        """Run ``route`` on ``message`` (SIP text or a Request) and return what it did. Routes that
        await Deferreds from this harness complete synchronously."""
        if isinstance(message, Request):
            request = message
        else:
            data = message.encode() if isinstance(message, str) else message
            parsed = parse_datagram(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
            assert isinstance(parsed, Request)
            request = parsed
        rr = RouteRequest(request, Flow(self.local, source), self, self.params)
        result = self._result = RouteResult(rr)
        try:
            outcome = route(rr)
            if inspect.iscoroutine(outcome):
                d = ensureDeferred(outcome)
                failures: list[Any] = []
                d.addErrback(failures.append)
                if failures:
                    failures[0].raiseException()
        except SIPError as exc:
            result.replies.append((exc.code, exc.reason, True))
        except Exception as exc:  # noqa: BLE001 - recorded for the test to assert on
            result.error = exc
        return result

    # -- RouteActions ----------------------------------------------------------------------------------
    def relay(self, rr: RouteRequest) -> bool:
        assert self._result is not None
        if rr.replied or rr.relayed:
            return False
        rr.relayed = True
        self._result.relayed = True
        first = rr.ruri_branch or Branch(rr.request.uri, dst_uri=rr.dst_uri)
        self._result.targets = [first, *rr.branches]
        return True

    def reply(self, rr: RouteRequest, code: int, reason: str | None, stateful: bool) -> None:
        assert self._result is not None
        rr.replied = True
        self._result.replies.append((code, reason, stateful))

    def lookup(self, rr: RouteRequest, table: str, flags: str, aor: str | None) -> "Deferred[LookupResult]":
        uri = parse_uri(aor if aor.startswith(("sip:", "sips:")) else f"sip:{aor}") if aor else rr.request.uri
        if not isinstance(uri, SipURI):
            return succeed(LookupResult.NOT_FOUND)
        key = aor_of(uri, self.registrar.settings.use_domain)
        method = rr.request.method if "m" in flags else None
        remote: list[str] = []
        store_down = False
        if "g" in flags and self.homes is not None and not self.cluster_check_addr(self.cluster_id, rr.source_ip):
            if isinstance(self.homes, BaseException):
                store_down = True
            else:
                remote = list(self.homes.get(key, ()))

        def found(res: tuple[LookupResult, list[Any]]) -> LookupResult:
            code, bindings = res
            if store_down and code != LookupResult.FOUND:
                return LookupResult.ERROR
            local = [Branch.to_binding(b) for b in bindings] if code == LookupResult.FOUND else []
            targets = local + [Branch.via_node(key, h) for h in remote]
            if not targets:
                return code
            rr.set_targets(targets)
            return LookupResult.FOUND

        return maybeDeferred(self.location.lookup, key, method).addCallback(found)

    def save(self, rr: RouteRequest, table: str, flags: str) -> "Deferred[bool]":
        def saved(response: Response) -> bool:
            self.reply(rr, response.status, response.reason, False)
            return response.status == 200

        return self.registrar.save(rr.request, rr.source, nat=rr.nat, sipping=rr.sipping).addCallback(saved)

    def loose_route(self, rr: RouteRequest) -> bool:
        return loose_route(rr.request, self.is_myself)

    def cache_raw_query(self, rr: RouteRequest, command: Any) -> "Deferred[list[dict[str, Any]]]":
        """Answer from ``raw_query`` (see the module docstring); fails when none was given."""
        self.raw_queries.append(command)
        answer = self.raw_query
        if answer is None:
            return fail(RuntimeError("no federation store configured (RouteHarness(raw_query=...))"))
        if isinstance(answer, BaseException):
            return fail(answer)
        if callable(answer):
            return maybeDeferred(answer, command)
        return succeed([dict(doc) for doc in answer])

    def authenticator(self) -> Authenticator | None:
        return self.auth

    def pike_check_req(self, rr: RouteRequest) -> bool:
        """Flooding sources are given as ``RouteHarness.flooding = {"203.0.113.9"}``."""
        return rr.source_ip not in self.flooding

    def cluster_check_addr(self, cluster_id: int, ip: str) -> bool:
        """Cluster peers are given as ``RouteHarness(cluster_peers={1: ["10.0.2.100"]})``."""
        return ip in self.cluster_peers.get(cluster_id, ())

    def is_myself(self, host: str, port: int | None = None) -> bool:
        host = host.lower()
        if host in self.domains:
            return True
        return host == self.local.host and port in (None, self.local.port)
