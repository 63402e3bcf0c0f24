"""Stream and datagram parse errors of a request with a readable head carry what a reply needs (RFC 3261
§8.2.6.2), for :class:`edgeproxy.sip.StreamParser` and ``parse_datagram``; the framing itself is
``test_sip_stream.py``'s."""

from __future__ import annotations

import pytest
from support.sipstream import events_of, invite

from edgeproxy.sip import (
    NEED_DATA,
    Limits,
    SipParseError,
    StreamParser,
    error_response,
    parse_datagram,
)


# -- salvage: every error of a request with a readable head carries what a reply needs --------------
#
# RFC 3261 §8.2.6.2: a 400/513 copies the request's Via, From, To, Call-ID and CSeq, or the client
# cannot match it. The core fills ``partial`` for every error it raises, including the ones raised
# before the head could be parsed (oversized, no empty line, cut short by the peer's close), so the
# transports only call error_response().

WANT = [
    ("via", "SIP/2.0/TCP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"),
    ("to", "Bob <sip:bob@biloxi.example.com>"),
    ("from", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
    ("call-id", "salv"),
    ("cseq", "314159 INVITE"),
]
HEAD = invite("salv", body=b"", cl=-1)[:-2]  # the head's lines, each with its CRLF, no empty line
LONG = "X-Long: " + "x" * 1200 + "\r\n"


def _check_salvaged(exc: SipParseError, status: int) -> None:
    assert exc.status == status and exc.is_request is True, exc
    assert exc.partial == WANT, exc.partial
    reply = error_response(exc)
    assert reply is not None and reply.status == status
    assert reply.headers.get("call-id") == "salv" and reply.headers.get("cseq") == "314159 INVITE"
    assert reply.headers.get_all("via") == [WANT[0][1]]


# (name, datagram, limits, status): the same bytes are also fed to a StreamParser below.
DATAGRAM_ERRORS = [
    ("oversized, head complete", invite("salv", body=b"x" * 2000), Limits(max_message_size=1000), 513),
    ("oversized, head cut by the limit", HEAD + LONG.encode() + b"\r\n", Limits(max_message_size=800), 513),
    ("oversized, leading CRLF", b"\r\n\r\n" + invite("salv", body=b"x" * 2000), Limits(max_message_size=1000),
     513),
    ("too many headers", invite("salv", extra="X-A: 1\r\n" * 20), Limits(max_headers=15), 513),
    ("header line too long", invite("salv", extra=LONG), Limits(max_line_length=1000), 513),
    ("start line too long", invite("salv").replace(b"sip:bob@", b"sip:" + b"b" * 1200 + b"@", 1),
     Limits(max_line_length=1000), 513),
    ("malformed header line", invite("salv", extra="Broken header line\r\n"), Limits(), 400),
    ("bare LF", invite("salv", extra="X-A: 1\nInjected: yes\r\n"), Limits(), 400),
    ("bad Content-Length", invite("salv", cl=-1, extra="Content-Length: x\r\n"), Limits(), 400),
    ("bad Request-Line", invite("salv").replace(b"INVITE sip:", b"INVITE  sip:", 1), Limits(), 400),
    ("unsupported version", invite("salv").replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1), Limits(), 505),
    ("bad Max-Forwards", invite("salv").replace(b"Max-Forwards: 70", b"Max-Forwards: many"), Limits(), 400),
]


@pytest.mark.parametrize("name,data,limits,status", DATAGRAM_ERRORS, ids=[e[0] for e in DATAGRAM_ERRORS])
def test_datagram_errors_carry_the_salvaged_head(name, data, limits, status) -> None:
    with pytest.raises(SipParseError) as info:
        parse_datagram(data, limits)
    _check_salvaged(info.value, status)
    assert not info.value.fatal


def test_datagram_content_length_larger_than_datagram_carries_the_head() -> None:
    with pytest.raises(SipParseError) as info:
        parse_datagram(invite("salv", body=b"v=0\r\n", cl=500))
    _check_salvaged(info.value, 400)
    assert "Content-Length" in info.value.reason


