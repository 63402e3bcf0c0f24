"""Issue 16, findings 6 and 7: defaults for an internet edge.

* ``max_contacts`` was 0 (unlimited): one account registered 2,528 contacts and a single
  unauthenticated INVITE to it produced 17,700 datagrams. The default is now 10 per AoR (0 still
  means unlimited, when written).
* The connection limit was only global (10,000): one source could take all of it. ``[limits]
  max_connections_per_source`` (default 100) caps open plus handshaking connections per address.

Real sockets against a real ``twistd edgeproxy`` with the default configuration.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from support.ports import free_port
from support.sipp_harness import edgeproxy_node

from edgeproxy.registrar import RegistrarSettings


def register(host: str, port: int, src: socket.socket, contacts: int, user: str = "many") -> bytes:
    me = src.getsockname()
    lines = [f"REGISTER sip:{host} SIP/2.0", f"Via: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bK-reg{contacts}",
             "Max-Forwards: 70", f"From: <sip:{user}@{host}>;tag=r1", f"To: <sip:{user}@{host}>",
             f"Call-ID: reg-{user}-{contacts}", "CSeq: 1 REGISTER", "Expires: 300",
             *(f"Contact: <sip:{user}-{i}@{me[0]}:{10000 + i}>" for i in range(contacts)), "Content-Length: 0"]
    src.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (host, port))
    src.settimeout(3.0)
    return src.recv(65535)


def test_default_max_contacts_is_bounded() -> None:
    assert RegistrarSettings().max_contacts == 10
    assert RegistrarSettings(max_contacts=0).max_contacts == 0  # unlimited only when asked for


def test_a_register_with_thirty_contacts_is_refused_by_default(tmp_path: Path) -> None:
    with edgeproxy_node(tmp_path) as node, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        assert register(node.host, node.port, s, 30).startswith(b"SIP/2.0 503 ")
        assert register(node.host, node.port, s, 10, user="ten").startswith(b"SIP/2.0 200 ")


def _open(host: str, port: int, source: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(3.0)
    s.connect((host, port))
    return s


def _alive(s: socket.socket) -> bool:
    """Whether the node kept the connection: a CRLFCRLF ping (RFC 5626 §3.5.1) gets its CRLF pong."""
    try:
        s.sendall(b"\r\n\r\n")
        return s.recv(16) == b"\r\n"
    except OSError:
        return False


def test_connections_per_source_are_limited(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    config = {"limits": {"max_connections_per_source": 5}}
    with edgeproxy_node(tmp_path, transports=("udp", "tcp"), port=port, config=config) as node:
        mine = [_open(node.host, node.port, "127.0.0.5") for _ in range(8)]
        try:
            time.sleep(0.3)
            alive = [_alive(s) for s in mine]
            assert alive.count(True) == 5, alive
            other = _open(node.host, node.port, "127.0.0.6")  # another source is not affected
            assert _alive(other)
            other.close()
            mine[0].close()  # one closes: its place is free again
            time.sleep(0.3)
            again = _open(node.host, node.port, "127.0.0.5")
            assert _alive(again)
            again.close()
        finally:
            for s in mine:
                s.close()
        assert node.running()
