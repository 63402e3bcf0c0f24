"""The dispatcher commands of the MI (OpenSIPS's dispatcher module: ``dispatcher.c`` mi_cmds,
``dispatch.c: ds_print_mi_list()``): ``ds_list``, ``ds_set_state``, ``ds_reload``, over the node's
:class:`~edgeproxy.dispatcher.Dispatcher`, with OpenSIPS's shapes and codes. There is one partition,
``default``; naming another is OpenSIPS's "unknown partition" error. State changes go through the
dispatcher, so they are logged, counted and shared with the cluster like a probe's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .parts import NodeParts
from .rpc import MIError

if TYPE_CHECKING:  # pragma: no cover
    from ..dispatcher import Dispatcher

__all__ = ["DispatcherCommands", "PARTITION"]

PARTITION = "default"


def _flag(value: Any, name: str) -> bool:
    """OpenSIPS's integer switches (``full``, ``inherit_state`` y/n)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in ("1", "y", "yes", "true", "0", "n", "no", "false"):
        return value.strip().lower() in ("1", "y", "yes", "true")
    raise MIError(500, f"Bad {name} value")


def _partition(name: Any) -> None:
    if name is not None and name != PARTITION:
        raise MIError(500, "Unknown partition")


class DispatcherCommands:
    """``ds_list``, ``ds_set_state``, ``ds_reload`` (a part of :class:`~.commands.MICommands`)."""

    parts: NodeParts

    def _dispatcher(self) -> "Dispatcher":
        ds = self.parts.dispatcher
        if ds is None:
            raise MIError(500, "No dispatcher")  # stopped since the command was looked up
        return ds

    def ds_list(self, full: Any = None, partition: Any = None) -> dict[str, Any]:
        """``{"PARTITIONS": [{"name": "default", "SETS": [{"id": 1, "Destinations": [{"URI", "state",
        "first_hit_counter", "socket"?, "attr"?, + with full: "weight", "priority", "description"}]}]}]}``;
        ``SETS`` absent when there are none."""
        _partition(partition)
        verbose = _flag(full, "full") if full is not None else False
        ds = self._dispatcher()
        sets = []
        for setid in sorted(ds.table.sets):
            dests = []
            for d in ds.table.sets[setid].destinations:
                item: dict[str, Any] = {"URI": d.uri, "state": d.state_name, "first_hit_counter": d.first_hit_counter}
                if d.socket:
                    item["socket"] = d.socket
                if d.attrs:
                    item["attr"] = d.attrs
                if verbose:
                    item["weight"] = d.weight
                    item["priority"] = d.priority
                    if d.description:
                        item["description"] = d.description
                dests.append(item)
            sets.append({"id": setid, "Destinations": dests})
        part: dict[str, Any] = {"name": PARTITION}
        if sets:
            part["SETS"] = sets
        return {"PARTITIONS": [part]}

    def ds_set_state(self, state: Any, group: Any, address: Any) -> str:
        """``ds_set_state state group address``: ``state`` a/i/p (its first character, or 1/0/2),
        ``group`` ``[partition:]setid``, ``address`` the row's URI. 404 when no such destination."""
        from ..dispatcher import parse_state_letter

        try:
            letter = parse_state_letter(str(state).strip()[:1])
        except ValueError:
            raise MIError(500, "Bad state value") from None
        text = str(group).strip()
        if ":" in text:
            name, _, text = text.partition(":")
            _partition(name.strip())
        try:
            setid = int(text)
        except ValueError:
            raise MIError(500, "Bad group value") from None
        if not isinstance(address, str):
            raise MIError(500, "Bad address value")
        ds = self._dispatcher()
        dest = ds.table.find(setid, address)
        if dest is None:
            raise MIError(404, "destination not found")
        ds.set_state(dest, letter, "MI command")
        return "OK"

    async def ds_reload(self, partition: Any = None, inherit_state: Any = None) -> str:
        """``ds_reload [partition] [inherit_state]``: read the rows again (the file's or the table's)
        without a restart; destinations that stay keep their state unless ``inherit_state`` is n.
        500 when the table cannot be read (the loaded sets stay)."""
        _partition(partition)
        inherit = _flag(inherit_state, "inherit_state") if inherit_state is not None else True
        try:
            await self._dispatcher().reload(inherit)
        except MIError:
            raise
        except Exception as exc:
            raise MIError(500, "ERROR Reloading data", str(exc)) from None
        return "OK"
