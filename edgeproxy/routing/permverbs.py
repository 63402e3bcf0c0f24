"""OpenSIPS ``permissions``' route verbs: ``check_address``, ``check_source_address`` and
``get_source_group`` over the node's address groups (:mod:`edgeproxy.permissions`).

:class:`PermissionVerbs` is a part of :class:`~edgeproxy.routing.verbs.RouteVerbs` (the one
implementation, run by the node and by :class:`~edgeproxy.routing.testing.RouteHarness` alike) and
:class:`PermissionRequest` of :class:`~edgeproxy.routing.api.RouteRequest` (``msg``).
"""

from __future__ import annotations

from typing import Protocol

from ..permissions import AddressMatch, AddressResult, proto_name
from ..proxy.context import RouteState
from .part import RequestPart

__all__ = ["AddressView", "PermissionVerbs", "PermissionRequest"]


class AddressView(Protocol):
    """What the verbs ask of the address groups (:class:`edgeproxy.permissions.Permissions`)."""

    def check(self, grp: int, ip: str, port: int, proto: str, pattern: str | None = None) -> AddressMatch: ...

    def source_group(self, ip: str, port: int) -> int: ...


class PermissionVerbs:
    """The permissions verbs over a request's :class:`RouteState` and the node's address groups
    (None without any: every group is "not found")."""

    permissions: AddressView | None

    def check_address(self, route: RouteState, grp: int, ip: str, port: int, proto: str,
                      pattern: str | None, partition: str) -> AddressResult:
        """OpenSIPS ``check_address(grp, ip, port, proto, ctx, pattern, partition)``: 1, -1 or -2
        (see :mod:`edgeproxy.permissions.address`); a match leaves the row's ``context_info`` in
        ``route.context_info`` (a miss leaves it as it was, as OpenSIPS leaves its variable).
        Arguments a script could not have compiled (a group or port that is not a number, an unknown
        proto or partition) are the route's bug: ValueError. A node without address groups answers
        -2 for every group."""
        if isinstance(grp, bool) or not isinstance(grp, int) or not 0 <= grp <= 65535:
            raise ValueError(f"check_address: group must be 0..65535, got {grp!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"check_address: port must be 0..65535, got {port!r}")
        name = proto_name(proto)
        if name is None:
            raise ValueError(f"check_address: unknown proto {proto!r}")
        if partition != "default":
            raise ValueError(f"check_address: no partition {partition!r} (only \"default\")")
        if pattern is not None and not isinstance(pattern, str):
            pattern = str(pattern)
        permissions = self.permissions
        if permissions is None or not isinstance(ip, str):
            return AddressResult.GROUP_NOT_FOUND if permissions is None else AddressResult.NO_MATCH
        match = permissions.check(grp, ip, port, name, pattern)
        if match.context_info is not None:  # OpenSIPS writes the context variable on a match only
            route.context_info = match.context_info
        return match.code

    def get_source_group(self, route: RouteState) -> int:
        """OpenSIPS ``get_source_group()``: the group of the request's source address and port, -1."""
        permissions = self.permissions
        remote = route.source.remote
        return -1 if permissions is None else permissions.source_group(remote.host, remote.port)


class PermissionRequest(RequestPart):
    """``msg``'s permissions functions (a part of :class:`~edgeproxy.routing.api.RouteRequest`)."""

    __slots__ = ()

    def check_address(self, group: int, ip: str, port: int = 0, proto: str = "any", pattern: str | None = None,
                      partition: str = "default") -> AddressResult:
        """OpenSIPS ``check_address(group, ip, port, proto, [context_info], [pattern])``: whether
        ``ip``:``port`` over ``proto`` is in address group ``group`` (0: any group; port 0 and proto
        ``"any"``: any). Returns :class:`~edgeproxy.permissions.AddressResult` 1 (true), -1 (no match)
        or -2 (no such group); the matching row's ``context_info`` is then :attr:`context_info`.
        ``pattern`` (say ``str(msg.ruri)``) is matched against the rows' shell patterns."""
        return self._verbs.check_address(self._state, group, ip, port, proto, pattern, partition)

    def check_source_address(self, group: int, pattern: str | None = None,
                             partition: str = "default") -> AddressResult:
        """OpenSIPS ``check_source_address(group, [context_info], [pattern])``: :meth:`check_address`
        for the request's source address, port and transport (``$si``, ``$sp``, ``$proto``)."""
        source = self._state.source.remote
        return self._verbs.check_address(self._state, group, source.host, source.port, source.transport, pattern,
                                         partition)

    def get_source_group(self) -> int:
        """OpenSIPS ``get_source_group()``: the address group of the source (address and port; proto
        and pattern ignored), -1 when it is in none."""
        return self._verbs.get_source_group(self._state)

    @property
    def context_info(self) -> str | None:
        """The ``context_info`` of the row the last successful ``check_address`` /
        ``check_source_address`` matched ("" when the row has none); None before any match. A check
        that matches nothing leaves it as it was, as OpenSIPS leaves its output variable."""
        return self._state.context_info
