"""Restart persistence with the federated store: a node that loads its contacts after ``kill -9``
re-publishes them, without any REGISTER (issue 12, item 3).

A real ``twistd edgeproxy`` node (127.0.0.11, a one-node cluster as the federation needs one) with
``[federation]`` on SecantusDB (Mongo wire) and write-back persistence on SQLite registers 200 users
over UDP; once they are written to SQL and published, the node is killed, the store loses every
record (as its TTL index would remove the records of a node that stays down), and the node is
started again: every AoR it loaded is in the store again under its ``sip_addr``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import mongo_server
from support.polling import wait_until
from support.ports import free_port
from support.registrations import Registration, register_many
from support.sipp_harness import edgeproxy_node

IP = "127.0.0.11"
DOMAIN = "example.com"
USERS = 200


@pytest.fixture(scope="module")
def target() -> Iterator[mongo_server.MongoTarget]:
    mongo_server.server_or_skip()
    t = mongo_server.start_target()
    yield t
    mongo_server.stop_target(t)


def collection_of(target: mongo_server.MongoTarget, name: str) -> Any:
    from pymongo import MongoClient

    client: Any = MongoClient(target.base_uri, serverSelectionTimeoutMS=3000)
    return client, client[target.database][name]


def test_loaded_contacts_are_published_again(target: mongo_server.MongoTarget, tmp_path: Path) -> None:
    port, bin_port = free_port(IP), free_port(IP)
    sip_addr = f"{IP}:{port}"
    name = f"userlocation_{int(time.time() * 1000) % 10**8}"
    config = {
        "node": {"domains": [DOMAIN]},
        "registrar": {"use_domain": True},
        "cluster": {"my_node_id": 1, "nodes": [{"cluster_id": 1, "node_id": 1, "url": f"bin:{IP}:{bin_port}",
                                                "sip_addr": sip_addr, "flags": "seed"}]},
        "federation": {"cachedb_url": target.url(name), "refresh_interval": 60.0, "record_ttl": 600.0},
        "usrloc": {"working_mode_preset": "single-instance-sql-write-back", "db_url": f"sqlite://{tmp_path}/loc.db",
                   "timer_interval": 1},
    }
    client, docs = collection_of(target, name)
    workdir = tmp_path / "node"
    try:
        with edgeproxy_node(workdir, config=config, transports=("udp",), host=IP, port=port) as node:
            regs = [Registration(f"u{i}", f"sip:u{i}@127.0.0.1:9") for i in range(USERS)]
            # phones on 127.0.0.1: the node's own address is a cluster node's, whose REGISTERs the route refuses
            assert register_many((IP, port), regs, domain=DOMAIN).ok == USERS
            wait_until("the records in the store",
                       lambda: docs.count_documents({"home_ip": sip_addr}) == USERS, timeout=30)
            wait_until("every contact written to SQL",
                       lambda: sum(int(line.split("(", 1)[1].split()[0]) for line in node.log().splitlines()
                                   if "usrloc: wrote" in line) >= USERS, timeout=30)
            node.kill()
        docs.delete_many({})  # the store forgot the dead node's records (TTL)
        with edgeproxy_node(workdir, config=config, transports=("udp",), host=IP, port=port) as node:
            wait_until("the records published again",
                       lambda: docs.count_documents({"home_ip": sip_addr}) == USERS, timeout=30)
            aors = {d["aor"] for d in docs.find({"home_ip": sip_addr})}
            assert aors == {f"u{i}@{DOMAIN}" for i in range(USERS)}
            assert f"usrloc: loaded {USERS} contacts" in node.log()
    finally:
        docs.drop()
        client.close()
