"""FederationPublisher against a fake store: what it writes and when, ordering, outages, batching.

These run under any reactor (a task.Clock drives the timers; the fake store's Deferreds fire when the
test says so). The same behaviour against a real MongoDB wire-protocol server is in
test_federation_mongo.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from edgeproxy.federation import FederationPublisher, StoreError
from edgeproxy.location import Binding, InMemoryLocation
from edgeproxy.sip import parse_uri
from edgeproxy.sip.endpoint import Endpoint, Flow

T0 = 1_800_000_000.0
ME = "10.0.1.100"
UDP = Flow(Endpoint("UDP", "10.0.1.100", 5060), Endpoint("UDP", "198.51.100.7", 5062))


def tcp_flow(cid: int) -> Flow:
    return Flow(Endpoint("TCP", "10.0.1.100", 5060), Endpoint("TCP", "198.51.100.7", 40000 + cid), cid)


def binding(aor: str, contact: str | None = None, *, now: float, expires: float = 3600,
            flow: Flow = UDP) -> Binding:
    return Binding(aor=aor, uri=parse_uri(contact or f"sip:{aor.split('@')[0]}@198.51.100.7:5062"),
                   expires_at=now + expires, call_id=f"{aor}-cid", cseq=1, flow=flow, received=flow.remote,
                   last_modified=now)


class FakeStore:
    """Records every call; keeps the documents a MongoDB would hold; can be down or held."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple] = []
        self.down = False
        self.hold = False  # when True, writes return Deferreds fired by release()
        self.held: list[tuple[Deferred, Any]] = []

    # the store API used by the publisher
    def _op(self, call: tuple, apply: Any) -> Deferred:
        self.calls.append(call)
        if self.down:
            return fail(StoreError(call[0], ConnectionError("connection refused"), True))
        if self.hold:
            d: Deferred = Deferred()
            self.held.append((d, apply))
            return d
        return succeed(apply())

    def release(self, index: int = 0) -> None:
        d, apply = self.held.pop(index)
        if self.down:
            d.errback(StoreError("held", ConnectionError("connection reset"), True))
        else:
            d.callback(apply())

    def upsert_home(self, aor: str, sip_addr: str, now: float, ttl: float) -> Deferred:
        def apply() -> None:
            self.docs[aor + sip_addr] = {"aor": aor, "home_ip": sip_addr, "refreshed_at": now, "expires_at": now + ttl}
        return self._op(("upsert_home", aor), apply)

    def delete_home(self, aor: str, sip_addr: str) -> Deferred:
        return self._op(("delete_home", aor), lambda: self.docs.pop(aor + sip_addr, None) and None)

    def sync_homes(self, present: list[str], absent: list[str], sip_addr: str, now: float, ttl: float) -> Deferred:
        def apply() -> int:
            for aor in absent:
                self.docs.pop(aor + sip_addr, None)
            for aor in present:
                self.docs[aor + sip_addr] = {"aor": aor, "home_ip": sip_addr, "refreshed_at": now,
                                             "expires_at": now + ttl}
            return len(present) + len(absent)
        return self._op(("sync_homes", tuple(sorted(present)), tuple(sorted(absent))), apply)

    def delete_node_records(self, sip_addr: str) -> Deferred:
        def apply() -> int:
            mine = [k for k, v in self.docs.items() if v["home_ip"] == sip_addr]
            for k in mine:
                del self.docs[k]
            return len(mine)
        return self._op(("delete_node_records", sip_addr), apply)

    def ensure_indexes(self) -> Deferred:
        return self._op(("ensure_indexes",), lambda: ["expires_at_1", "aor_1", "home_ip_1"])

    # test helpers
    def aors_of(self, sip_addr: str = ME) -> set[str]:
        return {v["aor"] for v in self.docs.values() if v["home_ip"] == sip_addr}

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(T0)
    return c


@pytest.fixture
def location(clock: Clock) -> InMemoryLocation:
    return InMemoryLocation(clock)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def make(location: InMemoryLocation, store: FakeStore, clock: Clock, **kw: Any) -> FederationPublisher:
    kw.setdefault("refresh_interval", 60)
    kw.setdefault("retry_interval", 1)
    return FederationPublisher(location, store, ME, clock, **kw)


def register(location: InMemoryLocation, clock: Clock, aor: str, n: int = 1, **kw: Any) -> None:
    now = clock.seconds()
    location.replace(aor, [binding(aor, f"sip:{aor.split('@')[0]}-{i}@198.51.100.7", now=now, **kw) for i in range(n)])


def started(pub: FederationPublisher) -> bool:
    results: list[bool] = []
    pub.start().addCallback(results.append)
    assert results, "start() should fire at once with a synchronous store"
    return results[0]


# -- what is written when ---------------------------------------------------------------------------

