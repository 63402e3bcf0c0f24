"""Stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1) of :class:`edgeproxy.sip.StreamParser`.

Framing is proven on every valid RFC 4475 message that has a Content-Length, fed whole, one byte at a
time and in random (seeded) splits, alone and back-to-back with keep-alive pings and stray CRLFs in
between; then the failure modes: oversized heads, bad or missing Content-Length, and the limits.
"""

from __future__ import annotations

import random

import pytest
from support.rfc4475 import MANIFEST, load
from support.sipstream import events_of, invite

from edgeproxy.sip import (
    NEED_DATA,
    PING,
    Limits,
    Message,
    Request,
    Response,
    SipParseError,
    StreamParser,
    error_response,
    parse_datagram,
)


def _framed_valid() -> dict[str, bytes]:
    """Valid RFC 4475 messages that a stream can carry: they have a Content-Length (§18.3), and
    ``dblreq`` is a datagram-only case."""
    out = {}
    for name, entry in MANIFEST.items():
        if not entry["valid"] or name == "dblreq":
            continue
        data = load(name)
        msg = parse_datagram(data)
        if msg is not None and "content-length" in msg.headers:
            out[name] = data
    return out


VALID = _framed_valid()


def feed_chunks(chunks: list[bytes], limits: Limits | None = None) -> list[object]:
    parser = StreamParser(limits) if limits else StreamParser()
    out: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        out.extend(events_of(parser))
    assert parser.buffered == 0
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]


# -- framing of valid messages ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(VALID))
def test_whole(name: str) -> None:
    data = VALID[name]
    assert feed_chunks([data]) == [parse_datagram(data)]


@pytest.mark.parametrize("name", sorted(VALID))
def test_one_byte_at_a_time(name: str) -> None:
    data = VALID[name]
    events = feed_chunks([data[i : i + 1] for i in range(len(data))])
    assert events == [parse_datagram(data)]


@pytest.mark.parametrize("seed", range(20))
def test_random_splits_of_everything(seed: int) -> None:
    """All valid messages back-to-back with pings and stray CRLFs between them, cut at random."""
    rng = random.Random(seed)
    names = sorted(VALID)
    rng.shuffle(names)
    stream = bytearray()
    expected: list[object] = []
    for name in names:
        gap = rng.choice(["", "", "crlf", "ping"])
        if gap == "crlf":
            stream += b"\r\n"  # stray CRLF between messages: skipped silently (§7.5)
        elif gap == "ping":
            stream += b"\r\n\r\n"  # RFC 5626 §3.5.1 keep-alive
            expected.append(PING)
        stream += VALID[name]
        expected.append(parse_datagram(VALID[name]))
    data = bytes(stream)
    cuts = rng.sample(range(1, len(data)), rng.randint(1, 200))
    assert feed_chunks(split_at(data, cuts)) == expected


def test_back_to_back_in_one_segment() -> None:
    data = b"".join(VALID[n] for n in sorted(VALID))
    parser = StreamParser()
    parser.feed(data)
    assert events_of(parser) == [parse_datagram(VALID[n]) for n in sorted(VALID)]
    assert parser.buffered == 0


def test_requests_and_responses_interleaved() -> None:
    msgs = [invite("c1"), VALID["noreason"], invite("c2", body=b""), VALID["unreason"]]
    events = feed_chunks([b"".join(msgs)])
    assert [type(e) for e in events] == [Request, Response, Request, Response]
    assert events[0].call_id == "c1" and events[2].call_id == "c2"  # type: ignore[union-attr]
    assert events[0].body == b"v=0\r\n" and events[2].body == b""  # type: ignore[union-attr]


def test_body_with_crlfcrlf_is_framed_by_content_length() -> None:
    body = b"a=1\r\n\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n"
    events = feed_chunks([invite("c1", body=body) + invite("c2")])
    assert [e.body for e in events] == [body, b"v=0\r\n"]  # type: ignore[union-attr]


# -- keep-alives and stray CRLFs --------------------------------------------------------------------

