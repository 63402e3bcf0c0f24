"""Sharing destination states over the cluster link (OpenSIPS dispatcher's ``cluster_id`` and
``cluster_probing_mode``; ``ds_clustering.c``).

Every local change of a destination's state -- a probe's result, ``ds_mark_dst``, the MI's
``ds_set_state`` -- is sent to the other nodes of the cluster that are up (capability
``dispatcher-status-repl``: set id, URI, state bits), which apply it as it is, without the probing
threshold and without sending it on (:meth:`Dispatcher.apply_remote`). So when one node sees a
FreeSWITCH die, the others stop sending it calls at once, not after their own probes fail.

**Sync** (OpenSIPS: at start-up and after ``ds_reload`` the node requests a sync, and the donor
sends (set, uri, state bits) of every destination). A node asks the first peer it sees up after it
started (and the first one up after a ``ds_reload``) for its states. Only a node that has not synced
since it started (or reloaded) asks: one that saw no peer up for ``fallback`` seconds (the cluster's
``seed_fallback_interval``, OpenSIPS's seed fallback) counts its own table as the cluster's, so a
node answering a newcomer does not pull the newcomer's table back. A donor that stays up but sends
nothing for ``sync_timeout`` seconds (OpenSIPS clusterer's ``sync_timeout``: silence aborts a sync)
is given up with one log line, and the next peer up is asked. The donor answers over its own
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

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .service import Dispatcher
from .table import Destination

__all__ = ["CAPABILITY", "SYNC_CHUNK", "ClusterLink", "DispatcherReplication"]

log = Logger(namespace="edgeproxy.dispatcher")

CAPABILITY = "dispatcher-status-repl"
#: Destinations per ``sync`` message: far under the link's 64 KB per message for URIs of up to
#: OpenSIPS's 192 characters.
SYNC_CHUNK = 200
#: Seconds of silence after which a donor is given up. OpenSIPS's clusterer waits 15 s for the
#: thousands of contacts of a usrloc sync; a dispatcher donor answers at once with a few messages.
SYNC_TIMEOUT = 5.0


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

    def __init__(self, dispatcher: Dispatcher, cluster: ClusterLink, cluster_id: int, *, clock: IReactorTime,
                 fallback: float = 5.0, sync_timeout: float = SYNC_TIMEOUT) -> None:
        self.dispatcher = dispatcher
        self.cluster = cluster
        self.cluster_id = cluster_id
        self.clock = clock
        self.fallback = float(fallback)
        self.sync_timeout = float(sync_timeout)
        self.stats = {"sent": 0, "received": 0, "unknown": 0, "sync_requests": 0, "sync_donations": 0,
                      "synced": 0, "sync_timeouts": 0}
        self._want_sync = False  # True until synced, or the fallback: ask the first peer up
        self._asked: int | None = None  # the donor asked, until its last sync message
        self._silent: set[int] = set()  # donors given up since the sync began: asked last
        self._watch: IDelayedCall | None = None  # the fallback, or the asked donor's sync_timeout
        self._synced: list[tuple[int, str, int]] = []  # what the donor sent so far
        # (set id, lower-case URI) of the destinations whose state changed here since the start: a
        # sync does not overwrite them (bounded by the table: unknown destinations are not kept)
        self._touched: set[tuple[int, str]] = set()
        self._owed: set[int] = set()  # asked us before our link to them was up
        cluster.register_capability(CAPABILITY, self.received)
        cluster.subscribe(self.node_changed)
        dispatcher.subscribe(self.changed, reloaded=self.reloaded)
        self._begin_sync()  # start-up

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
                self._ask_next()
            return
        if node_id in self._owed:
            self._owed.discard(node_id)
            self._donate(node_id)
        if self._want_sync and self._asked is None:
            self.request_sync(node_id)

    def reloaded(self) -> None:
        """``ds_reload`` re-syncs from the cluster (OpenSIPS), from the first peer up."""
        self._begin_sync()

    def _begin_sync(self) -> None:
        """Want a sync: ask the first peer up, or the first one that comes up within ``fallback``."""
        self._want_sync, self._silent = True, set()
        if self._asked is None:
            self._ask_next()

    def _ask_next(self) -> None:
        """Ask a peer that is up, those that went silent in this sync last; none reachable: the next
        one that comes up is asked (:meth:`node_changed`), unless ``fallback`` seconds pass first."""
        if not self._want_sync:
            return
        up = sorted((int(row.node_id) for row in self.cluster.up_nodes(self.cluster_id)),
                    key=lambda n: n in self._silent)
        for node_id in up:
            if self.request_sync(node_id):
                return
        self._arm(self.fallback, self._fall_back)

    def request_sync(self, node_id: int) -> bool:
        """Ask ``node_id`` for every destination's state; False when there is no link to it."""
        self._asked, self._synced = node_id, []
        if not self.cluster.send_to(self.cluster_id, node_id, CAPABILITY, json.dumps({"t": "sync-req"})):
            self._asked = None
            return False
        self.stats["sync_requests"] += 1
        self._arm(self.sync_timeout, self._timed_out)
        log.info("dispatcher: asked node {n} for the destinations' states", n=node_id)
        return True

    def _fall_back(self) -> None:
        """``fallback`` seconds without a sync begun, no peer up: this node's table stands (OpenSIPS's
        seed fallback), and it does not ask the peers that come up later."""
        self._watch = None
        if self._asked is not None or not self._want_sync:
            return
        if self.cluster.up_nodes(self.cluster_id):  # a peer is up but was not reachable: try again
            self._ask_next()
            return
        self._want_sync = False
        log.info("dispatcher: no peer answered a sync within {t} s; this node's states stand (seed fallback)",
                 t=self.fallback)

    def _timed_out(self) -> None:
        """The donor asked sent nothing for ``sync_timeout`` seconds though it is up: ask another."""
        self._watch = None
        silent, self._asked, self._synced = self._asked, None, []
        if silent is None:
            return
        self._silent.add(silent)
        self.stats["sync_timeouts"] += 1
        log.warn("dispatcher: node {n} sent no sync in {t} s; asking the next peer up", n=silent, t=self.sync_timeout)
        self._ask_next()

    def _arm(self, delay: float, call: Callable[[], None]) -> None:
        self._disarm()
        self._watch = self.clock.callLater(delay, call)

    def _disarm(self) -> None:
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._watch = None

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
            self._arm(self.sync_timeout, self._timed_out)  # silence, not the whole sync, is timed
            return
        self._disarm()
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
