"""The federation store against a real MongoDB wire-protocol server (SecantusDB, or MONGO_URI).

Reactor: PyMongo's AsyncMongoClient needs Twisted's asyncio reactor, and a pytest process has one
reactor for all its tests. The project's test command (``python -m pytest tests``) runs on the default
(epoll) reactor. So this module has two faces:

* under the asyncio reactor (``python -m pytest tests/test_federation_mongo.py --reactor=asyncio``) it
  is the real tests below, one pytest item each;
* under any other reactor it is one test, ``test_federation_mongo_under_asyncio_reactor``, which runs
  this same file in a child ``python -m pytest ... --reactor=asyncio`` (same environment, so
  ``MONGO_URI`` and ``CI`` carry over), reads the child's JUnit XML, and passes, fails (with the
  child's failures) or skips (with the child's reason) accordingly.

Server: see tests/support/mongo_server.py — SecantusDB on a free port, or ``MONGO_URI``; no server → skip,
except under ``CI=true`` → fail. Tests that stop and restart the server need SecantusDB.
"""

from __future__ import annotations

import datetime
import itertools
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task, threads
from twisted.internet.defer import DeferredList
from twisted.internet.task import Clock

from edgeproxy.federation import (
    FederationPublisher,
    MongoStore,
    StoreError,
    StoreOverloaded,
    StoreTimeout,
    global_lookup,
    record_id,
)
from edgeproxy.federation.reactor import is_asyncio_reactor
from edgeproxy.location import InMemoryLocation, LookupResult
from edgeproxy.registrar import Registrar, RegistrarSettings
from edgeproxy.sip import Request
from edgeproxy.sip.endpoint import Endpoint, Flow

sys.path.insert(0, str(Path(__file__).parent))
from support import mongo_server  # noqa: E402  (tests/ is not a package)
from support.messages import register as register_request  # noqa: E402

ON_ASYNCIO = is_asyncio_reactor(sys.modules.get("twisted.internet.reactor"))
REPO = Path(__file__).resolve().parent.parent

ME = "10.0.1.100"
OTHER = "10.0.2.100"
LOCAL = Endpoint("UDP", "10.0.1.100", 5060)
UDP = Flow(LOCAL, Endpoint("UDP", "198.51.100.7", 5062))
_names = itertools.count(1)


# -- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def target() -> Any:
    with mongo_server.running_target() as t:
        yield t


@pytest.fixture
def url(target: Any, request: Any) -> str:
    return target.url(f"userlocation_{next(_names)}")


@pytest_twisted.async_yield_fixture
async def store(url: str) -> Any:
    s = MongoStore(url, lookup_timeout=1.0, write_timeout=3.0, server_selection_timeout=1.0)
    yield s
    await s.close()


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(time.time())  # records carry wall-clock dates; the TTL index compares with the server's
    return c


@pytest.fixture
def location(clock: Clock) -> InMemoryLocation:
    loc = InMemoryLocation(clock)
    yield loc
    loc.stop()


@pytest.fixture
def registrar(location: InMemoryLocation, clock: Clock) -> Registrar:
    # OpenSIPS federation requires use_domain=1: AoRs are user@domain
    return Registrar(location, RegistrarSettings(use_domain=True), clock)


def register(*contacts: str, user: str = "alice", **kw: Any) -> Request:
    """A REGISTER for ``user@example.com`` (see :func:`support.messages.register`)."""
    return register_request(*contacts, to=f"<sip:{user}@example.com>", **kw)


async def save(registrar: Registrar, request: Request, flow: Flow = UDP) -> int:
    response = await registrar.save(request, flow)
    return response.status


async def records(store: MongoStore, **filter: Any) -> list[dict[str, Any]]:
    docs = await store.raw_command({"find": store.url.collection, "filter": filter})
    return sorted(docs, key=lambda d: d["_id"])


async def mine(store: MongoStore, sip_addr: str = ME) -> set[str]:
    return {d["aor"] for d in await records(store, home_ip=sip_addr)}


