"""The asyncio reactor: what the MongoDB store needs, and the Deferred bridge to it.

PyMongo's ``AsyncMongoClient`` runs on an asyncio event loop. Twisted's
``AsyncioSelectorReactor`` *is* an asyncio loop driving Twisted, so coroutines started on that loop
progress while the reactor runs, and ``Deferred.fromFuture`` turns them into Deferreds. Under any
other reactor (epoll, poll, select) nobody runs the loop and such a Deferred would never fire, so the
store refuses to start there (:func:`require_asyncio_reactor`).

``twistd`` installs a reactor in one of two places: while parsing ``--reactor=NAME`` (before the
plugin's options are parsed), or, without that option, at the first import of
``twisted.internet.reactor`` — which happens after the plugin's ``Options.postOptions``. So the plugin
can call :func:`arrange_asyncio_reactor` from ``postOptions`` when the configuration has a store:
nothing installed yet → it installs the asyncio reactor; the asyncio reactor already chosen → fine;
another one chosen on the command line → :class:`FederationReactorError` with a one-line instruction.
(Measured cost of the asyncio reactor on a UDP echo: ``python bench/reactor_bench.py``.)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet.defer import Deferred

__all__ = [
    "FederationReactorError",
    "REACTOR_INSTRUCTION",
    "arrange_asyncio_reactor",
    "require_asyncio_reactor",
    "is_asyncio_reactor",
    "event_loop_of",
    "deferred_from_coroutine",
]

T = TypeVar("T")

REACTOR_INSTRUCTION = "run it as: twistd --reactor=asyncio -n edgeproxy ..."


class FederationReactorError(RuntimeError):
    """The running (or installed) reactor cannot drive the asyncio MongoDB client. One line."""


def is_asyncio_reactor(reactor: Any) -> bool:
    """Whether ``reactor`` is Twisted's asyncio reactor (an asyncio event loop drives it)."""
    try:
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor
    except ImportError:  # pragma: no cover - every supported Twisted has it
        return False
    return isinstance(reactor, AsyncioSelectorReactor)


def _installed_reactor() -> Any | None:
    """The installed global reactor, or None when none is installed yet (without installing one)."""
    return sys.modules.get("twisted.internet.reactor")


def require_asyncio_reactor(reactor: Any = None) -> Any:
    """Return ``reactor`` (default: the installed one) if it is the asyncio reactor; otherwise raise
    :class:`FederationReactorError` naming the reactor found and what to do."""
    if reactor is None:
        reactor = _installed_reactor()
        if reactor is None:
            raise FederationReactorError(
                "federation store: no Twisted reactor is installed yet; install the asyncio reactor "
                "(twisted.internet.asyncioreactor.install()) before importing twisted.internet.reactor, or "
                + REACTOR_INSTRUCTION)
    if not is_asyncio_reactor(reactor):
        raise FederationReactorError(
            f"federation store: the MongoDB client needs Twisted's asyncio reactor, not "
            f"{type(reactor).__name__}; {REACTOR_INSTRUCTION}")
    return reactor


def arrange_asyncio_reactor(loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """Make sure the global reactor is the asyncio one; return it.

    Installs ``AsyncioSelectorReactor`` (on ``loop``, or a new event loop) when no reactor is installed
    yet; accepts an installed asyncio reactor; raises :class:`FederationReactorError` (one line, with
    the command to use) when another reactor is already installed. Call it from ``twistd``'s plugin
    options (``postOptions``) — before anything imports ``twisted.internet.reactor``.
    """
    installed = _installed_reactor()
    if installed is not None:
        return require_asyncio_reactor(installed)
    from twisted.internet import asyncioreactor

    if loop is None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor


def event_loop_of(reactor: Any) -> asyncio.AbstractEventLoop:
    """The asyncio event loop that drives ``reactor`` (which must be the asyncio reactor)."""
    require_asyncio_reactor(reactor)
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None:  # pragma: no cover - Twisted renamed its attribute
        loop = asyncio.get_event_loop()
    return loop


def deferred_from_coroutine(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[T]]) -> "Deferred[T]":
    """Start the coroutine ``make()`` as a task on ``loop`` and return a Deferred of its result.

    Cancelling the Deferred cancels the task. ``make`` is called here, synchronously, so an exception
    while building the coroutine becomes a failed Deferred rather than escaping to the caller.
    """
    try:
        future = asyncio.ensure_future(make(), loop=loop)
    except Exception as exc:
        from twisted.internet.defer import fail

        return fail(exc)
    return Deferred.fromFuture(future)
