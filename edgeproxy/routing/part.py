"""What every part of ``msg`` (:class:`~edgeproxy.routing.api.RouteRequest`) stands on: the request's
:class:`~edgeproxy.proxy.context.RouteState` and the node's :class:`~edgeproxy.routing.verbs.RouteVerbs`,
which :class:`~edgeproxy.routing.api.RouteRequest` holds (its parts per OpenSIPS module --
:class:`~.tmverbs.TmRequest`, :class:`~.permverbs.PermissionRequest`, :class:`~.dsverbs.DispatcherRequest`,
:class:`~.dlgrequest.DialogRequest`, :class:`~.authrequest.AuthRequest` -- read them, never set them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..proxy.context import RouteState
    from .verbs import RouteVerbs

__all__ = ["RequestPart"]


class RequestPart:
    """A part of ``msg``: its request's state and the verbs that act on it."""

    __slots__ = ()
    _state: RouteState
    _verbs: RouteVerbs
