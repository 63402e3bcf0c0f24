"""Clusters talking over real sockets on loopback (127.0.0.11, .12, .13 -- all of 127/8 is local).

Short timings (ping_interval 0.2 s, ping_timeout 0.1 s, 3 retries) keep the tests fast; every test
stops what it started, so the reactor is left clean.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import pytest_twisted
from support.ports import free_port
from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionClosed
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols import amp

from edgeproxy.cluster import Cluster, LinkState, NodeInfo
from edgeproxy.cluster.link import Ping, PingRefused

A, B, C = "127.0.0.11", "127.0.0.12", "127.0.0.13"
INTERVAL, TIMEOUT, RETRIES = 0.2, 0.1, 3
FAST = dict(ping_interval=INTERVAL, ping_timeout=TIMEOUT, seed_fallback_interval=0.3)


def table(port: int, hosts=(A, B), *, flags=("seed", "seed"), cluster_id: int = 1,
          first_id: int = 1, **extra) -> list[NodeInfo]:
    return [NodeInfo(cluster_id, first_id + i, f"bin:{h}:{port}", no_ping_retries=RETRIES, sip_addr=h,
                     flags=flags[i] if i < len(flags) else None, **extra.get(i, {}))
            for i, h in enumerate(hosts)]


class Logs:
    """Collects formatted edgeproxy.cluster log lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict) -> None:
        if event.get("log_namespace") == "edgeproxy.cluster":
            self.lines.append(formatEvent(event))

    def has(self, *words: str) -> bool:
        return any(all(w in line for w in words) for line in self.lines)


@pytest.fixture
def logs():
    collector = Logs()
    globalLogPublisher.addObserver(collector)
    yield collector
    globalLogPublisher.removeObserver(collector)


@pytest.fixture
def running():
    """Start clusters through this; everything still running is stopped after the test."""
    started: list[Cluster] = []

    async def start(*clusters: Cluster) -> None:
        for c in clusters:
            started.append(c)
            await c.start()

    yield start
    pytest_twisted.blockon(_stop_all(started))


def _stop_all(clusters: list[Cluster]):
    from twisted.internet.defer import DeferredList
    return DeferredList([c.stop() for c in clusters])


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> float:
    """Poll every 10 ms; returns the seconds waited, fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await task.deferLater(reactor, 0.01, lambda: None)
    return time.monotonic() - start


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


def all_up(*clusters: Cluster) -> Callable[[], bool]:
    return lambda: all(c.is_up(n.node_id) for c in clusters for n in c.nodes())


@pytest_twisted.ensureDeferred
async def test_two_nodes_come_up_and_see_each_other(running, logs) -> None:
    port = free_port(A, B)
    rows = table(port)
    a, b = Cluster(reactor, 1, rows, **FAST), Cluster(reactor, 2, rows, **FAST)
    await running(a, b)
    await wait_until(all_up(a, b), 2.0, "both up")
    assert [n.node_id for n in a.up_nodes(1)] == [2] and [n.node_id for n in b.up_nodes()] == [1]
    assert a.link_state(2) is LinkState.UP
    assert logs.has("cluster 1: node 2 is UP") and logs.has("cluster 1: node 1 is UP")
    # routes' view, with the real addresses
    assert a.cluster_check_addr(1, B) and not a.cluster_check_addr(1, A)
    # the heartbeat keeps them up across several intervals
    await sleep(4 * INTERVAL)
    assert a.is_up(2) and b.is_up(1)
    assert not logs.has("DOWN")


@pytest_twisted.ensureDeferred
async def test_stopped_node_is_marked_down_then_up_again_after_restart(running, logs) -> None:
    port = free_port(A, B)
    rows = table(port)
    a, b = Cluster(reactor, 1, rows, **FAST), Cluster(reactor, 2, rows, **FAST)
    events: list[tuple[int, bool]] = []
    a.subscribe(lambda node_id, up: events.append((node_id, up)))
    await running(a, b)
    await wait_until(all_up(a, b), 2.0, "both up")

    await b.stop()
    waited = await wait_until(lambda: not a.is_up(2), 2.0, "node 2 down")
    assert waited <= RETRIES * INTERVAL + 0.2, waited
    assert logs.has("cluster 1: node 2 is DOWN")
    assert events == [(2, True), (2, False)]
    assert a.up_nodes() == ()

    b2 = Cluster(reactor, 2, rows, **FAST)
    await running(b2)
    await wait_until(all_up(a, b2), 2.0, "node 2 back")
    assert events == [(2, True), (2, False), (2, True)]


NODE_SCRIPT = """
import sys
from twisted.internet import reactor
from edgeproxy.cluster import Cluster, NodeInfo
port, retries, interval, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rows = [NodeInfo(1, 1, f"bin:127.0.0.11:{port}", no_ping_retries=retries, sip_addr="127.0.0.11", flags="seed"),
        NodeInfo(1, 2, f"bin:127.0.0.12:{port}", no_ping_retries=retries, sip_addr="127.0.0.12", flags="seed")]
