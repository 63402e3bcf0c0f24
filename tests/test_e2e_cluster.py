"""The seed's three topologies end to end: two ``twistd edgeproxy`` nodes, SIPp phones and a SIPp
"FreeSWITCH", the shared store on a MongoDB wire-protocol server, and the node table in MariaDB.

Topology (all loopback)::

    FreeSWITCH  127.0.0.21  SIPp UAC (uac_call / uac_expect / uac_redirect / uac_failover)
    node X      127.0.0.11:5060   cluster link bin:127.0.0.11:5555, sip_addr 127.0.0.11
    node Y      127.0.0.12:5060   cluster link bin:127.0.0.12:5555, sip_addr 127.0.0.12
    phones      127.0.0.31, .32   SIPp register.xml + -oocsf uas_answer.xml, one per phone
    store       127.0.0.1:<free>  SecantusDB (tests/support/mongo_server.py); MONGO_URI: a real MongoDB

Users are ``user@sip.domain.test`` (``registrar.use_domain``, as the seed). Cluster timers are short
(ping_interval 0.3 s, ping_timeout 0.2 s, no_ping_retries 2) and so are the SIP timers (the harness's
TEST_TIMERS). The store is checked with a synchronous PyMongo client. Every wait is bounded; every
process is stopped by its PID.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from support import mongo_server
from support.phones import register_phone
from support.polling import wait_log, wait_until
from support.ports import bindable
from support.sipp_harness import REPO, EdgeproxyNode, Sipp, SippProcess, SippResult, edgeproxy_node, free_port, require_sipp

DOMAIN = "sip.domain.test"
X_IP, Y_IP, Z_IP = "127.0.0.11", "127.0.0.12", "127.0.0.13"
FREESWITCH_IP = "127.0.0.21"
PHONE_IPS = ("127.0.0.31", "127.0.0.32")


def _node_ports() -> tuple[int, int]:
    """SIP 5060 and cluster link 5555, as in the issue's topology, when they are free on every node
    address; otherwise (say, another run of these tests on this machine) ports free on all of them,
    which then appear in the nodes' ``sip_addr``."""
    def free(port: int, kind: int) -> bool:
        return all(bindable(kind, ip, port) for ip in (X_IP, Y_IP, Z_IP))

    if free(5060, socket.SOCK_DGRAM) and free(5555, socket.SOCK_STREAM):
        return 5060, 5555
    return free_port(X_IP, Y_IP, Z_IP), free_port(X_IP, Y_IP, Z_IP)


SIP_PORT, BIN_PORT = _node_ports()


def sip_addr(ip: str) -> str:
    """A node's ``sip_addr``: its IP, with the port when that is not 5060."""
    return ip if SIP_PORT == 5060 else f"{ip}:{SIP_PORT}"


X_ADDR = sip_addr(X_IP)
PING_INTERVAL, PING_TIMEOUT, NO_PING_RETRIES = 0.3, 0.2, 2
#: Federation timers for tests: refreshes every second (so a store that lost its data has the records
#: back within about a second), records live a minute (so a stale record outlives the tests that
#: need one), store operations give up after half a second.
FEDERATION = {"refresh_interval": 1.0, "record_ttl": 60.0, "retry_interval": 0.5, "lookup_timeout": 0.5,
              "server_selection_timeout": 0.5, "write_timeout": 2.0}


# -- the store ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def target() -> Iterator[mongo_server.MongoTarget]:
    require_sipp()
    with mongo_server.running_target() as t:
        yield t


@pytest.fixture
def collection() -> str:
    """A collection of its own per test, so no test sees another's records."""
    return f"userlocation_{secrets.token_hex(3)}"


def store_docs(target: mongo_server.MongoTarget, collection: str, query: dict | None = None) -> list[dict]:
    from pymongo import MongoClient

    client: Any = MongoClient(target.base_uri, serverSelectionTimeoutMS=3000)
    try:
        return list(client[target.database][collection].find(query or {}))
    finally:
        client.close()


def records_for(target: mongo_server.MongoTarget, collection: str, user: str) -> list[dict]:
    return store_docs(target, collection, {"aor": f"{user}@{DOMAIN}"})


# -- MariaDB (the clusterer table) ------------------------------------------------------------------

