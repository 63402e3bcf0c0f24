"""Full sharing of the location table over the cluster link (OpenSIPS usrloc ``full-sharing-cluster``:
capability ``usrloc-contact-repl``, ``ul_cluster.c``; reference opensips-modules.md §6.4-6.5).

Every node holds every contact. :class:`Replication` reads the table's
:class:`~edgeproxy.location.ChangeJournal` :data:`BATCH_DELAY` (20 ms) after a change and sends each
changed AoR's current contacts, with the contacts it lost since the last time (Call-ID and CSeq
each), to every peer that is up, packed many AoRs to a message (``Cluster.send_acked``, capability
``usrloc-contact-repl``, JSON; each message under AMP's 64 KB). The peer answers each message once
applied; one that is not answered (the link was lost with it) is sent again, removals included,
when the peer is back -- a flapping link loses nothing. A node applies them with the rules of
RFC 3261 §10.3 as OpenSIPS does (``get_ucontact``), per contact URI:

* an incoming contact with the Call-ID of the local one replaces it only with a higher CSeq (an
  equal or lower one is older, or the same);
* with another Call-ID the newer registration wins -- OpenSIPS always takes the incoming one, which
  lets two nodes swap two concurrent registrations for ever; here the later ``last_modified`` wins,
  then the greater Call-ID, so both nodes end with the same contact;
* a removal deletes the local contact only when it has the removed Call-ID and no higher CSeq (a
  contact registered again meanwhile survives); an unknown contact's removal is ignored.

Applied changes are not sent on. Expiry is every node's own (each holds the same absolute expiry);
its removals are replicated too, harmlessly.

Syncs follow OpenSIPS clusterer's capability sync: a node that starts is not synced; when the first
peer comes up it asks that one donor for the whole table (``sync-req``; chunks of AoRs, then an end
marker with the count), once -- a node that is synced does not pull from a peer that comes up (that
peer, if it restarted, asks us). A donor that dies or sends nothing for :data:`SYNC_IDLE` seconds is
replaced by another peer that is up. A node that finds no peer up within ``fallback`` seconds
(``seed_fallback_interval``) counts its own table as the cluster's. MI ``ul_cluster_sync`` pulls
again on demand. The result is always merged, never wiped. A donation is sent in slices with the
reactor turning between them, and with at most :data:`SYNC_WINDOW` chunks unacknowledged
(:meth:`~edgeproxy.cluster.Cluster.send_acked`): the pings and the ordinary replication sharing the
link are never queued behind more than that. One log line per sync with count, duration and bytes.
Changes made while no peer is up (after one had been) are held and sent to the first peer that
comes up again -- as updates, or as a donation of the whole table when more than :data:`HOLD_MAX`
AoRs changed -- so two running nodes whose link was cut are level again when it heals, without
either asking for a sync (with three or more nodes, a peer that alone was unreachable misses what
the others were sent meanwhile: MI ``ul_cluster_sync`` pulls on demand).

Connection-bound contacts (WebSocket, outbound flows, TCP/TLS behind NAT) are replicated tagged with
the ``sip_addr`` of the node holding the connection (``Binding.owner``): only that node can reach
them, so a peer's ``lookup()`` relays requests for them to it -- as a federated global lookup does --
and skips them while that node is down (a fast 404 instead of a timer-B hang). A node never takes
back a contact tagged with its own ``sip_addr`` (after a restart that connection is gone). Other
replicated contacts carry no flow: a peer sends to their ``received`` address (NAT) or Contact from
its own listener.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..location import Binding, ChangeJournal, InMemoryLocation
from ..sip.errors import SipValueError
from .rows import connection_bound
from .wire import MAX_PAYLOAD, Removed, decode_binding, encode_binding, merge, pack, withdrawn

__all__ = ["CAPABILITY", "ClusterLink", "Replication", "MAX_PAYLOAD", "merge", "encode_binding", "decode_binding"]

log = Logger(namespace="edgeproxy.usrloc")

CAPABILITY = "usrloc-contact-repl"
#: AoRs encoded per step of a donation: about 40 KB, one message; the reactor runs between steps.
SYNC_SLICE = 200
#: Chunks of a donation sent and not yet acknowledged at most (flow control, ~1.3 MB): a ping waits
#: behind at most ~70 ms of the receiver's work (unloaded), and the receiver has enough queued to
#: go on while the donor waits for the CPU on a loaded machine (with 8, syncs took twice as long).
SYNC_WINDOW = 32
#: Seconds without any chunk from the donor after which another donor is asked.
SYNC_IDLE = 10.0

#: AoRs changed while no peer was up that are sent as ordinary updates to the first peer back; with
#: more it gets the whole table instead, as a (flow-controlled) donation.
HOLD_MAX = 2_000

#: Seconds before changes that did not reach a peer still counted as up are sent again.
RESEND_DELAY = 1.0

#: Seconds changes gather before they are sent: at a thousand REGISTERs a second, tens of AoRs to a
#: message instead of one or two, for a delay no caller notices.
BATCH_DELAY = 0.02

class NodeRow(Protocol):
    """What the replication reads of a peer :meth:`ClusterLink.up_nodes` lists (a ``NodeInfo``)."""

    @property
    def node_id(self) -> int: ...


class ClusterLink(Protocol):
    """What the replication needs of :class:`edgeproxy.cluster.Cluster`."""

    my_node_id: int

    def register_capability(self, name: str, handler: Callable[[int, int, str], None]) -> None: ...

    def send_to(self, cluster_id: int, node_id: int, capability: str, payload: str) -> bool: ...

    def send_acked(self, cluster_id: int, node_id: int, capability: str, payload: str) -> Deferred | None: ...

    def up_nodes(self, cluster_id: int | None = None) -> tuple[NodeRow, ...]: ...

    def subscribe(self, callback: Callable[[int, bool], None]) -> Callable[[], None]: ...

    def sip_addr_of(self, node_id: int) -> str | None: ...


class Replication:
    """Replicates ``location`` (whose ``journals`` include ``journal``) in ``cluster_id`` over
    ``cluster``; ``use_domain`` is the registrar's, ``clock`` the location's; ``fallback``: seconds
    after :meth:`start` when, no peer being up, this node counts as synced (the cluster's
    ``seed_fallback_interval``)."""

    def __init__(self, location: InMemoryLocation, journal: ChangeJournal, cluster: ClusterLink, cluster_id: int,
                 *, use_domain: bool, clock: IReactorTime, fallback: float = 5.0) -> None:
        if journal not in location.journals:
            raise ValueError("the location must record its changes in this journal")
        self.location = location
        self.journal = journal
        self.cluster = cluster
        self.cluster_id = cluster_id
        self.use_domain = use_domain
        self.clock = clock
        #: this node's sip_addr: the owner written on its connection-bound contacts
        self.sip_addr = cluster.sip_addr_of(cluster.my_node_id) or None
        self._sent: dict[str, tuple[Binding, ...]] = {}  # what peers were last told of each AoR
        self._held: set[str] = set()  # AoRs changed while no peer was up (after one had been), or unsent
        # more than HOLD_MAX were: the next peer up gets a donation, and _held keeps only the AoRs peers
        # were told of (whose removals the donation cannot carry) -- bounded by the table at the cut,
        # not by every AoR registered during an outage of hours
        self._overflow = False
        self._lost_removals: dict[str, list[Removed]] = {}  # removals of unsent changes, sent again
        self._peer_seen = False
        self._running = False
        self._soon: IDelayedCall | None = None
        self.fallback = float(fallback)
        self._syncs: dict[int, dict[str, Any]] = {}  # donor node -> progress of the sync from it
        #: holds a whole table: pulled from a donor, or nobody was up to pull from (see the module doc)
        self.synced = False
        self._donor: int | None = None  # the node asked for its table, until it ends the sync
        self._failed: set[int] = set()  # donors that went silent: asked last
        self._watch: IDelayedCall | None = None  # the timer of SYNC_IDLE or of the fallback
        self._owed: set[int] = set()  # nodes owed our table: asked before our link was up, or it failed
        self._donating: set[int] = set()
        # donations run in slices with the reactor turning between them, so that the pings of a big
        # sync's two nodes are answered meanwhile (a node blocked for seconds is declared down)
        self._cooperator = Cooperator(scheduler=lambda step: clock.callLater(0, step))
        self.stats = {"repl_sent_aors": 0, "repl_messages": 0, "repl_received_aors": 0, "repl_applied_aors": 0,
                      "repl_malformed": 0, "repl_refused": 0, "sync_requests": 0, "sync_donations": 0,
                      "synced_contacts": 0, "sync_bytes": 0}
        cluster.register_capability(CAPABILITY, self.received)
        cluster.subscribe(self.node_changed)

    @property
    def held(self) -> int:
        """How many AoRs are kept for the next peer up (changed while none was, or lost with a link)."""
        return len(self._held)

    # -- life cycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self.journal.take()  # what the table held before (loaded from SQL) goes with the syncs
        self._sent = {aor: tuple(self.location.get(aor)) for aor in self.location.aors()}
        self.synced = False
        self._rearm(self.fallback, self._fall_back)
        self._wait()

    def stop(self) -> None:
        self._running = False
        for call in (self._soon, self._watch):
            if call is not None and call.active():
                call.cancel()
        self._soon = self._watch = None

    def _wait(self) -> None:
        if self._running:
            self.journal.when_changed().addCallback(self._changed)

    def _changed(self, _: object) -> None:
        # inside the location's update: only schedule
        if self._running and (self._soon is None or not self._soon.active()):
            self._soon = self.clock.callLater(BATCH_DELAY, self._send_changes)

    # -- sending -------------------------------------------------------------------------------------
    def _entry(self, aor: str, bindings: Iterable[Binding], removed: list[Removed]) -> list[Any]:
        """``[aor, encoded bindings, removed]``: a connection-bound contact of this node's goes tagged
        with its ``sip_addr`` (left out when it has none: no peer could reach it); a replicated one
        keeps its owner."""
        me = self.sip_addr
        items = []
        for b in bindings:
            if b.owner is not None or not connection_bound(b):
                items.append(encode_binding(b))
            elif me is not None:
                items.append(encode_binding(b, me))
        return [aor, items, removed]

    def _send_changes(self) -> None:
        self._soon = None
        try:
            aors = self.journal.take()
            nodes = [int(r.node_id) for r in self.cluster.up_nodes(self.cluster_id)]
            if not nodes and self._peer_seen:
                # nobody to tell: kept for the first peer that comes up again (a link cut while both
                # nodes ran is made good this way; a restarted peer also pulls the whole table)
                self._hold(aors)
                return
            if nodes and self._overflow:
                self._release_held(nodes)
            if nodes and self._held:
                aors |= self._held
                self._held = set()
            changes = self._changes(aors)
            if nodes:  # else never a peer up since the start: _sent follows the table, the first peer pulls it
                self._send([self._entry(aor, current, removed) for aor, current, removed in changes], nodes)
        except Exception:
            log.failure("usrloc: replicating changes failed")
        finally:
            self._wait()

    def _changes(self, aors: Iterable[str]) -> list[tuple[str, tuple[Binding, ...], list[Removed]]]:
        """Each of ``aors`` with its live contacts and the contacts it lost since peers were last told
        of it (and removals a lost link swallowed); ``_sent`` now holds the live contacts."""
        now = self.clock.seconds()
        sent = self._sent
        lost = self._lost_removals
        out = []
        for aor, stored in self.location.stored(aors):
            current = tuple([b for b in stored if b.expires_at > now])
            before = sent.pop(aor, ())
            if current:
                sent[aor] = current
            if before:
                now_by_uri = {b.uri: b for b in current}
                removed = [(str(b.uri), b.call_id, b.cseq) for b in before if withdrawn(b, now_by_uri.get(b.uri))]
            else:
                removed = []
            if lost and aor in lost:
                removed += lost.pop(aor)
            out.append((aor, current, removed))
        return out

    def _send(self, entries: list[list[Any]], nodes: list[int]) -> None:
        """``entries`` as updates to ``nodes``, each message acknowledged or sent again (:meth:`_unsent`)."""
        if not entries:
            return
        for payload in pack("u", entries):
            self.stats["repl_messages"] += 1
            for node_id in nodes:
                sending = self.cluster.send_acked(self.cluster_id, node_id, CAPABILITY, payload)
                if sending is None:
                    self._unsent(None, entries)
                else:
                    sending.addErrback(self._unsent, entries)
        self.stats["repl_sent_aors"] += len(entries)

    def _hold(self, aors: set[str]) -> None:
        """Keep ``aors`` for the next peer up (see ``_overflow``)."""
        sent = self._sent
        if self._overflow:
            self._held |= {aor for aor in aors if aor in sent}
            return
        self._held |= aors
        if len(self._held) > HOLD_MAX:
            self._overflow = True
            self._held = {aor for aor in self._held if aor in sent}

    def _release_held(self, nodes: list[int]) -> None:
        """More than :data:`HOLD_MAX` AoRs changed while no peer was up: ``nodes`` get what was removed
        meanwhile as updates -- a donation carries only what the table holds, and a merge never
        deletes what it is not told was removed (the peer would keep unregistered contacts until they
        expire) -- then the whole table as a (flow-controlled) donation each."""
        held, self._held, self._overflow = self._held, set(), False
        self._send([[aor, [], removed] for aor, _, removed in self._changes(held) if removed], nodes)
        # the AoRs made meanwhile were not held: peers are told of them now, as of every AoR (a later
        # removal of one is computed from here)
        self._changes(self.location.aors())
        for node_id in nodes:
            self._donate(node_id)

    def _unsent(self, failure: Failure | None, entries: list[list[Any]]) -> None:
        """Changes that did not reach a peer (no link, or the link was lost before the peer answered:
        a flapping link aborts what it had buffered): held, with their removals, and sent again --
        now and then every :data:`RESEND_DELAY` while the peer counts as up, or when it comes back.
        A peer that refused the message (an error answer, e.g. a version without the command) would
        refuse it again: that is logged, not retried."""
        if failure is not None and not failure.check(ConnectionClosed):
            self.stats["repl_refused"] += 1
            log.warn("usrloc: a peer refused replicated changes: {why}", why=failure.getErrorMessage())
            return None
        lost = self._lost_removals
        for aor, _, removed in entries:
            self._held.add(aor)
            if removed:
                lost.setdefault(aor, []).extend(r for r in removed if r not in lost.get(aor, ()))
        if self._running and (self._soon is None or not self._soon.active()):
            self._soon = self.clock.callLater(RESEND_DELAY, self._send_changes)
        return None

    # -- receiving -----------------------------------------------------------------------------------
    def received(self, cluster_id: int, node_id: int, payload: str) -> None:
        """Data from a peer (the cluster checked who it is)."""
        if cluster_id != self.cluster_id:
            return
        try:
            data = json.loads(payload)
            kind = data["t"]
        except (ValueError, KeyError, TypeError):
            self._malformed(node_id, payload)
            return
        if kind == "u":
            self._apply(node_id, data.get("a"))
        elif kind == "sync-req":
            self._donate(node_id)
        elif kind == "sync":
            progress = self._syncs.get(node_id)
            if progress is None:
                progress = self._syncs[node_id] = self._progress(node_id)
            progress["last"] = self.clock.seconds()
            progress["bytes"] += len(payload)
            entries = data.get("a")
            progress["contacts"] += self._apply(node_id, entries)
            progress["aors"] += len(entries) if isinstance(entries, list) else 0
        elif kind == "sync-end":
            self._sync_ended(node_id, data, len(payload))
        else:
            self._malformed(node_id, payload)

    def _malformed(self, node_id: int, payload: str) -> None:
        self.stats["repl_malformed"] += 1
        log.warn("usrloc: malformed replication data from node {n}: {p!r}", n=node_id, p=payload[:200])

    def _apply(self, node_id: int, entries: Any) -> int:
        """Merge ``entries`` ([aor, encoded bindings, removed] each); the number of contacts received
        (expired ones and our own connection-bound ones included, as the donor counts)."""
        if not isinstance(entries, list):
            self._malformed(node_id, repr(entries))
            return 0
        now = self.clock.seconds()
        location = self.location
        changed = self.journal.changed
        stats = self.stats
        me = self.sip_addr
        # every AoR of the message is merged first and written in one go (InMemoryLocation.replace_many):
        # a bulk sync's cost is the decoding, not one timer re-arm and one Deferred per AoR
        batch: dict[str, list[Binding]] = {}
        # local changes not sent yet (rare): they still go out, and what peers were last told of the
        # AoR stays as it was -- a removal among them is computed from it when they are sent
        pending: set[str] = set()
        held = self._held
        contacts = received = 0
        stale: list[list[Any]] = []
        for entry in entries:
            try:
                aor, items, removed = entry
                aor = str(aor)
                incoming = []
                for item in items:
                    b = decode_binding(aor, item, now, me)
                    if b is not None:
                        incoming.append(b)
                if me is not None and len(incoming) < len(items):
                    # our own connection-bound contacts coming back (we restarted): their connections
                    # are gone, so they go everywhere else too -- nothing stale, nothing revived
                    stale += [[aor, [], [[str(i[0]), str(i[2]), int(i[3])]]] for i in items
                              if len(i) > 14 and i[14] == me]
                gone = [(str(u), str(c), int(q)) for u, c, q in removed] if removed else []
            except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, SipValueError):
                stats["repl_malformed"] += 1
                continue
            contacts += len(items)  # as the donor counts them, taken or not
            received += 1
            local = batch[aor] if aor in batch else location.get(aor)
            if aor in changed or aor in held:
                pending.add(aor)
                incoming = self._not_removed(aor, local, incoming)
            merged = incoming if not local and not gone else merge(local, incoming, gone)
            if merged is None or (not merged and not local):
                continue
            batch[aor] = merged
        stats["repl_received_aors"] += received
        if stale:
            for payload in pack("u", stale):
                self.cluster.send_to(self.cluster_id, node_id, CAPABILITY, payload)
        if not batch:
            return contacts
        location.replace_many(batch.items())
        sent = self._sent
        for aor, merged in batch.items():
            if aor in pending:
                continue
            changed.discard(aor)  # applied changes are not sent on
            if merged:
                sent[aor] = tuple(merged)
            else:
                sent.pop(aor, None)
        stats["repl_applied_aors"] += len(batch)
        return contacts

    def _not_removed(self, aor: str, local: list[Binding], incoming: list[Binding]) -> list[Binding]:
        """``incoming`` without the contacts this node removed and has not told its peers of yet: a
        peer's copy sent before it heard of the removal (same Call-ID, no higher CSeq) is older than
        the removal (RFC 3261 §10.3 ordering) and must not bring the contact back."""
        here = {b.uri for b in local}
        gone = {str(b.uri): (b.call_id, b.cseq) for b in self._sent.get(aor, ()) if b.uri not in here}
        for uri, call_id, cseq in self._lost_removals.get(aor, ()):
            gone.setdefault(uri, (call_id, cseq))
        if not gone:
            return incoming
        kept = []
        for b in incoming:
            removal = gone.get(str(b.uri))
            if removal is None or removal[0] != b.call_id or b.cseq > removal[1]:
                kept.append(b)
        return kept

    # -- syncs ---------------------------------------------------------------------------------------
    def node_changed(self, node_id: int, up: bool) -> None:
        """A peer came up: send it our table if it asked while our link to it was not up yet, what
        changed while no peer was up, and pull its table if we have not synced yet. A donor went
        down: ask another."""
        if not self._running:
            return
        if up:
            if node_id in self._owed:
                self._owed.discard(node_id)
                self._donate(node_id)
            self._peer_seen = True
            if self._overflow:
                self._release_held([node_id])  # too much changed while nobody was up: the whole table
            elif self._held:
                self._changed(None)  # what changed while nobody was up goes out now
            self._pull(node_id)
        elif node_id == self._donor:
            log.info("usrloc: node {n} went down during its sync to us", n=node_id)
            self._drop_donor()
            self._pull()

    def request_sync(self, node_id: int | None = None) -> int | None:
        """Ask ``node_id`` (default: the first peer up) for its whole table (OpenSIPS
        ``ul_cluster_sync``), even when synced. The donor asked -- the one already sending, when a
        sync is under way -- or None when no peer is up."""
        if self._donor is not None:
            return self._donor  # one is coming: a flapping link or a second MI call must not start another
        if node_id is None:
            up = self.cluster.up_nodes(self.cluster_id)
            if not up:
                return None
            node_id = int(up[0].node_id)
        return node_id if self._ask(node_id) else None

    def _pull(self, prefer: int | None = None) -> None:
        """Ask one donor (``prefer`` when it is up; silent ones last) unless synced or one was asked."""
        if self.synced or self._donor is not None or not self._running:
            return
        up = [int(r.node_id) for r in self.cluster.up_nodes(self.cluster_id)]
        up.sort(key=lambda n: (n != prefer, n in self._failed))
        for node_id in up:
            if self._ask(node_id):
                return

    def _ask(self, node_id: int) -> bool:
        self._syncs[node_id] = self._progress(node_id)
        if not self.cluster.send_to(self.cluster_id, node_id, CAPABILITY, json.dumps({"t": "sync-req"})):
            self._syncs.pop(node_id, None)
            return False
        self._donor = node_id
        self._rearm(SYNC_IDLE, self._check_donor)
        self.stats["sync_requests"] += 1
        log.info("usrloc: asked node {n} for its location table", n=node_id)
        return True

    def _progress(self, node_id: int) -> dict[str, Any]:
        return {"started": time.perf_counter(), "last": self.clock.seconds(), "contacts": 0, "bytes": 0, "aors": 0}

    def _rearm(self, delay: float, call: Callable[[], None]) -> None:
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._watch = self.clock.callLater(delay, call)

    def _check_donor(self) -> None:
        """:data:`SYNC_IDLE` after the donor's last chunk (or our request): still sending, or replaced."""
        self._watch = None
        donor = self._donor
        if donor is None:
            return
        progress = self._syncs.get(donor)
        idle = self.clock.seconds() - (progress["last"] if progress else 0.0)
        if progress is not None and idle < SYNC_IDLE:
            self._rearm(SYNC_IDLE - idle, self._check_donor)
            return
        log.warn("usrloc: node {n} sent nothing of its table for {s:.0f} s; asking another node", n=donor, s=idle)
        self._failed.add(donor)
        self._drop_donor()
        self._pull()

    def _drop_donor(self) -> None:
        if self._donor is not None:
            self._syncs.pop(self._donor, None)
            self._donor = None
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._watch = None

    def _fall_back(self) -> None:
        """``fallback`` seconds after the start: nobody to pull from, our table is the cluster's."""
        self._watch = None
        if self.synced or self._donor is not None:
            return
        if self.cluster.up_nodes(self.cluster_id):
            self._pull()  # a peer is up but could not be asked: try again
            if self._donor is None:
                self._rearm(self.fallback, self._fall_back)
            return
        self.synced = True
        log.info("usrloc: no peer up {t} s after the start; this node's table stands (seed fallback)",
                 t=self.fallback)

    def _donate(self, node_id: int) -> None:
        """Send the whole table to ``node_id`` (it asked), in slices (see :data:`SYNC_SLICE`)."""
        if node_id in self._donating:
            return
        self._donating.add(node_id)
        task = self._cooperator.cooperate(self._donation(node_id))
        d = task.whenDone()
        d.addErrback(lambda f: log.failure("usrloc: the sync to node {n} failed", f, n=node_id))
        d.addBoth(lambda _: self._donating.discard(node_id))

    def _donation(self, node_id: int) -> Iterator[Deferred | None]:
        started = time.perf_counter()
        stored = self.location.stored
        aors = self.location.aors()
        contacts = size = chunks = 0
        window: deque[Deferred] = deque()  # chunks sent, not yet acknowledged
        lost: list[Any] = []
        for start in range(0, len(aors), SYNC_SLICE):
            # read when sent, not at the start: a change made meanwhile went out before this chunk
            now = self.clock.seconds()
            entries = [self._entry(aor, [b for b in bindings if b.expires_at > now], [])
                       for aor, bindings in stored(aors[start:start + SYNC_SLICE])]
            for payload in pack("sync", [e for e in entries if e[1]]):
                sent = self.cluster.send_acked(self.cluster_id, node_id, CAPABILITY, payload)
                if sent is None:
                    # a node that (re)started asks before our link to it is back: sent when it is up
                    self._owed.add(node_id)
                    log.info("usrloc: node {n} asked for a sync; sent when our link to it is up", n=node_id)
                    return
                window.append(sent.addErrback(lost.append))
                size += len(payload)
                chunks += 1
            contacts += sum(len(e[1]) for e in entries)
            while len(window) >= SYNC_WINDOW:
                yield window.popleft()  # the Cooperator waits for the oldest chunk's acknowledgement
            if lost:
                log.warn("usrloc: the sync to node {n} stopped after {c} chunks: {why}; sent again when it is "
                         "back", n=node_id, c=chunks, why=lost[0].getErrorMessage())
                self._owed.add(node_id)
                return
            yield None
        end = {"t": "sync-end", "contacts": contacts, "aors": len(aors), "chunks": chunks}
        self.cluster.send_to(self.cluster_id, node_id, CAPABILITY, json.dumps(end))
        self.stats["sync_donations"] += 1
        log.info("usrloc: sent {n} contacts of {aors} AoRs to node {node} in {chunks} chunks ({size} bytes, "
                 "{ms:.0f} ms)", n=contacts, aors=len(aors), node=node_id, chunks=chunks, size=size,
                 ms=(time.perf_counter() - started) * 1000)

    def _sync_ended(self, node_id: int, data: dict[str, Any], size: int) -> None:
        progress = self._syncs.pop(node_id, None) or self._progress(node_id)
        if node_id == self._donor:
            self._drop_donor()
        self.synced = True
        self._failed.discard(node_id)
        received, expected = progress["contacts"], data.get("contacts")
        total = progress["bytes"] + size
        self.stats["synced_contacts"] += received
        self.stats["sync_bytes"] += total
        per = total / received if received else 0.0
        log.info("usrloc: synced {n} contacts of {aors} AoRs from node {node} in {ms:.0f} ms ({size} bytes, "
                 "{per:.0f} bytes per contact){short}", n=received, aors=progress["aors"], node=node_id,
                 ms=(time.perf_counter() - progress["started"]) * 1000, size=total, per=per,
                 short="" if received == expected else f"; the donor sent {expected}: some were lost")
