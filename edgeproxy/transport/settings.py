"""The transports' tables of the configuration: ``[limits]``, ``[tls]`` and ``[ws]``.

``[tls]`` becomes a :class:`~edgeproxy.transport.tls.TlsSettings` and ``[ws]`` a
:class:`~edgeproxy.transport.ws.WsSettings`, the classes the transports take; ``[limits]`` is a
:class:`LimitsConfig`, the parser's limits plus the two the transport manager takes as arguments.
TLS files and OpenSSL settings are loaded when the section is checked (the same check the transport
makes at start-up), so a wrong path or a key that does not match is one line, before anything starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from ..config_error import ConfigError
from ..config_schema import (
    Context,
    Section,
    boolean,
    file_path,
    integer,
    seconds,
    show,
    text,
    unknown,
    zero_or_seconds,
)
from ..sip.address import canonical_host
from ..sip.parser import Limits
from .tls import TlsContexts, TlsSettings
from .ws_settings import WsSettings

__all__ = ["LimitsConfig", "LIMITS_SECTION", "TLS_SECTION", "WS_SECTION", "TLS_VERSIONS"]

#: ``tls.min_version`` / ``tls.max_version`` values, oldest first.
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")


@dataclass(frozen=True, slots=True)
class LimitsConfig(Limits):
    """``[limits]``: the parser's :class:`~edgeproxy.sip.parser.Limits` (``max_message_size``,
    ``max_headers``, ``max_line_length``: inherited, so described there once) plus the two limits the
    transport manager takes as arguments rather than as a settings object. Being a ``Limits``, it is
    handed to the transports as their parser limits as it is.

    The node's defaults for the two are larger than :class:`~edgeproxy.transport.TransportManager`'s
    (which suit tests and embedding): an edge node holds many idle TCP/TLS/WS clients.
    """

    max_connections: int = 10000
    tcp_idle_timeout: float = 600.0
    # open and handshaking TCP/TLS/WS connections of one remote address (0 = no cap): one source
    # cannot take the whole max_connections (issue 16); an office NAT holds tens of phones
    max_connections_per_source: int = 100
    # seconds one SIP message may take to arrive whole on TCP/TLS once it has begun (0 = no bound):
    # a peer trickling a byte a second keeps tcp_idle_timeout quiet forever (slowloris)
    message_timeout: float = 30.0


def _check_limits(limits: LimitsConfig) -> None:
    if limits.max_line_length > limits.max_message_size:
        raise ConfigError("limits.max_line_length",
                          f"must be <= limits.max_message_size ({limits.max_message_size}),"
                          f" got {limits.max_line_length}")


LIMITS_SECTION: Section[LimitsConfig] = Section(LimitsConfig, {
    "max_message_size": integer(1024, 16 * 1024 * 1024),
    "max_headers": integer(8, 100000),
    "max_line_length": integer(256, 16 * 1024 * 1024),
    "max_connections": integer(1),
    "tcp_idle_timeout": seconds,
    "max_connections_per_source": integer(0),
    "message_timeout": zero_or_seconds,
}, after=_check_limits)


# -- [tls] -----------------------------------------------------------------------------------------


def _tls_version(empty_ok: bool) -> Any:
    names = ", ".join(f'"{v}"' for v in TLS_VERSIONS)

    def check(key: str, value: Any, ctx: Context) -> str:
        if isinstance(value, float):
            value = f"{value:.1f}"  # min_version = 1.2 written as a TOML number
        if isinstance(value, str) and (value.strip() in TLS_VERSIONS or (empty_ok and value.strip() == "")):
            return value.strip()
        raise ConfigError(key, f"must be one of {names}{' or empty' if empty_ok else ''}, got {show(value)}")

    return check


def _sni(key: str, value: Any, ctx: Context) -> Mapping[str, tuple[str, str]]:
    """``[tls.sni]``: ``"name" = { certificate = "...", key = "..." }`` per server name."""
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a table of server names ([tls.sni]), got {show(value)}")
    out: dict[str, tuple[str, str]] = {}
    for name, pair in value.items():
        label = f"{key}.{name}"
        bare = name[2:] if name.startswith("*.") else name
        if canonical_host(bare) != bare.lower() or ":" in bare:
            raise ConfigError(label, "must be a DNS name (or *.parent), as a client sends it in SNI")
        if not isinstance(pair, dict):
            raise ConfigError(label, f"must be a table {{ certificate = \"...\", key = \"...\" }}, got {show(pair)}")
        extra = set(pair) - {"certificate", "key"}
        if extra:
            raise unknown(f"{label}.{sorted(extra)[0]}", "key", ["certificate", "key"])
        if "certificate" not in pair or "key" not in pair:
            raise ConfigError(label, "needs both certificate and key")
        out[name.lower().rstrip(".")] = (file_path(f"{label}.certificate", pair["certificate"], ctx),
                                         file_path(f"{label}.key", pair["key"], ctx))
    return MappingProxyType(out)


def _check_tls(tls: TlsSettings) -> None:
    """Rules between the keys, then the files and the OpenSSL settings, loaded as the transport will."""
    if bool(tls.certificate) != bool(tls.key):
        raise ConfigError("tls.key" if tls.certificate else "tls.certificate",
                          "tls.certificate and tls.key go together (both or neither)")
    if tls.require_client_cert and not tls.ca:
        raise ConfigError("tls.require_client_cert", "needs tls.ca, the authorities client certificates must chain to")
    if tls.max_version and TLS_VERSIONS.index(tls.max_version) < TLS_VERSIONS.index(tls.min_version):
        raise ConfigError("tls.max_version", f"must be >= tls.min_version ({tls.min_version}), got {tls.max_version}")
    if tls.sni and not tls.certificate:
        raise ConfigError("tls.sni", "needs a default tls.certificate and tls.key as well")
    if tls == TlsSettings():
        return
    try:
        TlsContexts(tls)
    except ValueError as exc:
        message = str(exc)
        key = next((k for marker, k in (("TLS ciphers", "tls.ciphers"), ("TLS groups", "tls.groups"),
                                        ("CA bundle", "tls.ca"), ("TLS key", "tls.key"),
                                        ("TLS certificate", "tls.certificate"), ("sni", "tls.sni"))
                    if marker in message), "tls")
        raise ConfigError(key, message) from None


TLS_SECTION: Section[TlsSettings] = Section(TlsSettings, {
    "certificate": file_path,
    "key": file_path,
    "ca": file_path,
    "min_version": _tls_version(False),
    "max_version": _tls_version(True),
    "ciphers": text,
    "groups": text,
    "require_client_cert": boolean,
    "verify_server": boolean,
    "handshake_timeout": seconds,
    "sni": _sni,
}, after=_check_tls)


# -- [ws] ------------------------------------------------------------------------------------------


def _ws_path(key: str, value: Any, ctx: Context) -> str:
    if not isinstance(value, str) or not (value == "*" or re.fullmatch(r"/[\x21-\x7e]*", value)):
        raise ConfigError(key, f'must be "*" (any path) or an HTTP path starting with "/", got {show(value)}')
    return value


_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s]+/?")


def _origins(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f'must be a list of origins like "https://app.example.com", got {show(value)}')
    out: list[str] = []
    for i, origin in enumerate(value):
        if not isinstance(origin, str) or not (origin == "*" or _ORIGIN.fullmatch(origin)):
            raise ConfigError(f"{key}[{i}]", f'must be an origin like "https://app.example.com" (* wildcards allowed),'
                                             f" got {show(origin)}")
        out.append(origin)
    return tuple(out)


WS_SECTION: Section[WsSettings] = Section(WsSettings, {
    "path": _ws_path,
    "origins": _origins,
    "max_message_size": integer(0, 16 * 1024 * 1024),
    "ping_interval": zero_or_seconds,
    "ping_timeout": zero_or_seconds,
    "idle_timeout": zero_or_seconds,
    "max_connections": integer(0),
    "handshake_timeout": seconds,
    "max_handshake_size": integer(1024, 65536),
})
