"""The timer values of RFC 3261 §17 (Table 4 of Appendix A) and RFC 6026 §8.11."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TimerSettings"]


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """Every transaction timer of RFC 3261 Appendix A (Table 4) and RFC 6026 §8.11, in seconds.

    The three base values are ``t1`` (RTT estimate), ``t2`` (the cap on the retransmit interval of
    non-INVITE requests and INVITE responses) and ``t4`` (maximum time a message stays in the
    network). The named timers default to the RFC formula; a field left at ``None`` follows ``t1``,
    so changing ``t1`` scales them as the RFC intends.

    Read the resolved values from the one-letter properties (``settings.b`` ...). Timers D, I, J and K
    exist only on unreliable transports (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2): on a reliable one
    they are zero, which the transactions turn into an immediate transition; ask
    :meth:`for_transport` for the value that applies.

    ``timer_c`` is the proxy INVITE timer of §16.6 step 11 / §16.8: "greater than 3 minutes"; OpenSIPS
    (``fr_inv_timeout``) and Kamailio (``fr_inv_timer``) use 120 s. It is restarted by every
    provisional response other than 100 (§16.7 step 2, like OpenSIPS ``restart_fr_on_each_reply``).
    ``None`` switches it off (a user agent has no Timer C).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_b: float | None = None
    timer_c: float | None = 180.0
    timer_d: float = 32.0
    timer_f: float | None = None
    timer_h: float | None = None
    timer_j: float | None = None
    timer_l: float | None = None
    timer_m: float | None = None

    def __post_init__(self) -> None:
        if not self.t1 > 0:
            raise ValueError("T1 must be positive")
        if self.t2 < self.t1:
            raise ValueError("T2 must not be smaller than T1")
        if self.t4 < 0 or self.timer_d < 0:
            raise ValueError("T4 and Timer D must not be negative")
        for name in ("timer_b", "timer_c", "timer_f", "timer_h", "timer_j", "timer_l", "timer_m"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive")

    def _64t1(self, value: float | None) -> float:
        return 64 * self.t1 if value is None else value

    @property
    def a(self) -> float:
        """Timer A, first INVITE retransmit interval (§17.1.1.2): T1, doubling, no cap."""
        return self.t1

    @property
    def b(self) -> float:
        """Timer B, INVITE transaction timeout (§17.1.1.2): 64*T1."""
        return self._64t1(self.timer_b)

    @property
    def c(self) -> float | None:
        """Timer C, proxy INVITE transaction timeout (§16.6 step 11, §16.8), or None when off."""
        return self.timer_c

    @property
    def d(self) -> float:
        """Timer D, wait for response retransmissions (§17.1.1.2): at least 32 s, unreliable only."""
        return self.timer_d

    @property
    def e(self) -> float:
        """Timer E, first non-INVITE retransmit interval (§17.1.2.2): T1, doubling up to T2."""
        return self.t1

    @property
    def f(self) -> float:
        """Timer F, non-INVITE transaction timeout (§17.1.2.2): 64*T1."""
        return self._64t1(self.timer_f)

    @property
    def g(self) -> float:
        """Timer G, first INVITE final-response retransmit interval (§17.2.1): T1, doubling up to T2."""
        return self.t1

    @property
    def h(self) -> float:
        """Timer H, wait for the ACK of a non-2xx final (§17.2.1): 64*T1."""
        return self._64t1(self.timer_h)

    @property
    def i(self) -> float:
        """Timer I, absorb ACK retransmissions (§17.2.1): T4, unreliable only."""
        return self.t4

    @property
    def j(self) -> float:
        """Timer J, absorb non-INVITE request retransmissions (§17.2.2): 64*T1, unreliable only."""
        return self._64t1(self.timer_j)

    @property
    def k(self) -> float:
        """Timer K, absorb non-INVITE response retransmissions (§17.1.2.2): T4, unreliable only."""
        return self.t4

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        """Timer L, absorb INVITE retransmissions after a 2xx (RFC 6026 §8.7): 64*T1, any transport."""
        return self._64t1(self.timer_l)

    @property
    def m(self) -> float:
        """Timer M, absorb 2xx retransmissions and forked 2xx (RFC 6026 §8.4): 64*T1, any transport."""
        return self._64t1(self.timer_m)

    @property
    def cancel_wait(self) -> float:
        """How long a client INVITE transaction waits for a final response once a CANCEL has gone
        out (§9.1: "64*T1 seconds"). The RFC gives this wait no letter."""
        return 64 * self.t1

    def for_transport(self, timer: str, reliable: bool) -> float:
        """The value of ``timer`` (a letter, ``"A"`` to ``"M"``) on a transport: D, I, J and K are
        zero on reliable transports (Table 4)."""
        if reliable and timer in ("D", "I", "J", "K"):
            return 0.0
        value = getattr(self, timer.lower())
        if value is None:
            raise ValueError(f"Timer {timer} is switched off")
        return float(value)
