"""A node that starts into a cluster pulls the dispatcher states from a peer (OpenSIPS dispatcher with
``cluster_id``: capability ``dispatcher-status-repl``, the sync a node requests at start-up).

Two ``twistd edgeproxy`` nodes of one cluster (127.0.0.15 and .16, the cluster link between them)
run the shipped failover route with a ``[dispatcher]`` set of two SIPp "FreeSWITCH" servers on
127.0.0.21 and .22. The operator marks .21 inactive on node A with the MI's ``ds_set_state``
before node B exists. B then starts from its own configuration (.21 Active in its table): it must
show .21 Inactive in ``ds_list`` within a couple of ping intervals of seeing A, and its calls must
all go to .22. A, alone for ``seed_fallback_interval`` before B started, counts its own states as
the cluster's: it answers B and does not ask B in turn, and keeps its mark. Every wait is
bounded; every process is stopped by its PID.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from support.mi import mi_result
from support.polling import wait_until
from support.ports import free_port
from support.sipp_harness import REPO, EdgeproxyNode, Sipp, edgeproxy_node, require_sipp

A_IP, B_IP = "127.0.0.15", "127.0.0.16"
FS = ["127.0.0.21", "127.0.0.22"]


def ds_state(url: str, uri: str) -> str:
    listed = mi_result(url, "ds_list")
    for dset in listed["PARTITIONS"][0].get("SETS", []):
        for d in dset["Destinations"]:
            if d["URI"] == uri:
                return str(d["state"])
    raise AssertionError(f"{uri} not in ds_list: {listed}")


def test_a_node_started_later_learns_a_destination_marked_inactive_before(tmp_path: Path) -> None:
    require_sipp()
    sip_port = free_port(A_IP, B_IP)
    bin_port = free_port(A_IP, B_IP)
    mi_ports = {A_IP: free_port("127.0.0.1"), B_IP: free_port("127.0.0.1")}
    urls = {ip: f"http://127.0.0.1:{port}/mi" for ip, port in mi_ports.items()}
    fs_ports = [free_port(h) for h in FS]
    uris = [f"sip:{h}:{p}" for h, p in zip(FS, fs_ports, strict=True)]
    rows = [{"cluster_id": 1, "node_id": i, "url": f"bin:{ip}:{bin_port}", "state": 1, "no_ping_retries": 2,
             "priority": 50, "sip_addr": f"{ip}:{sip_port}", "flags": "seed", "description": name}
            for i, (ip, name) in enumerate(((A_IP, "A"), (B_IP, "B")), start=1)]

    def config(node_id: int, ip: str) -> dict[str, Any]:
        return {
            "node": {"route": str(REPO / "routes" / "failover.py")},
            "mi": {"listen": f"127.0.0.1:{mi_ports[ip]}"},
            "cluster": {"my_node_id": node_id, "cluster_id": 1, "ping_interval": 0.3, "ping_timeout": 0.2,
                        "seed_fallback_interval": 3, "nodes": rows},
            "dispatcher": {"destinations": [{"setid": 1, "destination": u} for u in uris]},
            "route_params": {"freeswitch_algorithm": 4, "freeswitch_timeout": 5},
        }

    with ExitStack() as stack:
        servers = [stack.enter_context(Sipp(tmp_path / f"fs{i}", "udp", local_ip=h).start(
            "uas_answer", port=p, calls=1000, timeout=90, extra=["-aa"]))
            for i, (h, p) in enumerate(zip(FS, fs_ports, strict=True))]
        a: EdgeproxyNode = stack.enter_context(edgeproxy_node(
            tmp_path / "node-a", host=A_IP, port=sip_port, transports=("udp",), config=config(1, A_IP),
            log_level="info"))
        assert mi_result(urls[A_IP], "ds_set_state", {"state": "i", "group": "1", "address": uris[0]}) == "OK"
        assert ds_state(urls[A_IP], uris[0]) == "Inactive"
        wait_until("A's seed fallback", lambda: "this node's states stand (seed fallback)" in a.log(), 15)
        started = time.monotonic()
        b: EdgeproxyNode = stack.enter_context(edgeproxy_node(
            tmp_path / "node-b", host=B_IP, port=sip_port, transports=("udp",), config=config(2, B_IP),
            log_level="info"))
        wait_until("B sees A", lambda: "node 1 is UP" in b.log(), 15)
        wait_until("B's ds_list shows the destination A marked", lambda: ds_state(urls[B_IP], uris[0]) == "Inactive", 5)
        learnt_after = time.monotonic() - started
        assert "dispatcher: synced the states of 2 destinations from node 1" in b.log(), b.log()[-3000:]
        assert "sent the states of 2 destinations to node 2" in a.log()
        assert ds_state(urls[B_IP], uris[1]) == "Active"
        wait_until("A sees B", lambda: "node 2 is UP" in a.log(), 15)
        time.sleep(1.0)  # a sync A asked B for would have had time to come back
        assert ds_state(urls[A_IP], uris[0]) == "Inactive"  # A's mark stands
        assert "asked node 2" not in a.log() and "synced the states" not in a.log(), a.log()[-3000:]
        calls = Sipp(tmp_path / "caller", "udp").run("uac_call", b.address, user="bob", calls=10, rate=20,
                                                      timeout=30, keys={"domain": B_IP})
        assert calls.successful_calls == 10, calls.describe()
        results = [s.stop() for s in servers]
    print(f"B showed the state A set {learnt_after:.1f} s after B's start")
    invites = [sum(1 for m in r.received() if m.method == "INVITE") for r in results]
    assert invites == [0, 10], (invites, learnt_after)
