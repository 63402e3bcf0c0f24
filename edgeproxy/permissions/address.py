"""Address groups as OpenSIPS's ``permissions`` module keeps and matches them (``address.c``,
``hash.c`` of OpenSIPS 3.4): rows of the ``address`` table, checked once, and the immutable index a
check runs against.

A row is ``(grp, ip, mask, port, proto, pattern, context_info)`` (the ``address`` table, version 5).
Rows with ``mask`` 32 (IPv4) or 128 (IPv6) are hosts and go into an exact-address hash; the others are
subnets, kept in one list sorted by group (stable). :meth:`AddressTable.check` is
``check_address()``'s matching:

* a row matches when its group is 0 or the one asked (or 0 is asked), its proto is ``any`` or the
  one asked (or ``any`` is asked), its port is 0 or the one asked (or 0 is asked), the address is
  the row's (hash) or inside its subnet, and -- only when both the row and the call give one -- the
  call's pattern matches the row's shell pattern (``fnmatch(row, arg, FNM_PERIOD)``);
* the hash is searched first (the row loaded last first, as OpenSIPS's bucket lists), the subnets
  only when the hash found nothing; the first match wins and gives its ``context_info``;
* a group asked that has no row in the part searched makes that part answer "group not found"
  before looking (so a group-0 wildcard row helps only a group with rows of its own there); both
  parts saying so is -2, any other miss -1.

Nothing here does I/O: rows come from the configuration file or the database (:mod:`.db`), and
:class:`~.service.Permissions` swaps a new table in on reload, as OpenSIPS's double buffer does.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from enum import IntEnum
from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping

from ..sip.address import ip_literal

__all__ = ["AddressResult", "AddressRow", "AddressRowError", "AddressMatch", "AddressTable", "PROTOS", "parse_row",
           "proto_name"]

#: Transports a row may name (OpenSIPS's proto names, lower-case); ``any`` matches all of them.
PROTOS = ("any", "udp", "tcp", "tls", "sctp", "ws", "wss")



class AddressResult(IntEnum):
    """OpenSIPS's return codes of ``check_address`` / ``check_source_address``: 1 match, -1 no match
    (or a bad address), -2 the group has no rows. True only for a match, as in the script (negative
    codes are false there), so ``if msg.check_source_address(1):`` reads as it does in OpenSIPS."""

    MATCH = 1
    NO_MATCH = -1
    GROUP_NOT_FOUND = -2

    def __bool__(self) -> bool:
        return self is AddressResult.MATCH


MATCH, NO_MATCH, GROUP_NOT_FOUND = AddressResult.MATCH, AddressResult.NO_MATCH, AddressResult.GROUP_NOT_FOUND


class AddressRowError(ValueError):
    """A row that cannot be used (OpenSIPS skips it): the message names the column."""


@dataclass(frozen=True, slots=True)
class AddressRow:
    """One row of the ``address`` table, checked: ``ip`` in canonical text, ``proto`` lower-case."""

    grp: int
    ip: str
    mask: int
    port: int = 0
    proto: str = "any"
    pattern: str | None = None
    context_info: str | None = None
    id: int | None = None

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.ip else socket.AF_INET

    @property
    def is_host(self) -> bool:
        """A single address (mask 32 for IPv4, 128 for IPv6): the exact-address hash's."""
        return self.mask == (128 if self.family == socket.AF_INET6 else 32)

    def json(self) -> dict[str, Any]:
        """The row as ``address_dump`` / ``subnet_dump`` print it (``mask`` a string, NULLs empty)."""
        return {"grp": self.grp, "ip": self.ip, "mask": str(self.mask), "port": self.port, "proto": self.proto,
                "pattern": self.pattern or "", "context_info": self.context_info or ""}


@dataclass(frozen=True, slots=True)
class AddressMatch:
    """What ``check_address`` answers: 1 (match), -1 (no match), -2 (group not found), and the
    matching row's ``context_info`` ("" for NULL; None without a match)."""

    code: AddressResult
    context_info: str | None = None

    def __bool__(self) -> bool:
        return self.code == MATCH


def proto_name(proto: Any) -> str | None:
    """A proto argument or column as a name of :data:`PROTOS` (``""``/None: ``any``), None if unknown."""
    if proto is None:
        return "any"
    if not isinstance(proto, str):
        return None
    name = proto.strip().lower() or "any"
    return name if name in PROTOS else None


def _int(row: Mapping[str, Any], column: str, default: int | None, low: int, high: int) -> int:
    value = row.get(column, default)
    if value is None:
        raise AddressRowError(f"{column} is NULL")
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise AddressRowError(f"{column} {value!r} is not a number") from None
    if not low <= value <= high:
        raise AddressRowError(f"{column} {value} is out of range {low}..{high}")
    return value


def _text(row: Mapping[str, Any], column: str, limit: int) -> str | None:
    value = row.get(column)
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    value = str(value)
    if len(value) > limit:
        raise AddressRowError(f"{column} is longer than {limit} characters")
    return value


