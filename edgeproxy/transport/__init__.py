"""The Twisted transports: the only layer besides ``edgeproxy.service`` that touches sockets.

UDP and TCP listeners and connections (RFC 3261 §18, RFC 3581, RFC 5626 keep-alives) in thin
protocols that hand messages to the sink and report their connections to one controller, through
the public :class:`~edgeproxy.interfaces.ConnectionRegistry`. :class:`TransportManager` owns them
all and implements the proxy's :class:`~edgeproxy.interfaces.Sender`: build it, ``start(sink)``,
``listen(endpoint)`` for each listener, ``stop()``.
"""

from .listen import parse_listen
from .manager import Listener, TransportManager
from .tcp import SipStreamProtocol
from .udp import SipDatagramProtocol

__all__ = [
    "TransportManager", "Listener", "parse_listen",
    "SipDatagramProtocol", "SipStreamProtocol",
]
