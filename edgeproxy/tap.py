"""``twistd edgeproxy``: the command line and the service maker, in the shape of ``twisted/names/tap.py``.

``twistd -n edgeproxy`` with no options runs a single node on 127.0.0.1:5060 (UDP and TCP) with the
shipped default route. Options override the file given with ``--config``; everything is checked in
:meth:`Options.postOptions`, before twistd daemonizes, so a broken configuration or route module is
reported as one line and a non-zero exit status instead of a traceback in a log file.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from twisted.application.service import IService
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
)
from twisted.python import usage

from .config import Config, ConfigError, load_config
from .management.loglevel import register_level_filter
from .node_settings import LOG_LEVELS

__all__ = ["Options", "makeService"]

_TWISTED_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}


class Options(usage.Options):
    """``twistd edgeproxy`` options. After parsing, :attr:`config` holds the checked configuration."""

    synopsis = "[-c FILE] [-l SPEC ...] [-r ROUTE] [--log-level LEVEL]"
    longdesc = (
        "Run one edgeproxy node: a SIP registrar and stateful proxy whose routing is a Python module. "
        "Without --config it listens on udp:127.0.0.1:5060 and tcp:127.0.0.1:5060 and uses the shipped "
        "default route. Command-line options replace the matching keys of the configuration file."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (default: built-in single-node settings)."],
        ["route", "r", None, "Route module: a .py file or a dotted module name (replaces node.route)."],
        ["log-level", None, None, f"One of {', '.join(LOG_LEVELS)}, or OpenSIPS's -4..4 (replaces node.log_level)."],
    ]
    compData = usage.Completions(
        optActions={
            "config": usage.CompleteFiles("*.toml"),
            "route": usage.CompleteFiles("*.py"),
            "log-level": usage.CompleteList(list(LOG_LEVELS)),
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self.config: Config | None = None
        self._config_error: ConfigError | None = None

    def opt_listen(self, spec: str) -> None:
        """Listen on transport:host:port (udp/tcp/tls/ws/wss, IPv6 in brackets); repeatable; replaces node.listen."""
        self["listen"].append(spec)

    opt_l = opt_listen

    def opt_version(self) -> None:
        """Print edgeproxy's version (with Twisted's and Python's) and exit."""
        import platform

        import twisted

        from . import __version__

        print(f"edgeproxy {__version__} (Twisted {twisted.__version__}, Python {platform.python_version()})")
        raise SystemExit(0)

    def overrides(self) -> dict[str, Any]:
        """The configuration keys given on the command line."""
        out: dict[str, Any] = {}
        if self["listen"]:
            out["node.listen"] = list(self["listen"])
        if self["route"] is not None:
            out["node.route"] = self["route"]
        if self["log-level"] is not None:
            out["node.log_level"] = self["log-level"]
        return out

    def postOptions(self) -> None:
        """Load and check the configuration and the route module; a problem is a UsageError."""
        try:
            config = load_config(self["config"], self.overrides())
            if config.federation is not None:
                # the MongoDB client runs on asyncio: install its reactor before anything else does --
                # the route module included, which may import twisted.internet.reactor at module level
                from .federation.reactor import FederationReactorError, arrange_asyncio_reactor

                try:
                    arrange_asyncio_reactor()
                except FederationReactorError as exc:
                    raise ConfigError("federation", str(exc)) from None
            _check_route(config)
        except ConfigError as exc:
            self._config_error = exc
            raise usage.UsageError(str(exc)) from exc
        self.config = config
        if self.parent is not None:
            _filter_twistd_logging(self.parent, config.node.log_level, config.node.log_format)

    def getUsage(self, width: int | None = None) -> str:
        """The usage text -- except under twistd after a configuration error.

        twistd answers a UsageError by printing the whole usage text and then the error. A mistake in
        a config file deserves one line, first: print it and exit with status 1 right there.
        """
        if self._config_error is not None and self.parent is not None:
            sys.stderr.write(f"{self._config_error}\n")
            sys.stderr.flush()
            raise SystemExit(1)
        return super().getUsage(width)


