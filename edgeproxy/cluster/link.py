"""The cluster link: AMP over TCP between nodes, kept thin.

OpenSIPS talks BIN packets over ``proto_bin``; nodes here speak AMP (:mod:`twisted.protocols.amp`)
on their own ``bin:IP:PORT`` listener. No wire compatibility with OpenSIPS is attempted. Each node
dials every peer from its own bin IP (so the peer sees the listed address as source) and uses that
connection for its pings; inbound connections only answer pings. All decisions -- who may connect,
whether a ping is genuine, what a pong means -- are the :class:`~edgeproxy.cluster.Cluster`'s; the
protocols here only carry them.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, cast

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

__all__ = ["Ping", "PingRefused", "Message", "Chunk", "InboundLink", "OutboundLink", "LinkFactory", "PingHandler"]

log = Logger(namespace="edgeproxy.cluster")


class PingRefused(Exception):
    """The receiving node does not accept the ping (unknown or mismatched node, wrong cluster)."""


class Ping(amp.Command):
    """Heartbeat: "I am node ``node_id`` of ``cluster_id``, pinging node ``to_node_id``".

    The answer (the pong) names the answering node and whether it is synced in that cluster, so the
    pinger can tell a misdirected URL and pick a sync donor (OpenSIPS carries the same ids in the
    BIN trailer and capability state in CAP_UPDATE packets).
    """

    arguments = [
        (b"cluster_id", amp.Integer()),
        (b"node_id", amp.Integer()),
        (b"to_node_id", amp.Integer()),
    ]
    response = [
        (b"node_id", amp.Integer()),
        (b"synced", amp.Boolean()),
    ]
    errors = {PingRefused: b"PING-REFUSED"}


class Message(amp.Command):
    """Data for a capability of the peers (OpenSIPS clusterer's ``send_all`` to a capability such as
    ``dispatcher-status-repl``): ``payload`` is the capability's own (JSON) text. Refused like a ping
    when the sender is not who it says."""

    arguments = [
        (b"cluster_id", amp.Integer()),
        (b"node_id", amp.Integer()),
        (b"capability", amp.Unicode()),
        (b"payload", amp.Unicode()),
    ]
    response = []
    errors = {PingRefused: b"PING-REFUSED"}
    requiresAnswer = False


class Chunk(Message):
    """Bulk data for a capability (a chunk of a full table sync), answered once the receiver has
    handled it. A bulk sender keeps only a few chunks unanswered (flow control): without it a
    100,000-contact sync fills both sockets' buffers and the pings queued behind them arrive seconds
    late -- a node declared down in the middle of its sync (issue 12). OpenSIPS clusterer has no such
    window; its sync packets go out as fast as BIN can write them."""

    requiresAnswer = True


class PingHandler(Protocol):
    """What an inbound link needs from the cluster."""

    def answer_ping(self, link: InboundLink, cluster_id: int, node_id: int,
                    to_node_id: int) -> dict[str, Any]: ...

    def message_received(self, link: InboundLink, cluster_id: int, node_id: int, capability: str,
                         payload: str) -> None: ...

    def inbound_opened(self, link: InboundLink) -> None: ...

    def inbound_closed(self, link: InboundLink) -> None: ...


class _QuietAMP(amp.AMP):
    """AMP without its per-connection info log lines (the cluster logs what matters)."""

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None

    def close(self) -> None:
        """Close the connection cleanly (nothing once it is lost)."""
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection at once, unsent data and all (nothing once it is lost)."""
        if self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()


class InboundLink(_QuietAMP):
    """A connection a peer opened to us: answers its pings through the cluster."""

    def __init__(self, handler: PingHandler, peer_ip: str) -> None:
        super().__init__()
        self.handler = handler
        self.peer_ip = peer_ip

    def connectionMade(self) -> None:
        super().connectionMade()
        self.handler.inbound_opened(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.handler.inbound_closed(self)

    @Ping.responder
    def ping(self, cluster_id: int, node_id: int, to_node_id: int) -> dict[str, Any]:
        return self.handler.answer_ping(self, cluster_id, node_id, to_node_id)

    @Message.responder
    def message(self, cluster_id: int, node_id: int, capability: str, payload: str) -> dict[str, Any]:
        self.handler.message_received(self, cluster_id, node_id, capability, payload)
        return {}

    @Chunk.responder
    def chunk(self, cluster_id: int, node_id: int, capability: str, payload: str) -> dict[str, Any]:
        return self.message(cluster_id, node_id, capability, payload)


class OutboundLink(_QuietAMP):
    """A connection we opened to a peer, used to send our pings; reports its loss."""

    def __init__(self, on_lost: Callable[[OutboundLink], None]) -> None:
        super().__init__()
        self._on_lost = on_lost

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)  # fails the pings still in flight first
        self._on_lost(self)


class LinkFactory(ServerFactory):
    """Accepts a connection only from an address the cluster admits; refuses (closes) the rest."""

    noisy = False

    def __init__(self, handler: PingHandler, admit: Callable[[str], bool]) -> None:
        self.handler = handler
        self.admit = admit

    def buildProtocol(self, addr: Any) -> InboundLink | None:
        host = getattr(addr, "host", "")
        if not self.admit(host):
            return None  # Twisted closes the connection at once
        proto = InboundLink(self.handler, host)
        proto.factory = self
        return proto
