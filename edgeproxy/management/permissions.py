"""The permissions commands of the MI (OpenSIPS's ``permissions`` module, ``mi.c``):
``address_reload``, ``address_dump`` and ``subnet_dump`` over the node's address groups.

Shapes are OpenSIPS 3.x's: without a partition ``{"Partitions": [{"name": "default", "Destinations":
[row, ...]}]}``, with one ``{"part": name, "Destinations": [...]}``; a row is ``{"grp", "ip", "mask"
(a string), "port", "proto", "pattern", "context_info"}``. ``address_dump`` lists the host rows (mask
32 / 128), ``subnet_dump`` the others. A node has one partition, ``default``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from .parts import NodeParts
from .rpc import MIError

if TYPE_CHECKING:  # pragma: no cover
    from ..permissions import AddressRow, Permissions

__all__ = ["PermissionsCommands", "PARTITION"]

PARTITION = "default"


class PermissionsCommands:
    """``address_reload``, ``address_dump``, ``subnet_dump`` (a part of :class:`~.commands.MICommands`)."""

    parts: NodeParts

    def _permissions(self, partition: Any) -> "Permissions":
        permissions = self.parts.permissions
        if permissions is None:  # stopped since the command was looked up
            raise MIError(500, "No address groups")
        if partition is not None and partition != PARTITION:
            raise MIError(400, "Trusted partition not found")
        return permissions

    def address_reload(self, partition: Any = None) -> "Deferred[str]":
        """Re-read the address table (and the file's rows); the old table stays when it fails."""
        d = self._permissions(partition).reload()

        def failed(failure: Failure) -> Failure:
            return Failure(MIError(500, "Trusted table reload failed", failure.getErrorMessage()))

        return d.addCallbacks(lambda _: "OK", failed)

    def address_dump(self, partition: Any = None) -> dict[str, Any]:
        return self._dump(partition, self._permissions(partition).table.hosts)

    def subnet_dump(self, partition: Any = None) -> dict[str, Any]:
        return self._dump(partition, self._permissions(partition).table.subnets)

    @staticmethod
    def _dump(partition: Any, rows: "list[AddressRow]") -> dict[str, Any]:
        destinations = [row.json() for row in rows]
        if partition is not None:
            return {"part": partition, "Destinations": destinations}
        return {"Partitions": [{"name": PARTITION, "Destinations": destinations}]}