def test_datagram_without_empty_line_carries_the_head() -> None:
    with pytest.raises(SipParseError) as info:
        parse_datagram(HEAD)
    _check_salvaged(info.value, 400)
    assert "empty line" in info.value.reason


def test_datagram_cseq_mismatch_carries_the_head() -> None:
    with pytest.raises(SipParseError) as info:
        parse_datagram(invite("salv").replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"))
    assert info.value.status == 400 and info.value.can_reply
    assert [k for k, _ in info.value.partial] == [k for k, _ in WANT]


@pytest.mark.parametrize("name,data,limits,status", DATAGRAM_ERRORS, ids=[e[0] for e in DATAGRAM_ERRORS])
def test_stream_errors_carry_the_salvaged_head(name, data, limits, status) -> None:
    """The same defects on a stream, fed whole and in 7-octet segments: the error comes with the head
    salvaged, and the buffer is never kept beyond the limit to do it."""
    for chunks in ([data], [data[i : i + 7] for i in range(0, len(data), 7)]):
        parser = StreamParser(limits)
        with pytest.raises(SipParseError) as info:
            for chunk in chunks:
                parser.feed(chunk)
                events_of(parser)
                assert parser.buffered <= limits.max_message_size + len(chunk)
            parser.close()
        _check_salvaged(info.value, status)


def test_stream_oversized_head_is_salvaged_without_buffering_past_the_limit() -> None:
    """1 MiB of one header after Via/CSeq: 513 with the head salvaged, the buffer dropped at once."""
    limits = Limits(max_message_size=4096)
    parser = StreamParser(limits)
    parser.feed(HEAD + b"X-Huge: ")
    assert parser.next_event() is NEED_DATA
    with pytest.raises(SipParseError) as info:
        for _ in range(256):
            parser.feed(b"a" * 4096)
            assert parser.next_event() is NEED_DATA
            assert parser.buffered <= 2 * limits.max_message_size
    _check_salvaged(info.value, 513)
    assert info.value.fatal and parser.buffered == 0


def test_stream_body_over_the_limit_is_salvaged_before_it_arrives() -> None:
    parser = StreamParser(Limits(max_message_size=4096))
    parser.feed(invite("salv", body=b"", cl=100_000))
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    _check_salvaged(info.value, 513)
    assert info.value.fatal and parser.buffered == 0


@pytest.mark.parametrize("where", ["mid-line", "before the empty line", "before the body", "mid-body"])
def test_stream_cut_short_by_close_carries_the_head(where: str) -> None:
    """The peer closes mid-head (after the CSeq line), or mid-body: close() raises a fatal 400 with
    the head salvaged from the complete lines, or from the parsed head."""
    data = invite("salv", extra="X-After: 1\r\n")
    head_end = data.index(b"\r\n\r\n") + 2
    cut = {"mid-line": data.index(b"X-After") + 4, "before the empty line": head_end,
           "before the body": head_end + 2, "mid-body": len(data) - 3}[where]
    parser = StreamParser()
    parser.feed(data[:cut])
    assert parser.next_event() is NEED_DATA
    with pytest.raises(SipParseError) as info:
        parser.close()
    _check_salvaged(info.value, 400)
    assert info.value.fatal and info.value.reason == "Truncated message" and parser.buffered == 0
    parser.close()  # nothing left: no second error


def test_stream_close_never_copies_a_half_line() -> None:
    """A CSeq cut before its LF is not copied (a reply with a half CSeq matches nothing): no reply."""
    data = invite("salv")
    parser = StreamParser()
    parser.feed(data[: data.index(b"CSeq: 314159 INVITE") + 10])
    assert parser.next_event() is NEED_DATA
    with pytest.raises(SipParseError) as info:
        parser.close()
    assert ("cseq", "3141") not in info.value.partial and not info.value.can_reply
    parser = StreamParser()
    parser.feed(data[: data.index(b"CSeq: 314159 INVITE") + 19] + b"\r")  # CR without its LF yet
    assert parser.next_event() is NEED_DATA
    with pytest.raises(SipParseError) as info:
        parser.close()
    assert not info.value.can_reply


def test_stream_oversized_never_copies_a_half_line() -> None:
    data = invite("salv", body=b"x" * 2000)
    limit = data.index(b"CSeq: 314159 INVITE") + 10
    for chunks in ([data], [data[i : i + 7] for i in range(0, len(data), 7)]):
        parser = StreamParser(Limits(max_message_size=limit))
        with pytest.raises(SipParseError) as info:
            for chunk in chunks:
                parser.feed(chunk)
                events_of(parser)
        assert info.value.status == 513 and not info.value.can_reply
        assert [k for k, _ in info.value.partial] == ["via", "to", "from", "call-id"]
    with pytest.raises(SipParseError) as info:
        parse_datagram(data, Limits(max_message_size=limit))
    assert info.value.status == 513 and not info.value.can_reply


@pytest.mark.parametrize("left", [b"", b"\r", b"\r\n\r", b"\r\n"])
def test_stream_close_after_keepalives_raises_nothing(left: bytes) -> None:
    parser = StreamParser()
    parser.feed(invite("c1") + left)
    assert len(events_of(parser)) == 1
    parser.close()
    assert parser.buffered == 0


def test_stream_close_after_a_refused_message_does_not_answer_it_twice() -> None:
    """A refused Request-Line was answered when refused; its body cut short raises nothing more."""
    bad = invite("salv", body=b"0123456789").replace(b"INVITE sip:", b"INVITE  sip:", 1)
    parser = StreamParser()
    parser.feed(bad[:-5])
    with pytest.raises(SipParseError):
        parser.next_event()
    assert parser.next_event() is NEED_DATA
    parser.close()
    assert parser.buffered == 0


def test_compact_and_folded_headers_are_salvaged() -> None:
    head = (b"INVITE sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.1\r\n ;branch=z9hG4bK77\r\n"
            b"i: abc@192.0.2.1\r\nf: <sip:a@example.com>;tag=1\r\nt: <sip:bob@example.com>\r\n"
            b"CSeq: 9 INVITE\r\nX-Huge: ")
    want = [("via", "SIP/2.0/UDP 192.0.2.1 ;branch=z9hG4bK77"), ("call-id", "abc@192.0.2.1"),
            ("from", "<sip:a@example.com>;tag=1"), ("to", "<sip:bob@example.com>"), ("cseq", "9 INVITE")]
    limits = Limits(max_message_size=1000)
    with pytest.raises(SipParseError) as info:
        parse_datagram(head + b"a" * 1000, limits)
    assert info.value.partial == want and info.value.can_reply
    parser = StreamParser(limits)
    parser.feed(head + b"a" * 1000)
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    assert info.value.partial == want and info.value.can_reply
    parser = StreamParser(limits)
    parser.feed(head)
    assert parser.next_event() is NEED_DATA
    with pytest.raises(SipParseError) as info:
        parser.close()
    assert info.value.partial == want and info.value.can_reply


def test_a_response_is_never_salvaged() -> None:
    data = b"SIP/2.0 200 OK\r\n" + HEAD.split(b"\r\n", 1)[1]
    with pytest.raises(SipParseError) as info:
        parse_datagram(data + b"X: " + b"y" * 2000 + b"\r\n\r\n", Limits(max_message_size=1000))
    assert info.value.is_request is False and info.value.partial == [] and error_response(info.value) is None
    parser = StreamParser()
    parser.feed(data)
    assert parser.next_event() is NEED_DATA
    with pytest.raises(SipParseError) as info:
        parser.close()
    assert info.value.is_request is False and error_response(info.value) is None


def test_a_broken_ack_is_never_answered() -> None:
    """§17.1.1.3: no response to an ACK exists, so a broken one is dropped even with its head salvaged."""
    data = invite("salv").replace(b"INVITE", b"ACK").replace(b"Content-Length: 5", b"Content-Length: x")
    with pytest.raises(SipParseError) as info:
        parse_datagram(data)
    assert info.value.is_request and ("cseq", "314159 ACK") in info.value.partial
    assert not info.value.can_reply and error_response(info.value) is None
