"""Full sharing (edgeproxy.usrloc.replication): the merge rules of RFC 3261 §10.3 / OpenSIPS
``get_ucontact`` and the replication protocol between two tables, on ``task.Clock``.

The two nodes' cluster links are joined here in memory (what ``Cluster.send_all``/``send_to`` deliver
to the peer's capability handler); the same replication runs over real AMP links between two
``twistd`` nodes in ``test_e2e_usrloc_sharing.py``.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock

from edgeproxy.location import Binding, ChangeJournal, InMemoryLocation
from edgeproxy.sip import parse_uri
from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.usrloc.replication import MAX_PAYLOAD, SYNC_IDLE, Replication, decode_binding, merge
from edgeproxy.usrloc.rows import connection_bound

T0 = 1_700_000_000.0
LOCAL = Endpoint("UDP", "127.0.0.11", 5060)


def b(user: str, *, call_id: str = "c1", cseq: int = 1, lm: float = T0, port: int = 5062, expires: float = 600,
      **kw: Any) -> Binding:
    remote = Endpoint("UDP", "198.51.100.7", port)
    return Binding(aor=user, uri=parse_uri(f"sip:{user}@198.51.100.7:{port}"), expires_at=T0 + expires,
                   call_id=call_id, cseq=cseq, received=remote, flow=kw.pop("flow", Flow(LOCAL, remote)),
                   last_modified=lm, **kw)


class Row:
    node_id: int

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


class Link:
    """One node's side of an in-memory cluster of two."""

    def __init__(self, node_id: int) -> None:
        self.my_node_id = node_id
        self.peer: Link | None = None
        self.handler: Callable[[int, int, str], None] | None = None
        self.up = True
        self.payloads: list[str] = []

    def register_capability(self, name: str, handler: Callable[[int, int, str], None]) -> None:
        self.handler = handler

    def subscribe(self, callback: Any) -> Callable[[], None]:
        return lambda: None

    def sip_addr_of(self, node_id: int) -> str | None:
        return f"127.0.0.{10 + node_id}:5060"

    def up_nodes(self, cluster_id: int | None = None) -> tuple[Row, ...]:
        return (Row(self.peer.my_node_id),) if self.peer is not None and self.up else ()

    def send_to(self, cluster_id: int, node_id: int, capability: str, payload: str) -> bool:
        if not self.up or self.peer is None or self.peer.handler is None:
            return False
        self.payloads.append(payload)
        self.peer.handler(cluster_id, self.my_node_id, payload)
        return True

    def send_all(self, cluster_id: int, capability: str, payload: str) -> int:
        return int(self.send_to(cluster_id, self.peer.my_node_id if self.peer else 0, capability, payload))

    def send_acked(self, cluster_id: int, node_id: int, capability: str, payload: str) -> Deferred | None:
        return succeed(None) if self.send_to(cluster_id, node_id, capability, payload) else None


class MeshLink(Link):
    """A node's side of an in-memory cluster of several (``mesh``: every node's link by id). ``see``
    tells its replication a peer's verdict as the cluster's heartbeat would; a ``deaf`` node drops
    what it is sent (a hung donor); with ``slow`` the bulk chunks' acknowledgements wait for the
    test (``acks``)."""

    def __init__(self, node_id: int, mesh: dict[int, MeshLink]) -> None:
        super().__init__(node_id)
        self.mesh = mesh
        mesh[node_id] = self
        self.seen_up: set[int] = set()
        self.subscribers: list[Callable[[int, bool], None]] = []
        self.deaf = self.slow = self.lossy = False
        self.acks: list[Deferred] = []
        self.asked: list[int] = []  # the nodes this one sent a sync-req to

    def subscribe(self, callback: Any) -> Callable[[], None]:
        self.subscribers.append(callback)
        return lambda: None

    def see(self, node_id: int, up: bool) -> None:
        (self.seen_up.add if up else self.seen_up.discard)(node_id)
        for callback in self.subscribers:
            callback(node_id, up)

    def up_nodes(self, cluster_id: int | None = None) -> tuple[Row, ...]:
        return tuple(Row(n) for n in sorted(self.seen_up))

    def send_to(self, cluster_id: int, node_id: int, capability: str, payload: str) -> bool:
        if node_id not in self.seen_up:
            return False
        if json.loads(payload)["t"] == "sync-req":
            self.asked.append(node_id)
        self.payloads.append(payload)
        target = self.mesh[node_id]
        if not target.deaf and target.handler is not None:
            target.handler(cluster_id, self.my_node_id, payload)
        return True

    def send_all(self, cluster_id: int, capability: str, payload: str) -> int:
        return sum(self.send_to(cluster_id, n, capability, payload) for n in sorted(self.seen_up))

    def send_acked(self, cluster_id: int, node_id: int, capability: str, payload: str) -> Deferred | None:
        if self.lossy:  # swallowed: the link dies with it (the test fails the acknowledgement)
            self.acks.append(Deferred())
            return self.acks[-1]
        if not self.send_to(cluster_id, node_id, capability, payload):
            return None
        if not self.slow:
            return succeed(None)
        self.acks.append(Deferred())
        return self.acks[-1]


