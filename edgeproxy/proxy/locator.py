"""What the proxy needs to find the servers behind a next hop named by a host name (RFC 3263).

Defined here, implemented by :class:`edgeproxy.transport.locator.DnsLocator` (``twisted.names``), so
the node never imports the DNS glue (layers import downward only) and its tests can pass an answer
table instead of a DNS server.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from ..dns import ServerQuery
from ..sip.endpoint import Endpoint

__all__ = ["Locator"]


class Locator(Protocol):
    """Turns an RFC 3263 query into the ordered list of targets to try (§4.3)."""

    def locate(self, query: ServerQuery, transports: frozenset[str]) -> "Deferred[list[Endpoint]]":
        """The targets for ``query``, best first, each an IP address, port and one of ``transports``
        (those the node can send on; an explicit transport of the URI is kept as it is).

        Fires with an empty list when the name does not resolve; may fail with
        :class:`~edgeproxy.proxy.sender.SendError` (503 "Name Resolution Failed" when the DNS did not
        answer in time). Must fire within a bounded time, and fires synchronously when every answer
        needed is cached."""
        ...