def test_ping_alone() -> None:
    assert feed_chunks([b"\r\n\r\n"]) == [PING]
    assert feed_chunks([b"\r\n", b"\r\n"]) == [PING]
    assert feed_chunks([b"\r", b"\n", b"\r", b"\n"]) == [PING]


def test_ping_between_messages() -> None:
    a, b = invite("c1"), invite("c2")
    events = feed_chunks([a + b"\r\n\r\n" + b + b"\r\n\r\n\r\n\r\n"])
    assert events[1] is PING and events[3] is PING and events[4] is PING
    assert [e.call_id for e in events if isinstance(e, Message)] == ["c1", "c2"]


def test_single_crlf_waits_then_is_skipped() -> None:
    """A lone CRLF may be half a ping: the parser waits, then skips it when a message follows."""
    parser = StreamParser()
    parser.feed(invite("c1") + b"\r\n")
    (msg,) = events_of(parser)
    assert msg.call_id == "c1" and parser.buffered == 2  # type: ignore[union-attr]
    parser.feed(invite("c2"))
    (msg,) = events_of(parser)
    assert msg.call_id == "c2" and parser.buffered == 0  # type: ignore[union-attr]


def test_stray_crlf_then_ping() -> None:
    # six octets: the first four are the ping, the last two a stray CRLF
    assert feed_chunks([b"\r\n\r\n\r\n" + invite("c1")])[0] is PING
    events = feed_chunks([b"\r\n", b"\r\n\r\n", invite("c1")])
    assert events[0] is PING and events[1].call_id == "c1"  # type: ignore[union-attr]
    assert len(events) == 2


def test_pong_from_peer_is_skipped() -> None:
    """Our own ping's answer (a single CRLF, RFC 5626 §4.4.1) before a message yields no event."""
    events = feed_chunks([b"\r\n" + invite("c1")])
    assert [type(e) for e in events] == [Request]


# -- oversized input --------------------------------------------------------------------------------

def test_one_megabyte_header_is_513_fatal() -> None:
    head = invite("big", body=b"", extra="X-Big: ").split(b"\r\n\r\n")[0]
    parser = StreamParser()
    parser.feed(head + b"\r\nX-Huge: ")
    assert parser.next_event() is NEED_DATA
    chunk = b"a" * 65536
    with pytest.raises(SipParseError) as info:
        for _ in range(16):  # 1 MiB, never a CRLFCRLF
            parser.feed(chunk)
            assert parser.next_event() is NEED_DATA
    exc = info.value
    assert exc.status == 513 and exc.fatal and exc.is_request is True
    # the head before the huge header was enough to answer (§21.5.14)
    reply = error_response(exc)
    assert reply is not None and reply.status == 513
    assert reply.headers.get("call-id") == "big" and reply.headers.get("cseq") == "314159 INVITE"
    assert parser.buffered == 0


def test_one_megabyte_header_line_with_large_message_limit() -> None:
    """With room for the message, the line limit still refuses the 1 MB header line."""
    limits = Limits(max_message_size=4 << 20, max_line_length=16384)
    data = invite("big", body=b"", extra="X-Big: " + "a" * (1 << 20) + "\r\n")
    with pytest.raises(SipParseError) as info:
        feed_chunks([data], limits)
    assert info.value.status == 513 and info.value.fatal and info.value.can_reply


def test_one_megabyte_datagram_is_513() -> None:
    with pytest.raises(SipParseError) as info:
        parse_datagram(invite("big", body=b"x" * (1 << 20)))
    assert info.value.status == 513 and info.value.can_reply and not info.value.fatal


def test_body_over_message_limit_is_513_before_it_arrives() -> None:
    parser = StreamParser(Limits(max_message_size=4096))
    parser.feed(invite("c1", body=b"", cl=100_000))
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    assert info.value.status == 513 and info.value.fatal and info.value.can_reply


def test_slow_huge_head_is_scanned_linearly() -> None:
    """Many small segments of a big head: the CRLFCRLF search resumes where it stopped."""
    data = invite("c1", extra="".join(f"X-H{i}: {'v' * 50}\r\n" for i in range(200)))
    events = feed_chunks([data[i : i + 7] for i in range(0, len(data), 7)])
    assert len(events) == 1 and events[0].headers.get("x-h199") == "v" * 50  # type: ignore[union-attr]


