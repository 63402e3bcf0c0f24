"""Typed header values: Via (§20.42), name-addr headers (§20.10, §20.20, §20.39), CSeq (§20.16) and the
auth headers (§20.7, §20.44; RFC 2617 params).

Values are parsed only when asked for (a proxy never reads most headers), and print back to the
canonical form of the RFC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from . import grammar as g
from .errors import SipValueError
from .uri import URI, SipURI, parse_uri

__all__ = [
    "Params",
    "parse_params",
    "format_params",
    "Via",
    "parse_via",
    "parse_first_via",
    "NameAddress",
    "parse_name_address",
    "CSeq",
    "parse_cseq",
    "Credentials",
    "parse_credentials",
    "parse_tokens",
    "parse_delta_seconds",
]

Params = dict[str, str | None]
MAX_DELTA_SECONDS = 2**32 - 1


def parse_params(text: str, pos: int, what: str) -> Params:
    """Parse ``*( SEMI generic-param )`` from ``pos`` to the end of ``text`` (§25.1).

    Names are lower-cased (they are case-insensitive); an empty parameter (``;;``) or trailing junk is an
    error, because RFC 4475 §3.1.2.1 shows peers that send it and expects a 400.
    """
    params, pos = scan_params(text, pos)
    if pos < len(text) and text[pos:].strip(" \t"):
        raise SipValueError(f"Bad parameter in {what}")
    return params


def scan_params(text: str, pos: int) -> tuple[Params, int]:
    """Parse parameters from ``pos`` for as long as they match; returns them and where they stopped."""
    # Fast path: parameters written without LWS or quotes (nearly all of them) are checked by one
    # regex and split. It is used only when it stops where the general loop below would: at the end
    # of the text or at the comma before the next value.
    m = g.SIMPLE_PARAMS_RE.match(text, pos)
    end = m.end() if m is not None else pos  # the pattern matches the empty string: always a match
    if end == len(text) or text[end] == ",":
        params: Params = {}
        if end > pos:
            for piece in text[pos + 1 : end].split(";"):
                name, eq, value = piece.partition("=")
                params[name.lower()] = value if eq else None
        return params, end
    return scan_params_general(text, pos)


def scan_params_general(text: str, pos: int) -> tuple[Params, int]:
    """:func:`scan_params` for any input: LWS around ``;`` and ``=``, quoted values (§25.1)."""
    params: Params = {}
    match = g.PARAM_RE.match
    while True:
        m = match(text, pos)
        if m is None:
            return params, pos
        params[m.group(1).lower()] = m.group(2)
        pos = m.end()


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True)
class Via:
    """One Via header value (RFC 3261 §20.42, §18.2.1; RFC 3581 ``rport``).

    ``rport`` reads as ``None`` when absent, ``""`` when present as a flag, or the port as text.
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter: the transaction id (§8.1.1.7, §17.2.3)."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter a server added (§18.2.1)."""
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """RFC 3581: None when absent, ``""`` for the bare flag a client sends, the port text once
        a server filled it in."""
        params = self.params
        if "rport" not in params:
            return None
        return params["rport"] or ""

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter (§18.2.2)."""
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        """The multicast ``ttl`` (§20.42: 0-255); None when absent or out of range."""
        ttl = self.params.get("ttl")
        return g.small_int(ttl, 255) if ttl else None

    @property
    def sent_by(self) -> tuple[str, int]:
        """host and port as sent, with the transport's default port (§18.2.2)."""
        port = self.port or (5061 if self.transport in ("TLS", "WSS") else 5060)
        return (self.host.lower(), port)

    @property
    def rfc3261_branch(self) -> bool:
        """Whether the branch carries the magic cookie ``z9hG4bK`` (§8.1.1.7, §17.2.3)."""
        b = self.params.get("branch")
        # The cookie alone identifies nothing (RFC 4475 §3.2.1): such a request falls back to the
        # RFC 2543 matching rules, as the RFC allows.
        return b is not None and len(b) > 7 and b.startswith("z9hG4bK")

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hostport}{format_params(self.params)}"


def parse_via(value: str) -> Via:
    """Parse one Via value; LWS around ``/``, ``:``, ``;`` and ``=`` is allowed (RFC 4475 §3.1.1.1)."""
    via, end = parse_first_via(value)
    if end < len(value):
        raise SipValueError("Malformed Via")
    return via


def parse_first_via(line: str) -> tuple[Via, int]:
    """Parse the first Via value of a header line without splitting the rest (the hot path: a proxy
    reads only the top Via of most messages). Returns the Via and the offset where it ended, which
    is the end of the line or a comma."""
    m = g.VIA_RE.match(line)
    if m is None:
        raise SipValueError("Malformed Via")
    if line[m.start(2)] == "[" and not g.valid_ipv6_reference(m.group(2)):
        raise SipValueError("Bad IPv6 reference in Via")
    port = None
    if m.group(3) is not None:
        port = int(m.group(3))
        if port > 65535:
            raise SipValueError("Bad Via port")
    params, pos = scan_params(line, m.end())
    end = len(line)
    while pos < end and line[pos] in " \t":
        pos += 1
    if pos < end and line[pos] != ",":
        raise SipValueError("Malformed Via")
    return Via(m.group(1).upper(), m.group(2), port, params), pos