def _check_route(config: Config) -> None:
    """Import the route module now, so a typo in it stops the start with one line (the loader
    checks the route functions' signatures too)."""
    from .routing.loader import RouteLoadError, load_route_module

    try:
        load_route_module(config.node.route)
    except RouteLoadError as exc:
        raise ConfigError("node.route", str(exc)) from None


# What _filtered_observer builds: twistd's own log observer (or where a JSON one writes) and the
# lowest level to let through.
_twistd_log: tuple[Any, LogLevel, Any] | None = None


def _filter_twistd_logging(server_options: Any, level: str, log_format: str = "text") -> None:
    """Make twistd's log observer drop events below ``level``, show the message context of lines about
    a SIP message, and with ``log_format = "json"`` write JSON lines instead of text.

    twistd builds its observer (stdout, ``--logfile`` or ``--syslog``) after parsing the options, from
    the ``--logger`` factory when one is named. Unless the operator named one, name
    :func:`_filtered_observer`, which builds twistd's own observer and wraps it in a level filter.
    """
    global _twistd_log
    if server_options.get("logger"):
        return
    try:
        from twisted.scripts.twistd import _SomeApplicationRunner
    except ImportError:  # pragma: no cover - twistd internals moved: keep twistd's unfiltered default
        return
    plain = dict(server_options)
    plain["logger"] = None
    json_to = _json_log_file(server_options) if log_format == "json" else None
    _twistd_log = (_SomeApplicationRunner.loggerFactory(plain), _TWISTED_LEVELS[level], json_to)
    server_options["logger"] = f"{__name__}._filtered_observer"


def _json_log_file(server_options: Any) -> Any:
    """Where twistd would log (its ``--logfile``, ``-`` or no file in the foreground: stdout), for the
    JSON lines; None with ``--syslog``, which keeps twistd's own observer."""
    if server_options.get("syslog"):
        return None
    name = server_options.get("logfile")
    if name == "-" or (not name and server_options.get("nodaemon")):
        return sys.stdout
    from twisted.python.logfile import LogFile

    return LogFile.fromFullPath(name or "twistd.log")


def _filtered_observer() -> Callable[..., Any]:
    """The ``--logger`` factory set by :func:`_filter_twistd_logging`."""
    from .management.logformat import ContextObserver, json_observer

    assert _twistd_log is not None
    app_logger, level, json_to = _twistd_log
    if json_to is not None:
        observer = json_observer(json_to)
    else:
        observer = app_logger._getLogObserver()
        if not ILogObserver.providedBy(observer):
            observer = LegacyLogObserverWrapper(observer)
        observer = ContextObserver(observer)
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    register_level_filter(predicate)  # MI log_level moves it at run time
    return FilteringLogObserver(observer, [predicate])


def makeService(options: Options) -> IService:
    """The twistd service for the checked configuration (see :func:`edgeproxy.service.make_service`)."""
    from .service import make_service

    assert options.config is not None, "parseOptions() must run before makeService()"
    _one_line_startup_errors()
    return make_service(options.config)


def _one_line_startup_errors() -> None:
    """In the foreground a :class:`~edgeproxy.service.StartupError` leaves twistd (exit status 1) as
    one line on stderr, like a configuration error, instead of a traceback; other exceptions keep
    Python's report. (As a daemon, twistd's parent prints the reason it gets from the child.)"""
    from .service import StartupError

    previous = sys.excepthook
    if getattr(previous, "edgeproxy_startup", False):
        return  # installed by an earlier makeService: one wrapper is enough

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if isinstance(value, StartupError):
            sys.stderr.write(f"edgeproxy: cannot start: {value}\n")
            return
        previous(kind, value, tb)

    hook.edgeproxy_startup = True  # type: ignore[attr-defined]
    sys.excepthook = hook
