"""The ``[permissions]`` settings: trusted address groups as OpenSIPS's ``permissions`` module keeps
them (``check_address``, ``check_source_address``).

::

    [permissions]
    db_url = ""              # mysql://user:pass@host/opensips: OpenSIPS's address table; "": none
    table = "address"        # its name (OpenSIPS address_table)
    timeout = 10.0           # s a (re)load from the database may take
    [[permissions.address]]  # rows of the configuration file, loaded before the table's
    grp = 1                  # group; 0 matches any group asked for
    ip = "10.0.1.50"         # IPv4 or IPv6 address, no names
    mask = 32                # prefix length; default: 32 (IPv4) / 128 (IPv6), a single host
    port = 0                 # 0: any port
    proto = "any"            # any, udp, tcp, tls, sctp, ws, wss
    pattern = ""             # shell pattern matched against the verb's pattern argument
    context_info = ""        # handed to the route on a match (msg.context_info)

A row of the file that cannot be used stops the node with one line naming it; a row of the database
that cannot be used is one log line and the others load (OpenSIPS skips it too). Without the section
the node has no address groups unless ``route_params.freeswitch`` lists media servers: those become
the rows of group ``route_params.freeswitch_group`` (1), so the shipped routes recognise FreeSWITCH by
``check_source_address`` with the configuration they always had (:func:`route_params_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from .. import sqldb
from ..config_error import ConfigError
from ..config_schema import Section, seconds, show, table_rows
from ..sip.address import ip_literal
from .address import AddressRow, AddressRowError, parse_row

__all__ = ["PermissionsSettings", "SECTION", "route_params_rows", "with_route_params_rows", "ROW_KEYS"]

#: The columns of OpenSIPS's ``address`` table a row of the file may give (``id`` is the database's).
ROW_KEYS = ("grp", "ip", "mask", "port", "proto", "pattern", "context_info")


@dataclass(frozen=True)
class PermissionsSettings:
    """See the module docstring; ``address`` holds the file's rows, checked."""

    db_url: str = ""
    table: str = "address"
    timeout: float = 10.0
    address: tuple[AddressRow, ...] = ()


def _address(row: Mapping[str, Any]) -> AddressRow:
    """A ``[[permissions.address]]`` row; a table always has the ``ip`` column, the file may forget it."""
    if "ip" not in row:
        raise AddressRowError("needs an ip")
    return parse_row(row)


#: ``[permissions]``: present, it names the address groups' sources (the node then always has them).
SECTION: Section[PermissionsSettings] = Section(PermissionsSettings, {
    "db_url": sqldb.db_url_setting,
    "table": sqldb.table_setting,
    "timeout": seconds,
    "address": table_rows(ROW_KEYS, _address, AddressRowError),
}, optional=True)


def route_params_rows(route_params: Mapping[str, Any]) -> tuple[AddressRow, ...]:
    """The default address group of the shipped routes: each IP address of
    ``route_params.freeswitch`` (``"10.0.1.50"`` or ``"10.0.1.50:5060"``) as a host row of group
    ``route_params.freeswitch_group`` (1), any port and transport, ``context_info`` "freeswitch".
    Names (which ``$si`` never equals) are left out; a group that is not 1..65535 is a ConfigError."""
    servers = route_params.get("freeswitch", [])
    if not isinstance(servers, list) or not servers:
        return ()
    grp = route_params.get("freeswitch_group", 1)
    if isinstance(grp, bool) or not isinstance(grp, int) or not 1 <= grp <= 65535:
        raise ConfigError("route_params.freeswitch_group", f"must be an address group from 1 to 65535, got {show(grp)}")
    rows = []
    for server in servers:
        if not isinstance(server, str):
            continue
        host = server
        if ip_literal(host) is None:  # host:port, [v6]:port
            host = server.rsplit(":", 1)[0] if server.count(":") == 1 or server.startswith("[") else server
        literal = ip_literal(host)
        if literal is not None:
            rows.append(parse_row({"grp": grp, "ip": literal[1], "context_info": "freeswitch"}))
    return tuple(rows)


def with_route_params_rows(settings: PermissionsSettings | None,
                           route_params: Mapping[str, Any]) -> PermissionsSettings | None:
    """``[permissions]`` (None without the section) with :func:`route_params_rows` appended: what the
    node loads, so a configuration written before address groups existed keeps recognising
    FreeSWITCH; None when there is neither."""
    rows = route_params_rows(route_params)
    if not rows:
        return settings
    if settings is None:
        return PermissionsSettings(address=rows)
    return replace(settings, address=settings.address + rows)