def mariadb_or_skip() -> Any:
    """A PyMySQL connection to root@127.0.0.1:3306/test; skip when MariaDB is down (fail if CI=true)."""
    try:
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test",
                               connect_timeout=3, autocommit=True)
    except Exception as exc:
        reason = f"MariaDB is not reachable at root@127.0.0.1:3306/test: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: .ci/run starts it)", pytrace=False)
        pytest.skip(reason)


@contextmanager
def clusterer_table(rows: list[dict]) -> Iterator[str]:
    """A uniquely named table of the seed's ``clusterer`` shape holding ``rows``; dropped afterwards."""
    conn = mariadb_or_skip()
    name = f"clusterer_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE `{name}` (id INT AUTO_INCREMENT PRIMARY KEY, cluster_id INT NOT NULL, "
                "node_id INT NOT NULL, url VARCHAR(64) NOT NULL, state INT NOT NULL DEFAULT 1, "
                "no_ping_retries INT NOT NULL DEFAULT 3, priority INT NOT NULL DEFAULT 50, "
                "sip_addr VARCHAR(64), flags VARCHAR(64), description VARCHAR(64))")
            for r in rows:
                cur.execute(f"INSERT INTO `{name}` (cluster_id, node_id, url, state, no_ping_retries, priority, "
                            "sip_addr, flags, description) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            (r["cluster_id"], r["node_id"], r["url"], r["state"], r["no_ping_retries"],
                             r["priority"], r["sip_addr"], r["flags"], r["description"]))
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")
        conn.close()


# -- nodes --------------------------------------------------------------------------------------------

def node_row(node_id: int, ip: str, description: str) -> dict:
    """A row of the seed's clusterer table (without ``id``)."""
    return {"cluster_id": 1, "node_id": node_id, "url": f"bin:{ip}:{BIN_PORT}", "state": 1,
            "no_ping_retries": NO_PING_RETRIES, "priority": 50, "sip_addr": sip_addr(ip), "flags": "seed",
            "description": description}


ROWS = [node_row(1, X_IP, "X"), node_row(2, Y_IP, "Y")]


def node_config(route: str, ip: str, node_id: int | None, *, store_url: str | None = None,
                collection: str = "userlocation", rows: list[dict] | None = None,
                db_table: str | None = None) -> dict[str, dict[str, Any]]:
    """The TOML sections of one node running ``routes/<route>.py``."""
    config: dict[str, dict[str, Any]] = {
        "node": {"domains": [DOMAIN], "route": str(REPO / "routes" / f"{route}.py")},
        "registrar": {"use_domain": True, "min_expires": 1},
        "route_params": {"freeswitch": [FREESWITCH_IP], "cluster_id": 1, "domain": DOMAIN, "private_ip": sip_addr(ip),
                         "collection": collection},
    }
    if node_id is not None:
        cluster: dict[str, Any] = {"my_node_id": node_id, "cluster_id": 1, "ping_interval": PING_INTERVAL,
                                   "ping_timeout": PING_TIMEOUT, "seed_fallback_interval": 0.5}
        if db_table is not None:
            cluster.update(db_url="mysql://root@127.0.0.1:3306/test", db_table=db_table)
        else:
            cluster["nodes"] = rows if rows is not None else ROWS
        config["cluster"] = cluster
    if store_url is not None:
        config["federation"] = {"cachedb_url": store_url, **FEDERATION}  # sip_addr: from the node's row
    return config


class Cluster:
    """Nodes X and Y (and whatever a test adds), started and stopped with an ExitStack."""

    def __init__(self, tmp_path: Path, stack: ExitStack) -> None:
        self.tmp_path = tmp_path
        self.stack = stack
        self.nodes: dict[str, EdgeproxyNode] = {}
        self.configs: dict[str, dict] = {}
        self._runs = 0

    def start(self, name: str, ip: str, config: dict[str, dict[str, Any]]) -> EdgeproxyNode:
        self._runs += 1
        node = self.stack.enter_context(edgeproxy_node(self.tmp_path / f"{name}-{self._runs}", host=ip,
                                                       port=SIP_PORT, transports=("udp",), config=config))
        self.nodes[name] = node
        self.configs[name] = config
        return node

    def restart(self, name: str) -> EdgeproxyNode:
        old = self.nodes[name]
        return self.start(name, old.host, self.configs[name])

    def __getitem__(self, name: str) -> EdgeproxyNode:
        return self.nodes[name]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_sipp()
    with ExitStack() as stack:
        yield Cluster(tmp_path, stack)


