"""The arithmetic of HTTP digest authentication as SIP uses it (RFC 3261 §22.4): the shape of a client's
credentials, the response it should have computed, and the challenge that asks for one.

Algorithms are RFC 2617's MD5 / MD5-sess and RFC 7616's SHA-256 and SHA-512-256 (with their ``-sess``
variants), which RFC 8760 brought to SIP. Without ``qop`` the response is RFC 2069's; old phones still
answer that way when a challenge offers no qop.

Pure on purpose: no I/O, no clock, no Twisted. The route layer feeds it parsed headers and an HA1 from
the subscriber store, so everything here is tested with the RFCs' own vectors.

Strings are hashed as UTF-8 with ``surrogateescape``: the SIP parser decodes the wire that way, so a
username in Latin-1 hashes as the very bytes the client hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..sip.errors import SipValueError
from ..sip.grammar import quote
from ..sip.values import Credentials

__all__ = [
    "ALGORITHMS",
    "DigestError",
    "DigestResponse",
    "base_algorithm",
    "canonical_algorithm",
    "challenge_value",
    "compute_ha1",
    "expected_response",
    "hash_hex",
    "response_matches",
    "session_ha1",
]

ALGORITHMS: tuple[str, ...] = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess")

#: Bounds on what a client may send. A legitimate value is far shorter; the bounds keep a hostile header
#: from making us hash (or keep, or log) megabytes.
MAX_PARAM_LENGTH = 1024
MAX_USERNAME_LENGTH = 256

_CANONICAL = {name.lower(): name for name in ALGORITHMS}
_HASHLIB_NAME = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
_HEX_LENGTH = {"MD5": 32, "SHA-256": 64, "SHA-512-256": 64}
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
_QOPS = ("auth", "auth-int")
_REQUIRED = ("username", "realm", "nonce", "uri", "response")


def _constructor(base: str) -> Callable[[bytes], Any] | None:
    """hashlib's constructor for ``base``, or None when this build lacks it.

    SHA-512/256 comes from OpenSSL through ``hashlib.new`` and is missing from some builds; MD5 is asked
    for with ``usedforsecurity=False`` so that a FIPS-mode OpenSSL still computes the protocol's hash.
    """
    name = _HASHLIB_NAME[base]
    kwargs = {"usedforsecurity": False} if base == "MD5" else {}
    try:
        hashlib.new(name, b"", **kwargs)
    except ValueError:
        return None
    return lambda data: hashlib.new(name, data, **kwargs)


_HASHES = {base: _constructor(base) for base in _HASHLIB_NAME}


class DigestError(SipValueError):
    """Digest credentials that cannot be checked: a client's error, answered with 400 and a reason naming
    the defect (never an authentication failure, which is a 401/407 re-challenge)."""


def canonical_algorithm(name: str | None) -> str:
    """The spelling of ``name`` in :data:`ALGORITHMS`; an absent algorithm is MD5 (RFC 2617 §3.2.1).

    Algorithm names are tokens compared case-insensitively, and phones do send ``md5``.
    """
    if not name:
        return "MD5"
    try:
        return _CANONICAL[name.lower()]
    except (KeyError, AttributeError):
        raise DigestError("Unsupported digest algorithm", 400) from None


def base_algorithm(algorithm: str) -> str:
    """The hash under ``algorithm``: what a stored HA1 was computed with, whatever the ``-sess``."""
    return canonical_algorithm(algorithm).removesuffix("-sess")


def _hash_function(algorithm: str) -> Callable[[bytes], Any]:
    base = base_algorithm(algorithm)
    function = _HASHES[base]
    if function is None:
        # Our build's fault, not the client's: a 500 that says what to install.
        raise DigestError(f"{base} digest unavailable: hashlib lacks {_HASHLIB_NAME[base]} (OpenSSL build)", 500)
    return function


def _encode(data: str | bytes) -> bytes:
    return data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")


def hash_hex(algorithm: str, data: str | bytes) -> str:
    """H(data) of RFC 7616 §3.4: the lower-case hex digest of the algorithm's base hash."""
    return str(_hash_function(algorithm)(_encode(data)).hexdigest())


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), with the base hash: the value OpenSIPS stores as ``ha1`` (MD5),
    ``ha1_sha256`` or ``ha1_sha512t256``, so a stored HA1 and a plain-text password give the same."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def session_ha1(algorithm: str, ha1: str, nonce: str, cnonce: str) -> str:
    """The HA1 a ``-sess`` algorithm hashes with: H(HA1:nonce:cnonce) (RFC 2617 §3.2.2.2); other
    algorithms use the stored HA1 as it is."""
    if not canonical_algorithm(algorithm).endswith("-sess"):
        return ha1
    return hash_hex(algorithm, f"{ha1}:{nonce}:{cnonce}")