def test_start_cleans_own_leftovers_then_publishes_current_aors(location, store, clock) -> None:
    store.docs["old@example.com" + ME] = {"aor": "old@example.com", "home_ip": ME, "refreshed_at": 0, "expires_at": 1}
    store.docs["bob@example.com10.0.2.100"] = {"aor": "bob@example.com", "home_ip": "10.0.2.100",
                                               "refreshed_at": 0, "expires_at": 1}
    register(location, clock, "alice@example.com")
    pub = make(location, store, clock)
    assert started(pub) is True
    assert store.names()[:3] == ["ensure_indexes", "delete_node_records", "sync_homes"]
    assert store.aors_of(ME) == {"alice@example.com"}
    assert store.aors_of("10.0.2.100") == {"bob@example.com"}  # another node's record is untouched
    assert pub.stats["cleaned_on_start"] == 1
    assert pub.available


def test_cleanup_can_be_disabled(location, store, clock) -> None:
    store.docs["old@example.com" + ME] = {"aor": "old@example.com", "home_ip": ME, "refreshed_at": 0, "expires_at": 1}
    pub = make(location, store, clock, cleanup_on_start=False)
    started(pub)
    assert "delete_node_records" not in store.names()
    assert store.aors_of() == {"old@example.com"}


def test_first_binding_upserts_once_later_changes_do_not_write(location, store, clock) -> None:
    pub = make(location, store, clock)
    started(pub)
    store.calls.clear()
    register(location, clock, "alice@example.com")
    assert store.calls == [("upsert_home", "alice@example.com")]
    register(location, clock, "alice@example.com", n=2)  # second binding, same AoR
    register(location, clock, "alice@example.com", n=1)  # one of two goes
    assert store.calls == [("upsert_home", "alice@example.com")]
    assert store.aors_of() == {"alice@example.com"}


@pytest.mark.parametrize("how", ["replace-empty", "remove", "remove-uri", "expiry", "remove_flow"])
def test_last_binding_gone_deletes_the_record(location, store, clock, how) -> None:
    pub = make(location, store, clock)
    started(pub)
    aor = "alice@example.com"
    register(location, clock, aor, expires=100, flow=tcp_flow(7))
    assert store.aors_of() == {aor}
    if how == "replace-empty":  # an unregistering REGISTER (expires=0 for every contact)
        location.replace(aor, [])
    elif how == "remove":  # Contact: * / MI ul_rm
        location.remove(aor)
    elif how == "remove-uri":
        location.remove(aor, parse_uri("sip:alice-0@198.51.100.7"))
    elif how == "expiry":
        clock.advance(101)
    else:
        location.remove_flow(tcp_flow(7))
    assert store.calls[-1] == ("delete_home", aor)
    assert store.aors_of() == set()


def test_refresh_reupserts_live_aors_in_batches(location, store, clock) -> None:
    pub = make(location, store, clock, batch_size=3, refresh_interval=60)
    for i in range(7):
        register(location, clock, f"u{i}@example.com")
    started(pub)
    store.calls.clear()
    clock.advance(60)
    syncs = [c for c in store.calls if c[0] == "sync_homes"]
    assert [len(c[1]) for c in syncs] == [3, 3, 1]
    assert set().union(*(c[1] for c in syncs)) == {f"u{i}@example.com" for i in range(7)}
    assert all(d["refreshed_at"] == T0 + 60 and d["expires_at"] == T0 + 60 + 180 for d in store.docs.values())
    clock.advance(60)
    assert len([c for c in store.calls if c[0] == "sync_homes"]) == 6


def test_record_ttl_must_exceed_refresh_interval(location, store, clock) -> None:
    with pytest.raises(ValueError, match="record_ttl"):
        make(location, store, clock, refresh_interval=60, record_ttl=60)
    with pytest.raises(ValueError, match="bare host"):
        FederationPublisher(location, store, "sip:10.0.0.1", clock)


# -- ordering ----------------------------------------------------------------------------------------

def test_writes_for_one_aor_never_overlap(location, store, clock) -> None:
    """created → emptied → created while the first upsert is in flight: the store sees one write at a
    time and ends with the AoR's final state."""
    pub = make(location, store, clock)
    started(pub)
    store.hold = True
    aor = "alice@example.com"
    register(location, clock, aor)
    location.replace(aor, [])
    assert len(store.held) == 1  # the delete waits for the upsert
    store.release()
    assert len(store.held) == 1 and store.calls[-1] == ("delete_home", aor)
    register(location, clock, aor)
    location.replace(aor, [])
    store.release()  # the delete completes; the AoR changed twice meanwhile and ends absent: one write
    assert store.calls[-1] == ("delete_home", aor)
    store.release()
    assert not store.held and store.aors_of() == set()