def wait_peers_up(x: EdgeproxyNode, y: EdgeproxyNode) -> None:
    wait_log(x, r"cluster 1: node 2 is UP")
    wait_log(y, r"cluster 1: node 1 is UP")


# -- SIPp roles ---------------------------------------------------------------------------------------

def freeswitch(tmp_path: Path) -> Sipp:
    return Sipp(tmp_path / "freeswitch", "udp", local_ip=FREESWITCH_IP)


@contextmanager
def phone(tmp_path: Path, node: EdgeproxyNode, user: str, *, ip: str = PHONE_IPS[0],
          expires: int = 300) -> Iterator[SippProcess]:
    """A phone on ``ip``: REGISTER ``user@DOMAIN`` to ``node``, then answer calls until the block ends."""
    p = register_phone(Sipp(tmp_path / f"phone-{user}", "udp", local_ip=ip), node.address, user, expires=expires,
                       keys={"domain": DOMAIN})
    try:
        yield p
    finally:
        p.stop()


def unregister(phone_process: SippProcess, node: EdgeproxyNode, user: str) -> str:
    """REGISTER the phone's Contact with Expires: 0 from its address; returns the status line."""
    contact = f"<sip:{user}@{phone_process.host}:{phone_process.port};transport=UDP>"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((phone_process.host, 0))
        s.settimeout(3.0)
        port = s.getsockname()[1]
        s.sendto((f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP {phone_process.host}:{port};branch=z9hG4bK-unreg{port};rport\r\n"
                  f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag=unreg\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
                  f"Call-ID: unreg-{port}@{phone_process.host}\r\nCSeq: 1 REGISTER\r\nContact: {contact}\r\n"
                  "Expires: 0\r\nContent-Length: 0\r\n\r\n").encode(), (node.host, node.port))
        while True:
            reply = s.recv(65535).decode("utf-8", "replace")
            if not reply.startswith("SIP/2.0 1"):
                return reply.split("\r\n", 1)[0]


def call(fs: Sipp, node: EdgeproxyNode, user: str, scenario: str = "uac_call", **keys: Any) -> tuple[SippResult, float]:
    """One call from FreeSWITCH to ``user@DOMAIN`` via ``node``; (result, seconds it took)."""
    started = time.monotonic()
    result = fs.run(scenario, node.address, user=user, duration_ms=100, timeout=15,
                    keys={"domain": DOMAIN, **keys})
    return result, time.monotonic() - started


def statuses(result: SippResult) -> list[int]:
    return [m.status for m in result.received() if m.status is not None]


def received_invite(phone_process: SippProcess) -> Any:
    return phone_process.wait_for_message(r"^INVITE ", timeout=10)


def route_hosts(values: list[str]) -> list[str]:
    """The hosts of Record-Route / Route header values, in order."""
    return re.findall(r"<sip:([0-9.]+)[:;>]", ",".join(values))


# -- federated (cluster_check_addr + global lookup) ------------------------------------------------------

def start_federated(cluster: Cluster, target: mongo_server.MongoTarget,
                    collection: str) -> tuple[EdgeproxyNode, EdgeproxyNode]:
    url = target.url(collection)
    x = cluster.start("X", X_IP, node_config("federated", X_IP, 1, store_url=url, collection=collection))
    y = cluster.start("Y", Y_IP, node_config("federated", Y_IP, 2, store_url=url, collection=collection))
    wait_peers_up(x, y)
    return x, y


