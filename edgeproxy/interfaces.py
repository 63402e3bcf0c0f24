"""The contract between the transports and the layers above them, in one place.

The transports (``edgeproxy.transport``) are thin protocols that call a controller, as
``twisted.names`` protocols call theirs: the node receives through :class:`MessageSink`, and sends
through :class:`Sender`; next hops named by a host name are found through a :class:`Locator`
(RFC 3263). The behaviour layers (proxy, registrar, location, NAT pinging) import only this module,
never ``edgeproxy.transport``, so they run and are tested with in-memory stand-ins; the transports
implement it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .dns import ServerQuery
from .sip.endpoint import Destination, Endpoint, Flow
from .sip.message import Message

if TYPE_CHECKING:  # pragma: no cover - typing only: this module must not load a reactor
    from twisted.internet.defer import Deferred

__all__ = ["MessageSink", "Sender", "SendError", "Locator"]


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


class MessageSink(Protocol):
    """What the transports need from the node: two callbacks, both called in the reactor thread.

    ``message_received(message, flow)`` gets every message that parsed and passed the core's checks
    (RFC 3261 §18.3 framing; malformed requests were already answered by the transport, §8.2.6.2 /
    §21.4.1). ``flow`` is where it came from: for UDP the listener and source address, for TCP also
    the connection id, so a reply or a later request can go back over the same connection
    (§18.2.2, RFC 5626 §3.3). Keep-alives (RFC 5626 §3.5.1) never reach the sink.

    ``flow_closed(flow)`` is called once when a connection that was reported in flows closes, for
    whatever reason (peer close, idle timeout, parse error, shutdown), so bindings tied to it can be
    dropped (RFC 5626 §4.4). UDP flows never close.

    Exceptions raised by either method are logged and swallowed by the transport.
    """

    def message_received(self, message: Message, flow: Flow) -> None: ...

    def flow_closed(self, flow: Flow) -> None: ...


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


class Locator(Protocol):
    """Turns an RFC 3263 query into the ordered list of targets to try (§4.3)."""

    def locate(self, query: ServerQuery, transports: frozenset[str]) -> "Deferred[list[Endpoint]]":
        """The targets for ``query``, best first, each an IP address, port and one of ``transports``
        (those the node can send on; an explicit transport of the URI is kept as it is).

        Fires with an empty list when the name does not resolve; may fail with :class:`SendError`
        (503 "Name Resolution Failed" when the DNS did not answer in time). Must fire within a
        bounded time, and fires synchronously when every answer needed is cached."""
        ...

    def stop(self) -> None:
        """Cancel pending lookups and timers (the node is stopping)."""
        ...
