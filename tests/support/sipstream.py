"""Feeding :class:`edgeproxy.sip.StreamParser` in the stream-framing tests (RFC 3261 §18.3): an INVITE
with a chosen body and Content-Length, and draining the parser's events."""

from __future__ import annotations

from edgeproxy.sip import NEED_DATA, StreamParser

__all__ = ["invite", "events_of"]


def invite(call_id: str = "a84b4c76e66710", body: bytes = b"v=0\r\n", cl: int | None = None,
           extra: str = "") -> bytes:
    """An INVITE over TCP with ``body`` and Content-Length ``cl`` (default: the body's length; a
    negative one: no Content-Length header), ``extra`` header lines before Content-Type."""
    length = len(body) if cl is None else cl
    return (
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TCP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
        "Max-Forwards: 70\r\n"
        "To: Bob <sip:bob@biloxi.example.com>\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 314159 INVITE\r\n"
        f"{extra}"
        "Content-Type: application/sdp\r\n"
        + (f"Content-Length: {length}\r\n" if length >= 0 else "")
        + "\r\n"
    ).encode() + body


def events_of(parser: StreamParser) -> list[object]:
    """Drain ``parser`` until NEED_DATA."""
    out: list[object] = []
    while True:
        ev = parser.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
