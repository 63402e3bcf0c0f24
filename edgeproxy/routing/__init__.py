"""The API route modules see: :class:`RouteRequest` (``msg``), :class:`RouteReply`,
:class:`LookupResult`, :class:`AuthResult`, :class:`AddressResult`; and how a route module is loaded."""

from .api import AddressResult, AuthResult, Branch, LookupResult, RouteRequest
from .errors import RouteReply
from .loader import RouteLoadError, RouteModule, load_route_module

__all__ = ["AddressResult", "AuthResult", "Branch", "LookupResult", "RouteRequest", "RouteReply", "RouteLoadError",
           "RouteModule", "load_route_module"]
