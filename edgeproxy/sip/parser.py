"""Framing and parsing: bytes in, :class:`Request`/:class:`Response` out (RFC 3261 §7, §18.3).

Two entry points, h11-style and free of I/O:

* :func:`parse_datagram` — one message per datagram (§18.3: trailing octets beyond Content-Length are
  discarded, a Content-Length larger than the datagram is an error).
* :class:`StreamParser` — ``feed(bytes)`` then ``next_event()`` until it returns :data:`NEED_DATA`;
  frames by Content-Length across any segment boundaries and answers RFC 5626 §3.5.1 CRLF keep-alive
  pings with :data:`PING`; ``close()`` at the end of the stream reports a message cut short.

Both validate what every element needs before it can act (§8.2, §16.3): the start line, Via, CSeq
(and its method), Call-ID, From, To, Max-Forwards and Content-Length, and for REGISTER the Contacts.
Anything else is parsed only when read. Errors are :class:`SipParseError` carrying the status to send
and, for a request, the Via/From/To/Call-ID/CSeq salvaged from its complete head lines (§8.2.6.2), so
:func:`error_response` can answer it; no caller needs to look at the raw bytes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from . import grammar as g
from .errors import SipParseError, SipValueError
from .message import Headers, Message, Request, Response
from .uri import SipURI, parse_uri
from .values import parse_cseq, parse_first_via, parse_name_address

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "parse_datagram",
    "StreamParser",
    "NEED_DATA",
    "PING",
    "error_response",
    "bounded_error_response",
    "MAX_ERROR_REPLY",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits applied before any value is parsed; oversize → 513 (§21.5.14) or 400."""

    max_message_size: int = 65535
    max_headers: int = 256
    max_line_length: int = 16384


DEFAULT_LIMITS: Final = Limits()


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = _Sentinel("NEED_DATA")
"""``StreamParser.next_event`` has no complete message yet."""
PING: Final = _Sentinel("PING")
"""A CRLFCRLF keep-alive ping arrived (RFC 5626 §3.5.1); answer with a single CRLF."""

_SALVAGED = frozenset({"via", "from", "to", "call-id", "cseq"})

# Methods of RFC 3261 and the extensions a proxy meets (RFC 3262, 3265, 3311, 3428, 3515, 3903, 6086).
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})


def _salvage(items: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, _, v in items if k in _SALVAGED]


def _salvage_text(text: str, cut: bool = False) -> list[tuple[str, str]]:
    """What a reply needs (§8.2.6.2), picked tolerantly from a head that did not parse: every line
    that looks like ``Via:``/``From:``/``To:``/``Call-ID:``/``CSeq:`` (compact forms too), unfolded,
    up to the empty line that ends the head.

    ``cut`` says the text may stop in the middle of a line (a message over the size limit, or cut
    short by the peer's close): only lines whose LF arrived count, since a half Via or CSeq would make
    a reply nobody can match. Callers pass at most ``max_message_size`` characters, so the work is
    linear in what the limits allow. Only the error path calls this.
    """
    if cut:
        text = text[: text.rfind("\n") + 1]
    out: list[tuple[str, str]] = []
    keep = False
    lines = text.lstrip("\r\n").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for i in range(1, len(lines)):
        line = lines[i]
        if not line:
            break
        if line[0] in " \t":
            if keep:
                cont = line.strip(" \t")
                out[-1] = (out[-1][0], out[-1][1] + " " + cont if out[-1][1] else cont)
            continue
        name, sep, value = line.partition(":")
        key = g.canonical_name(name.strip(" \t"))
        keep = bool(sep) and key in _SALVAGED
        if keep:
            out.append((key, value.strip(" \t")))
    return out


def _looks_like_request(data: bytes | bytearray | str) -> bool:
    if isinstance(data, str):
        return not data[:16].lstrip("\r\n").startswith("SIP/")
    return not data[:16].lstrip(b"\r\n").startswith(b"SIP/")