node = Cluster(reactor, 2, rows, ping_interval=interval, ping_timeout=timeout)
reactor.callWhenRunning(node.start)
reactor.run()
"""


@pytest_twisted.ensureDeferred
async def test_hung_node_is_down_after_the_retries_and_up_when_it_resumes(running, logs) -> None:
    """Node 2 runs in its own process; SIGSTOP freezes it with its sockets open (TCP still
    accepts, nothing answers): node 1 declares it down after (retries + 1) * ping_timeout past the
    first unanswered ping. SIGCONT: it answers again and is up."""
    port = free_port(A, B)
    a = Cluster(reactor, 1, table(port), **FAST)
    await running(a)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(port), str(RETRIES), str(INTERVAL),
                             str(TIMEOUT)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_until(lambda: a.is_up(2) or proc.poll() is not None, 15.0, "node 2 process up")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGSTOP)
        waited = await wait_until(lambda: not a.is_up(2), 5.0, "hung node 2 down")
        assert waited <= INTERVAL + (RETRIES + 1) * TIMEOUT + 0.3, waited
        assert logs.has("node 2 not answering, retrying")
        assert logs.has("cluster 1: node 2 is DOWN")
        await sleep(2 * INTERVAL)
        assert not a.is_up(2)  # re-probes go unanswered too
        os.kill(proc.pid, signal.SIGCONT)
        await wait_until(lambda: a.is_up(2), 5.0, "node 2 up again")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


@pytest_twisted.ensureDeferred
async def test_three_nodes_one_stops(running, logs) -> None:
    port = free_port(A, B, C)
    rows = table(port, (A, B, C), flags=("seed",))
    a, b, c = (Cluster(reactor, i, rows, **FAST) for i in (1, 2, 3))
    await running(a, b, c)
    await wait_until(all_up(a, b, c), 2.0, "all up")
    assert [n.node_id for n in a.up_nodes()] == [2, 3]
    assert c.cluster_check_addr(1, A) and c.cluster_check_addr(1, B) and not c.cluster_check_addr(1, C)

    await c.stop()
    await wait_until(lambda: not a.is_up(3) and not b.is_up(3), RETRIES * INTERVAL + 0.2, "node 3 down")
    assert a.is_up(2) and b.is_up(1)
    assert [n.node_id for n in b.up_nodes(1)] == [1]


@pytest_twisted.ensureDeferred
async def test_seed_falls_back_and_non_seed_syncs_from_it(running, logs) -> None:
    port = free_port(A, B)
    rows = table(port, flags=("seed", None))
    a, b = Cluster(reactor, 1, rows, **FAST), Cluster(reactor, 2, rows, **FAST)
    await running(a, b)
    await wait_until(lambda: a.is_synced(1) and b.is_synced(1), 2.0, "both synced")
    assert logs.has("seed node 1 falls back to synced")
    assert logs.has("synced from donor node 1")
    assert not logs.has("seed node 2")


@pytest_twisted.ensureDeferred
async def test_non_seeds_alone_never_sync(running) -> None:
    port = free_port(A, B)
    rows = table(port, flags=(None, None))
    a, b = Cluster(reactor, 1, rows, **FAST), Cluster(reactor, 2, rows, **FAST)
    await running(a, b)
    await wait_until(all_up(a, b), 2.0, "both up")
    await sleep(0.5)
    assert not a.is_synced(1) and not b.is_synced(1)


@pytest_twisted.ensureDeferred
async def test_node_in_two_clusters(running) -> None:
    port = free_port(A, B, C)
    rows = table(port, (A, B)) + [NodeInfo(2, 1, f"bin:{A}:{port}"), NodeInfo(2, 3, f"bin:{C}:{port}", sip_addr=C)]
    a, b = Cluster(reactor, 1, rows, **FAST), Cluster(reactor, 2, rows, **FAST)
    c = Cluster(reactor, 3, rows, **FAST)
    await running(a, b, c)
    await wait_until(all_up(a, b, c), 2.0, "all up")
    assert [n.node_id for n in a.up_nodes(1)] == [2]
    assert [n.node_id for n in a.up_nodes(2)] == [3]
    assert [n.node_id for n in a.up_nodes()] == [2, 3]
    assert b.clusters == (1,) and b.nodes() == (rows[0],)  # node 2 only knows cluster 1
    assert a.cluster_check_addr(2, C) and not a.cluster_check_addr(1, C)
    assert not a.is_up(3, cluster_id=1) and a.is_up(3, cluster_id=2)


# -- admission ------------------------------------------------------------------------------------


async def _client_from(source_ip: str, port: int, host: str = A) -> amp.AMP:
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=2, bindAddress=(source_ip, 0))
    return await connectProtocol(endpoint, amp.AMP())


async def _closed(proto: amp.AMP, timeout: float = 2.0) -> None:
    await wait_until(lambda: proto.transport is None or not proto.transport.connected, timeout,
                     "connection closed")


@pytest_twisted.ensureDeferred
async def test_unlisted_peer_is_refused_and_logged(running, logs) -> None:
    port = free_port(A, B)
    a = Cluster(reactor, 1, table(port), **FAST)
    await running(a)
    client = await _client_from("127.0.0.99", port)
    with pytest.raises((ConnectionClosed, PingRefused)):
        await client.callRemote(Ping, cluster_id=1, node_id=2, to_node_id=1)
    await _closed(client)
    assert logs.has("refused link from 127.0.0.99", "not the address of a listed node")
    assert not a.is_up(2)
    assert a._inbound == set()


@pytest.mark.parametrize("claim, problem", [
    (dict(cluster_id=1, node_id=3, to_node_id=1), "node 3 is bin:127.0.0.13"),
    (dict(cluster_id=1, node_id=9, to_node_id=1), "node 9 is not listed in cluster 1"),
    (dict(cluster_id=1, node_id=1, to_node_id=1), "claims this node's own id"),
    (dict(cluster_id=1, node_id=2, to_node_id=5), "addressed to node 5"),
    (dict(cluster_id=4, node_id=2, to_node_id=1), "not in cluster 4"),
    (dict(cluster_id=1, node_id=4, to_node_id=1), "node 4 is disabled"),
])
@pytest_twisted.ensureDeferred
async def test_listed_ip_with_a_wrong_claim_is_refused(running, logs, claim, problem) -> None:
    port = free_port(A, B, C)
    rows = table(port, (A, B, C)) + [NodeInfo(1, 4, f"bin:{B}:{port + 1}", state=0)]
    a = Cluster(reactor, 1, rows, **FAST)
    await running(a)
    client = await _client_from(B, port)  # B is node 2's address
    with pytest.raises(PingRefused) as info:
        await client.callRemote(Ping, **claim)
    assert problem in str(info.value)
    await _closed(client)
    assert logs.has("refused ping from 127.0.0.12", problem)
    assert not a.is_up(2) and not a.is_up(3)


@pytest_twisted.ensureDeferred
async def test_genuine_ping_is_answered_with_a_pong(running) -> None:
    port = free_port(A, B)
    a = Cluster(reactor, 1, table(port), **FAST)
    await running(a)
    client = await _client_from(B, port)
    answer = await client.callRemote(Ping, cluster_id=1, node_id=2, to_node_id=1)
    assert answer == {"node_id": 1, "synced": False}
    client.transport.loseConnection()
    await _closed(client)


@pytest_twisted.ensureDeferred
async def test_a_url_answered_by_the_wrong_node_does_not_make_it_up(running, logs) -> None:
    """Node 1 thinks node 2 is at B; what answers there is a node that calls itself node 7."""
    port = free_port(A, B)
    rows_a = table(port)
    rows_impostor = [NodeInfo(1, 1, f"bin:{A}:{port}"), NodeInfo(1, 7, f"bin:{B}:{port}")]
    a = Cluster(reactor, 1, rows_a, **FAST)
    impostor = Cluster(reactor, 7, rows_impostor, **FAST)
    await running(a, impostor)
    await wait_until(lambda: logs.has("refused ping", "addressed to node 2")
                     or logs.has("answered as node 7"), 2.0, "refusal")
    await sleep(3 * INTERVAL)
    assert not a.is_up(2) and not impostor.is_up(1)


@pytest_twisted.ensureDeferred
async def test_silent_listener_never_comes_up(running, logs) -> None:
    """Something accepts TCP on node 2's url but never answers: node 2 stays down."""
    port = free_port(A, B)
    sink = reactor.listenTCP(port, Factory.forProtocol(Protocol), interface=B)
    try:
        a = Cluster(reactor, 1, table(port), **FAST)
        await running(a)
        await sleep(INTERVAL + (RETRIES + 2) * TIMEOUT)
        assert not a.is_up(2)
        assert logs.has("cluster 1: node 2 not reachable at bin:127.0.0.12")
        assert a.link_state(2) in (LinkState.DOWN, LinkState.PROBING, LinkState.RETRYING)
    finally:
        await a.stop()
        await sink.stopListening()


