"""The proxy's tables of the configuration and their checks: ``[proxy]`` (:class:`ProxySettings`, how
the stateful proxy forwards: OpenSIPS ``tm``/``rr`` knobs) and ``[pike]``
(:class:`~edgeproxy.proxy.flood.FloodSettings`).

``[proxy]`` sets only the knobs an operator writes; the service adds ``node.domains`` and the debug
flag, which live in ``[node]``. ``[pike]`` is optional: without it the node has no flood detection,
as OpenSIPS without the pike module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..config_error import ConfigError
from ..config_schema import Checker, Context, Section, boolean, integer, seconds, show, text
from ..sip.address import ip_literal
from .flood import FloodSettings

__all__ = ["ProxySettings", "PROXY_SECTION", "PIKE_SECTION", "SERVER_HEADER", "USER_AGENT_HEADER"]

#: OpenSIPS's ``server_header`` / ``user_agent_header`` defaults, "Server: OpenSIPS (3.4.0 (x86_64/linux))".
SERVER_HEADER = f"Server: edgeproxy ({__version__})"
USER_AGENT_HEADER = f"User-Agent: edgeproxy ({__version__})"


def _header_line(name: str, *, empty: bool) -> Checker:
    """A whole header line as OpenSIPS writes it (``server_header = "Server: Foo"``): the header's
    name, a colon, a value; one line (a CR or LF would let the value start another header)."""

    def check(key: str, value: Any, ctx: Context) -> str:
        if not isinstance(value, str):
            raise ConfigError(key, f'must be a string like "{name}: edgeproxy", got {show(value)}')
        if value == "" and empty:
            return ""
        field, colon, rest = value.partition(":")
        if not colon or field.strip().lower() != name.lower() or not rest.strip() or any(c in value for c in "\r\n\0"):
            allowed = ' or "" for none' if empty else ""
            raise ConfigError(key, f'must be one header line "{name}: <text>"{allowed}, got {show(value)}')
        return f"{name}: {rest.strip()}"

    return check


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Proxy behaviour knobs, named after their OpenSIPS counterparts where one exists."""

    record_route_double: bool = True  # rr enable_double_rr
    auto_100trying: bool = True  # tm auto_100trying
    no_reply_status: int = 500  # a route that neither replies nor relays
    max_forwards_default: int = 70  # §8.1.1.6
    domains: tuple[str, ...] = ()  # local domains (``uri == myself``); empty = the listeners only
    log_decisions: bool = False  # one debug line per routing decision (log_level = "debug")
    dns_failover: bool = True  # RFC 3263 §4.3 across a located next hop's targets (tm use_dns_failover)
    # Timer G for an INVITE's final response to a UDP source that is neither trusted nor authenticated
    # by the route: off, the final is re-sent once per retransmitted INVITE (no reflection amplifier)
    retransmit_unauthenticated: bool = False
    # OpenSIPS core server_signature / server_header / user_agent_header: the header put on replies the
    # node makes itself (not on relayed ones) and on requests it originates (probes, NAT pings);
    # server_signature = false and user_agent_header = "" hide what software this is (topology hiding)
    server_signature: bool = True
    server_header: str = SERVER_HEADER
    user_agent_header: str = USER_AGENT_HEADER
    # signs the RFC 5626 flow tokens of our Record-Routes; "": a key kept in node.state_dir. The
    # same value on every node of a cluster lets each check the others' tokens
    flow_token_secret: str = field(default="", repr=False)
    # OpenSIPS t_relay flag pass-reason-hdr, for every CANCEL (ours never reaches the route): the
    # branches' CANCELs carry the received CANCEL's RFC 3326 Reason; false: OpenSIPS's default
    # Reason: SIP;cause=487;text="ORIGINATOR_CANCEL"
    pass_cancel_reason: bool = True


PROXY_SECTION: Section[ProxySettings] = Section(ProxySettings, {
    "record_route_double": boolean,
    "auto_100trying": boolean,
    "no_reply_status": integer(400, 699),
    "max_forwards_default": integer(1, 255),
    "retransmit_unauthenticated": boolean,
    "server_signature": boolean,
    "server_header": _header_line("Server", empty=False),
    "user_agent_header": _header_line("User-Agent", empty=True),
    "flow_token_secret": text,
    "pass_cancel_reason": boolean,
})


def _addresses(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    """A list of IP addresses (``[pike] trusted``), in their canonical text."""
    if not isinstance(value, list):
        raise ConfigError(key, f'must be a list of IP addresses like ["10.0.1.50"], got {show(value)}')
    out = []
    for i, entry in enumerate(value):
        literal = ip_literal(entry) if isinstance(entry, str) else None
        if literal is None:
            raise ConfigError(f"{key}[{i}]", f"must be an IP address, got {show(entry)}")
        out.append(literal[1])
    return tuple(out)


PIKE_SECTION: Section[FloodSettings] = Section(FloodSettings, {
    "sampling_time_unit": seconds,
    "reqs_density_per_unit": integer(1),
    "remove_latency": seconds,
    "check_all": boolean,
    "trusted": _addresses,
    "max_tracked": integer(1),
}, optional=True)