def publisher(location: Any, store: Any, clock: Clock, **kw: Any) -> FederationPublisher:
    kw.setdefault("refresh_interval", 60)
    kw.setdefault("retry_interval", 1)
    return FederationPublisher(location, store, ME, clock, **kw)


# -- the store -----------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_record_shape_is_opensips_compatible_plus_refresh_and_expiry(store: MongoStore) -> None:
    now = time.time()
    await store.upsert_home("alice@example.com", ME, now, 180)
    [doc] = await records(store)
    assert doc["_id"] == "alice@example.com10.0.1.100" == record_id("alice@example.com", ME)
    assert doc["aor"] == "alice@example.com" and doc["home_ip"] == ME
    refreshed = doc["refreshed_at"].replace(tzinfo=datetime.timezone.utc)  # PyMongo returns naive UTC
    assert refreshed.timestamp() == pytest.approx(now, abs=0.002)
    assert (doc["expires_at"] - doc["refreshed_at"]).total_seconds() == pytest.approx(180, abs=0.01)
    assert set(doc) == {"_id", "aor", "home_ip", "refreshed_at", "expires_at"}


@pytest_twisted.ensureDeferred
async def test_homes_one_round_trip_per_aor_and_delete(store: MongoStore) -> None:
    now = time.time()
    await store.upsert_home("alice@example.com", ME, now, 180)
    await store.upsert_home("alice@example.com", OTHER, now, 180)
    await store.upsert_home("alice@example.com", ME, now + 1, 180)  # idempotent upsert
    await store.upsert_home("bob@example.com", OTHER, now, 180)
    assert sorted(await store.homes("alice@example.com")) == [ME, OTHER]
    assert await store.homes("carol@example.com") == []
    await store.delete_home("alice@example.com", ME)
    await store.delete_home("alice@example.com", ME)  # no error when already gone
    assert await store.homes("alice@example.com") == [OTHER]


@pytest_twisted.ensureDeferred
async def test_homes_ignores_expired_records_and_counts_opensips_records(store: MongoStore) -> None:
    now = time.time()
    await store.upsert_home("alice@example.com", ME, now - 600, 60)  # expired 9 minutes ago
    # a record as OpenSIPS writes it: no expires_at, never expires
    await store.raw_command({"insert": store.url.collection, "documents": [
        {"_id": "alice@example.com10.0.3.100", "aor": "alice@example.com", "home_ip": "10.0.3.100"}]})
    assert await store.homes("alice@example.com") == ["10.0.3.100"]


@pytest_twisted.ensureDeferred
async def test_ensure_indexes_creates_ttl_and_lookup_indexes(store: MongoStore) -> None:
    names = await store.ensure_indexes()
    assert await store.ensure_indexes() == names  # idempotent
    indexes = {tuple(i["key"].keys()): i for i in await store.raw_command({"listIndexes": store.url.collection})}
    assert indexes[("expires_at",)]["expireAfterSeconds"] == 0
    assert ("aor",) in indexes and ("home_ip",) in indexes


@pytest_twisted.ensureDeferred
async def test_delete_node_records_removes_only_that_nodes(store: MongoStore) -> None:
    now = time.time()
    for aor in ("a@x", "b@x", "c@x"):
        await store.upsert_home(aor, ME, now, 180)
    await store.upsert_home("a@x", OTHER, now, 180)
    assert await store.delete_node_records(ME) == 3
    assert await mine(store) == set() and await mine(store, OTHER) == {"a@x"}