@pytest_twisted.ensureDeferred
async def test_stop_closes_everything_and_start_twice_is_harmless(running) -> None:
    port = free_port(A, B)
    rows = table(port)
    a, b = Cluster(reactor, 1, rows, **FAST), Cluster(reactor, 2, rows, **FAST)
    await running(a, b)
    await a.start()
    await wait_until(all_up(a, b), 2.0, "both up")
    await a.stop()
    assert not a.running and a.listening_port is None and a._inbound == set()
    assert all(p.link is None for p in a._links.values())
    assert not a.is_up(1) and not a.is_up(2) and a.up_nodes() == ()
    await a.stop()  # idempotent
    await a.start()  # the same object starts again, from scratch
    assert a.link_state(2) in (LinkState.PROBE, LinkState.PROBING)
    await wait_until(all_up(a, b), 2.0, "both up again")
    await a.stop()
    await b.stop()


@pytest_twisted.ensureDeferred
async def test_port_in_use_fails_start(running) -> None:
    port = free_port(A, B)
    blocker = reactor.listenTCP(port, Factory.forProtocol(Protocol), interface=A)
    try:
        a = Cluster(reactor, 1, table(port), **FAST)
        with pytest.raises(Exception, match="[Aa]ddress already in use|CannotListen"):
            await a.start()
        assert not a.running
    finally:
        await blocker.stopListening()


