"""RFC 5626 flow tokens in Record-Route, and routing over the flow they name (RFC 7118 §5 for WebSocket
clients), on the socket-less node of ``test_proxy_node``.

Cast: the node also listens on WSS 127.0.0.1:8443; Walter is a browser on a WebSocket (connection 21,
``.invalid`` Via and Contact), Wendy another (connection 22); Alice (UDP) and Bob (UDP) as in
``test_proxy_node``.
"""

from __future__ import annotations

import pytest

from edgeproxy.proxy.flowtoken import FlowTokens, InvalidFlowToken, StaleFlowToken
from edgeproxy.interfaces import SendError
from edgeproxy.sip.endpoint import Endpoint, Flow
from support.proxy import ALICE, ALICE_FLOW, BOB, BOB_FLOW, RR_UDP, World, answer, in_dialog, invite, only, sip

LOCAL_WSS = Endpoint("WSS", "127.0.0.1", 8443)
WALTER = Endpoint("WSS", "127.0.0.1", 50001)
WENDY = Endpoint("WSS", "127.0.0.1", 50002)
WALTER_FLOW = Flow(LOCAL_WSS, WALTER, 21)
WENDY_FLOW = Flow(LOCAL_WSS, WENDY, 22)
WALTER_CONTACT = "<sip:w4lt3r@df7jal23ls0d.invalid;transport=ws;ob>"
WENDY_CONTACT = "<sip:w3ndy@a8b9c0d1e2f3.invalid;transport=ws>"


def rr_ws(world: World, flow: Flow) -> str:
    return f"<sip:{world.node.forwarder.flow_tokens.encode(flow)}@127.0.0.1:8443;transport=ws;lr;ob>"


@pytest.fixture
def world() -> World:
    w = World()
    w.sender.listeners["WSS"] = LOCAL_WSS
    w.node.add_local_endpoint(LOCAL_WSS)
    return w


def ws_invite(to: str, *, frm: str = "walter", host: str = "df7jal23ls0d.invalid", contact: str = WALTER_CONTACT,
              call_id: str = "ws-call-1", branch: str = "z9hG4bKws1") -> str:
    return sip(
        f"INVITE sip:{to}@example.com SIP/2.0",
        f"Via: SIP/2.0/WSS {host};branch={branch}",
        "Max-Forwards: 69",
        f"From: <sip:{frm}@example.com>;tag=w1",
        f"To: <sip:{to}@example.com>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        f"Contact: {contact}",
    )


def ws_request(method: str, ok, *, host: str = "df7jal23ls0d.invalid", cseq: int = 2,
               branch: str = "z9hG4bKwsbye") -> str:
    """A request the WebSocket caller sends in the dialog its 2xx ``ok`` set up (reversed route set)."""
    route = list(reversed(ok.headers.values("record-route")))
    return sip(
        f"{method} {ok.contacts[0].uri} SIP/2.0",
        f"Via: SIP/2.0/WSS {host};branch={branch}",
        "Max-Forwards: 69",
        f"Route: {', '.join(route)}",
        f"From: {ok.headers.get('from')}",
        f"To: {ok.headers.get('to')}",
        f"Call-ID: {ok.call_id}",
        f"CSeq: {cseq} {method}",
    )


def callee_request(method: str, fwd, *, via: str, target: str, cseq: int = 1, branch: str = "z9hG4bKcallee") -> str:
    """A request the callee sends in the dialog the INVITE ``fwd`` (as it received it) set up: its
    route set is the Record-Route in order (§12.1.1)."""
    return sip(
        f"{method} {target} SIP/2.0",
        f"Via: {via};branch={branch}",
        "Max-Forwards: 70",
        f"Route: {', '.join(fwd.headers.values('record-route'))}",
        f"From: {fwd.headers.get('to')};tag=b1",
        f"To: {fwd.headers.get('from')}",
        f"Call-ID: {fwd.call_id}",
        f"CSeq: {cseq} {method}",
    )


# -- the token ------------------------------------------------------------------------------------

