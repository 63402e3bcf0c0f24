"""Messages and header access (RFC 3261 §7, §8.2.6, §16.6, §20): names, compact forms, multi-value
headers, folding, quoting, typed values, the mutations a proxy makes, and byte-exact forwarding."""

from __future__ import annotations

import pytest

from edgeproxy.sip import (
    Headers,
    Message,
    Request,
    Response,
    SipParseError,
    SipURI,
    SipValueError,
    Via,
    parse_datagram,
    parse_name_address,
    parse_uri,
    parse_via,
)
from edgeproxy.sip.values import parse_credentials


def msg(*headers: str, start: str = "INVITE sip:bob@biloxi.example.com SIP/2.0", body: bytes = b"",
        base: bool = True) -> Message:
    lines = [start]
    if base:
        lines += [
            "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
            "To: Bob <sip:bob@biloxi.example.com>",
            "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
            "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
            "CSeq: 314159 " + (start.split(" ")[0] if not start.startswith("SIP/") else "INVITE"),
            "Max-Forwards: 70",
        ]
    lines += headers
    data = ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    m = parse_datagram(data)
    assert m is not None
    return m


# -- names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compact,full", [
    ("v", "Via"), ("f", "From"), ("t", "To"), ("i", "Call-ID"), ("m", "Contact"), ("l", "Content-Length"),
    ("c", "Content-Type"), ("k", "Supported"), ("s", "Subject"), ("e", "Content-Encoding"), ("o", "Event"),
    ("r", "Refer-To"), ("b", "Referred-By"), ("u", "Allow-Events"), ("x", "Session-Expires"),
])
def test_compact_forms_are_the_full_header(compact: str, full: str) -> None:
    h = Headers()
    h.add(compact, "value")
    assert h.get(full) == "value" and h.get(full.upper()) == "value" and h.get(compact.upper()) == "value"
    assert full.lower() in h and compact in h
    assert list(h) == [(compact, "value")]  # written as received


def test_compact_forms_on_the_wire() -> None:
    data = (b"INVITE sip:b@example.com SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nt: <sip:b@example.com>\r\n"
            b"f: <sip:a@example.com>;tag=1\r\ni: cid\r\nCSeq: 1 INVITE\r\nm: <sip:a@h>\r\nc: text/plain\r\n"
            b"k: path, outbound\r\nl: 2\r\n\r\nhi")
    m = parse_datagram(data)
    assert m is not None
    assert m.call_id == "cid" and m.to.uri == parse_uri("sip:b@example.com") and m.from_tag == "1"
    assert m.content_type == "text/plain" and m.supported == ["path", "outbound"] and m.body == b"hi"
    assert m.top_via.host == "h" and str(m.contacts[0].uri) == "sip:a@h"
    assert m.to_bytes() == data  # forwarded exactly as received


def test_names_are_case_insensitive() -> None:
    m = msg("X-CUSTOM: 1", "x-custom: 2")
    assert m.headers.get_all("X-Custom") == ["1", "2"] and m.headers.count("x-CUSTOM") == 2
    assert m.headers.get("cAlL-iD") == m.call_id


def test_get_default_and_contains() -> None:
    m = msg()
    assert m.headers.get("Subject") is None and m.headers.get("Subject", "x") == "x"
    assert "subject" not in m.headers and 5 not in m.headers  # type: ignore[operator]


# -- multiple values, folding, quoting --------------------------------------------------------------

def test_multi_value_across_lines_and_commas() -> None:
    m = msg("Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>", "Route: <sip:p3.example.com;lr>")
    assert m.headers.values("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>",
                                         "<sip:p3.example.com;lr>"]
    assert [r.uri.host for r in m.routes] == ["p1.example.com", "p2.example.com", "p3.example.com"]  # type: ignore[union-attr]
    assert m.headers.get("route") == "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"  # first line


def test_commas_inside_quotes_and_angle_brackets_do_not_split() -> None:
    m = msg('Contact: "Doe, John" <sip:j,r@example.com;x=a>, <sip:k@example.com>;q=0.5')
    a, b = m.contacts
    assert a.display_name == "Doe, John" and str(a.uri) == "sip:j,r@example.com;x=a"
    assert b.q == 0.5


