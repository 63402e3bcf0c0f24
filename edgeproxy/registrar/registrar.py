"""REGISTER processing: RFC 3261 §10.3 steps 5-8 with OpenSIPS ``save()`` semantics.

Steps 1-4 (is the domain ours, ``Require``, authentication, authorisation) belong to the route
module, which calls :meth:`Registrar.save` once it has decided to accept the REGISTER — as an
OpenSIPS script calls ``save("location")`` after ``www_authorize``.

Theory of operation: :meth:`Registrar.save` first checks everything that depends only on the request
(AoR, ``Contact: *`` rules, Path mode, every Contact's expiry, q, reg-id), then — serialised per AoR,
so two REGISTERs for one AoR never interleave even over a location service that does I/O — reads the
AoR's bindings, computes the complete new set (Call-ID/CSeq ordering, instance matching, max
contacts) and writes it with a single :meth:`LocationService.replace`. Nothing is written unless every
contact was acceptable (§10.3 step 7: all-or-nothing). Every outcome, errors included, is a
:class:`~edgeproxy.sip.Response` for the caller to send; the caller adds the To tag (§8.2.6.2).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from types import MappingProxyType
from typing import Any, Callable, Mapping, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..coroutine import run_eagerly
from ..interfaces import noteworthy
from ..location.binding import EMPTY_PARAMS, Binding, order_key, shared_methods, shared_string
from ..location.service import LocationService, LocationUnavailable
from ..sip.endpoint import Endpoint, Flow
from ..sip.errors import SipValueError
from ..sip.message import Request, Response
from ..sip.uri import SipURI, parse_uri
from ..sip.values import parse_delta_seconds
from .settings import RegistrarSettings, aor_of

__all__ = ["Registrar"]

log = Logger()

# Contact parameters that are not kept in ``Binding.contact_params``: they have fields of their own,
# or only a registrar may set them (RFC 3261 §10.3, RFC 5626 §4.1, RFC 5627 §5.2).
_NOT_KEPT = frozenset({"expires", "q", "+sip.instance", "reg-id", "received", "pub-gruu", "temp-gruu"})
_MAX_REG_ID = 2**31 - 1
_SHARED_PARAMS: dict[frozenset, Mapping[str, str | None]] = {}
_MAX_SHARED_PARAMS = 4096
# OpenSIPS registrar error texts (lib/reg/rerrno.h EI_R_AOR_LEN, EI_R_CONTACT_LEN, EI_R_CALLID_LEN)
_AOR_LEN = "Address Of Record too long"
_CONTACT_LEN = "Contact/received too long"
_CALLID_LEN = "Callid too long"


class _Reject(Exception):
    """Internal: stop processing and send ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass(slots=True)
class _Proposal:
    """One Contact of the REGISTER, checked but not yet applied."""

    uri: SipURI
    expires: int
    q: float | None
    instance: str | None
    reg_id: int | None
    params: Mapping[str, str | None]
    methods: frozenset[str] | None


