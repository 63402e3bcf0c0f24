"""What the MI commands read of a running node: :class:`NodeParts` and, of its proxy node, :class:`MINode`.

:class:`edgeproxy.service.RunningNode` is one; so is any test double with these attributes. The
optional parts (``cluster``, ``federation``, ``config``, the node's ``locator``) are read with
``getattr`` when a command runs, so one started later is seen and a double may leave them out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, MutableMapping, Protocol, Sized

if TYPE_CHECKING:  # pragma: no cover
    from ..latency import LatencyHistogram
    from ..location import InMemoryLocation
    from ..proxy.flood import FloodDetector
    from ..registrar import Registrar

__all__ = ["NodeParts", "MINode", "MIProxy", "Counted"]


class Counted(Protocol):
    """A part with counters (the authenticator, the NAT pinger, the federation publisher)."""

    @property
    def stats(self) -> MutableMapping[str, Any]: ...


class MIProxy(Protocol):
    """What the statistics read of the proxy core: final responses sent by class, setup times, and
    the transactions by transport (walked when asked)."""

    @property
    def finals(self) -> list[int]: ...

    @property
    def setup_time(self) -> LatencyHistogram: ...

    def transactions_by_transport(self) -> dict[tuple[str, str], int]: ...


class MINode(Protocol):
    """What the MI reads of the proxy node: its counters, its transaction table, the parts it holds
    (``auth`` with ``[auth]``, ``flood`` with ``[pike]``, ``pinger`` with ``[nathelper]``)."""

    @property
    def stats(self) -> MutableMapping[str, Any]: ...

    @property
    def methods(self) -> MutableMapping[str, int]: ...

    @property
    def reply_classes(self) -> list[int]: ...

    @property
    def register_time(self) -> LatencyHistogram: ...

    @property
    def proxy(self) -> MIProxy: ...

    @property
    def table(self) -> Sized: ...

    @property
    def auth(self) -> Counted | None: ...

    @property
    def flood(self) -> FloodDetector | None: ...

    @property
    def pinger(self) -> Counted | None: ...


class NodeParts(Protocol):
    """The node's parts the MI always reads (read-only here)."""

    @property
    def node(self) -> MINode: ...

    @property
    def location(self) -> InMemoryLocation: ...

    @property
    def registrar(self) -> Registrar: ...