def test_folding_is_one_space() -> None:
    data = (b"OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"To: <sip:b@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: c\r\n"
            b"CSeq: 1\r\n  OPTIONS\r\nSubject: lunch\r\n\tat noon\r\n   today\r\nContent-Length: 0\r\n\r\n")
    m = parse_datagram(data)
    assert m is not None
    assert m.headers.get("subject") == "lunch at noon today"
    assert m.cseq == (1, "OPTIONS")
    assert b"\r\nSubject: lunch at noon today\r\n" in m.to_bytes()


def test_lf_only_datagram() -> None:
    data = (b"OPTIONS sip:b@example.com SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nTo: <sip:b@example.com>\n"
            b"From: <sip:a@example.com>;tag=1\nCall-ID: c\nCSeq: 1 OPTIONS\n\n")
    m = parse_datagram(data)
    assert m is not None and m.call_id == "c" and m.body == b""


def test_bare_lf_inside_crlf_head_is_refused() -> None:
    with pytest.raises(SipParseError) as info:
        msg("X-A: 1\nInjected: yes")
    assert info.value.can_reply


def test_quoted_strings_and_escapes() -> None:
    na = parse_name_address(r'"Alice \"the\" \\ Great" <sip:alice@example.com>;tag=x')
    assert na.display_name == 'Alice "the" \\ Great' and na.tag == "x"
    assert str(na) == r'"Alice \"the\" \\ Great" <sip:alice@example.com>;tag=x'
    assert parse_name_address(str(na)) == na


def test_display_name_forms() -> None:
    assert parse_name_address("Bob <sip:b@example.com>").display_name == "Bob"
    assert parse_name_address("Bob  Smith   <sip:b@example.com>").display_name == "Bob  Smith"
    assert parse_name_address("<sip:b@example.com>").display_name is None
    assert parse_name_address('""<sip:b@example.com>').display_name == ""
    assert parse_name_address("caller<sip:b@example.com>").display_name == "caller"


def test_addr_spec_params_belong_to_the_header() -> None:
    """§20.10: without <>, every ';' after the URI starts a header parameter."""
    na = parse_name_address("sip:alice@example.com;tag=1;transport=tcp")
    assert na.params == {"tag": "1", "transport": "tcp"} and na.uri.params == {}  # type: ignore[union-attr]
    with pytest.raises(SipValueError):
        parse_name_address("sip:alice@example.com?subject=x")  # needs <>


@pytest.mark.parametrize("text", ['"unterminated <sip:a@b>', "Bell, Alexander <sip:a@b>", "< sip:a@b >",
                                  "<sip:a@b", "<sip:a@b>;;", "<sip:a@b>;tag=", "<sip:a@b> junk", ""])
def test_bad_name_addr(text: str) -> None:
    with pytest.raises(SipValueError):
        parse_name_address(text, "To")


# -- Contact ----------------------------------------------------------------------------------------

def test_contact_star() -> None:
    m = msg("Contact: *", "Expires: 0", start="REGISTER sip:example.com SIP/2.0")
    assert m.contact_star and m.contacts == [] and m.expires == 0


def test_contact_star_with_others_is_invalid() -> None:
    with pytest.raises(SipParseError) as info:
        msg("Contact: *, <sip:a@h>", start="REGISTER sip:example.com SIP/2.0")
    assert info.value.status == 400 and "Contact" in info.value.reason
    m = msg("Contact: *", "Contact: <sip:a@h>")  # INVITE: Contact is not validated eagerly
    assert not m.contact_star
    with pytest.raises(SipValueError):
        m.contacts  # noqa: B018


def test_contact_params() -> None:
    m = msg('Contact: <sip:alice@192.0.2.4:5060;transport=tcp;ob>;expires=3600;q=0.7;'
            '+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1',
            start="REGISTER sip:example.com SIP/2.0")
    (c,) = m.contacts
    assert c.expires == 3600 and c.q == 0.7 and c.reg_id == 1
    assert c.params["+sip.instance"] == '"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"'
    assert c.sip_instance == "<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"
    assert isinstance(c.uri, SipURI) and c.uri.params == {"transport": "tcp", "ob": None}
    assert c.sip_uri is c.uri


