"""Aggregated logging of hostile input: malformed messages and flood drops, counted per source and
logged as one line per source per interval, so log volume is bounded whatever the input.

Issue 16 saw one info line per malformed message (20,000 fuzzed datagrams wrote ~5,000 lines; a long
fuzz run filled 38 rotated files): the log was itself an attack surface. Here the first event of a
source in an interval is logged at once (an operator watching sees it happen); what follows from that
source in the same interval is only counted, and when the interval ends one line per source gives the
counts by kind. A source that had a line in an interval gets no immediate line in the next one (its
events are only counted and summed up when that interval ends), and a summary due less than
:data:`MIN_GAP` seconds after the source's last line waits for the next interval: so one source
causes at most one line per ``MIN_GAP`` (1 s), and one per ``interval`` while it keeps on -- issue
16's acceptance, log lines <= 1 per source per second, whatever the input. At most ``max_sources``
sources get lines of their own per interval; the others are summed into one line. The counts are
also kept in total per kind (:attr:`NoiseLog.totals`) for the MI's statistics.

Every network-reachable refusal of the transports (connection limits, TLS and WebSocket handshakes,
431 for an endless upgrade head, streams cut for slowness, idle connections closed) and of the core
(malformed messages, flood drops, failed branches) goes through the node's one ``NoiseLog``, so the
bound holds across all of them together.

The interval runs on the clock the node is given (``callLater``), armed only while there is
something to report, so an idle node has no timer.
"""

from __future__ import annotations

from collections import Counter

from twisted.logger import Logger, LogLevel

from ..interfaces import Clock, Timer
from ..logcontext import message_context
from ..sip.message import Message

__all__ = ["NoiseLog", "MIN_GAP"]

MIN_GAP = 1.0
"""The least time, in seconds, between two lines about one source."""

log = Logger(namespace="edgeproxy.noise")


class NoiseLog:
    """One line per source per ``interval`` seconds for malformed input and flood drops."""

    def __init__(self, clock: Clock, interval: float = 10.0, max_sources: int = 20) -> None:
        self.clock = clock
        self.interval = interval
        self.max_sources = max_sources
        self.totals: Counter[str] = Counter()  # every event ever, by kind (statistics)
        self.lines = 0  # log lines written (what the attack suite reports)
        self._pending: dict[str, Counter[str]] = {}  # source -> kind -> count, this interval
        self._detail: dict[str, str] = {}  # source -> the detail of its last counted event, this interval
        self._level: dict[str, LogLevel] = {}  # source -> the most severe level of its events, this interval
        self._last_line: dict[str, float] = {}  # source -> its last line's time (this or the last interval's)
        self._others: Counter[str] = Counter()  # sources beyond max_sources, this interval
        self._other_sources: set[str] = set()
        self._timer: Timer | None = None

    def note(self, source: str, kind: str, detail: str = "", about: Message | None = None,
             level: LogLevel = LogLevel.info) -> None:
        """Count one event ``kind`` (e.g. ``"malformed"``, ``"flood dropped"``) from ``source``;
        ``detail`` (the status and reason) is logged with the first event of the interval, and the
        last counted one's with the interval's counts, with
        the context (:func:`~edgeproxy.logcontext.message_context`: Call-ID, transaction id) of
        ``about``, the message it is about -- read only for that line, not for the events counted.
        ``level`` is the line's severity: hostile input is ``info``, but an outage of our own (a
        database that does not answer) is an ``error`` the operator must see, bounded all the same;
        a summary line takes the most severe level of the events it counts."""
        self.totals[kind] += 1
        if level is not LogLevel.info and level > self._level.get(source, LogLevel.debug):
            self._level[source] = level
        pending = self._pending
        counts = pending.get(source)
        if counts is None:
            if len(pending) >= self.max_sources:
                if len(self._other_sources) < 100_000:
                    self._other_sources.add(source)
                self._others[kind] += 1
                self._arm()
                return
            said = self._last_line.get(source)
            if said is not None and self.clock.seconds() - said < self.interval:
                # it had a line less than an interval ago: counted, said when this interval ends
                pending[source] = Counter((kind,))
                if detail:
                    self._detail[source] = f"{kind}: {detail}"
                self._arm()
                return
            # the first event of the interval: logged now, not counted again in the summary
            pending[source] = Counter()
            self._last_line[source] = self.clock.seconds()
            self.lines += 1
            log.emit(level, "{kind} from {source}{detail} (more from it are counted, summarised every {interval:g} s)",
                     kind=kind, source=source, detail=f": {detail}" if detail else "", interval=self.interval,
                     **(message_context(about) if about is not None else {}))
        else:
            counts[kind] += 1
            if detail:
                self._detail[source] = f"{kind}: {detail}"
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.clock.callLater(self.interval, self.flush)

    def flush(self) -> None:
        """Log the interval's counts (one line per source that sent more than its first event, unless
        its last line is under :data:`MIN_GAP` old: then the counts wait for the next interval) and
        start a new interval."""
        self._timer = None
        pending, self._pending = self._pending, {}
        now = self.clock.seconds()
        last_line, self._last_line = self._last_line, {}
        details, self._detail = self._detail, {}
        levels, self._level = self._level, {}
        for source, counts in pending.items():
            said = last_line.get(source)
            if said is not None:
                self._last_line[source] = said  # a line this interval: none at once in the next
            if not counts:
                continue
            if said is not None and now - said < MIN_GAP:
                self._pending[source] = counts  # its first line was just now: summed up next time
                if source in details:
                    self._detail[source] = details[source]
                if source in levels:
                    self._level[source] = levels[source]
                continue
            self._last_line[source] = now
            self.lines += 1
            detail = details.get(source)
            log.emit(levels.get(source, LogLevel.info), "from {source} since its last line: {counts}{detail}",
                     source=source, counts=_describe(counts),
                     detail=f" (the last: {detail})" if detail else "")
        if self._others:
            self.lines += 1
            log.info("from {n} other sources in the last {interval:g} s: {counts}", n=len(self._other_sources),
                     interval=self.interval, counts=_describe(self._others))
            self._others = Counter()
            self._other_sources = set()
        if self._pending:
            self._arm()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def _describe(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
