"""``[dialog]``: the parameters of OpenSIPS's ``dialog`` module that edgeproxy has (same names).

``default_timeout`` is a dialog's lifetime, counted from its confirmation (the 2xx), 12 h as in
OpenSIPS; a route changes it per dialog (``msg.dlg_timeout``, OpenSIPS ``$DLG_timeout``).
``profiles_with_value`` / ``profiles_no_value`` declare the profiles routes may put dialogs in
(OpenSIPS's ``;``-separated strings are accepted as well as TOML lists). The section is always there:
without it every key has its default and ``create_dialog()`` works with no profiles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config_error import ConfigError
from ..config_schema import Context, Section, integer, show

__all__ = ["DialogSettings", "SECTION"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class DialogSettings:
    """OpenSIPS dialog's ``default_timeout`` and profile declarations."""

    default_timeout: int = 43200
    profiles_with_value: tuple[str, ...] = ()
    profiles_no_value: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        both = set(self.profiles_with_value) & set(self.profiles_no_value)
        if both:
            raise ValueError(f"profile {sorted(both)[0]!r} is declared both with and without value")


def _profiles(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    """Profile names: a list of names, or OpenSIPS's ``"a;b;c"`` (a ``/b`` or ``/s`` suffix -- shared
    through a cluster or a cache in OpenSIPS -- is refused: profiles are per node here)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(";") if v.strip()]
    if not isinstance(value, list):
        raise ConfigError(key, f'must be a list of profile names like ["caller"], got {show(value)}')
    out: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{key}[{i}]", f"must be a profile name (letters, digits, . _ -), got {show(name)}")
        if name in out:
            raise ConfigError(f"{key}[{i}]", f"profile {name!r} is declared twice")
        out.append(name)
    return tuple(out)


SECTION: Section[DialogSettings] = Section(DialogSettings, {
    "default_timeout": integer(1),
    "profiles_with_value": _profiles,
    "profiles_no_value": _profiles,
})