# -- Content-Length ---------------------------------------------------------------------------------

def test_missing_content_length_means_empty_body() -> None:
    """§18.3 makes Content-Length mandatory on streams; without it the body is taken as empty."""
    msg = invite("c1", body=b"", cl=-1)
    (event,) = feed_chunks([msg])
    assert event.body == b"" and "content-length" not in event.headers  # type: ignore[union-attr]
    # serialising adds it back
    assert b"\r\nContent-Length: 0\r\n\r\n" in event.to_bytes()  # type: ignore[union-attr]


def test_missing_content_length_with_body_loses_framing() -> None:
    """The body of a message without Content-Length is read as the next head: it waits for a blank
    line, and when the next message completes it, the garbage head is a fatal error."""
    parser = StreamParser()
    parser.feed(invite("c1", body=b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n", cl=-1))
    (event,) = events_of(parser)
    assert event.body == b""  # type: ignore[union-attr]
    parser.feed(invite("c2"))
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    assert info.value.fatal and info.value.status == 400


def test_content_length_too_small_loses_framing() -> None:
    parser = StreamParser()
    parser.feed(invite("c1", body=b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n", cl=5) + invite("c2"))
    first = parser.next_event()
    assert first.body == b"v=0\r\n"  # type: ignore[union-attr]
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    assert info.value.fatal


def test_content_length_too_large_swallows_next_message() -> None:
    parser = StreamParser()
    second = invite("c2")
    parser.feed(invite("c1", body=b"v=0\r\n", cl=5 + len(second) + 10) + second)
    assert parser.next_event() is NEED_DATA  # waiting for 10 more octets
    parser.feed(b"0123456789")
    (event,) = events_of(parser)
    assert event.body == b"v=0\r\n" + second + b"0123456789"  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["-1", "abc", "1e3", "", "99999999999", "١٢", "5, 5"])
def test_bad_content_length_is_fatal(value: str) -> None:
    data = invite("c1").replace(b"Content-Length: 5", f"Content-Length: {value}".encode())
    parser = StreamParser()
    parser.feed(data + invite("c2"))
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    assert info.value.fatal and info.value.status == 400 and info.value.can_reply
    assert parser.buffered == 0  # framing lost: the connection must close


def test_two_content_lengths_are_fatal_even_if_equal() -> None:
    data = invite("c1").replace(b"Content-Length: 5\r\n", b"Content-Length: 5\r\nl: 5\r\n")
    with pytest.raises(SipParseError) as info:
        feed_chunks([data])
    assert info.value.fatal


def test_body_arrives_later() -> None:
    data = invite("c1", body=b"0123456789")
    parser = StreamParser()
    parser.feed(data[:-10])
    assert parser.next_event() is NEED_DATA
    parser.feed(b"01234")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"56789")
    (event,) = events_of(parser)
    assert event.body == b"0123456789"  # type: ignore[union-attr]


# -- errors that keep framing -----------------------------------------------------------------------

def test_bad_header_value_consumes_only_that_message() -> None:
    bad = invite("c1").replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    parser = StreamParser()
    parser.feed(bad + invite("c2"))
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    assert not info.value.fatal and info.value.status == 400 and info.value.can_reply
    (good,) = events_of(parser)
    assert good.call_id == "c2"  # type: ignore[union-attr]


def test_bad_start_line_before_its_body_arrives() -> None:
    """A refused Request-Line is reported at once; its body is skipped when it comes."""
    bad = invite("c1", body=b"0123456789").replace(b"INVITE sip:", b"INVITE  sip:", 1)
    parser = StreamParser()
    parser.feed(bad[:-10])
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    assert not info.value.fatal and info.value.can_reply
    assert parser.next_event() is NEED_DATA
    parser.feed(bad[-10:] + invite("c2"))
    (good,) = events_of(parser)
    assert good.call_id == "c2"  # type: ignore[union-attr]


def test_bad_response_is_dropped_and_framing_kept() -> None:
    bad = VALID["noreason"].replace(b"SIP/2.0 100 ", b"SIP/2.0 1000 ", 1)
    parser = StreamParser()
    parser.feed(bad + invite("c2"))
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    assert info.value.is_request is False and not info.value.fatal
    assert error_response(info.value) is None
    assert events_of(parser)[0].call_id == "c2"  # type: ignore[union-attr]


def test_garbage_head_is_fatal() -> None:
    with pytest.raises(SipParseError) as info:
        feed_chunks([b"GET / HTTP/1.1\r\nHost example.com\r\n\r\n"])
    assert info.value.fatal


# -- limits -----------------------------------------------------------------------------------------

def test_max_headers() -> None:
    data = invite("c1", extra="".join(f"X-{i}: v\r\n" for i in range(20)))
    n_headers = data.split(b"\r\n\r\n")[0].count(b"\r\n")
    assert feed_chunks([data], Limits(max_headers=n_headers))  # exactly at the limit: fine
    with pytest.raises(SipParseError) as info:
        feed_chunks([data], Limits(max_headers=n_headers - 1))
    assert info.value.status == 513 and info.value.fatal and info.value.can_reply
    with pytest.raises(SipParseError) as info:
        parse_datagram(data, Limits(max_headers=n_headers - 1))
    assert info.value.status == 513 and not info.value.fatal and info.value.can_reply


def test_max_line_length() -> None:
    data = invite("c1", extra="X-Long: " + "x" * 992 + "\r\n")  # a 1000-octet line
    assert feed_chunks([data], Limits(max_line_length=1000))
    with pytest.raises(SipParseError) as info:
        feed_chunks([data], Limits(max_line_length=999))
    assert info.value.status == 513 and info.value.fatal and info.value.can_reply
    with pytest.raises(SipParseError) as info:
        parse_datagram(data, Limits(max_line_length=999))
    assert info.value.status == 513


def test_max_line_length_applies_to_request_line() -> None:
    data = invite("c1").replace(b"sip:bob@", b"sip:" + b"b" * 2000 + b"@", 1)
    with pytest.raises(SipParseError) as info:
        parse_datagram(data, Limits(max_line_length=1000))
    assert info.value.status == 513 and info.value.can_reply


def test_max_message_size() -> None:
    data = invite("c1", body=b"x" * 1000)
    assert feed_chunks([data], Limits(max_message_size=len(data)))
    with pytest.raises(SipParseError) as info:
        feed_chunks([data], Limits(max_message_size=len(data) - 1))
    assert info.value.status == 513 and info.value.fatal
    assert parse_datagram(data, Limits(max_message_size=len(data))) is not None
    with pytest.raises(SipParseError) as info:
        parse_datagram(data, Limits(max_message_size=len(data) - 1))
    assert info.value.status == 513 and info.value.can_reply


def test_head_without_end_over_limit() -> None:
    limits = Limits(max_message_size=1000)
    parser = StreamParser(limits)
    parser.feed(b"OPTIONS sip:x@example.com SIP/2.0\r\n")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"X: " + b"y" * 1000)
    with pytest.raises(SipParseError) as info:
        parser.next_event()
    assert info.value.status == 513 and info.value.fatal and info.value.is_request is True
    assert not info.value.can_reply  # no Via/CSeq arrived: nothing to answer with


def test_many_empty_lines_then_continuation_is_an_error_not_a_recursion() -> None:
    """Regression (found by fuzzing): an LF-only head with thousands of empty lines before a
    continuation line once unfolded one line per recursive call."""
    for n in (10, 3000):
        data = b"OPTIONS sip:a@example.com SIP/2.0\n" + b"\n" * n + b" a\r\n\r\n"
        with pytest.raises(SipParseError):
            parse_datagram(data)
        with pytest.raises(SipParseError):
            feed_chunks([data])
        with pytest.raises(SipParseError):
            parse_datagram(data, Limits(max_headers=5))