@pytest.mark.parametrize("q,ok", [("0", 0.0), ("1", 1.0), ("0.5", 0.5), ("0.125", 0.125), ("1.000", 1.0),
                                  ("1.5", None), ("0.1234", None), ("-0", None), ("nan", None), ("", None),
                                  ("1e-1", None)])
def test_q_values(q: str, ok: float | None) -> None:
    c = parse_name_address(f"<sip:a@b>;q={q}" if q else "<sip:a@b>;q")
    if ok is None:
        with pytest.raises(SipValueError):
            c.q  # noqa: B018
    else:
        assert c.q == ok


def test_expires_values() -> None:
    assert parse_name_address("<sip:a@b>;expires=0").expires == 0
    assert parse_name_address("<sip:a@b>;expires=4294967295").expires == 2**32 - 1
    assert parse_name_address("<sip:a@b>;expires=4294967296").expires is None  # RFC 4475 §3.1.2.4
    assert parse_name_address("<sip:a@b>;expires=abc").expires is None
    assert parse_name_address("<sip:a@b>").expires is None
    assert msg("Expires: " + "9" * 5000).expires is None  # no int() of a huge string
    assert msg("Expires: 60").expires == 60 and msg().expires is None
    assert msg("Min-Expires: 120").min_expires == 120


def test_non_sip_contact_uri() -> None:
    c = parse_name_address("<mailto:alice@example.com>")
    with pytest.raises(SipValueError) as info:
        c.sip_uri  # noqa: B018
    assert info.value.status == 416


# -- Authorization ----------------------------------------------------------------------------------

def test_authorization_digest() -> None:
    m = msg('Authorization: Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
            ' uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b",'
            ' response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41",'
            ' algorithm=MD5',
            'Proxy-Authorization: Digest username="a,b", realm="p", nonce="n\\"q", uri="sip:x", response="r"')
    (cred,) = m.credentials()
    assert cred.scheme == "Digest"
    assert cred.params["username"] == "bob" and cred.params["realm"] == "biloxi.com"
    assert cred.params["qop"] == "auth" and cred.params["nc"] == "00000001" and cred.params["algorithm"] == "MD5"
    assert cred.params["uri"] == "sip:bob@biloxi.com"
    assert parse_credentials(str(cred)) == cred
    (proxy,) = m.credentials("proxy-authorization")
    assert proxy.params["username"] == "a,b" and proxy.params["nonce"] == 'n"q'
    assert parse_credentials(str(proxy)) == proxy


def test_one_credentials_per_line() -> None:
    m = msg('Authorization: Digest username="a", realm="r1"', 'Authorization: Digest username="a", realm="r2"')
    assert [c.params["realm"] for c in m.credentials()] == ["r1", "r2"]


def test_www_authenticate_and_unknown_scheme() -> None:
    r = msg('WWW-Authenticate: Digest realm="atlanta.com", qop="auth", nonce="84a4cc6f", stale=FALSE',
            start="SIP/2.0 401 Unauthorized")
    (ch,) = r.credentials("www-authenticate")
    assert ch.params == {"realm": "atlanta.com", "qop": "auth", "nonce": "84a4cc6f", "stale": "FALSE"}
    (odd,) = msg("Authorization: NoOneKnowsThisScheme opaque-data=here").credentials()
    assert odd.scheme == "NoOneKnowsThisScheme" and odd.params == {"opaque-data": "here"}


@pytest.mark.parametrize("value", ["", "Digest realm", "Dig est realm=x", "Digest =x"])
def test_bad_credentials(value: str) -> None:
    with pytest.raises(SipValueError):
        parse_credentials(value)


# -- Via --------------------------------------------------------------------------------------------

def test_via_params() -> None:
    v = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;received=198.51.100.7;rport=5062;"
                  "maddr=239.255.255.1;ttl=16;X-Odd")
    assert (v.transport, v.host, v.port) == ("UDP", "192.0.2.1", 5060)
    assert v.branch == "z9hG4bK776" and v.rfc3261_branch
    assert v.received == "198.51.100.7" and v.rport == "5062" and v.maddr == "239.255.255.1" and v.ttl == 16
    assert v.params["x-odd"] is None
    assert v.sent_by == ("192.0.2.1", 5060)
    assert str(v) == ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;received=198.51.100.7;rport=5062;"
                      "maddr=239.255.255.1;ttl=16;x-odd")


