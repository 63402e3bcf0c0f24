"""OpenSIPS ``tm``'s route verbs: the per-transaction timers (``$T_fr_timeout``,
``$T_fr_inv_timeout``; Kamailio's ``t_set_fr`` / ``t_reset_fr``) and what a failure route asks about
the branches (``t_check_status``, ``t_local_replied``).

:class:`TmVerbs` is a part of :class:`~edgeproxy.routing.verbs.RouteVerbs` (the one implementation,
run by the node and by :class:`~edgeproxy.routing.testing.RouteHarness` alike) and :class:`TmRequest`
of :class:`~edgeproxy.routing.api.RouteRequest` (``msg``). The timers take effect in the proxy core
(:meth:`edgeproxy.proxy.branches.BranchLauncher.branch_timers`), which reads the values the verbs leave
in the request's :class:`~edgeproxy.proxy.context.RouteState`.
"""

from __future__ import annotations

import re

from ..proxy.context import RouteState
from ..transaction import TimerSettings
from .part import RequestPart

__all__ = ["TmVerbs", "TmRequest"]


class TmVerbs:
    """The tm verbs over a request's :class:`RouteState` and the node's ``[timers]``."""

    timers: TimerSettings

    def fr_timeout(self, route: RouteState, inv: bool) -> float | None:
        """``$T_fr_timeout`` (``inv`` False) / ``$T_fr_inv_timeout``: the route's value, else the node's
        (Timer B for an INVITE, F otherwise / Timer C; None when Timer C is off)."""
        value = route.fr_inv_timeout if inv else route.fr_timeout
        if value is not None:
            return value
        if inv:
            return self.timers.c
        return self.timers.b if route.request.method == "INVITE" else self.timers.f

    @staticmethod
    def set_fr_timeout(route: RouteState, inv: bool, seconds: float | None) -> None:
        """Assign ``$T_fr_timeout`` / ``$T_fr_inv_timeout`` (seconds) for the branches this
        transaction sends from now on; None or 0 restores the node's value (OpenSIPS
        ``t_funcs.h: is_timeout_set``). Anything but a number >= 0 is the route's bug: ValueError."""
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not seconds >= 0 or seconds == float("inf")):
            raise ValueError(f"{'$T_fr_inv_timeout' if inv else '$T_fr_timeout'} must be seconds >= 0, "
                             f"got {seconds!r}")
        value = float(seconds) if seconds else None
        if inv:
            route.fr_inv_timeout = value
        else:
            route.fr_timeout = value

    @staticmethod
    def t_check_status(route: RouteState, pattern: str) -> bool:
        """OpenSIPS ``t_check_status(re)``: the status of the reply the failure route handles
        (``$T_reply_code``) matches ``pattern`` -- searched, not anchored, as OpenSIPS's
        ``regexec``; False where there is no such reply (a request route)."""
        reply = route.reply
        return reply is not None and re.search(pattern, str(reply.status)) is not None

    @staticmethod
    def t_local_replied(route: RouteState, which: str) -> bool:
        """OpenSIPS ``t_local_replied("all"|"branch"|"last")``, extended with ``"any"``: whether the
        final replies of the transaction's branches were generated here (a timeout's 408, a
        transport error's 503/477) rather than received. ``"all"``: every branch's; ``"any"``: at
        least one; ``"branch"``/``"last"``: the one the failure route sees as ``msg.reply``."""
        ctx = route.ctx
        if ctx is None:
            return False
        finals = [b for b in ctx.branches if b.final is not None]
        if which == "all":
            return bool(finals) and all(not b.received for b in finals)
        if which == "any":
            return any(not b.received for b in finals)
        if which in ("branch", "last"):
            reply = route.reply
            return any(b.final is reply and not b.received for b in finals)
        raise ValueError(f't_local_replied: "all", "any", "branch" or "last", got {which!r}')


class TmRequest(RequestPart):
    """``msg``'s tm pseudo-variables and functions (a part of :class:`~edgeproxy.routing.api.RouteRequest`)."""

    __slots__ = ()

    @property
    def T_fr_timeout(self) -> float | None:  # noqa: N802 - OpenSIPS's $T_fr_timeout
        """OpenSIPS ``$T_fr_timeout`` (seconds): how long each branch of this transaction waits for
        a first reply (Timer B / F) before it ends with a local 408 and the failure route runs.
        Assign before ``t_relay()`` (or in the failure route, for the branches it adds); None or 0
        restores the node's value, which is what reading returns until then."""
        return self._verbs.fr_timeout(self._state, False)

    @T_fr_timeout.setter
    def T_fr_timeout(self, seconds: float | None) -> None:  # noqa: N802
        self._verbs.set_fr_timeout(self._state, False, seconds)

    @property
    def T_fr_inv_timeout(self) -> float | None:  # noqa: N802 - OpenSIPS's $T_fr_inv_timeout
        """OpenSIPS ``$T_fr_inv_timeout`` (seconds): how long an INVITE branch that has answered
        provisionally waits for its final (Timer C, from the first reply); then it is CANCELled and
        ends with a local 408."""
        return self._verbs.fr_timeout(self._state, True)

    @T_fr_inv_timeout.setter
    def T_fr_inv_timeout(self, seconds: float | None) -> None:  # noqa: N802
        self._verbs.set_fr_timeout(self._state, True, seconds)

    def t_set_fr(self, fr_inv_ms: int, fr_ms: int = 0) -> None:
        """Kamailio ``t_set_fr(fr_inv_timeout, fr_timeout)`` in milliseconds; 0 leaves that one as
        it is (Kamailio ``tm`` docs)."""
        if fr_inv_ms:
            self._verbs.set_fr_timeout(self._state, True, fr_inv_ms / 1000)
        if fr_ms:
            self._verbs.set_fr_timeout(self._state, False, fr_ms / 1000)

    def t_reset_fr(self) -> None:
        """Kamailio ``t_reset_fr()``: back to the node's ``[timers]``."""
        self._verbs.set_fr_timeout(self._state, False, None)
        self._verbs.set_fr_timeout(self._state, True, None)

    def t_check_status(self, pattern: str) -> bool:
        """OpenSIPS ``t_check_status(re)``: in a failure route, whether the reply's status matches
        ``pattern`` (a regular expression searched in the three digits, as OpenSIPS does)."""
        return self._verbs.t_check_status(self._state, pattern)

    def t_local_replied(self, which: str = "all") -> bool:
        """OpenSIPS ``t_local_replied("all"|"branch"|"last")`` (and ``"any"``): whether the failed
        branches' finals were made by this node -- a timeout's 408 -- rather than received."""
        return self._verbs.t_local_replied(self._state, which)
