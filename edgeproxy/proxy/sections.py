"""The proxy's tables of the configuration: ``[proxy]`` (:class:`~edgeproxy.proxy.settings.ProxySettings`)
and ``[pike]`` (:class:`~edgeproxy.proxy.flood.FloodSettings`), their keys and checks.

``[proxy]`` sets only the knobs an operator writes; the service adds ``node.domains`` and the debug
flag, which live in ``[node]``. ``[pike]`` is optional: without it the node has no flood detection,
as OpenSIPS without the pike module.
"""

from __future__ import annotations

from typing import Any

from ..config_error import ConfigError
from ..config_schema import Context, Section, boolean, integer, seconds, show
from ..sip.address import ip_literal
from .flood import FloodSettings
from .settings import ProxySettings

__all__ = ["PROXY_SECTION", "PIKE_SECTION"]

PROXY_SECTION: Section[ProxySettings] = Section(ProxySettings, {
    "record_route_double": boolean,
    "auto_100trying": boolean,
    "no_reply_status": integer(400, 699),
    "max_forwards_default": integer(1, 255),
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