class Node:
    def __init__(self, node_id: int, clock: Clock, link: Link | None = None) -> None:
        self.clock = clock
        self.journal = ChangeJournal()
        self.location = InMemoryLocation(clock, [self.journal])
        self.link = link or Link(node_id)
        self.replication = Replication(self.location, self.journal, self.link, 1, use_domain=False, clock=clock)

    def save(self, *bindings: Binding) -> None:
        self.location.replace(bindings[0].aor, list(bindings))

    def contacts(self, aor: str) -> list[tuple[str, str, int]]:
        return sorted((str(x.uri), x.call_id, x.cseq) for x in self.location.get(aor))


def drain(clock: Clock) -> None:
    """Run what is due now, and what that schedules for now (a donation's slices), until nothing is."""
    for _ in range(10_000):
        if not any(call.getTime() <= clock.seconds() for call in clock.getDelayedCalls()):
            return
        clock.advance(0)


def pair() -> tuple[Clock, Node, Node]:
    clock = Clock()
    clock.advance(T0)
    x, y = Node(1, clock), Node(2, clock)
    x.link.peer, y.link.peer = y.link, x.link
    x.replication.start()
    y.replication.start()
    return clock, x, y


# -- merge ---------------------------------------------------------------------------------------------
def test_merge_follows_call_id_and_cseq() -> None:
    local = [b("alice", cseq=5)]
    assert merge(local, [b("alice", cseq=4)], []) is None  # older
    assert merge(local, [b("alice", cseq=5)], []) is None  # the same
    (newer,) = merge(local, [b("alice", cseq=6)], []) or []
    assert newer.cseq == 6
    # another Call-ID: the later registration wins, whichever side it arrives on
    assert merge(local, [b("alice", call_id="c2", lm=T0 - 1)], []) is None
    (later,) = merge(local, [b("alice", call_id="c2", lm=T0 + 1)], []) or []
    assert later.call_id == "c2"
    # removals: only of the contact the sender had, not of one registered again since
    uri = str(local[0].uri)
    assert merge(local, [], [(uri, "c1", 5)]) == []
    assert merge(local, [], [(uri, "c1", 4)]) is None
    assert merge(local, [], [(uri, "other", 9)]) is None
    assert merge(local, [], [("sip:nobody@192.0.2.1", "c1", 9)]) is None


# -- replication ---------------------------------------------------------------------------------------
def test_saves_refreshes_and_removals_reach_the_peer() -> None:
    clock, x, y = pair()
    x.save(b("alice"))
    assert y.contacts("alice") == []  # not inside the save ...
    clock.advance(0.02)
    assert y.contacts("alice") == x.contacts("alice")  # ... 20 ms after it
    (copy,) = y.location.get("alice")
    assert copy.flow is None and copy.received == Endpoint("UDP", "198.51.100.7", 5062)  # sent from Y's own socket
    x.save(b("alice", cseq=2), b("alice", port=5064, call_id="c9"))
    clock.advance(0.02)
    assert y.contacts("alice") == x.contacts("alice") and len(y.contacts("alice")) == 2
    x.location.remove("alice", parse_uri("sip:alice@198.51.100.7:5064"))
    clock.advance(0.02)
    assert y.contacts("alice") == x.contacts("alice") and len(y.contacts("alice")) == 1
    x.location.remove("alice")
    clock.advance(0.02)
    assert y.contacts("alice") == []
    # what Y applied is not sent back
    assert y.replication.stats["repl_sent_aors"] == 0 and x.replication.stats["repl_received_aors"] == 0