def _cut_head_error(data: bytes | bytearray, limits: "Limits", reason: str, status: int, *,
                    fatal: bool) -> SipParseError:
    """The error for a message whose head cannot be parsed whole: over ``max_message_size``
    (§21.5.14) or cut short by the end of the stream. What a reply needs is salvaged from the
    complete header lines among the first ``max_message_size`` octets, so nothing beyond the limit is
    ever read (nor need be buffered) to answer."""
    window = bytes(data[: limits.max_message_size])
    is_request = _looks_like_request(window)
    partial = _salvage_text(_decode(window), cut=True) if is_request else []
    return SipParseError(reason, status, is_request=is_request, partial=partial, fatal=fatal)


def _oversized(data: bytes | bytearray, limits: "Limits", fatal: bool) -> SipParseError:
    """513 for a message over ``max_message_size`` (§21.5.14)."""
    return _cut_head_error(data, limits, "Message Too Large", 513, fatal=fatal)


# Header name as written (with any LWS before the colon) -> (canonical key, name without that LWS).
# Presence means the name was checked to be a token (§25.1 header-name); most messages use the same
# few dozen spellings, so one dict lookup replaces lower(), the compact-form lookup and the regex.
# Bounded, since names are peer-controlled.
_NAMES: dict[str, tuple[str, str]] = {}
_NAMES_MAX = 4096


def _header_name(name: str) -> tuple[str, str] | None:
    clean = name.rstrip(" \t")
    if not g.TOKEN_RE.fullmatch(clean):
        return None
    lowered = clean.lower()
    entry = (g.COMPACT_FORMS.get(lowered, lowered), clean)
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = entry
    return entry


def _split_head(head: str, limits: Limits, unfolded: bool = False) -> tuple[str, list[tuple[str, str, str]]]:
    """Start line and header triples of an unfolded head (§7.3.1).

    A CR or LF that is not part of a CRLF is refused in a CRLF head: forwarded, a bare LF would let a
    peer that splits on LF see a header this element never saw (header smuggling). Folded lines are
    found on the way (a line that starts with SP/HTAB has no header name) rather than by searching the
    head for them first: most messages have none.
    """
    if "\r" in head:
        n_lf = head.count("\n")
        lines = head.split("\r\n")
        if len(lines) - 1 != n_lf or head.count("\r") != n_lf:
            raise SipParseError("Bare CR or LF in header", is_request=_looks_like_request(head),
                                partial=_salvage_text(head))
    else:
        lines = head.split("\n")
    if len(lines) - 1 > limits.max_headers:
        if not unfolded and any(line[:1] in (" ", "\t") for line in lines):
            return _split_head(g.FOLD_RE.sub(" ", head), limits, True)
        raise SipParseError("Too many headers", 513, is_request=_looks_like_request(lines[0]),
                            partial=_salvage_text(head))
    if len(head) > limits.max_line_length:  # only then can a line be too long
        max_line = limits.max_line_length
        for line in lines:
            if len(line) > max_line:
                raise SipParseError("Start line too long" if line is lines[0] else "Header line too long",
                                    513, is_request=_looks_like_request(lines[0]),
                                    partial=_salvage_text(head))
    items: list[tuple[str, str, str]] = []
    append = items.append
    names = _NAMES
    for i in range(1, len(lines)):
        line = lines[i]
        name, sep, value = line.partition(":")
        entry = names.get(name)
        if entry is None or not sep:
            if line[:1] in (" ", "\t") and not unfolded:  # continuation line: unfold, start over
                return _split_head(g.FOLD_RE.sub(" ", head), limits, True)
            entry = _header_name(name) if sep else None
            if entry is None:
                raise SipParseError("Malformed header line", is_request=_looks_like_request(lines[0]),
                                    partial=_salvage_text(head))
        append((entry[0], entry[1], value.strip(" \t")))
    return lines[0], items