@pytest_twisted.ensureDeferred
async def test_subscriber_errors_are_logged_not_raised(running, logs) -> None:
    port = free_port(A, B)
    rows = table(port)
    a, b = Cluster(reactor, 1, rows, **FAST), Cluster(reactor, 2, rows, **FAST)

    def broken(node_id: int, up: bool) -> Any:
        raise RuntimeError("subscriber bug")

    seen: list[tuple[int, bool]] = []
    a.subscribe(broken)
    unsubscribe = a.subscribe(lambda n, up: seen.append((n, up)))
    await running(a, b)
    await wait_until(all_up(a, b), 2.0, "both up")
    assert seen == [(2, True)]
    assert logs.has("subscriber", "raised")
    unsubscribe()
    await b.stop()
    await wait_until(lambda: not a.is_up(2), 2.0, "node 2 down")
    assert seen == [(2, True)]


@pytest_twisted.ensureDeferred
async def test_refusals_are_logged_at_most_once_per_interval_per_source(running, logs, monkeypatch) -> None:
    import edgeproxy.cluster.admission as cluster_module
    monkeypatch.setattr(cluster_module, "REFUSAL_LOG_INTERVAL", 0.3)
    port = free_port(A, B)
    a = Cluster(reactor, 1, table(port), **FAST)
    await running(a)
    for _ in range(3):
        client = await _client_from("127.0.0.99", port)
        await _closed(client)
    assert sum("127.0.0.99" in line for line in logs.lines) == 1
    await sleep(0.35)
    client = await _client_from("127.0.0.99", port)
    await _closed(client)
    assert logs.has("refused link from 127.0.0.99", "(2 more refusals not logged)")
    client = await _client_from("127.0.0.98", port)  # another source has its own budget
    await _closed(client)
    assert logs.has("refused link from 127.0.0.98")


@pytest_twisted.ensureDeferred
async def test_an_acknowledged_chunk_fires_once_the_peer_handled_it(running) -> None:
    """``send_acked`` (a bulk sync's chunks): the Deferred fires after the peer's capability handler
    ran on the data; None without a link to that node."""
    port = free_port(A, B)
    rows = table(port)
    a, b = Cluster(reactor, 1, rows, **FAST), Cluster(reactor, 2, rows, **FAST)
    handled: list[tuple[int, int, str]] = []
    b.register_capability("bulk", lambda c, n, payload: handled.append((c, n, payload)))
    assert a.send_acked(1, 2, "bulk", "early") is None  # not started: no link
    await running(a, b)
    await wait_until(all_up(a, b), 2.0, "both up")
    sent = [a.send_acked(1, 2, "bulk", f"chunk {i} " + "x" * 30_000) for i in range(3)]
    assert all(d is not None for d in sent)
    await sent[0]
    assert len(handled) >= 1 and handled[0][:2] == (1, 1) and handled[0][2].startswith("chunk 0 ")
    await sent[2]
    assert [p.split(" ", 2)[1] for _, _, p in handled] == ["0", "1", "2"]