def test_concurrent_registrations_converge() -> None:
    clock, x, y = pair()
    x.save(b("bob", call_id="same", cseq=5))
    y.save(b("bob", call_id="same", cseq=6))
    clock.advance(0.02)
    assert x.contacts("bob") == y.contacts("bob") == [("sip:bob@198.51.100.7:5062", "same", 6)]
    x.save(b("carol", call_id="from-x", lm=T0 + 2))
    y.save(b("carol", call_id="from-y", lm=T0 + 1))
    clock.advance(0.02)
    assert x.contacts("carol") == y.contacts("carol") == [("sip:carol@198.51.100.7:5062", "from-x", 1)]


def test_expiry_is_everywhere_and_a_late_node_syncs() -> None:
    clock, x, y = pair()
    y.link.up = x.link.up = False  # Y is cut off while X registers
    x.save(b("dave", expires=30))
    x.save(b("erin"))
    clock.advance(0.02)
    assert y.contacts("erin") == []
    y.link.up = x.link.up = True
    assert y.replication.request_sync(1) == 1
    drain(clock)
    assert y.contacts("erin") == x.contacts("erin") and y.contacts("dave") == x.contacts("dave")
    assert y.replication.stats["synced_contacts"] == 2 and y.replication.stats["sync_bytes"] > 0
    clock.advance(31)
    assert x.contacts("dave") == y.contacts("dave") == []


def test_connection_bound_contacts_travel_tagged_with_their_owner() -> None:
    """A WebSocket contact of X reaches Y tagged with X's sip_addr (Y relays to X, never sends it
    itself); it is removed everywhere with its connection, and a node never takes back a contact
    tagged with its own address (after a restart that connection is gone)."""
    clock, x, y = pair()
    remote = Endpoint("WSS", "198.51.100.9", 40000)
    ws = Binding(aor="web", uri=parse_uri("sip:w@abc.invalid;transport=ws"), expires_at=T0 + 600, call_id="w",
                 cseq=1, received=remote, flow=Flow(Endpoint("WSS", "127.0.0.11", 443), remote, 3))
    x.save(ws)
    clock.advance(0.02)
    assert y.contacts("web") == [("sip:w@abc.invalid;transport=ws", "w", 1)]
    (shared,) = y.location.get("web")
    assert shared.owner == "127.0.0.11:5060" and shared.flow is None
    # X restarts empty and syncs from Y: its own old WebSocket contact is not revived
    x2 = Node(1, clock)
    x2.link.peer, y.link.peer = y.link, x2.link
    x2.replication.start()
    x2.replication.request_sync(2)
    drain(clock)
    assert x2.contacts("web") == []
    assert y.contacts("web") == []  # X told Y: that connection is gone
    # the connection closes on X: the removal reaches Y
    y.link.peer = x.link
    x.save(ws)
    clock.advance(0.02)
    assert y.contacts("web") != []
    x.location.remove_flow(ws.flow)  # type: ignore[arg-type]
    clock.advance(0.02)
    assert y.contacts("web") == []


def test_large_syncs_are_chunked_under_the_amp_limit() -> None:
    clock, x, y = pair()
    y.link.up = x.link.up = False
    for i in range(2000):
        x.save(b(f"u{i}", user_agent="Phone/1.0 " + "x" * 100))
    clock.advance(0.02)
    y.link.up = x.link.up = True
    y.replication.request_sync(1)
    assert len(list(y.location.aors())) < 2000  # sent in slices, the reactor turning between them
    drain(clock)
    sync = [json.loads(p) for p in x.link.payloads]
    assert len(sync) > 2 and all(len(p) <= MAX_PAYLOAD for p in x.link.payloads)
    assert sync[-1]["t"] == "sync-end" and sync[-1]["contacts"] == 2000
    assert len(list(y.location.aors())) == 2000


def mesh_of(clock: Clock, *node_ids: int) -> dict[int, Node]:
    mesh: dict[int, MeshLink] = {}
    nodes = {n: Node(n, clock, MeshLink(n, mesh)) for n in node_ids}
    for node in nodes.values():
        node.replication.start()
    return nodes


