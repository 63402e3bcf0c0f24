"""The JSON-RPC side of the MI: OpenSIPS's error codes, :class:`MIError`, and :class:`Command`, one
command with the parameter lists it accepts (OpenSIPS's "recipes") and how JSON-RPC ``params`` bind to
them. No command and no HTTP here: :mod:`.commands` builds the table, :mod:`.http` carries it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = [
    "MIError", "Command", "invalid_params",
    "PARSE_ERROR", "INVALID_REQUEST", "METHOD_NOT_FOUND", "INVALID_PARAMS", "SERVER_ERROR",
]

# JSON-RPC 2.0 error codes (OpenSIPS mi/item.h uses the same, -32000 for a failed command)
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000


class MIError(Exception):
    """A JSON-RPC error answer: ``code``, ``message`` and optional ``data`` (OpenSIPS puts the details
    of -32602 there)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code} {message}" + (f" ({data})" if data is not None else ""))
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


def invalid_params(detail: str) -> MIError:
    return MIError(INVALID_PARAMS, "Invalid params", detail)


@dataclass(frozen=True)
class Command:
    """One MI command: its name, the parameter lists it accepts (OpenSIPS "recipes"), the function
    run with them as keywords, and for ``which``/``help`` its help text and module. ``list_param``
    names a command's one array parameter, which may also come as the positional params themselves
    (``get_statistics ["core:", "tm:"]``). ``changes`` marks commands logged at info level."""

    name: str
    recipes: tuple[tuple[str, ...], ...]
    run: Callable[..., Any]
    help: str
    module: str = "core"
    available: Callable[[], bool] = field(default=lambda: True)
    list_param: str | None = None
    changes: bool = False

    def describe(self) -> str:
        return " or ".join(f"({', '.join(r)})" if r else "no parameters" for r in self.recipes)

    def bind(self, params: Any) -> dict[str, Any]:
        """The keywords for :attr:`run` from JSON-RPC ``params``; raises -32602 when none fits."""
        if params is None or params == [] or params == {}:
            if () in self.recipes:
                return {}
            raise invalid_params(f"{self.name} takes {self.describe()}; no parameters were given")
        if isinstance(params, list):
            if self.list_param is not None:
                value = params[0] if len(params) == 1 and isinstance(params[0], list) else params
                return {self.list_param: value}
            # OpenSIPS (mi.c get_cmd_recipe): positional params take the first recipe of their count,
            # so ds_list [1] is (full), as opensips-cli sends it
            matches = [r for r in self.recipes if r and len(r) == len(params)]
            if matches:
                return dict(zip(matches[0], params, strict=True))
            raise invalid_params(f"{self.name} takes {self.describe()}; got {len(params)} positional "
                                 f"parameter{'s' if len(params) != 1 else ''}")
        if isinstance(params, dict):
            keys = set(params)
            for recipe in self.recipes:
                if recipe and set(recipe) == keys:
                    return dict(params)
            raise invalid_params(f"{self.name} takes {self.describe()}; got ({', '.join(params)})")
        raise invalid_params(f"{self.name} takes {self.describe()}; params must be an array or an object")
