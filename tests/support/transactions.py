"""Driving a sans-I/O transaction (:mod:`edgeproxy.transaction`) through time in the tests: time is
a plain float and every timer fires at its exact instant (RFC 3261 §17's timers)."""

from __future__ import annotations

from typing import Protocol, Sequence

__all__ = ["run_timers", "Timed"]


class Timed(Protocol):
    """A transaction (or anything timed alike): its next deadline, and what firing it does."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> Sequence[object]: ...


def run_timers(tx: Timed, until: float) -> list[tuple[float, object]]:
    """Fire every timer of ``tx`` up to ``until``; the (time, action) pairs, in order."""
    out: list[tuple[float, object]] = []
    while (when := tx.get_timer()) is not None and when <= until:
        out.extend((when, a) for a in tx.handle_timer(when))
    return out