def link_up(a: Node, b: Node) -> None:
    """The cluster link between ``a`` and ``b`` comes up (each sees the other UP)."""
    a.link.see(b.link.my_node_id, True)
    b.link.see(a.link.my_node_id, True)


def test_only_the_starting_node_pulls_once_from_one_donor() -> None:
    """OpenSIPS clusterer's sync: the node that starts asks one donor; the node that sees it come up
    (synced: it found nobody when it started) does not pull back, nor does a flapping link pull again."""
    clock = Clock()
    clock.advance(T0)
    y = mesh_of(clock, 2)[2]
    y.save(b("alice"))
    assert not y.replication.synced
    clock.advance(5)  # nobody up within seed_fallback_interval: Y's table stands
    assert y.replication.synced and y.link.asked == []
    x = Node(1, clock, MeshLink(1, y.link.mesh))  # type: ignore[attr-defined]
    x.replication.start()
    link_up(x, y)
    drain(clock)
    assert x.link.asked == [2] and y.link.asked == []  # type: ignore[attr-defined]
    assert x.replication.synced and x.contacts("alice") == y.contacts("alice") != []
    # what Y registered alone went in the sync, not also as updates
    assert [json.loads(p)["t"] for p in y.link.payloads] == ["sync", "sync-end"]
    for node, peer in ((x, 2), (y, 1)):  # the link flaps both ways
        node.link.see(peer, False)  # type: ignore[attr-defined]
        node.link.see(peer, True)  # type: ignore[attr-defined]
    drain(clock)
    assert x.link.asked == [2] and y.link.asked == []  # type: ignore[attr-defined]
    assert y.replication.request_sync() == 1  # the MI's ul_cluster_sync still pulls on demand
    drain(clock)
    assert y.link.asked == [1]  # type: ignore[attr-defined]


def test_a_silent_or_dead_donor_is_replaced_by_another() -> None:
    clock = Clock()
    clock.advance(T0)
    nodes = mesh_of(clock, 1, 2)
    x, y = nodes[1], nodes[2]
    clock.advance(5)
    y.save(b("bob"))
    x.link.deaf = True  # type: ignore[attr-defined]  # X is hung: it never answers
    late = []
    for node_id in (3, 4):  # two nodes start while X and Y run: each asks one donor, the first up
        node = Node(node_id, clock, MeshLink(node_id, x.link.mesh))  # type: ignore[attr-defined]
        node.replication.start()
        link_up(node, x)
        link_up(node, y)
        late.append(node)
    z, w = late
    assert z.link.asked == w.link.asked == [1] and x.link.asked == y.link.asked == []  # type: ignore[attr-defined]
    w.link.see(1, False)  # type: ignore[attr-defined]  # X goes down as seen from W: Y is asked at once
    drain(clock)
    assert w.link.asked == [1, 2] and w.contacts("bob") == y.contacts("bob") != []  # type: ignore[attr-defined]
    assert w.replication.synced
    clock.advance(SYNC_IDLE - 1)
    assert z.link.asked == [1] and not z.replication.synced  # type: ignore[attr-defined]
    clock.advance(1)  # X sent nothing for SYNC_IDLE seconds: Z asks Y
    drain(clock)
    assert z.link.asked == [1, 2] and z.replication.synced  # type: ignore[attr-defined]
    assert z.contacts("bob") == y.contacts("bob") != []


def linked_pair() -> tuple[Clock, Node, Node]:
    """X and Y of a mesh, both synced (seed fallback), their link up."""
    clock = Clock()
    clock.advance(T0)
    x, y = mesh_of(clock, 1, 2).values()
    clock.advance(5)
    link_up(x, y)
    return clock, x, y


def test_a_cut_link_heals_without_a_sync() -> None:
    """Both nodes run while their link is cut (each sees the other DOWN): what changed meanwhile --
    saves and removals -- goes to the peer when the link is back, without either pulling a table."""
    clock, x, y = linked_pair()
    x.save(b("alice"))
    x.save(b("bob"))
    clock.advance(0.02)
    assert y.contacts("alice") != [] and y.contacts("bob") != []
    x.link.see(2, False)  # type: ignore[attr-defined]
    y.link.see(1, False)  # type: ignore[attr-defined]
    x.location.remove("alice")
    x.save(b("carol"))
    y.save(b("dave"))
    clock.advance(0.02)
    assert y.contacts("carol") == [] and y.contacts("alice") != []
    link_up(x, y)
    drain(clock)
    clock.advance(0.02)
    for aor in ("alice", "bob", "carol", "dave"):
        assert x.contacts(aor) == y.contacts(aor), aor
    assert y.contacts("alice") == [] and y.contacts("carol") != [] and x.contacts("dave") != []
    assert x.link.asked == y.link.asked == []  # type: ignore[attr-defined]


