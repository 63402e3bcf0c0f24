"""The fuzzer's mutation engine: valid SIP seed messages, broken in the ways a scanner or a fuzzer
breaks them (byte flips, junk, cut lines, repeated and giant headers, lying Content-Length,
truncation, wrong versions, two messages in one, CR/LF/NUL injection). Seeded, so a run can be
repeated exactly; every output fits in one UDP datagram (65,507 octets).
"""

from __future__ import annotations

import random

MAX_DATAGRAM = 65_507
_SPECIAL = [b"\x00", b"\r", b"\n", b"\r\n", b":", b";", b",", b"<", b">", b'"', b"%", b"\\", b" ", b"\t",
            b"=", b"@", b"\xff", b"\xc3\x28", b"[", b"]"]


def seeds(host: str, port: int, source: str = "127.0.0.1", sport: int = 5060) -> list[bytes]:
    """A few valid requests and a response towards ``host:port``."""
    via = f"Via: SIP/2.0/UDP {source}:{sport};branch=z9hG4bK-seed;rport"
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n")

    def req(method: str, ruri: str, extra: str = "", body: str = "") -> bytes:
        return (f"{method} {ruri} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n"
                f"From: \"Fuzz\" <sip:fuzz@{host}>;tag=f1\r\nTo: <sip:alice@{host}>\r\n"
                f"Call-ID: seed-{method.lower()}@{source}\r\nCSeq: 1 {method}\r\n"
                f"Contact: <sip:fuzz@{source}:{sport}>\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}").encode()

    return [
        req("INVITE", f"sip:alice@{host}:{port}", "Content-Type: application/sdp\r\n", sdp),
        req("REGISTER", f"sip:{host}:{port}", "Expires: 60\r\n"),
        req("REGISTER", f"sip:{host}:{port}", 'Authorization: Digest username="alice", realm="' + host
            + '", nonce="abc", uri="sip:' + host + '", response="0123456789abcdef0123456789abcdef"\r\n'),
        req("OPTIONS", f"sip:{host}:{port}", "Accept: application/sdp\r\n"),
        req("MESSAGE", f"sip:bob@{host}:{port}", "Content-Type: text/plain\r\n", "hello"),
        req("BYE", f"sip:alice@{host}:{port}", f"Route: <sip:{host}:{port};lr>\r\n"),
        req("CANCEL", f"sip:alice@{host}:{port}"),
        req("ACK", f"sip:alice@{host}:{port}"),
        req("SUBSCRIBE", f"sip:alice@{host}:{port}", "Event: presence\r\nExpires: 60\r\n"),
        (f"SIP/2.0 200 OK\r\n{via}\r\nFrom: <sip:a@{host}>;tag=1\r\nTo: <sip:b@{host}>;tag=2\r\n"
         f"Call-ID: seed-resp@{source}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode(),
    ]


class Mutator:
    """``next()`` gives the next mutated message (1-3 mutations of a random seed)."""

    def __init__(self, seed_messages: list[bytes], rng_seed: int = 16) -> None:
        self.seeds = seed_messages
        self.rng = random.Random(rng_seed)
        self._ops = [self._flip, self._insert, self._delete, self._dup_line, self._drop_line, self._giant_value,
                     self._content_length, self._truncate, self._junk_start_line, self._two_in_one,
                     self._special_run, self._case_and_compact, self._many_vias, self._unique]
        self.count = 0

    def next(self) -> bytes:
        self.count += 1
        data = self.rng.choice(self.seeds)
        for _ in range(self.rng.randint(1, 3)):
            data = self.rng.choice(self._ops)(data)
        return self._unique(data)[:MAX_DATAGRAM]

    # -- mutations ---------------------------------------------------------------------------------
    def _unique(self, data: bytes) -> bytes:
        """A new branch/Call-ID now and then, so not every message is a retransmission."""
        tag = f"{self.count}".encode()
        return data.replace(b"z9hG4bK-seed", b"z9hG4bK-s" + tag, 1).replace(b"seed-", b"s" + tag + b"-", 1)

    def _flip(self, data: bytes) -> bytes:
        b = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            if b:
                b[self.rng.randrange(len(b))] ^= 1 << self.rng.randrange(8)
        return bytes(b)

    def _insert(self, data: bytes) -> bytes:
        i = self.rng.randrange(len(data) + 1)
        return data[:i] + self.rng.choice(_SPECIAL) * self.rng.randint(1, 20) + data[i:]

    def _delete(self, data: bytes) -> bytes:
        if not data:
            return data
        i = self.rng.randrange(len(data))
        return data[:i] + data[i + self.rng.randint(1, 40):]

    def _lines(self, data: bytes) -> list[bytes]:
        return data.split(b"\r\n")

    def _dup_line(self, data: bytes) -> bytes:
        lines = self._lines(data)
        i = self.rng.randrange(len(lines))
        n = self.rng.choice([2, 5, 50, 300, 3000])
        return b"\r\n".join(lines[:i] + [lines[i]] * n + lines[i + 1:])

    def _drop_line(self, data: bytes) -> bytes:
        lines = self._lines(data)
        if len(lines) > 2:
            del lines[self.rng.randrange(1, len(lines))]
        return b"\r\n".join(lines)

    def _giant_value(self, data: bytes) -> bytes:
        lines = self._lines(data)
        i = self.rng.randrange(len(lines))
        size = self.rng.choice([300, 5000, 20000, 60000])
        lines[i] = lines[i] + self.rng.choice([b"a", b";p=", b",", b"%41", b"<sip:x@y>,"]) * (size // 4)
        return b"\r\n".join(lines)

    def _content_length(self, data: bytes) -> bytes:
        value = self.rng.choice([b"-1", b"99999999999999999999", b"0", b"65536", b"abc", b"1 2", b"", b"40"])
        head, sep, rest = data.partition(b"Content-Length: ")
        if not sep:
            return data
        _, _, tail = rest.partition(b"\r\n")
        return head + sep + value + b"\r\n" + tail

    def _truncate(self, data: bytes) -> bytes:
        return data[: self.rng.randrange(len(data) + 1)]

    def _junk_start_line(self, data: bytes) -> bytes:
        first, sep, rest = data.partition(b"\r\n")
        junk = self.rng.choice([b"INVITE sip:x SIP/3.0", b"GET / HTTP/1.1", b"INVITE  SIP/2.0", b"\x16\x03\x01\x02",
                                b"INV\x00ITE sip:a@b SIP/2.0", b"SIP/2.0 999999 X", b"X" * 5000, b""])
        return junk + sep + rest

    def _two_in_one(self, data: bytes) -> bytes:
        return data + self.rng.choice(self.seeds)

    def _special_run(self, data: bytes) -> bytes:
        i = self.rng.randrange(len(data) + 1)
        return data[:i] + bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 64))) + data[i:]

    def _case_and_compact(self, data: bytes) -> bytes:
        for full, compact in ((b"Via:", b"v:"), (b"From:", b"f:"), (b"To:", b"t:"), (b"Call-ID:", b"i:"),
                              (b"Content-Length:", b"l:"), (b"Contact:", b"m:")):
            if self.rng.random() < 0.5:
                data = data.replace(full, compact)
        return data.lower() if self.rng.random() < 0.2 else data

    def _many_vias(self, data: bytes) -> bytes:
        first, sep, rest = data.partition(b"\r\n")
        n = self.rng.choice([10, 200, 2000])
        return first + sep + b"v: SIP/2.0/UDP 10.0.0.1\r\n" * n + rest
