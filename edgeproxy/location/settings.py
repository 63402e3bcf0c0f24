"""``[nathelper]``: NAT keep-alive pinging of registered contacts, as a
:class:`~edgeproxy.location.natping.NatPingSettings` (the keys are described there).

``natping_interval = 0`` (the default) pings nothing.
"""

from __future__ import annotations

import re
from typing import Any

from ..config_error import ConfigError
from ..config_schema import Context, Section, boolean, integer, show, text, zero_or_seconds
from ..sip.errors import SipValueError
from ..sip.uri import SipURI, parse_uri
from .natping import NatPingSettings

__all__ = ["SECTION"]


def _sip_method(key: str, value: Any, ctx: Context) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{1,32}", value.strip()):
        raise ConfigError(key, f'must be a SIP method such as "OPTIONS", got {show(value)}')
    return value.strip().upper()


def _sip_uri_or_empty(key: str, value: Any, ctx: Context) -> str:
    uri = text(key, value, ctx).strip()
    if not uri:
        return ""
    try:
        ok = isinstance(parse_uri(uri), SipURI) and not any(c in uri for c in "<> \t\r\n")
    except SipValueError:
        ok = False
    if not ok:
        raise ConfigError(key, f'must be a sip: or sips: URI like "sip:pinger@example.com" ("": the node\'s), '
                               f"got {show(value)}")
    return uri


SECTION: Section[NatPingSettings] = Section(NatPingSettings, {
    "natping_interval": zero_or_seconds,
    "natping_partitions": integer(1, 1000),
    "natping_tcp": boolean,
    "sipping_method": _sip_method,
    "sipping_from": _sip_uri_or_empty,
    "remove_on_timeout": boolean,
    "max_pings_lost": integer(1, 1000),
})
