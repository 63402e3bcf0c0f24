"""The route's own exception: a reply that ends routing."""

from __future__ import annotations

__all__ = ["RouteReply"]


class RouteReply(Exception):
    """Raised by a route to answer the request with ``code`` and ``reason`` and stop routing.

    Not to be confused with :class:`~edgeproxy.sip.errors.SipError`, the parser's: that one says a
    message is malformed, this one is the route's decision."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        super().__init__(f"{code} {reason or ''}".strip())
        self.code = code
        self.reason = reason
