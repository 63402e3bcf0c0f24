"""Dialog profiles (OpenSIPS ``dlg_profile.c``): named sets of dialogs, optionally keyed by a value,
whose sizes routes read to cap concurrent calls (per user, per trunk).

A dialog enters a profile with ``set_dlg_profile`` and leaves it when it ends, whatever ended it:
the table calls :meth:`Profiles.release` on every path to the deleted state, exactly once per entry,
so the counts are exact. Sizes are kept as counters (O(1) ``get_profile_size``); listing a profile's
dialogs walks the table (``profile_list_dlgs``, an MI command, is rare).
"""

from __future__ import annotations

from .settings import DialogSettings

__all__ = ["Profiles", "ProfileError"]


class ProfileError(ValueError):
    """A profile that is not declared, or a valued profile used without a value."""


class Profiles:
    """The declared profiles and their counts (``{profile: {value: n}}``, value "" for profiles
    without value)."""

    def __init__(self, settings: DialogSettings) -> None:
        self.with_value = frozenset(settings.profiles_with_value)
        self.no_value = frozenset(settings.profiles_no_value)
        self.counts: dict[str, dict[str, int]] = {name: {} for name in (*self.with_value, *self.no_value)}

    def key(self, name: str, value: str | None) -> tuple[str, str]:
        """The entry ``(name, value)`` a dialog is put in: a value on a no-value profile is ignored
        (OpenSIPS); a valued profile needs one (ProfileError)."""
        if name in self.no_value:
            return name, ""
        if name not in self.with_value:
            raise ProfileError(f"no dialog profile {name!r} (declare it in [dialog] profiles_with_value "
                               f"or profiles_no_value)")
        if value is None:
            raise ProfileError(f"dialog profile {name!r} needs a value")
        return name, value

    def add(self, entry: tuple[str, str]) -> None:
        values = self.counts[entry[0]]
        values[entry[1]] = values.get(entry[1], 0) + 1

    def release(self, entry: tuple[str, str]) -> None:
        values = self.counts[entry[0]]
        n = values.get(entry[1], 0) - 1
        if n > 0:
            values[entry[1]] = n
        else:
            values.pop(entry[1], None)

    def size(self, name: str, value: str | None = None) -> int:
        """``get_profile_size``: dialogs in ``name`` with ``value``; a valued profile without value
        counts all its dialogs."""
        values = self.counts.get(name)
        if values is None:
            raise ProfileError(f"no dialog profile {name!r}")
        if value is None or name in self.no_value:
            return sum(values.values())
        return values.get(value, 0)

    def has_value(self, name: str) -> bool:
        if name not in self.counts:
            raise ProfileError(f"no dialog profile {name!r}")
        return name in self.with_value
