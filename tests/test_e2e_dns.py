"""RFC 3263 end to end over real sockets: ``twistd edgeproxy`` whose ``[dns] servers`` is an
authoritative DNS server run by the test (``tests/support/dns_server.py``, a ``twisted.names`` server on
127.0.0.1 holding the zone ``carrier.test``), SIPp as caller and as the carrier's servers.

The caller sends ``INVITE sip:+1555@<name>.carrier.test`` to the node, whose route relays every
request to its Request-URI; the node must find the carrier's servers the way OpenSIPS would (NAPTR,
SRV, A) and reach the SIPp UAS listening on the SRV target's port, fail over to the next SRV target
when the first refuses the connection, does not answer or answers 503, and answer at once when the
name does not exist. Loopback addresses only (127.0.0.x), every wait bounded.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from support.dns_server import dns_server_process
from support.polling import wait_until
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, edgeproxy_node, free_port, require_sipp

ROUTE = '''\
"""Relay every request to its Request-URI (a carrier trunk), as a trunk-facing OpenSIPS route does."""


async def request_route(msg):
    if not msg.mf_process_maxfwd_header(10):
        msg.sl_send_reply(483, "Too Many Hops")
        return
    if msg.has_totag():
        if msg.loose_route():
            msg.t_relay()
        return
    msg.record_route()
    if not msg.t_relay():
        msg.sl_reply_error()
'''

UAS1 = "127.0.0.51"  # the carrier's first server
UAS2 = "127.0.0.52"  # its second one
DEAD = "127.0.0.53"  # an address where nothing listens
TIMER_B = 1.5  # the node gives up on a silent target after this long (then fails over)


@dataclass
class Carrier:
    """The ports of the carrier's servers, as published in the zone."""

    main: int  # carrier.test: NAPTR SIP+D2U -> SRV -> UAS1:main
    tcp_dead: int  # tcpfail: SRV prio 10 DEAD:tcp_dead (refused), prio 20 UAS2:tcp_live
    tcp_live: int
    udp_silent: int  # udpfail: SRV prio 10 DEAD:udp_silent (no answer), prio 20 UAS2:udp_live
    udp_live: int
    busy_first: int  # busy: SRV prio 10 UAS1:busy_first (503), prio 20 UAS2:busy_second
    busy_second: int


def zone(c: Carrier) -> dict:
    return {
        "origin": "carrier.test",
        "records": {
            "carrier.test": [["NAPTR", 10, 10, "s", "SIP+D2U", "", "_sip._udp.carrier.test"]],
            "_sip._udp.carrier.test": [["SRV", 10, 10, c.main, "uas1.carrier.test"]],
            "tcpfail.carrier.test": [["NAPTR", 10, 10, "s", "SIP+D2T", "", "_sip._tcp.tcpfail.carrier.test"]],
            "_sip._tcp.tcpfail.carrier.test": [["SRV", 10, 10, c.tcp_dead, "dead.carrier.test"],
                                               ["SRV", 20, 10, c.tcp_live, "uas2.carrier.test"]],
            # no NAPTR: the node falls back to the SRV queries (RFC 3263 §4.1)
            "udpfail.carrier.test": [["A", DEAD]],
            "_sip._udp.udpfail.carrier.test": [["SRV", 10, 10, c.udp_silent, "dead.carrier.test"],
                                               ["SRV", 20, 10, c.udp_live, "uas2.carrier.test"]],
            "busy.carrier.test": [["A", DEAD]],
            "_sip._udp.busy.carrier.test": [["SRV", 10, 10, c.busy_first, "uas1.carrier.test"],
                                            ["SRV", 20, 10, c.busy_second, "uas2.carrier.test"]],
            "uas1.carrier.test": [["A", UAS1]],
            "uas2.carrier.test": [["A", UAS2]],
            "dead.carrier.test": [["A", DEAD]],
        },
    }


@pytest.fixture(scope="module")
def carrier() -> Carrier:
    return Carrier(main=free_port(UAS1), tcp_dead=free_port(DEAD), tcp_live=free_port(UAS2),
                   udp_silent=free_port(DEAD), udp_live=free_port(UAS2), busy_first=free_port(UAS1),
                   busy_second=free_port(UAS2))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, carrier: Carrier) -> Iterator[EdgeproxyNode]:
    require_sipp()
    workdir = tmp_path_factory.mktemp("dns")
    route = workdir / "trunk_route.py"
    route.write_text(ROUTE, encoding="utf-8")
    with dns_server_process(zone(carrier), workdir) as dns_port:
        config = {"dns": {"servers": [f"127.0.0.1:{dns_port}"], "timeout": 2.0},
                  "timers": {"timer_b": TIMER_B}}
        with edgeproxy_node(workdir / "node", config=config, route=str(route)) as n:
            yield n


