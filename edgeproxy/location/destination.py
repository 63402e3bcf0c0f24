"""Where a request for a registered contact goes: Request-URI, next hop and route set of a binding.

This is the target-building half of OpenSIPS ``lookup()`` (``push_branch``: R-URI = contact, ``$du`` =
first Path URI, else ``received``) adapted to connection reuse for TCP/TLS/WebSocket clients (RFC 5626
§5.3, RFC 7118 §5).
"""

from __future__ import annotations

from ..sip.endpoint import Destination, Endpoint, default_port
from ..sip.errors import SipValueError
from ..sip.uri import SipURI
from ..sip.values import parse_name_address
from .binding import Binding

__all__ = ["binding_destination", "uri_endpoint"]

def uri_endpoint(uri: SipURI) -> Endpoint:
    """The transport address a SIP URI names without DNS (RFC 3263 §4.1 in its simplest form): the
    ``transport`` parameter (upper-cased), ``sips:`` meaning TLS (or WSS with ``transport=ws``), UDP by
    default; the URI port or the transport's default port. ``maddr`` wins over the host (§19.1.1).
    """
    t = uri.transport
    transport = t.upper() if t else ("TLS" if uri.secure else "UDP")
    if uri.secure:
        if transport in ("TCP", "UDP"):
            transport = "TLS"
        elif transport == "WS":
            transport = "WSS"
    host = uri.params.get("maddr") or uri.host
    if host.startswith("["):
        host = host[1:-1]
    port = uri.port if uri.port is not None else default_port(transport)
    return Endpoint(transport, host, port)


def binding_destination(binding: Binding) -> tuple[SipURI, Destination, list[str]]:
    """``(request_uri, destination, route_set)`` for sending a request to ``binding``.

    * The Request-URI is the contact URI (RFC 3261 §16.5, OpenSIPS ``lookup()``).
    * With a stored Path, the Path values become the route set (pushed as Route headers) and the first
      Path URI is the next hop (RFC 3327 §5; OpenSIPS sets ``$du`` to it "because NAT has to be handled at
      the outbound-proxy of the UAC"). If that hop is the peer the REGISTER came from, the request is
      pinned to the same flow so an existing connection is reused.
    * Otherwise the request goes to the REGISTER's source address over its flow (``Destination(remote=
      received, flow=flow)``) when the client is behind NAT (OpenSIPS ``nat_bflag`` + ``received``),
      registered a ``.invalid`` contact host (WebSocket clients, RFC 7118 §5.2) or an RFC 5626
      outbound flow (``reg-id``). In those last two cases ``flow_only`` is set: the transport must
      not try to dial the client and fails instead when the flow is gone (430 Flow Failed).
    * A binding made over a connection (TCP/TLS) is pinned to that flow, so requests reuse the
      connection the UA opened (RFC 5626 §5.3, RFC 3261 §18); when it has closed, the contact URI is
      dialled instead.
    * Else the contact URI itself names the next hop (its host/port/transport).
    """
    uri = binding.uri
    if binding.path:
        route_set = list(binding.path)
        try:
            first = parse_name_address(route_set[0], "Path").uri
        except SipValueError:
            first = None
        if isinstance(first, SipURI):
            remote = uri_endpoint(first)
            flow = binding.flow
            if flow is not None and flow.remote == remote:
                return uri, Destination(remote=remote, flow=flow), route_set
            return uri, Destination(remote=remote), route_set
    flow = binding.flow
    # flow-only: a WebSocket client (.invalid contact) or an RFC 5626 outbound flow (reg-id, §5.3:
    # "the proxy MUST NOT" open another); every other binding can still be reached without its flow
    flow_only = uri.host_key.endswith(".invalid") or (binding.reg_id is not None and flow is not None)
    received = binding.received if binding.received is not None else (flow.remote if flow else None)
    if received is not None and (binding.nat or flow_only):
        return uri, Destination(remote=received, flow=flow, flow_only=flow_only), []
    if received is not None and received.reliable:
        # the connection the UA registered over is used while it is open; once it is gone the
        # contact itself is dialled (the old source port is an ephemeral one nobody listens on)
        return uri, Destination(remote=uri_endpoint(uri), flow=flow), []
    return uri, Destination(remote=uri_endpoint(uri)), []
