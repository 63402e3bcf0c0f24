"""Framing and parsing: bytes in, :class:`Request`/:class:`Response` out (RFC 3261 §7, §18.3).

Two entry points, h11-style and free of I/O:

* :func:`parse_datagram` — one message per datagram (§18.3: trailing octets beyond Content-Length are
  discarded, a Content-Length larger than the datagram is an error).
* :class:`StreamParser` — ``feed(bytes)`` then ``next_event()`` until it returns :data:`NEED_DATA`;
  frames by Content-Length across any segment boundaries and answers RFC 5626 §3.5.1 CRLF keep-alive
  pings with :data:`PING`.

Both validate what every element needs before it can act (§8.2, §16.3): the start line, Via, CSeq
(and its method), Call-ID, From, To, Max-Forwards and Content-Length, and for REGISTER the Contacts.
Anything else is parsed only when read. Errors are :class:`SipParseError` carrying the status to send.
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


def _salvage(items: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, _, v in items if k in _SALVAGED]


def _split_head(head: str, limits: Limits) -> tuple[str, list[tuple[str, str, str]]]:
    """Start line and header triples of an unfolded head (§7.3.1)."""
    if "\n " in head or "\n\t" in head:
        head = g.FOLD_RE.sub(" ", head)
    lines = head.split("\r\n") if "\r" in head else head.split("\n")
    if len(lines) - 1 > limits.max_headers:
        raise SipParseError("Too many headers", 513, fatal=False)
    items: list[tuple[str, str, str]] = []
    append = items.append
    canonical = g.COMPACT_FORMS
    max_line = limits.max_line_length
    for line in lines[1:]:
        if len(line) > max_line:
            raise SipParseError("Header line too long", 513, partial=_salvage(items))
        name, sep, value = line.partition(":")
        name = name.rstrip(" \t")
        if not sep or not name or " " in name or "\t" in name:
            raise SipParseError("Malformed header line", partial=_salvage(items))
        lowered = name.lower()
        append((canonical.get(lowered, lowered), name, value.strip(" \t")))
    return lines[0], items


def _start(line: str, items: list[tuple[str, str, str]]) -> Message:
    """Parse the start line (§7.1, §7.2): exactly three elements separated by single SP."""
    if line.startswith("SIP/"):
        m = g.STATUS_LINE_RE.fullmatch(line)
        if m is None:
            raise SipParseError("Malformed status line", is_request=False)
        return Response(int(m.group(1)), m.group(2), Headers(items))
    parts = line.split(" ")
    partial = _salvage(items)
    if len(parts) != 3:
        raise SipParseError("Malformed Request-Line", is_request=True, partial=partial)
    method, uri_text, version = parts
    if not g.TOKEN_RE.fullmatch(method):
        raise SipParseError("Malformed method", is_request=True, partial=partial)
    if version != "SIP/2.0":
        if g.VERSION_RE.fullmatch(version):
            raise SipParseError("Version Not Supported", 505, is_request=True, partial=partial)
        raise SipParseError("Malformed SIP version", is_request=True, partial=partial)
    try:
        uri = parse_uri(uri_text)
    except SipValueError as exc:
        raise SipParseError(f"{exc.reason} in Request-URI", is_request=True, partial=partial) from None
    if isinstance(uri, SipURI) and uri.headers:
        raise SipParseError("Headers not allowed in Request-URI", is_request=True, partial=partial)
    req = Request(method, uri_text, Headers(items))
    req._uri = uri
    return req


_CHECKED = frozenset({"via", "call-id", "from", "to", "cseq", "max-forwards", "date"})
_SINGLE_NAMES = {"call-id": "Call-ID", "from": "From", "to": "To", "cseq": "CSeq", "max-forwards": "Max-Forwards"}


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
        for key, what in _SINGLE_NAMES.items():
            if key not in seen and key != "max-forwards":
                raise SipValueError(f"Missing {what}")
        if "via" not in seen:
            raise SipValueError("Missing Via")
        cache = h._cache
        cache["via^"] = parse_first_via(seen["via"])[0]
        call_id = seen["call-id"]
        if not call_id or " " in call_id or "\t" in call_id:
            raise SipValueError("Invalid Call-ID")
        cache["call-id"] = call_id
        cache["from"] = parse_name_address(seen["from"], "From")
        cache["to"] = parse_name_address(seen["to"], "To")
        cseq = cache["cseq"] = parse_cseq(seen["cseq"])
        if is_request:
            if cseq.method != msg.method:  # type: ignore[attr-defined]
                raise SipValueError("CSeq method does not match Request-Line")
            mf = seen.get("max-forwards")
            if mf is not None:
                if not mf.isdigit() or not mf.isascii() or int(mf) > 255:
                    raise SipValueError("Invalid Max-Forwards")
                cache["max-forwards"] = int(mf)
            else:
                cache["max-forwards"] = None
            if msg.method == "REGISTER":  # type: ignore[attr-defined]
                msg.contacts  # noqa: B018 - parse and cache
            date = seen.get("date")
            if date is not None and not g.DATE_RE.fullmatch(date):
                raise SipValueError("Malformed Date")
    except SipValueError as exc:
        raise SipParseError(exc.reason, exc.status, is_request=is_request,
                            partial=_salvage(h.items())) from None


def _content_length(items: list[tuple[str, str, str]], is_request: bool) -> int | None:
    found = None
    for k, _, v in items:
        if k == "content-length":
            if found is not None:
                raise SipParseError("Multiple Content-Length headers", is_request=is_request,
                                    partial=_salvage(items))
            v = v.strip(" \t")
            if not v.isdigit() or not v.isascii() or len(v) > 10:
                raise SipParseError("Invalid Content-Length", is_request=is_request, partial=_salvage(items))
            found = int(v)
    return found


def _decode(head: bytes) -> str:
    return head.decode("utf-8", "surrogateescape")


def parse_datagram(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message | None:
    """Parse one datagram (§18.3). Returns None for a keep-alive (only whitespace/NULs)."""
    if len(data) > limits.max_message_size:
        raise SipParseError("Message Too Large", 513, is_request=not data.startswith(b"SIP/"))
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = data.find(b"\n\n")
        sep = 2
        if end < 0:
            if not data.strip(b"\r\n\t \x00"):
                return None
            raise SipParseError("Truncated message: no empty line after headers",
                                is_request=not data.startswith(b"SIP/"))
    start = 0
    while data.startswith(b"\r\n", start):  # stray CRLFs before the start line (§7.5)
        start += 2
    if start >= end:
        return None
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


class StreamParser:
    """Frames SIP messages on a byte stream (TCP/TLS; §18.3), like ``h11.Connection`` does HTTP.

    After a :class:`SipParseError` with ``fatal`` set, framing is lost and the connection must be
    closed; a non-fatal one (a bad header in an otherwise framed message) consumed that message and
    parsing may continue.
    """

    __slots__ = ("limits", "_buf", "_scan", "_pending")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._scan = 0
        self._pending: tuple[int, int, Message] | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> Message | _Sentinel:
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
        if not buf:
            return NEED_DATA
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            if len(buf) > self.limits.max_message_size:
                raise SipParseError("Message Too Large", 513, is_request=not buf.startswith(b"SIP/"),
                                    fatal=True)
            self._scan = max(0, len(buf) - 3)
            return NEED_DATA
        self._scan = 0
        if end > self.limits.max_message_size:
            raise SipParseError("Message Too Large", 513, fatal=True)
        head = _decode(bytes(buf[:end]))
        try:
            line0, items = _split_head(head, self.limits)
            is_request = not line0.startswith("SIP/")
            cl = _content_length(items, is_request)
        except SipParseError as exc:
            exc.fatal = True
            del buf[:]
            raise
        if cl is None:
            cl = 0  # §18.3 makes it mandatory on streams; without it the body is taken as empty
        if end + 4 + cl > self.limits.max_message_size:
            del buf[:]
            raise SipParseError("Message Too Large", 513, is_request=is_request,
                                partial=_salvage(items), fatal=True)
        try:
            msg = _start(line0, items)
        except SipParseError as exc:
            if len(buf) >= end + 4 + cl:
                del buf[: end + 4 + cl]  # framed: drop this message only
            else:
                exc.fatal = True
                del buf[:]
            raise
        return self._finish_body(end + 4, cl, msg)

    def _finish_body(self, body_start: int, cl: int, msg: Message) -> Message | _Sentinel:
        buf = self._buf
        if len(buf) < body_start + cl:
            self._pending = (body_start, cl, msg)
            return NEED_DATA
        self._pending = None
        msg.body = bytes(buf[body_start : body_start + cl])
        del buf[: body_start + cl]
        _validate(msg, cl)
        return msg


def error_response(exc: SipParseError) -> Response | None:
    """The reply to a request that failed to parse (§8.2.6.2), or None when none is possible.

    Built only from what was salvaged: Via (all values), From, To, Call-ID, CSeq.
    """
    if not exc.can_reply:
        return None
    headers = Headers([(k, _PRETTY[k], v) for k, v in exc.partial])
    return Response(exc.status, exc.reason, headers)


_PRETTY = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