def test_events_during_a_sync_batch_are_written_after_it(location, store, clock) -> None:
    pub = make(location, store, clock)
    register(location, clock, "alice@example.com")
    store.hold = True
    pub.start()
    store.release()  # ensure_indexes
    store.release()  # delete_node_records
    assert store.calls[-1][0] == "sync_homes"
    location.replace("alice@example.com", [])  # alice goes while her upsert is in the batch
    assert len(store.held) == 1
    store.release()
    assert store.calls[-1] == ("delete_home", "alice@example.com")
    store.release()
    assert store.aors_of() == set()


# -- outages ---------------------------------------------------------------------------------------

def test_store_down_registrations_go_on_and_everything_is_republished_when_back(location, store, clock) -> None:
    pub = make(location, store, clock, retry_interval=1, max_retry_interval=8)
    register(location, clock, "alice@example.com")
    register(location, clock, "carol@example.com")
    started(pub)
    store.down = True
    register(location, clock, "bob@example.com")  # the write fails
    assert pub.available is False
    assert location.get("bob@example.com")  # the registration itself stands
    location.replace("carol@example.com", [])  # carol goes while the store is down: no write attempted
    assert store.calls[-1] == ("upsert_home", "bob@example.com")
    # the store "restarts empty": nothing of ours is there any more
    store.docs.clear()
    clock.advance(1)  # first retry: still down
    clock.advance(2)  # second retry (backoff): still down
    # each retry is a whole sync, which starts by re-creating the indexes an empty store has lost
    assert [c[0] for c in store.calls[-2:]] == ["ensure_indexes", "ensure_indexes"]
    store.down = False
    clock.advance(4)
    assert "ensure_indexes" in [c[0] for c in store.calls[-3:]]
    assert store.aors_of() == {"alice@example.com", "bob@example.com"}
    assert pub.available is True
    # carol's delete was sent with the re-publication even though the store no longer had her
    last = [c for c in store.calls if c[0] == "sync_homes"][-1]
    assert last[2] == ("carol@example.com",)
    # back to the normal refresh period
    n = len(store.calls)
    clock.advance(59)
    assert len(store.calls) == n
    clock.advance(1)
    assert [c[0] for c in store.calls[n:]] == ["ensure_indexes", "sync_homes"]


def test_store_down_at_start_up_cleanup_waits_and_nothing_is_written_before_it(location, store, clock) -> None:
    store.down = True
    store.docs["stale@example.com" + ME] = {"aor": "stale@example.com", "home_ip": ME, "refreshed_at": 0,
                                            "expires_at": 1}
    pub = make(location, store, clock)
    assert started(pub) is False
    register(location, clock, "alice@example.com")
    assert store.names() == ["ensure_indexes"]  # no single write before the start-up cleanup
    store.down = False
    clock.advance(1)
    assert store.names()[1:] == ["ensure_indexes", "delete_node_records", "sync_homes"]
    assert store.aors_of() == {"alice@example.com"}


def test_retry_backoff_is_capped(location, store, clock) -> None:
    pub = make(location, store, clock, retry_interval=1, max_retry_interval=4, refresh_interval=60)
    store.down = True
    started(pub)
    times = []
    for _ in range(6):
        n = len(store.calls)
        waited = 0
        while len(store.calls) == n:
            clock.advance(0.5)
            waited += 0.5
        times.append(waited)
    assert times == [1, 2, 4, 4, 4, 4]


def test_sync_joins_a_running_sync(location, store, clock) -> None:
    pub = make(location, store, clock)
    store.hold = True
    first = pub.start()
    second = pub.sync()
    while store.held:
        store.release()
    assert first.result is True and second.result is True
    assert pub.stats["syncs"] == 1


# -- stop ------------------------------------------------------------------------------------------

def test_stop_deletes_own_records_and_stops_listening(location, store, clock) -> None:
    pub = make(location, store, clock)
    register(location, clock, "alice@example.com")
    started(pub)
    store.docs["bob@example.com10.0.2.100"] = {"aor": "bob@example.com", "home_ip": "10.0.2.100"}
    pub.stop()
    assert store.aors_of() == set() and store.aors_of("10.0.2.100") == {"bob@example.com"}
    n = len(store.calls)
    register(location, clock, "dave@example.com")
    clock.advance(1000)
    assert len(store.calls) == n


def test_stop_while_down_does_not_wait_for_the_store(location, store, clock) -> None:
    pub = make(location, store, clock)
    started(pub)
    store.down = True
    register(location, clock, "alice@example.com")
    n = len(store.calls)
    d = pub.stop()
    assert d.called and len(store.calls) == n
    assert clock.getDelayedCalls() == [] or all(not c.active() for c in clock.getDelayedCalls()
                                                if c.func == pub._tick)


def test_status_reports_state(location, store, clock) -> None:
    pub = make(location, store, clock)
    register(location, clock, "alice@example.com")
    started(pub)
    s = pub.status()
    assert s["live_aors"] == 1 and s["down"] is False and s["ready"] is True and s["next_sync_in"] == 60
