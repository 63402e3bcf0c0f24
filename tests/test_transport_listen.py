"""Listen specs, listeners and the advertised local endpoint (RFC 3261 §18.1.1 sent-by)."""

from __future__ import annotations

import gc
import socket

import pytest
import pytest_twisted
from support.transport import (
    RecordingSink,
    listening,
    needs_ipv6,
    request,
)
from twisted.internet.error import CannotListenError

from edgeproxy.sip.address import TRANSPORTS, canonical_host, ip_literal
from edgeproxy.sip.endpoint import Endpoint
from edgeproxy.transport import parse_listen


@pytest.mark.parametrize(("spec", "expected"), [
    ("udp:127.0.0.1:5060", Endpoint("UDP", "127.0.0.1", 5060)),
    ("tcp:0.0.0.0:5080", Endpoint("TCP", "0.0.0.0", 5080)),
    ("udp:[::1]:5060", Endpoint("UDP", "::1", 5060)),
    ("TCP:[::]:5060", Endpoint("TCP", "::", 5060)),
    ("udp:[0:0::1]", Endpoint("UDP", "::1", 5060)),
    ("  tcp:10.0.0.1  ", Endpoint("TCP", "10.0.0.1", 5060)),
    ("udp:127.0.0.1:0", Endpoint("UDP", "127.0.0.1", 0)),
])
def test_parse_listen(spec, expected):
    assert parse_listen(spec) == expected


def test_parse_listen_round_trips_str_of_endpoint():
    for spec in ("udp:[::1]:5060", "tcp:127.0.0.1:5070"):
        assert str(parse_listen(spec)) == spec


@pytest.mark.parametrize(("spec", "complaint"), [
    ("127.0.0.1:5060", "transport must be one of udp, tcp, tls, ws, wss"),
    ("sctp:127.0.0.1:5061", "transport must be one of"),
    ("udp", 'must be "transport:host:port"'),
    ("udp:", "missing host"),
    ("udp::5060", "missing host"),
    ("udp:::1:5060", "in brackets"),
    ("udp:[::1:5060", "unterminated"),
    ("udp:[::1]5060", "after ']'"),
    ("udp:[127.0.0.1]:5060", "only IPv6"),
    ("udp:localhost:5060", "names are not resolved for listening"),
    ("udp:[fe80::1%eth0]:5060", "host must be an IPv4 address or an IPv6 address"),
    ("udp:127.0.0.1:sip", "port must be a number from 0 to 65535, not 'sip'"),
    ("udp:127.0.0.1:", "port must be a number"),
    ("udp:127.0.0.1:70000", "port must be from 0 to 65535"),
])
def test_parse_listen_errors_say_what_is_wrong(spec, complaint):
    with pytest.raises(ValueError) as info:
        parse_listen(spec)
    assert complaint in str(info.value)
    assert repr(spec) in str(info.value)


def test_ip_literal():
    assert ip_literal("127.0.0.1") == (socket.AF_INET, "127.0.0.1")
    assert ip_literal("[2001:DB8::1]") == (socket.AF_INET6, "2001:db8::1")
    assert ip_literal("fe80::1%eth0") == (socket.AF_INET6, "fe80::1%eth0")
    assert ip_literal("example.com") is None
    assert ip_literal("1.2.3") is None
    assert ip_literal("127.0.0.1%eth0") is None and ip_literal("fe80::1%") is None
    # only IPv6 goes in brackets (RFC 3986 §3.2.2): the one parser says so, not each caller
    assert ip_literal("[1.2.3.4]") is None and canonical_host("[1.2.3.4]") is None


def test_one_list_of_transports_and_one_host_check():
    assert TRANSPORTS == ("UDP", "TCP", "TLS", "WS", "WSS")
    assert canonical_host("[2001:DB8:0::1]") == "2001:db8::1" and canonical_host("2001:db8::1") == "2001:db8::1"
    assert canonical_host("SIP.Example.COM") == "sip.example.com"
    assert canonical_host("1.2.3") is None and canonical_host("300.1.1.1") is None
    assert canonical_host("my host") is None and canonical_host("[example.com]") is None


@pytest_twisted.ensureDeferred
async def test_several_listeners_and_local_endpoint(make_manager):
    manager = make_manager()
    udp = await listening(manager, "udp:127.0.0.1:0")
    tcp = await listening(manager, "tcp:127.0.0.1:0")
    assert manager.local_endpoints() == [udp.local, tcp.local]
    assert manager.local_endpoint("UDP") == udp.local
    assert manager.local_endpoint("TCP", Endpoint("TCP", "192.0.2.7", 5060)) == tcp.local
    assert manager.local_endpoint("UDP", Endpoint("UDP", "2001:db8::7", 5060)) is None
    assert manager.local_endpoint("TCP", Endpoint("TCP", "2001:db8::7", 5060)) == tcp.local
    assert manager.local_endpoint("TLS") is None


@pytest_twisted.ensureDeferred
async def test_wildcard_listener_advertises_the_configured_host(make_manager):
    manager = make_manager(advertise="sip.example.com")
    listener = await listening(manager, "udp:0.0.0.0:0")
    assert listener.bound.host == "0.0.0.0"
    assert listener.local == Endpoint("UDP", "sip.example.com", listener.bound.port)
    assert manager.local_endpoint("UDP") == listener.local
    explicit = await manager.listen(parse_listen("tcp:0.0.0.0:0"), advertise="203.0.113.9")
    assert explicit.local.host == "203.0.113.9"


@pytest_twisted.ensureDeferred
async def test_wildcard_listener_without_advertise_guesses_a_concrete_address(make_manager, clients):
    sink = RecordingSink()
    manager = make_manager(sink)
    listener = await listening(manager, "udp:0.0.0.0:0")
    host = listener.local.host
    assert host != "0.0.0.0" and ip_literal(host) is not None
    client = clients.udp()
    client.transport.write(request(), ("127.0.0.1", listener.bound.port))
    await sink.wait_messages(1)
    assert sink.messages[0][1].local == listener.local


@needs_ipv6
@pytest_twisted.ensureDeferred
async def test_ipv4_and_ipv6_wildcards_share_a_port(make_manager):
    manager = make_manager(advertise="2001:db8::5")
    for transport in ("udp", "tcp"):
        v4 = await listening(manager, f"{transport}:0.0.0.0:0")
        v6 = await listening(manager, f"{transport}:[::]:{v4.bound.port}")
        assert v6.bound.port == v4.bound.port
        assert v6.local.host == "2001:db8::5"
        assert v4.local.host != "2001:db8::5"  # an IPv6 advertise address does not apply to IPv4


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest_twisted.ensureDeferred
async def test_listening_twice_on_a_port_fails(make_manager):
    manager = make_manager()
    first = await listening(manager, "udp:127.0.0.1:0")
    with pytest.raises(CannotListenError):
        await listening(manager, f"udp:127.0.0.1:{first.bound.port}")
    gc.collect()  # twisted's udp.Port leaks the socket of a failed bind; let it go here, not later
    with pytest.raises(ValueError):
        await manager.listen(Endpoint("UDP", "localhost", 5060))
