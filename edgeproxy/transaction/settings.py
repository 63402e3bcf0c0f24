"""``[timers]``: the transaction timers of RFC 3261 Table 4, as a :class:`TimerSettings`.

::

    [timers]
    t1 = 0.5        # RTT estimate
    t2 = 4.0        # cap on the retransmit interval of non-INVITE requests and INVITE responses
    t4 = 5.0        # how long the network holds a message
    timer_c = 120   # proxy INVITE transaction timeout (OpenSIPS fr_inv_timeout)
    # timer_b, timer_f: INVITE / non-INVITE transaction timeouts; default 64 * t1
"""

from __future__ import annotations

from typing import Any, Mapping

from ..config_error import ConfigError
from ..config_schema import Section, seconds
from ._timers import TimerSettings

__all__ = ["SECTION"]


def _t2_not_below_t1(section: Section[TimerSettings], values: Mapping[str, Any]) -> None:
    """``timers.t2 >= t1``, checked before :class:`TimerSettings` is built: it refuses the values
    itself, but with a ValueError that does not name the key to change."""
    t1, t2 = section.value(values, "t1"), section.value(values, "t2")
    if t2 < t1:
        raise ConfigError("timers.t2", f"must be >= timers.t1 ({t1:g}), got {t2:g}")


SECTION: Section[TimerSettings] = Section(TimerSettings, {
    "t1": seconds,
    "t2": seconds,
    "t4": seconds,
    "timer_b": seconds,
    "timer_f": seconds,
    "timer_c": seconds,
}, defaults={
    # A node is a proxy in front of PBXs and trunks: OpenSIPS's fr_inv_timeout (Kamailio's
    # fr_inv_timer) of 120 s, what operators moving from them expect. TimerSettings keeps the
    # RFC's "greater than 3 minutes" (180 s) for the transaction layer used on its own.
    "timer_c": 120.0,
}, before=_t2_not_below_t1)