def _start(line: str, items: list[tuple[str, str, str]]) -> Message:
    """Parse the start line (§7.1, §7.2): exactly three elements separated by single SP."""
    if line.startswith("SIP/"):
        m = g.STATUS_LINE_RE.fullmatch(line)
        if m is None:
            raise SipParseError("Malformed status line", is_request=False)
        return Response(int(m.group(1)), m.group(2), Headers(items))
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("Malformed Request-Line", is_request=True, partial=_salvage(items))
    method, uri_text, version = parts
    if not g.TOKEN_RE.fullmatch(method):
        raise SipParseError("Malformed method", is_request=True, partial=_salvage(items))
    if version != "SIP/2.0":
        if g.VERSION_RE.fullmatch(version):
            raise SipParseError("Version Not Supported", 505, is_request=True, partial=_salvage(items))
        raise SipParseError("Malformed SIP version", is_request=True, partial=_salvage(items))
    try:
        uri = parse_uri(uri_text)
    except SipValueError as exc:
        reason = f"{exc.reason} in Request-URI"
        if uri_text.startswith("<"):
            reason = "Request-URI enclosed in <>"  # RFC 4475 §3.1.2.7: never forward them
        raise SipParseError(reason, is_request=True, partial=_salvage(items)) from None
    if isinstance(uri, SipURI) and uri.headers:
        # RFC 4475 §3.1.2.11: a proxy must neither forward them nor turn them into headers.
        raise SipParseError("Headers not allowed in Request-URI", is_request=True, partial=_salvage(items))
    req = Request(method, uri_text, Headers(items))
    req._uri = uri
    return req


_CHECKED = frozenset({"via", "call-id", "from", "to", "cseq", "max-forwards", "date"})
_SINGLE_NAMES = {"call-id": "Call-ID", "from": "From", "to": "To", "cseq": "CSeq", "max-forwards": "Max-Forwards"}
_REQUIRED = (("call-id", "Call-ID"), ("from", "From"), ("to", "To"), ("cseq", "CSeq"), ("via", "Via"))


def _validate(msg: Message, content_length: int | None) -> None:
    """The checks of §8.2 / §16.3 that must hold before a transaction or proxy may act.

    One pass collects the headers every element reads; their parsed values are left in the message's
    cache, so validating costs nothing later (the proxy would parse them anyway).
    """
    is_request = isinstance(msg, Request)
    h = msg.headers
    seen: dict[str, str] = {}
    try:
        for k, _, v in h._items:
            if k in _CHECKED:
                if k in seen:
                    if k in _SINGLE_NAMES:
                        raise SipValueError(f"Multiple {_SINGLE_NAMES[k]} headers")
                    continue
                seen[k] = v
        for key, what in _REQUIRED:
            if key not in seen:
                raise SipValueError(f"Missing {what}")
        cache = h._cache
        cache["via^"] = parse_first_via(seen["via"])[0]
        call_id = seen["call-id"]
        if not call_id or " " in call_id or "\t" in call_id:
            raise SipValueError("Invalid Call-ID")
        cache["call-id"] = call_id
        cache["from"] = parse_name_address(seen["from"], "From")
        cache["to"] = parse_name_address(seen["to"], "To")
        cseq = cache["cseq"] = parse_cseq(seen["cseq"])
        if isinstance(msg, Request):
            method = msg.method
            if cseq.method != method:
                if method not in KNOWN_METHODS:
                    # RFC 4475 §3.1.2.18: an unknown method whose CSeq disagrees gets 501.
                    raise SipValueError("Not Implemented", 501)
                raise SipValueError("CSeq method does not match Request-Line")
            mf = seen.get("max-forwards")
            if mf is not None:
                value = g.small_int(mf, 255)
                if value is None:
                    raise SipValueError("Invalid Max-Forwards")
                cache["max-forwards"] = value
            else:
                cache["max-forwards"] = None
            if method == "REGISTER":
                msg.contacts  # noqa: B018 - parse and cache
            date = seen.get("date")
            if date is not None and not g.DATE_RE.fullmatch(date):
                raise SipValueError("Malformed Date")
    except SipValueError as exc:
        raise SipParseError(exc.reason, exc.status, is_request=is_request,
                            partial=_salvage(h.items())) from None


