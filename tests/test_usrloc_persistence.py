"""usrloc restart persistency (``[usrloc]``, edgeproxy.usrloc): rows of OpenSIPS's ``location`` table,
write-back and write-through over a real SQLite file and the test MariaDB, loading at start.

Timers run on ``task.Clock``; the database work that the node runs in a thread runs inline here, on
the real databases (a SQLite file in the test's directory; a uniquely named table in MariaDB).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

from edgeproxy.config import load_config
from edgeproxy.config_error import ConfigError
from edgeproxy.location import Binding, ChangeJournal, InMemoryLocation
from edgeproxy.sip import parse_uri
from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.usrloc import Persistence, TableError, open_table
from edgeproxy.usrloc.rows import COLUMNS, binding_from_row, binding_row
from support import mariadb

T0 = 1_700_000_000.0
LOCAL = Endpoint("UDP", "127.0.0.1", 5060)


def inline(f: Any, *args: Any) -> Any:
    return maybeDeferred(f, *args)


def udp_binding(user: str, *, expires: float = 3600, now: float = T0, port: int = 5062, cseq: int = 1,
                **kw: Any) -> Binding:
    remote = Endpoint("UDP", "198.51.100.7", port)
    return Binding(aor=kw.pop("aor", user), uri=parse_uri(f"sip:{user}@198.51.100.7:{port}"), expires_at=now + expires,
                   call_id=kw.pop("call_id", f"c-{user}"), cseq=cseq, received=remote, flow=Flow(LOCAL, remote),
                   last_modified=now, **kw)


def row_dict(b: Binding, use_domain: bool = False) -> dict[str, Any]:
    return dict(zip(COLUMNS, binding_row(b, use_domain), strict=True))


# -- rows -------------------------------------------------------------------------------------------------
def test_udp_nat_binding_round_trips_through_a_row() -> None:
    b = udp_binding("alice", q=0.5, nat=True, sipping=True, user_agent="Phone/1.0",
                    methods=frozenset({"INVITE", "BYE", "OPTIONS", "FOO"}), instance="<urn:uuid:1>",
                    path=("<sip:p1.example;lr>", "<sip:p2.example;lr,x>"),
                    contact_params={"+sip.ice": None, "audio": "TRUE"})
    row = row_dict(b)
    assert row["username"] == "alice" and row["domain"] is None
    assert row["received"] == "sip:198.51.100.7:5062" and row["socket"] == "udp:127.0.0.1:5060"
    assert row["cflags"] == "NAT,SIPPING" and row["expires"] == int(T0 + 3600) and row["q"] == 0.5
    back = binding_from_row(row, T0, False)
    assert back is not None
    assert (back.aor, back.uri, back.expires_at, back.call_id, back.cseq) == (b.aor, b.uri, b.expires_at, b.call_id,
                                                                             b.cseq)
    assert (back.received, back.flow, back.nat, back.sipping, back.q) == (b.received, b.flow, True, True, 0.5)
    assert back.methods == b.methods and back.instance == b.instance and back.user_agent == "Phone/1.0"
    assert back.path == b.path and dict(back.contact_params) == dict(b.contact_params)
    assert abs(back.last_modified - T0) < 1


def test_use_domain_splits_the_aor() -> None:
    row = row_dict(udp_binding("bob", aor="bob@example.com"), use_domain=True)
    assert (row["username"], row["domain"]) == ("bob", "example.com")
    back = binding_from_row(row, T0, True)
    assert back is not None and back.aor == "bob@example.com"


def test_connection_bound_contacts_are_not_revived() -> None:
    ws_remote = Endpoint("WSS", "198.51.100.9", 40000)
    ws = Binding(aor="web", uri=parse_uri("sip:x@abc.invalid;transport=ws"), expires_at=T0 + 600, call_id="w",
                 cseq=1, received=ws_remote, flow=Flow(Endpoint("WSS", "127.0.0.1", 443), ws_remote, 7))
    tcp_remote = Endpoint("TCP", "198.51.100.9", 40001)
    tcp_flow = Flow(Endpoint("TCP", "127.0.0.1", 5060), tcp_remote, 8)
    tcp_nat = Binding(aor="t", uri=parse_uri("sip:t@10.0.0.2;transport=tcp"), expires_at=T0 + 600, call_id="t",
                      cseq=1, received=tcp_remote, flow=tcp_flow, nat=True)
    outbound = Binding(aor="o", uri=parse_uri("sip:o@198.51.100.9;transport=tcp"), expires_at=T0 + 600,
                       call_id="o", cseq=1, received=tcp_remote, flow=tcp_flow, reg_id=1, instance="<urn:uuid:2>")
    tcp_routable = Binding(aor="r", uri=parse_uri("sip:r@198.51.100.9:5070;transport=tcp"), expires_at=T0 + 600,
                           call_id="r", cseq=1, received=tcp_remote, flow=tcp_flow)
    for b in (ws, tcp_nat, outbound):
        assert binding_from_row(row_dict(b), T0, False) is None, b
    revived = binding_from_row(row_dict(tcp_routable), T0, False)
    assert revived is not None and revived.flow is None  # dialled at its URI, not over the dead connection


def test_expired_and_opensips_written_rows() -> None:
    assert binding_from_row(row_dict(udp_binding("old", expires=10)), T0 + 11, False) is None
    # a row as OpenSIPS writes it: permanent (expires 0), cflags by name, q 1.0, methods NULL
    row = {"username": "carol", "domain": None, "contact": "sip:carol@192.0.2.5", "received": None, "path": None,
           "expires": 0, "q": 1.0, "callid": "x", "cseq": 13, "last_modified": "2024-01-01 00:00:01", "flags": 0,
           "cflags": "NAT", "user_agent": "", "socket": "udp:127.0.0.1:5060", "methods": None,
           "sip_instance": None, "kv_store": None, "attr": None}
    b = binding_from_row(row, T0, False)
    assert b is not None and b.expires_at > T0 + 10 * 365 * 86400 and b.q == 1.0 and b.nat and b.methods is None


# -- persistence ------------------------------------------------------------------------------------------
class Node:
    """One node's location + persistence over ``db_url``, on a Clock."""

    def __init__(self, db_url: str, table: str = "location", *, mode: str = "write-back", interval: float = 60,
                 now: float = T0) -> None:
        self.clock = Clock()
        self.clock.advance(now)
        self.journal = ChangeJournal()
        self.location = InMemoryLocation(self.clock, [self.journal])
        self.table = open_table(db_url, table)
        self.persistence = Persistence(self.location, self.journal, self.table, mode=mode, timer_interval=interval,
                                       use_domain=False, clock=self.clock, runner=inline)

    def load(self) -> int:
        result: list[Any] = []
        self.persistence.load().addBoth(result.append)
        if not isinstance(result[0], int):
            result[0].raiseException()
        self.persistence.start()
        return result[0]

    def save(self, b: Binding) -> None:
        self.location.replace(b.aor, [b])


