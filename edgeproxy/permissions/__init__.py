"""Trusted address groups (OpenSIPS ``permissions``): ``check_address``, ``check_source_address``,
``get_source_group`` over rows of the configuration file and of OpenSIPS's ``address`` table."""

from .address import (
    PROTOS,
    AddressMatch,
    AddressResult,
    AddressRow,
    AddressRowError,
    AddressTable,
    parse_row,
    proto_name,
)
from .db import AddressTableError, fetch_address_rows
from .service import Permissions
from .settings import PermissionsSettings, route_params_rows, with_route_params_rows

__all__ = [
    "PROTOS", "AddressMatch", "AddressResult", "AddressRow", "AddressRowError", "AddressTable", "AddressTableError",
    "Permissions", "PermissionsSettings", "fetch_address_rows", "parse_row", "proto_name", "route_params_rows",
    "with_route_params_rows",
]
