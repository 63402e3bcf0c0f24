"""A :class:`~edgeproxy.location.Binding` as a row of OpenSIPS's ``location`` table and back.

The columns are OpenSIPS 3.x's (``scripts/mysql/usrloc-create.sql``, table version 1013; reference
opensips-modules.md §6.3), filled as usrloc fills them so that a table written by OpenSIPS loads
here and the other way round:

* ``username``/``domain`` -- the AoR (``domain`` NULL without ``use_domain``); ``contact`` the URI;
* ``received`` -- the REGISTER's source as ``sip:ip:port[;transport=x]`` (OpenSIPS
  ``fix_nated_register``; edgeproxy keeps it for every contact); ``path`` the Path values, comma
  separated; ``socket`` the listener it came in on, ``proto:ip:port``;
* ``expires`` -- absolute epoch seconds (0: permanent); ``q`` (-1 when the UA gave none, OpenSIPS's
  ``Q_UNSPECIFIED``); ``callid``, ``cseq``; ``last_modified`` as local ``YYYY-MM-DD HH:MM:SS``;
* ``cflags`` -- branch flags by name, ``NAT`` and ``SIPPING`` (OpenSIPS ``nat_bflag``, nathelper's
  ``sipping_bflag``); ``methods`` OpenSIPS's method bit mask (NULL: all); ``sip_instance``;
  ``user_agent``;
* ``kv_store`` -- JSON; edgeproxy keeps there what the table has no column for: the Contact's other
  parameters (``params``), the RFC 5626 ``reg_id`` and methods the bit mask cannot name.

:func:`binding_from_values` decides what may be revived after a restart: a contact reached over the
connection it registered on (WebSocket, ``.invalid`` hosts, outbound ``reg-id`` flows, TCP/TLS behind
NAT) is not -- that connection is gone; a UDP contact is (the same listener address sends to the same
``received``), and so is a TCP/TLS contact with a routable URI and no NAT flag (it is dialled).
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from ..location.binding import EMPTY_PARAMS, Binding, shared_methods, shared_string
from ..location.destination import uri_endpoint
from ..registrar.registrar import received_uri
from ..sip.endpoint import Endpoint, Flow
from ..sip.errors import SipValueError
from ..sip.uri import SipURI, parse_uri

__all__ = ["COLUMNS", "LOAD_COLUMNS", "ALL_METHODS", "methods_mask", "mask_methods", "binding_row", "fits",
           "binding_from_row", "binding_from_values", "split_aor", "PERMANENT", "connection_bound"]

#: The columns written, in this order (``contact_id`` is the table's own AUTO_INCREMENT key).
COLUMNS = ("username", "domain", "contact", "received", "path", "expires", "q", "callid", "cseq",
           "last_modified", "flags", "cflags", "user_agent", "socket", "methods", "sip_instance", "kv_store",
           "attr")

# OpenSIPS parser/msg_parser.h request_method bits; 0xffffffff is ALL_METHODS (no Allow header)
_METHOD_BITS = {"INVITE": 1, "CANCEL": 2, "ACK": 4, "BYE": 8, "INFO": 16, "OPTIONS": 32, "UPDATE": 64,
                "REGISTER": 128, "MESSAGE": 256, "SUBSCRIBE": 512, "NOTIFY": 1024, "PRACK": 2048,
                "REFER": 4096, "PUBLISH": 8192}
_METHOD_OTHER = 16384
ALL_METHODS = 0xFFFFFFFF
#: ``expires`` of a permanent contact (OpenSIPS writes 0) is read as this epoch time (2038).
PERMANENT = float(2**31 - 1)


def methods_mask(methods: Iterable[str] | None) -> int:
    """A contact's accepted methods as OpenSIPS's bit mask (ALL_METHODS when unknown)."""
    if methods is None:
        return ALL_METHODS
    mask = 0
    for m in methods:
        mask |= _METHOD_BITS.get(m.upper(), _METHOD_OTHER)
    return mask


def mask_methods(mask: int | None) -> frozenset[str] | None:
    """The methods of an OpenSIPS bit mask (None: every method)."""
    if mask is None or mask < 0 or mask & 0xFFFFFFFF == ALL_METHODS:
        return None
    return shared_methods(name for name, bit in _METHOD_BITS.items() if mask & bit)


def split_aor(aor: str, use_domain: bool) -> tuple[str, str | None]:
    """``(username, domain)`` columns of an AoR key (domain None without ``use_domain``), as
    :func:`binding_row` writes them (:func:`_text`: an AoR percent-decoded from ``%FF`` holds a lone
    surrogate, which no driver can send -- its DELETE would fail every flush)."""
    if use_domain and "@" in aor:
        user, _, domain = aor.rpartition("@")
        return _text(user), _text(domain)
    return _text(aor), None


_LAST_SECOND: list[Any] = [None, ""]  # rows of one flush mostly share their second: format it once


def _datetime(when: float) -> str:
    second = int(when)
    last = _LAST_SECOND
    if last[0] != second:
        last[0], last[1] = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
    return str(last[1])


def _text(value: str) -> str:
    """``value`` as valid UTF-8 text: the SIP parser keeps undecodable bytes as lone surrogates
    (``surrogateescape``), which neither database driver can encode -- one hostile User-Agent would
    fail every flush. They become U+FFFD; ASCII (nearly every value) passes untouched."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


