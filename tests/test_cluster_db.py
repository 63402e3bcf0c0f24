"""The node table from a real MariaDB/MySQL table of the seed's shape.

Needs a server at 127.0.0.1:3306 (user root, empty password, database ``test``; override with
EDGEPROXY_TEST_DB_URL). Skipped with the reason when unreachable -- except under CI (``CI=true``),
where a missing database is a failure, not a skip.
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import reactor

from edgeproxy.cluster import Cluster, NodeInfo, NodeTableError, load_node_table, parse_db_url
from support.mariadb import DB_URL, connect_or_skip, unique_name
from support.ports import free_port


# OpenSIPS' clusterer table (scripts/mysql/clusterer-create.sql shape).
CREATE = """
CREATE TABLE `{table}` (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    cluster_id INT(10) NOT NULL,
    node_id INT(10) NOT NULL,
    url CHAR(64) NOT NULL,
    state INT(1) DEFAULT 1 NOT NULL,
    no_ping_retries INT(10) DEFAULT 3 NOT NULL,
    priority INT(10) DEFAULT 50 NOT NULL,
    sip_addr CHAR(64),
    flags CHAR(64),
    description CHAR(64),
    CONSTRAINT clusterer_node UNIQUE (cluster_id, node_id)
)
"""
INSERT = ("INSERT INTO `{table}` (id, cluster_id, node_id, url, state, no_ping_retries, priority, "
          "sip_addr, flags, description) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
# The seed's two rows, moved to loopback addresses.
SEED = [
    (1, 1, 1, "bin:127.0.0.11", 1, 3, 50, "127.0.0.11", "seed", None),
    (2, 1, 2, "bin:127.0.0.12", 1, 3, 50, "127.0.0.12", "seed", None),
]


@pytest.fixture
def db_table():
    """A uniquely named clusterer-shaped table holding the seed rows; dropped afterwards."""
    conn = connect_or_skip()
    name = unique_name("clusterer")
    with conn.cursor() as cur:
        cur.execute(CREATE.format(table=name))
        try:
            for row in SEED:
                cur.execute(INSERT.format(table=name), row)
            yield conn, name
        finally:
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")
            conn.close()


@pytest_twisted.ensureDeferred
async def test_load_the_seed_table(db_table) -> None:
    _, name = db_table
    rows = await load_node_table(DB_URL, name)
    assert rows == [
        NodeInfo(1, 1, "bin:127.0.0.11", 1, 3, 50, "127.0.0.11", "seed", None),
        NodeInfo(1, 2, "bin:127.0.0.12", 1, 3, 50, "127.0.0.12", "seed", None),
    ]
    cluster = Cluster(reactor, 1, rows)
    assert cluster.cluster_check_addr(1, "127.0.0.12")
    assert not cluster.cluster_check_addr(1, "127.0.0.11")
    assert cluster.my_node.seed and cluster.my_bin.port == 5555


@pytest_twisted.ensureDeferred
async def test_loaded_table_runs_a_cluster(db_table) -> None:
    conn, name = db_table
    port = free_port("127.0.0.11")
    with conn.cursor() as cur:
        cur.execute(f"UPDATE `{name}` SET url = CONCAT(url, ':', %s), no_ping_retries = 1", (port,))
    rows = await load_node_table(DB_URL, name)
    a = Cluster(reactor, 1, rows, ping_interval=0.2, ping_timeout=0.1)
    b = Cluster(reactor, 2, rows, ping_interval=0.2, ping_timeout=0.1)
    try:
        await a.start()
        await b.start()
        from twisted.internet import task
        for _ in range(200):
            if a.is_up(2) and b.is_up(1):
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        assert a.is_up(2) and b.is_up(1)
    finally:
        await a.stop()
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_bad_row_in_the_database_is_named(db_table) -> None:
    conn, name = db_table
    with conn.cursor() as cur:
        cur.execute(f"UPDATE `{name}` SET sip_addr = 'sip:127.0.0.12' WHERE node_id = 2")
    with pytest.raises(NodeTableError, match=r"row cluster 1 node 2: sip_addr 'sip:127.0.0.12'"):
        await load_node_table(DB_URL, name)


@pytest_twisted.ensureDeferred
async def test_missing_table_fails_clearly(db_table) -> None:
    with pytest.raises(NodeTableError, match=r"db table 'no_such_clusterer_table': \(1146\)"):
        await load_node_table(DB_URL, "no_such_clusterer_table")


def test_bad_table_name_is_refused_before_connecting() -> None:
    with pytest.raises(NodeTableError, match="not a plain table name"):
        load_node_table(DB_URL, "clusterer; DROP TABLE x")


@pytest_twisted.ensureDeferred
async def test_unreachable_server_fails_clearly() -> None:
    pytest.importorskip("pymysql")
    with pytest.raises(NodeTableError, match="cannot connect"):
        await load_node_table("mysql://root@127.0.0.1:1/test", connect_timeout=2)


@pytest_twisted.ensureDeferred
async def test_wrong_password_fails_clearly(db_table) -> None:
    db = parse_db_url(DB_URL)
    url = f"mysql://edgeproxy_nobody:wrong@{db.host}:{db.port}/{db.database}"
    with pytest.raises(NodeTableError, match=r"cannot connect: \(1045\)"):
        await load_node_table(url)


@pytest_twisted.ensureDeferred
async def test_localhost_means_the_unix_socket_like_libmysqlclient(db_table) -> None:
    from edgeproxy.cluster.db import SOCKET_PATHS
    if not any(os.path.exists(p) for p in SOCKET_PATHS):
        pytest.skip("no MySQL/MariaDB Unix socket on this machine")
    _, name = db_table
    db = parse_db_url(DB_URL)
    if db.host not in ("127.0.0.1", "localhost"):
        pytest.skip("the test database is not local")
    password = f":{db.password}" if db.password else ""
    rows = await load_node_table(f"mysql://{db.user}{password}@localhost/{db.database}", name)
    assert [r.node_id for r in rows] == [1, 2]
