"""One reactor timer for the earliest of many deadlines.

The transaction table and the dialog table keep their own deadlines (timers A-K, lifetimes) and
say which comes first; the proxy needs one reactor call for it, not one per deadline:
:class:`EarliestDeadline` keeps a single ``callLater`` armed for the earliest instant it is
given, moves it earlier when an earlier one comes, and leaves it where it is for a later one (the
owner asks the table again when it fires). The clock is injected (the reactor, or
``twisted.internet.task.Clock`` in tests); nothing else is touched.

It is on the message path (the proxy re-arms after every transaction event), so the instant armed
is kept as a float: re-arming for a later deadline is one comparison, without asking the delayed
call for its time or whether it is still active.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["EarliestDeadline"]


class EarliestDeadline:
    """A reactor timer at the earliest deadline given to :meth:`arm`; ``fire`` is called when it
    is reached (once; the owner arms again for what is left)."""

    __slots__ = ("clock", "fire", "_call", "_at")

    def __init__(self, clock: IReactorTime, fire: Callable[[], None]) -> None:
        self.clock = clock
        self.fire = fire
        self._call: IDelayedCall | None = None
        self._at: float | None = None  # the deadline armed for; None: not armed

    @property
    def armed(self) -> float | None:
        """The deadline the timer is armed for, None when it is not."""
        return self._at

    def arm(self, when: float | None) -> None:
        """Fire at ``when`` (clock seconds; one in the past fires at once) unless armed for an
        instant not later already; None: disarm (nothing is due any more)."""
        at = self._at
        if when is None:
            if at is not None:
                self.stop()
            return
        if at is not None:
            if at <= when:
                return
            self._call.cancel()  # type: ignore[union-attr]
        self._at = when
        clock = self.clock
        self._call = clock.callLater(max(0.0, when - clock.seconds()), self._run)

    def stop(self) -> None:
        """Disarm."""
        call = self._call
        if call is not None and call.active():
            call.cancel()
        self._call = self._at = None

    def _run(self) -> None:
        self._call = self._at = None
        self.fire()