def test_federated_call_via_the_other_node_and_directly(cluster: Cluster, target, collection, tmp_path: Path) -> None:
    x, y = start_federated(cluster, target, collection)
    fs = freeswitch(tmp_path)
    with phone(tmp_path, x, "alice") as alice:
        # exactly one record, home X, while she is registered
        docs = wait_until("alice's record", lambda: records_for(target, collection, "alice"))
        assert [(d["aor"], d["home_ip"], d["_id"]) for d in docs] == [
            (f"alice@{DOMAIN}", X_ADDR, f"alice@{DOMAIN}{X_ADDR}")]

        # FreeSWITCH -> Y: global lookup, relayed to X (cluster node: local lookup), X -> alice
        result, _ = call(fs, y, "alice")
        assert result.ok, result.describe()
        invite = received_invite(alice)
        assert route_hosts(invite.header("Record-Route")) == [X_IP, Y_IP]
        assert len(invite.header("Via")) == 3  # FreeSWITCH, Y, X
        ack, bye = result.sent()[1], result.sent()[2]
        assert ack.method == "ACK" and bye.method == "BYE"
        assert route_hosts(ack.header("Route")) == [Y_IP, X_IP] == route_hosts(bye.header("Route"))
        alice.wait_for_message(r"^ACK ", timeout=10)
        alice.wait_for_message(r"^BYE ", timeout=10)
        assert statuses(result)[-2:] == [200, 200]

        # FreeSWITCH -> X: alice is local, no detour
        result2, _ = call(fs, x, "alice")
        assert result2.ok, result2.describe()
        invites = wait_until("a second INVITE at alice",
                             lambda: [m for m in alice.result().messages if m.method == "INVITE"][1:])
        assert route_hosts(invites[0].header("Record-Route")) == [X_IP]
        assert len(invites[0].header("Via")) == 2  # FreeSWITCH, X

        assert len(records_for(target, collection, "alice")) == 1
        assert unregister(alice, x, "alice") == "SIP/2.0 200 OK"
        wait_until("no record for alice after un-registering", lambda: not records_for(target, collection, "alice"))

        # nobody has alice now: Y answers 404 (the seed's "Not Found")
        result3, _ = call(fs, y, "alice", scenario="uac_expect", expect_code=404)
        assert result3.ok, result3.describe()


def test_federated_record_goes_when_the_registration_expires(cluster: Cluster, target, collection,
                                                              tmp_path: Path) -> None:
    x, _ = start_federated(cluster, target, collection)
    with phone(tmp_path, x, "carol", expires=2, ip=PHONE_IPS[1]):
        docs = wait_until("carol's record", lambda: records_for(target, collection, "carol"))
        assert len(docs) == 1 and docs[0]["home_ip"] == X_ADDR
        registered = time.monotonic()
        wait_until("carol's record to go with her binding", lambda: not records_for(target, collection, "carol"),
                   timeout=6)
        assert time.monotonic() - registered < 4.0


# -- redirect (cache_raw_query + 302) ------------------------------------------------------------------

def test_redirect_302_to_the_home_node_and_405_for_nobody(cluster: Cluster, target, collection, tmp_path: Path) -> None:
    url = target.url(collection)
    x = cluster.start("X", X_IP, node_config("redirect", X_IP, 1, store_url=url, collection=collection))
    y = cluster.start("Y", Y_IP, node_config("redirect", Y_IP, 2, store_url=url, collection=collection))
    wait_peers_up(x, y)
    fs = freeswitch(tmp_path)
    with phone(tmp_path, x, "alice") as alice:
        wait_until("alice's record", lambda: records_for(target, collection, "alice"))
        result, _ = call(fs, y, "alice", scenario="uac_redirect")
        assert result.ok, result.describe()
        redirect = [m for m in result.received() if m.status == 302]
        assert len(redirect) == 1 and redirect[0].header("Contact") == [f"<sip:alice@{X_ADDR}>"]
        invites = [m for m in result.sent() if m.method == "INVITE"]
        assert [i.first_line for i in invites] == [f"INVITE sip:alice@{DOMAIN} SIP/2.0",
                                                   f"INVITE sip:alice@{X_ADDR} SIP/2.0"]
        # Y left the signalling path: alice's INVITE came through X alone
        invite = received_invite(alice)
        assert route_hosts(invite.header("Record-Route")) == [X_IP]
        assert len(invite.header("Via")) == 2
        alice.wait_for_message(r"^BYE ", timeout=10)
        assert statuses(result)[-2:] == [200, 200]

        # registered nowhere: 405 so FreeSWITCH does not retry
        nobody, _ = call(fs, y, "nobody", scenario="uac_expect", expect_code=405)
        assert nobody.ok, nobody.describe()


