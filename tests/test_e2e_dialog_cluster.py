"""A per-user limit across two nodes (issue 13's acceptance): two ``twistd edgeproxy`` nodes of one
cluster (127.0.0.13 and .14, the cluster link between them), the shipped failover route, the
``caller`` profile replicated (``profiles_with_value = ["caller/b"]``, OpenSIPS's
``profile_replication_cluster``), ``route_params.max_calls_per_user = 2``; SIPp callers and a SIPp
"FreeSWITCH" on UDP, the counts read over each node's MI.

Alice has one call up through each node: a third call is refused on either node; once her calls
end, a new one goes through. Every wait is bounded; every process is stopped by its PID.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from support.mi import mi_result
from support.polling import wait_until
from support.ports import free_port
from support.sipp_harness import REPO, EdgeproxyNode, Sipp, edgeproxy_node, require_sipp

A_IP, B_IP = "127.0.0.13", "127.0.0.14"
FS_IP, CALLER_IP = "127.0.0.22", "127.0.0.33"


def mi(url: str, method: str, params: Any = None) -> Any:
    return mi_result(url, method, params)


def test_a_limit_of_two_holds_across_two_nodes(tmp_path: Path) -> None:
    require_sipp()
    sip_port = free_port(A_IP, B_IP)
    bin_port = free_port(A_IP, B_IP)
    mi_ports = {A_IP: free_port("127.0.0.1"), B_IP: free_port("127.0.0.1")}
    rows = [{"cluster_id": 1, "node_id": i, "url": f"bin:{ip}:{bin_port}", "state": 1, "no_ping_retries": 2,
             "priority": 50, "sip_addr": f"{ip}:{sip_port}", "flags": "seed", "description": name}
            for i, (ip, name) in enumerate(((A_IP, "A"), (B_IP, "B")), start=1)]
    with ExitStack() as stack:
        fs_sipp = Sipp(tmp_path / "freeswitch", "udp", local_ip=FS_IP)
        fs = stack.enter_context(fs_sipp.start("uas_answer", calls=20, timeout=90))
        nodes: dict[str, EdgeproxyNode] = {}
        for node_id, ip in ((1, A_IP), (2, B_IP)):
            config = {
                "node": {"route": str(REPO / "routes" / "failover.py")},
                "mi": {"listen": f"127.0.0.1:{mi_ports[ip]}"},
                "cluster": {"my_node_id": node_id, "cluster_id": 1, "ping_interval": 0.3, "ping_timeout": 0.2,
                            "seed_fallback_interval": 0.5, "nodes": rows},
                "dialog": {"profiles_with_value": ["caller/b"], "profile_replication_cluster": 1,
                           "replicate_profiles_timer": 100},
                "route_params": {"freeswitch": [f"{FS_IP}:{fs.port}"], "max_calls_per_user": 2,
                                 "max_calls_status": 403, "max_calls_reason": "Too Many Calls"},
            }
            nodes[ip] = stack.enter_context(edgeproxy_node(tmp_path / f"node-{node_id}", host=ip, port=sip_port,
                                                           transports=("udp",), config=config, log_level="info"))
        a, b = nodes[A_IP], nodes[B_IP]
        wait_until("the nodes see each other", lambda: re.search(r"node 2 is UP", a.log())
                   and re.search(r"node 1 is UP", b.log()), 15)
        urls = {ip: f"http://127.0.0.1:{port}/mi" for ip, port in mi_ports.items()}

        def size(ip: str) -> int:
            return int(mi(urls[ip], "profile_get_size", ["caller", "alice"])["Profile"]["count"])

        alice = Sipp(tmp_path / "alice", "udp", local_ip=CALLER_IP)
        keys = {"caller": "alice", "domain": "example.test"}
        long_a = alice.start("uac_call", a.address, user="conference", duration_ms=5000, timeout=30, keys=keys)
        wait_until("alice's call through A counted on B", lambda: size(B_IP) == 1, 10)
        long_b = alice.start("uac_call", b.address, user="conference", duration_ms=5000, timeout=30, keys=keys)
        wait_until("alice in 2 calls on both nodes", lambda: size(A_IP) == 2 and size(B_IP) == 2, 10)
        assert mi(urls[A_IP], "profile_get_size", ["caller"])["Profile"]["replicated"] == "yes"
        for node in (a, b):  # the third call, through either node, is refused
            third = alice.run("uac_expect", node.address, user="conference", keys={**keys, "expect_code": 403})
            assert third.ok, third.describe()
        assert long_a.wait(30).ok and long_b.wait(30).ok
        wait_until("alice's calls ended everywhere", lambda: size(A_IP) == 0 and size(B_IP) == 0, 10)
        again = alice.run("uac_call", b.address, user="conference", keys=keys)
        assert again.ok, again.describe()
        assert len(mi(urls[A_IP], "dlg_list")["Dialogs"]) == 0 and len(mi(urls[B_IP], "dlg_list")["Dialogs"]) == 0
    result = fs.result()
    assert result.successful_calls == 3, result.describe()
