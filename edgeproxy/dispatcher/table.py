"""Destination sets of OpenSIPS's ``dispatcher`` module: the rows, their state, and loading them.

A row of OpenSIPS's ``dispatcher`` table (``scripts/mysql/dispatcher-create.sql``, version 9: ``id,
setid, destination, socket, state, probe_mode, weight, priority, attrs, description``) -- or a
``[[dispatcher.destinations]]`` table of the configuration, which has the same keys -- becomes a
:class:`Destination`; :func:`build_table` groups them into :class:`DestinationSet` s ordered as
OpenSIPS orders them (``dispatch.c: reindex_dests()``: priority descending, equal priorities in load
order). A row that cannot be used (no set id, an empty or malformed URI, a bad number) is reported as
one :class:`RowError` and skipped; the rest loads.

State is OpenSIPS's two bits (``dispatch.c: _ds_set_state()``): ``INACTIVE`` (administratively off,
never probed) and ``PROBING`` (failed probes reached ``ds_probing_threshold``); "active" is neither,
and only active destinations are selected. :meth:`Destination.mark` applies ``ds_mark_dst`` /
``ds_set_state``'s letters with OpenSIPS's rules, including its quirk that ``p`` on an inactive
destination makes it active. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..sip.address import ip_literal
from ..sip.errors import SipValueError
from ..sip.uri import SipURI, parse_uri

__all__ = ["Destination", "DestinationSet", "DispatcherTable", "RowError", "INACTIVE", "PROBING",
           "COLUMNS", "destination_from_row", "build_table", "parse_state_letter"]

INACTIVE = 1  # OpenSIPS DS_INACTIVE_DST
PROBING = 2  # OpenSIPS DS_PROBING_DST

#: OpenSIPS's column names (the table and the configuration's rows use the same).
COLUMNS = ("setid", "destination", "socket", "state", "probe_mode", "weight", "priority", "attrs",
           "description")

_MAX_URI = 192  # CHAR(192) in OpenSIPS's schema: a longer destination cannot come from its table


class RowError(ValueError):
    """A row that cannot be used; the message names it and says why, in one line."""


def parse_state_letter(state: str | int) -> str:
    """``ds_mark_dst`` / ``ds_set_state``'s state: ``i``/``I``/``0`` inactive, ``a``/``A``/``1``
    active, ``p``/``P``/``2`` probing -> ``"i"``, ``"a"`` or ``"p"``; else ValueError."""
    text = str(state).strip()
    letter = {"i": "i", "0": "i", "a": "a", "1": "a", "p": "p", "2": "p"}.get(text.lower()) if len(text) == 1 else None
    if letter is None:
        raise ValueError(f"dispatcher state must be one of a/i/p (1/0/2), got {state!r}")
    return letter


class Destination:
    """One destination of a set (an OpenSIPS ``ds_dest_t``).

    ``uri`` is the row's text (what MI commands and state changes match, case-insensitively); ``dst_uri``
    is it without user, password and headers, what ``ds_select_dst`` puts in ``$du``. ``addresses``
    are the IP literals it stands for (its host when it is one; names are resolved by the service),
    ``port`` its port (0: none given, which ``ds_is_in_list`` takes as any).
    """

    __slots__ = ("setid", "uri", "dst_uri", "host", "port", "socket", "flags", "probe_mode", "weight",
                 "priority", "attrs", "description", "failure_count", "first_hit_counter", "addresses")

    def __init__(self, setid: int, uri: str, dst_uri: SipURI, *, socket: str = "", flags: int = 0,
                 probe_mode: int = 0, weight: int = 1, priority: int = 0, attrs: str = "",
                 description: str = "") -> None:
        self.setid = setid
        self.uri = uri
        self.dst_uri = dst_uri
        self.host = dst_uri.host_key
        self.port = dst_uri.port or 0
        self.socket = socket
        self.flags = flags
        self.probe_mode = probe_mode
        self.weight = weight
        self.priority = priority
        self.attrs = attrs
        self.description = description
        self.failure_count = 0
        self.first_hit_counter = 0
        literal = ip_literal(self.host)
        self.addresses: tuple[str, ...] = (literal[1],) if literal is not None else ()

    @property
    def active(self) -> bool:
        return not self.flags

    @property
    def state_name(self) -> str:
        """``Active``, ``Inactive`` or ``Probing`` as ``ds_list`` prints it (both bits: Inactive)."""
        if self.flags & INACTIVE:
            return "Inactive"
        return "Probing" if self.flags & PROBING else "Active"

    @property
    def is_name(self) -> bool:
        """The host is a DNS name (resolved by the service), not an IP literal."""
        return ip_literal(self.host) is None

    def mark(self, letter: str, threshold: int) -> bool:
        """Apply a state letter (``a``/``i``/``p``) with OpenSIPS's rules; True when a bit changed.

        ``p`` counts a failure and sets PROBING only when ``threshold`` failures are reached; on an
        INACTIVE destination it clears INACTIVE (making it active) -- OpenSIPS's quirk, kept so that
        scripts and MI calls behave as they did there."""
        before = self.flags
        if letter == "i":
            self.flags = INACTIVE
        elif letter == "a":
            self.flags = 0
            self.failure_count = 0
        elif letter == "p":
            if not self.flags & INACTIVE:
                self.failure_count = min(self.failure_count + 1, threshold)
                if self.failure_count >= threshold:
                    self.flags |= PROBING
            self.flags &= ~INACTIVE
        else:
            raise ValueError(f"unknown dispatcher state {letter!r}")
        return self.flags != before

    def __repr__(self) -> str:
        return f"<Destination set {self.setid} {self.uri} {self.state_name} w={self.weight} p={self.priority}>"


@dataclass
class DestinationSet:
    """The destinations of one set id, in selection order, and the round-robin cursor of algorithm 4
    (the index last chosen and how many times in a row)."""

    setid: int
    destinations: list[Destination] = field(default_factory=list)
    last: int = 0
    rr_count: int = 0

    def find(self, uri: str) -> Destination | None:
        """The destination whose row URI is ``uri`` (case-insensitively, as OpenSIPS matches)."""
        wanted = uri.strip().lower()
        return next((d for d in self.destinations if d.uri.lower() == wanted), None)


class DispatcherTable:
    """Every set, by id (OpenSIPS's one ``default`` partition)."""

    def __init__(self, sets: Mapping[int, DestinationSet] | None = None) -> None:
        self.sets: dict[int, DestinationSet] = dict(sets or {})

    def __len__(self) -> int:
        return sum(len(s.destinations) for s in self.sets.values())

    def get(self, setid: int) -> DestinationSet | None:
        return self.sets.get(setid)

    def destinations(self) -> Iterable[Destination]:
        for s in self.sets.values():
            yield from s.destinations

    def find(self, setid: int, uri: str) -> Destination | None:
        s = self.sets.get(setid)
        return s.find(uri) if s is not None else None

    def inherit(self, old: "DispatcherTable") -> None:
        """``ds_reload`` with ``inherit_state``: a destination with the same set id and URI keeps its
        runtime state (bits, failure count, hit counter) and the set its round-robin cursor."""
        for setid, dset in self.sets.items():
            previous = old.sets.get(setid)
            if previous is None:
                continue
            if previous.last < len(dset.destinations):
                dset.last, dset.rr_count = previous.last, previous.rr_count
            for d in dset.destinations:
                was = previous.find(d.uri)
                if was is not None:
                    d.flags, d.failure_count, d.first_hit_counter = was.flags, was.failure_count, was.first_hit_counter


def _int(row: Mapping[str, Any], key: str, default: int, minimum: int | None = None) -> int:
    value = row.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RowError(f"{key} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise RowError(f"{key} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise RowError(f"{key} must be >= {minimum}, got {number}")
    return number


def _weight(value: Any) -> int:
    """OpenSIPS's weight column is CHAR(64): an integer, or the leading digits of a string (``"abc"``
    is 0; an ``fs://`` URL for FreeSWITCH-reported weights is not supported here: 1); unsigned 16 bits."""
    if value is None or value == "":
        return 1
    if isinstance(value, bool):
        raise RowError(f"weight must be an integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("fs://"):
            return 1
        digits = ""
        for c in text:
            if not c.isdigit():
                break
            digits += c
        number = int(digits) if digits else 0
    else:
        raise RowError(f"weight must be an integer, got {value!r}")
    if number < 0:
        raise RowError(f"weight must be >= 0, got {number}")
    return min(number, 0xFFFF)


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"{key} must be a string, got {value!r}")
    return value


def destination_from_row(row: Mapping[str, Any], persistent_state: bool = True) -> Destination:
    """A :class:`Destination` from a table row or a configuration table; :class:`RowError` when the row
    cannot be used (``setid`` missing, ``destination`` empty or not a ``sip:``/``sips:`` URI, ...).
    ``state`` is read only with ``persistent_state`` (OpenSIPS's parameter), else it starts active."""
    if row.get("setid") is None:
        raise RowError("no setid")
    setid = _int(row, "setid", 0)
    uri = _text(row, "destination").strip()
    if not uri:
        raise RowError("empty destination")
    if len(uri) > _MAX_URI:
        raise RowError(f"destination longer than {_MAX_URI} characters")
    try:
        parsed = parse_uri(uri)
    except SipValueError as exc:
        raise RowError(f"destination {uri!r} is not a SIP URI: {exc.reason}") from None
    if not isinstance(parsed, SipURI):
        raise RowError(f"destination {uri!r} is not a sip: or sips: URI")
    state = _int(row, "state", 0, 0) if persistent_state else 0
    if state > 3:
        raise RowError(f"state must be 0 (active), 1 (inactive) or 2 (probing), got {state}")
    probe_mode = _int(row, "probe_mode", 0, 0)
    if probe_mode > 1:
        raise RowError(f"probe_mode must be 0 or 1, got {probe_mode}")
    # $du: the URI without user, password and headers (dispatch.c: add_dest2list)
    dst_uri = parsed.replace(user=None, password=None, headers={}) if parsed.user or parsed.headers else parsed
    return Destination(setid, uri, dst_uri, socket=_text(row, "socket").strip(), flags=state,
                       probe_mode=probe_mode, weight=_weight(row.get("weight")),
                       priority=_int(row, "priority", 0), attrs=_text(row, "attrs"),
                       description=_text(row, "description"))


def _row_name(index: int, row: Mapping[str, Any]) -> str:
    rid = row.get("id")
    where = f"row id {rid}" if rid is not None else f"row {index + 1}"
    return f"{where} (set {row.get('setid')!r}, {str(row.get('destination'))[:80]!r})"


def build_table(rows: Iterable[Mapping[str, Any]], persistent_state: bool = True
                ) -> tuple[DispatcherTable, list[str]]:
    """The table of ``rows`` and one message per row skipped. Sets are ordered by priority,
    highest first; equal priorities keep the rows' order (``reindex_dests``)."""
    sets: dict[int, DestinationSet] = {}
    errors: list[str] = []
    for i, row in enumerate(rows):
        try:
            d = destination_from_row(row, persistent_state)
        except RowError as exc:
            errors.append(f"{_row_name(i, row)}: {exc}")
            continue
        dset = sets.setdefault(d.setid, DestinationSet(d.setid))
        if dset.find(d.uri) is not None:
            errors.append(f"{_row_name(i, row)}: duplicate of an earlier row of set {d.setid}")
            continue
        dset.destinations.append(d)
    for dset in sets.values():
        dset.destinations.sort(key=lambda d: -d.priority)  # stable: load order within a priority
    return DispatcherTable(sets), errors
