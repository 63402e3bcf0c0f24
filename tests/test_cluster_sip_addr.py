"""A node's own ``sip_addr`` must reach one of its UDP listeners (:mod:`edgeproxy.cluster.sip_addr`):
other nodes send there, to 5060 when it names no port (RFC 3261 §19.1.2), so a second node on one host
listening elsewhere would otherwise receive nothing and the call would time out."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeproxy.cluster.sip_addr import sip_addr_port, unreachable_sip_addr
from edgeproxy.config import ConfigError, load_config
from edgeproxy.sip.endpoint import Endpoint


def udp(host: str, port: int) -> Endpoint:
    return Endpoint("UDP", host, port)


@pytest.mark.parametrize("text, port", [
    ("127.0.0.12", 5060), ("127.0.0.12:5070", 5070), ("edge.example.com", 5060), ("edge.example.com:5080", 5080),
    ("::1", 5060), ("[::1]:5070", 5070), ("127.0.0.12:0", None), ("127.0.0.12:x", None), ("[::1]5070", None),
])
def test_port_of_a_sip_addr(text: str, port: int | None) -> None:
    assert sip_addr_port(text) == port


@pytest.mark.parametrize("sip_addr, listeners, advertise", [
    ("127.0.0.12", [udp("127.0.0.12", 5060)], ""),
    ("127.0.0.12:5070", [udp("127.0.0.12", 5070)], ""),
    ("10.0.1.100", [udp("0.0.0.0", 5060)], ""),                 # a wildcard listener takes any address
    ("203.0.113.7:5080", [udp("10.0.0.5", 5080)], "203.0.113.7"),  # node.advertise is this node's
    ("edge.example.com", [udp("127.0.0.12", 5060)], ""),        # a name: only the port is ours to check
    ("[::1]:5070", [udp("::1", 5070)], ""),
])
def test_reachable(sip_addr: str, listeners: list[Endpoint], advertise: str) -> None:
    assert unreachable_sip_addr(sip_addr, listeners, advertise) is None


def test_the_port_left_out_names_the_listener_to_write() -> None:
    problem = unreachable_sip_addr("127.0.0.12", [udp("127.0.0.12", 5070), Endpoint("TCP", "127.0.0.12", 5070)])
    assert problem == ("'127.0.0.12' matches no UDP listener of this node: other nodes send to 127.0.0.12:5060"
                       " (node.listen UDP: udp:127.0.0.12:5070); write the port: \"127.0.0.12:5070\"")


@pytest.mark.parametrize("sip_addr, listeners", [
    ("127.0.0.13", [udp("127.0.0.12", 5060)]),            # another host
    ("127.0.0.12", [Endpoint("TCP", "127.0.0.12", 5060)]),  # no UDP listener: the URI means UDP
    ("::1", [udp("0.0.0.0", 5060)]),                      # an IPv4 wildcard does not take IPv6
    ("127.0.0.12:99999", [udp("127.0.0.12", 5060)]),
])
def test_unreachable(sip_addr: str, listeners: list[Endpoint]) -> None:
    assert unreachable_sip_addr(sip_addr, listeners) is not None


ROWS = """
[cluster]
my_node_id = 2
[[cluster.nodes]]
cluster_id = 1
node_id = 1
url = "bin:127.0.0.11:5555"
sip_addr = "127.0.0.11"
[[cluster.nodes]]
cluster_id = 1
node_id = 2
url = "bin:127.0.0.12:5555"
sip_addr = "127.0.0.12"
"""


def test_config_refuses_the_rows_sip_addr_without_the_port(tmp_path: Path) -> None:
    path = tmp_path / "y.toml"
    path.write_text('[node]\nlisten = ["udp:127.0.0.12:5070"]\n' + ROWS)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == (
        "config: cluster.nodes (node_id 2) sip_addr: '127.0.0.12' matches no UDP listener of this node: other nodes"
        " send to 127.0.0.12:5060 (node.listen UDP: udp:127.0.0.12:5070); write the port: \"127.0.0.12:5070\"")


def test_config_refuses_a_federation_sip_addr_of_another_port(tmp_path: Path) -> None:
    path = tmp_path / "y.toml"
    path.write_text('[node]\nlisten = ["udp:127.0.0.12:5060"]\n' + ROWS.replace('"127.0.0.12"', '"127.0.0.12:5060"')
                    + '[federation]\ncachedb_url = "mongodb://127.0.0.1:27017/db.userlocation"\n'
                    'sip_addr = "127.0.0.12:5070"\n')
    with pytest.raises(ConfigError, match=r"^config: federation\.sip_addr: '127\.0\.0\.12:5070' matches no UDP"):
        load_config(str(path))


def test_the_other_nodes_rows_are_not_this_nodes_business(tmp_path: Path) -> None:
    path = tmp_path / "y.toml"
    path.write_text('[node]\nlisten = ["udp:127.0.0.12:5060"]\n' + ROWS.replace('"127.0.0.11"', '"127.0.0.11:5999"'))
    assert load_config(str(path)).cluster.my_node_id == 2


def test_a_node_table_rows_sip_addr_is_checked_when_it_is_read(tmp_path: Path) -> None:
    """With ``cluster.db_url`` the rows are read at start-up, after the configuration was checked: the
    node's own row's sip_addr is checked then, with the same words, naming the table."""
    from twisted.internet.task import Clock

    from edgeproxy.cluster import NodeTable
    from edgeproxy.service import build_node

    path = tmp_path / "y.toml"
    path.write_text('[node]\nlisten = ["udp:127.0.0.12:5070"]\n[cluster]\nmy_node_id = 2\n'
                    'db_url = "mysql://root@127.0.0.1:3306/edgeproxy"\n'
                    '[federation]\ncachedb_url = "mongodb://127.0.0.1:27017/db.userlocation"\n')
    config = load_config(str(path))  # nothing to check yet: the rows are in the database
    rows = NodeTable.from_dicts([
        {"cluster_id": 1, "node_id": 1, "url": "bin:127.0.0.11:5555", "sip_addr": "127.0.0.11"},
        {"cluster_id": 1, "node_id": 2, "url": "bin:127.0.0.12:5555", "sip_addr": "127.0.0.12"},  # no port
    ])
    with pytest.raises(ConfigError) as caught:
        build_node(config, Clock(), node_table=rows)
    assert str(caught.value) == (
        "config: node 2's row in table 'clusterer': sip_addr: '127.0.0.12' matches no UDP listener of this node:"
        " other nodes send to 127.0.0.12:5060 (node.listen UDP: udp:127.0.0.12:5070); write the port:"
        " \"127.0.0.12:5070\"")
