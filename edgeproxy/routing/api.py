"""The route-module API: what an OpenSIPS route block says, as Python.

A route module is a plain Python module defining ``request_route(msg)`` and optionally
``onreply_route(msg, reply)``, ``failure_route(msg)`` and ``branch_route(msg, branch)``; each may be
``def`` or ``async def`` (then it may ``await`` Deferreds such as :meth:`RouteRequest.lookup`).
``msg`` is a :class:`RouteRequest`, which speaks OpenSIPS's vocabulary:

======================================  ====================================================
OpenSIPS                                edgeproxy
======================================  ====================================================
``$si`` / ``$sp`` / ``$proto``           ``msg.source_ip`` / ``msg.source_port`` / ``msg.proto``
``$rm`` ``$ru`` ``$rU`` ``$rd``          ``msg.method`` ``msg.ruri`` ``msg.ruri_user`` ``msg.ruri_domain``
``$tU`` ``$td`` ``$fU`` ``$fd``          ``msg.to_user`` ``msg.to_domain`` ``msg.from_user`` ``msg.from_domain``
``$du``                                  ``msg.dst_uri``
``$branch = "sip:..."``                  ``msg.append_branch("sip:...")``
``lookup("location", "m")``              ``await msg.lookup("location", "m")`` → LookupResult
``save("location")``                     ``await msg.save("location")``
``t_relay()``                            ``msg.t_relay()`` → bool
``sl_send_reply(404, "Not Here")``       ``msg.sl_send_reply(404, "Not Here")``
``append_to_reply("Retry-After: 5")``    ``msg.append_to_reply("Retry-After: 5")`` (headers of the next reply)
``send_reply(302, "Moved")``             ``msg.send_reply(302, "Moved")`` (3xx: branches become Contact)
``record_route()`` ``loose_route()``     ``msg.record_route()`` ``msg.loose_route()``
``has_totag()`` ``is_method("INVITE")``  ``msg.has_totag()`` ``msg.is_method("INVITE")``
``t_on_failure("x")``                    ``msg.t_on_failure(x)`` (a function, checked at load time)
``xlog("...")``                          ``msg.log("...")``
``www_authorize("", "subscriber")``      ``await msg.www_authorize()`` → AuthResult (1, -1..-5)
``proxy_authorize("", "subscriber")``    ``await msg.proxy_authorize()``
``www_challenge("", "auth")``            ``msg.www_challenge()`` (401; ``proxy_challenge()``: 407)
``consume_credentials()``                ``msg.consume_credentials()``
``db_check_to()`` ``db_check_from()``    ``msg.check_to()`` ``msg.check_from()``
``$au`` ``$ar``                          ``msg.auth_user`` ``msg.auth_realm``
``pike_check_req()``                     ``msg.pike_check_req()`` → bool (False: flooding)
``drop()``                               ``msg.drop()`` (no reply at all)
======================================  ====================================================

The authentication verbs use the node's ``[auth]`` section (credentials from ``[auth.users]`` or the
``subscriber`` table of ``[auth] db_url``); ``msg.auth_enabled`` tells whether the file has one, as
Kamailio's stock script tests ``WITH_AUTH``.

``raise SIPError(403, "Forbidden")`` anywhere in a route replies with that status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from ..auth import AuthOutcome, AuthResult, Authenticator
from ..location import LookupResult, binding_destination
from ..sip.message import Request, Response
from ..sip.uri import SipURI, URI, parse_uri

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["SIPError", "RouteRequest", "RouteActions", "LookupResult", "AuthResult", "Branch"]

_log = Logger(namespace="edgeproxy.route")


class SIPError(Exception):
    """Raised by a route to answer the request with ``code`` and ``reason`` and stop routing."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        super().__init__(f"{code} {reason or ''}".strip())
        self.code = code
        self.reason = reason


