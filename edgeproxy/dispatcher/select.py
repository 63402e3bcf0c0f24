"""``ds_select_dst``'s choice, as OpenSIPS's ``dispatch.c: ds_select_dst()`` makes it. Pure.

Algorithms (OpenSIPS numbering):

==  ==========================================================================================
0   hash over the Call-ID
1   hash over the From URI (user, and host with a non-default port; flag ``u``: user only)
2   hash over the To URI (same keys)
3   hash over the Request-URI (same keys)
4   round robin, weighted: an entry is taken ``weight`` times in a row before the cursor moves on
5   hash over the authentication username (Proxy-Authorization, else Authorization); round robin
    without credentials
6   random, weighted
8   the first entry (highest priority)
9   OpenSIPS's ``pvar_algo_pattern`` ordering; without a pattern (there is none here) as 8
==  ==========================================================================================

Hash algorithms take the entry whose cumulative-weight bucket holds ``hash % total_weight`` (``hash %
size`` when every weight is 0), then, if it is not active, pick again among the active entries only;
the others step to the next active entry. The hash is OpenSIPS's ``ds_get_hash``, bit for bit, so a
set fed the same keys chooses as OpenSIPS does.

Flags (``ds_fixups.c``; any case, blanks ignored; anything else is an error): ``f`` failover (the
other active destinations follow the chosen one, for ``ds_next_dst``), ``u`` hash the URI user only,
``d`` the last entry is a default used only when no other is active, ``a`` append to the failover
list of an earlier call instead of replacing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..sip.uri import SipURI
from .table import Destination, DestinationSet

__all__ = ["ALGORITHMS", "HASH_ALGORITHMS", "Flags", "Selection", "ds_hash", "uri_hash_keys", "select",
           "parse_flags"]

ALGORITHMS = {0: "hash Call-ID", 1: "hash From URI", 2: "hash To URI", 3: "hash Request-URI",
              4: "round robin", 5: "hash auth username", 6: "random", 8: "first entry", 9: "pattern (first)"}
HASH_ALGORITHMS = frozenset({0, 1, 2, 3, 5, 6})

_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class Flags:
    failover: bool = False  # f
    user_only: bool = False  # u
    use_default: bool = False  # d
    append: bool = False  # a


def parse_flags(text: str) -> Flags:
    """``"f"``, ``"fU"``, ``"f d"``...: OpenSIPS's four letters; ValueError for any other."""
    letters = "".join(str(text or "").split()).lower()
    bad = set(letters) - set("fuda")
    if bad:
        raise ValueError(f"ds_select_dst: unknown flag(s) {''.join(sorted(bad))!r} (known: f, u, d, a)")
    return Flags("f" in letters, "u" in letters, "d" in letters, "a" in letters)


def _signed(b: int) -> int:
    return b - 256 if b > 127 else b  # C char is signed on x86


def _word_hash(key: bytes) -> int:
    h = 0
    n = len(key)
    p = 0
    while p + 4 <= n:
        v = ((_signed(key[p]) << 24) + (_signed(key[p + 1]) << 16) + (_signed(key[p + 2]) << 8)
             + _signed(key[p + 3])) & _MASK
        h = (h + (v ^ (v >> 3))) & _MASK
        p += 4
    v = 0
    while p < n:
        v = ((v << 8) + _signed(key[p])) & _MASK
        p += 1
    return (h + (v ^ (v >> 3))) & _MASK


def ds_hash(key1: str | bytes, key2: str | bytes | None = None) -> int:
    """OpenSIPS's ``ds_get_hash(x, y)``: 4-byte big-endian words, each ``w ^ (w >> 3)`` summed (the
    tail bytes as one more word), over both keys, then mixed; never 0."""
    h = 0
    for key in (key1, key2):
        if key is None:
            continue
        raw = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
        h = (h + _word_hash(raw)) & _MASK
    h = ((h + (h >> 11)) + ((h >> 13) + (h >> 23))) & _MASK
    return h or 1


