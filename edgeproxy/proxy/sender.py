"""The one thing the behaviour layer needs from the transports: a way to send.

Defined here, implemented by :class:`edgeproxy.transport.manager.TransportManager`, so the proxy and
registrar never import Twisted transports (layers import downward only) and unit tests can pass an
in-memory sender.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from ..sip.endpoint import Destination, Endpoint, Flow
from ..sip.message import Message

__all__ = ["Sender", "SendError"]


class SendError(Exception):
    """A message could not be sent: no listener for the transport, connection refused or closed, a
    ``flow_only`` destination whose flow is gone, name resolution failed.

    ``status`` is what the proxy answers for the branch (503 by default; 477 is OpenSIPS's "send
    failed", 430 "Flow Failed" for a dead RFC 5626 flow).
    """

    def __init__(self, reason: str, status: int = 503) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Sender(Protocol):
    """Sends SIP messages; implemented by the transport layer."""

    def send(self, destination: Destination, message: Message) -> "Deferred[Flow]":
        """Serialise and send ``message``. Fires with the flow used, or fails with :class:`SendError`.

        Serialisation happens at call time (so the caller may not mutate the message afterwards). For
        UDP the Deferred has usually fired on return.
        """
        ...

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        """The address this node advertises (Via sent-by, Record-Route, Path) for ``transport``,
        choosing the listener of the right address family for ``remote``; None if no such listener."""
        ...