def parse_row(row: Mapping[str, Any]) -> AddressRow:
    """Check one row (a database row or a configuration table) as OpenSIPS's loader does: the IP
    must be an IPv4/IPv6 literal, the mask within its family's bits, the proto known and not
    ``none``. Raises :class:`AddressRowError` naming what is wrong."""
    ip_value = _text(row, "ip", 50)
    literal = ip_literal(ip_value.strip()) if ip_value else None
    if literal is None or "%" in literal[1]:
        raise AddressRowError(f"ip {ip_value!r} is not an IPv4 or IPv6 address")
    family, ip = literal
    bits = 128 if family == socket.AF_INET6 else 32
    grp = _int(row, "grp", 0, 0, 65535)
    mask = _int(row, "mask", bits, 0, bits)
    port = _int(row, "port", 0, 0, 65535)
    proto_value = row.get("proto", "any")
    proto = proto_name(proto_value)
    if proto is None:
        raise AddressRowError(f"proto {proto_value!r} is none of {', '.join(PROTOS)}"
                              if proto_value != "none" else "proto is 'none'")
    pattern = _text(row, "pattern", 64)
    context_info = _text(row, "context_info", 32)
    row_id = row.get("id")
    return AddressRow(grp, ip, mask, port, proto, pattern or None, context_info,
                      row_id if isinstance(row_id, int) and not isinstance(row_id, bool) else None)


def _packed(ip: str) -> tuple[int, int]:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return family, int.from_bytes(socket.inet_pton(family, ip), "big")


@dataclass(frozen=True, slots=True)
class _Subnet:
    row: AddressRow
    family: int
    network: int
    shift: int  # host bits: an address is inside when address >> shift == network >> shift


class AddressTable:
    """The rows of one load, indexed for :meth:`check` (see the module docstring). Immutable: a
    reload builds a new one."""

    __slots__ = ("rows", "_hosts", "_subnets", "_host_groups", "_subnet_groups")

    def __init__(self, rows: Iterable[AddressRow] = ()) -> None:
        self.rows: tuple[AddressRow, ...] = tuple(rows)
        hosts: dict[str, list[AddressRow]] = {}
        subnets: list[_Subnet] = []
        for row in self.rows:
            if row.is_host:
                hosts.setdefault(row.ip, []).insert(0, row)  # the row loaded last is tried first
            else:
                family, value = _packed(row.ip)
                shift = (128 if family == socket.AF_INET6 else 32) - row.mask
                subnets.append(_Subnet(row, family, value >> shift, shift))
        subnets.sort(key=lambda s: s.row.grp)  # stable: rows of a group keep their load order
        self._hosts = {ip: tuple(found) for ip, found in hosts.items()}
        self._subnets = tuple(subnets)
        self._host_groups = frozenset(r.grp for r in self.rows if r.is_host)
        self._subnet_groups = frozenset(s.row.grp for s in subnets)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def hosts(self) -> list[AddressRow]:
        """The host rows (``address_dump``), in load order."""
        return [r for r in self.rows if r.is_host]

    @property
    def subnets(self) -> list[AddressRow]:
        """The subnet rows (``subnet_dump``), sorted by group as they are searched."""
        return [s.row for s in self._subnets]

    @staticmethod
    def _fits(row: AddressRow, grp: int, port: int, proto: str, pattern: str | None) -> bool:
        if grp and row.grp and row.grp != grp:
            return False
        if proto != "any" and row.proto != "any" and row.proto != proto:
            return False
        if port and row.port and row.port != port:
            return False
        if row.pattern is not None and pattern is not None:
            if pattern.startswith(".") and not row.pattern.startswith("."):
                return False  # FNM_PERIOD: a leading period is matched only by a period
            return fnmatchcase(pattern, row.pattern)
        return True

    def check(self, grp: int, ip: str, port: int = 0, proto: str = "any", pattern: str | None = None) -> AddressMatch:
        """``check_address(grp, ip, port, proto, ctx, pattern)``; ``ip`` not an address is -1, as
        OpenSIPS answers an unparsable IP. ``proto`` must be one of :data:`PROTOS`."""
        literal = ip_literal(ip)
        if literal is None or "%" in literal[1]:
            return AddressMatch(NO_MATCH)
        text = literal[1]
        hash_missing = bool(grp) and grp not in self._host_groups
        if not hash_missing:
            for row in self._hosts.get(text, ()):
                if self._fits(row, grp, port, proto, pattern):
                    return AddressMatch(MATCH, row.context_info or "")
        subnet_missing = bool(grp) and grp not in self._subnet_groups
        if not subnet_missing and self._subnets:
            family, value = _packed(text)
            for s in self._subnets:
                if s.family == family and value >> s.shift == s.network and self._fits(s.row, grp, port, proto,
                                                                                        pattern):
                    return AddressMatch(MATCH, s.row.context_info or "")
        return AddressMatch(GROUP_NOT_FOUND if hash_missing and subnet_missing else NO_MATCH)

    def source_group(self, ip: str, port: int) -> int:
        """``get_source_group()``: the group of the first row (hosts, then subnets) whose address
        matches and whose port is 0 or ``port`` -- proto and pattern ignored; -1 when none."""
        literal = ip_literal(ip)
        if literal is None or "%" in literal[1]:
            return -1
        text = literal[1]
        for row in self._hosts.get(text, ()):
            if not row.port or row.port == port:
                return row.grp
        if self._subnets:
            family, value = _packed(text)
            for s in self._subnets:
                if s.family == family and value >> s.shift == s.network and (not s.row.port or s.row.port == port):
                    return s.row.grp
        return -1
