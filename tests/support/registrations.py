"""A fast, bounded REGISTER loader over raw UDP: many users registered from one socket with a window
of outstanding requests, each retransmitted as RFC 3261's timer E does (0.5 s doubling up to 4 s,
for about 32 s) until answered.

Used where SIPp's one-call-per-user ladder would take minutes (thousands of users before a restart
test, the persistence benchmark). Loopback only; every run is bounded by ``timeout``.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["Registration", "register_many"]


@dataclass
class Registration:
    """One user to register: AoR user part, the Contact URI, the Expires asked for, the CSeq."""

    user: str
    contact: str
    expires: int = 3600
    cseq: int = 1
    call_id: str = ""


@dataclass
class Outcome:
    statuses: Counter = field(default_factory=Counter)
    unanswered: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses[200]


def register_many(target: tuple[str, int], registrations: Sequence[Registration], *, domain: str | None = None,
                  window: int = 200, timeout: float = 120.0, local_ip: str = "127.0.0.1") -> Outcome:
    """Send every REGISTER to ``target`` (UDP) and collect the final statuses (200 counted as ok)."""
    domain = domain or f"{target[0]}:{target[1]}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((local_ip, 0))
    sock.setblocking(False)
    lport = sock.getsockname()[1]
    nonce = os.urandom(4).hex()
    for i, r in enumerate(registrations):
        if not r.call_id:
            r.call_id = f"reg-{nonce}-{i}@{local_ip}"
    by_call = {r.call_id: r for r in registrations}
    waiting: dict[str, float] = {}  # call-id -> when to retransmit
    tries: Counter = Counter()
    outcome = Outcome()
    todo = list(registrations)
    todo.reverse()
    started = time.monotonic()
    deadline = started + timeout

    def send(r: Registration) -> None:
        tries[r.call_id] += 1
        msg = (f"REGISTER sip:{domain} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {local_ip}:{lport};branch=z9hG4bK{nonce}{r.call_id.split('@')[0][-10:]}"
               f"c{r.cseq};rport\r\n"  # a retransmission is the same request (same branch)
               f"Max-Forwards: 70\r\nFrom: <sip:{r.user}@{domain}>;tag=t{r.user}\r\n"
               f"To: <sip:{r.user}@{domain}>\r\nCall-ID: {r.call_id}\r\nCSeq: {r.cseq} REGISTER\r\n"
               f"Contact: <{r.contact}>\r\nExpires: {r.expires}\r\nUser-Agent: edgeproxy-tests-loader\r\n"
               f"Content-Length: 0\r\n\r\n")
        try:
            sock.sendto(msg.encode(), target)
        except BlockingIOError:
            pass  # counted as lost: retransmitted
        # RFC 3261 timer E: 0.5 s doubling up to T2 (4 s); 11 sends span about timer F's 32 s
        waiting[r.call_id] = time.monotonic() + min(0.5 * 2 ** (tries[r.call_id] - 1), 4.0)

    try:
        while (todo or waiting) and time.monotonic() < deadline:
            while todo and len(waiting) < window:
                send(todo.pop())
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                while True:
                    try:
                        data = sock.recv(65535)
                    except BlockingIOError:
                        break
                    text = data.decode("utf-8", "replace")
                    if not text.startswith("SIP/2.0 "):
                        continue
                    status = int(text[8:11])
                    if status < 200:
                        continue
                    call_id = next((line.split(":", 1)[1].strip() for line in text.split("\r\n")
                                    if line.lower().startswith(("call-id:", "i:"))), "")
                    if call_id in waiting:
                        del waiting[call_id]
                        outcome.statuses[status] += 1
            now = time.monotonic()
            for call_id, when in list(waiting.items()):
                if when <= now:
                    if tries[call_id] >= 11:
                        del waiting[call_id]
                        outcome.unanswered.append(by_call[call_id].user)
                    else:
                        send(by_call[call_id])
    finally:
        sock.close()
    outcome.unanswered += [r.user for r in todo] + [by_call[c].user for c in waiting]
    outcome.seconds = time.monotonic() - started
    return outcome
