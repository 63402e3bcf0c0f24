"""Next-hop rules: where a request goes (RFC 3261 §16.5-16.6, RFC 3263 §4.1 transport choice) and
where a response goes back (§18.2.2, RFC 3581), plus the Via stamping of §18.2.1.

Pure functions over messages and endpoints, so every rule is unit-tested without sockets.
"""

from __future__ import annotations

from typing import Callable

from ..dns import ServerQuery, is_host_name
from ..sip.address import is_ip
from ..sip.endpoint import Destination, Endpoint, Flow, default_port
from ..sip.message import Request, Response
from ..sip.uri import SipURI
from ..sip.values import Via, format_params

__all__ = [
    "is_ip",
    "stamp_received",
    "response_destination",
    "uri_destination",
    "uri_query",
    "uri_transport",
    "loose_route",
]


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


def stamp_received(request: Request, flow: Flow) -> None:
    """§18.2.1 and RFC 3581 §4: record where the request really came from in its top Via.

    ``received`` is added when the sent-by host differs from the source address (always when
    ``rport`` was asked for, which also gets the source port), so responses find their way back
    through NATs.
    """
    via = request.top_via
    src = flow.remote
    wants_rport = "rport" in via.params and not via.params["rport"]
    if not wants_rport and _bare(via.host) == src.host:
        return
    params = dict(via.params)
    params["received"] = src.host
    if wants_rport:
        params["rport"] = str(src.port)
    stamped = Via(via.transport, via.host, via.port, params)
    hostport = via.host if via.port is None else f"{via.host}:{via.port}"
    request.headers.replace_first_value("via", f"SIP/2.0/{via.transport} {hostport}{format_params(params)}")
    request.headers._cache["via^"] = stamped


def response_destination(response: Response, flow: Flow | None) -> Destination:
    """Where a response goes (§18.2.2 with RFC 3581 §4): back over the request's connection when it
    is reliable, else to ``received``:``rport`` (or the sent-by port), or ``maddr``.

    ``flow`` is the flow the request arrived on; responses are pinned to it so that connection-
    oriented clients (and clients behind NAT) get them on the path they used.
    """
    via = response.top_via
    transport = via.transport
    if flow is not None and flow.remote.reliable:
        # over the connection while it is open; if it closed, a new connection goes to received
        # and the sent-by port (§18.2.2), not to the connection's ephemeral source port.
        # WebSocket clients (.invalid sent-by) cannot be dialled at all (RFC 7118 §5)
        host = via.received or _bare(via.host)
        remote = Endpoint(flow.remote.transport, host, via.port or default_port(flow.remote.transport))
        return Destination(remote, flow, flow_only=via.host.lower().endswith(".invalid"))
    if via.maddr:
        return Destination(Endpoint(transport, _bare(via.maddr), via.port or default_port(transport)))
    host = via.received or _bare(via.host)
    rport = via.params.get("rport")
    if rport and rport.isdigit():
        port = int(rport)
    else:
        port = via.port or default_port(transport)
    return Destination(Endpoint(transport, host, port), flow)


def uri_transport(uri: SipURI) -> str:
    """The transport a URI asks for (RFC 3263 §4.1 without NAPTR: ``transport`` param, ``sips`` →
    TLS, default UDP); WebSocket URIs ask for ``ws`` even when secure (RFC 7118 §5.2)."""
    t = uri.params.get("transport")
    if t:
        t = t.upper()
        if uri.scheme == "sips":
            # §26.2.2 / RFC 5630 §3.1.3: sips over "tcp" means TLS over TCP, never plain TCP
            if t == "WS":
                return "WSS"
            if t in ("TCP", "UDP"):
                return "TLS"
        return t
    return "TLS" if uri.scheme == "sips" else "UDP"


