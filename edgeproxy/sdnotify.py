"""systemd's readiness protocol (``sd_notify(3)``), for ``Type=notify`` units: one datagram to the
Unix socket systemd names in ``$NOTIFY_SOCKET``.

The node says ``READY=1`` only once every listener is bound (:class:`~edgeproxy.service.NodeService`),
so ``systemctl start`` -- and units ordered after this one -- wait for a node that answers, and a node
that cannot start is a failed start, not a running service. ``STOPPING=1`` when it shuts down. The
protocol is a few lines (``sd_notify(3)``, "NOTES": a datagram of newline-separated ``KEY=VALUE``
assignments, a socket path starting with ``@`` is in the abstract namespace), written here rather than
taken from a library. Without ``$NOTIFY_SOCKET`` (not under systemd) nothing is sent.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping

from twisted.logger import Logger

__all__ = ["sd_notify"]

log = Logger(namespace="edgeproxy.service")


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1\\nSTATUS=..."``) to systemd; True when it was sent. A socket that
    cannot be reached is logged, never raised: readiness reporting must not stop the node."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # Linux abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warn("sd_notify to {address}: {error}", address=address.replace("\0", "@"), error=exc)
        return False
    return True
