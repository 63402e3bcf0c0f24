"""The STUN keep-alive of SIP outbound over UDP (RFC 5626 §4.4.2, §8.4; RFC 5389 §7.3, §15.2).

A client using outbound over UDP sends STUN Binding requests to the SIP port of the edge proxy and
watches the reflexive address in the answer to detect NAT rebinding. Only Binding requests without
attributes that need understanding are answered; nothing else of STUN is implemented.
"""

from __future__ import annotations

import socket
import struct

from ..sip.address import ip_literal

__all__ = ["is_stun", "binding_response"]

MAGIC_COOKIE = 0x2112A442
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_XOR_MAPPED_ADDRESS = 0x0020
_HEADER = struct.Struct("!HHI")


def is_stun(data: bytes) -> bool:
    """Whether a datagram is a STUN message (RFC 5389 §6: top two bits zero, the magic cookie, a
    length that matches and is a multiple of 4). SIP text can never look like this."""
    if len(data) < 20 or data[0] & 0xC0:
        return False
    _, length, cookie = _HEADER.unpack_from(data)
    return cookie == MAGIC_COOKIE and length % 4 == 0 and len(data) == 20 + length


def binding_response(data: bytes, host: str, port: int) -> bytes | None:
    """The Binding success response to a STUN Binding request from ``host``:``port``, carrying that
    address in XOR-MAPPED-ADDRESS (RFC 5389 §15.2); None for any other STUN message."""
    if not is_stun(data):
        return None
    msg_type = _HEADER.unpack_from(data)[0]
    if msg_type != _BINDING_REQUEST:
        return None
    literal = ip_literal(host)
    if literal is None:
        return None
    family, text = literal
    txid = data[8:20]
    packed = socket.inet_pton(family, text.partition("%")[0])
    mask = struct.pack("!I", MAGIC_COOKIE) + (txid if family == socket.AF_INET6 else b"")
    xaddr = bytes(a ^ b for a, b in zip(packed, mask, strict=False))
    value = struct.pack("!BBH", 0, 1 if family == socket.AF_INET else 2, port ^ (MAGIC_COOKIE >> 16)) + xaddr
    attribute = struct.pack("!HH", _XOR_MAPPED_ADDRESS, len(value)) + value
    return _HEADER.pack(_BINDING_SUCCESS, len(attribute), MAGIC_COOKIE) + txid + attribute
