"""Who may use the cluster link (OpenSIPS clusterer's address checks on BIN packets), and the
rate-limited warnings about who was refused.

The :class:`~edgeproxy.cluster.Cluster` asks :func:`ping_problem` about every ping and capability
message an inbound link carries, and logs each refusal through a :class:`RefusalLog`, so that a
scanner or a misconfigured peer cannot flood the log. Address-based admission, as in OpenSIPS: not
authentication.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .nodes import NodeInfo, NodeTable, same_host

__all__ = ["REFUSAL_LOG_INTERVAL", "RefusalLog", "ping_problem"]

log = Logger(namespace="edgeproxy.cluster")

#: Seconds between two warnings about refused connections or pings from one source IP.
REFUSAL_LOG_INTERVAL = 60.0


class RefusalLog:
    """Warns about a refused peer at most once per :data:`REFUSAL_LOG_INTERVAL` per source IP; the
    next warning says how many were not logged. ``clock`` is an ``IReactorTime``."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._refusals: dict[str, tuple[float, int]] = {}

    def warn(self, source: str, fmt: str, **kw: Any) -> None:
        now = self._clock.seconds()
        last, hidden = self._refusals.get(source, (-math.inf, 0))
        if now - last < REFUSAL_LOG_INTERVAL:
            self._refusals[source] = (last, hidden + 1)
            return
        if len(self._refusals) > 1024:
            self._refusals.clear()
        self._refusals[source] = (now, 0)
        if hidden:
            fmt += " ({hidden} more refusals not logged)"
        log.warn(fmt, hidden=hidden, **kw)


def ping_problem(table: NodeTable, my_rows: Mapping[int, NodeInfo], my_node_id: int, ip: str, cluster_id: int,
                 node_id: int, to_node_id: int) -> str | None:
    """Why a ping (or capability data) from ``ip`` claiming to be node ``node_id`` of ``cluster_id``
    and addressed to ``to_node_id`` is refused by this node (``my_rows``: its row per cluster), or
    None when it is admitted: the claimed node must be listed, enabled, and have its ``url`` at
    ``ip``."""
    if cluster_id not in my_rows:
        return f"node {my_node_id} is not in cluster {cluster_id}"
    if not my_rows[cluster_id].enabled:
        return f"node {my_node_id} is disabled in cluster {cluster_id}"
    if to_node_id != my_node_id:
        return f"addressed to node {to_node_id}, this is node {my_node_id}"
    if node_id == my_node_id:
        return "claims this node's own id"
    row = table.get(cluster_id, node_id)
    if row is None:
        return f"node {node_id} is not listed in cluster {cluster_id}"
    if not row.enabled:
        return f"node {node_id} is disabled"
    if not same_host(row.bin.host, ip):
        return f"node {node_id} is {row.url}, not {ip}"
    return None