@pytest_twisted.ensureDeferred
async def test_raw_find_returns_documents_as_dicts(store: MongoStore) -> None:
    now = time.time()
    await store.upsert_homes([f"u{i}@example.com" for i in range(250)], ME, now, 180)  # > one batch (101)
    await store.upsert_home("alice@example.com", OTHER, now, 180)
    coll = store.url.collection
    docs = await store.raw_command({"find": coll, "filter": {"aor": "alice@example.com"}})
    assert [type(d) for d in docs] == [dict] and docs[0]["home_ip"] == OTHER
    # the seed's OpenSIPS 3.0 spelling, as JSON text, with "query" for the filter
    docs = await store.raw_command('{"find": "%s", "query": {"aor": "alice@example.com"}}' % coll)
    assert docs[0]["home_ip"] == OTHER
    assert len(await store.raw_command({"find": coll, "filter": {"home_ip": ME}})) == 250  # all batches
    [reply] = await store.raw_command({"count": coll, "query": {"home_ip": ME}})
    assert reply["n"] == 250 and "$clusterTime" not in reply
    with pytest.raises(StoreError) as err:
        await store.raw_command({"find": coll, "filter": {"$bogus": 1}})
    assert err.value.unavailable is False
    with pytest.raises(StoreError):
        await store.raw_command("not json")


# -- the publisher with a registrar --------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_first_binding_one_record_second_binding_still_one(store, location, registrar, clock) -> None:
    pub = publisher(location, store, clock)
    assert await pub.start() is True
    assert await save(registrar, register("<sip:alice@198.51.100.7:5062>;expires=600")) == 200
    await pub.settled()
    assert [d["_id"] for d in await records(store)] == ["alice@example.com" + ME]
    assert await save(registrar, register("<sip:alice@198.51.100.8:5062>;expires=600", call_id="reg-2@host")) == 200
    await pub.settled()
    assert len(await location.contacts("alice@example.com")) == 2
    assert len(await records(store)) == 1
    await pub.stop()


@pytest.mark.parametrize("how", ["unregister", "contact-star", "expiry", "remove_flow"])
@pytest_twisted.ensureDeferred
async def test_last_binding_gone_deletes_the_record(store, location, registrar, clock, how) -> None:
    pub = publisher(location, store, clock, refresh_interval=3600)
    await pub.start()
    tcp = Flow(Endpoint("TCP", "10.0.1.100", 5060), Endpoint("TCP", "198.51.100.7", 40001), 9)
    await save(registrar, register("<sip:alice@198.51.100.7:5062>;expires=120"), tcp)
    await save(registrar, register("<sip:bob@198.51.100.9:5062>;expires=3000", user="bob", call_id="b@h"))
    await pub.settled()
    assert await mine(store) == {"alice@example.com", "bob@example.com"}
    if how == "unregister":
        assert await save(registrar, register("<sip:alice@198.51.100.7:5062>;expires=0", cseq=2), tcp) == 200
    elif how == "contact-star":
        assert await save(registrar, register("*", cseq=2, extra=("Expires: 0",)), tcp) == 200
    elif how == "expiry":
        clock.advance(121)
    else:
        assert await location.remove_flow(tcp) == 1
    await pub.settled()
    assert await mine(store) == {"bob@example.com"}
    await pub.stop()


@pytest_twisted.ensureDeferred
async def test_refresh_updates_refreshed_at_and_expires_at(store, location, registrar, clock) -> None:
    pub = publisher(location, store, clock, refresh_interval=60, record_ttl=200)
    await pub.start()
    await save(registrar, register("<sip:alice@198.51.100.7:5062>;expires=3600"))
    await pub.settled()
    [before] = await records(store)
    clock.advance(60)  # the refresh timer
    await pub.settled()
    [after] = await records(store)
    assert (after["refreshed_at"] - before["refreshed_at"]).total_seconds() == pytest.approx(60, abs=0.01)
    assert (after["expires_at"] - after["refreshed_at"]).total_seconds() == pytest.approx(200, abs=0.01)
    await pub.stop()


@pytest_twisted.ensureDeferred
async def test_start_up_removes_own_stale_records_only(store, location, registrar, clock) -> None:
    now = time.time()
    await store.upsert_home("ghost@example.com", ME, now - 30, 180)  # left by this node's previous run
    await store.upsert_home("alice@example.com", ME, now - 30, 180)
    await store.upsert_home("bob@example.com", OTHER, now - 30, 180)  # another node's
    await save(registrar, register("<sip:alice@198.51.100.7:5062>;expires=600"))  # registered before start
    pub = publisher(location, store, clock)
    assert await pub.start() is True
    assert await mine(store) == {"alice@example.com"}
    assert await mine(store, OTHER) == {"bob@example.com"}
    assert pub.stats["cleaned_on_start"] == 2
    await pub.stop()
    assert await mine(store) == set()  # clean stop: own records go, the other node's stay
    assert await mine(store, OTHER) == {"bob@example.com"}