def uri_hash_keys(uri: SipURI, user_only: bool) -> tuple[str, str | None]:
    """``get_uri_hash_keys``: the user, and the host with ``:port`` only when the URI gives a port other
    than its transport's default (none with ``u``)."""
    user = uri.user or ""
    if user_only:
        return user, None
    host = uri.host
    if uri.port is not None:
        default = 5061 if uri.secure or uri.transport == "tls" else 5060
        if uri.port != default:
            host = f"{host}:{uri.port}"
    return user, host


@dataclass
class Selection:
    """A request's failover list (OpenSIPS's ``dst_avp``/``grp_avp``/``attrs_avp`` stack): the
    destination tried now first, then those ``ds_next_dst`` moves to, in order."""

    setid: int
    destinations: list[Destination] = field(default_factory=list)

    @property
    def current(self) -> Destination | None:
        return self.destinations[0] if self.destinations else None


def _bucket(entries: list[Destination], value: int) -> int | None:
    """The index whose cumulative-weight bucket holds ``value % total`` (None: every weight is 0)."""
    total = sum(d.weight for d in entries)
    if total <= 0:
        return None
    point = value % total
    for i, d in enumerate(entries):
        if point < d.weight:
            return i
        point -= d.weight
    return len(entries) - 1  # pragma: no cover - the sum covers every point


def _hash_pick(entries: list[Destination], value: int) -> int:
    i = _bucket(entries, value)
    return i if i is not None else value % len(entries)


def select(dset: DestinationSet, alg: int, flags: Flags, hash_value: int | None,
           rand: Callable[[int], int], max_results: int = 1000) -> list[Destination] | None:
    """The chosen destination followed (with ``f``) by the other usable ones, or None when nothing
    can be chosen (empty set, nothing active, no hash input). Updates the set's round-robin cursor
    and the chosen destination's ``first_hit_counter`` is the caller's to count (when ``$du`` is set).

    ``hash_value`` is the request's hash for algorithms 0-3 and 5 (None: its input is missing; for 5,
    no credentials, which falls back to round robin); ``rand(n)`` returns an integer in ``[0, n)``.
    """
    entries = dset.destinations
    if not entries:
        return None
    size = len(entries) - 1 if flags.use_default and len(entries) > 1 else len(entries)
    default = entries[-1] if size < len(entries) else None
    pool = entries[:size]
    hashed = alg in HASH_ALGORITHMS
    if alg == 5 and hash_value is None:
        hashed = False  # no credentials: "round robin" that re-takes the last index (dispatch.c)
        index = dset.last % size
    elif alg == 6:
        total = sum(d.weight for d in pool)
        hash_value = rand(total if total > 0 else size)
        index = _hash_pick(pool, hash_value)
    elif hashed:
        if hash_value is None:
            return None
        index = _hash_pick(pool, hash_value)
    elif alg == 4:
        index = dset.last % size
        if dset.rr_count >= max(pool[index].weight, 1):
            index = (index + 1) % size
            dset.rr_count = 0
    else:  # 8, 9 (no pattern) and any other number: the first entry
        index = 0
    found: Destination | None = pool[index]
    if not pool[index].active:
        found = None
        if hashed:
            active = [d for d in pool if d.active]
            if active:
                assert hash_value is not None
                found = active[_hash_pick(active, hash_value)]
        else:
            for step in range(1, size):
                candidate = pool[(index + step) % size]
                if candidate.active:
                    found = candidate
                    break
        if found is None:
            if default is None or not default.active:
                return None
            found = default
    assert found is not None
    chosen = found
    if chosen is not default:
        new_index = pool.index(chosen)
        if alg == 4:
            if new_index != index:
                dset.rr_count = 0
            dset.rr_count += 1
        dset.last = new_index
    if not flags.failover:
        return [chosen]
    out = [chosen]
    if chosen is not default:
        start = pool.index(chosen)
        for step in range(1, size):
            d = pool[(start + step) % size]
            if d.active and len(out) < max(max_results, 1):
                out.append(d)
    if default is not None and default is not chosen and default.active:
        out.append(default)
    return out