def test_via_rport_flag_and_defaults() -> None:
    v = parse_via("SIP/2.0/tls client.example.com;rport;branch=z9hG4bKx")
    assert v.transport == "TLS" and v.rport == "" and v.received is None and v.port is None
    assert v.sent_by == ("client.example.com", 5061)
    assert parse_via("SIP/2.0/UDP h;branch=1").rport is None
    assert not parse_via("SIP/2.0/UDP h;branch=1234").rfc3261_branch
    assert parse_via("SIP/2.0/UDP h;ttl=999").ttl is None


def test_via_ipv6_and_lws() -> None:
    v = parse_via("SIP / 2.0 / TCP   [2001:db8::9]  :  5070 ; branch = z9hG4bK1")
    assert (v.transport, v.host, v.port, v.branch) == ("TCP", "[2001:db8::9]", 5070, "z9hG4bK1")


@pytest.mark.parametrize("value", ["SIP/2.0/UDP", "SIP/2.0/UDP h;;", "SIP/2.0/UDP h:70000", "SIP/3.0/UDP h",
                                   "SIP/2.0/UDP [::1", "SIP/2.0/UDP h;branch=", "SIP/2.0/UDP h junk",
                                   "SIP/2.0/UDP [zz::1]"])
def test_bad_via(value: str) -> None:
    with pytest.raises(SipValueError):
        parse_via(value)


def test_vias_across_lines() -> None:
    m = msg("Via: SIP/2.0/TCP p2.example.com;branch=z9hG4bK2, SIP/2.0/UDP p3.example.com;branch=z9hG4bK3",
            start="SIP/2.0 200 OK")
    assert [v.host for v in m.vias] == ["pc33.atlanta.example.com", "p2.example.com", "p3.example.com"]
    assert m.top_via.host == "pc33.atlanta.example.com"


def test_push_and_pop_via() -> None:
    m = msg("Via: SIP/2.0/TCP p2.example.com;branch=z9hG4bK2, SIP/2.0/UDP p3.example.com;branch=z9hG4bK3")
    assert m.top_via.host == "pc33.atlanta.example.com"  # cached by validation
    m.push_via(Via("TLS", "edge.example.com", 5061, {"branch": "z9hG4bKedge", "rport": None}))
    assert m.top_via.host == "edge.example.com" and m.top_via.port == 5061  # cache invalidated
    assert m.headers.get_all("via")[0] == "SIP/2.0/TLS edge.example.com:5061;branch=z9hG4bKedge;rport"
    assert len(m.vias) == 4
    # the new line goes above the first Via line, not at the top of the message
    assert [k for k, _, _ in m.headers.items()][0] == "via"
    assert m.pop_via() == "SIP/2.0/TLS edge.example.com:5061;branch=z9hG4bKedge;rport"
    assert m.pop_via() == "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"
    assert m.top_via.host == "p2.example.com"
    assert m.pop_via() == "SIP/2.0/TCP p2.example.com;branch=z9hG4bK2"  # first of a comma list
    assert m.headers.get_all("via") == ["SIP/2.0/UDP p3.example.com;branch=z9hG4bK3"]
    assert m.pop_via() is not None and m.pop_via() is None


def test_push_via_goes_above_first_via_line() -> None:
    m = msg(start="OPTIONS sip:b@example.com SIP/2.0")
    m.headers.push("Record-Route", "<sip:p1.example.com;lr>")
    m.headers.push("Record-Route", "<sip:p2.example.com;lr>")
    assert [str(r.uri) for r in m.record_routes] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert m.headers.items()[0][0] == "record-route"


def test_replace_first_via_value_for_received() -> None:
    m = msg("Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bK2", start="OPTIONS sip:b@example.com SIP/2.0")
    top = m.top_via
    top.params["received"] = "198.51.100.1"
    assert m.headers.replace_first_value("via", str(top))
    assert m.top_via.received == "198.51.100.1" and len(m.vias) == 2
    assert not Headers().replace_first_value("via", "x")


