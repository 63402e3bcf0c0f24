"""Issue 16, finding 4: pike's blind spots. Malformed messages were answered before pike counted them
(a blocked source still got 7,497 replies to 20,000 messages); the node's own address was counted
(148 "127.0.0.1 is flooding" episodes from requests it relayed to itself); ``pike_list`` kept
showing a source as blocked after it stopped.

Now every message is counted on arrival, malformed ones included, before anything is answered; the
node's own addresses, trusted sources and cluster peers are never counted; a source is listed
blocked only while its rate (the sliding window, evaluated at the time asked) is over the limit.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Iterator

import pytest
from support.proxy import LOCAL_UDP, World, sip
from support.sipp_harness import EdgeproxyNode, edgeproxy_node

from edgeproxy.proxy.flood import FloodDetector, FloodSettings
from edgeproxy.sip.endpoint import Endpoint, Flow

UNIT, DENSITY = 2.0, 20


def options(source: str, port: int, i: int, tag: str = "p") -> str:
    return sip("OPTIONS sip:127.0.0.1:5060 SIP/2.0",
               f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-{tag}{i};rport", "Max-Forwards: 70",
               f"From: <sip:p@{source}>;tag={tag}{i}", "To: <sip:127.0.0.1>", f"Call-ID: {tag}-{i}",
               "CSeq: 1 OPTIONS")


def test_pike_list_drops_a_source_once_its_window_has_passed() -> None:
    flood = FloodDetector(FloodSettings(sampling_time_unit=UNIT, reqs_density_per_unit=DENSITY))
    for i in range(3 * DENSITY):
        flood.check("192.0.2.66", 100.0 + i * 0.001)
    assert flood.blocked(100.1) == ["192.0.2.66"]
    # it stopped: one unit later part of the burst is still in the sliding window ...
    assert flood.blocked(100.0 + UNIT + 0.1) == ["192.0.2.66"]
    # ... two units later none of it is: no longer listed, though it sent nothing since
    assert flood.blocked(100.0 + 2 * UNIT + 0.01) == []
    assert flood.is_blocked("192.0.2.66", 100.0 + 2 * UNIT + 0.01) is False


def test_the_nodes_own_address_is_never_counted() -> None:
    """Requests the node relays to itself (a loop through its own domain, a cluster looped back)
    come from its listening address: not a flood."""
    world = World(flood=FloodDetector(FloodSettings(sampling_time_unit=UNIT, reqs_density_per_unit=DENSITY,
                                                    check_all=True)))
    own = Flow(LOCAL_UDP, Endpoint("UDP", LOCAL_UDP.host, LOCAL_UDP.port))
    answered = 0
    for i in range(3 * DENSITY):
        answered += len(world.receive(options(LOCAL_UDP.host, LOCAL_UDP.port, i), own))
    assert answered == 3 * DENSITY
    assert world.node.flood is not None and len(world.node.flood) == 0
    assert world.node.stats["flood_dropped"] == 0


def test_a_cluster_peer_is_never_counted() -> None:
    """Another node of the cluster relays many users' requests: its address (the ``sip_addr`` of its
    row in the node table, OpenSIPS ``cluster_check_addr``) is never counted; a stranger sending as
    much is blocked. The real :class:`~edgeproxy.cluster.Cluster`, built from a node table (never
    started: only its table is read)."""
    from support.proxy import RecordingSender, wire
    from twisted.internet.task import Clock

    from edgeproxy.cluster import Cluster
    from edgeproxy.cluster.nodes import NodeInfo
    from edgeproxy.location import InMemoryLocation
    from edgeproxy.node import Node
    from edgeproxy.proxy.settings import ProxySettings
    from edgeproxy.registrar import Registrar, RegistrarSettings
    from edgeproxy.routing.loader import load_route_module

    clock = Clock()
    clock.advance(1000.0)
    cluster = Cluster(clock, 1, [NodeInfo(1, 1, "bin:127.0.0.1:5566", sip_addr="127.0.0.1:5060"),
                                 NodeInfo(1, 2, "bin:192.0.2.20:5566", sip_addr="192.0.2.20:5060")])
    flood = FloodDetector(FloodSettings(sampling_time_unit=UNIT, reqs_density_per_unit=DENSITY, check_all=True))
    sender = RecordingSender()
    node = Node(clock, sender, Registrar(InMemoryLocation(clock), RegistrarSettings(), clock),
                load_route_module("edgeproxy_routes.default"), ProxySettings(domains=("example.com",)),
                cluster=cluster, flood=flood)
    node.add_local_endpoint(LOCAL_UDP)
    for source in ("192.0.2.20", "192.0.2.66"):
        for i in range(3 * DENSITY):
            node.message_received(wire(options(source, 5060, i, tag=source[-2:])),
                                  Flow(LOCAL_UDP, Endpoint("UDP", source, 5060)))
    answered = Counter(s.destination.remote.host for s in sender.take())
    assert answered["192.0.2.20"] == 3 * DENSITY  # the peer: every request answered, none counted
    assert answered["192.0.2.66"] <= DENSITY + 1  # the stranger: blocked past the limit
    assert flood.blocked(clock.seconds()) == ["192.0.2.66"]


def test_a_blocked_source_gets_no_reply_to_malformed_messages_either() -> None:
    world = World(flood=FloodDetector(FloodSettings(sampling_time_unit=UNIT, reqs_density_per_unit=DENSITY,
                                                    check_all=True)))
    node = world.node
    src = Flow(LOCAL_UDP, Endpoint("UDP", "192.0.2.66", 5060))
    from edgeproxy.sip.errors import SipParseError
    err = SipParseError("Missing Call-ID", 400, is_request=True,
                        partial=[("via", "SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-x"), ("cseq", "1 OPTIONS")])
    answerable = [node.malformed_received(err, src, 300) for _ in range(5 * DENSITY)]
    assert answerable.count(True) <= DENSITY + 1  # counted like any request: the rest are not answered
    assert answerable[-1] is False
    assert node.stats["flood_dropped"] >= 4 * DENSITY - 1


# -- on the wire -------------------------------------------------------------------------------------

FLOODER = "127.0.0.7"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    config = {"pike": {"check_all": True, "sampling_time_unit": UNIT, "reqs_density_per_unit": DENSITY}}
    with edgeproxy_node(tmp_path_factory.mktemp("pike-attack"), config=config) as n:
        yield n


def test_malformed_flood_over_udp_is_counted_before_it_is_answered(node: EdgeproxyNode) -> None:
    """The issue's probe, small: 400 broken requests (no Call-ID: answerable with a 400) from one
    source in a burst. On main every one was answered; now about DENSITY are."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((FLOODER, 0))
        port = s.getsockname()[1]
        for i in range(400):
            s.sendto((f"OPTIONS sip:{node.host} SIP/2.0\r\nVia: SIP/2.0/UDP {FLOODER}:{port};branch=z9hG4bK-m{i}\r\n"
                      f"From: <sip:m@x>;tag=1\r\nTo: <sip:y@x>\r\nCSeq: {i + 1} OPTIONS\r\n"
                      f"Content-Length: 0\r\n\r\n").encode(), (node.host, node.port))
        s.settimeout(0.5)
        replies = 0
        try:
            while True:
                if s.recv(65535).startswith(b"SIP/2.0 400 "):
                    replies += 1
        except socket.timeout:
            pass
    assert 1 <= replies <= DENSITY + 2, replies
    assert node.running()
