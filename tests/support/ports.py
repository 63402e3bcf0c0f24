"""Free loopback ports for the tests: the one place they come from.

A port is free when it can be bound for UDP and TCP on every host asked for. Asking the kernel
for port 0 twice in a row can hand out the same port twice (it was free both times: nothing had
bound the first one yet), which once gave SIPp the same number for its SIP and its control socket
and failed a CI run. So a port handed out once in this process is never handed out again: the
ephemeral range holds ~28,000 ports and a full test run asks for a few thousand.
Another process can still take a port between the check and its use; that is rare on loopback.
"""

from __future__ import annotations

import socket

__all__ = ["LOOPBACK", "free_port"]

LOOPBACK = "127.0.0.1"

_handed_out: set[int] = set()


def bindable(kind: int, host: str, port: int) -> bool:
    """Whether a socket of ``kind`` (SOCK_DGRAM, SOCK_STREAM) can be bound to ``host:port`` now."""
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(*hosts: str) -> int:
    """A port free for both UDP and TCP on every host given (default ``127.0.0.1``) right now, never
    one this process was given before."""
    hosts = hosts or (LOOPBACK,)
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        if port in _handed_out:
            continue
        if all(bindable(kind, host, port) for host in hosts for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no port free for UDP and TCP on {', '.join(hosts)}")