def test_changes_lost_with_a_link_are_sent_again() -> None:
    """A message the link swallowed (it died before the peer answered) is sent again, removals
    included, when the peer is back: nothing lost to a flapping link."""
    clock, x, y = linked_pair()
    x.save(b("alice"))
    clock.advance(0.02)
    assert y.contacts("alice") != []
    x.link.lossy = True  # type: ignore[attr-defined]
    x.location.remove("alice")
    x.save(b("bob"))
    clock.advance(0.02)
    for d in x.link.acks:  # type: ignore[attr-defined]
        d.errback(ConnectionLost())
    x.link.lossy = False  # type: ignore[attr-defined]
    assert y.contacts("alice") != [] and y.contacts("bob") == []
    clock.advance(1.0)  # sent again while Y still counts as up
    assert y.contacts("alice") == [] and y.contacts("bob") == x.contacts("bob") != []
    assert x.link.asked == y.link.asked == []  # type: ignore[attr-defined]


def test_changes_a_peer_refuses_are_not_sent_again() -> None:
    """An error answer (a peer of another version without the command) would come again: counted
    and logged, not retried every second."""
    from twisted.protocols.amp import UnhandledCommand

    clock, x, y = linked_pair()
    x.link.lossy = True  # type: ignore[attr-defined]
    x.save(b("alice"))
    clock.advance(0.02)
    (refused,) = x.link.acks  # type: ignore[attr-defined]
    refused.errback(UnhandledCommand("Unhandled Command: b'Chunk'"))
    clock.advance(5)
    assert len(x.link.acks) == 1 and x.replication.stats["repl_refused"] == 1  # type: ignore[attr-defined]


def test_a_long_cut_heals_with_a_donation(monkeypatch: Any) -> None:
    """More than HOLD_MAX AoRs changed while the link was cut: the peer gets the whole table as a
    flow-controlled donation instead of a flood of updates -- and the contacts removed meanwhile as
    an update: a donation carries no removals, the peer would keep them until they expire. What is
    held meanwhile is bounded by the table at the cut, not by every AoR of the outage."""
    from edgeproxy.usrloc import replication

    monkeypatch.setattr(replication, "HOLD_MAX", 2)
    clock, x, y = linked_pair()
    x.save(b("alice"))
    clock.advance(0.02)
    assert y.contacts("alice") != []
    x.link.see(2, False)  # type: ignore[attr-defined]
    y.link.see(1, False)  # type: ignore[attr-defined]
    x.location.remove("alice")
    for user in ("a1", "a2", "a3"):
        x.save(b(user))
    clock.advance(0.02)
    for i in range(50):  # an outage of hours: AoRs come and go; only those peers were told of are kept
        x.save(b(f"brief{i}", expires=clock.seconds() - T0 + 1))
        clock.advance(1.0)
    assert x.replication.held == 1 and x.location.get("brief0") == []
    link_up(x, y)
    drain(clock)
    clock.advance(0.02)
    assert [json.loads(p)["t"] for p in x.link.payloads][:4] == ["u", "u", "sync", "sync-end"]
    assert all(y.contacts(u) == x.contacts(u) != [] for u in ("a1", "a2", "a3"))
    assert y.contacts("alice") == x.contacts("alice") == []
    x.location.remove("a1")  # an AoR the donation carried: its later removal reaches the peer
    clock.advance(0.02)
    assert y.contacts("a1") == x.contacts("a1") == []
    assert x.link.asked == y.link.asked == []  # type: ignore[attr-defined]


WINDOW = 4  # SYNC_WINDOW in these tests: 15 chunks are more than a window


