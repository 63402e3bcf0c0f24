"""The route-module API: what an OpenSIPS route block says, as Python.

A route module is a plain Python module defining ``request_route(msg)`` and optionally
``onreply_route(msg, reply)``, ``failure_route(msg)`` and ``branch_route(msg, request)``; each may be
``def`` or ``async def`` (then it may ``await`` Deferreds such as :meth:`RouteRequest.lookup`).
``msg`` is a :class:`RouteRequest`; each verb has one name, OpenSIPS's:

======================================  ====================================================
OpenSIPS                                edgeproxy
======================================  ====================================================
``$si`` ``$sp`` ``$proto``               ``msg.si`` ``msg.sp`` ``msg.proto``
``$rm`` ``$ru`` ``$rU`` ``$rd``          ``msg.method`` ``msg.ruri`` ``msg.rU`` ``msg.rd``
``$tU`` ``$td`` ``$fU`` ``$fd``          ``msg.tU`` ``msg.td`` ``msg.fU`` ``msg.fd``
``$ci`` ``$hdr(Name)``                   ``msg.call_id`` ``msg.header("Name")``
``$du = "sip:..."``                      ``msg.du = "sip:..."`` (read: ``msg.du``)
``$branch = "sip:..."``                  ``msg.append_branch("sip:...")``
``$au`` ``$ar``                          ``msg.au`` ``msg.ar``
``setbflag(NAT)``, sipping flag          ``msg.nat = True``, ``msg.sipping = True``
``nat_uac_test("...")``                  ``msg.nat_uac_test("...")`` → bool
``fix_nated_contact()`` / ``_register``  ``msg.fix_nated_contact()``, ``msg.fix_nated_register()``
``$T_reply_code``                        ``msg.reply_code`` (``msg.reply``: the reply) in failure_route
``t_check_status("408|5[0-9][0-9]")``    ``msg.t_check_status("408|5[0-9][0-9]")``
``t_local_replied("all")``               ``msg.t_local_replied("all")`` (a timeout's 408 is local)
``$T_fr_timeout = 2``                    ``msg.T_fr_timeout = 2`` (seconds; ``$T_fr_inv_timeout`` alike)
Kamailio ``t_set_fr(60000, 2000)``       ``msg.t_set_fr(60000, 2000)`` (ms), ``msg.t_reset_fr()``
``lookup("location", "m")``              ``await msg.lookup("location", "m")`` → LookupResult
``save("location")``                     ``await msg.save("location")``
``t_relay()``                            ``msg.t_relay()`` → bool
``sl_send_reply(404, "Not Here")``       ``msg.sl_send_reply(404, "Not Here")``
``send_reply(302, "Moved")``             ``msg.send_reply(302, "Moved")`` (stateful; 3xx: branches become Contact)
``sl_reply_error()``                     ``msg.sl_reply_error()``
``append_to_reply("Retry-After: 5")``    ``msg.append_to_reply("Retry-After: 5")``
``record_route()`` ``loose_route()``     ``msg.record_route()`` ``msg.loose_route()``
``has_totag()`` ``is_method("INVITE")``  ``msg.has_totag()`` ``msg.is_method("INVITE")``
``uri == myself``                        ``msg.is_myself()`` (or ``msg.is_myself(uri_or_host)``)
``mf_process_maxfwd_header(10)``         ``msg.mf_process_maxfwd_header(10)``
``t_on_failure("x")`` and friends        ``msg.t_on_failure(x)``, ``msg.t_on_reply(x)``, ``msg.t_on_branch(x)``
``xlog("...")``                          ``msg.xlog("...")``
``www_authorize("", "subscriber")``      ``await msg.www_authorize()`` → AuthResult (1, -1..-5)
``proxy_authorize("", "subscriber")``    ``await msg.proxy_authorize()``
``www_challenge("", "auth")``            ``msg.www_challenge()`` (401; ``proxy_challenge()``: 407)
``consume_credentials()``                ``msg.consume_credentials()``
``db_check_to()`` ``db_check_from()``    ``msg.check_to()`` ``msg.check_from()``
``pike_check_req()``                     ``msg.pike_check_req()`` → bool (False: flooding)
``drop()``                               ``msg.drop()`` (no reply at all)
``cluster_check_addr(1, "$si")``         ``msg.cluster_check_addr(1)``
``check_source_address(1, $var(ctx))``   ``msg.check_source_address(1)`` → 1 / -1 / -2 (``msg.context_info``)
``check_address(1, $si, 0, "any")``      ``msg.check_address(1, msg.si, 0, "any")``
``get_source_group($var(grp))``          ``msg.get_source_group()`` → group or -1
``cache_raw_query(...)``                 ``await msg.cache_raw_query({...})``
``ds_select_dst(1, 4, "f")``             ``msg.ds_select_dst(1, 4, "f")`` → 1 / -1
``ds_next_dst()`` ``ds_mark_dst("p")``   ``msg.ds_next_dst()`` → 1 / -1, ``msg.ds_mark_dst("p")``
``ds_select_domain`` ``ds_next_domain``  ``msg.ds_select_domain(1, 4, "f")``, ``msg.ds_next_domain()``
``ds_is_in_list($si, $sp, 1)``           ``msg.ds_is_in_list(msg.si, msg.sp, 1)`` → bool
``ds_count(1, "a", $var(n))``            ``msg.ds_count(1, "a")`` → count (-1: no such set)
``$avp(ds_attrs)`` (``attrs_avp``)       ``msg.ds_attrs`` (the destination tried now)
``create_dialog("B")``                   ``msg.create_dialog("B")`` → bool
``match_dialog()`` ``validate_dialog()``  ``msg.match_dialog()`` → bool, ``msg.validate_dialog()`` → 1, -1, -2, -4
``$DLG_status`` ``$DLG_did``             ``msg.dlg_status`` (1-5 or None), ``msg.dlg_did``
``$DLG_timeout = 5``                     ``msg.dlg_timeout = 5`` (read: seconds left)
``set_dlg_profile("caller", "$fU")``     ``msg.set_dlg_profile("caller", msg.fU)`` → bool
``get_profile_size("caller", "$fU", $var)`` ``msg.get_profile_size("caller", msg.fU)`` → int
``is_in_profile`` ``unset_dlg_profile``  ``msg.is_in_profile(name, value)``, ``msg.unset_dlg_profile(name, value)``
======================================  ====================================================

``raise RouteReply(403, "Forbidden")`` anywhere in a route replies with that status and ends it.

:class:`RouteRequest` holds the core of ``msg`` (pseudo-variables, NAT, routing, replies, logging);
its parts per OpenSIPS module live beside their verbs: :class:`~.authrequest.AuthRequest` (auth),
:class:`~.dlgrequest.DialogRequest` (dialog), :class:`~.dsverbs.DispatcherRequest` (dispatcher),
:class:`~.tmverbs.TmRequest` (tm timers and status), :class:`~.permverbs.PermissionRequest`
(permissions).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..auth import AuthResult
from ..location import LookupResult
from ..logcontext import message_context
from ..permissions import AddressResult
from ..proxy.context import Branch, RouteState
from ..sip.message import Request, Response
from ..sip.uri import URI, SipURI, parse_uri
from .authrequest import AuthRequest
from .dlgrequest import DialogRequest
from .dsverbs import DispatcherRequest
from .errors import RouteReply
from .permverbs import PermissionRequest
from .tmverbs import TmRequest
from .verbs import RouteVerbs

__all__ = ["RouteReply", "RouteRequest", "LookupResult", "AuthResult", "AddressResult", "Branch", "Route"]

_log = Logger(namespace="edgeproxy.route")
#: xlog levels: ours and OpenSIPS's names (L_NOTICE is info, L_CRIT and L_ALERT are error here)
_XLOG_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARN": "warn", "ERROR": "error", "L_DBG": "debug",
                "L_INFO": "info", "L_NOTICE": "info", "L_WARN": "warn", "L_ERR": "error", "L_CRIT": "error",
                "L_ALERT": "error"}

Route = Callable[..., "Awaitable[Any] | Any"]


def _sip_uri(uri: URI | str) -> URI:
    return parse_uri(uri) if isinstance(uri, str) else uri


def _user(uri: URI) -> str | None:
    return uri.user if isinstance(uri, SipURI) else None


def _host(uri: URI) -> str | None:
    return uri.host if isinstance(uri, SipURI) else None


class RouteRequest(TmRequest, PermissionRequest, DispatcherRequest, DialogRequest, AuthRequest):
    """The request as a route module sees it (``msg``), with the verbs of the OpenSIPS script.

    It wraps the parsed :class:`~edgeproxy.sip.Request` (``msg.request``) and the node's
    :class:`~edgeproxy.proxy.context.RouteState` of it; the verbs are
    :class:`~edgeproxy.routing.verbs.RouteVerbs`, the node's own -- also in
    :class:`~edgeproxy.routing.testing.RouteHarness`, which is how route modules are unit-tested.
    """

    __slots__ = ("_state", "_verbs", "params")

    def __init__(self, state: RouteState, verbs: RouteVerbs, params: Mapping[str, Any]) -> None:
        self._state = state
        self._verbs = verbs
        self.params = params  # the configuration's [route_params]

    @property
    def request(self) -> Request:
        return self._state.request

    # -- pseudo-variables --------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self._state.request.method

    @property
    def si(self) -> str:
        """The source address (``$si``)."""
        return self._state.source.remote.host

    @property
    def sp(self) -> int:
        """The source port (``$sp``)."""
        return self._state.source.remote.port

    @property
    def proto(self) -> str:
        """``udp``, ``tcp``, ``tls``, ``ws``, ``wss`` (OpenSIPS ``$proto``)."""
        return self._state.source.remote.transport.lower()

    @property
    def ruri(self) -> URI:
        return self._state.request.uri

    @ruri.setter
    def ruri(self, value: URI | str) -> None:
        state = self._state
        state.request.uri = _sip_uri(value)
        state.ruri_changed = True
        state.ruri_branch = None

    @property
    def rU(self) -> str | None:  # noqa: N802 - OpenSIPS's spelling
        return _user(self._state.request.uri)

    @property
    def rd(self) -> str | None:
        return _host(self._state.request.uri)

    @property
    def tU(self) -> str | None:  # noqa: N802
        return _user(self._state.request.to.uri)

    @property
    def td(self) -> str | None:
        return _host(self._state.request.to.uri)

    @property
    def fU(self) -> str | None:  # noqa: N802
        return _user(self._state.request.from_.uri)

    @property
    def fd(self) -> str | None:
        return _host(self._state.request.from_.uri)

    @property
    def call_id(self) -> str:
        return self._state.request.call_id

    @property
    def du(self) -> SipURI | None:
        """The next hop of the Request-URI's branch (``$du``); assign a URI (or string) to force it."""
        return self._state.dst_uri

    @du.setter
    def du(self, uri: SipURI | str | None) -> None:
        if uri is None:
            self._state.dst_uri = None
            return
        parsed = _sip_uri(uri)
        if not isinstance(parsed, SipURI):
            raise RouteReply(416, "Unsupported URI Scheme")
        self._state.dst_uri = parsed

    @property
    def nat(self) -> bool:
        """OpenSIPS ``nat_bflag``: ``save()`` marks the contacts as behind NAT (reached at the
        REGISTER's source address)."""
        return self._state.nat

    @nat.setter
    def nat(self, value: bool) -> None:
        self._state.nat = value

    @property
    def sipping(self) -> bool:
        """nathelper's ``sipping_bflag``: ``save()`` has the NAT contacts pinged with OPTIONS."""
        return self._state.sipping

    @sipping.setter
    def sipping(self, value: bool) -> None:
        self._state.sipping = value

    @property
    def reply(self) -> Response | None:
        """In a failure route: the winning reply of the branches (None elsewhere)."""
        return self._state.reply

    @property
    def reply_code(self) -> int | None:
        """In a failure route: its status (``$T_reply_code``)."""
        reply = self._state.reply
        return reply.status if reply is not None else None

    def header(self, name: str) -> str | None:
        """The first value of a header (OpenSIPS ``$hdr(name)``)."""
        return self._state.request.headers.get(name)

    # -- tests -------------------------------------------------------------------------------------
    def mf_process_maxfwd_header(self, limit: int = 70) -> bool:
        """OpenSIPS ``mf_process_maxfwd_header(limit)``: add Max-Forwards (``limit``) when missing;
        False when it is 0, i.e. the request must not be forwarded (§16.3 step 3: answer 483)."""
        request = self._state.request
        mf = request.max_forwards
        if mf is None:
            request.max_forwards = limit
            return True
        return mf > 0

    def is_method(self, methods: str) -> bool:
        """``is_method("INVITE|BYE")``."""
        return self._state.request.method in methods.split("|")

    def has_totag(self) -> bool:
        return self._state.request.to_tag is not None

    def is_myself(self, uri_or_host: URI | str | None = None) -> bool:
        """Whether a URI (default: the Request-URI) points at this node (OpenSIPS ``uri == myself``)."""
        target = self._state.request.uri if uri_or_host is None else uri_or_host
        if isinstance(target, SipURI):
            return self._verbs.is_myself(target.host, target.port)
        if isinstance(target, str):
            return self._verbs.is_myself(target, None)
        return False

    def cluster_check_addr(self, cluster_id: int, ip: str | None = None) -> bool:
        """OpenSIPS ``cluster_check_addr(cluster_id, "$si")``: whether ``ip`` (default: the source
        address) is the ``sip_addr`` of another node of the cluster."""
        return self._verbs.cluster_check_addr(cluster_id, self.si if ip is None else ip)

    # -- nathelper ---------------------------------------------------------------------------------
    def nat_uac_test(self, flags: str | int) -> bool:
        """OpenSIPS nathelper ``nat_uac_test("private-contact,diff-ip-src-via,...")`` (or the 2.x bit
        mask, ``19``): whether the sender looks behind NAT. ``msg.nat = msg.nat_uac_test(...)`` is
        what the shipped routes do before ``save()`` and ``record_route()``."""
        return self._verbs.nat_uac_test(self._state, flags)

    def fix_nated_contact(self) -> bool:
        """OpenSIPS ``fix_nated_contact()``: rewrite the Contact URIs' host:port to the source
        address (the other side then sends its in-dialog requests there directly). Not needed with
        the shipped routes: the flow token in our Record-Route reaches the phone without touching
        its Contact (see the README's NAT section for the trade-off)."""
        return self._verbs.fix_nated_contact(self._state)

    def fix_nated_register(self) -> bool:
        """OpenSIPS ``fix_nated_register()``: ``save()`` keeps the REGISTER's source address as the
        contacts' ``received`` and requests for them go there. edgeproxy always stores the source
        address; this marks the contacts as behind NAT (as ``msg.nat = True``), which is what makes
        ``lookup()`` use it."""
        self._state.nat = True
        return True

    # -- verbs -------------------------------------------------------------------------------------
    def append_branch(self, uri: URI | str | None = None, q: float | None = None) -> None:
        """Add a target to the destination set (OpenSIPS ``append_branch()`` / ``$branch = uri``);
        without ``uri``, the current Request-URI is added."""
        state = self._state
        state.branches.append(Branch(_sip_uri(uri) if uri is not None else state.request.uri, q=q))

    def record_route(self) -> None:
        """Add Record-Route with ``lr`` on the forwarded request (double when the request changes
        transport or interface, as OpenSIPS's ``enable_double_rr``)."""
        self._state.record_routed = True

    def loose_route(self) -> bool:
        """Process the Route header (RFC 3261 §16.4): pop the Route entries that are this node and
        return True when the request is routed by Route/Record-Route (an in-dialog request)."""
        return self._verbs.loose_route(self._state)

    def lookup(self, table: str = "location", flags: str = "", aor: str | None = None) -> "Deferred[LookupResult]":
        """Look the Request-URI (or ``aor``) up in the location table; on FOUND the Request-URI and
        the branch set point at the contacts. Fires with a :class:`LookupResult` (1, -1, -2, -3)."""
        return self._verbs.lookup(self._state, table, flags, aor)

    def save(self, table: str = "location", flags: str = "") -> "Deferred[bool]":
        """Store the REGISTER's bindings and reply to it (OpenSIPS ``save()``; flag ``r``: no reply)."""
        return self._verbs.save(self._state, table, flags)

    def cache_raw_query(self, command: dict[str, Any] | str) -> "Deferred[list[dict[str, Any]]]":
        """OpenSIPS ``cache_raw_query`` + ``$json``: run a MongoDB command on the federation store
        (e.g. ``{"find": "userlocation", "filter": {"aor": "alice@example.com"}}``); fires with the
        documents as dicts, fails when the store is unreachable."""
        return self._verbs.cache_raw_query(command)

    def drop(self) -> None:
        """OpenSIPS ``drop()``: end routing with no reply at all and forget the request (a flood's
        requests; a retransmission is then a new request to the route). Without it, a route that
        neither replies nor relays gets ``proxy.no_reply_status``."""
        self._state.dropped = True

    def pike_check_req(self) -> bool:
        """OpenSIPS ``pike_check_req()``: False when the source address sends more requests than
        ``[pike]`` allows (``if not msg.pike_check_req(): msg.drop(); return``)."""
        return self._verbs.pike_check_req(self._state)

    # -- replies and relaying ----------------------------------------------------------------------
    def t_relay(self) -> bool:
        """Relay statefully to the destination set (RFC 3261 §16.6); False when nothing could be
        sent (then reply with :meth:`sl_reply_error` or your own reply)."""
        return self._verbs.relay(self._state)

    def sl_send_reply(self, code: int, reason: str | None = None) -> None:
        """Reply statelessly (OpenSIPS ``sl_send_reply``)."""
        self._verbs.reply(self._state, code, reason, False)

    def send_reply(self, code: int, reason: str | None = None) -> None:
        """Reply, statefully when a transaction exists (OpenSIPS ``send_reply``); a 3xx carries the
        destination set as Contact, as OpenSIPS prints ``$branch``."""
        self._verbs.reply(self._state, code, reason, True)

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
            self._state.reply_headers.append((name.strip(), value.strip()))

    def sl_reply_error(self) -> None:
        """Reply 500 after a failed verb (OpenSIPS ``sl_reply_error``)."""
        self._verbs.reply(self._state, 500, "Server Internal Error", False)

    def t_on_failure(self, route: Route) -> None:
        """Arm ``route`` (``failure_route(msg)``) for when every branch has failed."""
        self._state.failure_route = route

    def t_on_reply(self, route: Route) -> None:
        """Arm ``route`` (``onreply_route(msg, reply)``) for the replies of this request's branches."""
        self._state.reply_route = route

    def t_on_branch(self, route: Route) -> None:
        """Arm ``route`` (``branch_route(msg, request)``) for each branch about to leave."""
        self._state.branch_route = route

    def xlog(self, text: str, level: str = "info") -> None:
        """``xlog([level,] text)``: one log line of the route's, carrying the request's Call-ID and
        transaction id (``call_id``, ``tx``: shown after the text, fields of the JSON log) like every
        line the node writes about a message. ``level``: ``debug``, ``info``, ``warn``, ``error`` or
        OpenSIPS's ``L_DBG``, ``L_INFO``, ``L_NOTICE``, ``L_WARN``, ``L_ERR``, ``L_CRIT``, ``L_ALERT``."""
        name = _XLOG_LEVELS.get(level.upper(), "info") if isinstance(level, str) else "info"
        if name == "debug" and not self._verbs.settings.log_decisions:
            return  # the node is not at debug (log_decisions follows the level): no event, no context
        getattr(_log, name)("{text}", text=text, **message_context(self._state.request))

    def log(self, text: str, level: str = "info") -> None:
        """OpenSIPS's core ``log([level,] text)``: the same line as :meth:`xlog`."""
        self.xlog(text, level)

    def __repr__(self) -> str:
        request = self._state.request
        return f"<RouteRequest {request.method} {request.uri_text} from {self._state.source}>"
