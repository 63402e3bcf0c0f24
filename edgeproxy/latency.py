"""A latency histogram cheap enough for the message path: fixed buckets, plain integer counters.

Why not ``prometheus_client.Histogram``: its ``observe`` takes a lock and walks the buckets, and the
library would then sit on the message path of every node. Here an observation is one ``bisect`` over
a tuple and two additions; nothing is allocated. The exposition side
(:mod:`edgeproxy.management.prometheus`) reads :attr:`LatencyHistogram.counts` and :attr:`sum` when
Prometheus scrapes, and turns them into the cumulative ``_bucket{le=...}`` series of the text format
(https://prometheus.io/docs/concepts/metric_types/#histogram). No Twisted here: the proxy core, the
node and the services record into it with whatever clock they have.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["LatencyHistogram", "DEFAULT_BOUNDS"]

#: Upper bounds in seconds: from a fast REGISTER (1 ms) to a call that rings for two minutes
#: (``timers.timer_c``'s default), roughly 1-2.5-5 per decade.
DEFAULT_BOUNDS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                     10.0, 30.0, 60.0, 120.0)


class LatencyHistogram:
    """Observations in seconds, counted into buckets by upper bound (``le``, inclusive); the last
    counter holds what is above every bound (``+Inf``)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BOUNDS) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError("bounds must be increasing and not empty")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, observations <= le)`` for each bound and ``+Inf``: the text format's buckets."""
        out = []
        total = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            total += n
            out.append((_le(bound), total))
        out.append(("+Inf", total + self.counts[-1]))
        return out

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0


def _le(bound: float) -> str:
    return repr(float(bound))