def slow_donation(monkeypatch: Any) -> tuple[Clock, Node, Node, list[Deferred]]:
    """X holds 3,000 AoRs (15 slices of a donation) and is synced; Y starts and asks X for them,
    over a link whose chunks' acknowledgements the test gives (the list returned)."""
    from edgeproxy.usrloc import replication

    monkeypatch.setattr(replication, "SYNC_WINDOW", WINDOW)
    clock = Clock()
    clock.advance(T0)
    x = mesh_of(clock, 1)[1]
    for i in range(3000):
        x.save(b(f"u{i}"))
    clock.advance(5)
    y = Node(2, clock, MeshLink(2, x.link.mesh))  # type: ignore[attr-defined]
    y.replication.start()
    x.link.slow = True  # type: ignore[attr-defined]
    link_up(x, y)
    drain(clock)
    return clock, x, y, x.link.acks  # type: ignore[attr-defined]


def test_a_donation_keeps_few_chunks_unacknowledged(monkeypatch: Any) -> None:
    """Flow control: a big sync never has more than SYNC_WINDOW chunks on the link unacknowledged by
    the receiver, so the pings and the ordinary replication sharing the link pass between chunks."""
    clock, x, y, acks = slow_donation(monkeypatch)
    assert len(acks) == WINDOW  # and there it waits for the receiver
    x.link.slow = False  # type: ignore[attr-defined]  # (its own acknowledgement not among the sync's)
    x.save(b("late"))  # ordinary replication is not held behind the sync
    clock.advance(0.02)
    x.link.slow = True  # type: ignore[attr-defined]
    assert y.contacts("late") == x.contacts("late") != []
    most = 0
    for _ in range(100):
        waiting = [d for d in acks if not d.called]
        most = max(most, len(waiting))
        if not waiting:
            break
        waiting[0].callback(None)
        drain(clock)
    assert most == WINDOW and len(acks) == 15
    assert json.loads(x.link.payloads[-1])["t"] == "sync-end" and y.replication.synced
    assert len(y.location.aors()) == 3001


def test_a_donation_stops_when_its_link_is_lost(monkeypatch: Any) -> None:
    """The receiver's link goes away mid-sync: the donor stops (no end marker), and sends the whole
    table again when asked again."""
    clock, x, y, acks = slow_donation(monkeypatch)
    for d in acks:
        d.errback(ConnectionLost())
    drain(clock)
    assert len(acks) == WINDOW and not any(json.loads(p)["t"] == "sync-end" for p in x.link.payloads)
    assert x.replication.stats["sync_donations"] == 0
    x.link.slow = False  # type: ignore[attr-defined]
    x.link.see(2, False)  # type: ignore[attr-defined]
    y.link.see(1, False)  # type: ignore[attr-defined]  # Y's donor went down: Y waits for another
    link_up(x, y)  # back: X sends what it owes, and Y, not synced yet, asks again (one donation at a time)
    drain(clock)
    assert y.link.asked == [1, 1] and x.replication.stats["sync_donations"] == 1  # type: ignore[attr-defined]
    assert len(y.location.aors()) == 3000 and y.replication.synced


def test_malformed_data_from_a_peer_is_counted_and_dropped() -> None:
    clock, x, y = pair()
    handler = y.link.handler
    assert handler is not None
    for payload in ("not json", "{}", '{"t": "u", "a": 5}', '{"t": "u", "a": [["a", [["sip:a@x"]], []]]}',
                    '{"t": "u", "a": [["a", [["sip:a@192.0.2.1", 9e99, "c", 1, ["SCTP?", "h", 1], null, 0, null, '
                    'null, null, null, null, null, 0]], []]]}', '{"t": "nope"}'):
        handler(1, 1, payload)
    assert y.replication.stats["repl_malformed"] == 6 and list(y.location.aors()) == []
    handler(1, 1, json.dumps({"t": "u", "a": [["ok", [["sip:ok@192.0.2.1", T0 + 60, "c", 1, ["UDP", "192.0.2.1", 5060],
                                                        None, 1, "UA", None, None, None, None, None, T0]], []]]}))
    (ok,) = y.location.get("ok")
    assert ok.nat and ok.received == Endpoint("UDP", "192.0.2.1", 5060) and ok.flow is None


