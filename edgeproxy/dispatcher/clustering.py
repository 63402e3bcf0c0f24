"""Sharing destination states over the cluster link (OpenSIPS dispatcher's ``cluster_id`` and
``cluster_probing_mode``; ``ds_clustering.c``).

Every local change of a destination's state -- a probe's result, ``ds_mark_dst``, the MI's
``ds_set_state`` -- is sent to the other nodes of the cluster that are up (capability
``dispatcher-status-repl``: set id, URI, state bits), which apply it as it is, without the probing
threshold and without sending it on (:meth:`Dispatcher.apply_remote`). So when one node sees a
FreeSWITCH die, the others stop sending it calls at once, not after their own probes fail.

**Sync** (OpenSIPS: at start-up and after ``ds_reload`` the node requests a sync, and the donor
sends (set, uri, state bits) of every destination). A node asks the first peer it sees up after it
started (and the first one up after a ``ds_reload``) for its states. The donor answers over its own
link (``sync`` messages of :data:`SYNC_CHUNK` destinations, the last one marked); if its link to the
asker is not up yet, as soon as it is. The asker copies the states as they are, with one log line
for the whole sync (``state copied, no event``), except for the destinations whose state changed on
this node since it started -- its own probes and marks, or a peer's replicated change: what it saw
happen is newer than anything the donor's table can say. So a newcomer learns that a destination
was marked inactive before it started, and a node that was alone and marked one does not take a
newcomer's table default for it when both ask each other.

``cluster_probing_mode``: ``"all"`` -- every node probes every destination (OpenSIPS's default);
``"distributed"`` -- the destinations are shared out among the nodes that are up: node *k* of the *n*
up nodes (ordered by id) probes those whose URI hashes to *k* modulo *n*, and the others learn the
results from it. A node that goes down hands its share over at the next round (*n* changes).
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Callable, Protocol

from twisted.logger import Logger

from .service import Dispatcher
from .table import Destination

__all__ = ["CAPABILITY", "SYNC_CHUNK", "ClusterLink", "DispatcherReplication"]

log = Logger(namespace="edgeproxy.dispatcher")

CAPABILITY = "dispatcher-status-repl"
#: Destinations per ``sync`` message: far under the link's 64 KB per message for URIs of up to
#: OpenSIPS's 192 characters.
SYNC_CHUNK = 200


class ClusterLink(Protocol):
    """What the replication needs of the cluster (:class:`edgeproxy.cluster.Cluster`)."""

    my_node_id: int

    def register_capability(self, name: str, handler: Any) -> None: ...

    def send_all(self, cluster_id: int, capability: str, payload: str) -> int: ...

    def send_to(self, cluster_id: int, node_id: int, capability: str, payload: str) -> bool: ...

    def up_nodes(self, cluster_id: int | None = None) -> tuple[Any, ...]: ...

    def subscribe(self, callback: Callable[[int, bool], None]) -> Any: ...


class DispatcherReplication:
    """Shares ``dispatcher``'s state changes in ``cluster_id`` (see the module docstring)."""

    def __init__(self, dispatcher: Dispatcher, cluster: ClusterLink, cluster_id: int) -> None:
        self.dispatcher = dispatcher
        self.cluster = cluster
        self.cluster_id = cluster_id
        self.stats = {"sent": 0, "received": 0, "unknown": 0, "sync_requests": 0, "sync_donations": 0,
                      "synced": 0}
        self._want_sync = True  # start-up: ask the first peer up
        self._asked: int | None = None  # the donor asked, until its last sync message
        self._synced: list[tuple[int, str, int]] = []  # what the donor sent so far
        # (set id, lower-case URI) of the destinations whose state changed here since the start: a
        # sync does not overwrite them (bounded by the table: unknown destinations are not kept)
        self._touched: set[tuple[int, str]] = set()
        self._owed: set[int] = set()  # asked us before our link to them was up
        cluster.register_capability(CAPABILITY, self.received)
        cluster.subscribe(self.node_changed)
        dispatcher.subscribe(self.changed, reloaded=self.reloaded)

    # -- state changes -------------------------------------------------------------------------------
    def changed(self, setid: int, uri: str, flags: int) -> None:
        self._touched.add((setid, uri.lower()))
        payload = json.dumps({"setid": setid, "uri": uri, "state": flags})
        self.stats["sent"] += self.cluster.send_all(self.cluster_id, CAPABILITY, payload)

    def received(self, cluster_id: int, node_id: int, payload: str) -> None:
        if cluster_id != self.cluster_id:
            return
        try:
            data = json.loads(payload)
            kind = data.get("t") if isinstance(data, dict) else None
            if kind == "sync-req":
                self._donate(node_id)
            elif kind == "sync":
                self._sync_received(node_id, [(int(s), str(u), int(f)) for s, u, f in data["states"]],
                                    bool(data.get("last")))
            else:
                setid, uri, flags = int(data["setid"]), str(data["uri"]), int(data["state"])
                self._remote_change(node_id, setid, uri, flags)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warn("dispatcher: malformed state from node {n}: {payload!r}", n=node_id, payload=payload[:200])

    def _remote_change(self, node_id: int, setid: int, uri: str, flags: int) -> None:
        self.stats["received"] += 1
        if self.dispatcher.apply_remote(setid, uri, flags, f"node {node_id}"):
            self._touched.add((setid, uri.lower()))
        else:
            self.stats["unknown"] += 1

    # -- sync ----------------------------------------------------------------------------------------
    def node_changed(self, node_id: int, up: bool) -> None:
        """A peer's verdict changed (:meth:`Cluster.subscribe`): answer a sync it asked for before
        our link to it was up; ask it for one while this node still wants one."""
        if not up:
            if self._asked == node_id:  # the donor went away mid-sync: the next peer up is asked
                self._asked, self._synced = None, []
            return
        if node_id in self._owed:
            self._owed.discard(node_id)
            self._donate(node_id)
        if self._want_sync and self._asked is None:
            self.request_sync(node_id)

    def reloaded(self) -> None:
        """``ds_reload`` re-syncs from the cluster (OpenSIPS), from the first peer up."""
        up = self.cluster.up_nodes(self.cluster_id)
        self._want_sync = True
        if up and self._asked is None:
            self.request_sync(int(up[0].node_id))

    def request_sync(self, node_id: int) -> bool:
        """Ask ``node_id`` for every destination's state; False when there is no link to it."""
        self._asked, self._synced = node_id, []
        if not self.cluster.send_to(self.cluster_id, node_id, CAPABILITY, json.dumps({"t": "sync-req"})):
            self._asked = None
            return False
        self.stats["sync_requests"] += 1
        log.info("dispatcher: asked node {n} for the destinations' states", n=node_id)
        return True

    def _donate(self, node_id: int) -> None:
        states = [(d.setid, d.uri, d.flags) for d in self.dispatcher.table.destinations()]
        chunks = [states[i:i + SYNC_CHUNK] for i in range(0, len(states), SYNC_CHUNK)] or [[]]
        for i, chunk in enumerate(chunks):
            payload = json.dumps({"t": "sync", "states": chunk, "last": i == len(chunks) - 1})
            if not self.cluster.send_to(self.cluster_id, node_id, CAPABILITY, payload):
                self._owed.add(node_id)  # it asked before our link to it came up: sent when it is up
                return
        self.stats["sync_donations"] += 1
        log.info("dispatcher: sent the states of {n} destinations to node {node}", n=len(states), node=node_id)

    def _sync_received(self, node_id: int, states: list[tuple[int, str, int]], last: bool) -> None:
        if node_id != self._asked:
            log.info("dispatcher: ignoring a sync from node {n}, which was not asked", n=node_id)
            return
        self._synced.extend(states)
        if not last:
            return
        touched = self._touched
        kept = [s for s in self._synced if (s[0], s[1].lower()) not in touched]
        skipped = len(self._synced) - len(kept)
        found, changes = self.dispatcher.apply_synced(kept)
        self._asked, self._synced, self._want_sync = None, [], False
        self.stats["synced"] += 1
        log.info("dispatcher: synced the states of {found} destinations from node {n} ({skipped} changed here "
                 "since the start, kept): {changes}", found=found, n=node_id, skipped=skipped,
                 changes="; ".join(changes) or "no change")

    def responsible(self, dest: Destination) -> bool:
        """Whether this node probes ``dest`` (``cluster_probing_mode``)."""
        if self.dispatcher.settings.cluster_probing_mode != "distributed":
            return True
        nodes = sorted({self.cluster.my_node_id, *(row.node_id for row in self.cluster.up_nodes(self.cluster_id))})
        mine = nodes.index(self.cluster.my_node_id)
        return zlib.crc32(dest.uri.lower().encode("utf-8", "surrogateescape")) % len(nodes) == mine
