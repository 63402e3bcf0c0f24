"""Where digest credentials come from: the configuration's users and OpenSIPS's ``subscriber`` table.

The table tests need a MariaDB/MySQL server at 127.0.0.1:3306 (user root, empty password, database
``test``; override with EDGEPROXY_TEST_DB_URL). They are skipped with the reason when it is
unreachable -- except under CI (``CI=true``), where a missing database is a failure, not a skip.
Each test module run creates uniquely named tables and drops them afterwards.
"""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import CancelledError
from twisted.logger import globalLogPublisher

from edgeproxy import sqldb
from edgeproxy.auth.subscribers import (
    MAX_NAME,
    MemorySubscribers,
    Subscriber,
    SubscriberStoreError,
    SubscriberTable,
)
from support.mariadb import (DB_URL, SUBSCRIBER_INSERT, SUBSCRIBER_SCHEMA, connect, connect_or_skip, subscriber_row,
                     unique_name)
from support.ports import free_port

def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha512_256(text: str) -> str:
    return hashlib.new("sha512_256", text.encode()).hexdigest()


ROWS = [
    subscriber_row("alice", "example.com", "alicepw", email="alice@example.com", rpid="sip:+15550001@example.com"),
    subscriber_row("alice", "other.example", "alice2pw"),
    subscriber_row("bob", "example.com", "bobpw", all_ha1=False),
]


def ha1s(user: str, domain: str, password: str) -> dict[str, str]:
    a1 = f"{user}:{domain}:{password}"
    return {"MD5": md5(a1), "SHA-256": sha256(a1), "SHA-512-256": sha512_256(a1)}


# -- the configuration's users ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_memory_from_a_mapping() -> None:
    store = MemorySubscribers({"alice@example.com": "alicepw", "bob": "bobpw"})
    assert await store.get("alice", None) == Subscriber("alice", "example.com", password="alicepw")
    assert await store.get("bob", "example.com") == Subscriber("bob", "", password="bobpw")
    assert await store.get("alice", "elsewhere.example") is not None  # use_domain off: domain ignored
    assert await store.get("carol", None) is None
    assert await store.get("", None) is None
    assert store.close() is None


@pytest_twisted.ensureDeferred
async def test_memory_use_domain() -> None:
    store = MemorySubscribers({"alice@example.com": "one", "alice@Other.Example": "two", "bob": "three"},
                              use_domain=True)
    assert (await store.get("alice", "example.com")).password == "one"
    assert (await store.get("alice", "other.example")).password == "two"  # domains: any case
    assert await store.get("alice", "third.example") is None
    assert (await store.get("alice", None)).password == "one"  # no domain: the first added
    assert (await store.get("bob", "")).password == "three"
    assert await store.get("bob", "example.com") is None
    assert await store.get("Alice", "example.com") is None  # user names: exact


@pytest_twisted.ensureDeferred
async def test_memory_from_subscribers_and_add() -> None:
    carol = Subscriber("carol", "example.com", ha1={"MD5": md5("carol:example.com:pw")}, attrs={"rpid": "x"})
    store = MemorySubscribers([carol], use_domain=True)
    assert await store.get("carol", "example.com") is carol
    store.add(Subscriber("carol", "other.example", password="pw2"))
    store.add(Subscriber("carol", "example.com", password="new"))  # same user and domain: replaced
    assert (await store.get("carol", "example.com")).password == "new"
    assert (await store.get("carol", None)).password == "new"  # still the first row
    assert len(store) == 2
    with pytest.raises(TypeError):
        store.add(("carol", "x"))  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_memory_username_with_domain_and_hostile_input() -> None:
    store = MemorySubscribers([Subscriber("alice", "example.com", password="pw", ha1={"MD5": "0" * 32})],
                              use_domain=True)
    found = await store.get("alice@example.com", "realm.example")  # the username's domain, as OpenSIPS
    assert found.password == "pw" and found.ha1 == {}  # the stored HA1 is over "alice", not "alice@..."
    assert await store.get("alice@elsewhere.example", "example.com") is None
    assert await store.get("a" * (MAX_NAME + 1), None) is None
    assert await store.get("alice", "e" * (MAX_NAME + 1)) is None


