"""Next-hop rules of edgeproxy.proxy.hops: Via stamping (RFC 3261 §18.2.1, RFC 3581), where
responses go (§18.2.2), where a URI leads (§16.6 step 7 / RFC 3263 §4.1 without DNS) and Route
pre-processing (§16.4, strict routers §16.12.1.2, double Record-Route RFC 5658)."""

from __future__ import annotations

import pytest

from edgeproxy.proxy.hops import is_ip, loose_route, response_destination, stamp_received, uri_destination, uri_transport
from edgeproxy.sip import Request, Response, parse_datagram, parse_uri
from edgeproxy.sip.endpoint import Destination, Endpoint, Flow

LOCAL_UDP = Endpoint("UDP", "127.0.0.1", 5060)
LOCAL_TCP = Endpoint("TCP", "127.0.0.1", 5060)


def request(*lines: str, method: str = "INVITE", uri: str = "sip:bob@example.com", to_tag: str | None = None) -> Request:
    has_via = any(line.lower().startswith("via:") for line in lines)
    text = "\r\n".join([
        f"{method} {uri} SIP/2.0",
        *([] if has_via else ["Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKhop1"]),
        *lines,
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        f"To: <sip:bob@example.com>{f';tag={to_tag}' if to_tag else ''}",
        "Call-ID: hops-1",
        f"CSeq: 1 {method}",
        "Content-Length: 0",
    ]) + "\r\n\r\n"
    msg = parse_datagram(text.encode())
    assert isinstance(msg, Request)
    return msg


def response(*vias: str) -> Response:
    text = "\r\n".join([
        "SIP/2.0 200 OK",
        *(f"Via: {v}" for v in vias),
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: hops-1",
        "CSeq: 1 INVITE",
        "Content-Length: 0",
    ]) + "\r\n\r\n"
    msg = parse_datagram(text.encode())
    assert isinstance(msg, Response)
    return msg


def reparsed(msg: Request) -> Request:
    out = parse_datagram(msg.to_bytes())
    assert isinstance(out, Request)
    return out


# ---------------------------------------------------------------------------------------------------
# stamp_received: §18.2.1 and RFC 3581 §4
# ---------------------------------------------------------------------------------------------------


def test_stamp_received_leaves_a_truthful_via_alone_rfc3261_18_2_1() -> None:
    req = request("Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKhop1")
    before = req.to_bytes()
    stamp_received(req, Flow(LOCAL_UDP, Endpoint("UDP", "192.0.2.20", 5060)))
    assert req.to_bytes() == before
    assert req.top_via.received is None


def test_stamp_received_adds_received_when_host_differs_rfc3261_18_2_1() -> None:
    req = request("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKhop1")
    stamp_received(req, Flow(LOCAL_UDP, Endpoint("UDP", "203.0.113.9", 40000)))
    for via in (req.top_via, reparsed(req).top_via):
        assert via.received == "203.0.113.9"
        assert "rport" not in via.params  # not asked for: the port is not added
        assert (via.host, via.port, via.branch) == ("10.0.0.5", 5060, "z9hG4bKhop1")


def test_stamp_received_for_a_domain_sent_by_rfc3261_18_2_1() -> None:
    req = request("Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKhop1")
    stamp_received(req, Flow(LOCAL_UDP, Endpoint("UDP", "192.0.2.20", 5060)))
    assert req.top_via.received == "192.0.2.20"


def test_stamp_received_fills_rport_and_received_even_when_equal_rfc3581_4() -> None:
    req = request("Via: SIP/2.0/UDP 192.0.2.20:5060;rport;branch=z9hG4bKhop1")
    stamp_received(req, Flow(LOCAL_UDP, Endpoint("UDP", "192.0.2.20", 5060)))
    via = reparsed(req).top_via
    assert via.received == "192.0.2.20"  # RFC 3581 §4: MUST add received when rport is present
    assert via.params["rport"] == "5060"
    assert via.branch == "z9hG4bKhop1"


def test_stamp_received_rport_behind_nat_rfc3581_4() -> None:
    req = request("Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKhop1;rport")
    stamp_received(req, Flow(LOCAL_UDP, Endpoint("UDP", "203.0.113.9", 34567)))
    via = req.top_via
    assert (via.received, via.params["rport"]) == ("203.0.113.9", "34567")
    assert req.vias[0].params["rport"] == "34567"  # the full Via list view agrees with the top view