_LISTENERS: dict[Endpoint, str] = {}  # the socket column of the node's few listeners, formatted once
_MASKS: dict[frozenset[str], int] = {}  # method sets are shared objects (shared_methods): a handful


def binding_row(b: Binding, use_domain: bool) -> tuple[Any, ...]:
    """The row of ``b``, in :data:`COLUMNS` order.

    It runs once per changed contact at every flush (in the reactor, a slice of AoRs at a time), so
    the common contact -- no extra parameters, a known Allow set, a listener seen
    before -- costs a few attribute reads and one tuple (issue 12: the flush is write-back's cost)."""
    aor = b.aor
    if use_domain and "@" in aor:
        username, _, domain = aor.rpartition("@")
    else:
        username, domain = aor, None
    methods = b.methods
    if methods is None:
        mask = None
    else:
        mask = _MASKS.get(methods)
        if mask is None:
            mask = methods_mask(methods)
            if len(_MASKS) < 256:
                _MASKS[methods] = mask
        if mask == ALL_METHODS:
            mask = None
    kv_store = None
    if b.contact_params or b.reg_id is not None or (mask is not None and mask & _METHOD_OTHER):
        extra: dict[str, Any] = {}
        if b.contact_params:
            extra["params"] = dict(b.contact_params)
        if b.reg_id is not None:
            extra["reg_id"] = b.reg_id
        if mask is not None and mask & _METHOD_OTHER:
            extra["methods"] = sorted(methods or ())
        kv_store = json.dumps(extra, separators=(",", ":"))
    flow = b.flow
    if flow is None:
        socket = None
    else:
        local = flow.local
        socket = _LISTENERS.get(local)
        if socket is None:
            socket = str(local)
            if len(_LISTENERS) < 256:
                _LISTENERS[local] = socket
    received = b.received
    path = b.path
    q = b.q
    expires = b.expires_at
    instance = b.instance
    return (
        _text(username), None if domain is None else _text(domain), _text(str(b.uri)),
        received_uri(received) if received is not None else None,
        _text(",".join(path)) if path else None,
        0 if expires >= PERMANENT else int(math.ceil(expires)),
        -1.0 if q is None else q,
        _text(b.call_id), b.cseq, _datetime(b.last_modified), 0,
        ("NAT,SIPPING" if b.sipping else "NAT") if b.nat else ("SIPPING" if b.sipping else None),
        _text(b.user_agent or "")[:_UA_WIDTH],
        socket,
        mask,
        None if instance is None else _text(instance),
        kv_store,
        None,
    )