@dataclass(slots=True)
class NameAddress:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route, Record-Route, Path
    (§20.10, §20.20, §20.30, §20.34, §20.39; RFC 3327).
    """

    uri: URI
    display_name: str | None = None
    params: Params = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (§19.3)."""
        return self.params.get("tag")

    @property
    def q(self) -> float | None:
        """The Contact ``q`` value (§20.10), or None; malformed values raise (registrar answers 400)."""
        params = self.params
        if "q" not in params:
            return None
        q = params["q"]
        if q is None or not g.QVALUE_RE.fullmatch(q):  # qvalue = ("0" ["." 0*3DIGIT]) / ("1" ["." 0*3("0")])
            raise SipValueError("Bad q value")
        return float(q)

    @property
    def expires(self) -> int | None:
        """The Contact ``expires`` param; None when absent or unusable (registrar then uses the
        default, as RFC 4475 §3.1.2.4 allows for overlarge values)."""
        e = self.params.get("expires")
        return parse_delta_seconds(e) if e is not None else None

    @property
    def sip_instance(self) -> str | None:
        """The ``+sip.instance`` Contact parameter (RFC 5626 §4.1) without its quotes, e.g.
        ``<urn:uuid:...>``; None when absent."""
        v = self.params.get("+sip.instance")
        return g.unquote(v) if v is not None else None

    @property
    def reg_id(self) -> int | None:
        """The ``reg-id`` Contact parameter (RFC 5626 §4.2); None when absent, malformed (not
        1*DIGIT) or above 2**31-1."""
        v = self.params.get("reg-id")
        return g.small_int(v, 2**31 - 1) if v is not None else None

    @property
    def sip_uri(self) -> SipURI:
        """The URI when it is a SIP/SIPS URI; else SipValueError with 416 (§21.4.14)."""
        if not isinstance(self.uri, SipURI):
            raise SipValueError(f"Not a SIP URI: {self.uri}", 416)
        return self.uri

    def __str__(self) -> str:
        display = ""
        if self.display_name is not None:
            display = g.quote(self.display_name) + " "
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_address(value: str, what: str = "header") -> NameAddress:
    """Parse ``( name-addr / addr-spec ) *( SEMI param )`` (§25.1 from-spec, contact-param, rec-route).

    In the addr-spec form every ``;`` starts a header parameter, and a URI containing ``,``, ``?`` or
    ``;`` must be in angle brackets (§20); RFC 4475 §3.1.2.13/14/15 are rejected here.
    """
    m = g.NAME_ADDR_RE.match(value)
    if m is not None:
        quoted, tokens, uri_text = m.groups()
        display = g.unquote(quoted) if quoted is not None else tokens
    else:
        m = g.ADDR_SPEC_RE.match(value)
        if m is None:
            raise SipValueError(f"Malformed {what}")
        display, uri_text = None, m.group(1)
        if "?" in uri_text:
            raise SipValueError(f"Malformed {what}")
    try:
        uri = parse_uri(uri_text)
    except SipValueError as exc:
        if display is None and ("<" in value or '"' in value):
            # not a URI but a name-addr gone wrong: an unterminated quote, spaces inside <...>, or a
            # display name that is neither token nor quoted-string (RFC 4475 §3.1.2.6, .14, .15)
            raise SipValueError(f"Malformed {what}") from None
        raise SipValueError(f"{exc.reason} in {what}") from None
    return NameAddress(uri, display, parse_params(value, m.end(), what))


class CSeq(NamedTuple):
    """The CSeq header (§20.16): the number is below 2**31 (§8.1.1.5)."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """Parse ``1*DIGIT LWS Method`` (§20.16); a number of 2**31 or more is refused (§8.1.1.5,
    RFC 4475 §3.1.2.4)."""
    m = g.CSEQ_RE.fullmatch(value)
    if m is None:
        raise SipValueError("Malformed CSeq")
    digits = m.group(1)
    if len(digits) > 10 or int(digits) >= 2**31:
        raise SipValueError("CSeq number too large")
    return CSeq(int(digits), m.group(2))


@dataclass(slots=True)
class Credentials:
    """Authorization / Proxy-Authorization / WWW-Authenticate / Proxy-Authenticate (§20.7, §22.4).

    ``params`` holds the auth-params with quotes removed (``realm``, ``nonce``, ``response``...).
    """

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        unquoted = {"algorithm", "stale", "nc", "qop"}
        parts = []
        for k, v in self.params.items():
            if k in unquoted and self.scheme.lower() == "digest" and "," not in v and " " not in v:
                parts.append(f"{k}={v}")
            else:
                parts.append(f"{k}={g.quote(v)}")
        return f"{self.scheme} " + ", ".join(parts) if parts else self.scheme


def parse_credentials(value: str) -> Credentials:
    """Parse ``scheme LWS auth-param *(COMMA auth-param)`` (RFC 2617 §1.2); unknown schemes are kept
    (RFC 4475 §3.3.7)."""
    value = value.strip(" \t")
    scheme, _, rest = value.partition(" ")
    if not g.TOKEN_RE.fullmatch(scheme):
        raise SipValueError("Malformed authorization header")
    params: dict[str, str] = {}
    for piece in g.split_commas(rest):
        if not piece:
            continue
        name, eq, val = piece.partition("=")
        name = name.strip(" \t").lower()
        if not eq or not g.TOKEN_RE.fullmatch(name):
            raise SipValueError("Malformed authorization parameter")
        params[name] = g.unquote(val.strip(" \t"))
    return Credentials(scheme, params)


def parse_tokens(values: list[str]) -> list[str]:
    """Allow / Supported / Require / Proxy-Require / Unsupported: comma-separated tokens (§20.5...)."""
    return [v for v in values if v]


def parse_delta_seconds(text: str) -> int | None:
    """A delta-seconds value (§25.1), or None if it is not one or exceeds 2**32-1 (RFC 4475 §3.1.2.4
    lets an element treat overlarge expiry values as absent)."""
    return g.small_int(text.strip(" \t"), MAX_DELTA_SECONDS)
