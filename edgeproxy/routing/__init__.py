"""The API route modules see: :class:`RouteRequest` (``msg``), :class:`SIPError`, :class:`LookupResult`."""

from .api import Branch, LookupResult, RouteRequest, SIPError
from .loader import RouteLoadError, RouteModule, load_route_module

__all__ = ["Branch", "LookupResult", "RouteRequest", "SIPError", "RouteLoadError", "RouteModule", "load_route_module"]