def test_token_round_trip_and_shape() -> None:
    tokens = FlowTokens(b"k" * 32)
    for flow in (WALTER_FLOW, Flow(Endpoint("TLS", "::1", 5061), Endpoint("TLS", "2001:db8::7", 40000), 2**40)):
        token = tokens.encode(flow)
        assert token is not None and set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        back = tokens.decode(token)
        assert back is not None
        assert (back.remote, back.connection_id) == (flow.remote, flow.connection_id)
    assert tokens.encode(None) is None
    assert tokens.encode(Flow(LOCAL_WSS, Endpoint("WSS", "walter.example", 1), 3)) is None  # not an address
    for user in (None, "", "alice", "w4lt3r", "AQAAAA", "x" * 35):
        assert tokens.decode(user) is None


def test_a_token_cannot_be_forged_or_altered() -> None:
    tokens = FlowTokens(b"k" * 32)
    token = tokens.encode(WALTER_FLOW)
    assert token is not None
    altered = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    with pytest.raises(InvalidFlowToken):
        tokens.decode(altered)
    with pytest.raises(InvalidFlowToken):  # another node's (another secret's) token
        FlowTokens(b"x" * 32).decode(token)


def test_a_connection_token_of_an_earlier_process_is_stale_not_forged() -> None:
    """The key survives a restart, the connections do not: a token of the process before verifies
    but is :class:`StaleFlowToken` (430, RFC 5626 §5.3) and never yields a connection id -- the new
    process numbers its connections afresh, and its connection 21 is someone else."""
    before, after = FlowTokens(b"k" * 32), FlowTokens(b"k" * 32)
    token = before.encode(WALTER_FLOW)
    with pytest.raises(StaleFlowToken) as stale:
        after.decode(token, LOCAL_WSS)
    assert stale.value.status == 430 and stale.value.flow == Flow(LOCAL_WSS, WALTER)  # no connection id
    assert after.looks_like(token)
    # a UDP token has no connection to lose: it still verifies after the restart
    udp = before.encode(ALICE_FLOW)
    assert after.decode(udp, ALICE_FLOW.local) == ALICE_FLOW


def test_an_earlier_layout_connection_token_is_ours_and_refused() -> None:
    """Version 1 tokens (a per-process key, no incarnation) still look like ours after an upgrade,
    so they are refused (403), not taken for a user at this address."""
    import base64

    v1 = base64.urlsafe_b64encode(bytes([1, 0]) + bytes(10) + bytes([127, 0, 0, 1]) + bytes(10)).rstrip(b"=").decode()
    tokens = FlowTokens(b"k" * 32)
    assert tokens.looks_like(v1)
    with pytest.raises(InvalidFlowToken) as forged:
        tokens.decode(v1)
    assert forged.value.status == 403


# -- WebSocket caller, UDP callee -------------------------------------------------------------------

def test_wss_caller_to_udp_callee_double_record_route_and_both_directions(world: World) -> None:
    world.register()  # Bob on UDP
    sent = world.receive(ws_invite("bob"), WALTER_FLOW)
    trying = only(sent, lambda s: s.is_response(100))
    assert trying.destination.flow == WALTER_FLOW
    fwd = only(sent, lambda s: s.is_request("INVITE")).message
    # UDP entry on top (faces Bob), the WebSocket entry below it names Walter's connection
    assert fwd.headers.values("record-route") == [RR_UDP, rr_ws(world, WALTER_FLOW)]

    sent = world.receive(answer(fwd, 200), BOB_FLOW)
    ok = only(sent)
    assert ok.destination.flow == WALTER_FLOW and ok.destination.flow_only
    # the response carries only Walter's Via: JsSIP drops responses with more than one
    assert len(ok.message.vias) == 1 and ok.message.top_via.host == "df7jal23ls0d.invalid"

    # Walter's ACK and BYE go to Bob by the Request-URI: the token names the flow they came on
    ack = only(world.receive(ws_request("ACK", ok.message, cseq=1, branch="z9hG4bKwsack"), WALTER_FLOW))
    assert ack.is_request("ACK") and ack.remote == BOB and ack.message.routes == []
    bye = only(world.receive(ws_request("BYE", ok.message), WALTER_FLOW))
    assert bye.is_request("BYE") and bye.remote == BOB

    # Bob's BYE (new dialog, same route set) goes over Walter's connection, never dialled
    world.receive(answer(bye.message, 200), BOB_FLOW)
    bob_bye = callee_request("BYE", fwd, via="SIP/2.0/UDP 192.0.2.10:5062", target="sip:w4lt3r@df7jal23ls0d.invalid;transport=ws;ob")
    out = only(world.receive(bob_bye, BOB_FLOW))
    assert out.is_request("BYE")
    assert out.destination.flow.connection_id == 21 and out.destination.flow_only
    assert out.remote == WALTER and out.message.top_via.transport == "WSS"
    assert out.message.routes == []


