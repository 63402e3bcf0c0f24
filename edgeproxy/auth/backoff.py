"""Back-off after repeated authentication failures, per user and per source address.

Issue 16: svcrack guessing 10 passwords a second -- under pike's rate -- found a password from a
list. OpenSIPS users build a lockout with ``ratelimit`` and ``htable`` in the script; here it is a
setting of ``[auth]`` (one table per user, one per source address). A key with ``max_failures`` wrong
credentials within ``window`` seconds is *backed off* for ``backoff`` seconds, doubled each time the
same key is backed off again (at most 16 times the base): while backed off, its credentials are not
checked at all -- every attempt fails the same way, the right password included -- so a guesser
learns nothing and the list takes days instead of minutes. A success clears the user's record (only
the user knows the password); a source's record ages out.

Memory is bounded: at most ``max_tracked`` keys, the least recently failed forgotten first (a
spoofed-source guesser can only make the table forget other guessers sooner). Pure: the caller passes
``now``.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["FailureBackoff"]

_MAX_FACTOR = 16


class _Entry:
    __slots__ = ("count", "since", "until", "strikes")

    def __init__(self, now: float) -> None:
        self.count = 0  # failures in the current window
        self.since = now  # start of the current window
        self.until = 0.0  # backed off until then
        self.strikes = 0  # back-offs so far: the next lasts backoff * 2**strikes


class FailureBackoff:
    """Failure counts and back-off deadlines per key (see the module docstring); ``max_failures``
    0 switches it off."""

    def __init__(self, max_failures: int, window: float, backoff: float, max_tracked: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window = window
        self.backoff = backoff
        self.max_tracked = max_tracked
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def blocked(self, key: str, now: float) -> bool:
        """Whether ``key`` is backed off at ``now``."""
        entry = self._entries.get(key)
        return entry is not None and entry.until > now

    def failed(self, key: str, now: float) -> bool:
        """Count one failure of ``key``; True when it starts a back-off."""
        if self.max_failures <= 0:
            return False
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            self._forget_idle(now)
            if len(entries) >= self.max_tracked:
                entries.popitem(last=False)
            entry = entries[key] = _Entry(now)
        else:
            entries.move_to_end(key)
        if entry.until > now:
            return False
        if now - entry.since > self.window:
            entry.count, entry.since = 0, now
        entry.count += 1
        if entry.count < self.max_failures:
            return False
        entry.until = now + self.backoff * min(2 ** entry.strikes, _MAX_FACTOR)
        entry.strikes += 1
        entry.count, entry.since = 0, now
        return True

    def succeeded(self, key: str) -> None:
        """``key`` authenticated: its failures and strikes are forgotten."""
        self._entries.pop(key, None)

    def _forget_idle(self, now: float) -> None:
        """Drop, from the least recently failed end, keys whose window and back-off are long over."""
        entries = self._entries
        horizon = self.window + self.backoff * _MAX_FACTOR
        while entries:
            key, entry = next(iter(entries.items()))
            if now - max(entry.since, entry.until) < horizon:
                break
            del entries[key]
