"""The controller the transports hand messages to (the ``controller`` of ``twisted.names.dns``)."""

from __future__ import annotations

from typing import Protocol

from ..sip.endpoint import Flow
from ..sip.message import Message

__all__ = ["MessageSink"]


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
