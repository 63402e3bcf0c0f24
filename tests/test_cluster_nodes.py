"""Node table rows, bin URLs, db URLs, and the Cluster's queries (no sockets: never started).

``cluster_check_addr`` follows OpenSIPS ``clusterer_mod.c:cmd_check_addr``: true only for the
address of ANOTHER node of that cluster, compared against ``sip_addr`` (host part) by default.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from twisted.internet import task

from edgeproxy.cluster import (
    DEFAULT_BIN_PORT,
    BinAddress,
    Cluster,
    NodeInfo,
    NodeTable,
    NodeTableError,
    parse_bin_url,
    parse_db_url,
)
from edgeproxy.cluster.nodes import sip_addr_host

# The blog's clusterer table (seed), as config rows.
SEED_ROWS = [
    {"id": 1, "cluster_id": 1, "node_id": 1, "url": "bin:10.0.1.100", "state": 1, "no_ping_retries": 3,
     "priority": 50, "sip_addr": "10.0.1.100", "flags": "seed", "description": None},
    {"id": 2, "cluster_id": 1, "node_id": 2, "url": "bin:10.0.2.100", "state": 1, "no_ping_retries": 3,
     "priority": 50, "sip_addr": "10.0.2.100", "flags": "seed", "description": None},
]


def cluster(my_id: int, rows, **kw) -> Cluster:
    table = rows if isinstance(rows, NodeTable) else NodeTable.from_dicts(rows)
    return Cluster(task.Clock(), my_id, table, **kw)


# -- bin URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, host, port", [
    ("bin:10.0.1.100", "10.0.1.100", DEFAULT_BIN_PORT),
    ("bin:10.0.1.100:5566", "10.0.1.100", 5566),
    ("BIN:127.0.0.11:1", "127.0.0.11", 1),
    ("bin:[::1]:5566", "::1", 5566),
    ("bin:[2001:DB8::1]", "2001:db8::1", DEFAULT_BIN_PORT),
    ("bin:2001:db8::1", "2001:db8::1", DEFAULT_BIN_PORT),
    ("bin:[::ffff:10.0.0.1]:7", "10.0.0.1", 7),
])
def test_parse_bin_url(url: str, host: str, port: int) -> None:
    assert parse_bin_url(url) == BinAddress(host, port)


def test_default_bin_port_is_proto_bins() -> None:
    assert DEFAULT_BIN_PORT == 5555  # OpenSIPS proto_bin README: bin_port default 5555


@pytest.mark.parametrize("url, problem", [
    ("10.0.1.100:5566", "expected bin:"),
    ("udp:10.0.1.100", "expected bin:"),
    ("bins:10.0.1.100", "TLS"),
    ("bin:node1.example.com", "not an IP"),
    ("bin:0.0.0.0:5566", "cannot be"),
    ("bin:10.0.1.100:", "empty port"),
    ("bin:10.0.1.100:0", "bad port"),
    ("bin:10.0.1.100:65536", "bad port"),
    ("bin:10.0.1.100:x", "bad port"),
    ("bin:[::1", "bracketed"),
    ("bin:[::1]x", "bracketed"),
])
def test_bad_bin_urls(url: str, problem: str) -> None:
    with pytest.raises(NodeTableError, match=problem):
        parse_bin_url(url)


def test_bin_address_str() -> None:
    assert str(BinAddress("10.0.0.1", 5555)) == "bin:10.0.0.1:5555"
    assert str(BinAddress("::1", 5555)) == "bin:[::1]:5555"


# -- rows -----------------------------------------------------------------------------------------


def test_seed_rows_load_with_their_columns() -> None:
    table = NodeTable.from_dicts(SEED_ROWS)
    n1, n2 = table.rows
    assert n1 == NodeInfo(1, 1, "bin:10.0.1.100", 1, 3, 50, "10.0.1.100", "seed", None)
    assert n2.node_id == 2 and n2.seed and n2.enabled and n2.bin == BinAddress("10.0.2.100", 5555)
    assert table.clusters() == (1,)
    assert table.get(1, 2) is n2 and table.get(2, 1) is None
    assert len(table) == 2 and list(table) == [n1, n2]


def test_defaults_match_the_opensips_table() -> None:
    n = NodeInfo.from_mapping({"cluster_id": 1, "node_id": 3, "url": "bin:10.0.0.3"})
    assert (n.state, n.no_ping_retries, n.priority, n.sip_addr, n.flags, n.description) == \
        (1, 3, 50, None, None, None)
    assert not n.seed and n.sip_host is None


def test_mapping_values_are_coerced_like_sql_text() -> None:
    n = NodeInfo.from_mapping({"cluster_id": "1", "node_id": " 2 ", "url": " bin:10.0.0.2 ",
                               "state": "0", "no_ping_retries": None, "sip_addr": "",
                               "flags": b"SEED", "description": "  backup  "})
    assert (n.cluster_id, n.node_id, n.url, n.state) == (1, 2, "bin:10.0.0.2", 0)
    assert n.no_ping_retries == 3 and n.sip_addr is None
    assert n.seed and n.description == "backup" and not n.enabled


@pytest.mark.parametrize("row, problem", [
    ({"node_id": 1, "url": "bin:10.0.0.1"}, "missing cluster_id"),
    ({"cluster_id": 1, "url": "bin:10.0.0.1"}, "missing node_id"),
    ({"cluster_id": 1, "node_id": 1}, "missing url"),
    ({"cluster_id": 0, "node_id": 1, "url": "bin:10.0.0.1"}, "cluster_id: must be >= 1"),
    ({"cluster_id": 1, "node_id": -2, "url": "bin:10.0.0.1"}, "node_id: must be >= 1"),
    ({"cluster_id": 1, "node_id": 1, "url": "bin:10.0.0.1", "state": 2}, "state: must be 1"),
    ({"cluster_id": 1, "node_id": 1, "url": "bin:10.0.0.1", "no_ping_retries": -1}, "no_ping_retries"),
    ({"cluster_id": True, "node_id": 1, "url": "bin:10.0.0.1"}, "expected an integer"),
    ({"cluster_id": 1.5, "node_id": 1, "url": "bin:10.0.0.1"}, "expected an integer"),
    ({"cluster_id": 1, "node_id": 1, "url": "bin:10.0.0.1", "sip_addr": "sip:10.0.0.1"}, "without a scheme"),
    ({"cluster_id": 1, "node_id": 1, "url": "bin:10.0.0.1", "flags": "seed,leader"}, "unknown flag"),
    ({"cluster_id": 1, "node_id": 1, "url": "bin:10.0.0.1", "sip_adr": "x"}, "unknown column"),
    ({"cluster_id": 1, "node_id": 1, "url": 5}, "url"),
])
def test_bad_rows(row: dict, problem: str) -> None:
    with pytest.raises(NodeTableError, match=problem):
        NodeInfo.from_mapping(row)


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(NodeTableError, match="expected an integer"):
        NodeInfo("1", 1, "bin:10.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(NodeTableError):
        NodeInfo(1, 1, "bin:nowhere")


def test_table_errors_name_the_row() -> None:
    rows = [SEED_ROWS[0], {**SEED_ROWS[1], "url": "bin:host.example"}]
    with pytest.raises(NodeTableError, match=r"node row 1 \(cluster 1, node 2\): url"):
        NodeTable.from_dicts(rows)
    with pytest.raises(NodeTableError, match="node row 0: expected a table"):
        NodeTable.from_dicts(["bin:10.0.0.1"])  # type: ignore[list-item]
    with pytest.raises(NodeTableError, match="node_id 1 is listed twice"):
        NodeTable.from_dicts([SEED_ROWS[0], SEED_ROWS[0]])
    with pytest.raises(NodeTableError, match="NodeInfo rows"):
        NodeTable([SEED_ROWS[0]])  # type: ignore[list-item]


def test_error_text_is_one_line() -> None:
    with pytest.raises(NodeTableError) as info:
        NodeTable.from_dicts([{**SEED_ROWS[0], "sip_addr": "sip:10.0.1.100"}])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("sip_addr, host", [
    (None, None), ("", None), ("10.0.1.100", "10.0.1.100"), ("10.0.1.100:5060", "10.0.1.100"),
    ("[2001:db8::1]:5060", "2001:db8::1"), ("2001:db8::1", "2001:db8::1"),
    ("edge1.example.com:5060", "edge1.example.com"),
])
def test_sip_addr_host(sip_addr, host) -> None:
    assert sip_addr_host(sip_addr) == host


# -- Cluster construction -----------------------------------------------------------------------


def test_my_node_must_be_listed() -> None:
    with pytest.raises(NodeTableError, match="my_node_id 9 is not in the node table"):
        cluster(9, SEED_ROWS)


def test_my_node_has_one_url() -> None:
    rows = SEED_ROWS + [{"cluster_id": 2, "node_id": 1, "url": "bin:10.0.1.100:6000"}]
    with pytest.raises(NodeTableError, match="several urls"):
        cluster(1, rows)


def test_a_peer_cannot_share_my_url() -> None:
    rows = SEED_ROWS + [{"cluster_id": 1, "node_id": 3, "url": "bin:10.0.1.100:5555"}]
    with pytest.raises(NodeTableError, match="has this node's url"):
        cluster(1, rows)


def test_bad_timing_parameters() -> None:
    with pytest.raises(ValueError):
        cluster(1, SEED_ROWS, ping_interval=0)
    with pytest.raises(ValueError):
        cluster(1, SEED_ROWS, seed_fallback_interval=-1)


def test_views_of_membership() -> None:
    rows = SEED_ROWS + [
        {"cluster_id": 1, "node_id": 3, "url": "bin:10.0.3.100", "sip_addr": "10.0.3.100:5060", "state": 0},
        {"cluster_id": 2, "node_id": 1, "url": "bin:10.0.1.100"},
        {"cluster_id": 2, "node_id": 4, "url": "bin:10.0.4.100", "sip_addr": "10.0.4.100"},
        {"cluster_id": 7, "node_id": 5, "url": "bin:10.0.5.100"},  # a cluster without me: ignored
        {"cluster_id": 7, "node_id": 6, "url": "bin:10.0.6.100"},
    ]
    c = cluster(1, rows)
    assert c.clusters == (1, 2)
    assert c.my_node.node_id == 1 and c.my_node_id == 1
    assert [n.node_id for n in c.nodes(1)] == [2, 3]
    assert [n.node_id for n in c.nodes(2)] == [4]
    assert [n.node_id for n in c.nodes()] == [2, 3, 4]
    assert c.nodes(7) == () and c.nodes(99) == ()
    # nothing is up before start, disabled nodes never get a heartbeat
    assert c.up_nodes() == () and not c.is_up(2) and not c.is_up(1)
    assert c.link_state(3) is None and c.link_state(2) is not None
    assert c.sip_addr_of(1) == "10.0.1.100" and c.sip_addr_of(3) == "10.0.3.100:5060"
    assert c.sip_addr_of(5) is None
    assert not c.is_synced(1)


# -- cluster_check_addr (OpenSIPS semantics) ------------------------------------------------------


def test_check_addr_is_true_for_the_other_nodes_sip_addr() -> None:
    node1, node2 = cluster(1, SEED_ROWS), cluster(2, SEED_ROWS)
    assert node1.cluster_check_addr(1, "10.0.2.100")
    assert node2.cluster_check_addr(1, "10.0.1.100")


def test_check_addr_is_false_for_this_node() -> None:
    assert not cluster(1, SEED_ROWS).cluster_check_addr(1, "10.0.1.100")


def test_check_addr_is_false_for_strangers_and_unknown_clusters() -> None:
    c = cluster(1, SEED_ROWS)
    assert not c.cluster_check_addr(1, "10.0.1.244")   # the MongoDB host, say
    assert not c.cluster_check_addr(2, "10.0.2.100")   # no such cluster
    assert not c.cluster_check_addr(1, "")
    assert not c.cluster_check_addr(1, None)  # type: ignore[arg-type]


def test_check_addr_ignores_the_port_of_sip_addr_and_the_up_state() -> None:
    rows = [SEED_ROWS[0], {**SEED_ROWS[1], "sip_addr": "10.0.2.100:5080"}]
    c = cluster(1, rows)
    assert not c.is_up(2)
    assert c.cluster_check_addr(1, "10.0.2.100")


def test_check_addr_compares_sip_addr_not_the_bin_url_by_default() -> None:
    # HA pair behind a VIP: sip_addr is the VIP, the bin url the real address
    rows = [
        {"cluster_id": 1, "node_id": 1, "url": "bin:10.0.0.177", "sip_addr": "10.0.0.223"},
        {"cluster_id": 1, "node_id": 2, "url": "bin:10.0.0.178", "sip_addr": "10.0.0.223"},
    ]
    c = cluster(1, rows)
    assert c.cluster_check_addr(1, "10.0.0.223")
    assert not c.cluster_check_addr(1, "10.0.0.178")
    assert c.cluster_check_addr(1, "10.0.0.178", "bin")
    assert not c.cluster_check_addr(1, "10.0.0.177", "bin")
    with pytest.raises(ValueError):
        c.cluster_check_addr(1, "10.0.0.178", "udp")


def test_check_addr_without_sip_addr_is_false() -> None:
    rows = [SEED_ROWS[0], {**SEED_ROWS[1], "sip_addr": None}]
    assert not cluster(1, rows).cluster_check_addr(1, "10.0.2.100")


def test_check_addr_understands_ipv6_and_mapped_ipv4() -> None:
    rows = [
        {"cluster_id": 1, "node_id": 1, "url": "bin:[2001:db8::1]", "sip_addr": "[2001:db8::1]:5060"},
        {"cluster_id": 1, "node_id": 2, "url": "bin:[2001:db8::2]", "sip_addr": "[2001:db8::2]:5060"},
        {"cluster_id": 1, "node_id": 3, "url": "bin:10.0.3.100", "sip_addr": "10.0.3.100"},
    ]
    c = cluster(1, rows)
    assert c.cluster_check_addr(1, "2001:DB8:0::2")
    assert c.cluster_check_addr(1, "::ffff:10.0.3.100")
    assert not c.cluster_check_addr(1, "2001:db8::1")


def test_check_addr_with_hostnames_compares_names() -> None:
    rows = [SEED_ROWS[0], {**SEED_ROWS[1], "sip_addr": "Edge2.Example.com:5060"}]
    c = cluster(1, rows)
    assert c.cluster_check_addr(1, "edge2.example.com")
    assert not c.cluster_check_addr(1, "edge1.example.com")


def test_node_for_sip_addr() -> None:
    rows = SEED_ROWS + [
        {"cluster_id": 1, "node_id": 3, "url": "bin:10.0.3.100", "sip_addr": "10.0.9.9"},
        {"cluster_id": 1, "node_id": 4, "url": "bin:10.0.4.100", "sip_addr": "10.0.9.9"},
    ]
    c = cluster(1, rows)
    assert c.node_for_sip_addr("10.0.2.100").node_id == 2
    assert c.node_for_sip_addr("10.0.1.100").node_id == 1  # this node too
    assert c.node_for_sip_addr("10.0.9.9").node_id == 3     # shared: table order when none is up
    assert c.node_for_sip_addr("10.9.9.9") is None
    assert c.node_for_sip_addr("10.0.2.100", cluster_id=5) is None


# -- db_url ---------------------------------------------------------------------------------------


def test_parse_db_url_of_the_seed() -> None:
    db = parse_db_url("mysql://opensips:opensips@localhost/opensips")
    assert (db.host, db.port, db.user, db.password, db.database) == \
        ("localhost", 3306, "opensips", "opensips", "opensips")
    assert "opensips'" not in repr(db).split("password=")[1][:10]


def test_parse_db_url_with_port_and_escapes() -> None:
    db = parse_db_url("mysql://root@127.0.0.1:3307/test")
    assert (db.host, db.port, db.user, db.password, db.database) == ("127.0.0.1", 3307, "root", "", "test")
    db = parse_db_url("mysql://u%40x:p%3Aw%2Fd@db.example/opensips")
    assert (db.user, db.password) == ("u@x", "p:w/d")


@pytest.mark.parametrize("url, problem", [
    ("postgres://u@h/db", "not supported"),
    ("mysql:///db", "no host"),
    ("mysql://h", "database name"),
    ("mysql://h/a/b", "database name"),
    ("mysql://h:99999/db", "db_url"),
    ("mysql://h/db?ssl=1", "query"),
])
def test_bad_db_urls(url: str, problem: str) -> None:
    with pytest.raises(NodeTableError, match=problem):
        parse_db_url(url)


# -- layering -------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["nodes.py", "liveness.py"])
def test_sans_io_modules_import_no_twisted(module: str) -> None:
    path = Path(__file__).resolve().parent.parent / "edgeproxy" / "cluster" / module
    names = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    assert not [n for n in names if n == "twisted" or n.startswith("twisted.")]
