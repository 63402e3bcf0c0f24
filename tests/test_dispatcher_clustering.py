"""Dispatcher states shared over the cluster (``edgeproxy.dispatcher.clustering``, OpenSIPS
``ds_clustering.c``): replicated changes, distributed probing, and the sync a node asks for when it
starts and after ``ds_reload``. The nodes here talk through :class:`FakeCluster`, which delivers
capability messages at once; the real cluster link is used by ``test_dispatcher_node.py`` and
``test_e2e_dispatcher_sync.py``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, Callable

from twisted.internet.task import Clock

from edgeproxy.dispatcher import Dispatcher, DispatcherSettings
from edgeproxy.dispatcher.clustering import CAPABILITY, SYNC_CHUNK, SYNC_TIMEOUT, DispatcherReplication

ROWS = [
    {"setid": 1, "destination": "sip:127.0.0.21:5060", "weight": 1},
    {"setid": 1, "destination": "sip:127.0.0.22:5060", "weight": 2},
    {"setid": 1, "destination": "sip:127.0.0.23:5060", "weight": 3},
]


class FakeCluster:
    """Stands in for edgeproxy.cluster.Cluster's capability messaging: ``up`` are the peers seen up;
    :meth:`link` connects two of them so that ``send_to`` delivers to the other's handler at once
    (without a link, ``send_to`` is False, as when the real link is not up yet)."""

    def __init__(self, my_node_id: int, up: list[int]) -> None:
        self.my_node_id = my_node_id
        self.up = up
        self.handlers: dict[str, Callable[[int, int, str], None]] = {}
        self.subscribers: list[Callable[[int, bool], None]] = []
        self.sent: list[tuple[int, str, str]] = []
        self.sent_to: list[tuple[int, str]] = []
        self.peers: dict[int, "FakeCluster"] = {}

    def link(self, other: "FakeCluster") -> None:
        self.peers[other.my_node_id] = other

    def register_capability(self, name: str, handler: Callable[[int, int, str], None]) -> None:
        self.handlers[name] = handler

    def subscribe(self, callback: Callable[[int, bool], None]) -> None:
        self.subscribers.append(callback)

    def send_all(self, cluster_id: int, capability: str, payload: str) -> int:
        self.sent.append((cluster_id, capability, payload))
        for peer in self.peers.values():
            peer.handlers[capability](cluster_id, self.my_node_id, payload)
        return len(self.up)

    def send_to(self, cluster_id: int, node_id: int, capability: str, payload: str) -> bool:
        peer = self.peers.get(node_id)
        if peer is None:
            return False
        self.sent_to.append((node_id, payload))
        peer.handlers[capability](cluster_id, self.my_node_id, payload)
        return True

    def up_nodes(self, cluster_id: int | None = None) -> tuple[Any, ...]:
        return tuple(SimpleNamespace(node_id=n) for n in self.up)

    def came_up(self, node_id: int) -> None:
        if node_id not in self.up:
            self.up.append(node_id)
        for callback in list(self.subscribers):
            callback(node_id, True)

    def went_down(self, node_id: int) -> None:
        self.up.remove(node_id)
        for callback in list(self.subscribers):
            callback(node_id, False)


def node(node_id: int, rows: list[dict[str, Any]] = ROWS,
         clock: Clock | None = None) -> tuple[Dispatcher, FakeCluster, DispatcherReplication]:
    ds = Dispatcher(DispatcherSettings(destinations=tuple(rows)))
    cluster = FakeCluster(node_id, [])
    return ds, cluster, DispatcherReplication(ds, cluster, 1, clock=clock or Clock())


def state(ds: Dispatcher, uri: str) -> str:
    dest = ds.table.find(1, uri)
    assert dest is not None
    return dest.state_name


def test_distributed_probing_shares_the_destinations_out_and_takes_over_when_a_node_goes() -> None:
    rows = tuple({"setid": 1, "destination": f"sip:10.0.0.{i}"} for i in range(1, 31))
    settings = DispatcherSettings(destinations=rows, cluster_probing_mode="distributed")
    mine = []
    for node_id, others in ((1, [2, 3]), (2, [1, 3]), (3, [1, 2])):
        rep = DispatcherReplication(Dispatcher(settings), FakeCluster(node_id, others), 1, clock=Clock())
        mine.append({d.uri for d in rep.dispatcher.table.destinations() if rep.responsible(d)})
    assert set().union(*mine) == {r["destination"] for r in rows}
    assert sum(len(m) for m in mine) == 30 and all(m for m in mine)  # each destination exactly once
    alone = DispatcherReplication(Dispatcher(settings), FakeCluster(1, []), 1, clock=Clock())
    assert all(alone.responsible(d) for d in alone.dispatcher.table.destinations())


def test_replication_sends_local_changes_and_applies_remote_ones_without_echo() -> None:
    cluster = FakeCluster(1, [2])
    ds = Dispatcher(DispatcherSettings(destinations=tuple(ROWS)))
    DispatcherReplication(ds, cluster, 1, clock=Clock())
    ds.set_state(ds.table.find(1, "sip:127.0.0.21:5060"), "i", "MI command")
    assert cluster.sent == [(1, CAPABILITY, '{"setid": 1, "uri": "sip:127.0.0.21:5060", "state": 1}')]
    cluster.handlers[CAPABILITY](1, 2, '{"setid": 1, "uri": "sip:127.0.0.22:5060", "state": 2}')
    assert ds.table.find(1, "sip:127.0.0.22:5060").state_name == "Probing"
    for bad in ("not json", "[1]", '{"t": "sync", "states": [[1]]}', '{"t": "other"}', "null"):
        cluster.handlers[CAPABILITY](1, 2, bad)
    cluster.handlers[CAPABILITY](1, 2, '{"setid": 9, "uri": "sip:x", "state": 1}')
    assert len(cluster.sent) == 1  # what came from a peer is not sent on


def test_a_starting_node_pulls_the_states_from_the_first_peer_up() -> None:
    """OpenSIPS: at start-up the node requests a sync, the donor sends every destination's state, and
    the states are copied without an event (no replication of them, no per-destination change). A
    node that saw no peer for ``fallback`` seconds (seed fallback) answers, and does not pull back."""
    clock = Clock()
    a_ds, a, a_rep = node(1, clock=clock)
    a_ds.set_state(a_ds.table.find(1, "sip:127.0.0.21:5060"), "i", "MI command")  # before B started
    clock.advance(5.0)  # A alone for seed_fallback_interval: its table stands
    b_ds, b, b_rep = node(2)
    a.link(b)
    b.link(a)
    b.came_up(1)
    assert state(b_ds, "sip:127.0.0.21:5060") == "Inactive"
    assert [state(b_ds, f"sip:127.0.0.{h}:5060") for h in (22, 23)] == ["Active", "Active"]
    assert b_rep.stats["sync_requests"] == 1 and a_rep.stats["sync_donations"] == 1 and b_rep.stats["synced"] == 1
    assert b.sent == []  # synced states are not replicated on
    # A answered B, and does not ask it in turn
    a.came_up(2)
    assert state(a_ds, "sip:127.0.0.21:5060") == "Inactive"
    assert a_rep.stats["sync_requests"] == 0 and a_rep.stats["synced"] == 0
    # once synced, a peer coming up again is not asked
    b.came_up(1)
    assert b_rep.stats["sync_requests"] == 1


def test_a_sync_never_overwrites_what_this_node_saw_change() -> None:
    """A node marked .21 inactive; a newcomer's table says Active. When both ask each other (both
    started within ``fallback`` seconds), the newcomer learns Inactive, and the other node keeps it:
    its own change is newer than a table."""
    a_ds, a, _ = node(1)
    b_ds, b, _ = node(2)
    a_ds.set_state(a_ds.table.find(1, "sip:127.0.0.21:5060"), "i", "MI command")
    b_ds.set_state(b_ds.table.find(1, "sip:127.0.0.23:5060"), "i", "probe")  # B's own, after its start
    a.link(b)
    b.link(a)
    a.came_up(2)  # A asks first: B's snapshot has .21 Active, .23 Inactive
    assert state(a_ds, "sip:127.0.0.21:5060") == "Inactive" and state(a_ds, "sip:127.0.0.23:5060") == "Inactive"
    b.came_up(1)
    assert state(b_ds, "sip:127.0.0.21:5060") == "Inactive" and state(b_ds, "sip:127.0.0.23:5060") == "Inactive"


def test_a_donor_whose_link_is_not_up_yet_answers_when_it_is() -> None:
    a_ds, a, a_rep = node(1)
    a_ds.set_state(a_ds.table.find(1, "sip:127.0.0.22:5060"), "i", "MI command")
    b_ds, b, _ = node(2)
    b.link(a)  # B -> A is up, A -> B not yet
    b.came_up(1)
    assert state(b_ds, "sip:127.0.0.22:5060") == "Active" and a_rep.stats["sync_donations"] == 0
    a.link(b)
    a.came_up(2)
    assert state(b_ds, "sip:127.0.0.22:5060") == "Inactive" and a_rep.stats["sync_donations"] == 1


def test_a_big_table_is_sent_in_chunks_and_applied_at_the_last() -> None:
    rows = [{"setid": 1 + i % 3, "destination": f"sip:10.0.{i // 250}.{i % 250}"} for i in range(2 * SYNC_CHUNK + 50)]
    a_ds, a, _ = node(1, rows)
    for d in list(a_ds.table.destinations())[::2]:
        a_ds.set_state(d, "i", "MI command")
    b_ds, b, b_rep = node(2, rows)
    a.link(b)
    b.link(a)
    b.came_up(1)
    chunks = [json.loads(p) for n, p in a.sent_to if n == 2]
    assert [len(c["states"]) for c in chunks] == [SYNC_CHUNK, SYNC_CHUNK, 50]
    assert [c["last"] for c in chunks] == [False, False, True]
    assert all(len(p) < 60_000 for _, p in a.sent_to)
    assert [d.flags for d in b_ds.table.destinations()] == [d.flags for d in a_ds.table.destinations()]
    assert b_ds.stats["state_changes"] == (2 * SYNC_CHUNK + 50 + 1) // 2


def test_ds_reload_syncs_again_and_a_donor_lost_mid_sync_is_replaced() -> None:
    a_ds, a, _ = node(1)
    b_ds, b, b_rep = node(2)
    a.link(b)
    b.link(a)
    b.came_up(1)
    a_ds.set_state(a_ds.table.find(1, "sip:127.0.0.23:5060"), "i", "MI command")
    b_ds.set_state(b_ds.table.find(1, "sip:127.0.0.23:5060"), "a", "MI command")  # B's own: kept on a sync
    b_ds.reload()
    assert b_rep.stats["sync_requests"] == 2 and b_rep.stats["synced"] == 2
    assert state(b_ds, "sip:127.0.0.23:5060") == "Active"
    # a donor that goes down before its last chunk: the next peer up is asked
    b.handlers[CAPABILITY](1, 1, json.dumps({"t": "sync", "states": [], "last": True}))  # not asked: ignored
    b_rep.reloaded()
    assert b_rep.stats["synced"] == 3
    c_ds, c, _ = node(3)
    del a.peers[2]  # A's answers are lost from now on
    b_rep.reloaded()
    assert b_rep.stats["sync_requests"] == 4 and b_rep.stats["synced"] == 3
    b.went_down(1)
    c.link(b)
    b.link(c)
    b.came_up(3)
    assert b_rep.stats["sync_requests"] == 5 and b_rep.stats["synced"] == 4


def test_a_donor_that_stays_up_but_never_answers_is_given_up_for_the_next_peer() -> None:
    """OpenSIPS clusterer's ``sync_timeout``: a sync that stays silent is aborted; here the next peer
    up is asked, the silent one last."""
    clock = Clock()
    b_ds, b, b_rep = node(2, clock=clock)
    a_ds, a, _ = node(1)
    c_ds, c, _ = node(3)
    for donor_ds in (a_ds, c_ds):
        donor_ds.set_state(donor_ds.table.find(1, "sip:127.0.0.22:5060"), "i", "MI command")
    b.link(a)
    b.link(c)
    c.link(b)
    a.handlers[CAPABILITY] = lambda cluster_id, node_id, payload: None  # A is up and deaf
    b.up = [1, 3]
    b.came_up(1)
    assert [n for n, _ in b.sent_to] == [1] and b_rep.stats["synced"] == 0
    clock.advance(SYNC_TIMEOUT - 0.1)
    assert [n for n, _ in b.sent_to] == [1]
    clock.advance(0.1)  # A silent for sync_timeout: C is asked, and answers
    assert [n for n, _ in b.sent_to] == [1, 3]
    assert b_rep.stats["sync_timeouts"] == 1 and b_rep.stats["synced"] == 1
    assert state(b_ds, "sip:127.0.0.22:5060") == "Inactive"
    clock.advance(60)  # synced: nothing more is asked, the fallback changes nothing
    assert [n for n, _ in b.sent_to] == [1, 3] and b_rep.stats["sync_timeouts"] == 1
    b.came_up(1)
    assert [n for n, _ in b.sent_to] == [1, 3]


def test_only_a_silent_peer_up_is_asked_again_after_each_timeout_and_a_lone_node_falls_back() -> None:
    clock = Clock()
    b_ds, b, b_rep = node(2, clock=clock)
    a_ds, a, _ = node(1)
    b.link(a)
    a.handlers[CAPABILITY] = lambda cluster_id, node_id, payload: None
    b.came_up(1)
    clock.pump([SYNC_TIMEOUT] * 3)
    assert [n for n, _ in b.sent_to] == [1] * 4 and b_rep.stats["sync_timeouts"] == 3
    b.went_down(1)  # nobody up: the fallback comes, and a peer up later is not asked
    clock.advance(5.0)
    b.came_up(1)
    assert [n for n, _ in b.sent_to] == [1] * 4
    lone_ds, lone, lone_rep = node(4, clock=clock)
    clock.advance(4.9)
    lone.link(a)
    lone.came_up(1)  # within the fallback: asked
    assert lone.sent_to == [(1, '{"t": "sync-req"}')]