def test_decoding_refuses_every_connection_bound_kind() -> None:
    """The raw-field rule of the bulk decoder is rows.connection_bound's: TCP behind NAT, an outbound
    (reg-id) flow, WebSocket and ``.invalid`` hosts stay home; plain TCP and UDP behind NAT travel."""
    def item(uri: str, transport: str, nat: int, reg_id: int | None) -> list[Any]:
        return [uri, T0 + 60, "c", 1, [transport, "192.0.2.1", 5060], None, nat, None, None, None, reg_id, None,
                None, T0]
    kept = {(u, t, n, r): decode_binding("a", item(u, t, n, r), T0) is not None
            for u, t, n, r in [("sip:a@192.0.2.1", "TCP", 1, None), ("sip:a@192.0.2.1", "TLS", 0, 1),
                               ("sip:a@192.0.2.1", "WS", 0, None), ("sip:a@x.invalid", "UDP", 0, None),
                               ("sip:a@192.0.2.1", "TCP", 0, None), ("sip:a@192.0.2.1", "UDP", 1, 1)]}
    assert list(kept.values()) == [False, False, False, False, True, True]
    for (u, t, n, r), ok in kept.items():
        remote = Endpoint(t, "192.0.2.1", 5060)
        binding = Binding(aor="a", uri=parse_uri(u), expires_at=T0 + 60, call_id="c", cseq=1, received=remote,
                          nat=bool(n), reg_id=r)
        assert connection_bound(binding) is not ok


def test_an_aor_twice_in_one_message_merges_in_order() -> None:
    """A message's AoRs are written in one go; an AoR repeated in it still follows the §10.3 rules
    against the earlier entry, not against the table as it was."""
    clock, x, y = pair()
    handler = y.link.handler
    assert handler is not None

    def entry(cseq: int) -> list[Any]:
        return ["dup", [["sip:dup@192.0.2.1", T0 + 60, "c", cseq, ["UDP", "192.0.2.1", 5060], None, 0, None, None,
                         None, None, None, None, T0]], []]
    handler(1, 1, json.dumps({"t": "u", "a": [entry(3), entry(2)]}))
    assert y.contacts("dup") == [("sip:dup@192.0.2.1", "c", 3)]
    handler(1, 1, json.dumps({"t": "u", "a": [entry(4), ["dup", [], [["sip:dup@192.0.2.1", "c", 4]]]]}))
    assert y.contacts("dup") == []


def test_lookup_relays_to_the_node_holding_the_connection() -> None:
    """``lookup("location")`` on a node holding another node's connection-bound contact (full
    sharing): one branch to that node's sip_addr with the AoR as Request-URI, as a global lookup's
    home node; not for a request from a cluster node (the loop guard: 404 there)."""
    from edgeproxy.registrar import RegistrarSettings
    from edgeproxy.routing.testing import RouteHarness
    from edgeproxy_routes import failover

    domain, x_ip, y_ip = "sip.domain.com", "10.0.1.100", "10.0.2.100"
    h = RouteHarness(domains=[domain], local=Endpoint("UDP", x_ip, 5060), settings=RegistrarSettings(use_domain=True),
                     cluster_peers={1: [y_ip]}, params={"freeswitch": ["10.0.1.50"], "cluster_id": 1,
                                                         "domain": domain, "private_ip": x_ip})
    aor = f"alice@{domain}"
    h.location.replace(aor, [Binding(aor=aor, uri=parse_uri("sip:a@df7jal23ls0d.invalid;transport=ws"),
                                     expires_at=h.clock.seconds() + 600, call_id="w", cseq=1,
                                     received=Endpoint("WSS", "198.51.100.9", 40000), owner=f"{y_ip}:5060")])
    invite = (f"INVITE sip:{aor} SIP/2.0\nVia: SIP/2.0/UDP 10.0.1.50:5060;branch=z9hG4bK-o1\nMax-Forwards: 70\n"
              f"From: <sip:fs@{domain}>;tag=fs1\nTo: <sip:{aor}>\nCall-ID: owner-1\nCSeq: 1 INVITE\n"
              "Contact: <sip:fs@10.0.1.50:5060>\nContent-Length: 0\n\n")
    result = h.run(failover.request_route, invite, Endpoint("UDP", "10.0.1.50", 5060))
    assert result.relayed and [(str(t.uri), str(t.dst_uri)) for t in result.targets] == \
        [(f"sip:{aor}", f"sip:{y_ip}:5060")]


    async def plain(msg: Any) -> None:  # lookup("location"); 404 unless found (the default route's core)
        if await msg.lookup("location") < 0:
            msg.sl_send_reply(404, "Not Found")
            return
        msg.t_relay()

    assert h.run(plain, invite.replace("owner-1", "owner-2"), Endpoint("UDP", "10.0.1.50", 5060)).relayed
    looped = h.run(plain, invite.replace("owner-1", "owner-3"), Endpoint("UDP", y_ip, 5060))
    assert not looped.relayed and looped.reply_code == 404


