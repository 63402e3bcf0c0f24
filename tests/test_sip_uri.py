"""URIs (RFC 3261 §19.1, §25.1; RFC 3966 tel; RFC 5118 IPv6) and §19.1.4 comparison."""

from __future__ import annotations

import pytest

from edgeproxy.sip import AbsoluteURI, SipParseError, SipURI, SipValueError, TelURI, parse_uri


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


# -- parsing ----------------------------------------------------------------------------------------

def test_full_sip_uri() -> None:
    u = sip("sip:alice:secret@atlanta.example.com:5070;transport=TCP;lr;maddr=239.255.255.1?subject=x&priority=urgent")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sip", "alice", "secret", "atlanta.example.com", 5070)
    assert u.params == {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"}
    assert u.headers == {"subject": "x", "priority": "urgent"}
    assert u.transport == "tcp" and u.lr and not u.secure
    assert u.effective_port == 5070


def test_text_is_kept_exactly() -> None:
    text = "SIP:Alice@AtLanTa.CoM;Transport=UDP;X=Y"
    u = sip(text)
    assert str(u) == text
    assert u.scheme == "sip" and u.params == {"transport": "UDP", "x": "Y"}  # names lower-cased


def test_minimal_and_host_only() -> None:
    u = sip("sip:example.com")
    assert u.user is None and u.host == "example.com" and u.port is None and u.params == {}
    assert u.aor == "example.com" and u.effective_port == 5060


def test_sips_defaults() -> None:
    u = sip("sips:bob@biloxi.example.com")
    assert u.secure and u.scheme == "sips" and u.effective_port == 5061
    assert sip("sip:bob@b.example.com;transport=tls").effective_port == 5061


def test_scheme_is_case_insensitive() -> None:
    assert sip("SIPS:bob@b.example.com").scheme == "sips"


@pytest.mark.parametrize("text,host,port,key", [
    ("sip:[2001:db8::10]", "[2001:db8::10]", None, "2001:db8::10"),
    ("sip:alice@[2001:DB8::10]:5070", "[2001:DB8::10]", 5070, "2001:db8::10"),
    ("sips:[::1]:5061;transport=tcp", "[::1]", 5061, "::1"),
    ("sip:[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]", None, "::ffff:c000:201"),
    ("sip:bob@192.0.2.4:5060", "192.0.2.4", 5060, "192.0.2.4"),
])
def test_ipv6_and_ipv4_hosts(text: str, host: str, port: int | None, key: str) -> None:
    u = sip(text)
    assert (u.host, u.port, u.host_key) == (host, port, key)
    assert str(u) == text


def test_user_may_contain_user_unreserved() -> None:
    u = sip("sip:+1-212-555-1212;phone-context=x;isub=1@gw.example.com;user=phone")
    assert u.user == "+1-212-555-1212;phone-context=x;isub=1" and u.params == {"user": "phone"}


def test_escapes() -> None:
    u = sip("sip:I%20have%20spaces@example.net;n%61me=v%61lue")
    assert u.user == "I%20have%20spaces" and u.unescaped_user == "I have spaces"
    assert u.params == {"n%61me": "v%61lue"}


def test_password_empty() -> None:
    u = sip("sip:alice:@example.com")
    assert u.user == "alice" and u.password == ""


def test_uri_headers_kept_escaped() -> None:
    u = sip("sip:user@example.com?Route=%3Csip:sip.example.com%3E&Subject=hi%20there")
    assert u.headers == {"Route": "%3Csip:sip.example.com%3E", "Subject": "hi%20there"}


def test_tel_uri() -> None:
    u = parse_uri("tel:+1-201-555-0123;ext=22;phone-context=example.com")
    assert isinstance(u, TelURI) and u.scheme == "tel"
    assert u.number == "+1-201-555-0123" and u.params == {"ext": "22", "phone-context": "example.com"}
    assert u == parse_uri("tel:+1(201)555.0123;phone-context=EXAMPLE.com;ext=22")  # visual separators
    assert u != parse_uri("tel:+1-201-555-0124;ext=22;phone-context=example.com")
    assert hash(u) == hash(parse_uri("tel:+12015550123;ext=22;phone-context=example.com"))


@pytest.mark.parametrize("text,scheme", [
    ("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "urn"),
    ("http://www.example.com/a?b=c", "http"),
    ("mailto:alice@example.com", "mailto"),
    ("soap.beep://192.0.2.103:3002", "soap.beep"),
    ("NobodyKnowsThisScheme:totallyopaquecontent", "nobodyknowsthisscheme"),
])
def test_absolute_uris_are_opaque(text: str, scheme: str) -> None:
    u = parse_uri(text)
    assert isinstance(u, AbsoluteURI) and u.scheme == scheme and str(u) == text
    assert u == parse_uri(text) and hash(u) == hash(parse_uri(text))


@pytest.mark.parametrize("text", [
    "", "sip:", "sip:@example.com", "sip:alice@", "sip:alice@example.com:99999", "sip:alice@example.com:",
    "sip:alice@[::1", "sip:alice@[:::]", "sip:alice@[1.2.3.4]", "sip:a b@example.com",
    "sip:alice@example.com;", "sip:alice@example.com;=x", "sip:alice@example.com;x=", "sip:alice@exa mple.com",
    "sip:al%zzice@example.com", "sip:alice@example.com?", "sip:alice@example.com?x", "<sip:alice@example.com>",
    "sip:alice@example.com>", "alice@example.com", "1sip:x", "tel:", "tel:abc%", "tel:+1 555", "urn:",
    "sip:alice@example.com;lr x",
])
def test_invalid(text: str) -> None:
    with pytest.raises(SipValueError) as info:
        parse_uri(text)
    assert isinstance(info.value, SipParseError) and info.value.status == 400


# -- building ---------------------------------------------------------------------------------------

def test_build_and_render() -> None:
    u = SipURI("example.com", "alice", port=5070, params={"transport": "tcp", "lr": None})
    assert str(u) == "sip:alice@example.com:5070;transport=tcp;lr"
    assert parse_uri(str(u)) == u
    v6 = SipURI("2001:db8::1", port=5060)
    assert str(v6) == "sip:[2001:db8::1]:5060" and parse_uri(str(v6)) == v6


def test_replace_and_params() -> None:
    u = sip("sip:alice@example.com;transport=udp")
    assert str(u.replace(host="192.0.2.1", port=5080)) == "sip:alice@192.0.2.1:5080;transport=udp"
    assert str(u.with_params(lr=None, ob=None)) == "sip:alice@example.com;transport=udp;lr;ob"
    assert str(u.without_params("transport")) == "sip:alice@example.com"
    assert str(u) == "sip:alice@example.com;transport=udp"  # unchanged


def test_uris_are_hashable_dict_keys() -> None:
    table = {sip("sip:alice@atlanta.com"): 1, parse_uri("tel:+1"): 2, parse_uri("urn:x:y"): 3}
    assert table[sip("sip:alice@ATLANTA.com")] == 1
    assert table[parse_uri("tel:+1")] == 2 and table[parse_uri("urn:x:y")] == 3


# -- §19.1.4 ----------------------------------------------------------------------------------------

EQUIVALENT = [
    ["sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"],
    ["sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"],
    ["sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"],
    ["sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"],
]

NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # usernames
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # can resolve to different ports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # different transports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),  # port and transport
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # header component
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # even if that is what it resolves to
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),  # not transitive
]