# -- Record-Route / Route ---------------------------------------------------------------------------

def test_record_route_and_route() -> None:
    m = msg("Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr;transport=tcp>",
            "Route: <sip:edge.example.com;lr>")
    assert [r.uri.lr for r in m.record_routes] == [True, True]  # type: ignore[union-attr]
    assert m.record_routes[1].uri.transport == "tcp"  # type: ignore[union-attr]
    assert m.headers.pop_first_value("route") == "<sip:edge.example.com;lr>"
    assert m.routes == [] and "route" not in m.headers
    with pytest.raises(SipValueError):
        msg("Route: <sip:a;lr>, ").routes  # noqa: B018 - empty value


def test_paths() -> None:
    m = msg("Path: <sip:p1.example.com;lr>", start="REGISTER sip:example.com SIP/2.0")
    assert str(m.paths[0].uri) == "sip:p1.example.com;lr"


# -- Max-Forwards, tokens, Allow ----------------------------------------------------------------------

def test_max_forwards_setter() -> None:
    m = msg()
    assert m.max_forwards == 70
    m.max_forwards = m.max_forwards - 1  # type: ignore[operator]
    assert m.max_forwards == 69 and m.headers.get_all("max-forwards") == ["69"]
    assert b"\r\nMax-Forwards: 69\r\n" in m.to_bytes()
    m.headers.remove("max-forwards")
    assert m.max_forwards is None
    m.max_forwards = 70  # added when absent
    assert m.max_forwards == 70 and m.headers.get("Max-Forwards") == "70"


