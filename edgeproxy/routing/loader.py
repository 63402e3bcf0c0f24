"""Loading a route module from a file path or a dotted name, failing at load time, not at 3 a.m."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

__all__ = ["RouteModule", "RouteLoadError", "load_route_module", "DEFAULT_ROUTE"]

DEFAULT_ROUTE = "edgeproxy_routes.default"


class RouteLoadError(Exception):
    """The route module cannot be used; the message names the module and the problem."""


@dataclass(frozen=True)
class RouteModule:
    """The route functions of a module: ``request_route`` is required, the others optional."""

    name: str
    module: ModuleType
    request_route: Callable[..., Any]
    onreply_route: Callable[..., Any] | None = None
    failure_route: Callable[..., Any] | None = None
    branch_route: Callable[..., Any] | None = None
    setup: Callable[..., Any] | None = None


def _import(spec: str) -> ModuleType:
    if spec.endswith(".py") or os.sep in spec or os.path.isfile(spec):
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise RouteLoadError(f"route module {spec!r}: no such file")
        name = "edgeproxy_route_" + os.path.splitext(os.path.basename(path))[0]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise RouteLoadError(f"route module {spec!r}: cannot be loaded")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        loader_spec.loader.exec_module(module)
        return module
    return _import_dotted(spec)


def _import_dotted(spec: str) -> ModuleType:
    """``package.module`` from the Python path, else from the current directory.

    ``twistd -n edgeproxy -r blocklist`` next to ``blocklist.py`` should find it, as ``python -m``
    would -- but the ``twistd`` script puts its own directory, not the current one, on ``sys.path``.
    So when the first part of the name is found nowhere else and the current directory holds it, the
    current directory joins the *end* of the path (installed packages keep precedence; the module's
    own imports of its neighbours then work too). Otherwise the error says what to do instead."""
    top = spec.partition(".")[0]
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name != top:
            raise  # the route module itself imports something missing: its own error
    cwd = os.getcwd()
    if os.path.isfile(os.path.join(cwd, f"{top}.py")) or os.path.isfile(os.path.join(cwd, top, "__init__.py")):
        if cwd not in sys.path:
            sys.path.append(cwd)
        importlib.invalidate_caches()
        return importlib.import_module(spec)
    raise RouteLoadError(
        f"route module {spec!r}: no module named {top!r} on the Python path or in the current directory"
        f" ({cwd}); name a file instead (\"{spec.replace('.', '/')}.py\", relative to the configuration"
        " file or, on the command line, to the current directory), or add its directory to PYTHONPATH")


#: The functions a route module may define, with how many arguments each takes.
HOOKS = (("request_route", 1), ("onreply_route", 2), ("failure_route", 1), ("branch_route", 2), ("setup", 1))


def _refuse_misspelled_hooks(spec: str, module: ModuleType) -> None:
    """A module-level function whose name is one letter or two away from a hook's (``onreply_rout``,
    ``failure_rute``) would silently never run: refuse it at load time, with the name it resembles."""
    hooks = [name for name, _ in HOOKS]
    for name, value in vars(module).items():
        if name in hooks or name.startswith("_") or not inspect.isfunction(value):
            continue
        if getattr(value, "__module__", None) != module.__name__:
            continue  # imported from elsewhere, e.g. a helper
        close = difflib.get_close_matches(name, hooks, n=1, cutoff=0.85)
        if close:
            raise RouteLoadError(f"route module {spec!r}: {name} looks like a misspelled {close[0]} "
                                 f"(rename it, or start its name with _ if it is a helper of yours)")


def _arity_ok(fn: Callable[..., Any], n: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return False
    return True


def load_route_module(spec: str | None) -> RouteModule:
    """Import ``spec`` (``path/to/routes.py`` or ``package.module``; empty → ``edgeproxy_routes.default``) and
    check its route functions' signatures."""
    spec = spec or DEFAULT_ROUTE
    try:
        module = _import(spec)
    except RouteLoadError:
        raise
    except Exception as exc:  # the user's module failed while importing
        raise RouteLoadError(f"route module {spec!r}: {type(exc).__name__}: {exc}") from exc
    _refuse_misspelled_hooks(spec, module)
    fns: dict[str, Any] = {}
    for name, arity in HOOKS:
        fn = getattr(module, name, None)
        if fn is None:
            continue
        if not callable(fn) or not _arity_ok(fn, arity):
            raise RouteLoadError(f"route module {spec!r}: {name} must be a function of {arity} argument(s)")
        fns[name] = fn
    if "request_route" not in fns:
        raise RouteLoadError(f"route module {spec!r}: defines no request_route(msg)")
    return RouteModule(spec, module, **fns)