@pytest_twisted.ensureDeferred
async def test_global_lookup_local_remote_and_not_found(store, location, registrar, clock) -> None:
    pub = publisher(location, store, clock)
    await pub.start()
    await save(registrar, register("<sip:alice@198.51.100.7:5062>;expires=600"))
    await pub.settled()
    await store.upsert_home("alice@example.com", OTHER, time.time(), 180)
    await store.upsert_home("bob@example.com", OTHER, time.time(), 180)
    found = await global_lookup(location, store, ME, "alice@example.com", "INVITE")
    assert found.code == LookupResult.FOUND and len(found.bindings) == 1 and found.homes == [OTHER]
    remote = await global_lookup(location, store, ME, "bob@example.com")
    assert remote.code == LookupResult.FOUND and remote.bindings == []
    assert remote.remote_targets() == [("sip:bob@example.com", f"sip:{OTHER}")]
    missing = await global_lookup(location, store, ME, "carol@example.com")
    assert missing.code == LookupResult.NOT_FOUND and missing.error is None
    await pub.stop()


# -- outage and recovery (needs a server the test can stop) ----------------------------------------

@pytest_twisted.ensureDeferred
async def test_store_down_then_back_republishes_without_reregistration(target, url, location, registrar, clock) -> None:
    if not target.restartable:
        pytest.skip("needs a SecantusDB the test can stop and restart (MONGO_URI points at an external server)")
    server = target.server
    store = MongoStore(url, lookup_timeout=1.0, write_timeout=2.0, server_selection_timeout=1.0)
    pub = publisher(location, store, clock, retry_interval=1, max_retry_interval=4, refresh_interval=3600)
    try:
        await pub.start()
        await save(registrar, register("<sip:alice@198.51.100.7:5062>;expires=3000"))
        await save(registrar, register("<sip:carol@198.51.100.7:5064>;expires=3000", user="carol", call_id="c@h"))
        await pub.settled()
        assert await mine(store) == {"alice@example.com", "carol@example.com"}

        await threads.deferToThread(server.stop)
        # registrations and local lookups keep working; the write behind them fails
        assert await save(registrar, register("<sip:bob@198.51.100.9:5062>;expires=3000", user="bob",
                                              call_id="b@h")) == 200
        assert await save(registrar, register("<sip:carol@198.51.100.7:5064>;expires=0", user="carol",
                                              call_id="c@h", cseq=2)) == 200
        await pub.settled()
        assert pub.available is False
        code, bindings = await location.lookup("bob@example.com", "INVITE")
        assert code == LookupResult.FOUND and bindings
        # global lookups fail fast: -3 when nothing is local, local bindings when there are
        t0 = time.monotonic()
        with pytest.raises(StoreError) as err:
            await store.homes("dave@example.com")
        assert err.value.unavailable and time.monotonic() - t0 < 2.0
        t0 = time.monotonic()
        nothing = await global_lookup(location, store, ME, "dave@example.com")
        assert nothing.code == LookupResult.ERROR == -3 and nothing.error is not None
        assert time.monotonic() - t0 < 2.0
        local = await global_lookup(location, store, ME, "bob@example.com", "INVITE")
        assert local.code == LookupResult.FOUND and local.bindings and local.error is not None

        # the store comes back empty (a new server on the same port): retries re-publish
        await threads.deferToThread(server.start)
        for _ in range(20):
            clock.advance(4)  # the retry timer (backoff capped at 4 s)
            await pub.settled()
            if pub.available:
                break
            from twisted.internet import reactor

            await task.deferLater(reactor, 0.2, lambda: None)
        assert pub.available is True
        assert await mine(store) == {"alice@example.com", "bob@example.com"}  # nobody re-registered
        assert (await global_lookup(location, store, ME, "bob@example.com")).error is None
    finally:
        await pub.stop()
        await store.close()


