"""The node's log level at run time (MI ``log_level``), in OpenSIPS's numbers and our names.

``twistd edgeproxy`` filters its log with a :class:`~twisted.logger.LogLevelFilterPredicate` that
:mod:`edgeproxy.tap` puts inside a :class:`~twisted.logger.FilteringLogObserver` given to twistd as its
log observer, and registers here (:func:`register_level_filter`): ``tap`` is the layer above, so it
hands the predicate down rather than this module reaching into Twisted's observers for it. Tests
(and embedders) hand their own predicate over.

OpenSIPS prints a message when its level is at most the configured ``log_level``: L_ALERT -3,
L_CRIT -2, L_ERR -1, L_WARN 1, L_NOTICE 2, L_INFO 3, L_DBG 4. Mapped onto Twisted's levels:

======================  ==========  ===========================
OpenSIPS ``log_level``  our name    Twisted level
======================  ==========  ===========================
4                       debug       ``LogLevel.debug``
3, 2                    info        ``LogLevel.info``
1                       warn        ``LogLevel.warn``
0, -1                   error       ``LogLevel.error``
-2, -3, -4              critical    ``LogLevel.critical``
======================  ==========  ===========================

A level is reported back as 4, 3, 1, -1 or -2. Names (``debug``, ``info``, ``notice``, ``warn``,
``warning``, ``error``, ``err``, ``critical``, ``crit``, ``alert``) are accepted too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

from twisted.logger import (
    LogLevel,
    LogLevelFilterPredicate,
)

__all__ = ["LogLevelControl", "find_level_filters", "register_level_filter", "unregister_level_filter", "parse_level",
           "opensips_level", "level_name"]

_FROM_NUMBER = {4: LogLevel.debug, 3: LogLevel.info, 2: LogLevel.info, 1: LogLevel.warn, 0: LogLevel.error,
                -1: LogLevel.error, -2: LogLevel.critical, -3: LogLevel.critical, -4: LogLevel.critical}
_TO_NUMBER = {LogLevel.debug: 4, LogLevel.info: 3, LogLevel.warn: 1, LogLevel.error: -1, LogLevel.critical: -2}
_FROM_NAME = {"debug": LogLevel.debug, "dbg": LogLevel.debug, "info": LogLevel.info, "notice": LogLevel.info,
              "warn": LogLevel.warn, "warning": LogLevel.warn, "error": LogLevel.error, "err": LogLevel.error,
              "critical": LogLevel.critical, "crit": LogLevel.critical, "alert": LogLevel.critical}
_NAMES = {LogLevel.debug: "debug", LogLevel.info: "info", LogLevel.warn: "warn", LogLevel.error: "error",
          LogLevel.critical: "critical"}


def parse_level(value: Any) -> Any:
    """An OpenSIPS level (-4..4, as a number or numeric string) or a name, as a Twisted ``LogLevel``.
    Raises ValueError with the reason."""
    if isinstance(value, bool):
        raise ValueError("level must be a number from -4 to 4 or a name such as \"debug\"")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _FROM_NAME:
            return _FROM_NAME[text]
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"unknown level {value!r}: use -4..4 or one of debug, info, warn, error, "
                             "critical") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value in _FROM_NUMBER:
        return _FROM_NUMBER[value]
    raise ValueError(f"level must be a number from -4 to 4 or a name such as \"debug\", got {value!r}")


def opensips_level(level: Any) -> int:
    """The OpenSIPS number reported for a Twisted level."""
    return _TO_NUMBER.get(level, 3)


def level_name(level: Any) -> str:
    return _NAMES.get(level, level.name)


#: The level predicates of the node's log observers, registered by whoever builds them
#: (:mod:`edgeproxy.tap` for twistd's observer); weak enough for tests to register their own.
_LEVEL_FILTERS: list[LogLevelFilterPredicate] = []


def register_level_filter(predicate: LogLevelFilterPredicate) -> None:
    """Make ``predicate`` one that MI ``log_level`` reads and moves."""
    if predicate not in _LEVEL_FILTERS:
        _LEVEL_FILTERS.append(predicate)


def unregister_level_filter(predicate: LogLevelFilterPredicate) -> None:
    if predicate in _LEVEL_FILTERS:
        _LEVEL_FILTERS.remove(predicate)


def find_level_filters() -> list[LogLevelFilterPredicate]:
    """The registered level predicates. Empty when twistd was given its own ``--logger`` (then there
    is no level filter of ours to move)."""
    return list(_LEVEL_FILTERS)


class DecisionLogging(Protocol):
    """The proxy node's per-decision debug lines (:meth:`edgeproxy.node.Node.set_log_decisions`)."""

    def set_log_decisions(self, enabled: bool) -> None: ...


class LogLevelControl:
    """Reads and moves the node's log level.

    ``filters`` are the level predicates to move (default: :func:`find_level_filters`, looked up at
    each call); ``node`` is the proxy :class:`~edgeproxy.node.Node`, whose per-decision debug
    lines (``ProxySettings.log_decisions``) follow the level; ``initial`` the configured
    ``node.log_level``, reported when there is no filter to read.
    """

    def __init__(self, node: DecisionLogging | None = None,
                 filters: Iterable[LogLevelFilterPredicate] | Callable[[], list] | None = None,
                 initial: str = "info") -> None:
        self.node = node
        self._filters = filters
        self._fallback = parse_level(initial)

    def filters(self) -> list[LogLevelFilterPredicate]:
        if self._filters is None:
            return find_level_filters()
        if callable(self._filters):
            return list(self._filters())
        return list(self._filters)

    @property
    def level(self) -> Any:
        """The Twisted level in force (the first filter's default level)."""
        filters = self.filters()
        if filters:
            return filters[0].logLevelForNamespace("")
        return self._fallback

    def set(self, value: Any) -> Any:
        """Move every filter to ``value`` (see :func:`parse_level`); returns the Twisted level.
        Raises ValueError for a bad value, LookupError when there is no filter to move."""
        level = parse_level(value)
        filters = self.filters()
        if not filters:
            raise LookupError("no log level filter to change (twistd was given its own --logger)")
        for predicate in filters:
            predicate.defaultLogLevel = level
            predicate.setLogLevelForNamespace("", level)
        if self.node is not None:
            self.node.set_log_decisions(level == LogLevel.debug)
        self._fallback = level
        return level