class Branch:
    """One target of the destination set (OpenSIPS ``$branch``): a Request-URI, an optional
    next hop (``$du``), the Path route set of the binding it came from, and its ``q``."""

    __slots__ = ("uri", "dst_uri", "path", "q", "destination", "binding")

    def __init__(self, uri: URI, dst_uri: SipURI | None = None, path: tuple[str, ...] = (),
                 q: float | None = None, destination: Any = None, binding: Any = None) -> None:
        self.uri = uri
        self.dst_uri = dst_uri
        self.path = path
        self.q = q
        self.destination = destination
        self.binding = binding

    @classmethod
    def to_binding(cls, binding: Any) -> "Branch":
        """The target a location binding stands for: its contact as Request-URI, the next hop and
        route set of :func:`~edgeproxy.location.binding_destination` (Path, flow, NAT)."""
        uri, destination, path = binding_destination(binding)
        return cls(uri, path=tuple(path), q=binding.q, destination=destination, binding=binding)

    @classmethod
    def via_node(cls, aor: str, sip_addr: str) -> "Branch":
        """The federation branch towards the node holding ``aor``: Request-URI ``sip:<aor>``, next
        hop that node's ``sip_addr`` (OpenSIPS's global-lookup branch)."""
        return cls(parse_uri(f"sip:{aor}"), dst_uri=parse_uri(f"sip:{sip_addr}"))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<Branch {self.uri} q={self.q}>"


class RouteActions(Protocol):
    """What the proxy core provides behind a :class:`RouteRequest` (implemented by the node)."""

    def relay(self, rr: "RouteRequest") -> bool: ...
    def reply(self, rr: "RouteRequest", code: int, reason: str | None, stateful: bool) -> None: ...
    def lookup(self, rr: "RouteRequest", table: str, flags: str, aor: str | None) -> "Deferred[LookupResult]": ...
    def save(self, rr: "RouteRequest", table: str, flags: str) -> "Deferred[bool]": ...
    def loose_route(self, rr: "RouteRequest") -> bool: ...
    def is_myself(self, host: str, port: int | None = None) -> bool: ...
    def cluster_check_addr(self, cluster_id: int, ip: str) -> bool: ...
    def cache_raw_query(self, rr: "RouteRequest", command: Any) -> "Deferred[list[dict[str, Any]]]": ...
    def pike_check_req(self, rr: "RouteRequest") -> bool: ...
    def authenticator(self) -> "Authenticator | None": ...


def _coerce_uri(uri: URI | str) -> URI:
    return parse_uri(uri) if isinstance(uri, str) else uri