def test_invite_to_a_domain_reaches_the_srv_target_found_through_naptr(node: EdgeproxyNode, carrier: Carrier,
                                                                      tmp_path: Path) -> None:
    with Sipp(tmp_path / "uas", "udp", local_ip=UAS1).start("uas_answer", port=carrier.main, user="carrier") as uas:
        caller = Sipp(tmp_path / "uac", "udp").run("uac_call", node.address, user="+1555", duration_ms=100,
                                                   keys={"domain": "carrier.test"}).assert_ok()
        uas.wait_for_message(r"^BYE ", timeout=10)
    assert caller.successful_calls == 1
    invite = uas.result().received()[0]
    assert invite.first_line == "INVITE sip:+1555@carrier.test SIP/2.0"  # only the next hop was located
    assert f"SIP/2.0/UDP {LOOPBACK}:{node.port}" in invite.header("Via")[0]


def test_refused_tcp_target_fails_over_to_the_next_srv_target(node: EdgeproxyNode, carrier: Carrier,
                                                              tmp_path: Path) -> None:
    with Sipp(tmp_path / "uas", "tcp", local_ip=UAS2).start("uas_answer", port=carrier.tcp_live,
                                                            user="carrier") as uas:
        caller = Sipp(tmp_path / "uac", "udp").run("uac_call", node.address, user="+1555", duration_ms=100,
                                                   keys={"domain": "tcpfail.carrier.test"}).assert_ok()
        uas.wait_for_message(r"^BYE ", timeout=10)
    assert caller.successful_calls == 1
    assert [m.status for m in caller.received()][-2:] == [200, 200]  # no error reached the caller
    # the node's aggregated log (issue 16): the first failover from a target in an interval is said at once
    assert f"INVITE to tcp:{DEAD}:{carrier.tcp_dead} failed (Connection Refused)" in node.log()


def test_silent_udp_target_fails_over_after_timer_b(node: EdgeproxyNode, carrier: Carrier, tmp_path: Path) -> None:
    with Sipp(tmp_path / "uas", "udp", local_ip=UAS2).start("uas_answer", port=carrier.udp_live,
                                                            user="carrier") as uas:
        started = time.monotonic()
        caller = Sipp(tmp_path / "uac", "udp").run("uac_call", node.address, user="+1555", duration_ms=100,
                                                   keys={"domain": "udpfail.carrier.test"}).assert_ok()
        elapsed = time.monotonic() - started
        uas.wait_for_message(r"^BYE ", timeout=10)
    assert caller.successful_calls == 1
    assert TIMER_B - 0.2 < elapsed < TIMER_B + 8  # one timer B on the silent target, then the live one
    assert f"INVITE to udp:{DEAD}:{carrier.udp_silent} failed (timeout)" in node.log()


def test_503_fails_over_to_the_next_srv_target(node: EdgeproxyNode, carrier: Carrier, tmp_path: Path) -> None:
    first = Sipp(tmp_path / "uas1", "udp", local_ip=UAS1).start(
        "uas_reject", port=carrier.busy_first, user="carrier", keys={"code": 503, "reason": "Service Unavailable"})
    try:
        with Sipp(tmp_path / "uas2", "udp", local_ip=UAS2).start("uas_answer", port=carrier.busy_second,
                                                                 user="carrier") as second:
            caller = Sipp(tmp_path / "uac", "udp").run("uac_call", node.address, user="+1555", duration_ms=100,
                                                       keys={"domain": "busy.carrier.test"}).assert_ok()
            second.wait_for_message(r"^BYE ", timeout=10)
        first.wait_for_message(r"^ACK ", timeout=5)  # the node ACKed the 503 (§17.1.1.3)
    finally:
        rejected = first.stop()
    assert caller.successful_calls == 1
    assert 503 not in [m.status for m in caller.received()]
    assert [m.first_line.split(" ")[0] for m in rejected.received()] == ["INVITE", "ACK"]


def test_nxdomain_fails_the_call_at_once(node: EdgeproxyNode, tmp_path: Path) -> None:
    started = time.monotonic()
    Sipp(tmp_path, "udp").run("uac_expect", node.address, user="+1555",
                              keys={"domain": "nowhere.carrier.test", "expect_code": 500}).assert_ok()
    assert time.monotonic() - started < 1.9  # well inside [dns] timeout: NXDOMAIN is an answer
    # in the node's aggregated log of hostile input (a name from the request): the source's first
    # such line, or the interval's counts naming the last one (issue 16)
    wait_until("the failed location logged",
               lambda: "nowhere.carrier.test: Name Resolution Failed" in node.log(), timeout=12.0)


def test_a_dns_server_that_never_answers_fails_the_call_within_the_timeout(tmp_path: Path) -> None:
    require_sipp()
    route = tmp_path / "trunk_route.py"
    route.write_text(ROUTE, encoding="utf-8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))
        config = {"dns": {"servers": [f"{LOOPBACK}:{silent.getsockname()[1]}"], "timeout": 1.0}}
        with edgeproxy_node(tmp_path / "node", config=config, route=str(route)) as node:
            started = time.monotonic()
            Sipp(tmp_path, "udp").run("uac_expect", node.address, user="+1555",
                                      keys={"domain": "carrier.test", "expect_code": 500}).assert_ok()
            elapsed = time.monotonic() - started
            assert 0.8 < elapsed < 4.0
            assert "no answer from the DNS within 1 s" in node.log()