class Registrar:
    """The registrar of RFC 3261 §10.3 over a :class:`~edgeproxy.location.LocationService`.

    ``clock`` is an ``IReactorTime`` (the reactor when None; ``task.Clock`` in tests) and must be the
    clock of ``location``, since binding expiry is absolute time on it. ``location`` and ``settings`` are public
    so the proxy can look bindings up with the same AoR rules.
    """

    def __init__(self, location: LocationService, settings: RegistrarSettings | None = None,
                 clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as default_reactor

            clock = default_reactor
        self.location = location
        self.settings = settings if settings is not None else RegistrarSettings()
        self.clock: IReactorTime = clock
        self._queues: dict[str, deque[tuple[Callable[[], Any], Deferred]]] = {}
        #: REGISTERs refused because a value exceeded a ``max_*_len`` setting
        self.refused_too_long = 0

    # -- public API ----------------------------------------------------------------------------------
    def aor_key(self, uri: SipURI) -> str:
        """The location key of ``uri`` under these settings (see :func:`aor_of`)."""
        return aor_of(uri, self.settings.use_domain)

    def save(self, request: Request, flow: Flow, *, nat: bool = False,
             aor: str | None = None, sipping: bool = False) -> "Deferred[Response]":
        """Process a REGISTER that arrived on ``flow`` and fire with the reply to send (OpenSIPS
        ``save("location")``).

        ``nat`` is OpenSIPS's ``nat_bflag`` for these contacts: requests for them go to the source
        address of this REGISTER, and the 200 OK shows it as ``received``. ``aor`` overrides the To URI
        as the address-of-record (OpenSIPS ``save()``'s third argument): a ``sip:``/``sips:`` URI is
        canonicalised like the To URI, anything else is used as the key verbatim. ``sipping`` is
        nathelper's ``sipping_bflag``: NAT keep-alives to these contacts are SIP requests.

        Replies: 200 listing every current binding with ``expires`` (and ``Date``); 400 for malformed
        Contact/Expires/q/reg-id, a misused ``Contact: *``, an out-of-order CSeq or an AoR, Contact
        or Call-ID longer than the ``max_*_len`` settings; 420 for Path in
        strict mode; 423 with Min-Expires in reject mode; 503 when ``max_contacts`` would be exceeded;
        500 when the location service fails (:class:`~edgeproxy.location.LocationUnavailable`: a
        write-through database commit failed). The Deferred itself never fails.
        """
        try:
            key, star, proposals, path = self._check(request, aor)
            outbound = self._outbound(request, proposals)
        except _Reject as reject:
            return _fired(reject.response)
        except SipValueError as exc:
            return _fired(request.make_response(400, exc.reason))
        return self._exclusive(key, lambda: self._apply(request, flow, nat, key, star, proposals, path, outbound,
                                                        sipping))

    # -- request-only checks (§10.3 steps 5-7 that need no stored state) -----------------------------
    def _check(self, request: Request, aor: str | None
               ) -> tuple[str, bool, list[_Proposal] | None, tuple[str, ...]]:
        settings = self.settings
        if aor is not None:
            if aor.lower().startswith(("sip:", "sips:")):
                target = parse_uri(aor)
                if not isinstance(target, SipURI):
                    raise SipValueError("Bad AoR")
                key = aor_of(target, settings.use_domain)
            else:
                key = aor
                if len(key) > settings.max_aor_len:
                    self._too_long(request, _AOR_LEN)
                target = None
        else:
            target = request.to.uri
            if not isinstance(target, SipURI):
                raise SipValueError("Bad AoR: To is not a SIP URI")
            key = aor_of(target, settings.use_domain)
        if not key:
            raise SipValueError("Bad AoR")
        if target is not None:
            # OpenSIPS extract_aor(): the user part as sent (before unescaping) and the host
            user_len = len(target.user) if target.user else 0
            host_len = len(target.host)
            if (user_len > settings.max_username_len or host_len > settings.max_domain_len
                    or user_len + host_len + 1 > settings.max_aor_len):
                self._too_long(request, _AOR_LEN)
        request.call_id, request.cseq  # noqa: B018 - malformed → 400 before anything is stored

        path: tuple[str, ...] = ()
        if "path" in request.headers and settings.path_mode != "ignore":
            request.paths  # noqa: B018 - validate every Path value (400 when malformed)
            if settings.path_mode == "strict" and "path" not in request.supported:
                response = request.make_response(420, "Bad Extension")
                response.headers.add("Unsupported", "path")
                raise _Reject(response)
            path = tuple(request.headers.values("path"))

        contacts = request.contacts
        if request.contact_star:
            if "expires" not in request.headers or request.expires != 0:
                raise SipValueError("Invalid Contact: * requires Expires: 0")
            return key, True, [], path
        if not contacts:
            return key, False, None, path  # a query (§10.3 step 8 with nothing to change)

        if len(request.call_id) > settings.max_callid_len:  # stored with each binding (OpenSIPS pack_ci())
            self._too_long(request, _CALLID_LEN)
        header_expires = request.headers.get("expires")
        allow = request.allow
        allow_methods = shared_methods(allow) if allow is not None else None
        proposals = []
        for contact in contacts:
            uri = contact.uri
            if not isinstance(uri, SipURI):
                raise SipValueError("Unsupported Contact URI scheme")
            if len(str(uri)) > settings.max_contact_len:
                self._too_long(request, _CONTACT_LEN)
            params = contact.params
            instance = params.get("+sip.instance")
            if instance is not None:
                instance = instance.strip('"') or None
            reg_id = None
            if instance is not None and "reg-id" in params:
                text = params["reg-id"] or ""
                if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= _MAX_REG_ID:
                    raise SipValueError("Invalid reg-id")
                reg_id = int(text)
            methods = allow_methods
            if listed := params.get("methods"):
                methods = shared_methods(m.strip(" \t") for m in listed.strip('"').split(","))
            proposals.append(_Proposal(
                uri=uri,
                expires=self._expires(request, contact.params, header_expires),
                q=contact.q,  # raises SipValueError → 400 for a malformed q
                instance=instance,
                reg_id=reg_id,
                params=_kept_params(params),
                methods=methods,
            ))
        return key, False, proposals, path

    def _too_long(self, request: Request, reason: str) -> NoReturn:
        """Refuse a REGISTER with a value longer than usrloc's ``location`` columns hold: 400 with
        OpenSIPS's registrar error text as the reason (``R_AOR_LEN``, ``R_CONTACT_LEN``,
        ``R_CALLID_LEN``; ``lib/reg/rerrno.h``). OpenSIPS answers ``R_AOR_LEN`` with 500; the value
        is the client's fault, so 400 (RFC 3261 §21.4.1), as for the other two. Logged the 1st, 2nd,
        4th, 8th ... time with the count: a flood of them is one line per doubling."""
        self.refused_too_long += 1
        if noteworthy(self.refused_too_long):
            log.info("registrar: REGISTER refused ({reason}); {count} so far", reason=reason,
                     count=self.refused_too_long)
        raise _Reject(request.make_response(400, reason))

    def _outbound(self, request: Request, proposals: list[_Proposal] | None) -> bool:
        """Whether RFC 5626 §6 outbound processing applies to this REGISTER; when it does not, every
        Contact's ``reg-id`` is dropped (the RFC: "the registrar MUST ignore the reg-id")."""
        if not proposals or all(p.reg_id is None for p in proposals):
            return False
        applies = (self.settings.outbound and "outbound" in request.supported
                   and (len(request.vias) == 1 or _path_marks_outbound(request)))
        if not applies:
            for p in proposals:
                p.reg_id = None
        return applies

    def _expires(self, request: Request, params: Mapping[str, str | None], header: str | None) -> int:
        """Expiry of one contact: ``expires`` param > Expires header > default (§10.3 step 7). An
        unusable value (garbage, above 2**32-1) counts as absent and gets the default (RFC 4475
        §3.1.2.4; OpenSIPS falls back to ``default_expires`` too). 0 means remove."""
        settings = self.settings
        if "expires" in params:
            text = params["expires"]
        else:
            text = header
        value = parse_delta_seconds(text) if text is not None else None
        requested = value is not None
        if value is None:
            value = settings.default_expires
        if value == 0:
            return 0
        minimum = settings.min_expires
        if minimum and value < minimum:
            # §10.3 step 7: 423 only for 0 < requested < 1 hour; otherwise shortening is allowed.
            if requested and settings.min_expires_mode == "reject" and value < 3600:
                response = request.make_response(423, "Interval Too Brief")
                response.headers.add("Min-Expires", str(minimum))
                raise _Reject(response)
            value = minimum
        if settings.max_expires and value > settings.max_expires:
            value = settings.max_expires
        return value

    # -- the update (serialised per AoR) -------------------------------------------------------------
    async def _apply(self, request: Request, flow: Flow, nat: bool, key: str, star: bool,
                     proposals: list[_Proposal] | None, path: tuple[str, ...],
                     outbound: bool = False, sipping: bool = False) -> Response:
        try:
            current = await self.location.contacts(key)
            if proposals is None:
                return self._ok(request, current, path)
            outcome = self._merge(request, flow, nat, key, star, proposals, path, list(current), sipping)
            if isinstance(outcome, Response):
                return outcome
            if outcome is None:  # a retransmission: answer with what is stored, change nothing
                return self._ok(request, current, path, outbound)
            await self.location.replace(key, outcome)
            return self._ok(request, outcome, path, outbound)
        except LocationUnavailable as exc:  # the storage logged its outage once; nothing to add per REGISTER
            return request.make_response(exc.status, exc.reason)
        except Exception:
            log.failure("registrar: saving {aor} failed", aor=key)
            return request.make_response(500, "Server Internal Error")

    def _merge(self, request: Request, flow: Flow, nat: bool, key: str, star: bool,
               proposals: list[_Proposal], path: tuple[str, ...], current: list[Binding],
               sipping: bool = False) -> list[Binding] | Response | None:
        """The new binding set, an error reply, or None for a retransmission (§10.3 steps 6-7)."""
        call_id = request.call_id
        cseq = request.cseq.number
        now = self.clock.seconds()
        delay = self.settings.cseq_delay
        retransmission = False

        def ordering(b: Binding) -> None:
            # §10.3 step 7 with OpenSIPS's refinements: a lower CSeq in the same Call-ID is out of order
            # (400); an equal one within ``cseq_delay`` of the last write is a retransmission (200, no
            # change); an equal one later is accepted as new (OpenSIPS ``allow_dup_cseq``, on by default).
            nonlocal retransmission
            if b.call_id == call_id:
                if cseq < b.cseq:
                    raise _Reject(request.make_response(400, "Invalid CSeq"))
                if cseq == b.cseq and now - b.last_modified <= delay:
                    retransmission = True

        try:
            if star:
                # RFC 3261 §10.3 step 6 checks every binding (OpenSIPS skips this and deletes all).
                for b in current:
                    ordering(b)
                return None if retransmission else []

            received: Endpoint | None = flow.remote if flow is not None else None
            user_agent = shared_string(request.headers.get("user-agent"))
            bindings = current
            stored = {id(b) for b in current}  # only bindings from before this request get checked
            for p in proposals:
                hit = [b for b in bindings
                       if b.uri == p.uri
                       or (p.instance is not None and b.instance == p.instance and b.reg_id == p.reg_id)]
                for b in hit:
                    if id(b) in stored:
                        ordering(b)
                if hit:
                    gone = {id(b) for b in hit}
                    bindings = [b for b in bindings if id(b) not in gone]
                if p.expires:
                    bindings.append(Binding(
                        aor=key, uri=p.uri, contact_params=p.params, expires_at=now + p.expires, q=p.q,
                        call_id=call_id, cseq=cseq, path=path, received=received, flow=flow,
                        instance=p.instance, reg_id=p.reg_id, methods=p.methods, user_agent=user_agent,
                        nat=nat, sipping=sipping, last_modified=now,
                    ))
        except _Reject as reject:
            return reject.response
        if retransmission:
            return None
        maximum = self.settings.max_contacts
        if maximum and len(bindings) > maximum:
            response = request.make_response(503, "Too many registered contacts")
            if self.settings.retry_after:
                response.headers.add("Retry-After", str(self.settings.retry_after))
            return response
        return bindings

    # -- the 200 OK (§10.3 step 8) -------------------------------------------------------------------
    def _ok(self, request: Request, bindings: list[Binding], path: tuple[str, ...],
            outbound: bool = False) -> Response:
        now = self.clock.seconds()
        response = request.make_response(200, "OK")
        headers = response.headers
        received_param = self.settings.received_param
        for b in sorted((b for b in bindings if b.expires_at > now), key=order_key):
            headers.add("Contact", contact_value(b, now, received_param))
        mode = self.settings.path_mode
        if path and (mode == "strict" or (mode == "lazy" and "path" in request.supported)):
            for value in path:
                headers.add("Path", value)
        headers.add("Date", formatdate(now, usegmt=True))
        if outbound:
            headers.add("Require", "outbound")  # RFC 5626 §6: tells the UA its flows are used
            if self.settings.flow_timer:
                headers.add("Flow-Timer", str(self.settings.flow_timer))
        return response

    # -- per-AoR serialisation -----------------------------------------------------------------------
    def _exclusive(self, key: str, fn: Callable[[], Any]) -> "Deferred[Any]":
        """Run ``fn`` once every earlier operation on ``key`` has finished."""
        result: Deferred = Deferred()
        queue = self._queues.get(key)
        if queue is not None:
            queue.append((fn, result))
            return result
        self._queues[key] = deque()
        self._run(key, fn, result)
        return result

    def _run(self, key: str, fn: Callable[[], Any], result: Deferred) -> None:
        def finished(outcome: Any) -> None:
            queue = self._queues[key]
            if queue:
                nfn, nresult = queue.popleft()
                self._run(key, nfn, nresult)
            else:
                del self._queues[key]
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(outcome)

        run_eagerly(fn()).addBoth(finished)


def _path_marks_outbound(request: Request) -> bool:
    """RFC 5626 §6: a registrar that is not the first hop does outbound processing only when the
    first Path URI carries ``ob`` (the edge proxy keeps the flow)."""
    paths = request.paths if "path" in request.headers else []
    if not paths:
        return False
    uri = paths[0].uri
    return isinstance(uri, SipURI) and "ob" in uri.params


def contact_value(binding: Binding, now: float, received_param: str = "received") -> str:
    """One Contact value of a 200 OK to REGISTER: ``<uri>;expires=N`` (§10.3 step 8; SIP.js and JsSIP
    find their binding by the URI's user part and need ``expires``), then ``q``, ``+sip.instance`` and
    ``reg-id`` (RFC 5626 §6), the other stored contact parameters, and for NATed bindings the source
    address as ``received`` (OpenSIPS ``received_param``)."""
    parts = [f"<{binding.uri}>;expires={binding.expires_in(now)}"]
    if binding.q is not None:
        parts.append(f";q={format_q(binding.q)}")
    if binding.instance is not None:
        parts.append(f';+sip.instance="{binding.instance}"')
        if binding.reg_id is not None:
            parts.append(f";reg-id={binding.reg_id}")
    for name, value in binding.contact_params.items():
        parts.append(f";{name}" if value is None else f";{name}={value}")
    if binding.nat and binding.received is not None:
        parts.append(f';{received_param}="{received_uri(binding.received)}"')
    return "".join(parts)


def received_uri(endpoint: Endpoint) -> str:
    """The source address as OpenSIPS ``fix_nated_register`` writes it: ``sip:ip:port`` plus
    ``;transport=`` for anything but UDP."""
    uri = f"sip:{endpoint.hostport}"
    if endpoint.transport != "UDP":
        uri += f";transport={endpoint.transport.lower()}"
    return uri


def format_q(q: float | None) -> str:
    """A q-value as OpenSIPS's ``q2str`` prints it: "1", "0.5", "0.125"; "" when the UA gave none."""
    if q is None:
        return ""
    text = f"{q:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _kept_params(params: Mapping[str, str | None]) -> Mapping[str, str | None]:
    """The contact parameters worth storing, as a shared read-only mapping (most clients of one kind
    send identical ones, e.g. JsSIP's ``+sip.ice``)."""
    kept = [(k, v) for k, v in params.items() if k not in _NOT_KEPT]
    if not kept:
        return EMPTY_PARAMS
    token = frozenset(kept)
    shared = _SHARED_PARAMS.get(token)
    if shared is not None and list(shared.items()) == kept:
        return shared
    value = MappingProxyType(dict(kept))
    if shared is None and len(_SHARED_PARAMS) < _MAX_SHARED_PARAMS:
        _SHARED_PARAMS[token] = value
    return value


def _fired(response: Response) -> "Deferred[Response]":
    d: Deferred = Deferred()
    d.callback(response)
    return d
