"""The Twisted transports: the only layer besides ``edgeproxy.service`` that touches sockets.

UDP and TCP listeners and connections (RFC 3261 §18, RFC 3581, RFC 5626 keep-alives) in thin
protocols that hand messages to one controller, :class:`TransportManager`, which also implements the
proxy's :class:`~edgeproxy.interfaces.Sender`.
"""

from .listen import SUPPORTED_TRANSPORTS, parse_listen
from .manager import Listener, TransportManager
from ..interfaces import MessageSink
from .tcp import SipStreamProtocol
from .udp import SipDatagramProtocol

__all__ = [
    "TransportManager", "Listener", "MessageSink", "parse_listen", "SUPPORTED_TRANSPORTS",
    "SipDatagramProtocol", "SipStreamProtocol",
]