def test_memory_refuses_bad_users() -> None:
    with pytest.raises(ValueError, match="expected"):
        MemorySubscribers({"alice": 42})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="no user name"):
        MemorySubscribers({"@example.com": "pw"})


# -- the subscriber table ----------------------------------------------------------------------------


def _table_name() -> str:
    return unique_name("subscriber")


def _create(conn, name: str, alter: str = "") -> None:
    with conn.cursor() as cur:
        cur.execute(SUBSCRIBER_SCHEMA.format(table=name))
        for r in ROWS:
            cur.execute(SUBSCRIBER_INSERT.format(table=name), r)
        if alter:
            cur.execute(f"ALTER TABLE `{name}` {alter}")


def _drop(conn, name: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{name}`")


@pytest.fixture(scope="module")
def db_table():
    """(connection, name) of a uniquely named subscriber table holding ROWS; dropped afterwards."""
    conn = connect_or_skip()
    name = _table_name()
    try:
        _create(conn, name)
        yield conn, name
    finally:
        _drop(conn, name)
        conn.close()


@pytest.fixture
def extra_tables(db_table):
    """Make another table of the same shape (altered by an ``ALTER TABLE`` clause); dropped afterwards."""
    conn, _ = db_table
    made: list[str] = []

    def make(alter: str = "") -> str:
        made.append(_table_name())
        _create(conn, made[-1], alter)
        return made[-1]

    yield make
    for name in made:
        _drop(conn, name)


def _pool_threads(store: SubscriberTable) -> list[threading.Thread]:
    prefix = f"PoolThread-{id(store._pool.threadpool)}-"
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.fixture
def tables():
    """Make SubscriberTables through this: each is closed after the test, and its threads are gone."""
    made: list[SubscriberTable] = []

    def make(*args, **kwargs) -> SubscriberTable:
        kwargs.setdefault("timeout", 5.0)
        made.append(SubscriberTable(*args, **kwargs))
        return made[-1]

    yield make
    from twisted.internet.defer import gatherResults
    pytest_twisted.blockon(gatherResults([s.close() for s in made]))
    for store in made:
        assert store._closed
        assert not _pool_threads(store), "pool threads left running"


@pytest.fixture
def logs():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest_twisted.ensureDeferred
async def test_found_and_not_found(db_table, tables) -> None:
    _, name = db_table
    store = tables(DB_URL, name)
    alice = await store.get("alice", None)
    assert alice == Subscriber("alice", "example.com", password=None,
                               ha1=ha1s("alice", "example.com", "alicepw"), attrs={})
    bob = await store.get("bob", "ignored.example")  # use_domain off: the domain is not matched
    assert bob.ha1 == {"MD5": md5("bob:example.com:bobpw")}  # empty HA1 columns are left out
    assert await store.get("carol", None) is None
    assert await store.get("x' OR '1'='1", None) is None  # a parameter, never SQL


@pytest_twisted.ensureDeferred
async def test_use_domain(db_table, tables) -> None:
    _, name = db_table
    store = tables(DB_URL, name, use_domain=True)
    assert (await store.get("alice", "other.example")).ha1 == ha1s("alice", "other.example", "alice2pw")
    assert (await store.get("alice", "example.com")).domain == "example.com"
    assert await store.get("alice", "third.example") is None
    assert (await store.get("alice", None)).domain == "example.com"  # no domain: the first by id
    assert await store.get("bob", "other.example") is None


@pytest_twisted.ensureDeferred
async def test_calculate_ha1_reads_the_password(db_table, tables) -> None:
    _, name = db_table
    store = tables(DB_URL, name, calculate_ha1=True, use_domain=True)
    alice = await store.get("alice", "other.example")
    assert (alice.password, alice.ha1) == ("alice2pw", {})
    plain = tables(DB_URL, name, calculate_ha1=False)
    assert (await plain.get("alice", None)).password is None


@pytest_twisted.ensureDeferred
async def test_load_credentials(db_table, tables) -> None:
    _, name = db_table
    store = tables(DB_URL, name, load_credentials=["rpid", "email_address"])
    alice = await store.get("alice", None)
    assert alice.attrs == {"rpid": "sip:+15550001@example.com", "email_address": "alice@example.com"}
    assert (await store.get("bob", None)).attrs == {"rpid": None, "email_address": None}


@pytest_twisted.ensureDeferred
async def test_missing_load_credentials_column_is_an_error(db_table, tables) -> None:
    _, name = db_table
    store = tables(DB_URL, name, load_credentials=["no_such_column"])
    with pytest.raises(SubscriberStoreError, match=r"no column 'no_such_column' \(load_credentials\)"):
        await store.get("alice", None)


@pytest_twisted.ensureDeferred
async def test_old_schema_without_a_sha512_column(extra_tables, tables, logs) -> None:
    name = extra_tables("DROP COLUMN ha1_sha512t256")
    store = tables(DB_URL, name)
    expected = ha1s("alice", "example.com", "alicepw")
    del expected["SHA-512-256"]
    assert (await store.get("alice", None)).ha1 == expected
    assert (await store.get("bob", None)).ha1 == {"MD5": md5("bob:example.com:bobpw")}
    said = [e for e in logs if "ha1_sha512t256" in str(e.get("missing", ""))]
    assert len(said) == 1 and name in said[0]["where"]


@pytest_twisted.ensureDeferred
async def test_missing_user_or_domain_column_is_an_error(db_table, tables) -> None:
    _, name = db_table
    with pytest.raises(SubscriberStoreError, match=r"no column 'login' \(user_column\)"):
        await tables(DB_URL, name, user_column="login").get("alice", None)
    with pytest.raises(SubscriberStoreError, match=r"no column 'realm' \(domain_column\)"):
        await tables(DB_URL, name, domain_column="realm").get("alice", None)
    with pytest.raises(SubscriberStoreError, match="none of the HA1 columns"):
        await tables(DB_URL, name, ha1_columns={"MD5": "ha1_nope"}).get("alice", None)


@pytest_twisted.ensureDeferred
async def test_username_with_domain_uses_ha1b(db_table, extra_tables, tables) -> None:
    conn, plain_name = db_table
    name = extra_tables("ADD COLUMN ha1b CHAR(64) DEFAULT '' NOT NULL")
    with conn.cursor() as cur:
        cur.execute(f"UPDATE `{name}` SET ha1b = MD5(CONCAT(username, '@', domain, ':', domain, ':', password))")
    store = tables(DB_URL, name, use_domain=True)
    alice = await store.get("alice@other.example", "other.example")
    assert (alice.username, alice.domain) == ("alice", "other.example")
    assert alice.ha1 == {"MD5": md5("alice@other.example:other.example:alice2pw")}
    # with use_domain the username's domain is matched, not the realm (OpenSIPS auth_db)
    assert (await store.get("alice@example.com", "other.example")).domain == "example.com"
    assert await store.get("alice@third.example", "other.example") is None
    # plain text passwords serve any username
    calc = tables(DB_URL, name, calculate_ha1=True)
    assert (await calc.get("alice@example.com", None)).password == "alicepw"
    # OpenSIPS 3.x's table has no ha1b: found, but no HA1 for such a username
    no_b = tables(DB_URL, plain_name)
    found = await no_b.get("alice@example.com", None)
    assert (found.username, found.password, found.ha1) == ("alice", None, {})


@pytest_twisted.ensureDeferred
async def test_overlong_input_is_nobody_without_a_query(tables) -> None:
    # a server nobody listens on: any query would fail, so None proves there was none
    store = tables(f"mysql://root@127.0.0.1:{free_port()}/test")

    def no_query(*args, **kwargs):
        raise AssertionError("queried")

    store._pool.runInteraction = no_query
    assert await store.get("a" * (MAX_NAME + 1), None) is None
    assert await store.get("alice", "d" * (MAX_NAME + 1)) is None
    assert await store.get("", None) is None


def test_bad_names_are_refused_at_start_up() -> None:
    with pytest.raises(sqldb.DatabaseURLError, match="not a plain table name"):
        SubscriberTable(DB_URL, "subscriber; DROP TABLE x")
    with pytest.raises(sqldb.DatabaseURLError, match="not a plain column name"):
        SubscriberTable(DB_URL, user_column="username` = '' OR `1")
    with pytest.raises(sqldb.DatabaseURLError, match="not a plain column name"):
        SubscriberTable(DB_URL, load_credentials=["rpid", "a b"])
    with pytest.raises(sqldb.DatabaseURLError, match="not supported"):
        SubscriberTable("postgres://u@h/db")
    with pytest.raises(ValueError, match="timeout"):
        SubscriberTable(DB_URL, timeout=0)


@pytest_twisted.ensureDeferred
async def test_unreachable_server_fails_within_the_timeout(tables) -> None:
    pytest.importorskip("pymysql")
    store = tables(f"mysql://root:sekrit@127.0.0.1:{free_port()}/test", timeout=2.0)
    start = time.monotonic()
    with pytest.raises(SubscriberStoreError, match=r"at root@127\.0\.0\.1:\d+/test: cannot connect") as info:
        await store.get("alice", None)
    assert time.monotonic() - start < 2.5
    assert "sekrit" not in str(info.value) and "\n" not in str(info.value)


@pytest_twisted.ensureDeferred
async def test_wrong_password_and_missing_table(db_table, tables) -> None:
    db = sqldb.parse_db_url(DB_URL)
    store = tables(f"mysql://edgeproxy_nobody:wrong@{db.host}:{db.port}/{db.database}")
    with pytest.raises(SubscriberStoreError, match=r"edgeproxy_nobody@.*: cannot connect: \(1045\)") as info:
        await store.get("alice", None)
    assert "wrong" not in str(info.value).replace("edgeproxy_nobody", "")
    missing = tables(DB_URL, "no_such_subscriber_table")
    with pytest.raises(SubscriberStoreError, match=r"'no_such_subscriber_table' at .*: \(1146\)"):
        await missing.get("alice", None)


@pytest_twisted.ensureDeferred
async def test_a_connection_the_server_closed_is_replaced_quietly(db_table, tables, logs) -> None:
    conn, name = db_table
    store = tables(DB_URL, name, pool_min=1, pool_max=1)
    assert await store.get("bob", None) is not None
    (pooled,) = store._pool.connections.values()
    with conn.cursor() as cur:
        cur.execute("KILL %s", (pooled.thread_id(),))  # as wait_timeout or a server restart would
    assert (await store.get("alice", None)).domain == "example.com"  # retried once on a new connection
    assert not [e for e in logs if e.get("isError") or e.get("log_failure")]


@pytest_twisted.ensureDeferred
async def test_slow_query_fails_at_the_deadline_and_the_reactor_runs(db_table, tables) -> None:
    _, name = db_table
    store = tables(DB_URL, name, timeout=0.5)
    assert (await store.get("bob", None)) is not None  # connected, columns known
    locker, _ = connect()
    ticks = []
    ticker = task.LoopingCall(lambda: ticks.append(time.monotonic()))
    ticker.start(0.02)
    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLES `{name}` WRITE")
        start = time.monotonic()
        try:
            with pytest.raises(SubscriberStoreError, match=r"no answer within 0\.5 s"):
                await store.get("alice", None)
            elapsed = time.monotonic() - start
        finally:
            with locker.cursor() as cur:
                cur.execute("UNLOCK TABLES")
        assert 0.45 <= elapsed < 3.0  # the deadline, not the lock: the lock is held until after this
        assert len([t for t in ticks if t >= start]) >= 3  # the reactor kept running meanwhile
        # the late answer is dropped, and the store answers again once the lock is gone
        assert (await store.get("alice", None)).domain == "example.com"
    finally:
        ticker.stop()
        locker.close()


@pytest_twisted.ensureDeferred
async def test_close_waits_for_the_query_in_flight(db_table, tables) -> None:
    _, name = db_table
    store = tables(DB_URL, name, timeout=0.3)
    await store.get("bob", None)
    locker, _ = connect()
    try:
        with locker.cursor() as cur:
            cur.execute(f"LOCK TABLES `{name}` WRITE")
        pending = store.get("alice", None)
        cancelled = store.get("alice", None)
        cancelled.cancel()
        with pytest.raises(CancelledError):
            await cancelled
        closed = store.close()
        assert not closed.called  # a worker is still blocked on the lock: nothing joins it
        with pytest.raises(SubscriberStoreError, match="no answer within"):
            await pending
        with pytest.raises(SubscriberStoreError, match="closed"):
            await store.get("bob", None)
    finally:
        with locker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        locker.close()
    await closed
    await store.close()  # again: fine
    assert not _pool_threads(store)
