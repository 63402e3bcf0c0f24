"""Host names the sender meets after RFC 3263 location: the first usable address of a name.

A response goes to its Via sent-by (RFC 3261 §18.2.2) and a closed flow falls back to a contact,
either of which may be a name; the proxy's :mod:`~edgeproxy.transport.locator` handles request
targets (NAPTR, SRV, failover) and hands over addresses. Here the reactor's getaddrinfo resolver
gives the addresses and the first one of a usable family wins.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IAddress, IHostResolution, IResolutionReceiver
from twisted.logger import Logger
from zope.interface import implementer

from ..interfaces import SendError
from ..sip.address import ip_literal

__all__ = ["resolve_first"]

log = Logger(namespace="edgeproxy.transport")


@implementer(IResolutionReceiver)
class _Addresses:
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self.deferred: Deferred[list[tuple[int, str]]] = Deferred()

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        if not isinstance(address, (IPv4Address, IPv6Address)):  # only these were asked for
            return
        item = (socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET, address.host)
        if item not in self.found:
            self.found.append(item)

    def resolutionComplete(self) -> None:
        self.deferred.callback(self.found)


def resolve_first(reactor: Any, host: str, port: int, transport: str,
                  usable: Callable[[int], bool]) -> Deferred[tuple[int, str]]:
    """``(family, address)`` of the first address of ``host`` whose family is ``usable`` (for UDP:
    one with a listener), through ``reactor.nameResolver`` (an ``IReactorPluggableNameResolver``).
    Fails with ``SendError("Name Resolution Failed")`` when there is none."""
    receiver = _Addresses()
    try:
        reactor.nameResolver.resolveHostName(
            receiver, host, port, addressTypes=[IPv4Address, IPv6Address],
            transportSemantics="UDP" if transport == "UDP" else "TCP")
    except Exception:
        log.failure("resolver failed for {host}", host=host)
        return fail(SendError("Name Resolution Failed"))

    def pick(found: list[tuple[int, str]]) -> tuple[int, str]:
        for family, address in found:
            if usable(family):
                literal = ip_literal(address)
                return (family, literal[1] if literal is not None else address)
        log.debug("no usable address for {host}: {found}", host=host, found=found)
        raise SendError("Name Resolution Failed")

    return receiver.deferred.addCallback(pick)
