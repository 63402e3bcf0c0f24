"""SIP requests and responses (RFC 3261 §7) with lazy, typed header access.

Theory of operation: the parser splits the head into ``(key, name, value)`` triples and stops there.
``key`` is the canonical lower-case full name (compact forms expanded), ``name`` is the header name
exactly as received, ``value`` the unfolded text. Typed views (``msg.vias``, ``msg.cseq`` ...) parse on
first use and are cached until that header changes. Serialising writes the triples back, so unknown
headers and untouched values leave byte-exact (modulo line folding, which §7.3.1 makes equivalent);
only Content-Length is recomputed from the body.
"""

from __future__ import annotations

from typing import Callable, Iterator, TypeVar, cast

from . import grammar as g
from .errors import SipValueError
from .uri import URI, parse_uri
from .values import (
    Credentials,
    CSeq,
    NameAddress,
    Via,
    parse_credentials,
    parse_cseq,
    parse_delta_seconds,
    parse_first_via,
    parse_name_address,
    parse_via,
)

__all__ = ["Headers", "Message", "Request", "Response", "REASON_PHRASES", "reason_phrase"]

T = TypeVar("T")

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 430: "Flow Failed", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    """The RFC 3261 §21 reason phrase for ``status`` (class default for unknown codes)."""
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")


Item = tuple[str, str, str]


