"""``[mi]``: the management interface's settings (OpenSIPS ``mi_http`` + ``httpd``'s port).

Off unless ``listen`` names an address. The interface can remove registrations, so it listens on a
loopback address unless ``allow_remote`` says otherwise (the configuration refuses a remote address
without it), and ``token`` may require ``Authorization: Bearer <token>`` on every request.
:data:`SECTION` is the ``[mi]`` table of the configuration.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from ..config_error import ConfigError
from ..config_schema import Context, Section, boolean, integer, seconds, show, text
from ..sip.address import ip_literal

__all__ = ["MISettings", "parse_mi_listen", "is_loopback", "check_listen", "check_path", "SECTION"]

_HOSTPORT = re.compile(r"^(?P<host>\[[^\]]+\]|[^:\[\]]+):(?P<port>[0-9]{1,5})$")


def parse_mi_listen(text: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets, e.g. ``[::1]:8888``) as (host without brackets, port).
    Raises ValueError with the reason."""
    m = _HOSTPORT.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError('must be "host:port", e.g. "127.0.0.1:8888" (IPv6 in brackets: "[::1]:8888")')
    host, port = m["host"], int(m["port"])
    literal = ip_literal(host)
    if host.startswith("["):
        if literal is None:  # ip_literal takes only IPv6 in brackets
            raise ValueError("the host in brackets must be an IPv6 address")
        host = literal[1]
    elif literal is not None:
        host = literal[1]
    elif host.lower() == "localhost":
        host = "localhost"
    else:
        raise ValueError("host must be an IP address (or localhost): the listener binds to it")
    if not 1 <= port <= 65535:
        raise ValueError("port must be from 1 to 65535")
    return host, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as :func:`parse_mi_listen` returns it) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MISettings:
    """``[mi]``: where the JSON-RPC management interface listens and who may use it.

    * ``listen`` -- ``host:port`` of the HTTP listener; ``""`` (the default) keeps it off.
    * ``path`` -- the HTTP path of the interface (OpenSIPS ``mi_http_root``, "mi").
    * ``allow_remote`` -- a ``listen`` address that is not loopback needs this (and gets a warning).
    * ``token`` -- when set, requests need ``Authorization: Bearer <token>`` (else 401).
    * ``max_request_size`` -- bytes of request body accepted (larger: 413).
    * ``timeout`` -- seconds one command may take before it answers ``-32000``.
    """

    listen: str = ""
    path: str = "/mi"
    allow_remote: bool = False
    token: str = ""
    max_request_size: int = 65536
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.listen:
            parse_mi_listen(self.listen)
        if not self.path.startswith("/"):
            raise ValueError("path must start with /")
        if self.max_request_size < 1 or self.timeout <= 0:
            raise ValueError("max_request_size and timeout must be positive")

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of ``listen``."""
        return parse_mi_listen(self.listen)

    @property
    def remote(self) -> bool:
        """True when ``listen`` is not a loopback address."""
        return bool(self.listen) and not is_loopback(self.address[0])


def check_listen(key: str, value: Any, ctx: Context) -> str:
    """``[mi] listen`` (and ``[metrics] listen``): ``host:port`` of an HTTP listener, "" for none."""
    spec = text(key, value, ctx).strip()
    if spec:
        try:
            parse_mi_listen(spec)
        except ValueError as exc:
            raise ConfigError(key, f"{exc}, got {show(value)}") from None
    return spec


def check_path(key: str, value: Any, ctx: Context) -> str:
    """An HTTP path (``[mi] path``, ``[metrics] path``)."""
    if not isinstance(value, str) or not re.fullmatch(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*", value):
        raise ConfigError(key, f'must be an HTTP path starting with "/", got {show(value)}')
    return value


def _local_unless_allowed(mi: MISettings) -> None:
    if mi.remote and not mi.allow_remote:
        raise ConfigError("mi.listen", f"{mi.listen} is not a loopback address: the MI can remove "
                                       "registrations, so set mi.allow_remote = true (and mi.token) to mean it")


#: ``[mi]``: present, it configures the management interface (the node holds None without it).
SECTION: Section[MISettings] = Section(MISettings, {
    "listen": check_listen,
    "path": check_path,
    "allow_remote": boolean,
    "token": text,
    "max_request_size": integer(1024, 16 * 1024 * 1024),
    "timeout": seconds,
}, after=_local_unless_allowed, optional=True)
