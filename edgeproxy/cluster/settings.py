"""``[cluster]``: OpenSIPS ``clusterer`` (node table, liveness) and usrloc's ``location_cluster``.

::

    [cluster]
    my_node_id = 0             # 0: a single node, no cluster
    cluster_id = 1
    db_url = ""                # mysql://user:pass@host:port/db: the node table (table db_table) ...
    db_table = "clusterer"
    # [[cluster.nodes]]        # ... or its rows here, with the columns of the OpenSIPS table
    ping_interval = 4.0
    ping_timeout = 1.0
    # node_timeout             # s without a ping reply before a node counts as down
    seed_fallback_interval = 5.0

:class:`ClusterConfig` is what the table becomes; the cluster layer takes these as
:class:`~edgeproxy.cluster.Cluster`'s arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from ..config_error import ConfigError
from ..config_schema import Context, Section, integer, seconds, show, text
from .nodes import NodeInfo, NodeTable, NodeTableError

__all__ = ["ClusterConfig", "SECTION"]


@dataclass(frozen=True)
class ClusterConfig:
    """``[cluster]`` (see the module docstring). ``my_node_id = 0`` (the default) runs a single node
    with no cluster. The node table comes from ``db_url`` (table ``db_table``) or from ``nodes``, the
    ``[[cluster.nodes]]`` rows."""

    my_node_id: int = 0
    cluster_id: int = 1
    db_url: str = ""
    db_table: str = "clusterer"
    nodes: tuple[Mapping[str, Any], ...] = ()
    ping_interval: float = 4.0
    ping_timeout: float = 1.0
    node_timeout: float | None = None
    seed_fallback_interval: float = 5.0

    def my_row(self) -> NodeInfo | None:
        """This node's row of ``[[cluster.nodes]]`` in its cluster (None without one, or when the
        table is read from ``db_url`` at start-up)."""
        if not self.my_node_id or not self.nodes:
            return None
        return NodeTable.from_dicts(self.nodes).get(self.cluster_id, self.my_node_id)


def _node_rows(key: str, value: Any, ctx: Context) -> tuple[Mapping[str, Any], ...]:
    """``[[cluster.nodes]]`` rows, checked as the clusterer table would be."""
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of tables ([[cluster.nodes]]), got {show(value)}")
    try:
        NodeTable.from_dicts(value)
    except NodeTableError as exc:
        raise ConfigError(key, str(exc)) from None
    return tuple(MappingProxyType(dict(row)) for row in value)


def _check_cluster(c: ClusterConfig) -> None:
    if c.my_node_id and not c.db_url and not c.nodes:
        raise ConfigError("cluster.my_node_id", "needs a node table: cluster.db_url or [[cluster.nodes]]")
    if c.my_node_id and c.nodes and c.my_row() is None:
        raise ConfigError("cluster.my_node_id", f"node {c.my_node_id} is not in cluster {c.cluster_id}'s rows")


SECTION: Section[ClusterConfig] = Section(ClusterConfig, {
    "my_node_id": integer(0),
    "cluster_id": integer(1),
    "db_url": text,
    "db_table": text,
    "nodes": _node_rows,
    "ping_interval": seconds,
    "ping_timeout": seconds,
    "node_timeout": seconds,
    "seed_fallback_interval": seconds,
}, after=_check_cluster)
