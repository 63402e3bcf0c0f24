"""A DNS answer cache bounded by TTL and by size, clock-free (the caller passes ``now``).

Why our own: the answers a SIP proxy needs repeat on every call to the same trunk, so without a
cache each call would wait for a round trip or three; with Twisted's ``CacheResolver`` nothing bounds
the number of entries (a flood of calls to random domains would grow it without limit). Here an
entry lives for its TTL (at most :data:`MAX_TTL`), the least recently used one goes when the cache is
full, and answers that carry no information (failures, TTL 0) are never stored.
"""

from __future__ import annotations

from collections import OrderedDict

from .records import Answer, Question

__all__ = ["AnswerCache", "MAX_TTL"]

#: No answer is kept longer than this (seconds), whatever its TTL says: a zone change is seen within it.
MAX_TTL = 3600.0


class AnswerCache:
    """Up to ``size`` answers, each until ``now + ttl``; ``size`` 0 caches nothing."""

    def __init__(self, size: int, max_ttl: float = MAX_TTL) -> None:
        self.size = size
        self.max_ttl = max_ttl
        self._entries: OrderedDict[Question, tuple[float, Answer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, question: Question, now: float) -> Answer | None:
        """The cached answer, if one is still fresh at ``now`` (an expired one is dropped)."""
        entry = self._entries.get(question)
        if entry is None:
            return None
        expires, answer = entry
        if now >= expires:
            del self._entries[question]
            return None
        self._entries.move_to_end(question)
        return answer

    def put(self, question: Question, answer: Answer, now: float) -> None:
        """Keep ``answer`` for its TTL (capped); failed answers and TTL 0 are not kept."""
        ttl = min(answer.ttl, self.max_ttl)
        if self.size <= 0 or answer.failed or ttl <= 0:
            return
        self._entries[question] = (now + ttl, answer)
        self._entries.move_to_end(question)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