def test_a_removal_is_not_lost_to_a_peer_update_merged_before_it_is_sent() -> None:
    """X unregisters a contact, and a peer's update of the same AoR is merged before X's batch goes
    out: X still tells the peer of the removal (what the peer was told stays what X last sent), or
    the peer would keep the unregistered contact until it expires."""
    clock, x, y = pair()
    x.save(b("alice"))
    clock.advance(0.02)
    assert y.contacts("alice") == x.contacts("alice") != []
    y.save(b("alice"), b("alice", call_id="c9", port=5064))  # another contact of alice's, at Y ...
    clock.advance(0.01)
    x.location.remove("alice", parse_uri("sip:alice@198.51.100.7:5062"))  # ... while X unregisters c1
    clock.advance(0.01)  # Y's update reaches X before X's batch
    clock.advance(0.02)
    assert x.contacts("alice") == [("sip:alice@198.51.100.7:5064", "c9", 1)]
    assert y.contacts("alice") == x.contacts("alice")


def test_non_finite_numbers_from_a_peer_are_malformed() -> None:
    """JSON as Python reads it allows NaN and Infinity: a NaN expiry would spin the expiry timer (it
    never compares due), an infinite one never expires, an infinite CSeq raised OverflowError and
    lost the rest of the message. All are malformed; the other AoRs of the message are applied."""
    clock, x, y = pair()
    handler = y.link.handler
    assert handler is not None

    def item(user: str, expires: Any = T0 + 60, cseq: Any = 1, q: Any = None, lm: Any = T0) -> list[Any]:
        return [f"sip:{user}@192.0.2.1", expires, "c", cseq, ["UDP", "192.0.2.1", 5060], q, 0, None, None, None,
                None, None, None, lm]

    entries = [["nan", [item("nan", expires=float("nan"))], []], ["inf", [item("inf", expires=float("inf"))], []],
               ["cseq", [item("cseq", cseq=float("inf"))], []], ["q", [item("q", q=float("nan"))], []],
               ["lm", [item("lm", lm=float("inf"))], []], ["gone", [], [["sip:x@192.0.2.1", "c", float("inf")]]],
               ["ok", [item("ok")], []]]
    handler(1, 1, json.dumps({"t": "u", "a": entries}))
    handler(1, 1, '{"t": "sync", "a": 5}')
    assert list(y.location.aors()) == ["ok"]
    assert y.replication.stats["repl_malformed"] == 7
    assert not [c for c in clock.getDelayedCalls() if c.getTime() <= clock.seconds()]  # no timer spinning


def test_a_withdrawn_save_is_withdrawn_on_the_peers_too() -> None:
    """A write-through save whose commit failed goes back to what the AoR held before (RFC 3261 §10.3
    step 7), after the tentative one was replicated: the peers, whose merge refuses an older CSeq (or
    an older registration), are told to remove the tentative contact, then get the older one back."""
    clock, x, y = pair()
    x.save(b("alice", cseq=1))
    clock.advance(0.02)
    x.save(b("alice", cseq=2, expires=900))  # tentative: replicated before its commit fails
    clock.advance(0.02)
    assert y.contacts("alice") == [("sip:alice@198.51.100.7:5062", "c1", 2)]
    x.save(b("alice", cseq=1))  # withdrawn
    clock.advance(0.02)
    assert y.contacts("alice") == x.contacts("alice") == [("sip:alice@198.51.100.7:5062", "c1", 1)]
    assert y.location.get("alice")[0].expires_at == T0 + 600
    x.save(b("alice", call_id="c2", lm=T0 + 5))  # another registration of the contact, tentative ...
    clock.advance(0.02)
    x.save(b("alice", cseq=1))  # ... withdrawn
    clock.advance(0.02)
    assert y.contacts("alice") == x.contacts("alice") == [("sip:alice@198.51.100.7:5062", "c1", 1)]