def _content_length(items: list[tuple[str, str, str]], is_request: bool) -> int | None:
    """The Content-Length (§20.14), None when absent. Several lines, even equal ones, are refused:
    RFC 4475 §3.3.9 treats them as an invalid Content-Length."""
    found = None
    for k, _, v in items:
        if k == "content-length":
            if found is not None:
                raise SipParseError("Multiple Content-Length headers", is_request=is_request,
                                    partial=_salvage(items))
            found = g.small_int(v, 2**32 - 1)
            if found is None:
                raise SipParseError("Invalid Content-Length", is_request=is_request, partial=_salvage(items))
    return found


def _decode(head: bytes) -> str:
    return head.decode("utf-8", "surrogateescape")


_KEEPALIVE_CHARS = b"\r\n\t \x00"


def parse_datagram(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message | None:
    """Parse one datagram (§18.3) into a :class:`Request` or :class:`Response`.

    Returns None for a keep-alive (a datagram of only CR, LF, SP, HTAB or NUL). CRLFs before the start
    line are skipped (§7.5). Octets beyond Content-Length are discarded (§18.3, RFC 4475 §3.1.1.8); a
    Content-Length larger than the datagram, a missing empty line after the headers, or any defect
    :func:`_validate` finds raise :class:`SipParseError`.
    """
    if len(data) > limits.max_message_size:
        raise _oversized(data, limits, fatal=False)
    start = 0
    if data[:1] in (b"\r", b"\n"):
        stripped = data.lstrip(b"\r\n")
        start = len(data) - len(stripped)
        if not stripped.strip(_KEEPALIVE_CHARS):
            return None
    end = data.find(b"\r\n\r\n", start)
    sep = 4
    if end < 0:
        end = data.find(b"\n\n", start)
        sep = 2
        if end < 0:
            if not data.strip(_KEEPALIVE_CHARS):
                return None
            _missing_empty_line(data[start:], limits)
    line0, items = _split_head(_decode(data[start:end]), limits)
    is_request = not line0.startswith("SIP/")
    msg = _start(line0, items)
    body_start = end + sep
    cl = _content_length(items, is_request)
    if cl is None:
        msg.body = data[body_start:]
    else:
        if body_start + cl > len(data):
            raise SipParseError("Content-Length larger than message", is_request=is_request,
                                partial=_salvage(items))
        msg.body = data[body_start : body_start + cl]
    _validate(msg, cl)
    return msg


def _missing_empty_line(data: bytes, limits: Limits) -> None:
    """Raise for a datagram whose head has no terminating empty line (§7: it MUST be present).

    The head is still parsed, so the error names the most specific defect (RFC 4475 §3.1.2.15's
    archive copy of ``baddn`` lacks the empty line, yet the RFC expects 400 for its display names) and
    carries what a reply needs.
    """
    text = _decode(data).rstrip("\r\n")
    line0, items = _split_head(text, limits)
    msg = _start(line0, items)
    _validate(msg, None)
    raise SipParseError("Missing empty line after headers", is_request=isinstance(msg, Request),
                        partial=_salvage(items))


class StreamParser:
    """Frames SIP messages on a byte stream (TCP/TLS; §18.3), like ``h11.Connection`` does HTTP.

    ``feed(data)`` appends bytes; ``next_event()`` returns a :class:`Request`/:class:`Response`,
    :data:`PING` for an RFC 5626 §3.5.1 CRLFCRLF keep-alive (answer with CRLF), or :data:`NEED_DATA`.
    Single CRLFs between messages are skipped (§7.5). A message without Content-Length is taken to have
    an empty body (§18.3 makes the header mandatory on streams, so a body without it is a framing
    error the next message will show).

    After a :class:`SipParseError` with ``fatal`` set, framing is lost and the connection must be
    closed; a non-fatal one (a bad header in an otherwise framed message) consumed that message and
    parsing may continue. Every error raised for a request carries in ``partial`` the Via, From, To,
    Call-ID and CSeq that could be salvaged, so a reply can be sent before closing. When the peer
    closes, :meth:`close` raises for a message left unfinished, salvaged the same way.
    """

    __slots__ = ("limits", "_buf", "_scan", "_pending")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._scan = 0
        self._pending: tuple[int, int, Message | _Discard] | None = None

    def feed(self, data: bytes) -> None:
        """Append received bytes; call :meth:`next_event` until it returns :data:`NEED_DATA`."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet consumed by a returned event."""
        return len(self._buf)

    @property
    def in_message(self) -> bool:
        """Whether part of a message is waiting for the rest (not only CRLF keep-alive bytes: a
        lone CRLF stays buffered until the next one makes a ping)."""
        return bool(self._buf[:8].strip(b"\r\n"))

    def next_event(self) -> Message | _Sentinel:
        """The next message, :data:`PING` or :data:`NEED_DATA`; raises :class:`SipParseError`."""
        buf = self._buf
        if self._pending is not None:
            return self._finish_body(*self._pending)
        # keep-alives and stray CRLFs between messages (RFC 5626 §3.5.1, §7.5)
        if buf[:2] == b"\r\n":
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                self._scan = 0
                return PING
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return NEED_DATA
            i = 0
            while buf[i : i + 2] == b"\r\n":
                i += 2
            del buf[:i]
            self._scan = 0
            if len(buf) == 1 and buf[0] == 13:  # a CR that may start the next CRLF
                return NEED_DATA
        if not buf:
            return NEED_DATA
        limits = self.limits
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            if len(buf) > limits.max_message_size:
                exc = _oversized(buf, limits, fatal=True)
                del buf[:]
                raise exc
            self._scan = max(0, len(buf) - 3)
            return NEED_DATA
        self._scan = 0
        if end > limits.max_message_size:
            exc = _oversized(buf, limits, fatal=True)
            del buf[:]
            raise exc
        try:
            line0, items = _split_head(_decode(bytes(buf[:end])), limits)
            is_request = not line0.startswith("SIP/")
            cl = _content_length(items, is_request)
        except SipParseError as exc:
            exc.fatal = True
            del buf[:]
            raise
        if cl is None:
            cl = 0
        if end + 4 + cl > limits.max_message_size:
            del buf[:]
            raise SipParseError("Message Too Large", 513, is_request=is_request,
                                partial=_salvage(items) if is_request else [], fatal=True)
        try:
            msg = _start(line0, items)
        except SipParseError:
            if len(buf) >= end + 4 + cl:
                del buf[: end + 4 + cl]  # framed: drop this message only
            else:
                self._pending = (end + 4, cl, _Discard())
            raise
        return self._finish_body(end + 4, cl, msg)

    def close(self) -> None:
        """The stream ended (the peer closed): raise for a message it cut short, then forget it.

        Call after :meth:`next_event` returned :data:`NEED_DATA`. Octets of an unfinished message
        raise a fatal :class:`SipParseError` ("Truncated message", 400) carrying in ``partial`` what a
        reply needs, so the transport can still answer before closing (§8.2.6.2): from the parsed head
        when only the body is missing, else from the complete header lines that arrived (the buffer
        never holds more than ``max_message_size`` of a head, see :meth:`next_event`). Nothing is
        raised for leftover CR/LF of a keep-alive, nor for the body of a message already refused
        (it was answered when it was refused).
        """
        buf, pending = self._buf, self._pending
        self._pending = None
        self._scan = 0
        try:
            if pending is not None:
                msg = pending[2]
                if isinstance(msg, _Discard):
                    return
                is_request = isinstance(msg, Request)
                raise SipParseError("Truncated message", is_request=is_request,
                                    partial=_salvage(msg.headers.items()) if is_request else [], fatal=True)
            if buf.strip(b"\r\n"):
                raise _cut_head_error(buf, self.limits, "Truncated message", 400, fatal=True)
        finally:
            del buf[:]

    def _finish_body(self, body_start: int, cl: int, msg: Message | _Discard) -> Message | _Sentinel:
        buf = self._buf
        if len(buf) < body_start + cl:
            self._pending = (body_start, cl, msg)
            return NEED_DATA
        self._pending = None
        if isinstance(msg, _Discard):  # the body of a message whose start line was refused
            del buf[: body_start + cl]
            return self.next_event()
        msg.body = bytes(buf[body_start : body_start + cl])
        del buf[: body_start + cl]
        _validate(msg, cl)
        return msg


class _Discard:
    """Placeholder for a framed message already refused: its body is skipped when it arrives."""

    __slots__ = ()


MAX_ERROR_REPLY: Final = 1500
"""The most octets a reply to a malformed request may take: one unfragmented datagram on an
Ethernet path, whatever the request held (issue 16: a 513 copying 12,000 Vias was 96 KB)."""

#: the longest value of each header an error reply copies; a longer one is left out (From, To,
#: Call-ID) or makes the request unanswerable (Via, CSeq: a reply nobody can match is not sent)
_COPY_LIMIT: Final = {"via": 512, "from": 256, "to": 256, "call-id": 256, "cseq": 64}
_REASON_LIMIT: Final = 96
_PRETTY = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


def error_response(exc: SipParseError, *, to_tag: str | None = None) -> Response | None:
    """The reply to a request that failed to parse (§8.2.6.2), or None when none is possible
    (a broken response is dropped, §18.1.2; without Via and CSeq nobody could match the reply).

    Built only from what was salvaged, bounded by :func:`bounded_error_response`. ``to_tag`` is
    appended to a To that has none (§8.2.6.2; never for a 100).
    """
    if not exc.can_reply:
        return None
    return bounded_error_response(exc.status, exc.reason, exc.partial, to_tag=to_tag)


def bounded_error_response(status: int, reason: str, partial: list[tuple[str, str]], *,
                           to_tag: str | None = None) -> Response | None:
    """A response to a malformed request, from its salvaged ``(name, value)`` pairs: the top Via
    value (what routes the reply back, §18.2.2, and matches it, §17.1.3 -- RFC 3261 §8.2.6's
    "response to a malformed request" needs no more), and the first From, To, Call-ID and CSeq, each
    only if of sane size (:data:`_COPY_LIMIT`); the reason phrase, which may quote the input, is cut
    to 96 characters. At most :data:`MAX_ERROR_REPLY` octets: never an amplifier, always a datagram.
    None when the top Via or the CSeq is too long to copy."""
    items: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for k, v in partial:
        if k in seen or k not in _COPY_LIMIT:
            continue
        seen.add(k)
        if k == "via" and "," in v:
            v = g.split_commas(v[: 4 * _COPY_LIMIT["via"]])[0]
        if len(v) > _COPY_LIMIT[k]:
            if k in ("via", "cseq"):
                return None
            continue
        if k == "to" and to_tag and status != 100 and ";tag=" not in v.replace(" ", "").lower():
            v = f"{v};tag={to_tag}"
        items.append((k, _PRETTY[k], v))
    if "via" not in seen or "cseq" not in seen:
        return None
    if len(reason) > _REASON_LIMIT:
        reason = reason[: _REASON_LIMIT - 3] + "..."
    return Response(status, reason, Headers(items))