@pytest.mark.parametrize("value", ["256", "-1", "abc", "1 0", "9" * 5000])
def test_bad_max_forwards(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        msg(f"Max-Forwards: {value}", base=True)
    assert info.value.status == 400


def test_tokens_and_allow() -> None:
    m = msg("Proxy-Require: Foo, bar", "Require: 100rel", "Supported: path, ,outbound",
            "Allow: INVITE, ack,BYE")
    assert m.tokens("proxy-require") == ["foo", "bar"] and m.require == ["100rel"]
    assert m.supported == ["path", "outbound"]
    assert m.allow == ["INVITE", "ACK", "BYE"] and msg().allow is None


# -- make_response (§8.2.6.2) -----------------------------------------------------------------------

def test_make_response_copies() -> None:
    m = msg("Via: SIP/2.0/TCP p2.example.com;branch=z9hG4bK2", "Record-Route: <sip:p2.example.com;lr>",
            "Contact: <sip:alice@pc33.atlanta.example.com>", "X-Unknown: z")
    assert isinstance(m, Request)
    r = m.make_response(486, to_tag="tt1")
    assert isinstance(r, Response) and r.status == 486 and r.reason == "Busy Here"
    assert r.headers.get_all("via") == m.headers.get_all("via")
    assert r.headers.get("from") == m.headers.get("from") and r.call_id == m.call_id and r.cseq == m.cseq
    assert r.to_tag == "tt1" and r.headers.get("to") == "Bob <sip:bob@biloxi.example.com>;tag=tt1"
    assert "record-route" not in r.headers and "x-unknown" not in r.headers and "contact" not in r.headers
    # in the request's order (the second Via line came last in it)
    assert [k for k, _, _ in r.headers.items()] == ["via", "to", "from", "call-id", "cseq", "via"]
    again = parse_datagram(r.to_bytes())
    assert again == r


def test_make_response_to_tag_rules() -> None:
    m = msg()
    assert isinstance(m, Request)
    assert m.make_response(100, to_tag="x").to_tag is None  # never on 100 Trying
    assert m.make_response(180).to_tag is None  # only when given
    assert m.make_response(200, "Fine").reason == "Fine"
    tagged = msg("X: y").headers
    tagged.set("To", "Bob <sip:bob@biloxi.example.com>;tag=existing")
    req = Request("INVITE", "sip:bob@biloxi.example.com", tagged)
    assert req.make_response(200, to_tag="new").to_tag == "existing"  # in-dialog: keep it


def test_reason_phrases() -> None:
    assert Response(404).reason == "Not Found" and Response(499).reason == "Bad Request"
    assert Response(699).reason == "Busy Everywhere" and Response(183).reason == "Session Progress"


# -- forwarding byte-exact --------------------------------------------------------------------------

def test_unknown_headers_byte_exact_and_in_order() -> None:
    data = (b"MESSAGE sip:b@example.com SIP/2.0\r\nX-First: 1\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"P-Asserted-Identity: \"Alice\" <sip:alice@example.com>, <tel:+15551234>\r\n"
            b"To: <sip:b@example.com>\r\nX-Weird:   ;;,,;;,; \"q\\\"x\" <>\r\nFrom: <sip:a@example.com>;tag=1\r\n"
            b"Call-ID: c\r\nCSeq: 1 MESSAGE\r\nX-First: 2\r\nX-Utf8: \xc3\xa9t\xc3\xa9\r\nX-Latin1: caf\xe9\r\n"
            b"Content-Length: 3\r\n\r\nabc")
    m = parse_datagram(data)
    assert m is not None
    out = m.to_bytes()
    assert out == data.replace(b"X-Weird:   ", b"X-Weird: ")  # only the LWS after the colon is normalised
    assert m.headers.get("x-utf8") == "été"
    assert [n for n, _ in m.headers] == ["X-First", "Via", "P-Asserted-Identity", "To", "X-Weird", "From",
                                         "Call-ID", "CSeq", "X-First", "X-Utf8", "X-Latin1", "Content-Length"]


def test_content_length_is_recomputed() -> None:
    m = msg(body=b"hello")
    m.body = b"hello world"
    assert b"\r\nContent-Length: 11\r\n\r\nhello world" in m.to_bytes()
    m2 = Request("OPTIONS", parse_uri("sip:a@example.com"))
    assert m2.to_bytes() == b"OPTIONS sip:a@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def test_equality_ignores_content_length_only() -> None:
    a = msg(body=b"x")
    b = msg(body=b"x")
    b.headers.remove("content-length")
    assert a == b
    b.body = b"y"
    assert a != b
    c = msg("X-Extra: 1", body=b"x")
    assert a != c


def test_headers_mutations() -> None:
    h = Headers()
    h.add("X-A", "1")
    h.add("Via", "SIP/2.0/UDP a")
    h.add("x-a", "2")
    h.set("X-A", "3")
    assert list(h) == [("X-A", "3"), ("Via", "SIP/2.0/UDP a")]
    assert h.remove("x-a") == 1 and h.remove("x-a") == 0
    h.set("New", "v")
    assert list(h)[-1] == ("New", "v") and len(h) == 2


def test_copy_is_independent() -> None:
    m = msg()
    assert isinstance(m, Request)
    c = m.copy()
    c.max_forwards = 1
    c.push_via("SIP/2.0/UDP edge;branch=z9hG4bKc")
    c.uri = "sip:other@example.com"
    assert m.max_forwards == 70 and len(m.vias) == 1 and str(m.uri) == "sip:bob@biloxi.example.com"
    assert c.max_forwards == 1 and len(c.vias) == 2 and c.uri.user == "other"  # type: ignore[union-attr]


def test_request_uri_setter() -> None:
    m = msg()
    assert isinstance(m, Request)
    m.uri = parse_uri("sip:bob@192.0.2.4:5070;transport=tcp")
    assert m.start_line() == "INVITE sip:bob@192.0.2.4:5070;transport=tcp SIP/2.0"
    m.uri = "tel:+1555"
    assert m.uri.scheme == "tel" and m.uri_text == "tel:+1555"


def test_typed_views_raise_sip_value_errors() -> None:
    """Lazily parsed headers fail with SipValueError (a SipParseError): the proxy answers 400."""
    m = msg("Route: garbage", "Record-Route: <sip:[::1>", "Contact: <sip:a@b>;q=7")
    with pytest.raises(SipValueError):
        m.routes  # noqa: B018
    with pytest.raises(SipValueError):
        m.record_routes  # noqa: B018
    with pytest.raises(SipValueError):
        m.contacts[0].q  # noqa: B018
