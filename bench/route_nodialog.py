"""``routes/default.py`` with dialogs off, for ``bench/load.py`` comparisons (issue 13): the shipped
route keeps every relayed INVITE as a dialog; here ``create_dialog()`` does nothing, so the same node,
configuration and load measure what the dialogs cost. Bench only: it changes ``RouteRequest`` for the
whole process it is loaded in::

    python bench/load.py --scenarios invite --call-rates 300 --refine 0 \\
        --start-cmd "twistd -n --pidfile= edgeproxy --config {config} -r bench/route_nodialog.py"
"""

from edgeproxy.routing.api import RouteRequest
from edgeproxy_routes.default import request_route  # noqa: F401 - the route this module is

RouteRequest.create_dialog = lambda self, flags="": True  # type: ignore[method-assign]