def sqlite_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT username, contact, expires, cseq FROM location ORDER BY username").fetchall()


def test_write_back_writes_every_interval_and_a_restart_loads_what_was_written(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    a = Node(f"sqlite://{db}")
    assert a.load() == 0
    a.save(udp_binding("alice"))
    a.save(udp_binding("bob", expires=100))
    assert a.persistence.pending == 2
    a.clock.advance(59)
    assert sqlite_rows(db) == []  # nothing before the interval: the REGISTER path never writes
    a.clock.advance(1)
    assert [r[0] for r in sqlite_rows(db)] == ["alice", "bob"]
    assert a.persistence.stats["db_flushes"] == 1 and a.persistence.stats["db_written_contacts"] == 2
    # a refresh, a removal, an addition: written at the next interval
    a.save(udp_binding("alice", cseq=2, now=T0 + 60))
    a.location.remove("bob")
    a.save(udp_binding("carol", now=T0 + 60))
    a.clock.advance(60)
    assert [(r[0], r[3]) for r in sqlite_rows(db)] == [("alice", 2), ("carol", 1)]
    # the last changes are not written yet when the "crash" comes: carol's refresh is lost, dave too
    a.save(udp_binding("dave", now=T0 + 120))

    b = Node(f"sqlite://{db}", now=T0 + 130)
    assert b.load() == 2
    assert {x for x in b.location.aors()} == {"alice", "carol"}
    (alice,) = b.location.get("alice")
    assert alice.cseq == 2 and alice.flow == Flow(LOCAL, Endpoint("UDP", "198.51.100.7", 5062))
    assert b.persistence.pending == 0  # loading writes nothing back


def test_expired_while_down_are_gone_and_deleted(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    a = Node(f"sqlite://{db}")
    a.load()
    a.save(udp_binding("short", expires=30))
    a.save(udp_binding("long", expires=3600))
    a.clock.advance(10)
    a.persistence.flush()
    assert len(sqlite_rows(db)) == 2
    b = Node(f"sqlite://{db}", now=T0 + 40)
    assert b.load() == 1 and list(b.location.aors()) == ["long"]
    assert [r[0] for r in sqlite_rows(db)] == ["long"]  # the expired row was deleted at load


def test_expiry_in_memory_deletes_the_row(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    a = Node(f"sqlite://{db}", interval=10)
    a.load()
    a.save(udp_binding("short", expires=15))
    a.clock.advance(10)
    assert len(sqlite_rows(db)) == 1
    a.clock.advance(10)  # expired at +15, flushed at +20
    assert sqlite_rows(db) == []


def test_write_through_writes_as_soon_as_the_reactor_turns(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    a = Node(f"sqlite://{db}", mode="write-through")
    a.load()
    a.save(udp_binding("alice"))
    assert sqlite_rows(db) == []  # not inside the save itself ...
    a.clock.advance(0)
    assert [r[0] for r in sqlite_rows(db)] == ["alice"]  # ... but at once after it
    a.save(udp_binding("bob"))
    a.location.remove("alice")
    a.clock.advance(0)
    assert [r[0] for r in sqlite_rows(db)] == ["bob"]


def test_stop_flushes_what_is_pending(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    a = Node(f"sqlite://{db}")
    a.load()
    a.save(udp_binding("alice"))
    a.persistence.stop()
    assert [r[0] for r in sqlite_rows(db)] == ["alice"]


def test_ul_sync_rewrites_the_table(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    a = Node(f"sqlite://{db}")
    a.load()
    a.save(udp_binding("alice"))
    with sqlite3.connect(db) as conn:  # a stray row the memory table does not have
        conn.execute("INSERT INTO location (username, contact, expires) VALUES ('ghost', 'sip:g@192.0.2.1', 0)")
    a.persistence.sync()
    assert [r[0] for r in sqlite_rows(db)] == ["alice"] and a.persistence.stats["db_syncs"] == 1


def test_unreadable_database_fails_the_load(tmp_path: Path) -> None:
    a = Node(f"sqlite://{tmp_path}/missing-dir/loc.db")
    with pytest.raises(TableError, match="missing-dir"):
        a.load()


def test_a_failed_write_keeps_the_changes_for_the_next_flush(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    a = Node(f"sqlite://{db}", interval=10)
    a.load()
    a.save(udp_binding("alice"))
    with sqlite3.connect(db) as conn:  # a table of the wrong shape: the INSERT fails
        conn.execute("DROP TABLE location")
        conn.execute("CREATE TABLE location (username CHAR(64))")
    a.clock.advance(10)
    assert a.persistence.stats["db_failures"] == 1 and a.persistence.pending == 1
    with sqlite3.connect(db) as conn:  # repaired: the next flush recreates it and writes alice
        conn.execute("DROP TABLE location")
    a.clock.advance(10)
    assert [r[0] for r in sqlite_rows(db)] == ["alice"] and a.persistence.pending == 0


# -- MariaDB: OpenSIPS's own table ------------------------------------------------------------------------
@pytest.fixture
def maria() -> Iterator[tuple[Any, str]]:
    """The test MariaDB and a table name of the test's own (dropped afterwards)."""
    conn = mariadb.connect_or_skip()
    table = mariadb.unique_name("location")
    try:
        yield conn, table
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        conn.close()


def test_mariadb_location_table_round_trip(maria: tuple[Any, str]) -> None:
    conn, table = maria
    a = Node(mariadb.DB_URL, table)
    a.load()
    a.save(udp_binding("alice", nat=True))
    a.save(udp_binding("bob", aor="bob"))
    a.clock.advance(60)
    with conn.cursor() as cur:
        cur.execute(f"SELECT username, domain, contact, received, expires, cflags, socket FROM `{table}` "
                    "ORDER BY username")
        rows = cur.fetchall()
    assert [r[0] for r in rows] == ["alice", "bob"]
    assert rows[0][3] == "sip:198.51.100.7:5062" and rows[0][4] == int(T0 + 3600) and rows[0][5] == "NAT"
    a.location.remove("bob")
    a.clock.advance(60)
    b = Node(mariadb.DB_URL, table, now=T0 + 120)
    assert b.load() == 1
    (alice,) = b.location.get("alice")
    assert alice.nat and alice.received == Endpoint("UDP", "198.51.100.7", 5062)
    assert abs(alice.last_modified - T0) < 1  # read back as UNIX_TIMESTAMP(last_modified)
    a.table.close()
    b.table.close()


def test_mariadb_rows_with_hostile_strings_round_trip(maria: tuple[Any, str]) -> None:
    """The INSERTs are written by sqlstore, not by PyMySQL's executemany: quotes, backslashes, percent
    signs, NUL and non-ASCII in every text column come back as they went in."""
    _, table = maria
    nasty = "O'Brien \\ \"q\" 100% ;-- \x00 é\n"
    a = Node(mariadb.DB_URL, table)
    a.load()
    a.save(udp_binding("eve", user_agent=nasty, call_id=nasty, instance="<urn:uuid:'x'>",
                       path=("<sip:p1.example;lr>", "<sip:it's.example;lr>"), contact_params={"x": nasty},
                       methods=frozenset({"INVITE", "X-ODD"}), q=0.25))
    a.clock.advance(60)
    b = Node(mariadb.DB_URL, table, now=T0 + 1)
    assert b.load() == 1
    (eve,) = b.location.get("eve")
    assert (eve.user_agent, eve.call_id, eve.instance, eve.q) == (nasty, nasty, "<urn:uuid:'x'>", 0.25)
    assert eve.path == ("<sip:p1.example;lr>", "<sip:it's.example;lr>") and eve.contact_params["x"] == nasty
    assert eve.methods == frozenset({"INVITE", "X-ODD"})
    a.table.close()
    b.table.close()


@pytest.mark.parametrize("sql_mode", ["", "NO_BACKSLASH_ESCAPES"])
def test_mariadb_values_read_the_same_in_both_escaping_modes(maria: tuple[Any, str], sql_mode: str) -> None:
    """The INSERT text made in the reactor does not know the server's escaping mode: executed on a
    connection with and without NO_BACKSLASH_ESCAPES, the same values come back."""
    conn, table = maria
    nasty = "a\\b 'c' \\' \x00 é %s"
    row = binding_row(udp_binding("x'y", user_agent=nasty, call_id=nasty, path=("<sip:\\p;lr>",)), False)
    mysql = open_table(mariadb.DB_URL, table)
    mysql.count()  # creates the table
    (values,) = mysql.encode([row])
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = %s", (sql_mode,))
        cur.execute(f"INSERT INTO `{table}` ({', '.join(COLUMNS)}) VALUES {values}")
        cur.execute(f"SELECT username, user_agent, callid, path FROM `{table}`")
        assert cur.fetchall() == (("x'y", nasty, nasty, "<sip:\\p;lr>"),)
    mysql.close()


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_undecodable_bytes_do_not_poison_the_flush(backend: str, tmp_path: Path, maria: tuple[Any, str]) -> None:
    """A User-Agent with bytes that are not UTF-8 reaches the binding as lone surrogates (the parser's
    surrogateescape); the row gets U+FFFD for them instead of every flush failing. So does an AoR
    (``To: <sip:m%FF@...>`` is percent-decoded so): its key too -- the DELETE of its rows failed, and
    the AoR, kept to be written, failed every flush after it (write-through: every REGISTER a 500)."""
    url, table = (f"sqlite://{tmp_path}/loc.db", "location") if backend == "sqlite" else (mariadb.DB_URL, maria[1])
    a = Node(url, table)
    a.load()
    a.save(udp_binding("mallory", user_agent=b"Evil\xff\xfe/1".decode("utf-8", "surrogateescape")))
    a.save(udp_binding("m", aor=b"m\xff".decode("utf-8", "surrogateescape")))
    a.clock.advance(60)
    assert a.persistence.stats["db_failures"] == 0 and a.persistence.stats["db_written_contacts"] == 2
    a.location.remove(b"m\xff".decode("utf-8", "surrogateescape"))
    a.clock.advance(60)
    assert a.persistence.stats["db_failures"] == 0 and a.persistence.pending == 0
    b = Node(url, table, now=T0 + 1)
    assert b.load() == 1
    (m,) = b.location.get("mallory")
    assert m.user_agent == "Evil\ufffd\ufffd/1"
    a.table.close()
    b.table.close()


def test_a_big_flush_is_made_in_slices_between_reactor_turns(tmp_path: Path) -> None:
    """Rows are made in the reactor, 500 AoRs per turn: what the reactor has to do meanwhile (here a
    REGISTER due at the same instant as the flush) runs between two slices, before the transaction;
    its change is written by the next flush."""
    db = tmp_path / "loc.db"
    a = Node(f"sqlite://{db}")
    a.load()
    for i in range(1200):
        a.save(udp_binding(f"u{i:04d}"))
    meanwhile: list[int] = []

    def register_between() -> None:
        meanwhile.append(len(sqlite_rows(db)))
        a.save(udp_binding("late"))

    a.clock.callLater(60, register_between)  # due with the write-back timer, queued after its first slice
    a.clock.advance(60)
    assert meanwhile == [0]  # it ran while the flush was being made: nothing committed yet
    assert len(sqlite_rows(db)) == 1200 and a.persistence.pending == 1
    a.clock.advance(60)
    assert len(sqlite_rows(db)) == 1201


# -- configuration ----------------------------------------------------------------------------------------
def config(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return load_config(str(path))


def test_config_presets_and_db_mode(tmp_path: Path) -> None:
    c = config(tmp_path, '[usrloc]\nworking_mode_preset = "single-instance-sql-write-back"\n'
                         'db_url = "sqlite://loc.db"\ntimer_interval = 5\n')
    assert c.usrloc.sql_write_mode == "write-back" and c.usrloc.db_url == f"sqlite://{tmp_path}/loc.db"
    assert c.usrloc.timer_interval == 5.0
    c = config(tmp_path, '[usrloc]\ndb_mode = 1\ndb_url = "mysql://root@127.0.0.1/test"\n')
    assert c.usrloc.preset == "single-instance-sql-write-through"
    assert config(tmp_path, "").usrloc.sql_write_mode == "none"
    with pytest.raises(ConfigError, match="not both"):
        config(tmp_path, '[usrloc]\ndb_mode = 2\nworking_mode_preset = "single-instance-no-db"\n')
    with pytest.raises(ConfigError, match="needs usrloc.db_url"):
        config(tmp_path, '[usrloc]\nworking_mode_preset = "single-instance-sql-write-back"\n')
    with pytest.raises(ConfigError, match="did you mean"):
        config(tmp_path, '[usrloc]\ntimer_intervall = 5\n')
    with pytest.raises(ConfigError, match="usrloc.db_url"):
        config(tmp_path, '[usrloc]\ndb_mode = 2\ndb_url = "postgres://x/y"\n')


# -- MI ul_sync -------------------------------------------------------------------------------------------
def test_mi_ul_sync_whole_table_and_one_aor(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from twisted.logger import LogLevel, LogLevelFilterPredicate

    from edgeproxy.management.commands import MICommands, MIError
    from edgeproxy.management.loglevel import LogLevelControl
    from edgeproxy.registrar import Registrar, RegistrarSettings
    from edgeproxy.service import RunningNode

    db = tmp_path / "loc.db"
    a = Node(f"sqlite://{db}")
    a.load()
    parts = RunningNode(SimpleNamespace(flood=None), None, a.location,  # type: ignore[arg-type]
                        Registrar(a.location, RegistrarSettings(), a.clock), persistence=a.persistence)
    mi = MICommands(parts, log_control=LogLevelControl(parts.node, [LogLevelFilterPredicate(LogLevel.info)]))

    def call(method: str, params: Any) -> Any:
        out: list[Any] = []
        mi.execute(method, params).addBoth(out.append)
        result = out[0]
        if hasattr(result, "trap"):
            return result.value
        return result

    assert "ul_sync" in mi.names()
    a.save(udp_binding("alice"))
    a.save(udp_binding("bob"))
    assert call("ul_sync", {"table_name": "location"}) == "OK"  # the whole table, now
    assert [r[0] for r in sqlite_rows(db)] == ["alice", "bob"] and a.persistence.pending == 0
    with sqlite3.connect(db) as conn:  # alice's row lost behind the node's back
        conn.execute("DELETE FROM location WHERE username = 'alice'")
    assert call("ul_sync", ["location", "alice"]) == "OK"  # one AoR (with whatever else is pending)
    assert [r[0] for r in sqlite_rows(db)] == ["alice", "bob"]
    err = call("ul_sync", ["location", "nobody"])
    assert isinstance(err, MIError) and err.code == 404
    err = call("ul_sync", ["elsewhere"])
    assert isinstance(err, MIError) and err.code == 404
    assert a.persistence.stats["db_syncs"] == 1 and a.persistence.pending == 0


def test_config_full_sharing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="usrloc.cluster_mode"):
        config(tmp_path, '[usrloc]\nworking_mode_preset = "full-sharing-cluster"\n')
    nodes = ('[cluster]\nmy_node_id = 1\n[[cluster.nodes]]\ncluster_id = 1\nnode_id = 1\n'
             'url = "bin:127.0.0.11:5566"\n')
    c = config(tmp_path, '[usrloc]\nworking_mode_preset = "full-sharing-cluster"\n' + nodes)
    assert c.usrloc.full_sharing and not c.usrloc.persistent
    c = config(tmp_path, f'[usrloc]\ncluster_mode = "full-sharing"\ndb_mode = 2\ndb_url = "sqlite://x.db"\n{nodes}')
    assert c.usrloc.full_sharing and c.usrloc.sql_write_mode == "write-back"


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_a_value_too_long_for_its_column_does_not_poison_the_flush(backend: str, tmp_path: Path,
                                                                   maria: tuple[Any, str]) -> None:
    """OpenSIPS's columns are CHAR(64)/CHAR(255) and MariaDB's strict mode refuses a longer value
    ("Data too long"): one REGISTER with a 300-character User-Agent or Contact failed the whole
    transaction, and since its AoR stays to be written, every flush after it -- nothing else was
    persisted until it expired. A long User-Agent is cut to the column (OpenSIPS keeps at most 255
    characters of it); a contact whose key columns do not fit is kept in memory only, counted."""
    url, table = (f"sqlite://{tmp_path}/loc.db", "location") if backend == "sqlite" else (mariadb.DB_URL, maria[1])
    a = Node(url, table)
    a.load()
    a.save(udp_binding("mallory", user_agent="U" * 300))
    a.save(udp_binding("trudy", call_id="c" * 300))
    a.save(udp_binding("x" * 65, aor="x" * 65))
    a.save(udp_binding("alice"))
    a.clock.advance(60)
    assert a.persistence.stats["db_failures"] == 0 and a.persistence.stats["db_written_contacts"] == 2
    assert a.persistence.stats["db_unwritable_contacts"] == 2 and a.persistence.pending == 0
    b = Node(url, table, now=T0 + 1)
    assert b.load() == 2
    (m,) = b.location.get("mallory")
    assert m.user_agent == "U" * 255 and b.location.get("alice") != [] and b.location.get("trudy") == []
    a.table.close()
    b.table.close()
