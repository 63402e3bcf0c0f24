"""End to end: a pool of three "FreeSWITCH" servers behind ``twistd edgeproxy`` with ``[dispatcher]``.

Over real loopback UDP: three SIPp UAS (``uas_answer.xml``, ``-aa`` so they answer the probes' OPTIONS
200) on 127.0.0.21, .22 and .23, a SIPp caller (``uac_call.xml``) on 127.0.0.1 placing a bounded
number of calls through the node running the shipped ``edgeproxy_routes.failover`` route, whose
``to_freeswitch`` picks a server with ``ds_select_dst(1, alg, "f")`` and moves on with
``ds_next_dst`` on 408/5xx. The node's MI is read with the ``opensips`` package (``ds_list``,
``get_statistics``), as OpenSIPS's tools would.

* round robin: 300 calls, each server gets 100 +- 5;
* weights 1:2:3 (weighted round robin): shares within 5 points of 17/33/50 %;
* hash over the Call-ID: every message of a call (INVITE, ACK, BYE) reaches one server, and each
  server gets some calls;
* one server killed in the middle of a run: every call completes (those sent to it fail over after
  ``freeswitch_timeout``), probing takes it out, new calls skip it; restarted, probing brings it back
  and it gets calls again;
* a server answering 503 is failed over: every call completes on the others.

Every SIPp run is bounded in calls and time; the servers are ended by PID.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.ports import free_port
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, SippProcess, SippResult, edgeproxy_node, require_sipp

try:
    from opensips.mi import OpenSIPSMI
except ImportError:  # pragma: no cover - installed by .[test]; under CI a missing client fails
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("the opensips package is not installed (pip install '.[test]')", allow_module_level=True)

FS = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
ROUTE = "edgeproxy_routes.failover"


class Pool:
    """Three UAS on their own addresses, and the node in front of them."""

    def __init__(self, tmp_path: Path, *, alg: int, weights: tuple[int, ...] = (1, 1, 1),
                 dispatcher: dict[str, Any] | None = None, scenarios: tuple[str, ...] = ("uas_answer",) * 3,
                 route_params: dict[str, Any] | None = None) -> None:
        require_sipp()
        self.tmp = tmp_path
        self.ports = [free_port(h) for h in FS]
        self.scenarios = scenarios
        self.mi_port = free_port()
        rows = [{"setid": 1, "destination": f"sip:{h}:{p}", "weight": w, "attrs": f"fs={h}"}
                for h, p, w in zip(FS, self.ports, weights)]
        self.config = {
            "dispatcher": {"destinations": rows, **(dispatcher or {})},
            # a generous $T_fr_timeout unless a test is about silent servers: on a loaded machine the
            # answers of live ones can queue for a second, and a failover would move calls around
            "route_params": {"freeswitch_algorithm": alg, "freeswitch_timeout": 5, **(route_params or {})},
            "mi": {"listen": f"{LOOPBACK}:{self.mi_port}"},
        }
        self.servers: list[SippProcess] = []
        self.results: dict[str, list[SippResult]] = {h: [] for h in FS}

    def start_server(self, i: int) -> SippProcess:
        sipp = Sipp(self.tmp / f"fs{i}-{len(self.results[FS[i]])}", "udp", local_ip=FS[i])
        keys = {"code": 503, "reason": "Service Unavailable"} if self.scenarios[i] == "uas_reject" else None
        return sipp.start(self.scenarios[i], port=self.ports[i], calls=100_000, timeout=120, extra=["-aa"],
                          keys=keys)

    def __enter__(self) -> "Pool":
        self.servers = [self.start_server(i) for i in range(3)]
        return self

    def stop_server(self, i: int, kill: bool = False) -> None:
        server = self.servers[i]
        if kill and server.running():
            os.kill(server.pid, signal.SIGKILL)
            server.process.wait(5)
        self.results[FS[i]].append(server.stop())

    def __exit__(self, *exc: Any) -> None:
        for i, server in enumerate(self.servers):
            if server.running():
                self.stop_server(i)

    def calls(self, node: EdgeproxyNode, n: int, rate: float = 40, name: str | None = None) -> SippResult:
        return Sipp(self.tmp / "caller", "udp").run("uac_call", node.address, user="bob", calls=n, rate=rate,
                                                     timeout=max(30.0, n / rate * 3), keys={"domain": LOOPBACK},
                                                     name=name)

    def invites(self) -> dict[str, set[str]]:
        """The Call-IDs of the INVITEs each server received (retransmissions counted once)."""
        out: dict[str, set[str]] = {}
        for host, results in self.results.items():
            out[host] = {m.header("Call-ID")[0] for r in results for m in r.received()
                         if m.method == "INVITE"}
        return out

    def mi(self) -> Any:
        return OpenSIPSMI(conn="http", url=f"http://{LOOPBACK}:{self.mi_port}/mi")

    def state(self, host: str) -> str:
        listed = self.mi().execute("ds_list", {"full": 1})
        for dset in listed["PARTITIONS"][0].get("SETS", []):
            for d in dset["Destinations"]:
                if f"@{host}" in d["URI"] or f":{host}:" in d["URI"]:
                    return str(d["state"])
        raise AssertionError(f"{host} not in ds_list: {listed}")


def wait_state(pool: Pool, host: str, state: str, timeout: float) -> float:
    started = time.monotonic()
    while pool.state(host) != state:
        assert time.monotonic() - started < timeout, f"{host} not {state} after {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_round_robin_spreads_300_calls_evenly(tmp_path: Path) -> None:
    with Pool(tmp_path, alg=4) as pool, edgeproxy_node(tmp_path / "node", config=pool.config, transports=("udp",),
                                                        route=ROUTE, log_level="info") as node:
        caller = pool.calls(node, 300)
        caller.assert_ok()
        listed = pool.mi().execute("ds_list", [])
        pool.__exit__()
    assert caller.successful_calls == 300
    counts = {h: len(ids) for h, ids in pool.invites().items()}
    assert all(95 <= n <= 105 for n in counts.values()), counts
    hits = {d["URI"]: d["first_hit_counter"] for d in listed["PARTITIONS"][0]["SETS"][0]["Destinations"]}
    assert sorted(hits.values()) == sorted(counts.values())


def test_weights_1_2_3(tmp_path: Path) -> None:
    with Pool(tmp_path, alg=4, weights=(1, 2, 3)) as pool, \
            edgeproxy_node(tmp_path / "node", config=pool.config, transports=("udp",), route=ROUTE,
                           log_level="info") as node:
        caller = pool.calls(node, 300)
        caller.assert_ok()
        pool.__exit__()
    counts = [len(pool.invites()[h]) for h in FS]
    shares = [100 * n / 300 for n in counts]
    for share, expected in zip(shares, (100 / 6, 200 / 6, 300 / 6)):
        assert abs(share - expected) <= 5, (counts, shares)


def test_hash_over_call_id_keeps_each_call_on_one_server(tmp_path: Path) -> None:
    with Pool(tmp_path, alg=0) as pool, edgeproxy_node(tmp_path / "node", config=pool.config, transports=("udp",),
                                                        route=ROUTE, log_level="info") as node:
        caller = pool.calls(node, 300)
        caller.assert_ok()
        pool.__exit__()
    where: dict[str, set[str]] = {}
    methods: dict[str, Counter[str]] = {}
    for host, results in pool.results.items():
        for r in results:
            for m in r.received():
                if m.method in ("INVITE", "ACK", "BYE"):
                    call_id = m.header("Call-ID")[0]
                    where.setdefault(call_id, set()).add(host)
                    methods.setdefault(call_id, Counter())[m.method] += 1
    assert len(where) == 300
    assert all(len(hosts) == 1 for hosts in where.values()), [c for c, h in where.items() if len(h) > 1][:5]
    assert all(m["INVITE"] >= 1 and m["ACK"] >= 1 and m["BYE"] >= 1 for m in methods.values())
    per_server = Counter(next(iter(h)) for h in where.values())
    assert len(per_server) == 3 and min(per_server.values()) >= 50, per_server  # a hash, not a constant


def test_a_server_stopped_mid_run_is_failed_over_probed_out_and_back(tmp_path: Path) -> None:
    interval, threshold = 1.0, 2
    probing = {"ds_ping_interval": interval, "ds_probing_mode": 1, "ds_probing_threshold": threshold,
               "probe_timeout": 0.5}
    with Pool(tmp_path, alg=4, dispatcher=probing, route_params={"freeswitch_timeout": 1}) as pool, \
            edgeproxy_node(tmp_path / "node", config=pool.config, transports=("udp",), route=ROUTE,
                           log_level="info") as node:
        wait_state(pool, FS[1], "Active", 5)
        background = Sipp(tmp_path / "caller", "udp").start("uac_call", node.address, user="bob", calls=150,
                                                             rate=15, timeout=60, keys={"domain": LOOPBACK})
        time.sleep(3)
        pool.stop_server(1, kill=True)
        down_after = wait_state(pool, FS[1], "Probing", interval * (threshold + 3))
        first = background.wait(60)
        first.assert_ok()
        pool.servers[1] = pool.start_server(1)
        up_after = wait_state(pool, FS[1], "Active", interval * 3)
        again = pool.calls(node, 30, rate=15, name="after-restart")
        again.assert_ok()
        stats = pool.mi().execute("get_statistics", {"statistics": ["dispatcher:"]})
        pool.__exit__()
        log = node.log()
    # calls that picked the dead server went on to the next one: the caller saw every call complete
    assert first.successful_calls == 150 and first.failed_calls == 0
    assert "FREESWITCH FAILED WITH 408" in log
    assert f"sip:{FS[1]}:{pool.ports[1]}: Active -> Probing" in log
    assert f"sip:{FS[1]}:{pool.ports[1]}: Probing -> Active" in log
    assert stats["dispatcher:state_changes"] >= 2 and stats["dispatcher:failovers"] >= 1
    # back in the pool: the restarted server gets its share of the new calls
    restarted = pool.results[FS[1]][-1]
    assert len({m.header("Call-ID")[0] for m in restarted.received() if m.method == "INVITE"}) >= 5
    print(f"probing: inactive {down_after:.1f} s after the kill, active {up_after:.1f} s after the restart")


def test_a_server_answering_503_is_failed_over(tmp_path: Path) -> None:
    with Pool(tmp_path, alg=4, scenarios=("uas_answer", "uas_reject", "uas_answer")) as pool, \
            edgeproxy_node(tmp_path / "node", config=pool.config, transports=("udp",), route=ROUTE,
                           log_level="info") as node:
        caller = pool.calls(node, 60)
        caller.assert_ok()
        pool.__exit__()
        log = node.log()
    assert caller.successful_calls == 60
    rejected = pool.invites()[FS[1]]
    assert len(rejected) >= 10  # round robin sent it a share, each of which went on to the next server
    assert "FREESWITCH FAILED WITH 503" in log
    answered = pool.invites()[FS[0]] | pool.invites()[FS[2]]
    assert rejected <= answered