# -- serialized failover (no cluster, no store) -----------------------------------------------------------

def test_serialized_failover_reaches_the_user_wherever_registered(cluster: Cluster, tmp_path: Path) -> None:
    x = cluster.start("X", X_IP, node_config("failover", X_IP, None))
    y = cluster.start("Y", Y_IP, node_config("failover", Y_IP, None))
    fs = freeswitch(tmp_path)
    with phone(tmp_path, y, "alice") as alice, phone(tmp_path, x, "bob", ip=PHONE_IPS[1]) as bob:
        # alice is on Y: X answers 404 (one hop), the bridge tries Y
        result, _ = call(fs, x, "alice", scenario="uac_failover", next_host=Y_IP, next_port=SIP_PORT)
        assert result.ok, result.describe()
        assert statuses(result).count(404) == 1
        assert [m.first_line.split(" ")[0] for m in result.sent()] == ["INVITE", "ACK", "INVITE", "ACK", "BYE"]
        alice.wait_for_message(r"^BYE ", timeout=10)
        # bob is on X: no 404 at all
        result, _ = call(fs, x, "bob", scenario="uac_failover", next_host=Y_IP, next_port=SIP_PORT)
        assert result.ok, result.describe()
        assert statuses(result).count(404) == 0
        bob.wait_for_message(r"^BYE ", timeout=10)


# -- faults ------------------------------------------------------------------------------------------------

#: How long after a SIGKILL a peer may take to be declared down: no_ping_retries x ping_interval (the
#: issue's bound; the kernel closes the dead node's link at once, so it is really no_ping_retries x
#: ping_timeout after the first refused reconnection), plus slack for scheduling and log polling.
DOWN_WITHIN = NO_PING_RETRIES * PING_INTERVAL + 0.5


def test_killed_node_is_marked_down_and_skipped_then_restart_drops_its_stale_records(
        cluster: Cluster, target, collection, tmp_path: Path) -> None:
    x, y = start_federated(cluster, target, collection)
    fs = freeswitch(tmp_path)
    with phone(tmp_path, x, "alice"):
        wait_until("alice's record", lambda: records_for(target, collection, "alice"))
        mark = len(y.log())
        killed = time.monotonic()
        x.kill()
        down = wait_log(y, r"cluster 1: node 1 is DOWN", timeout=10, after=mark) - killed
        assert down <= DOWN_WITHIN, f"Y took {down:.2f} s to mark X down"
        print(f"\nX marked down by Y {down:.3f} s after SIGKILL")

        # the record is stale (X died without unpublishing) but Y skips the dead node: an answer at
        # once, not a transaction timeout
        assert [d["home_ip"] for d in records_for(target, collection, "alice")] == [X_ADDR]
        result, took = call(fs, y, "alice", scenario="uac_expect", expect_code=404)
        assert result.ok, result.describe()
        assert took < 3.0, f"404 took {took:.2f} s"
        print(f"global lookup of a user on a dead node: 404 in {took:.3f} s (SIPp run included)")

        # X comes back after a crash: its leftovers are deleted at start-up
        x2 = cluster.restart("X")
        wait_until("X's stale record deleted on restart", lambda: not records_for(target, collection, "alice"))
        wait_log(y, r"cluster 1: node 1 is UP", after=mark)
        wait_log(x2, r"cluster 1: node 2 is UP")
        # alice's phone still thinks it is registered; X has forgotten her: nobody has her
        result, _ = call(fs, y, "alice", scenario="uac_expect", expect_code=404)
        assert result.ok, result.describe()


