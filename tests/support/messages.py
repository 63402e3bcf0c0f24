"""SIP requests as they come off the wire, built as text and parsed by ``parse_datagram`` (what a
transport hands the node), for the sans-I/O tests of the registrar and what sits on it."""

from __future__ import annotations

import itertools

from edgeproxy.sip import Request, parse_datagram

__all__ = ["register"]

_branch = itertools.count(1)


def register(*contacts: str, to: str = "<sip:alice@Example.COM>", call_id: str = "reg-1@host", cseq: int = 1,
             extra: tuple[str, ...] = ()) -> Request:
    """A REGISTER for the AoR ``to`` (its From too) with one Contact header per ``contacts`` and the
    ``extra`` header lines; each gets a fresh Via branch."""
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK{next(_branch)}",
        "Max-Forwards: 70",
        f"From: {to};tag=f1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *extra,
        "Content-Length: 0",
    ]
    msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg
