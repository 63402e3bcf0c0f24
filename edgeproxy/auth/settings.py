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
    [auth.users]             # the embedded store, when there is no db_url
    "alice@example.com" = "secret"

:class:`AuthSettings` is what the table becomes; ``edgeproxy.config`` checks the keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = ["AuthSettings", "QOP_CHOICES"]

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
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __post_init__(self) -> None:
        from .digest import ALGORITHMS, canonical_algorithm

        if self.qop not in QOP_CHOICES:
            raise ValueError(f"qop must be one of {', '.join(repr(q) for q in QOP_CHOICES)}, not {self.qop!r}")
        if not self.algorithms:
            raise ValueError("algorithms must name at least one algorithm")
        try:
            names = tuple(canonical_algorithm(a) for a in self.algorithms)
        except Exception as exc:  # DigestError: the wire's error type, not the configuration's
            raise ValueError(f"algorithms: {getattr(exc, 'reason', exc)} (known: {', '.join(ALGORITHMS)})") from None
        object.__setattr__(self, "algorithms", names)
        if self.nonce_expire <= 0 or self.timeout <= 0:
            raise ValueError("nonce_expire and timeout must be positive")
        if self.db_url and self.users:
            raise ValueError("give either db_url (the subscriber table) or [auth.users], not both")