class Headers:
    """The ordered header list of a message (§7.3). Names are matched case-insensitively and compact
    forms are the same header as their full form (§7.3.3). Order is kept, including between different
    header names, because §7.3.1 makes the order of same-named headers significant and operators read
    traces.
    """

    __slots__ = ("_items", "_cache")

    def __init__(self, items: list[Item] | None = None) -> None:
        self._items: list[Item] = items if items is not None else []
        self._cache: dict[str, object] = {}

    # -- reading -------------------------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first line of header ``name`` (whole line, commas and all), or ``default``."""
        key = g.canonical_name(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every line of header ``name``, in order."""
        key = g.canonical_name(name)
        return [v for k, _, v in self._items if k == key]

    def values(self, name: str) -> list[str]:
        """Every comma-separated value of header ``name`` across all its lines (§7.3.1)."""
        key = g.canonical_name(name)
        out: list[str] = []
        for k, _, v in self._items:
            if k == key:
                out.extend(g.split_commas(v))
        return out

    def count(self, name: str) -> int:
        """How many lines of header ``name`` there are (not values: see :meth:`values`)."""
        key = g.canonical_name(name)
        return sum(1 for k, _, _ in self._items if k == key)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = g.canonical_name(name)
        return any(k == key for k, _, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(name as written, value) pairs in order."""
        return ((n, v) for _, n, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[Item]:
        """The raw ``(key, name, value)`` triples; treat as read-only."""
        return self._items

    def parsed(self, key: str, parse: Callable[["Headers"], T]) -> T:
        """``parse(self)`` cached under ``key`` until the header ``key`` changes."""
        cache = self._cache
        if key in cache:
            return cast(T, cache[key])
        value = parse(self)
        cache[key] = value
        return value

    # -- writing -------------------------------------------------------------------------------------
    def _changed(self, key: str) -> None:
        cache = self._cache
        if cache:
            cache.pop(key, None)
            cache.pop(key + "^", None)

    def add(self, name: str, value: str) -> None:
        """Append a header line after all others."""
        key = g.canonical_name(name)
        self._items.append((key, name, value))
        self._changed(key)

    def push(self, name: str, value: str) -> None:
        """Insert a header line above the first line of the same header (or at the top): how Via,
        Record-Route and Route values are added (§16.6 steps 4 and 8)."""
        key = g.canonical_name(name)
        items = self._items
        for i, (k, _, _) in enumerate(items):
            if k == key:
                items.insert(i, (key, name, value))
                break
        else:
            items.insert(0, (key, name, value))
        self._changed(key)

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line, in the position of the first."""
        key = g.canonical_name(name)
        items = self._items
        out: list[Item] = []
        placed = False
        for item in items:
            if item[0] == key:
                if not placed:
                    out.append((key, item[1], value))
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append((key, name, value))
        self._items = out
        self._changed(key)

    def remove(self, name: str) -> int:
        """Remove every line of ``name``; returns how many went."""
        key = g.canonical_name(name)
        before = len(self._items)
        self._items = [it for it in self._items if it[0] != key]
        self._changed(key)
        return before - len(self._items)

    def discard(self, name: str, value: str) -> bool:
        """Remove the first line of ``name`` whose value is ``value``, the others staying where they
        are (e.g. the one Authorization line this node accepted); False when there is none."""
        key = g.canonical_name(name)
        items = self._items
        for i, (k, _, v) in enumerate(items):
            if k == key and v == value:
                del items[i]
                self._changed(key)
                return True
        return False

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first comma-separated value of ``name`` (top Via, top Route)."""
        key = g.canonical_name(name)
        items = self._items
        for i, (k, n, v) in enumerate(items):
            if k == key:
                parts = g.split_commas(v)
                if len(parts) == 1:
                    del items[i]
                else:
                    items[i] = (k, n, ", ".join(parts[1:]))
                self._changed(key)
                return parts[0]
        return None

    def replace_first_value(self, name: str, value: str) -> bool:
        """Replace the first comma-separated value of ``name`` (e.g. to stamp ``received`` on the top
        Via, §18.2.1); returns False when the header is absent."""
        key = g.canonical_name(name)
        items = self._items
        for i, (k, n, v) in enumerate(items):
            if k == key:
                parts = g.split_commas(v)
                parts[0] = value
                items[i] = (k, n, value if len(parts) == 1 else ", ".join(parts))
                self._changed(key)
                return True
        return False

    def copy(self) -> "Headers":
        """A copy sharing nothing mutable (items are immutable tuples; parsed views are re-made)."""
        return Headers(list(self._items))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]


# -- typed view parsers (module-level so they are not re-created per call) -------------------------
def _vias(h: Headers) -> list[Via]:
    vias = []
    for v in h.values("via"):
        if not v:
            raise SipValueError("Empty Via value")
        vias.append(parse_via(v))
    return vias


def _top_via(h: Headers) -> Via:
    line = h.get("via")
    if line is None:
        raise SipValueError("Missing Via")
    return parse_first_via(line)[0]


def _single(h: Headers, key: str, what: str) -> str:
    found = None
    for k, _, v in h._items:
        if k == key:
            if found is not None:
                raise SipValueError(f"Multiple {what} headers")
            found = v
    if found is None:
        raise SipValueError(f"Missing {what}")
    return found


def _name_addrs(key: str, what: str) -> Callable[[Headers], list[NameAddress]]:
    def parse(h: Headers) -> list[NameAddress]:
        out = []
        for v in h.values(key):
            if not v:
                raise SipValueError(f"Empty {what} value")
            out.append(parse_name_address(v, what))
        return out

    return parse


_routes = _name_addrs("route", "Route")
_record_routes = _name_addrs("record-route", "Record-Route")
_paths = _name_addrs("path", "Path")


def _contacts(h: Headers) -> list[NameAddress]:
    values = h.values("contact")
    if values == ["*"]:
        return []
    out = []
    for v in values:
        if not v or v == "*":
            raise SipValueError("Invalid Contact")
        out.append(parse_name_address(v, "Contact"))
    return out


class Message:
    """What requests and responses share: headers, body and the typed views of §20.

    Two messages are equal when their start lines, their headers (canonical name and value, in order)
    and their bodies are; Content-Length is left out, since :meth:`to_bytes` derives it from the body.
    """

    __slots__ = ("headers", "body")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body

    # -- typed views ---------------------------------------------------------------------------------
    @property
    def vias(self) -> list[Via]:
        """All Via values, top first (§20.42). Do not mutate: use push/pop methods."""
        return self.headers.parsed("via", _vias)

    @property
    def top_via(self) -> Via:
        """The topmost Via value, parsed without parsing the others."""
        return self.headers.parsed("via^", _top_via)

    @property
    def call_id(self) -> str:
        """Call-ID (§20.8), compared byte-for-byte (§8.1.1.4)."""
        return self.headers.parsed("call-id", lambda h: _single(h, "call-id", "Call-ID").strip())

    @property
    def cseq(self) -> CSeq:
        """CSeq (§20.16): sequence number and method."""
        return self.headers.parsed("cseq", lambda h: parse_cseq(_single(h, "cseq", "CSeq")))

    @property
    def from_(self) -> NameAddress:
        """From (§20.20), with its ``tag``."""
        return self.headers.parsed("from", lambda h: parse_name_address(_single(h, "from", "From"), "From"))

    @property
    def to(self) -> NameAddress:
        """To (§20.39), with its ``tag`` once a dialog exists."""
        return self.headers.parsed("to", lambda h: parse_name_address(_single(h, "to", "To"), "To"))

    @property
    def from_tag(self) -> str | None:
        """The From tag (§19.3), None when absent (RFC 2543 peers)."""
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        """The To tag (§19.3), None outside a dialog."""
        return self.to.tag

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (§20.22), None when absent; 0..255 else 400."""
        def parse(h: Headers) -> int | None:
            lines = h.get_all("max-forwards")
            if not lines:
                return None
            if len(lines) > 1:
                raise SipValueError("Multiple Max-Forwards headers")
            value = g.small_int(lines[0].strip(" \t"), 255)
            if value is None:
                raise SipValueError("Invalid Max-Forwards")
            return value

        return self.headers.parsed("max-forwards", parse)

    @max_forwards.setter
    def max_forwards(self, value: int) -> None:
        self.headers.set("Max-Forwards", str(value))

    @property
    def contacts(self) -> list[NameAddress]:
        """Contact values (§20.10); empty for ``Contact: *`` (see :attr:`contact_star`)."""
        return self.headers.parsed("contact", _contacts)

    @property
    def contact_star(self) -> bool:
        """Whether Contact is the single ``*`` of a remove-all REGISTER (§10.2.2)."""
        return self.headers.values("contact") == ["*"]

    @property
    def routes(self) -> list[NameAddress]:
        """Route values, top first (§20.34)."""
        return self.headers.parsed("route", _routes)

    @property
    def record_routes(self) -> list[NameAddress]:
        """Record-Route values, top first (§20.30)."""
        return self.headers.parsed("record-route", _record_routes)

    @property
    def paths(self) -> list[NameAddress]:
        """Path values, top first (RFC 3327 §4)."""
        return self.headers.parsed("path", _paths)

    @property
    def expires(self) -> int | None:
        """The Expires header as delta-seconds (§20.19); None when absent or unusable."""
        v = self.headers.get("expires")
        return parse_delta_seconds(v) if v is not None else None

    @property
    def min_expires(self) -> int | None:
        """Min-Expires as delta-seconds (§20.23); None when absent or unusable."""
        v = self.headers.get("min-expires")
        return parse_delta_seconds(v) if v is not None else None

    @property
    def content_type(self) -> str | None:
        """The Content-Type media type with its parameters, as written (§20.15)."""
        v = self.headers.get("content-type")
        return v.strip(" \t") if v is not None else None

    def tokens(self, name: str) -> list[str]:
        """Allow / Supported / Require / Proxy-Require / Unsupported as lower-case tokens."""
        return [v.lower() for v in self.headers.values(name) if v]

    @property
    def allow(self) -> list[str] | None:
        """Allow methods upper-cased, or None when the header is absent (§20.5: absent ≠ empty)."""
        if "allow" not in self.headers:
            return None
        return [v.upper() for v in self.headers.values("allow") if v]

    @property
    def supported(self) -> list[str]:
        """Supported option tags, lower-cased (§20.37)."""
        return self.tokens("supported")

    @property
    def require(self) -> list[str]:
        """Require option tags, lower-cased (§20.32)."""
        return self.tokens("require")

    def credentials(self, name: str = "authorization") -> list[Credentials]:
        """Authorization/Proxy-Authorization (one per line) or WWW-/Proxy-Authenticate values."""
        return [parse_credentials(v) for v in self.headers.get_all(name)]

    # -- mutation used by the proxy core ---------------------------------------------------------------
    def push_via(self, via: Via | str) -> None:
        """Add a Via above the others (§16.6 step 8)."""
        self.headers.push("Via", str(via))

    def pop_via(self) -> str | None:
        """Remove and return the top Via value, as text (§16.7 step 3); None when there is none."""
        return self.headers.pop_first_value("via")

    # -- serialisation -------------------------------------------------------------------------------
    def start_line(self) -> str:  # pragma: no cover - abstract
        """The Request-Line (§7.1) or Status-Line (§7.2), without CRLF."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message on the wire (§7), Content-Length set to the body's length."""
        body = self.body
        lines = [self.start_line()]
        have_cl = False
        for k, n, v in self.headers._items:
            if k == "content-length":
                if have_cl:
                    continue
                have_cl = True
                v = str(len(body))
            lines.append(f"{n}: {v}")
        if not have_cl:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def _eq_key(self) -> tuple:
        # Content-Length is a function of the body (and is rewritten by to_bytes), so it is left out.
        return (self.start_line(), [(k, v) for k, _, v in self.headers._items if k != "content-length"],
                self.body)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._eq_key() == other._eq_key()

    __hash__ = None  # type: ignore[assignment]


class Request(Message):
    """A SIP request (§7.1). ``uri`` parses the Request-URI on first use; assigning a URI object
    (or text) replaces it."""

    __slots__ = ("method", "_uri_text", "_uri")

    def __init__(self, method: str, uri: URI | str, headers: Headers | None = None, body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        if isinstance(uri, URI):
            self._uri: URI | None = uri
            self._uri_text = str(uri)
        else:
            self._uri = None
            self._uri_text = uri

    @property
    def uri(self) -> URI:
        """The Request-URI (§7.1), parsed on first use."""
        if self._uri is None:
            self._uri = parse_uri(self._uri_text)
        return self._uri

    @uri.setter
    def uri(self, value: URI | str) -> None:
        if isinstance(value, URI):
            self._uri, self._uri_text = value, str(value)
        else:
            self._uri, self._uri_text = None, value

    @property
    def uri_text(self) -> str:
        """The Request-URI exactly as it will be sent."""
        return self._uri_text

    def start_line(self) -> str:
        """The Request-Line (§7.1), without CRLF."""
        return f"{self.method} {self._uri_text} SIP/2.0"

    def copy(self) -> "Request":
        """A copy whose headers can be changed without touching this request (§16.6 step 1)."""
        return Request(self.method, self._uri if self._uri is not None else self._uri_text,
                       self.headers.copy(), self.body)

    def transaction_copy(self) -> "Request":
        """What a server transaction needs of this request once it is answered: the Request-Line and
        the headers §17.2.3 matches on and §8.2.6.2 copies into responses (Via, From, To, Call-ID,
        CSeq), without the body or any other header -- so that an answered transaction waiting for
        its ACK (Timer H, 64*T1) holds a few hundred bytes instead of up to a 64 KB request."""
        headers = Headers([item for item in self.headers._items if item[0] in _RESPONSE_COPIED])
        top_via = self.headers._cache.get("via^")
        if top_via is not None:
            headers._cache["via^"] = top_via
        return Request(self.method, self._uri if self._uri is not None else self._uri_text, headers)

    def make_response(self, status: int, reason: str | None = None, *, to_tag: str | None = None) -> "Response":
        """A response to this request per §8.2.6.2: Via, From, To, Call-ID and CSeq copied; ``to_tag``
        added to To when given and To has no tag yet (never for 100, §8.2.6.2)."""
        headers = Headers()
        items = headers._items
        for item in self.headers._items:
            if item[0] in _RESPONSE_COPIED:
                if item[0] == "to" and to_tag and status != 100 and "tag" not in self.to.params:
                    item = (item[0], item[1], f"{item[2]};tag={to_tag}")
                items.append(item)
        top_via = self.headers._cache.get("via^")
        if top_via is not None:  # same text, already parsed: responses are routed by it (§18.2.2)
            headers._cache["via^"] = top_via
        return Response(status, reason if reason is not None else reason_phrase(status), headers)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri_text}>"


_RESPONSE_COPIED = frozenset({"via", "from", "to", "call-id", "cseq"})


class Response(Message):
    """A SIP response (§7.2)."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str | None = None, headers: Headers | None = None,
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason if reason is not None else reason_phrase(status)

    def start_line(self) -> str:
        """The Status-Line (§7.2), without CRLF."""
        return f"SIP/2.0 {self.status} {self.reason}"

    def copy(self) -> "Response":
        """A copy whose headers can be changed without touching this response (§16.7 step 9)."""
        return Response(self.status, self.reason, self.headers.copy(), self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"
