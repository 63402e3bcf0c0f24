"""Dispatcher probing on a real node over loopback UDP: the probes are the node's own client
transactions (edgeproxy.proxy.uac), answered by UDP sockets the test owns as "FreeSWITCH" servers.

* a server answering 200 stays Active; one answering 404 (not in options_reply_codes) or not at all
  becomes Probing after ds_probing_threshold rounds, and Active again on its first 200;
* a destination whose name does not resolve (a DNS server on loopback that never answers) is a failed
  probe, then Probing -- no crash, the others are unaffected;
* the probe is an OPTIONS with our Via, From ds_ping_from, To the destination, and UDP retransmissions
  of the same transaction are answered once.
Every wait is bounded; nothing leaves loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from support.ports import free_port
from support.transport import sleep, within
from twisted.internet import reactor
from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import DatagramProtocol

from edgeproxy import __version__
from edgeproxy.config import load_config
from edgeproxy.service import build_node
from edgeproxy.sip import Request, parse_datagram

NODE = "127.0.0.10"


class Server(DatagramProtocol):
    """A media server that answers each request with ``status`` (None: silent)."""

    noisy = False

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.requests: list[Request] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        message = parse_datagram(data)
        if not isinstance(message, Request):
            return
        self.requests.append(message)
        if self.status is not None:
            self.transport.write(message.make_response(self.status, to_tag="fs").to_bytes(), addr)


async def wait_for(check, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await sleep(0.05)
    assert check()


@pytest_twisted.ensureDeferred
async def test_probing_over_udp(tmp_path: Path) -> None:
    hosts = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
    ports = [free_port(h) for h in hosts]
    servers = [Server(200), Server(404), Server(None)]
    listening = [reactor.listenUDP(p, s, interface=h) for h, p, s in zip(hosts, ports, servers)]
    node_port = free_port(NODE)
    dns_port = free_port()  # nothing listens there: the name never resolves
    rows = "".join(f'[[dispatcher.destinations]]\nsetid = 1\ndestination = "sip:{h}:{p}"\n'
                   for h, p in zip(hosts, ports))
    rows += '[[dispatcher.destinations]]\nsetid = 2\ndestination = "sip:fs.unresolvable.test"\n'
    rows += '[[dispatcher.destinations]]\nsetid = 3\ndestination = "sip:localhost:5999"\n'  # /etc/hosts
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nlisten = ["udp:{NODE}:{node_port}"]\n'
                    f'[timers]\nt1 = 0.1\n'
                    f'[dns]\nservers = ["127.0.0.1:{dns_port}"]\ntimeout = 0.3\n'
                    f'[dispatcher]\nds_ping_interval = 0.5\nds_probing_mode = 1\nds_probing_threshold = 2\n'
                    f'probe_timeout = 0.4\nds_ping_from = "sip:probe@edge.test"\n' + rows)
    config = load_config(str(path))
    running = build_node(config, reactor)
    ds = running.dispatcher
    assert ds is not None
    try:
        await within(running.start(list(config.node.listen)), 5)
        state = {h: ds.table.find(1, f"sip:{h}:{p}") for h, p in zip(hosts, ports)}
        unresolvable = ds.table.find(2, "sip:fs.unresolvable.test")
        await wait_for(lambda: state["127.0.0.22"].state_name == "Probing"
                       and state["127.0.0.23"].state_name == "Probing"
                       and unresolvable.state_name == "Probing")
        assert state["127.0.0.21"].state_name == "Active"
        # names are resolved when loaded (the node's locator: /etc/hosts here, no DNS question), so
        # ds_is_in_list knows localhost's address; the unresolvable name has none
        verbs = running.node.verbs
        await wait_for(lambda: verbs.ds_is_in_list("127.0.0.1", 5999, 3, False))
        assert not verbs.ds_is_in_list("127.0.0.1", 5998, 3, False)
        assert unresolvable.addresses == ()
        probe = servers[0].requests[0]
        assert probe.method == "OPTIONS" and str(probe.uri) == f"sip:127.0.0.21:{ports[0]}"
        assert probe.top_via.branch.startswith("z9hG4bK") and f"{NODE}:{node_port}" in probe.headers.get("via")
        assert "sip:probe@edge.test" in probe.headers.get("from")
        assert probe.headers.values("user-agent") == [f"edgeproxy ({__version__})"]  # user_agent_header
        # the silent server's probes were retransmitted (same branch) within their transaction
        branches = [r.top_via.branch for r in servers[2].requests]
        assert len(branches) > len(set(branches))
        # the 404 server answers 200 now: Active again on the first good reply
        servers[1].status = 200
        await wait_for(lambda: state["127.0.0.22"].state_name == "Active")
        assert ds.stats["state_changes"] >= 4 and ds.stats["probe_failures"] >= 6
        assert running.prober is not None and running.prober.sent[f"sip:127.0.0.21:{ports[0]}"] >= 2
    finally:
        await within(running.stop(), 5)
        for port in listening:
            await maybeDeferred(port.stopListening)


def node_toml(host: str, sip_port: int, node_id: int, bins: dict[int, str], sips: dict[int, str], rows: str,
              dispatcher: str) -> str:
    nodes = "".join(f'[[cluster.nodes]]\ncluster_id = 1\nnode_id = {n}\nurl = "bin:{bins[n]}"\nsip_addr = "{sips[n]}"\n'
                    for n in sorted(bins))
    return (f'[node]\nlisten = ["udp:{host}:{sip_port}"]\n[timers]\nt1 = 0.1\n'
            f'[cluster]\nmy_node_id = {node_id}\ncluster_id = 1\nping_interval = 0.2\nping_timeout = 0.2\n{nodes}'
            f'[dispatcher]\n{dispatcher}{rows}')


@pytest_twisted.ensureDeferred
async def test_two_nodes_share_probing_results_over_the_cluster_link(tmp_path: Path) -> None:
    """Node 1 probes; node 2 does not (ds_ping_interval 0) and still learns that a server died and came
    back, and an MI-style state change on node 2 reaches node 1."""
    hosts = {1: "127.0.0.11", 2: "127.0.0.12"}
    sip_ports = {n: free_port(h) for n, h in hosts.items()}
    bins = {n: f"{h}:{free_port(h)}" for n, h in hosts.items()}
    sips = {n: f"{hosts[n]}:{sip_ports[n]}" for n in hosts}
    fs_hosts = ["127.0.0.21", "127.0.0.22"]
    fs_ports = [free_port(h) for h in fs_hosts]
    servers = [Server(200), Server(200)]
    listening = [reactor.listenUDP(p, s, interface=h) for h, p, s in zip(fs_hosts, fs_ports, servers)]
    rows = "".join(f'[[dispatcher.destinations]]\nsetid = 1\ndestination = "sip:{h}:{p}"\n'
                   for h, p in zip(fs_hosts, fs_ports))
    probing = "ds_ping_interval = 0.3\nds_probing_mode = 1\nds_probing_threshold = 2\nprobe_timeout = 0.2\n"
    running = []
    for n, dispatcher in ((1, probing), (2, "")):
        path = tmp_path / f"node{n}.toml"
        path.write_text(node_toml(hosts[n], sip_ports[n], n, bins, sips, rows, dispatcher))
        config = load_config(str(path))
        running.append(build_node(config, reactor))
        await within(running[-1].start(list(config.node.listen)), 5)
    one, two = (r.dispatcher for r in running)
    assert one is not None and two is not None and running[1].prober is None
    try:
        cluster = running[0].cluster
        assert cluster is not None
        await wait_for(lambda: cluster.is_up(2, 1) and running[1].cluster.is_up(1, 1))
        dead = f"sip:127.0.0.22:{fs_ports[1]}"
        servers[1].status = None  # it stops answering
        await wait_for(lambda: one.table.find(1, dead).state_name == "Probing")
        await wait_for(lambda: two.table.find(1, dead).state_name == "Probing", seconds=1.0)
        servers[1].status = 200
        await wait_for(lambda: two.table.find(1, dead).state_name == "Active")
        # a state set on node 2 (ds_set_state, ds_mark_dst) is node 1's too
        other = f"sip:127.0.0.21:{fs_ports[0]}"
        two.set_state(two.table.find(1, other), "i", "MI command")
        await wait_for(lambda: one.table.find(1, other).state_name == "Inactive", seconds=1.0)
    finally:
        for r in running:
            await within(r.stop(), 5)
        for port in listening:
            await maybeDeferred(port.stopListening)