#: Characters of ``user_agent`` kept in the row: its CHAR(255) column (OpenSIPS registrar keeps at
#: most ``UA_MAX_SIZE``, 255, of a User-Agent).
_UA_WIDTH = 255


def fits(row: tuple[Any, ...]) -> bool:
    """Whether :func:`binding_row`'s ``row`` fits OpenSIPS's columns -- ``username``/``domain``
    CHAR(64), ``contact``/``path``/``callid``/``sip_instance`` CHAR(255), the text a REGISTER fills
    and a row cannot cut. MySQL in strict mode (the default) refuses a longer value ("Data too
    long") -- the whole transaction with it; OpenSIPS's registrar refuses such a REGISTER
    (``R_AOR_LEN``, ``R_CONTACT_LEN``, ``R_CALLID_LEN``). One expression: it runs for every row
    of every flush."""
    return (len(row[0]) <= 64 and len(row[2]) <= 255 and len(row[7]) <= 255
            and (row[1] is None or len(row[1]) <= 64) and (row[4] is None or len(row[4]) <= 255)
            and (row[15] is None or len(row[15]) <= 255))


_SOCKETS: dict[str, Endpoint | None] = {}  # the few listeners of a table, parsed once


def _endpoint_of_uri(text: str | None) -> Endpoint | None:
    """The address of a ``received`` URI; ``sip:ip:port`` (what is written) without the URI parser."""
    if not text:
        return None
    if text.startswith("sip:") and ";" not in text and "@" not in text and "[" not in text:
        host, _, port = text[4:].rpartition(":")
        if host and port.isdigit():
            return Endpoint("UDP", host, int(port))
    try:
        uri = parse_uri(text)
    except SipValueError:
        return None
    return uri_endpoint(uri) if isinstance(uri, SipURI) else None


def _socket(text: str | None) -> Endpoint | None:
    """``proto:ip:port`` (OpenSIPS's socket column) as an endpoint."""
    if not text or ":" not in text:
        return None
    try:
        return _SOCKETS[text]
    except KeyError:
        pass
    proto, _, hostport = text.strip().partition(":")
    host, _, port = hostport.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        found: Endpoint | None = Endpoint(proto.upper(), host, int(port))
    except ValueError:
        found = None
    if len(_SOCKETS) < 256:
        _SOCKETS[text] = found
    return found


_LAST_EPOCH: list[Any] = [None, 0.0]  # rows written by one flush share their last_modified: parse it once


def _epoch(value: Any) -> float:
    """``last_modified`` as epoch seconds: a number (MySQL's ``UNIX_TIMESTAMP``), a ``datetime``, or
    SQLite's local ``YYYY-MM-DD HH:MM:SS`` text; 0 when unreadable."""
    if value is None:
        return 0.0
    if isinstance(value, str):
        last = _LAST_EPOCH
        if last[0] == value:
            return float(last[1])
        try:
            seconds = datetime.fromisoformat(value[:19]).timestamp() if value else 0.0
        except ValueError:
            seconds = 0.0
        last[0], last[1] = value, seconds
        return seconds
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


#: The columns a load reads, in the order :func:`binding_from_values` takes them.
LOAD_COLUMNS = ("username", "domain", "contact", "received", "path", "expires", "q", "callid", "cseq",
                "last_modified", "cflags", "user_agent", "socket", "methods", "sip_instance", "kv_store")


def binding_from_row(row: Mapping[str, Any], now: float, use_domain: bool) -> Binding | None:
    """:func:`binding_from_values` of a row given as a mapping of column names."""
    return binding_from_values(tuple(row.get(c) for c in LOAD_COLUMNS), now, use_domain)


