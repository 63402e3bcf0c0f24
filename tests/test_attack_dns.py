"""Issue 16, finding 7: names in attacker-controlled URIs were resolved with one UDP socket per DNS
query and no bound: a burst of requests naming random hosts opened as many sockets and lookups. The
locator now runs at most ``[dns] max_queries`` lookups at once (each keeps its own random source port,
RFC 5452 §9.2, so the cap is also the cap on resolver sockets); a question beyond it fails at once
("Name Resolution Failed", 503), is counted (``dns:refused``) and is not cached. Names are located
only where a route relays (``t_relay``): responses go to the Via's ``received`` address, never to a
name (RFC 3261 §18.2.2 with §18.2.1's stamp).

Against a real UDP socket that takes queries and never answers (a DNS server that is down).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from support.transport import within
from test_dns_locator import BOTH, hosts, silent_dns  # noqa: F401 - the fixtures
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from edgeproxy.dns import DnsSettings, ServerQuery
from edgeproxy.interfaces import SendError
from edgeproxy.transport.locator import DnsLocator


def test_the_default_cap() -> None:
    assert DnsSettings().max_queries == 64


@pytest_twisted.ensureDeferred
async def test_a_burst_of_random_names_is_capped(silent_dns: int, hosts: str) -> None:  # noqa: F811
    loc = DnsLocator(reactor, DnsSettings(servers=(("127.0.0.1", silent_dns),), timeout=0.6, max_queries=8),
                     hosts=hosts)
    ds = [loc.locate(ServerQuery(f"r{i}.attacker.test"), BOTH) for i in range(200)]
    assert loc.stats["queries"] <= 8  # on main: a lookup (and a socket) for every name
    assert loc.in_flight <= 8
    refused = [d for d in ds if d.called]
    assert len(refused) >= 190  # failed at once, no lookup, no socket
    results = await within(DeferredList(ds, consumeErrors=True), 5.0)
    for ok, result in results:  # no target (the proxy's 503) or the location's 503
        assert (ok and result == []) or (result.check(SendError) and result.value.status == 503)
    assert loc.stats["refused"] >= 190
    for _ in range(50):  # the lookups themselves end on their own timeouts, after the locations'
        if loc.in_flight == 0:
            break
        await deferLater(reactor, 0.1, lambda: None)
    assert loc.in_flight == 0
    # the cap frees as lookups end: a later burst gets its lookups again
    d = loc.locate(ServerQuery("later.attacker.test"), BOTH)
    assert loc.stats["queries"] > 8 and not d.called
    with pytest.raises(SendError):  # the silent server: the location times out
        await within(d, 5.0)
    loc.stop()


def test_names_in_requests_are_not_resolved_unless_a_route_relays(silent_dns: int, hosts: str) -> None:  # noqa: F811
    """Host names an attacker writes into a request -- the Via's sent-by, From, To, Contact -- are
    not looked up to answer it: the replies go to the source (the Via's ``received``, RFC 3261
    §18.2.2 with §18.2.1's stamp, and ``rport`` RFC 3581), the registrar stores the Contact as text.
    Only a route's relay to a name locates it. The default route, a real DnsLocator (whose DNS server
    would never answer): not one query, and every request answered at once. (A guard: replies went
    to ``received`` before issue 16 too; what issue 16 bounded is the lookups a route's relay makes,
    ``test_a_burst_of_random_names_is_capped``.)"""
    from support.proxy import LOCAL_UDP, World, sip

    from edgeproxy.sip import Response
    from edgeproxy.sip.endpoint import Endpoint, Flow

    loc = DnsLocator(reactor, DnsSettings(servers=(("127.0.0.1", silent_dns),), timeout=0.5), hosts=hosts)
    world = World(locator=loc)
    src = Flow(LOCAL_UDP, Endpoint("UDP", "192.0.2.66", 5099))
    answered = 0
    for i, (line, method, to) in enumerate([
            ("REGISTER sip:example.com SIP/2.0", "REGISTER", "<sip:m@example.com>"),
            ("INVITE sip:nobody@example.com SIP/2.0", "INVITE", "<sip:nobody@t.attacker.test>"),
            ("OPTIONS sip:example.com SIP/2.0", "OPTIONS", "<sip:nobody@t.attacker.test>"),
            ("MESSAGE sip:nobody@example.com SIP/2.0", "MESSAGE", "<sip:nobody@t.attacker.test>")]):
        sent = world.receive(sip(line, f"Via: SIP/2.0/UDP v{i}.attacker.test:5099;branch=z9hG4bK-n{i}",
                                 "Max-Forwards: 70", f"From: <sip:m@f.attacker.test>;tag=n{i}",
                                 f"To: {to}", f"Call-ID: n{i}", f"CSeq: 1 {method}",
                                 "Contact: <sip:m@c.attacker.test:5060>"), src)
        replies = [s for s in sent if isinstance(s.message, Response) and s.message.cseq.method == method]
        assert replies and {s.destination.remote.host for s in sent} == {"192.0.2.66"}, sent
        answered += 1
    assert answered == 4
    assert loc.stats["queries"] == 0 and loc.in_flight == 0
    loc.stop()