def test_stamp_received_only_touches_the_top_via_rfc3261_18_2_1() -> None:
    req = request("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKtop;rport, SIP/2.0/UDP 10.0.0.6;branch=z9hG4bKlow",
                  "Via: SIP/2.0/TCP 10.0.0.7;branch=z9hG4bKlowest")
    stamp_received(req, Flow(LOCAL_UDP, Endpoint("UDP", "203.0.113.9", 5060)))
    vias = reparsed(req).vias
    assert [v.branch for v in vias] == ["z9hG4bKtop", "z9hG4bKlow", "z9hG4bKlowest"]
    assert vias[0].received == "203.0.113.9"
    assert vias[1].received is None and vias[2].received is None


def test_stamp_received_ipv6_reference_equal_to_source() -> None:
    req = request("Via: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKhop1")
    stamp_received(req, Flow(Endpoint("UDP", "::1", 5060), Endpoint("UDP", "2001:db8::9", 5060)))
    assert req.top_via.received is None


def test_stamp_received_over_tcp_rfc3261_18_2_1() -> None:
    req = request("Via: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKhop1;rport")
    stamp_received(req, Flow(LOCAL_TCP, Endpoint("TCP", "203.0.113.9", 51000), 3))
    via = req.top_via
    assert via.transport == "TCP" and via.received == "203.0.113.9" and via.params["rport"] == "51000"


# ---------------------------------------------------------------------------------------------------
# response_destination: §18.2.2 and RFC 3581 §4
# ---------------------------------------------------------------------------------------------------


def test_response_over_a_reliable_transport_goes_back_on_the_connection_rfc3261_18_2_2() -> None:
    flow = Flow(LOCAL_TCP, Endpoint("TCP", "203.0.113.9", 51000), 3)
    resp = response("SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKa;received=203.0.113.9")
    dest = response_destination(resp, flow)
    assert dest.flow == flow
    # should the connection be gone: a new one to received + sent-by port, not to port 51000
    assert dest.remote == Endpoint("TCP", "203.0.113.9", 5060)
    assert not dest.flow_only


def test_response_over_a_closed_connection_goes_to_received_and_sent_by_port_rfc3261_18_2_2() -> None:
    flow = Flow(LOCAL_TCP, Endpoint("TCP", "203.0.113.9", 51000), 3)
    resp = response("SIP/2.0/TCP client.example.com:5070;branch=z9hG4bKa;received=203.0.113.9;rport=51000")
    assert response_destination(resp, flow).remote == Endpoint("TCP", "203.0.113.9", 5070)
    resp = response("SIP/2.0/TLS client.example.com;branch=z9hG4bKa")
    tls = Flow(Endpoint("TLS", "127.0.0.1", 5061), Endpoint("TLS", "203.0.113.9", 51000), 4)
    assert response_destination(resp, tls).remote == Endpoint("TLS", "client.example.com", 5061)


def test_response_to_a_websocket_client_never_dials_rfc7118_5() -> None:
    flow = Flow(Endpoint("WS", "127.0.0.1", 8080), Endpoint("WS", "203.0.113.70", 61000), 21)
    resp = response("SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKa;received=203.0.113.70")
    dest = response_destination(resp, flow)
    assert dest.flow == flow and dest.flow_only


def test_response_with_maddr_goes_to_maddr_rfc3261_18_2_2() -> None:
    resp = response("SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bKa;maddr=239.255.255.1;ttl=1")
    assert response_destination(resp, None).remote == Endpoint("UDP", "239.255.255.1", 5070)
    resp = response("SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKa;maddr=239.255.255.1")
    assert response_destination(resp, None).remote == Endpoint("UDP", "239.255.255.1", 5060)


def test_response_goes_to_received_and_sent_by_port_rfc3261_18_2_2() -> None:
    resp = response("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKa;received=203.0.113.9")
    assert response_destination(resp, None).remote == Endpoint("UDP", "203.0.113.9", 5062)


def test_response_goes_to_received_and_rport_rfc3581_4() -> None:
    flow = Flow(LOCAL_UDP, Endpoint("UDP", "203.0.113.9", 34567))
    resp = response("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKa;received=203.0.113.9;rport=34567")
    dest = response_destination(resp, flow)
    assert dest.remote == Endpoint("UDP", "203.0.113.9", 34567)
    assert dest.flow == flow  # leaves from the socket the request came in on (RFC 3581 §4)


def test_response_without_received_goes_to_sent_by_rfc3261_18_2_2() -> None:
    assert response_destination(response("SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bKa"), None).remote == \
        Endpoint("UDP", "192.0.2.20", 5070)
    assert response_destination(response("SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKa"), None).remote == \
        Endpoint("UDP", "192.0.2.20", 5060)
    assert response_destination(response("SIP/2.0/UDP [2001:db8::9];branch=z9hG4bKa"), None).remote == \
        Endpoint("UDP", "2001:db8::9", 5060)