@pytest.mark.parametrize("group", EQUIVALENT, ids=lambda g: g[0])
def test_rfc3261_equivalent(group: list[str]) -> None:
    uris = [parse_uri(t) for t in group]
    for a in uris:
        for b in uris:
            assert a == b, (str(a), str(b))
            assert hash(a) == hash(b)


@pytest.mark.parametrize("a,b", NOT_EQUIVALENT, ids=lambda t: t)
def test_rfc3261_not_equivalent(a: str, b: str) -> None:
    assert parse_uri(a) != parse_uri(b)
    assert parse_uri(b) != parse_uri(a)


def test_intransitivity_example() -> None:
    plain, on, off = (parse_uri(t) for t in (
        "sip:carol@chicago.com", "sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"))
    assert plain == on and plain == off and on != off


@pytest.mark.parametrize("a,b", [
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),  # SIP and SIPS are never equivalent
    ("sip:alice@atlanta.com", "sip:Alice@atlanta.com"),  # userinfo is case-sensitive
    ("sip:alice:pw@atlanta.com", "sip:alice:PW@atlanta.com"),  # ... passwords too
    ("sip:alice@atlanta.com", "sip:alice:pw@atlanta.com"),  # omitted password never matches one
    ("sip:atlanta.com", "sip:alice@atlanta.com"),  # omitted user never matches one
    ("sip:+1555@gw.com", "sip:+1555@gw.com;user=phone"),  # user= in one only
    ("sip:a@b.com", "sip:a@b.com;ttl=1"),  # ttl in one only
    ("sip:a@b.com", "sip:a@b.com;method=INVITE"),  # method in one only
    ("sip:a@b.com", "sip:a@b.com;maddr=239.255.255.1"),  # maddr in one only
    ("sip:a@b.com;transport=udp", "sip:a@b.com;transport=tcp"),  # present in both: must match
    ("sip:a%3Bb@b.com", "sip:a;b@b.com"),  # an escaped reserved character is not the character
    ("sip:%41@b.com", "sip:a@b.com"),  # %41 is "A", and userinfo is case-sensitive
    ("sip:a@b.com;x=%2541", "sip:a@b.com;x=A"),  # never unescaped twice (RFC 4475 §3.1.1.3)
    ("sip:a@b.com?subject=x", "sip:a@b.com?subject=y"),
])
def test_other_inequalities(a: str, b: str) -> None:
    assert parse_uri(a) != parse_uri(b)


@pytest.mark.parametrize("a,b", [
    ("sip:alice@atlanta.com;lr;transport=udp", "sip:alice@ATLANTA.COM;transport=UDP;lr"),  # order, case
    ("sip:a@b.com;x=%41", "sip:a@b.com;x=a"),  # param values case-insensitive, escapes decoded
    ("sip:a@b.com;%6C%72", "sip:a@b.com;lr"),  # escaped parameter names
    ("sip:a%2Cb@b.com", "sip:a%2cb@b.com"),  # hex case of a kept escape
    ("sip:a@[2001:DB8:0::1]", "sip:a@[2001:db8::1]"),  # one IPv6 address, two spellings
    ("sip:a@b.com?Subject=x", "sip:a@b.com?subject=x"),  # header names are case-insensitive
    ("sip:a@b.com;maddr=239.255.255.1", "sip:a@b.com;MADDR=239.255.255.1"),
])
def test_other_equalities(a: str, b: str) -> None:
    assert parse_uri(a) == parse_uri(b) and hash(parse_uri(a)) == hash(parse_uri(b))


def test_different_kinds_never_equal() -> None:
    assert parse_uri("sip:+1@example.com") != parse_uri("tel:+1")
    assert parse_uri("urn:a:b") != parse_uri("URN:a:c")
    assert parse_uri("URN:a:b") == parse_uri("urn:a:b")
