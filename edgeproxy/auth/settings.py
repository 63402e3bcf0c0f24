"""The ``[auth]`` settings: digest authentication as OpenSIPS's ``auth`` and ``auth_db`` modules do it.

::

    [auth]
    secret = ""              # nonce signing key; "": a random one per start. Give every node of a
                             # cluster the same one and a nonce from one node is good on the others
    nonce_expire = 30        # s a challenge's nonce is good for (OpenSIPS nonce_expire)
    nonce_reuse = false      # true: a nonce may authenticate many requests (OpenSIPS disable_nonce_check)
    qop = "auth"             # offered in challenges: "auth", "auth-int", "auth,auth-int" or "" (RFC 2069)
    algorithms = ["MD5"]     # one challenge per entry, preferred first: MD5, SHA-256, SHA-512-256, *-sess
    db_url = ""              # mysql://user:pass@host/opensips: the subscriber table; "": [auth.users]
    table = "subscriber"
    calculate_ha1 = false    # true: the table's password column holds plain-text passwords
    use_domain = false       # match the realm against the table's domain column
    password_column = "password"
    load_credentials = []    # more columns to read with the row (OpenSIPS load_credentials)
    timeout = 2.0            # s a credentials query may take before the request gets -5
    max_failures = 5         # wrong credentials per user (0: no back-off) ...
    max_failures_per_source = 20  # ... and per source address (a NAT holds many users; 0: none)
    failure_window = 60      # within this many s, before the user or source is backed off for
    backoff = 30             #   backoff s, doubled for each repeat (up to 16x): nothing is checked
    [auth.users]             # the embedded store, when there is no db_url
    "alice@example.com" = "secret"

:class:`AuthSettings` is what the table becomes; :data:`SECTION` checks the keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .. import sqldb
from ..config_error import ConfigError
from ..config_schema import Context, Section, boolean, choice, integer, seconds, show, text
from .digest import ALGORITHMS, DigestError, canonical_algorithm

__all__ = ["AuthSettings", "QOP_CHOICES", "SECTION"]

QOP_CHOICES = ("auth", "auth-int", "auth,auth-int", "")


@dataclass(frozen=True)
class AuthSettings:
    """See the module docstring. ``users`` maps ``user`` or ``user@domain`` to a plain-text password."""

    secret: str = ""
    nonce_expire: float = 30.0
    nonce_reuse: bool = False
    qop: str = "auth"
    algorithms: tuple[str, ...] = ("MD5",)
    db_url: str = ""
    table: str = "subscriber"
    calculate_ha1: bool = False
    use_domain: bool = False
    password_column: str = "password"
    load_credentials: tuple[str, ...] = ()
    timeout: float = 2.0
    max_failures: int = 5
    max_failures_per_source: int = 20
    failure_window: float = 60.0
    backoff: float = 30.0
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __post_init__(self) -> None:
        if self.qop not in QOP_CHOICES:
            raise ValueError(f"qop must be one of {', '.join(repr(q) for q in QOP_CHOICES)}, not {self.qop!r}")
        if not self.algorithms:
            raise ValueError("algorithms must name at least one algorithm")
        try:
            names = tuple(canonical_algorithm(a) for a in self.algorithms)
        except DigestError as exc:  # the wire's error type, not the configuration's
            raise ValueError(f"algorithms: {exc.reason} (known: {', '.join(ALGORITHMS)})") from None
        object.__setattr__(self, "algorithms", names)
        if self.nonce_expire <= 0 or self.timeout <= 0:
            raise ValueError("nonce_expire and timeout must be positive")
        if self.db_url and self.users:
            raise ValueError("give either db_url (the subscriber table) or [auth.users], not both")


def _identifier(key: str, value: Any, ctx: Context) -> str:
    if not isinstance(value, str) or not sqldb.IDENT.match(value):
        raise ConfigError(key, f"must be a plain SQL name (letters, digits, _), got {show(value)}")
    return value


def _identifiers(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of column names, got {show(value)}")
    return tuple(_identifier(f"{key}[{i}]", v, ctx) for i, v in enumerate(value))


def _algorithms(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, f'must be a non-empty list like ["SHA-256", "MD5"], got {show(value)}')
    out = []
    for i, name in enumerate(value):
        try:
            # canonical_algorithm takes an absent name as MD5 (RFC 2617); in a list it is a mistake
            out.append(canonical_algorithm(name.strip() if isinstance(name, str) and name.strip() else "?"))
        except DigestError:
            raise ConfigError(f"{key}[{i}]", f"must be one of {', '.join(ALGORITHMS)}, got {show(name)}") from None
    return tuple(out)


def _users(key: str, value: Any, ctx: Context) -> Mapping[str, str]:
    """``[auth.users]``: ``"user[@domain]" = "password"``."""
    if not isinstance(value, dict):
        raise ConfigError(key, f'must be a table of "user[@domain]" = "password", got {show(value)}')
    for name, password in value.items():
        if not name or any(c in name for c in ' \t"<>:;,') or name.count("@") > 1:
            raise ConfigError(f"{key}.{name}", "must be a user name, or user@domain")
        if not isinstance(password, str) or not password:
            raise ConfigError(f"{key}.{name}", "must be a non-empty password string")
    return MappingProxyType(dict(value))


#: ``[auth]``: present, it switches digest authentication on (the node holds None without it).
SECTION: Section[AuthSettings] = Section(AuthSettings, {
    "secret": text,
    "nonce_expire": seconds,
    "nonce_reuse": boolean,
    "qop": choice(*QOP_CHOICES),
    "algorithms": _algorithms,
    "db_url": sqldb.db_url_setting,
    "table": _identifier,
    "calculate_ha1": boolean,
    "use_domain": boolean,
    "password_column": _identifier,
    "load_credentials": _identifiers,
    "timeout": seconds,
    "max_failures": integer(0),
    "max_failures_per_source": integer(0),
    "failure_window": seconds,
    "backoff": seconds,
    "users": _users,
}, optional=True)