@dataclass(frozen=True, slots=True)
class DigestResponse:
    """The client's Authorization / Proxy-Authorization credentials, checked for shape.

    ``nc`` is the nonce-count as a number, for the replay check; ``nc_text`` is the same count as the
    client wrote it, because the response hash covers the text: RFC 2617 asks for lower-case hex, but a
    client that sends ``0000000A`` hashed ``0000000A``. ``qop`` and ``response`` are kept lower-case.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    qop: str | None
    nc: int | None
    cnonce: str | None
    opaque: str | None
    nc_text: str | None = None

    @classmethod
    def from_credentials(cls, creds: Credentials) -> DigestResponse:
        """Check ``creds`` (from :func:`edgeproxy.sip.values.parse_credentials`) and keep what a response
        check needs.

        Everything a peer can get wrong raises :class:`DigestError`, so the caller answers 400 instead of
        failing the authentication of credentials that could never have matched. Reasons name only our
        own parameter names: a reason ends up in a status line, and a peer's text must not.
        """
        scheme = creds.scheme
        if not isinstance(scheme, str) or scheme.lower() != "digest":
            raise DigestError("Unsupported authorization scheme")
        params = creds.params
        if not isinstance(params, dict):
            raise DigestError("Malformed digest credentials")
        for name, value in params.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise DigestError("Malformed digest parameter")
            if len(name) > MAX_PARAM_LENGTH or len(value) > MAX_PARAM_LENGTH:
                raise DigestError("Oversized digest parameter")
        for name in _REQUIRED:
            if name not in params:
                raise DigestError(f"Missing digest parameter {name}")
        if len(params["username"]) > MAX_USERNAME_LENGTH:
            raise DigestError("Digest username too long")
        for name in ("nonce", "uri"):
            if not params[name]:
                raise DigestError(f"Missing digest parameter {name}")

        algorithm = canonical_algorithm(params.get("algorithm"))
        if _HASHES[algorithm.removesuffix("-sess")] is None:
            raise DigestError("Unsupported digest algorithm")
        response = params["response"]
        if len(response) != _HEX_LENGTH[algorithm.removesuffix("-sess")] or not _HEX_RE.fullmatch(response):
            raise DigestError("Malformed digest response")

        qop: str | None = None
        nc: int | None = None
        nc_text: str | None = None
        cnonce: str | None = None
        if "qop" in params:
            # Tokens compare case-insensitively; the hash is then computed with the lower-case name.
            qop = params["qop"].lower()
            if qop not in _QOPS:
                raise DigestError("Unsupported digest qop")
            if "nc" not in params:
                raise DigestError("Missing digest parameter nc")
            if "cnonce" not in params:
                raise DigestError("Missing digest parameter cnonce")
            nc_text = params["nc"]
            if not _NC_RE.fullmatch(nc_text):
                raise DigestError("Malformed digest nc")
            nc = int(nc_text, 16)
            cnonce = params["cnonce"]
        elif algorithm.endswith("-sess"):
            # A session key needs the cnonce, which only exists with qop (RFC 2617 §3.2.2.2, §3.2.2).
            raise DigestError("Digest session algorithm without qop")

        fields = (params["username"], params["realm"], params["nonce"], params["uri"], cnonce, params.get("opaque"))
        for text in fields:
            if text is not None and not _encodable(text):
                raise DigestError("Malformed digest parameter")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=response.lower(),
            algorithm=algorithm,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            opaque=params.get("opaque"),
            nc_text=nc_text,
        )


def _encodable(text: str) -> bool:
    """Whether ``text`` has bytes to hash: only a lone surrogate outside ``surrogateescape``'s range
    (never produced by the SIP parser, but possible in a hand-built Credentials) has none."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def expected_response(creds: DigestResponse, ha1: str, method: str, body: bytes = b"") -> str:
    """The response a client knowing ``ha1`` sends for this request (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1).

    ``ha1`` is the base H(username:realm:password), stored or computed; the ``-sess`` step is applied
    here, so one stored HA1 serves both variants. ``body`` counts only for ``qop=auth-int``.
    """
    algorithm = creds.algorithm
    ha1 = ha1.lower()
    if algorithm.endswith("-sess"):
        if creds.cnonce is None:
            raise DigestError("Digest session algorithm without qop")
        ha1 = session_ha1(algorithm, ha1, creds.nonce, creds.cnonce)
    if creds.qop == "auth-int":
        ha2 = hash_hex(algorithm, _encode(f"{method}:{creds.uri}:") + hash_hex(algorithm, body).encode())
    else:
        ha2 = hash_hex(algorithm, f"{method}:{creds.uri}")
    if creds.qop is None:
        return hash_hex(algorithm, f"{ha1}:{creds.nonce}:{ha2}")
    nc_text = creds.nc_text if creds.nc_text is not None else f"{creds.nc or 0:08x}"
    return hash_hex(algorithm, f"{ha1}:{creds.nonce}:{nc_text}:{creds.cnonce}:{creds.qop}:{ha2}")


