"""Running ``async def`` code eagerly over Deferreds.

``ensureDeferred`` costs tens of microseconds per call, which is more than a whole REGISTER may cost.
Most awaits on the hot path are on Deferreds that have already fired (the in-memory location service
answers at once), so :func:`run_eagerly` steps the coroutine synchronously and only parks it on a
Deferred that has not fired yet. Semantics are those of ``Deferred.fromCoroutine``: the returned
Deferred fires with the coroutine's return value or fails with its exception.
"""

from __future__ import annotations

from typing import Any, Coroutine, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

__all__ = ["run_eagerly"]

T = TypeVar("T")


def run_eagerly(coro: Coroutine[Any, Any, T]) -> "Deferred[T]":
    """Run ``coro`` now, as far as it goes without waiting; a Deferred of its result."""
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        return succeed(stop.value)
    except BaseException:
        return fail()
    result: Deferred[T] = Deferred()
    _park(coro, awaited, result)
    return result


def _park(coro: Coroutine[Any, Any, Any], awaited: Any, result: "Deferred[Any]") -> None:
    if not isinstance(awaited, Deferred):
        coro.close()
        result.errback(TypeError(f"route code may only await Deferreds, not {awaited!r}"))
        return

    def resume(value: Any) -> None:
        # On success Deferred.__await__ re-reads the Deferred's own result when resumed, so nothing is
        # sent in; a failure is thrown in at the await (as inlineCallbacks does). Returning None keeps
        # the Failure from being reported as unhandled.
        try:
            if isinstance(value, Failure):
                nxt = value.throwExceptionIntoGenerator(coro)
            else:
                nxt = coro.send(None)
        except StopIteration as stop:
            result.callback(stop.value)
            return None
        except BaseException:
            result.errback(Failure())
            return None
        _park(coro, nxt, result)
        return None

    awaited.addBoth(resume)
