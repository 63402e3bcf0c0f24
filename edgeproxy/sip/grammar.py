"""The SIP grammar of RFC 3261 §25, as named regular expressions.

Like h11's ``_abnf.py``: one place for the character classes and productions, so the parsers in
:mod:`edgeproxy.sip.uri`, :mod:`edgeproxy.sip.values` and :mod:`edgeproxy.sip.parser` read as the ABNF
they implement. Input has already been unfolded (§7.3.1), so LWS here is plain SP/HTAB.
"""

from __future__ import annotations

import re

from .address import ip_literal

# §25.1 token; non-ASCII is tolerated in tokens used as display names (phones send UTF-8 unquoted).
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = rf"[{TOKEN_CHARS}]+"
TOKEN_RE = re.compile(TOKEN)
QUOTED_STRING = r'"(?:[^"\\]|\\.)*"'
LWS = r"[ \t]*"

# §19.1.1 / §25.1 URI pieces. ``user`` includes user-unreserved (";" "?" "/" ...), so the userinfo is
# found by the one "@" a SIP URI may contain unescaped.
ESCAPED_OK = re.compile(r"%(?![0-9A-Fa-f]{2})")  # search() finds a bad escape
USER_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+")
PASSWORD_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,%]*")
HOSTPORT_RE = re.compile(
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?)(?::([0-9]{1,5}))?"
)
PARAMCHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+")
HNVCHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%]*")
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
OPAQUE_RE = re.compile(r"[^\s<>\"]+")
TEL_NUMBER_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW]+")

# Generic header parameters (§25.1 generic-param): name [ "=" ( token / host / quoted-string ) ].
# ":" "[" "]" "@" "/" "?" are accepted in values because real peers send IPv6 received= without
# brackets and URNs unquoted.
PARAM_RE = re.compile(
    rf"{LWS};{LWS}({TOKEN})(?:{LWS}={LWS}({QUOTED_STRING}|[{TOKEN_CHARS}:\[\]@/?&=$]+))?"
)

# PARAM_RE repeated, for parameters written without LWS or quotes: the fast path of scan_params.
SIMPLE_PARAMS_RE = re.compile(rf"(?:;[{TOKEN_CHARS}]+(?:=[{TOKEN_CHARS}:\[\]@/?&=$]+)?)*")

# RFC 3326 §2 Reason: reason-value *(COMMA reason-value), reason-value = protocol *(SEMI reason-params),
# reason-params = "cause" EQUAL 1*DIGIT / "text" EQUAL quoted-string / generic-param: one whole line.
_REASON_PARAM = (rf"(?:cause{LWS}={LWS}[0-9]+|text{LWS}={LWS}{QUOTED_STRING}"
                 rf"|(?!(?:cause|text)\b){TOKEN}(?:{LWS}={LWS}(?:{QUOTED_STRING}|{TOKEN}))?)")
_REASON_VALUE = rf"{LWS}{TOKEN}(?:{LWS};{LWS}{_REASON_PARAM})*{LWS}"
REASON_RE = re.compile(rf"{_REASON_VALUE}(?:,{_REASON_VALUE})*", re.IGNORECASE)

# §20.42 Via: sent-protocol LWS sent-by *( SEMI via-params )
# The protocol name is case-insensitive; spelled out instead of re.I, which slows every class.
VIA_RE = re.compile(
    rf"{LWS}[sS][iI][pP]{LWS}/{LWS}2\.0{LWS}/{LWS}({TOKEN}){LWS}[ \t]"
    rf"{LWS}(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?)(?:{LWS}:{LWS}([0-9]{{1,5}}))?"
)

# §25.1 name-addr = [ display-name ] LAQUOT addr-spec RAQUOT. Display-name tokens are written as "not a
# separator" so UTF-8 names sent unquoted (common in the field) are accepted.
_DISPLAY_TOKEN = r'[^\x00-\x20()<>@,;:\\"/\[\]?={}\x7f]+'
NAME_ADDR_RE = re.compile(
    rf"{LWS}(?:({QUOTED_STRING})|({_DISPLAY_TOKEN}(?:[ \t]+{_DISPLAY_TOKEN})*))?{LWS}<([^<>\s]*)>"
)
# addr-spec without brackets: no ";" "," "?" may appear in it (§20, the paragraph on Contact/From/To).
ADDR_SPEC_RE = re.compile(rf"{LWS}([^\s;,<>\"?]+)")

CSEQ_RE = re.compile(rf"{LWS}([0-9]+)[ \t]+({TOKEN}){LWS}")
DIGITS_RE = re.compile(r"[0-9]+")
QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
STATUS_LINE_RE = re.compile(r"SIP/2\.0 ([1-6][0-9]{2}) (.*)")
VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+")
FOLD_RE = re.compile(r"[ \t]*\r?\n[ \t]+")

# §7.3.3 compact forms and their full names (RFC 3261 and the extensions that registered one).
COMPACT_FORMS: dict[str, str] = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}


def valid_ipv6_reference(host: str) -> bool:
    """Whether ``[...]`` holds an IPv6 address (§25.1 IPv6reference; RFC 5118). Only called for hosts
    that start with ``[``, so the common path never pays for it."""
    return ip_literal(host) is not None  # in brackets, ip_literal takes IPv6 only


def small_int(text: str, maximum: int) -> int | None:
    """``1*DIGIT`` as an int when it is at most ``maximum``, else None. Leading zeros are allowed
    (RFC 4475 §3.1.1.1 sends ``Max-Forwards: 0068``); the length is checked before ``int()`` so a
    peer cannot make it convert (or refuse, past 4300 digits) a huge number."""
    if not text.isdigit() or not text.isascii():
        return None
    if len(text) > 10:
        text = text.lstrip("0") or "0"
        if len(text) > 10:
            return None
    value = int(text)
    return value if value <= maximum else None


_CANONICAL: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """The lower-case full name of a header, so ``v``, ``VIA`` and ``Via`` are one key (§7.3.1, §7.3.3).

    Called with the names written in our own code on every header access, so the answers are
    remembered (up to a bound, in case a caller passes names taken from the network)."""
    known = _CANONICAL.get(name)
    if known is not None:
        return known
    lowered = name.lower()
    key = COMPACT_FORMS.get(lowered, lowered)
    if len(_CANONICAL) < 1024:
        _CANONICAL[name] = key
    return key


def unquote(value: str) -> str:
    """Remove the quotes and backslash-escapes of a quoted-string (§25.1 quoted-pair)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if "\\" in inner:
            return re.sub(r"\\(.)", r"\1", inner)
        return inner
    return value


def quote(value: str) -> str:
    """Make a quoted-string of ``value``, escaping ``"`` and ``\\``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_commas(value: str) -> list[str]:
    """Split a header line into its comma-separated values (§7.3.1), honouring quotes and ``<...>``.

    Empty values are kept so the caller can reject ``Via: a,,b`` instead of silently mending it.
    """
    if "," not in value:
        return [value]
    if '"' not in value and "<" not in value:
        return [p.strip(" \t") for p in value.split(",")]
    parts: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    escape = False
    for i, ch in enumerate(value):
        if escape:
            escape = False
        elif in_quote:
            if ch == "\\":
                escape = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
    parts.append(value[start:].strip(" \t"))
    return parts
