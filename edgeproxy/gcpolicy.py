"""The node's garbage-collection policy (:class:`GarbagePolicy`, ``node.gc_full_interval``): started
and stopped with the twistd service (:class:`edgeproxy.service.NodeService`)."""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

if TYPE_CHECKING:  # pragma: no cover
    from twisted.internet.task import LoopingCall

__all__ = ["GarbagePolicy"]

log = Logger(namespace="edgeproxy.service")  # its lines are the service's, as before it had a module


class GarbagePolicy:
    """When CPython's cyclic garbage collector may run.

    The message path makes no cyclic garbage (transaction contexts break their cycles when they
    end), yet CPython's automatic full collections walk the whole heap — every live transaction and
    binding — whenever it has grown by a quarter: at a few hundred calls/s that was a 50-170 ms stall
    every second, collecting nothing. So: everything built at start-up is frozen out of the
    collector's sight, young generations are collected as usual, and the full pass runs on a timer
    (``node.gc_full_interval`` seconds; 0 leaves CPython's defaults alone).
    """

    def __init__(self, interval: float, clock: IReactorTime | None = None) -> None:
        self.interval = interval
        self.clock = clock
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        gc.freeze()
        if not self.interval:
            return
        self._defaults = gc.get_threshold()
        gc.set_threshold(2_000, 10, 1_000_000_000)  # young generations only, automatically
        from twisted.internet.task import LoopingCall

        self._loop = LoopingCall(self.collect)
        if self.clock is not None:
            self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def collect(self) -> int:
        started = time.perf_counter()
        found = gc.collect()
        # debug: every five minutes by default, nothing an operator acts on at the default level
        log.debug("full garbage collection: {found} objects in {ms:.0f} ms", found=found,
                 ms=(time.perf_counter() - started) * 1000)
        return found

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            gc.set_threshold(*self._defaults)
