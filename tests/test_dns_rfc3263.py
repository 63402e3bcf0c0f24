"""RFC 3263 server location without I/O: the procedure of :mod:`edgeproxy.dns.rfc3263` driven with
hand-written zones, RFC 2782 ordering with a seeded random source, the answer cache, the hosts file,
and the URI → query rules of the proxy (:func:`edgeproxy.proxy.hops.uri_query`)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from edgeproxy.dns import (
    A,
    AAAA,
    NAPTR,
    SRV,
    Answer,
    AnswerCache,
    Naptr,
    Question,
    ServerQuery,
    Srv,
    is_host_name,
    locate,
    order_srv,
    parse_dns_server,
    parse_hosts,
    select_naptr,
    srv_name,
)
from edgeproxy.proxy.hops import uri_query
from edgeproxy.sip.endpoint import Endpoint
from edgeproxy.sip.uri import parse_uri

ALL = frozenset({"UDP", "TCP", "TLS"})


class Zone:
    """Records by name; a name with no records at all is NXDOMAIN, a listed name without the asked
    type an empty answer (NODATA), as an authoritative server answers."""

    def __init__(self, records: dict[str, list[Any]], failing: set[Question] = frozenset()) -> None:
        self.records = records
        self.failing = failing

    def answer(self, q: Question) -> Answer:
        if q in self.failing:
            return Answer.failure()
        if q.name not in self.records:
            return Answer(nxdomain=True, ttl=30)
        kinds = {NAPTR: Naptr, SRV: Srv}
        wanted = [r for r in self.records[q.name]
                  if (isinstance(r, kinds[q.rtype]) if q.rtype in kinds
                      else isinstance(r, str) and (":" in r) == (q.rtype == AAAA))]
        return Answer(tuple(wanted), 60)


def run(zone: Zone, query: ServerQuery, transports: frozenset[str] = ALL, seed: int = 1,
        **options: Any) -> tuple[list[Endpoint], list[tuple[Question, ...]]]:
    """Drive the procedure to its end; returns the targets and the rounds of questions it asked."""
    procedure = locate(query, transports, random.Random(seed), **options)
    rounds: list[tuple[Question, ...]] = []
    try:
        questions = next(procedure)
        while True:
            rounds.append(questions)
            questions = procedure.send({q: zone.answer(q) for q in questions})
    except StopIteration as done:
        return done.value, rounds


def ep(text: str) -> Endpoint:
    transport, rest = text.split(":", 1)
    host, port = rest.rsplit(":", 1)
    return Endpoint(transport.upper(), host.strip("[]"), int(port))


CARRIER = Zone({
    "carrier.test": [
        Naptr(20, 10, "s", "SIP+D2U", "", "_sip._udp.carrier.test."),
        Naptr(10, 10, "s", "SIP+D2T", "", "_sip._tcp.carrier.test."),
        Naptr(30, 10, "s", "SIPS+D2T", "", "_sips._tcp.carrier.test."),
        Naptr(5, 10, "s", "SIP+D2W", "", "_sip._ws.carrier.test."),   # WebSocket: ignored
        Naptr(5, 10, "u", "E2U+sip", "!^.*$!sip:x@y!", "."),          # ENUM-style: ignored
    ],
    "_sip._tcp.carrier.test": [Srv(10, 0, 5071, "edge1.carrier.test."), Srv(20, 0, 5072, "edge2.carrier.test.")],
    "_sip._udp.carrier.test": [Srv(10, 0, 5070, "edge1.carrier.test.")],
    "_sips._tcp.carrier.test": [Srv(10, 0, 5061, "edge1.carrier.test.")],
    "edge1.carrier.test": ["127.0.0.2"],
    "edge2.carrier.test": ["127.0.0.3", "::3"],
})


# -- §4.1 transport selection ---------------------------------------------------------------------

def test_naptr_orders_transports_and_srv_gives_targets_and_ports() -> None:
    targets, rounds = run(CARRIER, ServerQuery("carrier.test"))
    assert targets == [ep("tcp:127.0.0.2:5071"), ep("tcp:127.0.0.3:5072"), ep("tcp:[::3]:5072"),
                       ep("udp:127.0.0.2:5070"), ep("tls:127.0.0.2:5061")]
    assert rounds[0] == (Question("carrier.test", NAPTR),)
    assert [q.name for q in rounds[1]] == ["_sip._tcp.carrier.test", "_sip._udp.carrier.test",
                                           "_sips._tcp.carrier.test"]
    assert {q.name for q in rounds[2]} == {"edge1.carrier.test", "edge2.carrier.test"}
    assert len(rounds) == 3  # the SRVs of all NAPTRs and the addresses of all targets: one round each


def test_naptr_keeps_only_transports_we_can_send_on() -> None:
    targets, _ = run(CARRIER, ServerQuery("carrier.test"), frozenset({"UDP"}))
    assert targets == [ep("udp:127.0.0.2:5070")]


def test_sips_uri_uses_only_sips_services() -> None:
    targets, _ = run(CARRIER, ServerQuery("carrier.test", secure=True))
    assert targets == [ep("tls:127.0.0.2:5061")]


def test_select_naptr_filters_flags_services_and_secure() -> None:
    records = CARRIER.records["carrier.test"]
    assert select_naptr(records, False, ALL) == [("TCP", "_sip._tcp.carrier.test"), ("UDP", "_sip._udp.carrier.test"),
                                                 ("TLS", "_sips._tcp.carrier.test")]
    assert select_naptr(records, True, ALL) == [("TLS", "_sips._tcp.carrier.test")]
    assert select_naptr(records, True, frozenset({"UDP", "TCP"})) == []


def test_no_naptr_falls_back_to_srv_for_each_supported_transport() -> None:
    zone = Zone({"carrier.test": ["127.0.0.9"],
                 "_sip._udp.carrier.test": [Srv(10, 0, 5070, "edge1.carrier.test")],
                 "_sip._tcp.carrier.test": [Srv(10, 0, 5071, "edge1.carrier.test")],
                 "edge1.carrier.test": ["127.0.0.2"]})
    targets, rounds = run(zone, ServerQuery("carrier.test"))
    assert targets == [ep("udp:127.0.0.2:5070"), ep("tcp:127.0.0.2:5071")]
    assert [q.name for q in rounds[1]] == ["_sip._udp.carrier.test", "_sip._tcp.carrier.test",
                                           "_sips._tcp.carrier.test"]


def test_naptr_switched_off_goes_straight_to_srv() -> None:
    targets, rounds = run(CARRIER, ServerQuery("carrier.test"), naptr=False)
    assert rounds[0][0] == Question("_sip._udp.carrier.test", SRV)
    assert targets[0] == ep("udp:127.0.0.2:5070")


def test_no_naptr_no_srv_falls_back_to_a_and_aaaa_on_udp_5060() -> None:
    zone = Zone({"trunk.test": ["127.0.0.7", "::7"]})
    targets, _ = run(zone, ServerQuery("trunk.test"))
    assert targets == [ep("udp:127.0.0.7:5060"), ep("udp:[::7]:5060")]


def test_sips_falls_back_to_tls_5061() -> None:
    targets, _ = run(Zone({"trunk.test": ["127.0.0.7"]}), ServerQuery("trunk.test", secure=True))
    assert targets == [ep("tls:127.0.0.7:5061")]


def test_explicit_port_means_a_aaaa_only_on_the_explicit_or_default_transport() -> None:
    targets, rounds = run(CARRIER, ServerQuery("edge2.carrier.test", port=5099))
    assert targets == [ep("udp:127.0.0.3:5099"), ep("udp:[::3]:5099")]
    assert {q.rtype for q in rounds[0]} == {A, AAAA} and len(rounds) == 1
    targets, _ = run(CARRIER, ServerQuery("edge2.carrier.test", transport="TCP", port=5099))
    assert targets[0] == ep("tcp:127.0.0.3:5099")


def test_explicit_transport_skips_naptr_but_asks_that_transports_srv() -> None:
    targets, rounds = run(CARRIER, ServerQuery("carrier.test", transport="UDP"))
    assert rounds[0] == (Question("_sip._udp.carrier.test", SRV),)
    assert targets == [ep("udp:127.0.0.2:5070")]
    targets, _ = run(Zone({"trunk.test": ["127.0.0.7"]}), ServerQuery("trunk.test", transport="TCP"))
    assert targets == [ep("tcp:127.0.0.7:5060")]  # no SRV: A on the default port


def test_srv_switched_off_means_a_aaaa_only() -> None:
    targets, rounds = run(CARRIER, ServerQuery("edge1.carrier.test"), srv=False)
    assert targets == [ep("udp:127.0.0.2:5060")] and len(rounds) == 1


def test_nxdomain_ends_at_the_first_question() -> None:
    targets, rounds = run(CARRIER, ServerQuery("nowhere.carrier.test"))
    assert targets == [] and len(rounds) == 1


def test_failed_naptr_query_is_treated_as_no_naptr() -> None:
    zone = Zone(CARRIER.records, failing={Question("carrier.test", NAPTR)})
    targets, _ = run(zone, ServerQuery("carrier.test"))
    assert targets[0] == ep("udp:127.0.0.2:5070")  # SRV fallback order: UDP first


def test_srv_target_dot_means_not_offered() -> None:
    zone = Zone({"trunk.test": ["127.0.0.7"], "_sip._udp.trunk.test": [Srv(0, 0, 0, ".")]})
    targets, _ = run(zone, ServerQuery("trunk.test", transport="UDP"))
    assert targets == []  # an SRV answer existed: no A fallback


def test_hosts_file_names_are_used_as_they_are() -> None:
    targets, rounds = run(CARRIER, ServerQuery("localhost"), static=("127.0.0.1",))
    assert targets == [ep("udp:127.0.0.1:5060")] and rounds == []


def test_srv_target_without_address_is_skipped() -> None:
    zone = Zone({"_sip._udp.t.test": [Srv(10, 0, 5070, "gone.t.test"), Srv(20, 0, 5071, "here.t.test")],
                 "t.test": [], "here.t.test": ["127.0.0.5"]})
    targets, _ = run(zone, ServerQuery("t.test"), naptr=False)
    assert targets == [ep("udp:127.0.0.5:5071")]


# -- RFC 2782 ordering ------------------------------------------------------------------------------

def test_srv_priority_first_then_weighted_random() -> None:
    records = [Srv(20, 0, 1, "c"), Srv(10, 60, 2, "a"), Srv(10, 40, 3, "b"), Srv(30, 0, 4, "d")]
    firsts: Counter[str] = Counter()
    rng = random.Random(42)
    for _ in range(2000):
        ordered = order_srv(records, rng)
        assert [r.priority for r in ordered] == [10, 10, 20, 30]
        firsts[ordered[0].target] += 1
    # weights 60:40 -> a first about 60% of the time (binomial, n=2000: well within ±5%)
    assert 0.55 < firsts["a"] / 2000 < 0.65


def test_srv_order_is_reproducible_with_a_seed() -> None:
    records = [Srv(10, w, p, f"t{p}") for p, w in ((1, 10), (2, 20), (3, 30), (4, 0))]
    assert order_srv(records, random.Random(7)) == order_srv(records, random.Random(7))


def test_srv_zero_weights_are_all_used() -> None:
    records = [Srv(10, 0, p, f"t{p}") for p in range(5)]
    assert sorted(r.port for r in order_srv(records, random.Random(3))) == [0, 1, 2, 3, 4]


def test_srv_zero_weight_rarely_first_among_weighted() -> None:
    records = [Srv(10, 0, 1, "zero"), Srv(10, 100, 2, "heavy")]
    rng = random.Random(5)
    zero_first = sum(order_srv(records, rng)[0].target == "zero" for _ in range(1000))
    assert zero_first < 30  # chance 1/101 each


def test_srv_names() -> None:
    assert srv_name("UDP", "x.test") == "_sip._udp.x.test"
    assert srv_name("TCP", "x.test") == "_sip._tcp.x.test"
    assert srv_name("TLS", "x.test") == "_sips._tcp.x.test"


# -- cache -----------------------------------------------------------------------------------------

def test_cache_honours_ttl() -> None:
    cache = AnswerCache(10)
    q = Question("x.test", A)
    cache.put(q, Answer(("127.0.0.1",), 30), now=100)
    assert cache.get(q, 129.9) == Answer(("127.0.0.1",), 30)
    assert cache.get(q, 130.0) is None and len(cache) == 0


def test_cache_is_bounded_least_recently_used_goes() -> None:
    cache = AnswerCache(2)
    a, b, c = (Question(n, A) for n in "abc")
    cache.put(a, Answer(("1.1.1.1",), 60), 0)
    cache.put(b, Answer(("2.2.2.2",), 60), 0)
    assert cache.get(a, 1) is not None  # a used: b is now the oldest
    cache.put(c, Answer(("3.3.3.3",), 60), 1)
    assert len(cache) == 2 and cache.get(b, 2) is None and cache.get(a, 2) is not None


def test_cache_keeps_no_failures_no_ttl0_and_caps_long_ttls() -> None:
    cache = AnswerCache(10, max_ttl=100)
    q = Question("x.test", A)
    cache.put(q, Answer.failure(), 0)
    cache.put(Question("y.test", A), Answer(("1.1.1.1",), 0), 0)
    assert len(cache) == 0
    cache.put(q, Answer(("1.1.1.1",), 86400), 0)
    assert cache.get(q, 99) is not None and cache.get(q, 100) is None
    nx = Answer(nxdomain=True, ttl=30)
    cache.put(q, nx, 0)
    assert cache.get(q, 10) == nx  # negative answers are cached for their (SOA) TTL


def test_cache_size_zero_caches_nothing() -> None:
    cache = AnswerCache(0)
    cache.put(Question("x", A), Answer(("1.1.1.1",), 60), 0)
    assert len(cache) == 0


# -- hosts, settings, URIs --------------------------------------------------------------------------

def test_parse_hosts() -> None:
    table = parse_hosts("127.0.0.1 localhost vm # comment\n::1 localhost ip6-localhost\n"
                        "# 10.0.0.1 commented\nbogus line\n192.0.2.1 Trunk.Example.\n")
    assert table["localhost"] == ("127.0.0.1", "::1")
    assert table["vm"] == ("127.0.0.1",)
    assert table["trunk.example"] == ("192.0.2.1",)
    assert "commented" not in table and "line" not in table


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:5353", ("::1", 5353)), ("::1", ("::1", 53)),
])
def test_parse_dns_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_dns_server(text) == expected


@pytest.mark.parametrize("text", ["ns.example", "127.0.0.1:0", "127.0.0.1:99999", "", "1.2.3"])
def test_parse_dns_server_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dns_server(text)


@pytest.mark.parametrize(("host", "name"), [
    ("carrier.example", True), ("gw1", True), ("a-1.b2", True), ("localhost", True), ("1.2.3.4.example", True),
    ("192.0.2.1", False), ("::1", False), ("[2001:db8::1]", False), ("1.2.3", True), ("", False),
])
def test_is_host_name(host: str, name: bool) -> None:
    assert is_host_name(host) is name


@pytest.mark.parametrize(("uri", "query"), [
    ("sip:+1555@carrier.example", ServerQuery("carrier.example")),
    ("sip:proxy.example;lr", ServerQuery("proxy.example")),
    ("sips:bob@Carrier.Example", ServerQuery("carrier.example", secure=True)),
    ("sip:x@carrier.example:5080", ServerQuery("carrier.example", port=5080)),
    ("sip:x@carrier.example;transport=tcp", ServerQuery("carrier.example", transport="TCP")),
    ("sips:x@carrier.example;transport=tcp", ServerQuery("carrier.example", secure=True, transport="TLS")),
    ("sip:x@10.0.0.1;maddr=relay.example", ServerQuery("relay.example")),
    ("sip:x@relay.example;maddr=10.0.0.1", None),
    ("sip:x@192.0.2.1", None),
    ("sip:x@[2001:db8::1]:5060", None),
    ("sip:x@abc.invalid;transport=ws", None),
    ("sip:x@abc.invalid", None),
    ("sip:x@host.example;transport=ws", None),
])
def test_uri_query(uri: str, query: ServerQuery | None) -> None:
    assert uri_query(parse_uri(uri)) == query


# -- the [dns] section of the configuration -------------------------------------------------------

def test_dns_section_defaults_and_keys(tmp_path) -> None:
    from edgeproxy.config import load_config
    from edgeproxy.dns import DnsSettings

    assert load_config().dns == DnsSettings()
    path = tmp_path / "edge.toml"
    path.write_text('[dns]\nnaptr = false\nsrv = true\nfailover = false\nservers = ["127.0.0.1:5353", "::1"]\n'
                    "timeout = 0.5\ncache_size = 0\n")
    assert load_config(str(path)).dns == DnsSettings(naptr=False, srv=True, failover=False,
                                                     servers=(("127.0.0.1", 5353), ("::1", 53)), timeout=0.5,
                                                     cache_size=0)


@pytest.mark.parametrize(("text", "message"), [
    ('servers = ["ns1.example"]', 'config: dns.servers[0]: must be an IP address (a DNS server is not looked up'),
    ('servers = "127.0.0.1"', 'config: dns.servers: must be a list of "ip[:port]" strings'),
    ("timeout = 0", "config: dns.timeout: must be a number of seconds > 0"),
    ("cache_size = -1", "config: dns.cache_size: must be an integer >= 0"),
    ("naptr = 1", "config: dns.naptr: must be true or false"),
    ("naptrr = true", 'config: dns.naptrr: unknown key in [dns] (did you mean "naptr"?)'),
])
def test_dns_section_errors_are_one_line(tmp_path, text: str, message: str) -> None:
    from edgeproxy.config import ConfigError, load_config

    path = tmp_path / "edge.toml"
    path.write_text(f"[dns]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value).startswith(message), str(err.value)
