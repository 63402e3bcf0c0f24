"""What the transaction-stateful proxy asks of the layer above it while it handles a transaction.

The proxy core (:mod:`edgeproxy.proxy.engine`) knows nothing of route modules; the node implements
:class:`RouteHooks` and runs the route functions (``onreply_route``, ``failure_route``,
``branch_route``) when the core reaches the points of RFC 3261 §16 where OpenSIPS runs them.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from ..sip.endpoint import Endpoint, Flow
from ..sip.message import Request, Response
from .context import ServerContext

__all__ = ["RouteHooks", "HostMatcher", "CallObserver"]


class RouteHooks(Protocol):
    """What the proxy core asks of the route module while it handles a transaction (the node)."""

    def reply_route(self, ctx: ServerContext, response: Response) -> None:
        """``onreply_route``: a response arrived on one of ``ctx``'s branches."""

    def failure_route(self, ctx: ServerContext, best: Response) -> bool:
        """Every branch has failed with ``best`` as the winner: True when a ``failure_route`` was
        started (it then decides: :meth:`StatefulProxy.failure_route_done`)."""
        ...

    def branch_route(self, ctx: ServerContext, request: Request) -> "Deferred[None] | None":
        """``branch_route``: ``request`` is about to leave as one branch of ``ctx``; a Deferred when
        the route is still running (the branch waits for it)."""

    def ack_route(self, request: Request, flow: Flow) -> None:
        """An ACK for a 2xx that matched a server transaction (RFC 6026 Accepted): end to end, it is
        routed like any in-dialog request."""


class HostMatcher(Protocol):
    """Whether a host (an IP literal or name) is the one meant (e.g. a cluster node's address)."""

    def __call__(self, host: str) -> bool: ...


class CallObserver(Protocol):
    """Told of every INVITE's first final response (call records: :class:`edgeproxy.acc.Accounting`)."""

    def invite_final(self, request: Request, response: Response, source: Flow, destination: Endpoint | None,
                     setup: float, dialog: bool) -> None:
        """``response`` went to the caller ``setup`` seconds after ``request`` arrived from ``source``;
        ``destination``: where the branch that gave it was sent (None: answered here); ``dialog``: a
        dialog tracks the call. Must not raise."""