def binding_from_values(values: Sequence[Any], now: float, use_domain: bool) -> Binding | None:
    """The binding a row (its :data:`LOAD_COLUMNS`) stands for, or None when it has expired, cannot be
    read, or is bound to a connection that died with the previous process (see the module docstring).

    A restarted node runs this for every row before it answers anything (10,000 contacts: issue 12's
    2 s), so the usual row -- no flags, no ``kv_store``, ``received`` written by edgeproxy -- takes the
    short ways."""
    (username, domain, contact, received_text, path, expires, q, callid, cseq, modified, cflags_text, user_agent,
     socket, mask, instance, kv_store) = values
    expires = int(expires or 0)
    expires_at = PERMANENT if expires == 0 else float(expires)
    if expires_at <= now:
        return None
    try:
        uri = parse_uri(str(contact))
    except SipValueError:
        return None
    if not isinstance(uri, SipURI):
        return None
    username = str(username or "")
    aor = f"{username}@{domain}" if use_domain and domain else username
    if not aor:
        return None
    extra: dict[str, Any] = {}
    if kv_store:
        try:
            extra = json.loads(kv_store)
        except (ValueError, TypeError):
            extra = {}
        if not isinstance(extra, dict):
            extra = {}
    if cflags_text:
        cflags = {f.strip().upper() for f in str(cflags_text).replace(" ", ",").split(",") if f.strip()}
        nat, sipping = "NAT" in cflags, "SIPPING" in cflags
    else:
        nat = sipping = False
    received = _endpoint_of_uri(received_text)
    local = _socket(socket)
    reg_id = extra.get("reg_id") if extra else None
    reg_id = reg_id if isinstance(reg_id, int) else None
    transport = received.transport if received is not None else (local.transport if local is not None else "UDP")
    if transport in ("WS", "WSS") or uri.host_key.endswith(".invalid"):
        return None  # a browser: reachable only over the connection it opened
    flow = None
    if transport == "UDP":
        if local is not None and received is not None:
            flow = Flow(local, received)  # the same listener sends to the same NAT binding
    elif nat or reg_id is not None:
        return None  # behind NAT or an outbound flow: only its (closed) connection reaches it
    methods = mask_methods(mask)
    contact_params = EMPTY_PARAMS
    if extra:
        more = extra.get("methods")
        if isinstance(more, list):
            methods = shared_methods(str(m) for m in more)
        params = extra.get("params")
        if isinstance(params, dict) and params:
            contact_params = MappingProxyType({str(k): (None if v is None else str(v)) for k, v in params.items()})
    path = str(path or "")
    return Binding(
        aor=aor, uri=uri, expires_at=expires_at, call_id=str(callid or ""), cseq=int(cseq or 0), received=received,
        flow=flow, q=None if q is None or float(q) < 0 else round(float(q), 3), contact_params=contact_params,
        path=tuple(p.strip() for p in _split_path(path)) if path else (), instance=instance or None,
        reg_id=reg_id, methods=methods, user_agent=shared_string(user_agent or None), nat=nat, sipping=sipping,
        last_modified=_epoch(modified),
    )


def connection_bound(b: Binding) -> bool:
    """Whether ``b`` can only be reached over the connection it registered on (the rule
    :func:`binding_from_row` applies to a row): WebSocket, ``.invalid`` hosts, and TCP/TLS behind NAT
    or on an outbound (``reg-id``) flow."""
    transport = b.received.transport if b.received is not None else (b.flow.transport if b.flow else "UDP")
    if transport in ("WS", "WSS") or b.uri.host_key.endswith(".invalid"):
        return True
    return transport != "UDP" and (b.nat or b.reg_id is not None)


def _split_path(path: str) -> list[str]:
    """Path values joined with commas, split again (commas inside ``<...>`` or quotes stay)."""
    out, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(path):
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "<":
            depth += 1
        elif not quoted and c == ">":
            depth = max(0, depth - 1)
        elif c == "," and not quoted and depth == 0:
            out.append(path[start:i])
            start = i + 1
    out.append(path[start:])
    return [p for p in out if p.strip()]
