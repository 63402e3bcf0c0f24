"""What the MI commands read of a running node: :class:`NodeParts` and, of its proxy node, :class:`MINode`.

:class:`edgeproxy.service.RunningNode` is one; so is any test double with these attributes. The
optional parts (``cluster``, ``federation``, ``config``, ...) are None when the node runs without
them; they are read when a command runs, so one started later is seen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, MutableMapping, Protocol, Sized

if TYPE_CHECKING:  # pragma: no cover
    from ..acc import Accounting
    from ..auth import Authenticator
    from ..cluster import Cluster
    from ..dialog import Dialog, DialogTable
    from ..dispatcher import Dispatcher
    from ..federation import Federation
    from ..latency import LatencyHistogram
    from ..location import InMemoryLocation
    from ..node_settings import NodeConfig
    from ..permissions import Permissions
    from ..proxy.flood import FloodDetector
    from ..registrar import Registrar
    from ..usrloc import Persistence
    from ..usrloc.replication import Replication

__all__ = ["NodeParts", "MINode", "MIProxy", "MIConfig", "Counted", "DialogControl", "ConnectionCounts"]


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


class DialogControl(Protocol):
    """What the MI uses of the node's dialogs (:class:`edgeproxy.proxy.dialogs.DialogKeeper`)."""

    @property
    def table(self) -> DialogTable: ...

    def end(self, dlg: Dialog, reason: str, extra: Any = ()) -> bool: ...


class MINode(Protocol):
    """What the MI reads of the proxy node: its counters, its transaction table, its dialogs, the parts
    it holds (``auth`` with ``[auth]``, ``flood`` with ``[pike]``, ``pinger`` with ``[nathelper]``)."""

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
    def dialogs(self) -> DialogControl: ...

    @property
    def auth(self) -> Authenticator | None: ...

    @property
    def flood(self) -> FloodDetector | None: ...

    @property
    def pinger(self) -> Counted | None: ...

    def set_log_decisions(self, enabled: bool) -> None: ...


class ConnectionCounts(Protocol):
    """The transports' open connections, counted when asked (:class:`edgeproxy.transport.TransportManager`)."""

    def connections_by_transport(self) -> dict[str, int]: ...


class MIConfig(Protocol):
    """What the MI reads of the configuration: ``[node]`` (the log level it starts at)."""

    @property
    def node(self) -> NodeConfig: ...


class NodeParts(Protocol):
    """The node's parts the MI reads (read-only here); the optional ones are None when not running."""

    @property
    def node(self) -> MINode: ...

    @property
    def location(self) -> InMemoryLocation: ...

    @property
    def registrar(self) -> Registrar: ...

    @property
    def config(self) -> MIConfig | None: ...

    @property
    def transports(self) -> ConnectionCounts | None: ...

    @property
    def cluster(self) -> Cluster | None: ...

    @property
    def federation(self) -> Federation | None: ...

    @property
    def persistence(self) -> Persistence | None: ...

    @property
    def replication(self) -> Replication | None: ...

    @property
    def dispatcher(self) -> Dispatcher | None: ...

    @property
    def permissions(self) -> Permissions | None: ...

    @property
    def acc(self) -> Accounting | None: ...
