"""``[dialog]``: the parameters of OpenSIPS's ``dialog`` module that edgeproxy has (same names).

``default_timeout`` is a dialog's lifetime, counted from its confirmation (the 2xx), 12 h as in
OpenSIPS; a route changes it per dialog (``msg.dlg_timeout``, OpenSIPS ``$DLG_timeout``).
``options_ping_interval`` (30 s) is how often the parties of dialogs created with the ``P``/``p``
flags get an in-dialog OPTIONS.
``profiles_with_value`` / ``profiles_no_value`` declare the profiles routes may put dialogs in
(OpenSIPS's ``;``-separated strings are accepted as well as TOML lists); a name ending in ``/b`` is
shared with the other nodes of ``profile_replication_cluster`` (every ``replicate_profiles_timer``
ms when it changed; a peer silent for ``replicate_profiles_expire`` s stops counting). The section is
always there: without it every key has its default and ``create_dialog()`` works with no profiles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config_error import ConfigError
from ..config_schema import Context, Section, integer, show

__all__ = ["DialogSettings", "SECTION"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}(/b)?$")


@dataclass(frozen=True, slots=True)
class DialogSettings:
    """OpenSIPS dialog's ``default_timeout``, ``options_ping_interval`` and profile declarations."""

    default_timeout: int = 43200
    profiles_with_value: tuple[str, ...] = ()
    profiles_no_value: tuple[str, ...] = ()
    profile_replication_cluster: int = 0  # OpenSIPS: the cluster the /b profiles are shared in; 0: none
    replicate_profiles_timer: int = 200  # ms between two sends of changed counts
    replicate_profiles_expire: int = 10  # s after which a silent peer's counts no longer count
    options_ping_interval: int = 30  # s between two OPTIONS pings of create_dialog("Pp") dialogs

    def __post_init__(self) -> None:
        names = [p.removesuffix("/b") for p in self.profiles_with_value]
        both = set(names) & {p.removesuffix("/b") for p in self.profiles_no_value}
        if both:
            raise ValueError(f"profile {sorted(both)[0]!r} is declared both with and without value")
        replicated = any(p.endswith("/b") for p in (*self.profiles_with_value, *self.profiles_no_value))
        if replicated and not self.profile_replication_cluster:
            raise ValueError("a /b (replicated) profile needs profile_replication_cluster")


def _profiles(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    """Profile names: a list of names, or OpenSIPS's ``"a;b;c"``; ``/b`` marks a profile replicated
    over the cluster (OpenSIPS's ``/s``, shared through a cache, is not supported: refused)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(";") if v.strip()]
    if not isinstance(value, list):
        raise ConfigError(key, f'must be a list of profile names like ["caller"], got {show(value)}')
    out: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{key}[{i}]", f"must be a profile name (letters, digits, . _ -; /b: replicated), "
                                             f"got {show(name)}")
        if name.removesuffix("/b") in (n.removesuffix("/b") for n in out):
            raise ConfigError(f"{key}[{i}]", f"profile {name!r} is declared twice")
        out.append(name)
    return tuple(out)


SECTION: Section[DialogSettings] = Section(DialogSettings, {
    "default_timeout": integer(1),
    "options_ping_interval": integer(1, 3600),
    "profiles_with_value": _profiles,
    "profiles_no_value": _profiles,
    "profile_replication_cluster": integer(0),
    "replicate_profiles_timer": integer(10, 60_000),
    "replicate_profiles_expire": integer(1, 3600),
})
