"""Dialog profiles (OpenSIPS ``dlg_profile.c``): named sets of dialogs, optionally keyed by a value,
whose sizes routes read to cap concurrent calls (per user, per trunk).

A dialog enters a profile with ``set_dlg_profile`` and leaves it when it ends, whatever ended it:
the table calls :meth:`Profiles.release` on every path to the deleted state, exactly once per entry,
so the counts are exact. Sizes are kept as counters (O(1) ``get_profile_size``); listing a profile's
dialogs walks the table (``profile_list_dlgs``, an MI command, is rare).

A profile declared with OpenSIPS's ``/b`` suffix (``"caller/b"``) is replicated over the cluster: its
size adds the counts the other nodes sent (:meth:`Profiles.set_remote`, fed by
:mod:`edgeproxy.dialog.replication`) to this node's own.
"""

from __future__ import annotations

from .settings import DialogSettings

__all__ = ["Profiles", "ProfileError", "profile_name"]


def profile_name(declared: str) -> str:
    """A declared profile's name without OpenSIPS's ``/b`` (replicated) suffix."""
    return declared[:-2] if declared.endswith("/b") else declared


class ProfileError(ValueError):
    """A profile that is not declared, or a valued profile used without a value."""


class Profiles:
    """The declared profiles and their counts (``{profile: {value: n}}``, value "" for profiles
    without value)."""

    def __init__(self, settings: DialogSettings) -> None:
        self.with_value = frozenset(profile_name(p) for p in settings.profiles_with_value)
        self.no_value = frozenset(profile_name(p) for p in settings.profiles_no_value)
        self.replicated = frozenset(profile_name(p) for p in (*settings.profiles_with_value,
                                                                 *settings.profiles_no_value) if p.endswith("/b"))
        self.counts: dict[str, dict[str, int]] = {name: {} for name in (*self.with_value, *self.no_value)}
        self.remote: dict[int, dict[str, dict[str, int]]] = {}  # peer node id -> its counts
        self.version = 0  # changes of the replicated profiles' own counts

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
        if entry[0] in self.replicated:
            self.version += 1

    def release(self, entry: tuple[str, str]) -> None:
        if entry[0] in self.replicated:
            self.version += 1
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
        everything = value is None or name in self.no_value
        n = sum(values.values()) if everything else values.get(value, 0)  # type: ignore[arg-type]
        if name in self.replicated:
            for peer in self.remote.values():
                theirs = peer.get(name)
                if theirs:
                    n += sum(theirs.values()) if everything else theirs.get(value, 0)  # type: ignore[arg-type]
        return n

    def snapshot(self) -> dict[str, dict[str, int]]:
        """This node's own counts of the replicated profiles (what is sent to the peers)."""
        return {name: dict(self.counts[name]) for name in self.replicated}

    def set_remote(self, node_id: int, counts: dict[str, dict[str, int]]) -> None:
        """A peer's counts of the replicated profiles (replacing what it sent before); profiles this
        node does not replicate are ignored."""
        self.remote[node_id] = {name: values for name, values in counts.items() if name in self.replicated}

    def drop_remote(self, node_id: int) -> None:
        self.remote.pop(node_id, None)

    def has_value(self, name: str) -> bool:
        if name not in self.counts:
            raise ProfileError(f"no dialog profile {name!r}")
        return name in self.with_value
