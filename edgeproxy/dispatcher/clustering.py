"""Sharing destination states over the cluster link (OpenSIPS dispatcher's ``cluster_id`` and
``cluster_probing_mode``; ``ds_clustering.c``).

Every local change of a destination's state -- a probe's result, ``ds_mark_dst``, the MI's
``ds_set_state`` -- is sent to the other nodes of the cluster that are up (capability
``dispatcher-status-repl``: set id, URI, state bits), which apply it as it is, without the probing
threshold and without sending it on (:meth:`Dispatcher.apply_remote`). So when one node sees a
FreeSWITCH die, the others stop sending it calls at once, not after their own probes fail.

``cluster_probing_mode``: ``"all"`` -- every node probes every destination (OpenSIPS's default);
``"distributed"`` -- the destinations are shared out among the nodes that are up: node *k* of the *n*
up nodes (ordered by id) probes those whose URI hashes to *k* modulo *n*, and the others learn the
results from it. A node that goes down hands its share over at the next round (*n* changes). Not
done: the full state sync OpenSIPS runs when a node starts (a node starts from the table's states and
its own probes).
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Protocol

from twisted.logger import Logger

from .service import Dispatcher
from .table import Destination

__all__ = ["CAPABILITY", "ClusterLink", "DispatcherReplication"]

log = Logger(namespace="edgeproxy.dispatcher")

CAPABILITY = "dispatcher-status-repl"


class ClusterLink(Protocol):
    """What the replication needs of the cluster (:class:`edgeproxy.cluster.Cluster`)."""

    my_node_id: int

    def register_capability(self, name: str, handler: Any) -> None: ...

    def send_all(self, cluster_id: int, capability: str, payload: str) -> int: ...

    def up_nodes(self, cluster_id: int | None = None) -> tuple[Any, ...]: ...


class DispatcherReplication:
    """Shares ``dispatcher``'s state changes in ``cluster_id`` (see the module docstring)."""

    def __init__(self, dispatcher: Dispatcher, cluster: ClusterLink, cluster_id: int) -> None:
        self.dispatcher = dispatcher
        self.cluster = cluster
        self.cluster_id = cluster_id
        self.stats = {"sent": 0, "received": 0, "unknown": 0}
        cluster.register_capability(CAPABILITY, self.received)
        dispatcher.subscribe(self.changed)

    def changed(self, setid: int, uri: str, flags: int) -> None:
        payload = json.dumps({"setid": setid, "uri": uri, "state": flags})
        self.stats["sent"] += self.cluster.send_all(self.cluster_id, CAPABILITY, payload)

    def received(self, cluster_id: int, node_id: int, payload: str) -> None:
        if cluster_id != self.cluster_id:
            return
        try:
            data = json.loads(payload)
            setid, uri, flags = int(data["setid"]), str(data["uri"]), int(data["state"])
        except (ValueError, KeyError, TypeError):
            log.warn("dispatcher: malformed state from node {n}: {payload!r}", n=node_id, payload=payload[:200])
            return
        self.stats["received"] += 1
        if not self.dispatcher.apply_remote(setid, uri, flags, f"node {node_id}"):
            self.stats["unknown"] += 1

    def responsible(self, dest: Destination) -> bool:
        """Whether this node probes ``dest`` (``cluster_probing_mode``)."""
        if self.dispatcher.settings.cluster_probing_mode != "distributed":
            return True
        nodes = sorted({self.cluster.my_node_id, *(row.node_id for row in self.cluster.up_nodes(self.cluster_id))})
        mine = nodes.index(self.cluster.my_node_id)
        return zlib.crc32(dest.uri.lower().encode("utf-8", "surrogateescape")) % len(nodes) == mine
