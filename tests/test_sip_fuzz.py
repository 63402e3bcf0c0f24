"""Property tests (hypothesis) of the SIP parsers: whatever a peer sends, the only outcomes are a
message, None / NEED_DATA / PING, or :class:`SipParseError` (which the transport answers or drops) —
never another exception, which would reach the reactor as a crash. Parsed messages round-trip:
``parse_datagram(msg.to_bytes()) == msg``, and their typed views either parse or raise
:class:`SipParseError` (a :class:`SipValueError` is one).

In CI (``CI`` set) the examples are derandomised so a run is reproducible; locally they vary.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.rfc4475 import MANIFEST, load

from edgeproxy.sip import (
    NEED_DATA,
    PING,
    URI,
    Limits,
    Message,
    Request,
    SipParseError,
    SipURI,
    StreamParser,
    error_response,
    parse_datagram,
    parse_name_address,
    parse_uri,
    parse_via,
)
from edgeproxy.sip.uri import _parse_sip
from edgeproxy.sip.values import scan_params, scan_params_general

CORPUS = [load(n) for n in MANIFEST] + [
    b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1;received=192.0.2.1;rport=5060\r\n"
    b"To: <sip:b@example.com>;tag=t\r\nFrom: \"A\" <sip:a@example.com>;tag=f\r\nCall-ID: x@y\r\n"
    b"CSeq: 1 INVITE\r\nContact: <sip:b@[2001:db8::1]:5070;transport=tcp>\r\nContent-Length: 0\r\n\r\n",
    b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP [2001:db8::9]:5060;branch=z9hG4bKr\r\n"
    b"To: <sip:u@example.com>\r\nFrom: <sip:u@example.com>;tag=1\r\nCall-ID: r1\r\nCSeq: 2 REGISTER\r\n"
    b"Contact: <sip:u@192.0.2.4>;expires=60;+sip.instance=\"<urn:uuid:1>\";reg-id=1, *\r\n"
    b'Authorization: Digest username="u", realm="r", nonce="n", uri="sip:example.com", response="0"\r\n'
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
]

FUZZ = settings(
    max_examples=500,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Lines that parsers commonly get wrong, inserted at random into valid messages.
TRICKY_LINES = [
    b"Content-Length: 0", b"Content-Length: -1", b"l: 99999999999999999999", b"Content-Length:",
    b"Via: SIP/2.0/UDP", b"Via: ,", b"v: SIP/2.0/TCP [::1]:99999;branch=z9hG4bK", b"Via: SIP/2.0/UDP h;rport;rport",
    b"To: <sip:a@b", b'From: "unterminated <sip:a@b>', b"Call-ID:", b"i: a b", b"CSeq: 1", b"CSeq: 99999999999 INVITE",
    b"CSeq: 1 OPTIONS", b"Max-Forwards: 256", b"Max-Forwards: " + b"9" * 5000, b"Max-Forwards: -1",
    b"Contact: *", b"Contact: <sip:a@b>;q=2", b"m: sip:a@b?x=y", b"Contact: ,,,", b"Route: <sip:r;lr>, <>",
    b"Record-Route: <sip:[::1;lr>", b"Expires: " + b"1" * 5000, b"Date: Mon, 01 Jan 2001 00:00:00 GMT",
    b"Authorization: Digest realm=\"x\", , nonce", b"Authorization: ", b"Proxy-Require: ,,foo",
    b" folded continuation", b"\tfolded tab", b"NoColonHere", b": empty name", b"Bad Name: x", b"X: \x00\xff\xfe",
    b"X:\r", b"\r", b"\n", b"X: a\nInjected: b", b"SIP/2.0 200 OK", b"INVITE sip:a@b SIP/2.0",
]

TRICKY_URIS = [
    "sip:a@b", "sips:[2001:db8::1]:5061;transport=tls", "sip:%61@b;lr", "tel:+1-201-555-0123;phone-context=x",
    "sip:a@b?Route=%3Csip:x%3E", "urn:uuid:1", "sip:", "sip:@b", "sip:a@b:99999", "sip:a@[::1", "sip:a%zz@b",
]


def _is_ok_event(ev: object) -> bool:
    return ev is NEED_DATA or ev is PING or isinstance(ev, Message)


def exercise(msg: Message) -> None:
    """Read every typed view the proxy, registrar and transactions use; each value or SipParseError."""
    views = [
        lambda: msg.vias, lambda: msg.top_via, lambda: msg.call_id, lambda: msg.cseq, lambda: msg.from_,
        lambda: msg.to, lambda: msg.from_tag, lambda: msg.to_tag, lambda: msg.max_forwards,
        lambda: msg.contacts, lambda: msg.contact_star, lambda: msg.routes, lambda: msg.record_routes,
        lambda: msg.paths, lambda: msg.expires, lambda: msg.min_expires, lambda: msg.content_type,
        lambda: msg.tokens("proxy-require"), lambda: msg.allow, lambda: msg.supported, lambda: msg.require,
        lambda: msg.credentials("authorization"), lambda: msg.credentials("proxy-authorization"),
        lambda: [(c.q, c.expires, c.tag) for c in msg.contacts],
        lambda: [(v.branch, v.received, v.rport, v.maddr, v.ttl, v.sent_by, v.rfc3261_branch, str(v))
                 for v in msg.vias],
        lambda: [str(n) for n in msg.contacts + msg.routes + msg.record_routes],
    ]
    if isinstance(msg, Request):
        views += [lambda: msg.uri, lambda: str(msg.uri),
                  lambda: msg.make_response(200, to_tag="x").to_bytes(),
                  lambda: msg.make_response(100).to_bytes()]
    for view in views:
        try:
            view()
        except SipParseError:
            pass
    # typed values print back to text that parses to the same value
    try:
        vias = msg.vias
    except SipParseError:
        vias = []
    for via in vias:
        assert parse_via(str(via)) == via, str(via)
    for view in (lambda: msg.contacts, lambda: msg.routes, lambda: msg.record_routes,
                 lambda: [msg.from_], lambda: [msg.to]):
        try:
            values = view()
        except SipParseError:
            continue
        for na in values:
            assert parse_name_address(str(na)) == na, str(na)


def check_datagram(data: bytes, limits: Limits | None = None) -> None:
    try:
        msg = parse_datagram(data, limits) if limits else parse_datagram(data)
    except SipParseError as exc:
        assert isinstance(exc.status, int) and 400 <= exc.status <= 599
        reply = error_response(exc, to_tag="t")
        if reply is not None:
            reply.to_bytes()
        return
    if msg is None:
        return
    assert isinstance(msg, Message)
    wire = msg.to_bytes()
    again = parse_datagram(wire)
    assert again == msg
    assert again.to_bytes() == wire  # type: ignore[union-attr]
    exercise(msg)


def check_stream(data: bytes, cuts: list[int], limits: Limits | None = None) -> None:
    parser = StreamParser(limits) if limits else StreamParser()
    points = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for a, b in zip(points, points[1:]):
        parser.feed(data[a:b])
        for _ in range(1000):
            try:
                ev = parser.next_event()
            except SipParseError as exc:
                if exc.fatal:
                    return
                continue
            assert _is_ok_event(ev), ev
            if ev is NEED_DATA:
                break
            if isinstance(ev, Message):
                assert parse_datagram(ev.to_bytes()) == ev
        else:  # pragma: no cover - the parser must make progress
            raise AssertionError("next_event looped")


# -- strategies -------------------------------------------------------------------------------------

@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "duplicate", "insert_line", "delete_line",
                                   "insert_bytes", "crlf"]))
        n = len(data)
        if n == 0:
            break
        pos = draw(st.integers(0, n - 1))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate":
            end = draw(st.integers(pos, min(n, pos + 200)))
            data[pos:pos] = data[pos:end]
        elif op == "insert_bytes":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "crlf":
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"\r\n\r\n", b"\r", b"\n", b"\r\n "]))
        else:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(1, max(1, len(lines) - 1)))
            if op == "insert_line":
                lines.insert(i, draw(st.sampled_from(TRICKY_LINES)))
            elif len(lines) > 2:
                del lines[i]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


VALUE_ALPHABET = list("sip:SIP/2.0 \t;,=<>\"@?&%[]:.-_+*!~'()abcXYZ0123456789\\") + ["\u00e9", "\x00"]

# Header names whose values the typed views parse, weighted towards them over unknown headers.
FUZZED_NAMES = [b"Via", b"v", b"To", b"From", b"Contact", b"m", b"Route", b"Record-Route", b"Path",
                b"CSeq", b"Call-ID", b"Max-Forwards", b"Expires", b"Authorization", b"Proxy-Require",
                b"Allow", b"Content-Type", b"X-Unknown"]


@st.composite
def with_fuzzed_value(draw: st.DrawFn) -> bytes:
    """A valid message with one header's value replaced (or one header added) with SIP-ish text:
    most of these still frame and validate, so the typed views and the round trip get exercised."""
    data = draw(st.sampled_from(CORPUS))
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    value = draw(st.text(alphabet=st.sampled_from(VALUE_ALPHABET), max_size=120)).encode()
    i = draw(st.integers(1, len(lines)))
    if i < len(lines) and draw(st.booleans()):
        name = lines[i].partition(b":")[0]
        lines[i] = name + b": " + value
    else:
        lines.insert(i, draw(st.sampled_from(FUZZED_NAMES)) + b": " + value)
    return b"\r\n".join(lines) + sep + body


sip_text = st.text(
    alphabet=st.sampled_from(list("sip:SIP/2.0 \t\r\n;,=<>\"@?&%[]:.-_abcXYZ0123456789*\\")), max_size=200
)


# -- properties -------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_datagram(data: bytes) -> None:
    check_datagram(data)


@FUZZ
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10))
def test_random_bytes_stream(data: bytes, cuts: list[int]) -> None:
    check_stream(data, cuts)


@FUZZ
@given(sip_text)
def test_sip_looking_text(text: str) -> None:
    data = text.encode()
    check_datagram(data)
    check_stream(data, [len(data) // 2])


@FUZZ
@given(mutated())
def test_mutated_valid_messages_datagram(data: bytes) -> None:
    check_datagram(data)


@FUZZ
@given(mutated(), st.lists(st.integers(0, 20000), max_size=8))
def test_mutated_valid_messages_stream(data: bytes, cuts: list[int]) -> None:
    check_stream(data, cuts)


@FUZZ
@given(st.lists(mutated(), min_size=1, max_size=4), st.lists(st.integers(0, 20000), max_size=8))
def test_mutated_messages_back_to_back(parts: list[bytes], cuts: list[int]) -> None:
    check_stream(b"".join(parts), cuts)


@FUZZ
@given(with_fuzzed_value())
def test_fuzzed_header_values(data: bytes) -> None:
    check_datagram(data)
    check_stream(data, [len(data) // 3])


@FUZZ
@given(mutated())
def test_mutated_with_tight_limits(data: bytes) -> None:
    limits = Limits(max_message_size=600, max_headers=12, max_line_length=120)
    check_datagram(data, limits)
    check_stream(data, [100, 300], limits)


@FUZZ
@given(st.one_of(st.sampled_from(TRICKY_URIS), sip_text,
                 st.builds(lambda a, b: a + b, st.sampled_from(TRICKY_URIS), sip_text)))
def test_uri_parse_and_round_trip(text: str) -> None:
    try:
        uri = parse_uri(text)
    except SipParseError:
        return
    assert isinstance(uri, URI)
    assert str(uri) == text
    again = parse_uri(str(uri))
    assert again == uri and hash(again) == hash(uri)
    if hasattr(uri, "replace"):
        rebuilt = uri.replace()  # type: ignore[attr-defined]
        assert parse_uri(str(rebuilt)) == rebuilt


# -- fast paths agree with the general code --------------------------------------------------------

PARAM_ALPHABET = list(";=,\"' \t:[]@/?&$%-._!~*+`abcXYZ019") + ["\u00e9"]


@FUZZ
@given(st.text(alphabet=st.sampled_from(PARAM_ALPHABET), max_size=60), st.integers(0, 5))
def test_scan_params_fast_path_matches_general(text: str, pos: int) -> None:
    """The split-based fast path of scan_params returns what the regex loop returns."""
    pos = min(pos, len(text))
    assert scan_params(text, pos) == scan_params_general(text, pos)


URI_ALPHABET = list("sipSIP:@;=?&%[]._-+!~*'()/$,0123456789abcdefXYZ ") + ["\u00e9"]


@FUZZ
@given(st.one_of(
    st.text(alphabet=st.sampled_from(URI_ALPHABET), max_size=60),
    st.builds(lambda s, t: s + t, st.sampled_from(["sip:", "sips:", "SIP:", "sip:a@", "sip:[::1]"]),
              st.text(alphabet=st.sampled_from(URI_ALPHABET), max_size=40)),
))
def test_parse_uri_fast_path_matches_general(text: str) -> None:
    """A URI taken by parse_uri's one-regex fast path parses identically on the general path."""
    try:
        fast = parse_uri(text)
    except SipParseError:
        fast = None
    scheme, colon, rest = text.partition(":")
    if not isinstance(fast, SipURI) or fast.headers or "%" in text:
        return  # not a fast-path result (the fast path takes no escapes or headers)
    slow = _parse_sip(scheme.lower(), rest, text)
    assert (slow.scheme, slow.user, slow.password, slow.host, slow.port, slow.params, slow.headers) == (
        fast.scheme, fast.user, fast.password, fast.host, fast.port, fast.params, fast.headers)
