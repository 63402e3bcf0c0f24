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
        probe = servers[0].requests[0]
        assert probe.method == "OPTIONS" and str(probe.uri) == f"sip:127.0.0.21:{ports[0]}"
        assert probe.top_via.branch.startswith("z9hG4bK") and f"{NODE}:{node_port}" in probe.headers.get("via")
        assert "sip:probe@edge.test" in probe.headers.get("from")
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
