"""The listening sockets of one node and what they advertise (RFC 3261 §18.1.1 sent-by).

:class:`ListenerIndex` keeps the open :class:`Listener` s and the lookups the send path makes on
every message: the UDP listener a flow arrived on (so a reply leaves from the port the peer sent
to, RFC 3581 §4), the default UDP listener of an address family, and the endpoint to advertise
toward a remote. The lookup tables are rebuilt in place, never rebound, so the sender may hold
them directly and pay no indirection per message.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

from ..sip.address import ip_literal
from ..sip.endpoint import Endpoint, Flow
from ._util import guess_local_address
from .udp import SipDatagramProtocol

__all__ = ["Listener", "ListenerIndex", "WILDCARDS", "adopt_v6only", "advertised_host"]

WILDCARDS = {"0.0.0.0": socket.AF_INET, "::": socket.AF_INET6}
"""The any-address of each family: a listener on one advertises a guessed or configured host."""


@dataclass(eq=False)
class Listener:
    """One listening socket.

    ``bound`` is the socket's address (the real port when 0 was asked for); ``local`` is what flows
    carry and :meth:`ListenerIndex.local_endpoint` returns (differs from ``bound`` for wildcard
    listeners, see :func:`advertised_host`).
    """

    bound: Endpoint
    local: Endpoint
    family: int
    port: IListeningPort
    protocol: SipDatagramProtocol | None = None


class ListenerIndex:
    """The open listeners, in the order they were opened, and the send path's lookups on them.

    ``udp`` maps ``(advertised endpoint, family)`` and ``udp_default`` a family to a UDP listener's
    protocol; both are updated in place."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.udp: dict[tuple[Endpoint, int], SipDatagramProtocol] = {}
        self.udp_default: dict[int, SipDatagramProtocol] = {}
        self._locals: dict[tuple[str, int | None], Endpoint] = {}

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)
        self._reindex()

    def clear(self) -> list[Listener]:
        """Forget every listener and return them (to be closed)."""
        listeners, self.listeners = self.listeners, []
        self._reindex()
        return listeners

    def local_endpoint(self, transport: str, remote: Endpoint | None = None) -> Endpoint | None:
        """The address to advertise (Via sent-by, Record-Route, Path) for ``transport`` toward
        ``remote`` (RFC 3261 §18.1.1): the first listener of that transport and of the remote's
        address family. For TCP a listener of the other family is acceptable (replies come back on
        the connection); for UDP it is not. A remote given by name gets the first listener.
        None when there is no suitable listener."""
        family = None
        if remote is not None:
            literal = ip_literal(remote.host)
            if literal is not None:
                family = literal[0]
        return self._locals.get((transport, family))

    def udp_flow_open(self, flow: Flow | None) -> bool:
        """Whether ``flow`` is a UDP flow whose listener is still open (RFC 5626 §5.3: a
        ``flow_only`` send may still use it)."""
        if flow is None or flow.connection_id is not None or flow.local.transport != "UDP":
            return False
        return any(proto.open for (local, _), proto in self.udp.items() if local == flow.local)

    def _reindex(self) -> None:
        self.udp.clear()
        self.udp_default.clear()
        self._locals.clear()
        for lst in self.listeners:
            transport = lst.local.transport
            if lst.protocol is not None:
                self.udp.setdefault((lst.local, lst.family), lst.protocol)
                self.udp_default.setdefault(lst.family, lst.protocol)
            self._locals.setdefault((transport, None), lst.local)
            self._locals.setdefault((transport, lst.family), lst.local)
        for lst in self.listeners:
            transport = lst.local.transport
            if transport != "UDP":  # a connection's Via may name a listener of the other family
                for family in WILDCARDS.values():
                    self._locals.setdefault((transport, family), lst.local)


def adopt_v6only(kind: int, port: int, backlog: int, adopt: Callable[[int], IListeningPort]) -> IListeningPort:
    """Bind an IPv6-only (``IPV6_V6ONLY``) wildcard socket and hand it to the reactor with
    ``adopt``, so that a ``::`` listener can share its port with a ``0.0.0.0`` one."""
    sock = socket.socket(socket.AF_INET6, kind)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
        return adopt(sock.fileno())  # the reactor keeps a duplicate of the descriptor
    except OSError as exc:
        raise CannotListenError("::", port, exc) from exc
    finally:
        sock.close()


def advertised_host(host: str, family: int, *candidates: str | None) -> str:
    """The host a listener bound to ``host`` advertises: itself, unless it is a wildcard; then the
    first candidate that is a name or an address of ``family``, else the source address of the
    default route (RFC 3261 §18.1.1: sent-by must reach this node)."""
    if host not in WILDCARDS:
        return host
    for candidate in candidates:
        if candidate:
            literal = ip_literal(candidate)
            if literal is None:
                return candidate
            if literal[0] == family:
                return literal[1]
    return guess_local_address(family)