def test_udp_caller_to_wss_callee_token_in_the_entry_facing_the_callee(world: World) -> None:
    world.register("walter", contacts=(WALTER_CONTACT,), flow=WALTER_FLOW)
    sent = world.receive(invite("walter"), ALICE_FLOW)
    out = only(sent, lambda s: s.is_request("INVITE"))
    assert out.destination.flow == WALTER_FLOW and out.destination.flow_only
    fwd = out.message
    assert fwd.headers.values("record-route") == [rr_ws(world, WALTER_FLOW), RR_UDP]
    ok = only(world.receive(answer(fwd, 200, contact=WALTER_CONTACT), WALTER_FLOW)).message
    assert ok.headers.values("record-route") == [rr_ws(world, WALTER_FLOW), RR_UDP]

    # Alice's BYE (Route: UDP entry, WS entry) is sent down Walter's WebSocket
    out = only(world.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKabye"), ALICE_FLOW))
    assert out.is_request("BYE") and out.destination.flow.connection_id == 21 and out.destination.flow_only
    assert str(out.message.uri) == "sip:w4lt3r@df7jal23ls0d.invalid;transport=ws;ob"

    # Walter's BYE (Route: WS entry, UDP entry) goes to Alice
    walter_bye = callee_request("BYE", fwd, via="SIP/2.0/WSS df7jal23ls0d.invalid", target="sip:alice@192.0.2.20:5060")
    out = only(world.receive(walter_bye, WALTER_FLOW))
    assert out.is_request("BYE") and out.remote == ALICE


def test_websocket_to_websocket_one_entry_per_connection(world: World) -> None:
    world.register("wendy", contacts=(WENDY_CONTACT,), flow=WENDY_FLOW)
    fwd = only(world.receive(ws_invite("wendy"), WALTER_FLOW), lambda s: s.is_request("INVITE")).message
    assert fwd.headers.values("record-route") == [rr_ws(world, WENDY_FLOW), rr_ws(world, WALTER_FLOW)]
    ok = only(world.receive(answer(fwd, 200, contact=WENDY_CONTACT), WENDY_FLOW))
    assert ok.destination.flow == WALTER_FLOW
    # Walter -> Wendy and Wendy -> Walter, each over the other's connection
    out = only(world.receive(ws_request("BYE", ok.message), WALTER_FLOW))
    assert out.is_request("BYE") and out.destination.flow.connection_id == 22 and out.remote == WENDY
    wendy_bye = callee_request("BYE", fwd, via="SIP/2.0/WSS a8b9c0d1e2f3.invalid", target=WALTER_CONTACT[1:-1])
    out = only(world.receive(wendy_bye, WENDY_FLOW))
    assert out.is_request("BYE") and out.destination.flow.connection_id == 21 and out.remote == WALTER


def test_transport_wss_spelling_in_a_route_is_ours_too(world: World) -> None:
    world.register()
    fwd = only(world.receive(ws_invite("bob"), WALTER_FLOW), lambda s: s.is_request("INVITE")).message
    wss_spelling = rr_ws(world, WALTER_FLOW).replace("transport=ws", "transport=wss")
    bob_bye = callee_request("BYE", fwd, via="SIP/2.0/UDP 192.0.2.10:5062", target="sip:w4lt3r@df7jal23ls0d.invalid")
    bob_bye = bob_bye.replace(rr_ws(world, WALTER_FLOW), wss_spelling)
    out = only(world.receive(bob_bye, BOB_FLOW))
    assert out.is_request("BYE") and out.destination.flow.connection_id == 21 and out.message.routes == []


def test_closed_flow_gives_430_flow_failed(world: World) -> None:
    world.register()
    fwd = only(world.receive(ws_invite("bob"), WALTER_FLOW), lambda s: s.is_request("INVITE")).message
    world.sender.fail_to[WALTER] = SendError("Flow Failed", 430)  # what the transport says for a closed flow
    bob_bye = callee_request("BYE", fwd, via="SIP/2.0/UDP 192.0.2.10:5062", target="sip:w4lt3r@df7jal23ls0d.invalid")
    sent = world.receive(bob_bye, BOB_FLOW)
    final = only(sent, lambda s: s.is_response())
    assert final.message.status == 430 and final.remote == Endpoint("UDP", "192.0.2.10", 5062)


def test_a_token_of_the_process_before_a_restart_gets_430(world: World) -> None:
    """RFC 5626 §5.3 / §11.5: Bob's BYE names Walter's WebSocket connection, which died with the
    process that made the token (same node key): 430 Flow Failed, and nothing is sent anywhere."""
    key = b"k" * 32
    before = World(flow_tokens=FlowTokens(key))
    before.sender.listeners["WSS"] = LOCAL_WSS
    before.node.add_local_endpoint(LOCAL_WSS)
    before.register()
    fwd = only(before.receive(ws_invite("bob"), WALTER_FLOW), lambda s: s.is_request("INVITE")).message
    after = World(flow_tokens=FlowTokens(key))  # the restarted node: a new incarnation
    after.sender.listeners["WSS"] = LOCAL_WSS
    after.node.add_local_endpoint(LOCAL_WSS)
    bob_bye = callee_request("BYE", fwd, via="SIP/2.0/UDP 192.0.2.10:5062", target="sip:w4lt3r@df7jal23ls0d.invalid")
    final = only(after.receive(bob_bye, BOB_FLOW))
    assert final.is_response(430) and final.message.reason == "Flow Failed"
    assert final.remote == Endpoint("UDP", "192.0.2.10", 5062)
    assert not any(s.is_request() for s in after.sender.sent)


def test_a_tcp_token_of_the_process_before_a_restart_falls_back_to_a_routable_contact() -> None:
    """As for a connection this process saw close: a TCP/TLS client with a dialable Request-URI is
    dialled there (RFC 3261 §18), with no connection id from the token (it is not ours)."""
    key = b"k" * 32
    bob_tls = Flow(Endpoint("TLS", "127.0.0.1", 5061), Endpoint("TLS", "192.0.2.10", 40001), 31)
    worlds = []
    for _ in range(2):
        w = World(flow_tokens=FlowTokens(key))
        w.sender.listeners["TLS"] = Endpoint("TLS", "127.0.0.1", 5061)
        w.node.add_local_endpoint(Endpoint("TLS", "127.0.0.1", 5061))
        worlds.append(w)
    before, after = worlds
    before.register(contacts=("<sip:bob@192.0.2.10:5061;transport=tls>",), flow=bob_tls)
    fwd = only(before.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    ok = only(before.receive(answer(fwd, 200, contact="<sip:bob@192.0.2.10:5061;transport=tls>"), bob_tls)).message
    out = only(after.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKtls2"), ALICE_FLOW))
    assert out.is_request("BYE") and out.remote == Endpoint("TLS", "192.0.2.10", 5061)
    assert out.destination.flow is None and not out.destination.flow_only


def test_forged_token_gets_403(world: World) -> None:
    world.register()
    fwd = only(world.receive(ws_invite("bob"), WALTER_FLOW), lambda s: s.is_request("INVITE")).message
    forged = FlowTokens(b"attacker" * 4).encode(Flow(LOCAL_WSS, WENDY, 22))
    bob_bye = callee_request("BYE", fwd, via="SIP/2.0/UDP 192.0.2.10:5062", target="sip:w4lt3r@df7jal23ls0d.invalid")
    bob_bye = bob_bye.replace(world.node.forwarder.flow_tokens.encode(WALTER_FLOW), forged)
    final = only(world.receive(bob_bye, BOB_FLOW))
    assert final.is_response(403) and not any(s.is_request() for s in world.sender.sent)


def test_set_dst_overrides_the_flow_token(world: World) -> None:
    from support.proxy import module

    def route(msg):
        if msg.has_totag() and msg.loose_route():
            msg.du = "sip:192.0.2.99:5070"
            msg.t_relay()

    w = World(module(route))
    w.sender.listeners["WSS"] = LOCAL_WSS
    w.node.add_local_endpoint(LOCAL_WSS)
    bye = sip(
        "BYE sip:w4lt3r@df7jal23ls0d.invalid SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKdu",
        "Max-Forwards: 70",
        f"Route: {RR_UDP}, {rr_ws(w, WALTER_FLOW)}",
        "From: <sip:bob@example.com>;tag=b1",
        "To: <sip:walter@example.com>;tag=w1",
        "Call-ID: du-1",
        "CSeq: 1 BYE",
    )
    out = only(w.receive(bye, BOB_FLOW), lambda s: s.is_request())
    assert out.remote == Endpoint("UDP", "192.0.2.99", 5070)


def test_tcp_flow_token_falls_back_to_a_routable_contact(world: World) -> None:
    """A TCP/TLS client whose connection is gone can still be dialled at its Contact (RFC 3261 §18):
    the request names the connection first and the Contact as where to go without it."""
    bob_tls = Flow(Endpoint("TLS", "127.0.0.1", 5061), Endpoint("TLS", "192.0.2.10", 40001), 31)
    world.sender.listeners["TLS"] = Endpoint("TLS", "127.0.0.1", 5061)
    world.node.add_local_endpoint(Endpoint("TLS", "127.0.0.1", 5061))
    world.register(contacts=("<sip:bob@192.0.2.10:5061;transport=tls>",), flow=bob_tls)
    fwd = only(world.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    token = world.node.forwarder.flow_tokens.encode(bob_tls)
    assert fwd.headers.values("record-route") == [f"<sip:{token}@127.0.0.1:5061;transport=tls;lr;ob>", RR_UDP]
    ok = only(world.receive(answer(fwd, 200, contact="<sip:bob@192.0.2.10:5061;transport=tls>"), bob_tls)).message
    out = only(world.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKtls"), ALICE_FLOW))
    assert out.destination.flow.connection_id == 31 and not out.destination.flow_only
    assert out.remote == Endpoint("TLS", "192.0.2.10", 5061)


def test_tcp_flow_token_falls_back_to_a_udp_contact_but_tls_never_to_clear(world: World) -> None:
    """Issue 11 item 5: a phone that registered a UDP Contact over TCP is reached at that Contact once
    its connection has closed; a TLS client's in-dialog request never falls back to UDP."""
    bob_tcp = Flow(Endpoint("TCP", "127.0.0.1", 5060), Endpoint("TCP", "192.0.2.10", 40002), 32)
    world.register(contacts=("<sip:bob@192.0.2.10:5070>",), flow=bob_tcp)
    fwd = only(world.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    ok = only(world.receive(answer(fwd, 200, contact="<sip:bob@192.0.2.10:5070>"), bob_tcp)).message
    out = only(world.receive(in_dialog("BYE", ok, cseq=2, branch="z9hG4bKtcp"), ALICE_FLOW))
    assert out.destination.flow.connection_id == 32 and not out.destination.flow_only
    assert out.remote == Endpoint("UDP", "192.0.2.10", 5070)  # once connection 32 is gone
    bob_tls = Flow(Endpoint("TLS", "127.0.0.1", 5061), Endpoint("TLS", "192.0.2.11", 40003), 33)
    assert world.node.forwarder.flow_destination(bob_tls, ok.contacts[0].uri).flow_only
