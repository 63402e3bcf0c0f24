"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966) and their comparison rules (§19.1.4).

A parsed URI keeps the exact text it came from, so forwarding a message never rewrites a URI it did
not touch; :meth:`SipURI.replace` builds a new one when the proxy changes something.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping, overload
from urllib.parse import unquote as _pct_unquote

from . import grammar as g
from .errors import SipValueError

__all__ = ["URI", "SipURI", "TelURI", "AbsoluteURI", "parse_uri"]

_DEFAULT_PORTS = {"sip": 5060, "sips": 5061}
_COMPARED_IF_PRESENT = ("user", "ttl", "method", "maddr", "transport")


class URI:
    """Common base of every URI a SIP message can carry (§19.1, §25.1 absoluteURI)."""

    __slots__ = ("scheme", "_text")
    scheme: str
    _text: str

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._text}>"

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> Any:
        return self._text.lower()


class SipURI(URI):
    """A ``sip:`` or ``sips:`` URI (§19.1.1), with parameters and headers.

    ``params`` maps lower-cased names to values (``None`` for a flag such as ``lr``) in their order of
    appearance; ``headers`` maps header names to (escaped) values.
    """

    __slots__ = ("user", "password", "host", "port", "params", "headers")

    def __init__(
        self,
        host: str,
        user: str | None = None,
        *,
        port: int | None = None,
        password: str | None = None,
        params: Mapping[str, str | None] | None = None,
        headers: Mapping[str, str] | None = None,
        scheme: str = "sip",
        _text: str | None = None,
    ) -> None:
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = dict(params or {})
        self.headers: dict[str, str] = dict(headers or {})
        self._text = _text if _text is not None else self._render()

    # -- derived views -------------------------------------------------------------------------------
    @property
    def secure(self) -> bool:
        """Whether this is a SIPS URI (§19.1.2)."""
        return self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased (``udp``, ``tcp``, ``tls``, ``ws``, ``wss``)."""
        t = self.params.get("transport")
        return t.lower() if t else None

    @property
    def host_key(self) -> str:
        """The host for comparisons: lower-case, IPv6 without brackets and in its canonical
        (RFC 5952) text, so ``[2001:DB8:0::1]`` and ``[2001:db8::1]`` are one host (RFC 5118 §4.4)."""
        h = self.host.lower()
        if h.startswith("["):
            try:
                return ipaddress.IPv6Address(h[1:-1]).compressed
            except ValueError:  # only hosts built by hand get here; parse_uri validates
                return h[1:-1]
        return h

    @property
    def effective_port(self) -> int:
        """The port a client would use when none is given (5060, or 5061 for sips/TLS; RFC 3263 §4.2)."""
        if self.port is not None:
            return self.port
        if self.secure or self.transport in ("tls", "wss"):
            return 5061
        return 5060

    @property
    def lr(self) -> bool:
        """Whether this is a loose-routing URI (§16.4, §19.1.1 ``lr`` parameter)."""
        return "lr" in self.params

    @property
    def unescaped_user(self) -> str | None:
        """The user part with every ``%HH`` decoded once (RFC 4475 §3.1.1.4: ``null-%00-null`` keeps
        its NUL and is not truncated); non-UTF-8 octets come back as surrogate escapes."""
        return _unescape(self.user)

    @property
    def aor(self) -> str:
        """``user@host`` (or just ``host``): the key OpenSIPS's usrloc stores with ``use_domain``."""
        return f"{self.user}@{self.host.lower()}" if self.user else self.host.lower()

    # -- building ------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "SipURI":
        """A copy with some fields changed; ``params``/``headers`` replace the whole mapping."""
        fields: dict[str, Any] = dict(
            host=self.host,
            user=self.user,
            port=self.port,
            password=self.password,
            params=self.params,
            headers=self.headers,
            scheme=self.scheme,
        )
        fields.update(changes)
        return SipURI(**fields)

    def with_params(self, **params: str | None) -> "SipURI":
        """A copy with these parameters set (``None`` value = flag parameter)."""
        merged = dict(self.params)
        merged.update(params)
        return self.replace(params=merged)

    def without_params(self, *names: str) -> "SipURI":
        """A copy without these parameters."""
        return self.replace(params={k: v for k, v in self.params.items() if k not in names})

    def _render(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        out.append(host)
        if self.port is not None:
            out.append(f":{self.port}")
        for k, v in self.params.items():
            out.append(f";{k}" if v is None else f";{k}={v}")
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    # -- §19.1.4 comparison --------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        """§19.1.4: scheme, userinfo (case-sensitive), host (case-insensitive) and port must match;
        ``user``, ``ttl``, ``method``, ``maddr`` and ``transport`` must match when either URI has
        them; other parameters only when both have them; headers must all match. Escapes of
        unreserved characters equal the characters; names and values of parameters compare
        case-insensitively."""
        if not isinstance(other, SipURI):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if _norm(self.user) != _norm(other.user):
            return False
        if _norm(self.password) != _norm(other.password):
            return False
        if self.host_key != other.host_key or self.port != other.port:
            return False
        mine = _norm_params(self.params)
        theirs = _norm_params(other.params)
        for name in _COMPARED_IF_PRESENT:
            if (name in mine or name in theirs) and mine.get(name) != theirs.get(name):
                return False
        for name in mine.keys() & theirs.keys():
            if mine[name] != theirs[name]:
                return False
        h1 = {_norm(k).lower(): _norm(v) for k, v in self.headers.items()}
        h2 = {_norm(k).lower(): _norm(v) for k, v in other.headers.items()}
        return h1 == h2

    def _key(self) -> Any:
        return (self.scheme, _norm(self.user), self.host_key, self.port)

    __hash__ = URI.__hash__  # defining __eq__ would otherwise make URIs unusable as dict keys


def _norm_params(params: Mapping[str, str | None]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for k, v in params.items():
        if "%" in k:
            k = _norm(k).lower()
        out[k] = _norm(v).lower() if v is not None else None
    return out


class TelURI(URI):
    """A ``tel:`` URI (RFC 3966): a number with parameters."""

    __slots__ = ("number", "params")

    def __init__(self, number: str, params: Mapping[str, str | None] | None = None,
                 _text: str | None = None) -> None:
        self.scheme = "tel"
        self.number = number
        self.params: dict[str, str | None] = dict(params or {})
        if _text is None:
            _text = "tel:" + number + "".join(
                f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items()
            )
        self._text = _text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelURI):
            return NotImplemented
        strip = str.maketrans("", "", "-.()")
        return (self.number.translate(strip).lower() == other.number.translate(strip).lower()
                and {k: (v or "").lower() for k, v in self.params.items()}
                == {k: (v or "").lower() for k, v in other.params.items()})

    def _key(self) -> Any:
        return self.number.translate(str.maketrans("", "", "-.()")).lower()

    __hash__ = URI.__hash__


class AbsoluteURI(URI):
    """Any other scheme (§25.1 absoluteURI), kept opaque: a proxy answers 416 to it as a target."""

    __slots__ = ("opaque",)

    def __init__(self, scheme: str, opaque: str) -> None:
        self.scheme = scheme.lower()
        self.opaque = opaque
        self._text = f"{scheme}:{opaque}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteURI):
            return NotImplemented
        return self.scheme == other.scheme and self.opaque == other.opaque

    __hash__ = URI.__hash__


def _unescape(value: str | None) -> str | None:
    if value is None or "%" not in value:
        return value
    return _pct_unquote(value, errors="surrogateescape")


# RFC 2396 §2.2 reserved characters, and "%" itself so that an escaped "%" never becomes the start of
# another escape (RFC 4475 §3.1.1.3: "value%2541" is "value%41", never "valueA").
_RESERVED = frozenset(";/?:@&=+$,%")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def _decode_escape(m: re.Match[str]) -> str:
    ch = chr(int(m.group(1), 16))
    return "%" + m.group(1).upper() if ch in _RESERVED else ch


@overload
def _norm(value: str) -> str: ...


@overload
def _norm(value: None) -> None: ...


def _norm(value: str | None) -> str | None:
    """The form compared by §19.1.4: characters outside the reserved set are equivalent to their
    ``%HH`` escape, so those escapes are decoded (once); escapes of reserved characters are kept, with
    upper-case hex."""
    if value is None or "%" not in value:
        return value
    return _ESCAPE_RE.sub(_decode_escape, value)


def _parse_params(text: str, where: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for piece in text.split(";"):
        name, eq, value = piece.partition("=")
        if not name or not g.PARAMCHARS_RE.fullmatch(name):
            raise SipValueError(f"Bad URI parameter in {where}")
        if eq:
            if not value or not g.PARAMCHARS_RE.fullmatch(value):
                raise SipValueError(f"Bad URI parameter value in {where}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _parse_sip(scheme: str, rest: str, text: str) -> SipURI:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if not user or not g.USER_RE.fullmatch(user):
            raise SipValueError("Bad user part in URI")
        if colon:
            if not g.PASSWORD_RE.fullmatch(pw):
                raise SipValueError("Bad password in URI")
            password = pw
    m = g.HOSTPORT_RE.match(rest)
    if not m:
        raise SipValueError("Bad host in URI")
    host, port_text = m.group(1), m.group(2)
    if host[0] == "[" and not g.valid_ipv6_reference(host):
        raise SipValueError("Bad IPv6 reference in URI")
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise SipValueError("Bad port in URI")
    rest = rest[m.end() :]
    headers_text = None
    if "?" in rest:
        rest, _, headers_text = rest.partition("?")
    params: dict[str, str | None] = {}
    if rest:
        if rest[0] != ";":
            raise SipValueError("Bad URI after host")
        params = _parse_params(rest[1:], "URI")
    headers: dict[str, str] = {}
    if headers_text is not None:
        for piece in headers_text.split("&"):
            hname, eq, hvalue = piece.partition("=")
            if not hname or not eq or not g.HNVCHARS_RE.fullmatch(hname) or not g.HNVCHARS_RE.fullmatch(hvalue):
                raise SipValueError("Bad URI header")
            headers[hname] = hvalue
    return SipURI(host, user, port=port, password=password, params=params, headers=headers,
                  scheme=scheme, _text=text)


# The common shapes, no escapes and no URI headers, in one regex each: with userinfo (chosen when the
# text has an "@") and without. Splitting them keeps the user part (which may contain ";") from
# swallowing a host-only URI's parameters and backtracking out again. What they accept is a subset
# of what _parse_sip accepts, with the same result.
_HOSTPORT_PARAMS = (
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+)?)*)"
)
_FAST_USER_RE = re.compile(
    r"([sS][iI][pP][sS]?):([A-Za-z0-9\-_.!~*'()&=+$,;?/]+)(?::([A-Za-z0-9\-_.!~*'()&=+$,]*))?@"
    + _HOSTPORT_PARAMS
)
_FAST_HOST_RE = re.compile(r"([sS][iI][pP][sS]?):" + _HOSTPORT_PARAMS)  # no re.I: it slows every class


def parse_uri(text: str) -> URI:
    """Parse a URI as it appears in a Request-URI or inside ``<...>`` (§19.1.1, §25.1).

    Raises :class:`SipValueError` (400) for anything that is not a URI: whitespace, brackets, bad
    escapes, an empty host, a port above 65535.
    """
    if "@" in text:
        m = _FAST_USER_RE.fullmatch(text)
        if m is not None:
            scheme, user, password, host, port, ptext = m.groups()
    else:
        m = _FAST_HOST_RE.fullmatch(text)
        if m is not None:
            scheme, host, port, ptext = m.groups()
            user = password = None
    if m is not None:
        uri = SipURI.__new__(SipURI)
        uri.scheme = "sip" if scheme == "sip" else scheme.lower()
        uri.user = user
        uri.password = password
        if host[0] == "[" and not g.valid_ipv6_reference(host):
            raise SipValueError("Bad IPv6 reference in URI")
        uri.host = host
        if port is not None:
            port = int(port)
            if port > 65535:
                raise SipValueError("Bad port in URI")
        uri.port = port
        params: dict[str, str | None] = {}
        if ptext:  # already checked by the regex: split only
            for piece in ptext[1:].split(";"):
                name, eq, value = piece.partition("=")
                params[name.lower()] = value if eq else None
        uri.params = params
        uri.headers = {}
        uri._text = text
        return uri
    scheme, colon, rest = text.partition(":")
    if not colon or not g.SCHEME_RE.fullmatch(scheme):
        raise SipValueError("Bad URI scheme")
    if "%" in rest and g.ESCAPED_OK.search(rest):
        raise SipValueError("Bad escape in URI")
    lowered = scheme.lower()
    if lowered in ("sip", "sips"):
        return _parse_sip(lowered, rest, text)
    if not rest or not g.OPAQUE_RE.fullmatch(rest):
        raise SipValueError("Bad URI")
    if lowered == "tel":
        number, _, ptext = rest.partition(";")
        if not g.TEL_NUMBER_RE.fullmatch(number):
            raise SipValueError("Bad tel URI number")
        return TelURI(number, _parse_params(ptext, "tel URI") if ptext else {}, _text=text)
    return AbsoluteURI(scheme, rest)
