"""The RFC 3263 locator over a real DNS server: :class:`edgeproxy.transport.locator.DnsLocator`
(``twisted.names`` client) against an authoritative ``twisted.names`` server on 127.0.0.1 holding
the test zone ``carrier.test``, in the test's reactor (pytest-twisted). Every wait is bounded."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from support.dns_server import listen_dns
from edgeproxy.dns import DnsSettings, ServerQuery
from edgeproxy.interfaces import SendError
from edgeproxy.sip.endpoint import Endpoint
from edgeproxy.transport.locator import DnsLocator
from support.transport import within

ZONE = {
    "origin": "carrier.test",
    "records": {
        "carrier.test": [["NAPTR", 10, 10, "s", "SIP+D2T", "", "_sip._tcp.carrier.test"],
                         ["NAPTR", 20, 10, "s", "SIP+D2U", "", "_sip._udp.carrier.test"]],
        "_sip._tcp.carrier.test": [["SRV", 10, 1, 5071, "edge1.carrier.test"],
                                   ["SRV", 20, 1, 5072, "edge2.carrier.test"]],
        "_sip._udp.carrier.test": [["SRV", 10, 1, 5070, "edge1.carrier.test"]],
        "edge1.carrier.test": [["A", "127.0.0.2"]],
        "edge2.carrier.test": [["A", "127.0.0.3"], ["AAAA", "::3"]],
        "plain.carrier.test": [["A", "127.0.0.4", 1]],
    },
}
BOTH = frozenset({"UDP", "TCP"})


@pytest.fixture
def dns_port() -> Iterator[int]:
    port, listening = listen_dns(ZONE)
    yield port
    for p in listening:
        p.stopListening()


@pytest.fixture
def hosts(tmp_path: Path) -> str:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n127.0.0.9 trunk.local\n")
    return str(path)


@pytest.fixture
def silent_dns() -> Iterator[int]:
    """A UDP port that takes queries and never answers (a DNS server that is down)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def locator(port: int, hosts: str, **settings: object) -> DnsLocator:
    return DnsLocator(reactor, DnsSettings(servers=(("127.0.0.1", port),), **settings), hosts=hosts)  # type: ignore[arg-type]


def ep(transport: str, host: str, port: int) -> Endpoint:
    return Endpoint(transport, host, port)


@pytest_twisted.ensureDeferred
async def test_naptr_srv_and_addresses_from_a_real_server(dns_port: int, hosts: str) -> None:
    loc = locator(dns_port, hosts)
    targets = await within(loc.locate(ServerQuery("carrier.test"), BOTH))
    assert targets == [ep("TCP", "127.0.0.2", 5071), ep("TCP", "127.0.0.3", 5072), ep("TCP", "::3", 5072),
                       ep("UDP", "127.0.0.2", 5070)]
    loc.stop()


@pytest_twisted.ensureDeferred
async def test_cached_answers_locate_synchronously_without_queries(dns_port: int, hosts: str) -> None:
    loc = locator(dns_port, hosts)
    first = await within(loc.locate(ServerQuery("carrier.test"), BOTH))
    queries = loc.stats["queries"]
    again = loc.locate(ServerQuery("carrier.test"), BOTH)
    assert again.called  # fires in the same turn of the reactor, like an IP literal
    assert await again == first and loc.stats["queries"] == queries
    loc.stop()


@pytest_twisted.ensureDeferred
async def test_concurrent_locations_share_one_lookup_per_question(dns_port: int, hosts: str) -> None:
    loc = locator(dns_port, hosts)
    results = await within(gatherResults([loc.locate(ServerQuery("carrier.test"), BOTH) for _ in range(20)]))
    assert all(r == results[0] for r in results)
    assert loc.stats["queries"] == 1 + 2 + 4  # NAPTR; two SRV; A and AAAA of two targets
    loc.stop()


@pytest_twisted.ensureDeferred
async def test_nxdomain_gives_no_target_quickly_and_is_cached(dns_port: int, hosts: str) -> None:
    loc = locator(dns_port, hosts)
    started = time.monotonic()
    assert await within(loc.locate(ServerQuery("nowhere.carrier.test"), BOTH)) == []
    assert time.monotonic() - started < 1.0 and loc.stats["queries"] == 1  # NAPTR's NXDOMAIN ends it
    again = loc.locate(ServerQuery("nowhere.carrier.test"), BOTH)
    assert again.called and await again == []  # the SOA's negative TTL (RFC 2308)
    loc.stop()


@pytest_twisted.ensureDeferred
async def test_explicit_port_asks_addresses_only(dns_port: int, hosts: str) -> None:
    loc = locator(dns_port, hosts)
    targets = await within(loc.locate(ServerQuery("plain.carrier.test", port=5090), BOTH))
    assert targets == [ep("UDP", "127.0.0.4", 5090)]
    assert loc.stats["queries"] == 2
    loc.stop()


@pytest_twisted.ensureDeferred
async def test_a_silent_dns_server_fails_the_location_within_the_timeout(silent_dns: int, hosts: str) -> None:
    loc = locator(silent_dns, hosts, timeout=0.6)
    started = time.monotonic()
    with pytest.raises(SendError) as err:
        await within(loc.locate(ServerQuery("carrier.test"), BOTH), 5.0)
    elapsed = time.monotonic() - started
    assert err.value.reason == "Name Resolution Failed" and err.value.status == 503
    assert 0.5 < elapsed < 1.5
    assert loc.stats["timeouts"] == 1
    loc.stop()


@pytest_twisted.ensureDeferred
async def test_hosts_file_names_need_no_dns(silent_dns: int, hosts: str) -> None:
    loc = locator(silent_dns, hosts)
    d = loc.locate(ServerQuery("trunk.local"), BOTH)
    assert d.called and await d == [ep("UDP", "127.0.0.9", 5060)]
    d = loc.locate(ServerQuery("localhost", transport="TCP", port=5080), BOTH)
    assert await d == [ep("TCP", "127.0.0.1", 5080)]
    assert loc.stats["queries"] == 0
    loc.stop()


@pytest_twisted.ensureDeferred
async def test_stop_fails_the_locations_still_waiting(silent_dns: int, hosts: str) -> None:
    loc = locator(silent_dns, hosts, timeout=5.0)
    d = loc.locate(ServerQuery("carrier.test"), BOTH)
    loc.stop()
    with pytest.raises(SendError):
        await within(d, 1.0)