# -- a store that hangs, an overloaded one, coalescing (counted by the server) ----------------------

def server_finds(target: Any, collection: str) -> int:
    """find + getMore commands the server counted on ``collection`` (its ``top``, as bench/load.py
    reads it): the round-trips, seen from the store's side. Blocking: run it in a thread."""
    from pymongo import MongoClient

    client: Any = MongoClient(target.base_uri, serverSelectionTimeoutMS=3000)
    try:
        totals = client.admin.command("top")["totals"].get(f"{target.database}.{collection}", {})
        return sum(int((totals.get(k) or {}).get("count", 0)) for k in ("queries", "getmore"))
    finally:
        client.close()


def outcomes(ds: list[Any]) -> list[Any]:
    """What each (already fired) Deferred gave: its value, or its failure's exception."""
    out: list[Any] = []
    for d in ds:
        got: list[Any] = []
        d.addBoth(lambda r, got=got: got.append(r.value if hasattr(r, "check") else r))
        out.append(got[0] if got else "pending")
    return out


async def until_answers(store: MongoStore, aor: str, expected: list[str], within: float) -> float:
    """Ask until the store answers ``expected``; seconds it took (fails after ``within``)."""
    from twisted.internet import reactor

    t0 = time.monotonic()
    while True:
        try:
            if await store.homes(aor) == expected:
                return time.monotonic() - t0
        except StoreError:
            pass
        if time.monotonic() - t0 > within:
            pytest.fail(f"the store client did not answer again within {within:g} s: {store.stats}")
        await task.deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_stalled_store_lookups_are_minus_3_within_the_timeout_and_the_client_recovers(
        target, url, location, clock) -> None:
    """A store that hangs (SIGSTOP: connections open, nothing answered): every global lookup -- more of
    them than there are connections -- ends as -3 (StoreTimeout), none later than lookup_timeout, none
    as "not found"; after the store thaws the same client answers again (its pool is not wedged)."""
    if not target.restartable:
        pytest.skip("needs a SecantusDB the test can freeze (MONGO_URI points at an external server)")
    store = MongoStore(url, lookup_timeout=0.5, write_timeout=2.0, max_in_flight=4)
    try:
        await store.upsert_home("bob@example.com", OTHER, time.time(), 180)
        assert await store.homes("bob@example.com") == [OTHER]
        with target.server.stalled():
            t0 = time.monotonic()
            lookups = [global_lookup(location, store, ME, f"u{i}@example.com") for i in range(12)]
            direct = store.homes("bob@example.com")
            results = await DeferredList(lookups)
            took = time.monotonic() - t0
            assert [r.code for _, r in results] == [LookupResult.ERROR] * 12
            assert all(isinstance(r.error, StoreTimeout) and r.error.unavailable for _, r in results)
            assert took < 0.5 + 0.3, f"lookups against a hung store took {took:.2f} s"
            with pytest.raises(StoreTimeout):
                await direct
            assert store.stats["timeouts_queued"] >= 8 and store.stats["timeouts_running"] >= 4
        recovered = await until_answers(store, "bob@example.com", [OTHER], within=6.0)
        print(f"\n12 lookups against a hung store: -3 after {took:.3f} s; answers again {recovered:.2f} s after the thaw")
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_overloaded_store_refuses_lookups_beyond_max_waiting_at_once(target, url, location) -> None:
    """max_in_flight in the driver, max_waiting queued: the next lookups are refused at once (-3,
    StoreOverloaded) instead of piling up behind a store that does not answer."""
    if not target.restartable:
        pytest.skip("needs a SecantusDB the test can freeze (MONGO_URI points at an external server)")
    store = MongoStore(url, lookup_timeout=0.5, write_timeout=2.0, max_in_flight=2, max_waiting=3)
    try:
        assert await store.homes("warm@example.com") == []
        with target.server.stalled():
            lookups = [global_lookup(location, store, ME, f"u{i}@example.com") for i in range(10)]
            now = outcomes(lookups[5:])  # no turn of the reactor yet: refused synchronously
            assert [r.code for r in now] == [LookupResult.ERROR] * 5
            assert all(isinstance(r.error, StoreOverloaded) for r in now)
            results = await DeferredList(lookups[:5])
            assert [type(r.error) for _, r in results] == [StoreTimeout] * 5
            assert store.stats["overloaded"] == 5
        await until_answers(store, "warm@example.com", [], within=6.0)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_concurrent_lookups_of_one_aor_make_one_find_on_the_server(target, url, store) -> None:
    collection = store.url.collection
    now = time.time()
    await store.upsert_homes([f"u{i}@example.com" for i in range(30)], OTHER, now, 180)
    await store.upsert_home("alice@example.com", OTHER, now, 180)
    await store.homes("alice@example.com")  # connections open

    before = await threads.deferToThread(server_finds, target, collection)
    same = await DeferredList([store.homes("alice@example.com") for _ in range(50)])
    after_same = await threads.deferToThread(server_finds, target, collection)
    assert [r for _, r in same] == [[OTHER]] * 50
    assert len({id(r) for _, r in same}) == 50  # each caller has a list of its own
    assert after_same - before == 1, "50 concurrent lookups of one AoR must cost one find"
    assert store.stats["coalesced"] == 49

    # the control: distinct AoRs are distinct finds, and a lookup after the answer is a new one
    distinct = await DeferredList([store.homes(f"u{i}@example.com") for i in range(30)])
    assert [r for _, r in distinct] == [[OTHER]] * 30
    assert await store.homes("alice@example.com") == [OTHER]
    after_all = await threads.deferToThread(server_finds, target, collection)
    assert after_all - after_same == 31

    # the redirect route's raw find: identical concurrent commands share one round-trip too
    command = {"find": collection, "filter": {"aor": "alice@example.com"}}
    raw = await DeferredList([store.raw_command(command) for _ in range(20)])
    assert [[d["home_ip"] for d in docs] for _, docs in raw] == [[OTHER]] * 20
    assert await threads.deferToThread(server_finds, target, collection) - after_all == 1


