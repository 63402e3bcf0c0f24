"""Which AoRs changed since a writer last looked: what a persistent usrloc needs to know to write
back (OpenSIPS usrloc's per-contact ``CS_DIRTY`` state, kept per AoR here).

The in-memory table marks an AoR in its :class:`ChangeJournal` on every change -- a save, a refresh,
a removal, an expiry, a closed flow -- at the cost of one ``set.add``; the writer takes the whole set
when it flushes (every ``timer_interval`` in write-back, as soon as something changed in
write-through) and writes each AoR's *current* bindings (none: delete its rows). A change made while
a flush is in flight lands in the next set, so nothing is lost and nothing is written twice in one
flush.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

__all__ = ["ChangeJournal"]


class ChangeJournal:
    """The set of AoRs changed since the last :meth:`take`."""

    __slots__ = ("changed", "_waiter")

    def __init__(self) -> None:
        self.changed: set[str] = set()
        self._waiter: Deferred[None] | None = None

    def add(self, aor: str) -> None:
        """Called by the table inside its update: the waiter's callbacks must only schedule work."""
        self.changed.add(aor)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.callback(None)

    def take(self) -> set[str]:
        """The AoRs changed since the last call (and forget them)."""
        changed, self.changed = self.changed, set()
        return changed

    def put_back(self, aors: set[str]) -> None:
        """A flush of ``aors`` failed: they are still to be written."""
        for aor in aors:
            self.add(aor)

    def when_changed(self) -> "Deferred[None]":
        """Fires (at once when there are changes already) on the next change. One waiter at a time."""
        if self.changed:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        if self._waiter is None:
            self._waiter = Deferred()
        return self._waiter

    def __len__(self) -> int:
        return len(self.changed)