def test_call_in_flight_to_a_node_that_hangs_ends_with_480_when_it_is_marked_down(
        cluster: Cluster, target, collection, tmp_path: Path) -> None:
    """X stops answering (SIGSTOP: no FIN, no RST, just silence) right before FreeSWITCH calls alice
    through Y: Y relays to X while X still counts as up, and the branch must end when Y declares X
    down -- not when timer C / B fire (4 s here, 32 s with the default T1)."""
    x, y = start_federated(cluster, target, collection)
    fs = freeswitch(tmp_path)
    with phone(tmp_path, x, "alice"):
        wait_until("alice's record", lambda: records_for(target, collection, "alice"))
        mark = len(y.log())
        os.kill(x.pid, signal.SIGSTOP)
        try:
            result, took = call(fs, y, "alice", scenario="uac_expect", expect_code=480)
        finally:
            x.kill()  # SIGKILL works on a stopped process
        assert result.ok, result.describe()
        assert "cluster 1: node 1 is DOWN" in y.log()[mark:]
        # silence is noticed within ping_interval + (no_ping_retries + 1) * ping_timeout
        assert took < PING_INTERVAL + (NO_PING_RETRIES + 1) * PING_TIMEOUT + 1.0, f"480 took {took:.2f} s"
        print(f"\ncall in flight to a hung node: 480 after {took:.3f} s (SIPp run included)")


def test_store_down_local_calls_work_global_lookups_fail_fast_and_records_come_back(
        cluster: Cluster, target, collection, tmp_path: Path) -> None:
    if not target.restartable:
        pytest.skip("MONGO_URI points at a server these tests cannot stop and restart")
    x, y = start_federated(cluster, target, collection)
    fs = freeswitch(tmp_path)
    with phone(tmp_path, x, "alice") as alice:
        wait_until("alice's record", lambda: records_for(target, collection, "alice"))
        target.server.stop()
        try:
            # a local call: the global lookup finds alice in X's memory; the store's failure only
            # costs its lookup_timeout
            local, took_local = call(fs, x, "alice")
            assert local.ok, local.describe()
            alice.wait_for_message(r"^BYE ", timeout=10)
            # a global lookup on Y fails fast: -3 -> 503 with Retry-After, not the 404 of "nobody has her"
            remote, took_remote = call(fs, y, "alice", scenario="uac_expect", expect_code=503)
            assert remote.ok, remote.describe()
            assert retry_after(remote) == ["5"]
            assert took_remote < 3.0, f"the failed global lookup took {took_remote:.2f} s"
            print(f"\nstore down: local call complete in {took_local:.3f} s, "
                  f"global lookup failed (503) in {took_remote:.3f} s (SIPp runs included)")
        finally:
            restarted = time.monotonic()
            target.server.start()  # same port, empty: a store that lost its data
        docs = wait_until("alice's record re-published", lambda: records_for(target, collection, "alice"), timeout=15)
        print(f"store restarted empty: alice's record back {time.monotonic() - restarted:.2f} s after the restart "
              "began (the server's own start-up included)")
        assert [d["home_ip"] for d in docs] == [X_ADDR]
        # X's re-published record is in the store, but Y's own client may still be reconnecting: until
        # it is, Y answers the global lookup with the fast 503 + Retry-After asserted above, which is
        # right. A bounded number of tries (Retry-After is 5 s; the store client retries every ~1 s).
        for _ in range(10):
            result, _ = call(fs, y, "alice")
            if result.ok or retry_after(result) != ["5"]:
                break
            time.sleep(1.0)
        assert result.ok, result.describe()


def retry_after(result: SippResult) -> list[str]:
    """The Retry-After values of the final response(s) a SIPp call got."""
    return [v for m in result.received() if m.status is not None and m.status >= 300 for v in m.header("Retry-After")]