def test_response_uses_the_top_via_only_rfc3261_18_2_2() -> None:
    resp = response("SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bKa", "SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKb")
    assert response_destination(resp, None).remote == Endpoint("UDP", "192.0.2.20", 5070)


def test_response_over_tcp_without_flow_uses_sent_by_and_tls_default_port_rfc3261_18_2_2() -> None:
    resp = response("SIP/2.0/TLS client.example.com;branch=z9hG4bKa;received=203.0.113.9")
    assert response_destination(resp, None).remote == Endpoint("TLS", "203.0.113.9", 5061)


# ---------------------------------------------------------------------------------------------------
# uri_destination / uri_transport: §16.6 step 7, RFC 3263 §4.1 (no NAPTR/SRV), RFC 7118 §5.2
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("sip:bob@192.0.2.10", Endpoint("UDP", "192.0.2.10", 5060)),
        ("sip:bob@192.0.2.10:5070", Endpoint("UDP", "192.0.2.10", 5070)),
        ("sip:bob@192.0.2.10;transport=tcp", Endpoint("TCP", "192.0.2.10", 5060)),
        ("sip:bob@192.0.2.10;transport=TCP", Endpoint("TCP", "192.0.2.10", 5060)),
        ("sip:bob@192.0.2.10;transport=tls", Endpoint("TLS", "192.0.2.10", 5061)),
        ("sips:bob@192.0.2.10", Endpoint("TLS", "192.0.2.10", 5061)),
        ("sips:bob@192.0.2.10:5071", Endpoint("TLS", "192.0.2.10", 5071)),
        ("sip:bob@192.0.2.10;transport=ws", Endpoint("WS", "192.0.2.10", 80)),
        ("sips:bob@192.0.2.10;transport=ws", Endpoint("WSS", "192.0.2.10", 443)),
        ("sip:bob@[2001:db8::10]:5062", Endpoint("UDP", "2001:db8::10", 5062)),
        ("sip:bob@example.com;maddr=192.0.2.77", Endpoint("UDP", "192.0.2.77", 5060)),
        ("sip:proxy.example.com;lr", Endpoint("UDP", "proxy.example.com", 5060)),
    ],
)
def test_uri_destination_rfc3263_4_1(uri: str, expected: Endpoint) -> None:
    dest = uri_destination(parse_uri(uri))
    assert dest.remote == expected
    assert dest.flow is None and not dest.flow_only


def test_sips_uri_with_transport_tcp_means_tls_rfc3261_26_2_2() -> None:
    """``sips:...;transport=tcp`` is TLS over TCP (§19.1.1, §26.2.2; RFC 5630 §3.1.3): it must never
    be dialled as plain TCP."""
    uri = parse_uri("sips:bob@192.0.2.10;transport=tcp")
    assert uri_transport(uri) == "TLS"
    assert uri_destination(uri).remote == Endpoint("TLS", "192.0.2.10", 5061)


def test_invalid_host_is_flow_only_rfc7118_5_2() -> None:
    dest = uri_destination(parse_uri("sip:df7jal23@abc123.invalid;transport=ws"))
    assert dest.flow_only
    assert dest.remote.transport == "WS"


def test_is_ip() -> None:
    assert is_ip("192.0.2.1") and is_ip("2001:db8::1") and is_ip("[2001:db8::1]")
    assert not is_ip("example.com") and not is_ip("192.0.2.256")


# ---------------------------------------------------------------------------------------------------
# loose_route: §16.4 route information pre-processing
# ---------------------------------------------------------------------------------------------------

ME = {("127.0.0.1", 5060), ("example.com", None)}


def is_myself(host: str, port: int | None = None) -> bool:
    host = host.lower()
    if host == "example.com":
        return True
    return (host, port) in ME or (port is None and host == "127.0.0.1")


def route_values(req: Request) -> list[str]:
    return [str(r.uri) for r in reparsed(req).routes]


def test_no_route_is_not_loose_routed_rfc3261_16_4() -> None:
    req = request(to_tag="b1")
    assert loose_route(req, is_myself) is False


