"""The API route modules see: :class:`RouteRequest` (``msg``), :class:`SIPError`, :class:`LookupResult`,
:class:`AuthResult`."""

from .api import AuthResult, Branch, LookupResult, RouteRequest, SIPError
from .loader import RouteLoadError, RouteModule, load_route_module

__all__ = ["AuthResult", "Branch", "LookupResult", "RouteRequest", "SIPError", "RouteLoadError", "RouteModule", "load_route_module"]
