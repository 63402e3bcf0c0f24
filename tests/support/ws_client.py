"""A minimal blocking WebSocket client on a plain (or TLS-wrapped) standard-library socket: the
opening handshake with the ``sip`` subprotocol (RFC 7118 §4), masked client frames (RFC 6455 §5.3)
and the server's unmasked frames (§5.2). One copy for the tests that speak to a real node as a
browser would (examples, usrloc sharing) and for the benchmarks and attack tools in ``bench/``,
which put ``tests/`` on ``sys.path`` to import it.

It checks nothing itself: callers assert what they expect (the ``101``, the opcode).
"""

from __future__ import annotations

import base64
import os
import socket
import struct

__all__ = ["ws_upgrade", "ws_frame", "ws_read"]


def ws_upgrade(sock: socket.socket, host: str, port: int, *, origin: str | None = None) -> bytes:
    """Send the opening handshake (subprotocol ``sip``, and ``Origin`` when given) and return what the
    server sent up to its head's blank line -- and possibly bytes after it (a frame the server sent at
    once): callers that need those split on ``\\r\\n\\r\\n``. ``ConnectionError`` if the server closes
    before the head is complete."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
                  + (f"Origin: {origin}\r\n" if origin else "") + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed during the WebSocket handshake after {head!r}")
        head += chunk
    return head


def ws_frame(payload: bytes, binary: bool = False) -> bytes:
    """One masked client frame (text, or binary with ``binary=True``) carrying ``payload``."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x82 if binary else 0x81])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
    return head + mask + masked


def _mask_fast(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def ws_read(sock: socket.socket) -> tuple[int, bytes]:
    """Block for one unmasked server frame: its opcode and payload. ``ConnectionError`` if the socket
    closes mid-frame."""
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the WebSocket closed")
            out += chunk
        return out

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", exactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", exactly(8))
    return first & 0x0F, exactly(length)

