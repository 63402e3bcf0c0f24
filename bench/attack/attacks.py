"""The attacks of the suite, each against a running :class:`~target.Target`, bounded in count and
time, loopback only. Each returns a :class:`Result`: what was sent, what came back, the node's RSS
before and after, the log lines it wrote (and the most any one source caused per second), tracebacks.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from mutator import Mutator, seeds
from target import Target, ws_connect, ws_frame


@dataclass
class Result:
    attack: str
    sent: int = 0
    sent_bytes: int = 0
    replies: int = 0
    reply_bytes: int = 0
    seconds: float = 0.0
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    rss_peak_kb: int = 0
    log_lines: int = 0
    max_lines_per_source_s: float = 0.0
    tracebacks: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Watch:
    """RSS and log of the target around one attack."""

    def __init__(self, target: Target, name: str, sources: list[str]) -> None:
        self.target, self.sources = target, sources
        self.result = Result(name, rss_before_kb=target.rss_kb())
        self.log_offset = len(target.log())
        self.started = time.monotonic()
        self.result.rss_peak_kb = self.result.rss_before_kb

    def sample(self) -> None:
        if self.target.running():
            self.result.rss_peak_kb = max(self.result.rss_peak_kb, self.target.rss_kb())

    def done(self) -> Result:
        r = self.result
        r.seconds = round(time.monotonic() - self.started, 1)
        self.sample()
        r.rss_after_kb = self.target.rss_kb() if self.target.running() else 0
        new = self.target.log()[self.log_offset:]
        lines = new.splitlines()
        r.log_lines = len(lines)
        r.tracebacks = new.count("Traceback")
        per_source = max((sum(1 for line in lines if re.search(rf"\b{re.escape(s)}\b", line)) for s in self.sources),
                         default=0)
        r.max_lines_per_source_s = round(per_source / max(r.seconds, 1.0), 2)
        r.notes["alive"] = self.target.running()
        return r


def _sources(prefix: str, n: int) -> list[str]:
    return [f"{prefix}.{i // 250}.{i % 250 + 1}" for i in range(n)]


def _drain(sock: socket.socket, result: Result) -> None:
    while True:
        try:
            data = sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if not data:
            return
        result.replies += 1
        result.reply_bytes += len(data)


# -- fuzzing ----------------------------------------------------------------------------------------

def fuzz_udp(t: Target, count: int, seconds: float, n_sources: int = 20) -> Result:
    sources = _sources("127.20", n_sources)
    w = Watch(t, "fuzz UDP", sources)
    socks = []
    for src in sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.setblocking(False)
        socks.append(s)
    mut = Mutator(seeds(t.host, t.port, sources[0], socks[0].getsockname()[1]), 1601)
    deadline = time.monotonic() + seconds
    r = w.result
    for i in range(count):
        if time.monotonic() > deadline:
            break
        s = socks[i % len(socks)]
        data = mut.next()
        try:
            s.sendto(data, (t.host, t.port))
        except (BlockingIOError, OSError):
            time.sleep(0.001)
            continue
        r.sent += 1
        r.sent_bytes += len(data)
        if i % 50 == 0:
            for s2 in socks:
                _drain(s2, r)
            if i % 5000 == 0:
                w.sample()
            time.sleep(0.0005)  # ~a few thousand a second: the node's socket buffer is not the test
    time.sleep(1.0)
    for s in socks:
        _drain(s, r)
        s.close()
    return w.done()


def _stream_fuzz(t: Target, name: str, count: int, seconds: float, n_conns: int,
                 connect: Callable[[str], socket.socket], frame: Callable[[bytes], bytes]) -> Result:
    sources = _sources("127.21" if name.endswith("TCP") else "127.22", n_conns)
    w = Watch(t, name, sources)
    r = w.result
    mut = Mutator(seeds(t.host, t.port), 1602)
    conns: list[socket.socket | None] = [None] * n_conns
    deadline = time.monotonic() + seconds
    reconnects = 0
    for i in range(count):
        if time.monotonic() > deadline:
            break
        k = i % n_conns
        s = conns[k]
        if s is None:
            try:
                s = connect(sources[k])
                s.setblocking(False)
            except OSError:
                time.sleep(0.01)
                continue
            conns[k] = s
            reconnects += 1
        data = mut.next()
        try:
            s.sendall(frame(data))  # non-blocking: a partial write breaks framing, which is fuzz too
            r.sent += 1
            r.sent_bytes += len(data)
        except (BlockingIOError, InterruptedError):
            time.sleep(0.002)
        except OSError:
            s.close()
            conns[k] = None
            continue
        try:
            data = s.recv(65535)
            if not data:
                s.close()
                conns[k] = None
            else:
                r.replies += 1
                r.reply_bytes += len(data)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            s.close()
            conns[k] = None
        if i % 2000 == 0:
            w.sample()
    time.sleep(1.0)
    for s in conns:
        if s is not None:
            _drain(s, r)
            s.close()
    r.notes["connections"] = reconnects
    return w.done()


def fuzz_tcp(t: Target, count: int, seconds: float, n_conns: int = 20) -> Result:
    def connect(src: str) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.settimeout(2.0)
        s.connect((t.host, t.tcp_port))
        return s

    return _stream_fuzz(t, "fuzz TCP", count, seconds, n_conns, connect, lambda d: d)


def fuzz_ws(t: Target, count: int, seconds: float, n_conns: int = 20) -> Result:
    return _stream_fuzz(t, "fuzz WS", count, seconds, n_conns, lambda src: ws_connect(t.host, t.port, src),
                        lambda d: ws_frame(d, binary=True))


# -- amplification ---------------------------------------------------------------------------------

def amplification(t: Target, seconds: float) -> Result:
    """One datagram each, never ACKed, from its own socket; replies counted for ``seconds`` (the
    default Timer H is 32 s)."""
    probes = {
        "INVITE unknown user": lambda p: (f"INVITE sip:nobody@{t.host}:{t.port} SIP/2.0", "INVITE", ""),
        "REGISTER, no credentials": lambda p: (f"REGISTER sip:{t.host}:{t.port} SIP/2.0", "REGISTER",
                                               f"Contact: <sip:alice@127.0.0.30:{p}>\r\n"),
        "OPTIONS to the node": lambda p: (f"OPTIONS sip:{t.host}:{t.port} SIP/2.0", "OPTIONS", ""),
    }
    w = Watch(t, "amplification probe", ["127.0.0.30"])
    r = w.result
    socks = {}
    for name, make in probes.items():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.30", 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        line, method, extra = make(port)
        data = (f"{line}\r\nVia: SIP/2.0/UDP 127.0.0.30:{port};branch=z9hG4bK-amp{port};rport\r\nMax-Forwards: 70\r\n"
                f"From: <sip:alice@{t.host}>;tag=amp\r\nTo: <sip:alice@{t.host}>\r\nCall-ID: amp{port}@x\r\n"
                f"CSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n").encode()
        s.sendto(data, (t.host, t.port))
        r.sent += 1
        r.sent_bytes += len(data)
        socks[name] = (s, len(data), Result(name))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for s, _, pr in socks.values():
            _drain(s, pr)
        time.sleep(0.05)
    for name, (s, size, pr) in socks.items():
        _drain(s, pr)
        s.close()
        r.replies += pr.replies
        r.reply_bytes += pr.reply_bytes
        r.notes[name] = {"replies": pr.replies, "reply_bytes": pr.reply_bytes, "request_bytes": size,
                         "reply_minus_request": pr.reply_bytes - size}
    return w.done()


# -- handshake bomb, slowloris -----------------------------------------------------------------------

def handshake_bomb(t: Target, n_conns: int, seconds: float) -> Result:
    sources = _sources("127.23", max(1, n_conns // 50))
    w = Watch(t, "WS handshake bomb", sources)
    r = w.result
    conns = []
    for i in range(n_conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sources[i % len(sources)], 0))
        s.settimeout(2.0)
        try:
            s.connect((t.host, t.port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        except OSError:
            s.close()
            continue
        s.setblocking(False)
        conns.append(s)
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    deadline = time.monotonic() + seconds
    refused = set()
    while time.monotonic() < deadline and len(refused) < len(conns):
        for k, s in enumerate(conns):
            if k in refused:
                continue
            try:
                n = s.send(line * 8)
                r.sent_bytes += n
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                refused.add(k)
                continue
            try:
                data = s.recv(4096)
                if data.startswith(b"HTTP/1.1 4"):
                    r.replies += 1
                    r.reply_bytes += len(data)
                if not data or data.startswith(b"HTTP/1.1 4"):
                    refused.add(k)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                refused.add(k)
        w.sample()
    r.sent = len(conns)
    r.notes["connections answered or closed"] = len(refused)
    r.notes["MB accepted per connection"] = round(r.sent_bytes / max(len(conns), 1) / 1e6, 2)
    for s in conns:
        s.close()
    time.sleep(1.0)
    return w.done()


def slowloris(t: Target, n_conns: int, seconds: float, n_sources: int = 20) -> Result:
    """Connections that trickle one byte a second: half SIP over TCP, half WebSocket heads."""
    sources = _sources("127.24", n_sources)
    w = Watch(t, "slowloris TCP+WS", sources)
    r = w.result
    conns = []
    for i in range(n_conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sources[i % n_sources], 0))
        s.settimeout(1.0)
        try:
            s.connect((t.host, t.tcp_port if i % 2 else t.port))
            s.sendall(b"OPTIONS sip:x SIP/2.0\r\n" if i % 2 else b"GET / HTTP/1.1\r\n")
            r.sent += 1
        except OSError:
            s.close()
            continue
        s.setblocking(False)
        conns.append(s)
    deadline = time.monotonic() + seconds
    alive = conns
    while time.monotonic() < deadline:
        still = []
        for s in alive:
            try:
                s.send(b"X")
                r.sent_bytes += 1
                if s.recv(4096) == b"":
                    s.close()
                    continue
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                s.close()
                continue
            still.append(s)
        alive = still
        w.sample()
        time.sleep(1.0)
    r.notes["connected"] = len(conns)
    r.notes["still open at the end"] = len(alive)
    r.notes["OPTIONS over UDP answered during it"] = t.options_answered(2.0, "127.0.0.31")
    for s in alive:
        s.close()
    return w.done()


# -- state flood ------------------------------------------------------------------------------------

def state_flood(t: Target, count: int, size: int, settle: float) -> Result:
    """``count`` INVITEs of ``size`` octets to unknown users, from many sources (25 each, under
    pike's default rate), never ACKed; RSS right after and ``settle`` seconds later."""
    n_sources = max(1, count // 25)
    sources = _sources("127.25", n_sources)
    w = Watch(t, "state flood (60 KB INVITEs)", sources)
    r = w.result
    pad = "a=x-pad:" + "y" * max(0, size - 500) + "\r\n"
    body = "v=0\r\n" + pad
    for k, src in enumerate(sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        for j in range(25):
            i = k * 25 + j
            if i >= count:
                break
            data = (f"INVITE sip:nobody{i}@{t.host}:{t.port} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:{port};"
                    f"branch=z9hG4bK-sf{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:m@example.net>;tag={i}\r\n"
                    f"To: <sip:nobody{i}@{t.host}>\r\nCall-ID: sf{i}@{src}\r\nCSeq: 1 INVITE\r\n"
                    f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
            try:
                s.sendto(data, (t.host, t.port))
                r.sent += 1
                r.sent_bytes += len(data)
            except OSError:
                pass
            time.sleep(0.0005)
        _drain(s, r)
        s.close()
        if k % 20 == 0:
            w.sample()
    time.sleep(1.0)
    w.sample()
    r.notes["RSS right after (MB)"] = round(t.rss_kb() / 1024, 1)
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        w.sample()
        time.sleep(1.0)
    return w.done()


# -- password guessing with a legitimate user beside it ----------------------------------------------

def _digest(user: str, realm: str, password: str, nonce: str, uri: str, method: str = "REGISTER") -> str:
    def md5(x: str) -> str:
        return hashlib.md5(x.encode()).hexdigest()

    response = md5(f"{md5(f'{user}:{realm}:{password}')}:{nonce}:00000001:c0ffee:auth:{md5(f'{method}:{uri}')}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}", '
            f'algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"')


def register(t: Target, s: socket.socket, user: str, password: str, seq: int) -> int:
    """One REGISTER with a challenge round: the final status (0: no answer)."""
    me = s.getsockname()
    uri = f"sip:{t.host}:{t.port}"
    auth = ""
    for cseq in (2 * seq + 1, 2 * seq + 2):
        data = (f"REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bK-r{cseq}-{me[1]};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{user}@{t.host}>;tag=r{me[1]}\r\nTo: <sip:{user}@{t.host}>\r\n"
                f"Call-ID: reg-{user}-{me[0]}-{me[1]}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{user}@{me[0]}:{me[1]}>\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n").encode()
        s.sendto(data, (t.host, t.port))
        s.settimeout(2.0)
        try:
            reply = s.recv(65535).decode(errors="replace")
        except OSError:
            return 0
        status = int(reply.split(" ", 2)[1])
        if status != 401:
            return status
        m = re.search(r'nonce="([^"]+)"', reply)
        realm = re.search(r'realm="([^"]+)"', reply)
        if not m or not realm:
            return status
        auth = f"Authorization: {_digest(user, realm.group(1), password, m.group(1), uri)}\r\n"
    return 401


def password_guessing(t: Target, guesses: int, rate: float, user: str, password: str) -> Result:
    """svcrack's pace (``rate`` guesses a second) against ``user``, the right password last, while
    a legitimate user registers once a second from another address."""
    w = Watch(t, f"password guessing ({rate:g}/s)", ["127.0.0.40"])
    r = w.result
    legit = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def legit_user() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.41", 0))
            seq = 0
            while not stop.is_set():
                seq += 1
                legit["ok" if register(t, s, "bob", "builder", seq) == 200 else "failed"] += 1
                stop.wait(1.0)

    thread = threading.Thread(target=legit_user, daemon=True)
    thread.start()
    found = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.40", 0))
        words = [f"guess{i}" for i in range(guesses - 1)] + [password]
        for i, word in enumerate(words):
            started = time.monotonic()
            status = register(t, s, user, word, i)
            r.sent += 2
            r.replies += 2 if status else 0
            if status == 200:
                found = word
                break
            time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
    stop.set()
    thread.join(5.0)
    r.notes["password found"] = found is not None
    r.notes["legitimate REGISTERs ok"] = legit["ok"]
    r.notes["legitimate REGISTERs failed"] = legit["failed"]
    return w.done()
