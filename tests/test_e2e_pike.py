"""Flood protection end to end (``[pike] check_all``): a real ``twistd edgeproxy`` on loopback, UDP
sockets on distinct loopback addresses as the sources. A flooding source's requests are dropped
unanswered (and logged once), other sources and trusted ones are served, and the flooder is served
again once it has been quiet."""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest

from support.sipp_harness import EdgeproxyNode, edgeproxy_node, require_sipp

FLOODER, BYSTANDER, TRUSTED = "127.0.0.2", "127.0.0.4", "127.0.0.3"
UNIT, DENSITY = 2.0, 40


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    require_sipp()  # the harness's node needs nothing of SIPp, but it lives with the SIPp e2e tests
    config = {"pike": {"check_all": True, "sampling_time_unit": UNIT, "reqs_density_per_unit": DENSITY,
                       "trusted": [TRUSTED]}}
    with edgeproxy_node(tmp_path_factory.mktemp("pike-node"), config=config) as n:
        yield n


def burst(node: EdgeproxyNode, source: str, count: int, tag: str, wait: float = 0.3) -> int:
    """Send ``count`` OPTIONS pings from ``source`` at once; how many were answered (none for
    ``wait`` seconds ends the count: short, so the checks below stay inside one sampling window)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        port = s.getsockname()[1]
        for i in range(count):
            s.sendto((f"OPTIONS sip:{node.host}:{node.port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-{tag}-{i};rport\r\nMax-Forwards: 70\r\n"
                      f"From: <sip:p@{source}>;tag={tag}\r\nTo: <sip:{node.host}>\r\nCall-ID: {tag}-{i}\r\n"
                      f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), (node.host, node.port))
        answered = 0
        s.settimeout(wait)
        try:
            while answered < count:
                if s.recv(65535).startswith(b"SIP/2.0 200 "):
                    answered += 1
        except socket.timeout:
            pass
        return answered


def test_a_flooding_source_is_dropped_others_are_served_and_it_comes_back_when_quiet(node: EdgeproxyNode) -> None:
    flooded = burst(node, FLOODER, 100, "flood")
    assert 10 <= flooded <= DENSITY + 2, flooded  # about the first DENSITY pass, the rest are dropped
    # at once (well inside the window that still holds the flood): still flooding
    assert burst(node, FLOODER, 5, "still") == 0
    quiet_since = time.monotonic()
    assert burst(node, BYSTANDER, 10, "bystander", wait=2.0) == 10
    assert burst(node, TRUSTED, 100, "trusted", wait=2.0) == 100  # never counted (a FreeSWITCH, a carrier)
    time.sleep(max(0.0, quiet_since + 2 * UNIT + 0.5 - time.monotonic()))  # two quiet sampling units
    assert burst(node, FLOODER, 5, "back", wait=2.0) == 5
    log = node.log()
    assert log.count(f"pike: {FLOODER} is flooding") == 1  # one line per episode, not per drop
    assert f"pike: {FLOODER} is below the limit again" in log
    assert node.running()