def test_in_dialog_route_to_us_is_popped_rfc3261_16_4() -> None:
    req = request("Route: <sip:127.0.0.1:5060;lr>, <sip:p2.example.net;lr>", uri="sip:bob@192.0.2.10:5062",
                  method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert route_values(req) == ["sip:p2.example.net;lr"]
    assert req.uri_text == "sip:bob@192.0.2.10:5062"


def test_in_dialog_last_route_to_us_leaves_the_request_uri_as_target_rfc3261_16_4() -> None:
    req = request("Route: <sip:127.0.0.1:5060;lr>", uri="sip:bob@192.0.2.10:5062", method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert "route" not in reparsed(req).headers


def test_double_record_route_both_entries_popped_rfc5658() -> None:
    req = request("Route: <sip:127.0.0.1:5060;lr>", "Route: <sip:127.0.0.1:5060;transport=tcp;lr>",
                  uri="sip:bob@192.0.2.10:5062", method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert route_values(req) == []


def test_double_record_route_in_one_header_then_another_hop_rfc5658() -> None:
    req = request("Route: <sip:127.0.0.1:5060;transport=tcp;lr>, <sip:127.0.0.1:5060;lr>, <sip:p2.example.net;lr>",
                  uri="sip:bob@192.0.2.10:5062", method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert route_values(req) == ["sip:p2.example.net;lr"]


def test_route_to_another_proxy_is_followed_untouched_rfc3261_16_4() -> None:
    req = request("Route: <sip:p2.example.net;lr>", uri="sip:bob@192.0.2.10:5062", method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert route_values(req) == ["sip:p2.example.net;lr"]


def test_route_on_our_address_but_other_port_is_not_us_rfc3261_16_4() -> None:
    req = request("Route: <sip:127.0.0.1:5070;lr>", uri="sip:bob@192.0.2.10:5062", method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert route_values(req) == ["sip:127.0.0.1:5070;lr"]


def test_route_naming_a_local_domain_is_us_rfc3261_16_4() -> None:
    req = request("Route: <sip:example.com;lr>", uri="sip:bob@192.0.2.10:5062", method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert route_values(req) == []


def test_preloaded_single_route_to_us_on_initial_request_is_popped_and_not_loose_routed_rfc3261_16_4() -> None:
    req = request("Route: <sip:127.0.0.1:5060;lr>")
    assert loose_route(req, is_myself) is False  # route it like an initial request
    assert route_values(req) == []
    assert req.uri_text == "sip:bob@example.com"


def test_preloaded_route_beyond_us_is_loose_routed_rfc3261_16_4() -> None:
    req = request("Route: <sip:127.0.0.1:5060;lr>, <sip:p2.example.net;lr>")
    assert loose_route(req, is_myself) is True
    assert route_values(req) == ["sip:p2.example.net;lr"]


def test_strict_router_fixup_rfc3261_16_4() -> None:
    """The previous hop was a strict router: the Request-URI is our Record-Route URI and the remote
    target is the last Route value (§16.4, §16.12.1.2)."""
    req = request("Route: <sip:bob@192.0.2.10:5062>", uri="sip:127.0.0.1:5060;lr", method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert req.uri_text == "sip:bob@192.0.2.10:5062"
    assert route_values(req) == []


def test_strict_router_fixup_keeps_the_rest_of_the_route_set_rfc3261_16_4() -> None:
    req = request("Route: <sip:p2.example.net;lr>, <sip:p3.example.net;lr>", "Route: <sip:bob@192.0.2.10:5062>",
                  uri="sip:127.0.0.1:5060;lr", method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert req.uri_text == "sip:bob@192.0.2.10:5062"
    assert route_values(req) == ["sip:p2.example.net;lr", "sip:p3.example.net;lr"]


def test_strict_router_fixup_with_our_double_record_route_rfc3261_16_4_rfc5658() -> None:
    """A strict router put our first Record-Route URI in the Request-URI; our second one is then the
    top Route and must go too (OpenSIPS ``after_strict`` removes it), else we would send to ourselves."""
    req = request("Route: <sip:127.0.0.1:5060;transport=tcp;lr>, <sip:bob@192.0.2.10:5062>",
                  uri="sip:127.0.0.1:5060;lr", method="BYE", to_tag="b1")
    assert loose_route(req, is_myself) is True
    assert req.uri_text == "sip:bob@192.0.2.10:5062"
    assert route_values(req) == []


def test_request_uri_of_ours_with_a_user_is_not_a_strict_router_artifact_rfc3261_16_4() -> None:
    req = request("Route: <sip:127.0.0.1:5060;lr>", uri="sip:bob@127.0.0.1:5060", to_tag="b1", method="BYE")
    assert loose_route(req, is_myself) is True
    assert req.uri_text == "sip:bob@127.0.0.1:5060"
    assert route_values(req) == []


def test_register_to_our_domain_with_a_preloaded_route_is_not_a_strict_router_artifact_rfc3261_16_4() -> None:
    """REGISTER sip:example.com from a UA whose outbound proxy is this node (baresip's ``outbound``):
    the Request-URI is our domain, not one of our Record-Route URIs (those all carry ``lr``)."""
    req = request("Route: <sip:127.0.0.1:5060;lr>", uri="sip:example.com", method="REGISTER")
    assert loose_route(req, is_myself) is False
    assert req.uri_text == "sip:example.com"
    assert route_values(req) == []