# -- the face under another reactor -----------------------------------------------------------------

def _run_under_asyncio(tmp_path: Path) -> None:
    report = tmp_path / "federation-mongo.xml"
    cmd = [sys.executable, "-m", "pytest", str(Path(__file__).resolve()), "--reactor=asyncio", "-q",
           "-p", "no:cacheprovider", "-rs", f"--junitxml={report}"]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    output = (proc.stdout + proc.stderr)[-8000:]
    if not report.exists():
        pytest.fail(f"the asyncio-reactor run produced no report (exit {proc.returncode}):\n{output}", pytrace=False)
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    if proc.returncode != 0 or counts["failures"] or counts["errors"]:
        pytest.fail(f"federation store tests under the asyncio reactor failed ({counts}):\n{output}", pytrace=False)
    if counts["tests"] == 0:
        pytest.fail(f"the asyncio-reactor run collected no tests:\n{output}", pytrace=False)
    if counts["skipped"] == counts["tests"]:
        skipped = suite.find(".//skipped")
        reason = skipped.get("message", "") if skipped is not None else ""
        pytest.skip(f"all {counts['tests']} store tests skipped under the asyncio reactor: {reason}")
    print(f"asyncio-reactor run: {counts}\n{output[-2000:]}")


if not ON_ASYNCIO:
    # Under the default reactor the tests above cannot run (no asyncio loop turns): replace them by
    # one test that runs this file in a child pytest on the asyncio reactor.
    for _name in [n for n in list(globals()) if n.startswith("test_")]:
        del globals()[_name]

    def test_federation_mongo_under_asyncio_reactor(tmp_path: Path) -> None:
        """Every store test of this file, in a child pytest with --reactor=asyncio (see the module doc)."""
        reason = mongo_server.no_server_reason()
        if reason is not None and os.environ.get("CI", "").lower() != "true":
            pytest.skip(reason)  # no need to start a child just to skip
        _run_under_asyncio(tmp_path)