class RouteRequest:
    """The request as a route module sees it, with the verbs of the OpenSIPS script.

    It wraps the parsed :class:`~edgeproxy.sip.Request` (``msg.request``) and the per-request routing
    state: the destination set, Record-Route flag, armed failure/reply routes and whether a final
    answer was given. Route code can be unit-tested by building one over a fake
    :class:`RouteActions` (see ``tests/test_route_default.py``).
    """

    def __init__(self, request: Request, source: Any, actions: RouteActions, params: dict[str, Any] | None = None) -> None:
        self.request = request
        self.source = source  # a Flow: where the request came from
        self._actions = actions
        self.params: dict[str, Any] = params if params is not None else {}
        self.ruri_changed = False
        self.branches: list[Branch] = []
        self.dst_uri: SipURI | None = None
        self.ruri_branch: Branch | None = None  # set by lookup(): the R-URI's own target data
        self.record_routed = False
        self.nat = False  # OpenSIPS nat_bflag: save() marks the contacts as behind NAT
        self.sipping = False  # nathelper sipping_bflag: save() has NAT contacts pinged with OPTIONS
        self.failure_route: Callable[..., Any] | None = None
        self.reply_route: Callable[..., Any] | None = None
        self.branch_route: Callable[..., Any] | None = None
        self.replied = False
        self.reply_headers: list[tuple[str, str]] = []  # append_to_reply(): added to the route's replies
        self.relayed = False
        self.dropped = False  # drop(): no reply at all
        self.reply_code: int | None = None  # in failure_route: the winning reply's status
        self.reply: Response | None = None  # in failure_route: the winning reply
        self.auth: AuthOutcome | None = None  # the last www_authorize / proxy_authorize

    # -- pseudo-variables --------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.request.method

    @property
    def source_ip(self) -> str:
        return self.source.remote.host

    si = source_ip

    @property
    def source_port(self) -> int:
        return self.source.remote.port

    sp = source_port

    @property
    def proto(self) -> str:
        """``udp``, ``tcp``, ``tls``, ``ws``, ``wss`` (OpenSIPS ``$proto``)."""
        return self.source.remote.transport.lower()

    @property
    def ruri(self) -> URI:
        return self.request.uri

    @ruri.setter
    def ruri(self, value: URI | str) -> None:
        self.request.uri = _coerce_uri(value)
        self.ruri_changed = True
        self.ruri_branch = None

    @property
    def ruri_user(self) -> str | None:
        u = self.request.uri
        return u.user if isinstance(u, SipURI) else None

    rU = ruri_user

    @property
    def ruri_domain(self) -> str | None:
        u = self.request.uri
        return u.host if isinstance(u, SipURI) else None

    rd = ruri_domain

    @property
    def to_user(self) -> str | None:
        u = self.request.to.uri
        return u.user if isinstance(u, SipURI) else None

    tU = to_user

    @property
    def to_domain(self) -> str | None:
        u = self.request.to.uri
        return u.host if isinstance(u, SipURI) else None

    td = to_domain

    @property
    def from_user(self) -> str | None:
        u = self.request.from_.uri
        return u.user if isinstance(u, SipURI) else None

    fU = from_user

    @property
    def from_domain(self) -> str | None:
        u = self.request.from_.uri
        return u.host if isinstance(u, SipURI) else None

    fd = from_domain

    @property
    def call_id(self) -> str:
        return self.request.call_id

    @property
    def auth_user(self) -> str | None:
        """The user whose credentials were accepted (OpenSIPS ``$au``), None before that."""
        a = self.auth
        return a.username if a is not None and a.result is AuthResult.AUTHORIZED else None

    au = auth_user

    @property
    def auth_realm(self) -> str | None:
        """The realm of the accepted credentials (OpenSIPS ``$ar``)."""
        a = self.auth
        return a.realm if a is not None and a.result is AuthResult.AUTHORIZED else None

    ar = auth_realm

    @property
    def auth_enabled(self) -> bool:
        """Whether the node has an ``[auth]`` section (Kamailio's ``WITH_AUTH``)."""
        return self._actions.authenticator() is not None

    @property
    def max_forwards(self) -> int | None:
        """The Max-Forwards value (None when absent)."""
        return self.request.max_forwards

    def mf_process_maxfwd_header(self, limit: int = 70) -> bool:
        """OpenSIPS ``mf_process_maxfwd_header(limit)``: add Max-Forwards (``limit``) when missing;
        False when it is 0, i.e. the request must not be forwarded (§16.3 step 3: answer 483)."""
        mf = self.request.max_forwards
        if mf is None:
            self.request.max_forwards = limit
            return True
        return mf > 0

    def header(self, name: str) -> str | None:
        """The first value of a header (OpenSIPS ``$hdr(name)``)."""
        return self.request.headers.get(name)

    # -- tests -------------------------------------------------------------------------------------
    def is_method(self, methods: str) -> bool:
        """``is_method("INVITE|BYE")``."""
        return self.request.method in methods.split("|")

    def has_totag(self) -> bool:
        return self.request.to_tag is not None

    def is_myself(self, uri_or_host: URI | str | None = None) -> bool:
        """Whether a URI (default: the Request-URI) points at this node (OpenSIPS ``uri == myself``)."""
        target = self.request.uri if uri_or_host is None else uri_or_host
        if isinstance(target, SipURI):
            return self._actions.is_myself(target.host, target.port)
        if isinstance(target, str):
            return self._actions.is_myself(target, None)
        return False

    def cluster_check_addr(self, cluster_id: int, ip: str | None = None) -> bool:
        """OpenSIPS ``cluster_check_addr(cluster_id, "$si")``: whether ``ip`` (default: the source
        address) is the ``sip_addr`` of another node of the cluster."""
        return self._actions.cluster_check_addr(cluster_id, self.source_ip if ip is None else ip)

    # -- verbs -------------------------------------------------------------------------------------
    def append_branch(self, uri: URI | str | None = None, q: float | None = None) -> None:
        """Add a target to the destination set (OpenSIPS ``append_branch()`` / ``$branch = uri``);
        without ``uri``, the current Request-URI is added."""
        self.branches.append(Branch(_coerce_uri(uri) if uri is not None else self.request.uri, q=q))

    def set_targets(self, targets: list[Branch]) -> None:
        """What a successful ``lookup()`` leaves behind: the first target becomes the Request-URI
        (with its next hop), the others are appended to the destination set."""
        first, *rest = targets
        self.request.uri = first.uri
        self.ruri_changed = True
        self.ruri_branch = first
        self.branches.extend(rest)

    def set_dst(self, uri: SipURI | str) -> None:
        """Force the next hop (``$du``) of the Request-URI's branch."""
        parsed = _coerce_uri(uri)
        if not isinstance(parsed, SipURI):
            raise SIPError(416)
        self.dst_uri = parsed

    def record_route(self) -> None:
        """Add Record-Route with ``lr`` on the forwarded request (double when the request changes
        transport or interface, as OpenSIPS's ``enable_double_rr``)."""
        self.record_routed = True

    def loose_route(self) -> bool:
        """Process the Route header (RFC 3261 §16.4): pop the Route entries that are this node and
        return True when the request is routed by Route/Record-Route (an in-dialog request)."""
        return self._actions.loose_route(self)

    def lookup(self, table: str = "location", flags: str = "", aor: str | None = None) -> "Deferred[LookupResult]":
        """Look the Request-URI (or ``aor``) up in the location table; on FOUND the Request-URI and
        the branch set point at the contacts. Fires with a :class:`LookupResult` (1, -1, -2, -3)."""
        return self._actions.lookup(self, table, flags, aor)

    def save(self, table: str = "location", flags: str = "") -> "Deferred[bool]":
        """Store the REGISTER's bindings and reply to it (OpenSIPS ``save()``)."""
        return self._actions.save(self, table, flags)

    def cache_raw_query(self, command: dict[str, Any] | str) -> "Deferred[list[dict[str, Any]]]":
        """OpenSIPS ``cache_raw_query`` + ``$json``: run a MongoDB command on the federation store
        (e.g. ``{"find": "userlocation", "filter": {"aor": "alice@example.com"}}``); fires with the
        documents as dicts, fails when the store is unreachable."""
        return self._actions.cache_raw_query(self, command)

    def drop(self) -> None:
        """OpenSIPS ``drop()``: end routing with no reply at all and forget the request (a flood's
        requests; a retransmission is then a new request to the route). Without it, a route that
        neither replies nor relays gets ``proxy.no_reply_status``."""
        self.dropped = True

    def pike_check_req(self) -> bool:
        """OpenSIPS ``pike_check_req()``: False when the source address sends more requests than
        ``[pike]`` allows (``if not msg.pike_check_req(): msg.drop(); return``)."""
        return self._actions.pike_check_req(self)

    # -- authentication ----------------------------------------------------------------------------
    def www_authorize(self, realm: str = "", table: str = "subscriber") -> "Deferred[AuthResult]":
        """Check the ``Authorization`` credentials for ``realm`` (``""``: the To domain of a REGISTER,
        the From domain otherwise). Fires with an :class:`AuthResult`: AUTHORIZED (1), INVALID_USER
        (-1), INVALID_PASSWORD (-2), STALE_NONCE (-3), NO_CREDENTIALS (-4), GENERIC_ERROR (-5: the
        store could not answer). Malformed credentials raise a 400."""
        return self._authorize(realm, table, proxy=False)

    def proxy_authorize(self, realm: str = "", table: str = "subscriber") -> "Deferred[AuthResult]":
        """:meth:`www_authorize` for ``Proxy-Authorization`` (calls and other requests to relay)."""
        return self._authorize(realm, table, proxy=True)

    def _authenticator(self) -> Authenticator:
        auth = self._actions.authenticator()
        if auth is None:
            raise RuntimeError("the route authenticates, but the node has no [auth] section")
        return auth

    def _authorize(self, realm: str, table: str, proxy: bool) -> "Deferred[AuthResult]":
        def keep(outcome: AuthOutcome) -> AuthResult:
            self.auth = outcome
            return outcome.result

        # maybeDeferred: malformed credentials raise a DigestError (400) that the route's await sees
        d = maybeDeferred(self._authenticator().authorize, self.request, realm, proxy=proxy, table=table)
        return d.addCallback(keep)

    def www_challenge(self, realm: str = "", qop: str | None = None, algorithms: str | None = None) -> None:
        """Answer 401 with a ``WWW-Authenticate`` challenge per algorithm (``"SHA-256,MD5"``; default
        ``[auth] algorithms``), ``qop`` ``"auth"``, ``"auth-int"``, ``"auth,auth-int"`` or ``""``
        (default ``[auth] qop``); ``stale=true`` when the last authorize found a stale nonce."""
        self._challenge(realm, qop, algorithms, proxy=False)

    def proxy_challenge(self, realm: str = "", qop: str | None = None, algorithms: str | None = None) -> None:
        """Answer 407 with ``Proxy-Authenticate`` challenges (see :meth:`www_challenge`)."""
        self._challenge(realm, qop, algorithms, proxy=True)

    def _challenge(self, realm: str, qop: str | None, algorithms: str | None, proxy: bool) -> None:
        names = tuple(a.strip() for a in algorithms.split(",") if a.strip()) if algorithms else None
        stale = self.auth is not None and self.auth.stale
        self.reply_headers += self._authenticator().challenge(self.request, realm, proxy=proxy, stale=stale, qop=qop,
                                                              algorithms=names)
        if proxy:
            self._actions.reply(self, 407, "Proxy Authentication Required", False)
        else:
            self._actions.reply(self, 401, "Unauthorized", False)

    def consume_credentials(self) -> bool:
        """Remove the accepted credentials from the request before it is relayed (the next hop has no
        use for them, and they name our realm); False when nothing was accepted."""
        a = self.auth
        if a is None or a.result is not AuthResult.AUTHORIZED or a.header is None:
            return False
        return any(self.request.headers.discard(name, a.header) for name in ("Authorization", "Proxy-Authorization"))

    def check_to(self) -> bool:
        """OpenSIPS ``db_check_to()``: the To user is the one who authenticated (a REGISTER may only
        change its own bindings)."""
        return self._is_auth_user(self.request.to.uri)

    def check_from(self) -> bool:
        """OpenSIPS ``db_check_from()``: the From user is the one who authenticated (no calling as
        somebody else)."""
        return self._is_auth_user(self.request.from_.uri)

    def _is_auth_user(self, uri: URI) -> bool:
        user = self.auth_user
        if user is None or not isinstance(uri, SipURI) or uri.user is None:
            return False
        name, at, domain = user.partition("@")
        if at and domain.lower() != uri.host.lower():
            return False
        return name == uri.user

    def t_relay(self) -> bool:
        """Relay statefully to the destination set (RFC 3261 §16.6); False when nothing could be
        sent (then reply with :meth:`sl_reply_error` or your own reply)."""
        return self._actions.relay(self)

    def sl_send_reply(self, code: int, reason: str | None = None) -> None:
        """Reply statelessly (OpenSIPS ``sl_send_reply``)."""
        self._actions.reply(self, code, reason, False)

    def send_reply(self, code: int, reason: str | None = None) -> None:
        """Reply, statefully when a transaction exists (OpenSIPS ``send_reply``); a 3xx carries the
        destination set as Contact, as OpenSIPS prints ``$branch``."""
        self._actions.reply(self, code, reason, True)

    t_reply = send_reply

    def append_to_reply(self, header: str) -> None:
        """OpenSIPS ``append_to_reply("Name: value\\r\\n")``: add a header to the replies this route
        sends (``sl_send_reply``, ``send_reply``), e.g. ``Retry-After`` on a 503. Several lines may be
        given at once; a trailing CRLF is optional."""
        for line in header.replace("\r\n", "\n").split("\n"):
            if not line.strip():
                continue
            name, colon, value = line.partition(":")
            if not colon or not name.strip() or any(c in name for c in " \t"):
                raise ValueError(f"append_to_reply: not a header line: {line!r}")
            self.reply_headers.append((name.strip(), value.strip()))

    def sl_reply_error(self) -> None:
        """Reply 500 after a failed verb (OpenSIPS ``sl_reply_error``)."""
        self._actions.reply(self, 500, "Server Internal Error", False)

    def t_on_failure(self, route: Callable[..., Any]) -> None:
        self.failure_route = route

    def t_on_reply(self, route: Callable[..., Any]) -> None:
        self.reply_route = route

    def t_on_branch(self, route: Callable[..., Any]) -> None:
        self.branch_route = route

    def log(self, text: str, level: str = "info") -> None:
        """``xlog``: one log line tagged with the Call-ID."""
        getattr(_log, level if level in ("debug", "info", "warn", "error") else "info")(
            "{call_id} {text}", call_id=self.request.call_id, text=text
        )

    xlog = log

    def __repr__(self) -> str:
        return f"<RouteRequest {self.request.method} {self.request.uri_text} from {self.source}>"


Route = Callable[..., "Awaitable[Any] | Any"]
