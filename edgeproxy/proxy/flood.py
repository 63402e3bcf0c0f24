"""Flood detection per source address, as OpenSIPS's ``pike`` module does it.

A source that sends more than ``reqs_density_per_unit`` requests per ``sampling_time_unit`` seconds is
flooding: ``pike_check_req()`` answers False for its requests until its rate falls back under the
limit, and with ``check_all`` the node drops them before any route runs (no reply: a reply is what a
flood wants, and each one costs a send). The rate is a sliding window over the current and the
previous unit, so a burst that straddles two units is seen whole, and a source stays blocked for as
long as it keeps flooding (its dropped requests still count).

Memory is bounded: a source is forgotten ``remove_latency`` seconds after its last request, and at
most ``max_tracked`` sources are kept (the least recently seen go first: a spoofed-address flood
cannot grow the table, it can only make the detector forget quiet sources, which costs nothing).

Pure: the caller passes ``now`` (seconds), so tests drive it with numbers; the node passes its
clock's time. Who is blocked is evaluated at the time asked (:meth:`FloodDetector.blocked`): a source
that stopped is no longer listed once its burst has left the window, though it sent nothing since
(issue 16: ``pike_list`` kept showing sources that had stopped). ``clock`` gives that time when the
caller has none to pass (the MI); without one, the time of the latest request counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

__all__ = ["FloodSettings", "FloodDetector"]


@dataclass(frozen=True)
class FloodSettings:
    """``[pike]``: OpenSIPS pike's parameters of the same names, plus ``check_all`` (its
    ``check_route`` idea: check every request before routing) and ``trusted`` sources never checked
    (FreeSWITCH, carriers, the other nodes -- whose traffic is many users' traffic)."""

    sampling_time_unit: float = 2.0
    reqs_density_per_unit: int = 30
    remove_latency: float = 120.0
    check_all: bool = False
    trusted: tuple[str, ...] = ()
    max_tracked: int = 100_000

    def __post_init__(self) -> None:
        if self.sampling_time_unit <= 0 or self.remove_latency <= 0:
            raise ValueError("sampling_time_unit and remove_latency must be positive")
        if self.reqs_density_per_unit < 1 or self.max_tracked < 1:
            raise ValueError("reqs_density_per_unit and max_tracked must be at least 1")


#: a source's flooding episodes are reported (logged) at most once per this many seconds: one that
#: toggles at the limit would otherwise write two lines per sampling unit (issue 16)
REPORT_INTERVAL = 10.0


class _Source:
    __slots__ = ("unit", "count", "previous", "last", "blocked", "reported", "reported_at")

    def __init__(self, unit: int, now: float) -> None:
        self.unit = unit
        self.count = 0
        self.previous = 0
        self.last = now
        self.blocked = False
        self.reported = False  # the current episode was reported (so its end is too)
        self.reported_at = -REPORT_INTERVAL


class FloodDetector:
    """Counts requests per source address and says which sources flood (see the module docstring)."""

    def __init__(self, settings: FloodSettings = FloodSettings(), clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._latest = 0.0  # the time of the latest request counted
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._trusted = frozenset(settings.trusted)
        self.blocked_events = 0  # how many times a source became blocked (statistics)

    def __len__(self) -> int:
        return len(self._sources)

    def is_trusted(self, ip: str) -> bool:
        return ip in self._trusted

    def check(self, ip: str, now: float) -> bool:
        """Count one request from ``ip``; False when ``ip`` is flooding."""
        return self.check_and_report(ip, now)[0]

    def check_and_report(self, ip: str, now: float) -> tuple[bool, str | None]:
        """:meth:`check`, plus ``"blocked"`` / ``"unblocked"`` when ``ip`` just changed state (one
        log line per episode, not per dropped request; an episode starting within
        :data:`REPORT_INTERVAL` of the last reported one is counted, not reported)."""
        s = self.settings
        unit_length = s.sampling_time_unit
        unit = int(now // unit_length)
        sources = self._sources
        source = sources.get(ip)
        if source is None:
            self._forget_idle(now)
            if len(sources) >= s.max_tracked:
                sources.popitem(last=False)
            source = sources[ip] = _Source(unit, now)
        else:
            sources.move_to_end(ip)
            if unit != source.unit:
                source.previous = source.count if unit == source.unit + 1 else 0
                source.count = 0
                source.unit = unit
        source.count += 1
        source.last = now
        self._latest = now
        flooding = self._rate(source, now) > s.reqs_density_per_unit
        change = None
        if flooding != source.blocked:
            source.blocked = flooding
            if flooding:
                self.blocked_events += 1
                if now - source.reported_at >= REPORT_INTERVAL:
                    source.reported, source.reported_at = True, now
                    change = "blocked"
            elif source.reported:
                source.reported = False
                change = "unblocked"
        return not flooding, change

    def _rate(self, source: _Source, now: float) -> float:
        """The sliding window at ``now``: all of this unit, and the part of the previous unit still
        inside the window (nothing of units longer ago)."""
        unit_length = self.settings.sampling_time_unit
        unit = int(now // unit_length)
        if unit == source.unit:
            count, previous = source.count, source.previous
        elif unit == source.unit + 1:
            count, previous = 0, source.count
        else:
            return 0.0
        elapsed = min(max(now / unit_length - unit, 0.0), 1.0)
        return count + previous * (1.0 - elapsed)

    def is_blocked(self, ip: str, now: float | None = None) -> bool:
        """Whether ``ip`` is over the limit at ``now`` (default: the clock), without counting."""
        source = self._sources.get(ip)
        if source is None or not source.blocked:
            return False
        return self._rate(source, self._now(now)) > self.settings.reqs_density_per_unit

    def _now(self, now: float | None) -> float:
        if now is not None:
            return now
        return self._clock() if self._clock is not None else self._latest

    def blocked(self, now: float | None = None) -> list[str]:
        """Sources blocked at ``now`` (default: the clock), for operators (``pike_list``): those whose
        rate, evaluated now, is over the limit -- not those that were when they last sent."""
        now = self._now(now)
        limit = self.settings.reqs_density_per_unit
        return [ip for ip, source in self._sources.items() if source.blocked and self._rate(source, now) > limit]

    def _forget_idle(self, now: float) -> None:
        """Drop sources idle for ``remove_latency`` from the least recently seen end (amortised: only
        when a new source arrives)."""
        sources = self._sources
        horizon = now - self.settings.remove_latency
        while sources:
            ip, source = next(iter(sources.items()))
            if source.last > horizon:
                break
            del sources[ip]