def test_store_that_hangs_gives_503_with_retry_after_within_the_lookup_timeout_then_calls_resume(
        cluster: Cluster, target, collection, tmp_path: Path) -> None:
    """The store stops answering (SIGSTOP: connections open, no reply) -- the way a store under
    overload or a long pause looks to the nodes. A call for a user registered on the other node must
    end within the lookup timeout (0.5 s here) as 503 + Retry-After ("this node cannot ask now"), never
    as 404 ("nobody has this user"); a call for a local user still goes through; once the store
    answers again, the same nodes route through it again (no wedged client)."""
    if not target.restartable:
        pytest.skip("MONGO_URI points at a server these tests cannot freeze")
    x, y = start_federated(cluster, target, collection)
    fs = freeswitch(tmp_path)
    with phone(tmp_path, x, "alice") as alice:
        wait_until("alice's record", lambda: records_for(target, collection, "alice"))
        warm, _ = call(fs, y, "alice")
        assert warm.ok, warm.describe()
        alice.wait_for_message(r"^BYE ", timeout=10)
        mark = len(y.log())
        with target.server.stalled():
            remote, took = call(fs, y, "alice", scenario="uac_expect", expect_code=503)
            assert remote.ok, remote.describe()
            assert retry_after(remote) == ["5"]
            assert 404 not in statuses(remote)
            assert took < 0.5 + 1.5, f"503 took {took:.2f} s against a lookup timeout of 0.5 s"
            local, took_local = call(fs, x, "alice")  # X: alice is in its memory, the store only costs its timeout
            assert local.ok, local.describe()
        assert "store failed" in y.log()[mark:]
        thawed = time.monotonic()

        def through_y() -> bool:
            result, _ = call(fs, y, "alice", scenario="uac_call")
            return result.ok

        wait_until("a call through Y after the store answers again", through_y, timeout=15, step=0.2)
        print(f"\nstore hung: Y answered 503 in {took:.3f} s, X completed the local call in {took_local:.3f} s "
              f"(SIPp runs included); calls through Y again {time.monotonic() - thawed:.2f} s after the thaw")


# -- the node table in MariaDB; admission to the cluster link ------------------------------------------------

def test_node_table_in_mariadb_and_a_node_not_in_it_cannot_join(cluster: Cluster, target, collection,
                                                                 tmp_path: Path) -> None:
    url = target.url(collection)
    with clusterer_table(ROWS) as table:
        # X and Y read the seed's table from MariaDB; [federation] names no sip_addr: it is the row's
        x = cluster.start("X", X_IP, node_config("federated", X_IP, 1, store_url=url, collection=collection,
                                                 db_table=table))
        y = cluster.start("Y", Y_IP, node_config("federated", Y_IP, 2, store_url=url, collection=collection,
                                                 db_table=table))
        wait_peers_up(x, y)
        # Z believes it is node 3 of cluster 1 (its own rows say so), but X's and Y's table does not list it
        z_rows = [*ROWS, node_row(3, Z_IP, "Z, not in the real table")]
        z = cluster.start("Z", Z_IP, node_config("federated", Z_IP, 3, rows=z_rows))
        wait_log(x, rf"cluster: refused link from {re.escape(Z_IP)}: not the address of a listed node")
        wait_log(y, rf"cluster: refused link from {re.escape(Z_IP)}: not the address of a listed node")
        time.sleep(4 * PING_INTERVAL)
        assert "is UP" not in z.log(), z.log()[-2000:]
        assert "node 3" not in x.log() and "node 3" not in y.log()

        # the store records carry the sip_addr read from MariaDB
        fs = freeswitch(tmp_path)
        with phone(tmp_path, x, "alice") as alice:
            docs = wait_until("alice's record", lambda: records_for(target, collection, "alice"))
            assert [d["home_ip"] for d in docs] == [X_ADDR]
            result, _ = call(fs, y, "alice")
            assert result.ok, result.describe()
            alice.wait_for_message(r"^BYE ", timeout=10)


# -- twistd with [federation] ----------------------------------------------------------------------------

def test_cluster_node_with_a_store_starts_under_twistd_even_if_its_route_imports_the_reactor(
        cluster: Cluster, target, collection, tmp_path: Path) -> None:
    """The plugin must install the asyncio reactor before it imports the route module: a route that
    does ``from twisted.internet import reactor`` at module level (plain Twisted style) used to
    install the default reactor first, and the node refused to start."""
    route = tmp_path / "reactor_route.py"
    route.write_text("from twisted.internet import reactor  # module level, as Twisted code does\n\n"
                     "from edgeproxy_routes.federated import request_route  # noqa: F401\n")
    config = node_config("federated", X_IP, 1, store_url=target.url(collection), collection=collection)
    config["node"]["route"] = str(route)
    x = cluster.start("X", X_IP, config)
    assert "reactor class: twisted.internet.asyncioreactor.AsyncioSelectorReactor" in x.log()
    with phone(tmp_path, x, "alice"):
        docs = wait_until("alice's record", lambda: records_for(target, collection, "alice"))
        assert [d["home_ip"] for d in docs] == [X_ADDR]
