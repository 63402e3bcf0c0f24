"""Cluster membership and node liveness, after OpenSIPS ``clusterer``.

* :mod:`.nodes` -- the node table (:class:`NodeInfo`, :class:`NodeTable`, :func:`parse_bin_url`); sans-IO.
* :mod:`.liveness` -- the heartbeat state machine per peer and the seed/sync status; sans-IO.
* :mod:`.db` -- loading the table from MySQL/MariaDB (:func:`load_node_table`).
* :mod:`.link` -- the AMP cluster link.
* :mod:`.cluster` -- :class:`Cluster`, the running membership that routes and the proxy query.
"""

from .cluster import Cluster, Subscriber
from .db import DatabaseURL, load_node_table, parse_db_url
from .liveness import Effect, LinkState, NodeLiveness, SyncStatus
from .nodes import DEFAULT_BIN_PORT, BinAddress, NodeInfo, NodeTable, NodeTableError, parse_bin_url

__all__ = [
    "Cluster",
    "Subscriber",
    "DatabaseURL",
    "load_node_table",
    "parse_db_url",
    "Effect",
    "LinkState",
    "NodeLiveness",
    "SyncStatus",
    "DEFAULT_BIN_PORT",
    "BinAddress",
    "NodeInfo",
    "NodeTable",
    "NodeTableError",
    "parse_bin_url",
]