def response_matches(creds: DigestResponse, ha1: str, method: str, body: bytes = b"") -> bool:
    """Whether the client's response is :func:`expected_response`, compared in constant time so the
    time taken does not tell a forger how many leading hex digits were right."""
    expected = expected_response(creds, ha1, method, body)
    given = creds.response.lower()
    if not given.isascii():
        return False
    return hmac.compare_digest(expected, given)


def challenge_value(
    realm: str,
    nonce: str,
    *,
    algorithm: str = "MD5",
    qop: str = "auth",
    stale: bool = False,
    opaque: str | None = None,
) -> str:
    """A WWW-Authenticate / Proxy-Authenticate value (RFC 3261 §22.4, §25.1 digest-cln).

    ``qop`` is written even though RFC 2069 clients ignore it, and omitted only when it is ``""`` (the
    challenge then asks for the RFC 2069 response, as OpenSIPS's ``qop`` of 0 does). ``algorithm`` is
    always written, unquoted: some phones assume MD5 without it, and RFC 8760 §2.4 has the proxy send one
    challenge per algorithm. The arguments are ours, not a peer's, so a bad one is a :class:`ValueError`
    (a configuration error), not a 400. The realm may come from a request's From domain: CR, LF and NUL
    are refused so that no value can break out of its header line.
    """
    try:
        algorithm = canonical_algorithm(algorithm)
    except DigestError:
        raise ValueError(f"unsupported digest algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})") from None
    if _HASHES[base_algorithm(algorithm)] is None:
        raise ValueError(f"digest algorithm {algorithm} unavailable: this hashlib/OpenSSL build lacks it")
    qops = [q.strip(" \t") for q in qop.split(",")] if qop else []
    if any(q not in _QOPS for q in qops):
        raise ValueError(f"unsupported qop {qop!r}: give auth, auth-int, both comma-separated, or ''")
    for what, value in (("realm", realm), ("nonce", nonce), ("opaque", opaque or "")):
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"digest {what} contains CR, LF or NUL")
    parts = [f"Digest realm={quote(realm)}", f"nonce={quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={quote(opaque)}")
    if qops:
        parts.append(f"qop={quote(','.join(qops))}")
    parts.append(f"algorithm={algorithm}")
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)
