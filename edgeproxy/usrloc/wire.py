"""The location table on the cluster link (full sharing, :mod:`.replication`): a binding as a compact
JSON list, the messages that carry many AoRs (each under AMP's 64 KB), and the merge of a peer's
update with the rules of RFC 3261 §10.3 as OpenSIPS usrloc applies them (``get_ucontact``; reference
opensips-modules.md §6.4-6.5) -- the module docstring of :mod:`.replication` states them.
"""

from __future__ import annotations

import json
import math
from types import MappingProxyType
from typing import Any, Iterable, Iterator

from ..location import EMPTY_PARAMS, Binding
from ..location.binding import shared_methods, shared_string
from ..sip.endpoint import RELIABLE, Endpoint
from ..sip.errors import SipValueError
from ..sip.uri import SipURI, parse_uri

__all__ = ["MAX_PAYLOAD", "Removed", "encode_binding", "decode_binding", "merge", "pack", "withdrawn"]

#: Characters of JSON per message (AMP carries at most 65,535 bytes in a value; JSON here is ASCII).
MAX_PAYLOAD = 60_000

#: One removed contact: (contact URI, Call-ID, CSeq).
Removed = tuple[str, str, int]


_TRANSPORTS = frozenset(RELIABLE | {"UDP"})
_WS = frozenset({"WS", "WSS"})


def encode_binding(b: Binding, owner: str | None = None) -> list[Any]:
    """A binding on the cluster link: a JSON list, positional (about 200 bytes a contact; the SQL
    row's 18 named columns would be twice that and slower to read back). ``owner``: the node holding
    the connection of a connection-bound contact (15th item, absent for the others)."""
    r = b.received
    owner = b.owner or owner
    item = [str(b.uri), round(b.expires_at, 3), b.call_id, b.cseq,
            [r.transport, r.host, r.port] if r is not None else None,
            b.q, (1 if b.nat else 0) | (2 if b.sipping else 0), b.user_agent,
            list(b.path) if b.path else None, b.instance, b.reg_id,
            sorted(b.methods) if b.methods is not None else None,
            dict(b.contact_params) if b.contact_params else None, round(b.last_modified, 3)]
    if owner:
        item.append(owner)
    return item


def decode_binding(aor: str, item: list[Any], now: float, me: str | None = None) -> Binding | None:
    """The binding of :func:`encode_binding`'s list, or None when it has expired or must not be
    taken from a peer (connection-bound without an owner, or owned by ``me``, this node: that
    connection is gone). Raises ValueError/TypeError/IndexError when malformed.

    The receiving half of a bulk sync runs this 100,000 times in a row (issue 12: under 5 s), so the
    cheap refusals come first and :func:`~edgeproxy.usrloc.rows.connection_bound`'s rule is applied
    to the raw fields, before any object is built."""
    text, expires, call_id, cseq, rec, q, flags, ua, path, instance, reg_id, methods, params, lm = item[:14]
    expires_at = _finite(expires)
    if expires_at <= now:
        return None
    flags = int(flags)
    owner = str(item[14]) if len(item) > 14 and item[14] else None
    refuse = owner is None or owner == me  # a connection-bound contact is kept only for its live owner
    bound = False
    if rec is None:
        received = None
    else:
        transport = str(rec[0])
        if transport not in _TRANSPORTS:
            raise ValueError(f"transport {transport!r}")
        bound = transport in _WS or (transport != "UDP" and (bool(flags & 1) or reg_id is not None))
        if bound and refuse:
            return None  # connection-bound (rows.connection_bound)
        received = Endpoint(transport, str(rec[1]), int(rec[2]))
    uri = parse_uri(str(text))
    if not isinstance(uri, SipURI):
        raise ValueError("not a SIP URI")
    if not bound and uri.host_key.endswith(".invalid"):
        if refuse:
            return None
        bound = True
    if not bound:
        owner = None  # reachable from here: a plain shared contact
    return Binding(
        aor=aor, uri=uri, expires_at=expires_at, call_id=str(call_id), cseq=int(cseq), received=received,
        q=None if q is None else _finite(q),
        contact_params=MappingProxyType({str(k): None if v is None else str(v) for k, v in params.items()})
        if params else EMPTY_PARAMS,
        path=tuple(str(p) for p in path) if path else (), instance=str(instance) if instance else None,
        reg_id=None if reg_id is None else int(reg_id),
        methods=None if methods is None else shared_methods(str(m) for m in methods),
        user_agent=shared_string(str(ua)) if ua else None, nat=bool(flags & 1), sipping=bool(flags & 2),
        last_modified=_finite(lm), owner=owner)


def _finite(value: Any) -> float:
    """A number of a peer's JSON, which Python reads with NaN and Infinity: a NaN expiry never comes
    due (the expiry timer would fire at once for ever), an infinite one never expires."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _newer(incoming: Binding, local: Binding) -> bool:
    """Whether ``incoming`` replaces ``local`` (same contact URI): see :mod:`.replication`'s docstring."""
    if incoming.call_id == local.call_id:
        return incoming.cseq > local.cseq
    return (incoming.last_modified, incoming.call_id) > (local.last_modified, local.call_id)


def withdrawn(told: Binding, now: Binding | None) -> bool:
    """Whether peers must be told to remove ``told``, the contact as they were last sent it (``now``:
    the same contact URI now, if any): it is gone, or it went back to an older registration -- a
    write-through save withdrawn because its commit failed (RFC 3261 §10.3 step 7) -- which their
    :func:`merge` would refuse over ``told``."""
    return now is None or (now is not told and _newer(told, now))


def merge(local: Iterable[Binding], incoming: Iterable[Binding], removed: Iterable[Removed]) -> list[Binding] | None:
    """The AoR's bindings after a peer's update, or None when nothing changes."""
    by_uri = {b.uri: b for b in local}
    changed = False
    for uri_text, call_id, cseq in removed:
        try:
            uri = parse_uri(uri_text)
        except SipValueError:
            continue
        b = by_uri.get(uri)  # type: ignore[call-overload]
        if b is not None and b.call_id == call_id and b.cseq <= cseq:
            del by_uri[b.uri]
            changed = True
    for b in incoming:
        current = by_uri.get(b.uri)
        if current is None or _newer(b, current):
            by_uri[b.uri] = b
            changed = True
    return list(by_uri.values()) if changed else None


_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def pack(kind: str, entries: list[list[Any]]) -> Iterator[str]:
    """``entries`` as JSON messages of at most :data:`MAX_PAYLOAD` characters: encoded in one call
    (one C encoder run per message, not one per AoR), halved while too large; an entry too large for
    one message -- a single AoR with huge contacts -- goes alone."""
    if not entries:
        return
    text = f'{{"t":"{kind}","a":{_ENCODE(entries)}}}'
    if len(text) <= MAX_PAYLOAD or len(entries) == 1:
        yield text
        return
    half = len(entries) // 2
    yield from pack(kind, entries[:half])
    yield from pack(kind, entries[half:])
