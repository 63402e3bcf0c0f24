"""SIP written by hand over a UDP socket on loopback, for what SIPp's scenarios cannot do (a replayed
REGISTER, odd Contact and Expires combinations, timing one reply): :class:`RawUA`, the text of a
REGISTER (:func:`register_text`), a reply's status, and HTTP Digest with MD5 and ``qop=auth`` (RFC 3261
§22.4, RFC 7616 §3.4): reading a challenge (:func:`challenge_of`) and answering it (:func:`digest_answer`)."""

from __future__ import annotations

import hashlib
import re
import socket
from typing import Any, Protocol

from .ports import LOOPBACK

__all__ = ["RawUA", "register_text", "status", "digest_params", "challenge_of", "md5_hex", "digest_answer"]


class Reachable(Protocol):
    """Where requests go (:class:`~support.node_harness.EdgeproxyNode`)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class RawUA:
    """A UDP socket on 127.0.0.1 that sends requests to ``node`` and reads its replies."""

    def __init__(self, node: Reachable, timeout: float = 3.0) -> None:
        self.node = node
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(timeout)
        self.port: int = self.sock.getsockname()[1]

    def send(self, data: bytes | str) -> None:
        self.sock.sendto(data.encode() if isinstance(data, str) else data, (self.node.host, self.node.port))

    def request(self, data: bytes | str) -> str:
        """Send ``data`` and return the first reply that is not a 100 Trying."""
        self.send(data)
        while True:
            reply = self.sock.recv(65535).decode("utf-8", "replace")
            if not reply.startswith("SIP/2.0 100 "):
                return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawUA:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def register_text(user: str, port: int, *, call_id: str, cseq: int, contact: str | None = None,
                  expires: int | None = 300, branch: str | None = None, from_tag: str | None = None,
                  headers: str = "") -> bytes:
    """A REGISTER of ``user@127.0.0.1`` sent from 127.0.0.1:``port``: ``contact`` and ``expires`` as
    Contact and Expires headers when not None, ``headers`` (whole lines, CRLF-terminated) before
    Content-Length."""
    contact_line = f"Contact: {contact}\r\n" if contact is not None else ""
    expires_line = f"Expires: {expires}\r\n" if expires is not None else ""
    return (
        f"REGISTER sip:{LOOPBACK} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch={branch or f'z9hG4bK-{call_id}-{cseq}'};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@{LOOPBACK}>;tag={from_tag or f'r{cseq}'}\r\n"
        f"To: <sip:{user}@{LOOPBACK}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
        f"{contact_line}{expires_line}{headers}Content-Length: 0\r\n\r\n"
    ).encode()


def status(reply: str) -> int:
    """The status code of a response's text."""
    return int(reply.split(" ", 2)[1])


def digest_params(value: str) -> dict[str, str]:
    """The parameters of a ``Digest ...`` challenge or credentials, quoted or not (names lower-case)."""
    assert value.startswith("Digest "), value
    return {k.lower(): quoted if quoted or not bare else bare
            for k, quoted, bare in re.findall(r'([\w-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', value[len("Digest "):])}


def challenge_of(reply: str, name: str = "WWW-Authenticate") -> dict[str, str]:
    """The parameters of the Digest challenge in the ``name`` header of ``reply``."""
    line = re.search(rf"^{name}: (Digest .*)\r$", reply, re.M)
    assert line, reply
    return digest_params(line.group(1))


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_answer(user: str, password: str, challenge: dict[str, str], *, method: str = "REGISTER",
                  uri: str = f"sip:{LOOPBACK}", nc: int = 1, cnonce: str = "c0ffee") -> str:
    """The ``Digest ...`` credentials answering ``challenge`` (MD5, ``qop=auth``, RFC 7616 §3.4.1) for
    ``user`` with ``password``."""
    ha1 = md5_hex(f"{user}:{challenge['realm']}:{password}")
    ha2 = md5_hex(f"{method}:{uri}")
    response = md5_hex(f"{ha1}:{challenge['nonce']}:{nc:08x}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc={nc:08x}, cnonce="{cnonce}"')
