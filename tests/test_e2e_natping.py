"""NAT keep-alives end to end: ``twistd edgeproxy`` with ``[nathelper] natping_interval = 1`` and a
route that marks every REGISTER's contacts as behind NAT (``msg.nat = True``, OpenSIPS's
``setbflag(NAT)``) -- and as SIP-pinged (``msg.sipping = True``) for users named ``sipping-*`` --
before the shipped default route saves them.

The phones are raw UDP sockets, since the test must see the keep-alive bytes themselves: each
registers from 127.0.0.1:<port> (its "public" NAT address) a Contact on 127.0.0.2 (its "private"
address, where another socket listens and must hear nothing). Then it receives CRLFCRLF, or OPTIONS
it answers or ignores, every second from the node's SIP port. A phone that ignores them is removed
after ``max_pings_lost`` pings, and a call to it gets 404 from the default route's lookup (SIPp as
the caller). Loopback only, every wait bounded.
"""

from __future__ import annotations

import os
import re
import socket
import time
from itertools import pairwise
from pathlib import Path
from typing import Iterator

import pytest

from edgeproxy.sip import Request, Response, parse_datagram
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, edgeproxy_node, free_port, require_sipp

PRIVATE = "127.0.0.2"  # where the phones' Contacts point: never to be pinged
INTERVAL = 1.0
MAX_LOST = 2

ROUTE = '''\
"""Mark REGISTERs' contacts as behind NAT (SIP-pinged for sipping-* users), then the default route."""

import edgeproxy_routes.default as default


async def request_route(msg):
    if msg.is_method("REGISTER"):
        msg.nat = True                                   # setbflag(NAT)
        msg.sipping = msg.tU.startswith("sipping-")      # setbflag(SIPPING)
    await default.request_route(msg)
'''


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    require_sipp()
    workdir = tmp_path_factory.mktemp("natping")
    route = workdir / "nat_route.py"
    route.write_text(ROUTE, encoding="utf-8")
    config = {"nathelper": {"natping_interval": INTERVAL, "remove_on_timeout": True, "max_pings_lost": MAX_LOST}}
    with edgeproxy_node(workdir / "node", config=config, route=str(route), transports=("udp",)) as n:
        yield n


class Phone:
    """A UA behind NAT: a socket on 127.0.0.1 (what the node sees) and one on its private address."""

    def __init__(self, user: str, node: EdgeproxyNode) -> None:
        self.user = user
        self.node = node
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.private = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.private.bind((PRIVATE, free_port(PRIVATE)))
        self.contact = f"sip:{user}@{PRIVATE}:{self.private.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()
        self.private.close()

    def register(self) -> None:
        text = (
            f"REGISTER sip:{self.node.address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.contact.split('@')[1]};branch=z9hG4bK{self.user}{os.getpid()};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{self.user}@{LOOPBACK}>;tag={self.user}\r\n"
            f"To: <sip:{self.user}@{LOOPBACK}>\r\nCall-ID: {self.user}-{os.getpid()}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <{self.contact}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        )
        self.sock.sendto(text.encode(), (self.node.host, self.node.port))
        data, _ = self.receive(5.0)
        reply = parse_datagram(data)
        assert isinstance(reply, Response) and reply.status == 200, data

    def receive(self, timeout: float) -> tuple[bytes, tuple[str, int]]:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recvfrom(65535)
        except TimeoutError:
            pytest.fail(f"{self.user}: nothing from the node within {timeout} s\n{self.node.log()[-3000:]}",
                        pytrace=False)

    def pings(self, n: int, answer: bool = False) -> list[tuple[float, bytes, Request | None]]:
        """The next ``n`` pings (arrival time, bytes, parsed SIP ping or None), answering SIP ones
        with 200 when ``answer``."""
        out = []
        for _ in range(n):
            data, addr = self.receive(3 * INTERVAL + 2)
            assert addr == (self.node.host, self.node.port)  # from the socket the REGISTER went to
            message = parse_datagram(data) if data.strip(b"\r\n") else None
            assert message is None or isinstance(message, Request), data
            if answer and message is not None:
                self.sock.sendto(message.make_response(200, to_tag="phone").to_bytes(), addr)
            out.append((time.monotonic(), data, message))
        return out

    def assert_private_address_silent(self) -> None:
        self.private.settimeout(0.05)
        with pytest.raises(TimeoutError):
            self.private.recvfrom(65535)


@pytest.fixture
def phones(node: EdgeproxyNode) -> Iterator[list[Phone]]:
    made: list[Phone] = []
    yield made
    for p in made:
        p.close()


def phone(phones: list[Phone], user: str, node: EdgeproxyNode) -> Phone:
    p = Phone(user, node)
    phones.append(p)
    return p


def spacing(times: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(times)]


def paced_by_the_interval(times: list[float]) -> bool:
    """Pings come about once per interval: on average within half to twice it, none more than three
    intervals apart (room for a loaded machine; the exact pacing is tested on a task.Clock)."""
    gaps = spacing(times)
    return 0.5 * INTERVAL < sum(gaps) / len(gaps) < 2 * INTERVAL and max(gaps) < 3 * INTERVAL


def test_nat_phone_gets_crlf_keepalives_every_interval_at_its_public_address(node: EdgeproxyNode,
                                                                             phones: list[Phone]) -> None:
    p = phone(phones, "crlf-phone", node)
    p.register()
    got = p.pings(4)
    assert [data for _, data, _ in got] == [b"\r\n\r\n"] * 4
    assert paced_by_the_interval([t for t, _, _ in got]), got
    p.assert_private_address_silent()


def test_sipping_phone_gets_options_and_its_answers_are_swallowed(node: EdgeproxyNode, phones: list[Phone]) -> None:
    p = phone(phones, "sipping-ok", node)
    p.register()
    got = p.pings(MAX_LOST + 3, answer=True)  # more than max_pings_lost: answered, so never removed
    for _, _, ping in got:
        assert ping is not None and ping.method == "OPTIONS"
        assert ping.uri_text == p.contact and str(ping.to.uri) == p.contact
        assert str(ping.from_.uri) == f"sip:pinger@{LOOPBACK}"
        assert ping.top_via.branch.startswith("z9hG4bKnp") and ping.top_via.port == node.port
    assert len({ping.top_via.branch for _, _, ping in got}) == len(got)
    assert paced_by_the_interval([t for t, _, _ in got]), got
    p.assert_private_address_silent()
    log = node.log()
    assert "stray response" not in log  # the node took the 200s as the pinger's, silently
    assert not re.search(r"sipping-ok contact .* removed", log)


def test_phone_that_stops_answering_is_removed_and_calls_to_it_get_404(node: EdgeproxyNode, phones: list[Phone],
                                                                       tmp_path: Path) -> None:
    p = phone(phones, "sipping-gone", node)
    p.register()
    p.pings(1, answer=True)  # alive at first
    p.pings(MAX_LOST)  # then silent: the next due ping is not sent, the binding goes
    deadline = time.monotonic() + 3 * INTERVAL + 5
    pattern = rf"nathelper: sipping-gone contact {re.escape(p.contact)} did not answer {MAX_LOST} OPTIONS pings"
    while not re.search(pattern, node.log()):
        assert time.monotonic() < deadline, node.log()[-3000:]
        time.sleep(0.1)
    p.sock.settimeout(2 * INTERVAL + 0.5)
    with pytest.raises(TimeoutError):  # no more pings once removed
        p.sock.recvfrom(65535)
    Sipp(tmp_path / "caller", "udp").run("uac_expect", node.address, user="sipping-gone",
                                         keys={"domain": LOOPBACK, "expect_code": 404}).assert_ok()
