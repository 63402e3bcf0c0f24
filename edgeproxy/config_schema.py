"""How a settings module describes its table of the configuration file: a :class:`Section` (the
class the table becomes and one checker per key) built from the checkers here.

Each package's ``settings.py`` holds its section next to its settings class, so the rules for a
key live with the field they fill; :mod:`edgeproxy.config` only reads the file and hands each table
to its section. Pure: the standard library and :class:`~edgeproxy.config_error.ConfigError` only,
so any layer may describe its settings without importing the ones above it.

A checker takes ``(key, value, context)`` -- the dotted key to name in an error, the TOML value, a
:class:`Context` -- and returns the value to store, or raises :class:`ConfigError` (one line).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from .config_error import ConfigError

__all__ = [
    "Checker", "Context", "Section", "show", "unknown",
    "integer", "seconds", "zero_or_seconds", "boolean", "choice", "text", "path_text", "file_path", "table_rows",
]


@dataclass(frozen=True)
class Context:
    """What a checker may need besides the value: ``base_dir``, the directory relative paths resolve
    against (the config file's, or the current directory for command-line values)."""

    base_dir: str

    def path(self, text: str) -> str:
        """``text`` (``~`` expanded) as an absolute, normalised path."""
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(text)))


Checker = Callable[[str, Any, Context], Any]

S = TypeVar("S")
R = TypeVar("R")


def show(value: object) -> str:
    """A value as the operator wrote it (TOML spelling), shortened to fit in one line."""
    if isinstance(value, bool):
        out = "true" if value else "false"
    elif isinstance(value, str):
        out = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, (list, tuple)):
        out = "[" + ", ".join(show(v) for v in value) + "]"
    elif isinstance(value, dict):
        out = "a table"
    else:
        out = str(value)
    return out if len(out) <= 80 else out[:77] + "..."


def unknown(key: str, what: str, known: list[str]) -> ConfigError:
    """The error for a name nobody knows, with the closest known one as a hint."""
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f'did you mean "{close[0]}"?' if close else "expected one of " + ", ".join(sorted(known))
    return ConfigError(key, f"unknown {what} ({hint})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int, maximum: int | None = None) -> Checker:
    """An integer from ``minimum`` (to ``maximum``)."""
    wanted = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def check(key: str, value: Any, ctx: Context) -> int:
        if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
            raise ConfigError(key, f"must be {wanted}, got {show(value)}")
        return int(value)

    return check


def seconds(key: str, value: Any, ctx: Context) -> float:
    """A positive number of seconds."""
    if not _is_number(value) or value <= 0:
        raise ConfigError(key, f"must be a number of seconds > 0, got {show(value)}")
    return float(value)


def zero_or_seconds(key: str, value: Any, ctx: Context) -> float:
    """A number of seconds where 0 switches the thing off."""
    if not _is_number(value) or value < 0:
        raise ConfigError(key, f"must be a number of seconds >= 0 (0: off), got {show(value)}")
    return float(value)


def boolean(key: str, value: Any, ctx: Context) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {show(value)}")
    return value


def choice(*options: str, aliases: Mapping[str, str] | None = None) -> Checker:
    """One of ``options`` (any case, surrounding blanks ignored; ``aliases`` map other spellings)."""
    names = ", ".join(f'"{o}"' for o in options)

    def check(key: str, value: Any, ctx: Context) -> str:
        if isinstance(value, str):
            v = value.strip().lower()
            v = (aliases or {}).get(v, v)
            if v in options:
                return v
        raise ConfigError(key, f"must be one of {names}, got {show(value)}")

    return check


def text(key: str, value: Any, ctx: Context) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {show(value)}")
    return value


def path_text(key: str, value: Any, ctx: Context, what: str = "file") -> str:
    """A ``what`` path string, resolved relative to the config file's directory; "" for none."""
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a {what} path string, got {show(value)}")
    return ctx.path(value.strip()) if value.strip() else ""


def file_path(key: str, value: Any, ctx: Context) -> str:
    """A file that must exist (relative to the config file's directory); "" for none."""
    path = path_text(key, value, ctx)
    if path and not os.path.isfile(path):
        raise ConfigError(key, f"no such file: {show(path)}")
    return path


def table_rows(columns: Sequence[str], parse: Callable[[Mapping[str, Any]], R],
               error: type[ValueError]) -> Checker:
    """An array of tables (``[[key]]``), each one row of a database table the file may hold instead
    (OpenSIPS's ``dispatcher``, ``address``): only ``columns`` (OpenSIPS's column names), whose values
    are numbers and strings as SQL would hand them, never true/false. ``parse`` -- the same function
    that checks the database's rows -- turns a row into what is stored, raising ``error`` (one line)
    when the row cannot be used; that stops the node naming the row, as ``key[i]``."""
    known = list(columns)

    def check(key: str, value: Any, ctx: Context) -> tuple[R, ...]:
        if not isinstance(value, list):
            raise ConfigError(key, f"must be an array of tables ([[{key}]]), got {show(value)}")
        rows = []
        for i, row in enumerate(value):
            where = f"{key}[{i}]"
            if not isinstance(row, dict):
                raise ConfigError(where, f"must be a table with {', '.join(known[:5])}, ..., got {show(row)}")
            for name in row:
                if name not in columns:
                    raise unknown(f"{where}.{name}", "column", known)
            if any(isinstance(v, bool) for v in row.values()):
                raise ConfigError(where, "columns are numbers and strings, not true/false")
            try:
                rows.append(parse(row))
            except error as exc:
                raise ConfigError(where, str(exc)) from None
        return tuple(rows)

    return check


@dataclass(frozen=True)
class Section(Generic[S]):
    """One table of the file: the class it becomes and a checker per key.

    Each key is the field of ``cls`` of the same name; a key the file leaves out takes the class's own
    default, so a default is written once, next to the field it belongs to. ``defaults`` holds the
    rare exception: a key whose node default deliberately differs from the library's (each one says
    why where the section is described). ``before`` checks rules between keys on what each key will
    be (see :meth:`value`) before the class is built; ``after`` checks the built settings. Both raise
    :class:`ConfigError` naming the key to change. ``optional``: the node holds None, not the
    defaults, when the file has no such table (a feature the table switches on).
    """

    cls: Callable[..., S]
    checkers: Mapping[str, Checker]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    before: Callable[[Section[S], Mapping[str, Any]], None] | None = None
    after: Callable[[S], None] | None = None
    optional: bool = False

    def value(self, values: Mapping[str, Any], key: str) -> Any:
        """What ``key`` will be: the checked value, else the node's default, else the class's."""
        if key in values:
            return values[key]
        if key in self.defaults:
            return self.defaults[key]
        assert is_dataclass(self.cls)
        found = next(f for f in fields(self.cls) if f.name == key)
        if found.default is MISSING and found.default_factory is not MISSING:
            return found.default_factory()
        return found.default

    def build(self, name: str, values: Mapping[str, Any]) -> S:
        """The checked settings. A settings class that still refuses the values (a rule between keys
        the section does not check first) is reported as one line too, not as a traceback."""
        if self.before is not None:
            self.before(self, values)
        try:
            settings = self.cls(**{**self.defaults, **values})
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None
        if self.after is not None:
            self.after(settings)
        return settings

    def default(self) -> S:
        """The section when the file does not have it."""
        return self.cls(**self.defaults)
