"""Autobahn's debug log arguments, formatted only when a debug line is really written.

Autobahn calls ``self.log.debug("...", attrs=pformat(...), func=hltype(...), peer=hlval(...))``
on every connection and on every frame it sends or receives. txaio turns ``debug`` into a no-op
below the debug level, but Python evaluates the arguments first: pretty-printing the ~40 protocol
options costs about 290 µs per accepted connection (13 % of the node's CPU for a WSS handshake) and
the coloured ``hltype``/``hlval`` strings about 5 µs per frame -- for lines that are never written.

:func:`defer_debug_formatting` rebinds those three names, in the autobahn modules that use them,
to wrappers that return a small object doing the real formatting in ``__str__``/``__format__``, which
the log observer calls only when the line is emitted. Debug output is unchanged. The one use of
``pformat`` outside a log call, ``Timings.__str__``, keeps the real one. A future autobahn without
these names is simply not patched.
"""

from __future__ import annotations

from typing import Any, Callable

from ..interfaces import noteworthy

__all__ = ["defer_debug_formatting", "CountedLog", "peer_host_of"]

_MODULES = ("autobahn.websocket.protocol", "autobahn.twisted.websocket")
_NAMES = ("pformat", "hltype", "hlval")


class _Deferred:
    """``func(*args, **kwargs)``, computed when the log line is formatted."""

    __slots__ = ("func", "args", "kwargs")

    def __init__(self, func: Callable[..., str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def __str__(self) -> str:
        return str(self.func(*self.args, **self.kwargs))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return str(self)


def _lazy(func: Callable[..., str]) -> Callable[..., _Deferred]:
    def deferred(*args: Any, **kwargs: Any) -> _Deferred:
        return _Deferred(func, args, kwargs)

    deferred.__wrapped__ = func  # type: ignore[attr-defined]
    return deferred


def defer_debug_formatting() -> list[str]:
    """Make autobahn's debug-log arguments lazy (idempotent); returns the names rebound."""
    import importlib

    done = []
    for module_name in _MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # pragma: no cover - autobahn without its Twisted flavour
            continue
        for name in _NAMES:
            func = getattr(module, name, None)
            if func is None or not callable(func) or hasattr(func, "__wrapped__"):
                continue
            setattr(module, name, _lazy(func))
            done.append(f"{module_name}.{name}")
            if name == "pformat":
                timings = getattr(module, "Timings", None)
                if timings is not None:
                    timings.__str__ = lambda self, _pformat=func: _pformat(self._timings)
    return done


class CountedLog:
    """Autobahn's own per-connection lines at info and above ("dropping connection to peer ...",
    "failing WebSocket connection ...", handshake timeouts), so that a slowloris or a fuzzer cannot
    turn connections into log lines (issue 16: 2,000 lines for 1,000 connections). A line that names
    its peer goes to ``note`` (the listener's :meth:`ConnectionRegistry.note_event
    <edgeproxy.interfaces.ConnectionRegistry.note_event>`: one line per source per interval, with
    counts) as a ``"<kind> dropped"`` event; the others, which name no source, through a counter:
    each distinct format is written the 1st, 2nd, 4th, 8th ... time, with how many there were.
    Debug and trace lines pass as they are (they are off at the operator's level). The formats are
    autobahn's literal strings, so the table of counts stays small."""

    def __init__(self, inner: Any, note: Callable[[str, str, str], None] | None = None, kind: str = "WS") -> None:
        self._inner = inner
        self._note = note
        self._kind = kind
        self._counts: dict[str, int] = {}

    def _counted(self, level: str, fmt: str, *args: Any, **kwargs: Any) -> None:
        peer = kwargs.get("peer")
        if self._note is not None and isinstance(peer, str):
            self._note(peer_host_of(peer), f"{self._kind} dropped", str(kwargs.get("reason") or fmt))
            return
        n = self._counts.get(fmt, 0) + 1
        if len(self._counts) < 1000 or fmt in self._counts:
            self._counts[fmt] = n
        if noteworthy(n):
            getattr(self._inner, level)(fmt + " [autobahn line {autobahn_count} of this kind]", *args,
                                        autobahn_count=n, **kwargs)

    def info(self, fmt: str, *args: Any, **kwargs: Any) -> None:
        self._counted("info", fmt, *args, **kwargs)

    def warn(self, fmt: str, *args: Any, **kwargs: Any) -> None:
        self._counted("warn", fmt, *args, **kwargs)

    def error(self, fmt: str, *args: Any, **kwargs: Any) -> None:
        self._counted("error", fmt, *args, **kwargs)

    def critical(self, fmt: str, *args: Any, **kwargs: Any) -> None:
        self._counted("critical", fmt, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # debug, trace, failure, emit ...
        return getattr(self._inner, name)


def peer_host_of(peer: str) -> str:
    """The address in autobahn's peer descriptor (``tcp4:192.0.2.1:5060``, ``tcp6:::1:5060``)."""
    _, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0] or rest
    return host.strip("[]")
