"""``edgeproxy-ctl``: the MI commands of a running node as readable tables, for people without opensips-cli.

It speaks what ``opensips-cli -o communication_type=http -o url=... -x mi CMD ARGS`` speaks: one
JSON-RPC 2.0 request ``POST`` ed to the node's ``[mi]`` listener (:mod:`edgeproxy.management.http`),
the arguments as positional params -- except for the statistics commands, whose arguments are the one
``statistics`` list, as opensips-cli sends them. The answer is printed as a table when it has a shape
one fits (``ul_dump``, ``get_statistics``, ``clusterer_list``, ``ps`` ...), as ``key: value`` lines for
a flat object, as JSON otherwise, and as the JSON the node sent with ``--json``. An MI error is
printed as ``error CODE: message`` on stderr, exit status 1; the node unreachable, exit status 2.

    edgeproxy-ctl [--url URL] [--token TOKEN] [--json] COMMAND [ARG ...]
    edgeproxy-ctl ul_dump
    edgeproxy-ctl get_statistics core: tm:
    edgeproxy-ctl ul_rm location alice

``--url`` defaults to ``$EDGEPROXY_MI_URL``, else ``http://127.0.0.1:8888/mi``; ``--token`` to
``$EDGEPROXY_MI_TOKEN`` (``[mi] token``). Only the standard library: no Twisted, no reactor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, Sequence, TextIO

__all__ = ["main", "call", "render", "MIFailure"]

DEFAULT_URL = "http://127.0.0.1:8888/mi"
#: Commands whose arguments are one list, ``statistics`` (opensips-cli's mi module does the same).
LIST_COMMANDS = ("get_statistics", "list_statistics", "reset_statistics")
_CONTACT_COLUMNS = ("Contact", "Expires", "Q", "Received", "Socket", "Cflags", "User-agent")


class MIFailure(Exception):
    """The node answered with a JSON-RPC error (``code``, ``message``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"error {code}: {message}")
        self.code = code
        self.message = message


def params_for(command: str, args: Sequence[str]) -> Any:
    if command in LIST_COMMANDS:
        return {"statistics": list(args)} if args else ({"statistics": ["all"]} if command == "get_statistics" else [])
    return list(args)


def call(url: str, command: str, args: Sequence[str] = (), token: str = "", timeout: float = 15.0) -> Any:
    """Run ``command`` on the node at ``url``: its result, or :class:`MIFailure`."""
    body = json.dumps({"jsonrpc": "2.0", "method": command, "params": params_for(command, args), "id": 1})
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body.encode("utf-8"), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        answer = json.load(reply)
    if "error" in answer:
        error = answer["error"]
        raise MIFailure(int(error.get("code", 0)), str(error.get("message", "")))
    return answer.get("result")


# -- rendering -----------------------------------------------------------------------------------------

def table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as an aligned text table: ``columns`` (default: every key, in first-seen order)."""
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def render(command: str, result: Any) -> str:
    """``result`` of ``command`` for a person (see the module docstring)."""
    if isinstance(result, dict) and "Domains" in result:  # ul_dump
        rows = []
        for domain in result["Domains"]:
            for aor in domain.get("AORs", []):
                contacts = aor.get("Contacts")
                if contacts is None:
                    rows.append({"AOR": aor.get("AOR")})
                for contact in contacts or []:
                    rows.append({"AOR": aor.get("AOR"), **{c: contact.get(c) for c in _CONTACT_COLUMNS}})
        columns = ("AOR",) if rows and all(len(r) == 1 for r in rows) else ("AOR", *_CONTACT_COLUMNS)
        return table(rows, columns) if rows else "(no registrations)"
    if isinstance(result, dict) and "AOR" in result and "Contacts" in result:  # ul_show_contact
        return table([{"AOR": result["AOR"], **{c: k.get(c) for c in _CONTACT_COLUMNS}} for k in result["Contacts"]],
                     ("AOR", *_CONTACT_COLUMNS))
    if isinstance(result, dict) and "Clusters" in result:  # clusterer_list
        rows = [{"cluster_id": c.get("cluster_id"), **n} for c in result["Clusters"] for n in c.get("Nodes", [])]
        return table(rows) if rows else "(no cluster nodes)"
    if isinstance(result, dict) and len(result) == 1:
        (only,) = result.values()
        if isinstance(only, list) and only and all(isinstance(r, dict) for r in only):
            return table(only)  # ps, log_level, dlg_list's "Dialogs", ...
        if isinstance(only, list) and all(_scalar(v) for v in only):
            return "\n".join(str(v) for v in only) if only else "(none)"  # pike_list
    if isinstance(result, dict) and all(_scalar(v) for v in result.values()):
        if command in LIST_COMMANDS:  # statistics: a two-column table
            return table([{"statistic": k, "value": v} for k, v in result.items()]) if result else "(none)"
        width = max((len(k) for k in result), default=0)
        return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in result.items())
    if isinstance(result, list) and all(_scalar(v) for v in result):
        return "\n".join(_cell(v) for v in result)  # which
    if isinstance(result, str):
        return result
    return json.dumps(result, indent=4, ensure_ascii=False)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(prog="edgeproxy-ctl", description="Run an MI command on an edgeproxy node.")
    parser.add_argument("--url", default=os.environ.get("EDGEPROXY_MI_URL", DEFAULT_URL),
                        help=f"the node's MI ([mi] listen + path); default $EDGEPROXY_MI_URL or {DEFAULT_URL}")
    parser.add_argument("--token", default=os.environ.get("EDGEPROXY_MI_TOKEN", ""),
                        help="[mi] token, sent as Authorization: Bearer (default $EDGEPROXY_MI_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the node's JSON as it is")
    parser.add_argument("command", help="an MI command: ul_dump, get_statistics, uptime, which, ...")
    parser.add_argument("args", nargs="*", help="its parameters, positional as opensips-cli takes them")
    options = parser.parse_args(argv)
    try:
        result = call(options.url, options.command, options.args, options.token)
    except MIFailure as exc:
        print(str(exc), file=err)
        return 1
    except urllib.error.HTTPError as exc:
        print(f"{options.url}: HTTP {exc.code} {exc.reason}", file=err)
        return 2
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"{options.url}: {getattr(exc, 'reason', exc)}", file=err)
        return 2
    print(json.dumps(result, indent=4, ensure_ascii=False) if options.json else render(options.command, result),
          file=out)
    return 0


if __name__ == "__main__":  # pragma: no cover - python -m edgeproxy.ctl
    sys.exit(main())