def uri_destination(uri: SipURI) -> Destination:
    """The next hop for a URI with no better information (§16.6 step 7 → RFC 3263): ``maddr`` if
    present, else host and port; ``.invalid`` hosts can never be dialled (RFC 7118 §5.2)."""
    transport = uri_transport(uri)
    host = uri.params.get("maddr") or uri.host
    port = uri.port or default_port(transport)
    return Destination(Endpoint(transport, _bare(host), port),
                       flow_only=uri.host.lower().endswith(".invalid"))


def uri_query(uri: SipURI) -> ServerQuery | None:
    """What RFC 3263 must look up before a request can go to ``uri``: its TARGET (``maddr`` or host)
    when that is a host name, with the ``sips`` scheme and the explicit transport and port (§4.1,
    §4.2). None when there is nothing to look up: an IP literal (sent as :func:`uri_destination`
    says, at no extra cost), a WebSocket transport or an ``.invalid`` host (never dialled, RFC 7118
    §5.2)."""
    host = uri.params.get("maddr") or uri.host
    if not is_host_name(host) or uri.host.lower().endswith(".invalid"):
        return None
    transport = uri_transport(uri) if uri.params.get("transport") else None
    if transport in ("WS", "WSS"):
        return None
    return ServerQuery(host.lower().rstrip("."), uri.scheme == "sips", transport, uri.port)


def _points_here(uri: object, is_myself: Callable[[str, int | None], bool]) -> bool:
    if not isinstance(uri, SipURI):
        return False
    # our Record-Route URIs always carry a port; without one, the default of the URI's transport
    # (either spelling of WebSocket, RFC 7118 errata 5937: transport=ws for WSS as well)
    port = uri.port if uri.port is not None else default_port(uri_transport(uri))
    return is_myself(uri.host, port)


def loose_route(request: Request, is_myself: Callable[[str, int | None], bool],
                popped: list[SipURI] | None = None, is_token: Callable[[str], bool] | None = None) -> bool:
    """§16.4 route pre-processing, as OpenSIPS ``loose_route()``: pop every leading Route value that
    is this node (both of a double Record-Route), and fix up a strict-routing previous hop. True when
    the request is routed by its route set; False for no Route, or for a single pre-loaded Route to
    us on an initial request (which is then routed like one without it).

    ``popped`` receives the URIs of this node that were removed (their user parts may hold RFC 5626
    flow tokens); ``is_token`` tells whether a user part is one of our flow tokens, so that a
    Request-URI carrying one is recognised as our Record-Route URI after a strict router."""
    uri = request.uri
    # a Record-Route URI of ours always has lr; a Request-URI naming one of our domains without a
    # user (REGISTER sip:example.com behind an outbound proxy's pre-loaded Route) is not one
    if (isinstance(uri, SipURI) and uri.lr
            and (uri.user is None or (is_token is not None and is_token(uri.user)))
            and _points_here(uri, is_myself) and request.routes):
        # the previous hop was a strict router: the R-URI is our Record-Route URI; the real target
        # is the last Route value (§16.4, §16.12.1.2)
        if popped is not None:
            popped.append(uri)
        values = request.headers.values("route")
        last = request.routes[-1]
        request.headers.remove("route")
        if len(values) > 1:
            request.headers.add("Route", ", ".join(values[:-1]))
        request.uri = last.uri
        # with a double Record-Route our other entry is now the top Route: it goes too (OpenSIPS
        # after_strict), else the request would be sent back to us
        while request.routes and _points_here(request.routes[0].uri, is_myself):
            if popped is not None:
                popped.append(request.routes[0].uri)  # type: ignore[arg-type]
            request.headers.pop_first_value("route")
        return True
    routes = request.routes
    if not routes:
        return False
    count = 0
    while routes and _points_here(routes[0].uri, is_myself):
        if popped is not None:
            popped.append(routes[0].uri)  # type: ignore[arg-type]
        request.headers.pop_first_value("route")
        routes = request.routes
        count += 1
    if count and not routes and request.to_tag is None:
        return False
    return True
