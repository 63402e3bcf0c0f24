"""The stateful proxy engine (RFC 3261 §16) without sockets: Path (RFC 3327 §5), closed flows
(RFC 7118 §5, RFC 5626 §5.3), and a property test of interleaved answers, CANCEL and time. The world
and cast are ``test_proxy_node.py``'s (``tests/support/proxy.py``)."""

from __future__ import annotations

import pytest
from support.proxy import (
    ALICE,
    ALICE_FLOW,
    BOB,
    BOB1_CONTACT,
    BOB2,
    BOB2_CONTACT,
    BOB2_FLOW,
    BOB3,
    BOB3_CONTACT,
    BOB3_FLOW,
    BOB_FLOW,
    BOB_TCP_FLOW,
    LOCAL_UDP,
    RR_UDP,
    Sent,
    World,
    answer,
    call_to_bob,
    cancel,
    in_dialog,
    invite,
    module,
    non2xx_ack,
    only,
    requests,
    rr_tcp,
    sip,
    wire,
)

from edgeproxy.interfaces import SendError
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.sip import Request, Response
from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.transaction import TimerSettings


@pytest.fixture
def world() -> World:
    return World()


# ---------------------------------------------------------------------------------------------------
# Path (RFC 3327 §5): the stored route set leads to the edge proxy, hop-by-hop requests follow it
# ---------------------------------------------------------------------------------------------------

EDGE = Endpoint("UDP", "192.0.2.50", 5060)
EDGE_FLOW = Flow(LOCAL_UDP, EDGE)


def register_via_edge(w: World) -> None:
    text = sip(
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKedge1",
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKbobreg;received=203.0.113.9;rport=34567",
        "Max-Forwards: 69",
        "Path: <sip:192.0.2.50:5060;lr>",
        "Supported: path",
        "From: <sip:bob@example.com>;tag=r1",
        "To: <sip:bob@example.com>",
        "Call-ID: reg-edge",
        "CSeq: 1 REGISTER",
        "Contact: <sip:bob@10.0.0.5:5062>",
    )
    ok = only(w.receive(text, EDGE_FLOW))
    assert ok.is_response(200) and ok.remote == EDGE
    assert ok.message.headers.values("path") == ["<sip:192.0.2.50:5060;lr>"]


def test_request_to_a_binding_with_path_goes_to_the_first_path_hop_rfc3327_5(world: World) -> None:
    register_via_edge(world)
    sent = world.receive(invite(), ALICE_FLOW)
    out = only(sent, lambda s: s.is_request("INVITE"))
    assert out.remote == EDGE
    assert out.message.uri_text == "sip:bob@10.0.0.5:5062"
    assert out.message.headers.values("route") == ["<sip:192.0.2.50:5060;lr>"]
    # the hop-by-hop CANCEL and the ACK for a non-2xx carry the same Route (§9.1, §17.1.1.3)
    world.receive(answer(out.message, 180), EDGE_FLOW)
    c = only(world.receive(cancel(), ALICE_FLOW), lambda s: s.is_request("CANCEL"))
    assert c.remote == EDGE and c.message.headers.values("route") == ["<sip:192.0.2.50:5060;lr>"]
    ack = only(world.receive(answer(out.message, 487), EDGE_FLOW), lambda s: s.is_request("ACK"))
    assert ack.remote == EDGE and ack.message.headers.values("route") == ["<sip:192.0.2.50:5060;lr>"]


def test_next_hop_strict_router_gets_the_request_uri_rewritten_rfc3261_16_6_step6(world: World) -> None:
    """The route set leads on to an RFC 2543 strict router (no ``lr``): the forwarded copy carries
    it as Request-URI and the old Request-URI as the last Route value, and goes to it."""
    bye = sip(
        "BYE sip:bob@192.0.2.10:5062 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKstrict;rport",
        "Max-Forwards: 70",
        f"Route: {RR_UDP}, <sip:192.0.2.60:5070>, <sip:192.0.2.61;lr>",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: strict-1",
        "CSeq: 2 BYE",
    )
    out = only(world.receive(bye, ALICE_FLOW))
    assert out.is_request("BYE") and out.remote == Endpoint("UDP", "192.0.2.60", 5070)
    assert out.message.uri_text == "sip:192.0.2.60:5070"
    assert [str(r.uri) for r in out.message.routes] == ["sip:192.0.2.61;lr", "sip:bob@192.0.2.10:5062"]


def test_next_hop_loose_router_keeps_the_request_uri_rfc3261_16_6_step6(world: World) -> None:
    bye = sip(
        "BYE sip:bob@192.0.2.10:5062 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKloose;rport",
        "Max-Forwards: 70",
        f"Route: {RR_UDP}, <sip:192.0.2.61:5070;lr>",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>;tag=b1",
        "Call-ID: loose-1",
        "CSeq: 2 BYE",
    )
    out = only(world.receive(bye, ALICE_FLOW))
    assert out.remote == Endpoint("UDP", "192.0.2.61", 5070)
    assert out.message.uri_text == "sip:bob@192.0.2.10:5062"
    assert [str(r.uri) for r in out.message.routes] == ["sip:192.0.2.61:5070;lr"]


# ---------------------------------------------------------------------------------------------------
# closed flows (RFC 7118 §5, RFC 5626 §5.3)
# ---------------------------------------------------------------------------------------------------


def test_closed_websocket_flow_takes_its_bindings_rfc7118_5(world: World) -> None:
    ws_local = Endpoint("WS", "127.0.0.1", 8080)
    world.sender.listeners["WS"] = ws_local
    ws_flow = Flow(ws_local, Endpoint("WS", "203.0.113.70", 61000), 21)
    text = sip(
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKws1",
        "Max-Forwards: 70",
        "From: <sip:bob@example.com>;tag=w1",
        "To: <sip:bob@example.com>",
        "Call-ID: reg-ws",
        "CSeq: 1 REGISTER",
        "Contact: <sip:bob@df7jal23ls0d.invalid;transport=ws>",
    )
    ok = only(world.receive(text, ws_flow))
    assert ok.is_response(200) and ok.destination.flow == ws_flow
    out = only(world.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE"))
    assert out.destination.flow == ws_flow and out.destination.flow_only  # never dial a browser
    world.node.flow_closed(ws_flow)
    sent = world.receive(invite(branch="z9hG4bKafterclose", call_id="after-close"), ALICE_FLOW)
    assert [s.message.status for s in sent] == [404]


def test_closed_tcp_flow_keeps_its_bindings_rfc3261_18(world: World) -> None:
    world.register(contacts=("<sip:bob@192.0.2.10:5062;transport=tcp>",), flow=BOB_TCP_FLOW)
    world.node.flow_closed(BOB_TCP_FLOW)
    assert requests(world.receive(invite(), ALICE_FLOW), "INVITE")


def test_2xx_retransmission_is_forwarded_again_rfc6026_8_4(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 200), BOB_FLOW)
    again = only(world.receive(answer(fwd, 200), BOB_FLOW))
    assert again.is_response(200) and again.remote == ALICE


def test_provisional_retransmission_is_forwarded_again_rfc3261_16_7(world: World) -> None:
    _, fwd = call_to_bob(world)
    world.receive(answer(fwd, 180), BOB_FLOW)
    assert only(world.receive(answer(fwd, 180), BOB_FLOW)).is_response(180)


# ---------------------------------------------------------------------------------------------------
# property: any interleaving of downstream answers, CANCEL and time keeps the response context sane
# ---------------------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_STATUSES = [100, 180, 183, 200, 404, 486, 487, 503, 603]
_CONTACT_SETS = [
    (f"{BOB1_CONTACT};q=0.5",),
    (f"{BOB1_CONTACT};q=0.5", f"{BOB2_CONTACT};q=0.5"),
    (f"{BOB1_CONTACT};q=1.0", f"{BOB2_CONTACT};q=0.5"),
    (f"{BOB1_CONTACT};q=1.0", f"{BOB2_CONTACT};q=0.5", f"{BOB3_CONTACT};q=0.5"),
]
_FLOWS = {BOB: BOB_FLOW, BOB2: BOB2_FLOW, BOB3: BOB3_FLOW}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_forked_invite_any_interleaving_answers_once_and_drains(data: st.DataObject) -> None:
    """Alice acts as a UA (she ACKs every negative final); each Bob answers whatever and whenever.
    Responses that match no transaction any more are forwarded statelessly (§16.7 step 1) and
    kept apart: the invariants are about what the response context decides."""
    w = World(timers=TimerSettings(timer_c=20))
    w.register(contacts=data.draw(st.sampled_from(_CONTACT_SETS)))
    log: list[Sent] = []
    decided: list[Response] = []  # finals the response context sent upstream
    provisional_from: set[Endpoint] = set()
    tags = {BOB: "b1", BOB2: "b2", BOB3: "b3"}

    def record(sent: list[Sent], stray: bool = False) -> None:
        log.extend(sent)
        for s in sent:
            m = s.message
            if s.is_request("CANCEL"):
                assert s.remote in provisional_from  # §9.1: never before a provisional
            if isinstance(m, Response):
                assert s.remote == ALICE
                if m.cseq.method == "INVITE" and m.status >= 200:
                    if not stray:
                        assert m.status != 503  # §16.7 step 6
                        decided.append(m)
                    if m.status >= 300:  # Alice's ACK for a negative final (§17.1.1.3)
                        record(w.receive(non2xx_ack(m), ALICE_FLOW))

    def invites() -> dict[Endpoint, Request]:
        return {s.remote: s.message for s in log if s.is_request("INVITE")}  # type: ignore[misc]

    record(w.receive(invite(), ALICE_FLOW))
    for _ in range(data.draw(st.integers(0, 12))):
        kind = data.draw(st.sampled_from(["respond", "respond", "respond", "cancel", "advance"]))
        if kind == "respond" and invites():
            remote = data.draw(st.sampled_from(sorted(invites(), key=str)))
            status = data.draw(st.sampled_from(_STATUSES))
            if status < 200:
                provisional_from.add(remote)
            response = wire(answer(invites()[remote], status, to_tag=tags[remote]))
            stray = w.node.table.match_response(response) is None
            record(w.receive(response, _FLOWS[remote]), stray)
        elif kind == "cancel":
            record(w.receive(cancel(), ALICE_FLOW))
        else:
            w.clock.pump([0.5] * int(data.draw(st.sampled_from([0.5, 5.0, 25.0])) / 0.5))
            record(w.sender.take())
    w.clock.pump([1.0] * 300)
    record(w.sender.take())

    # the caller gets an answer; at most one negative answer (retransmissions aside) and never one
    # after a 2xx; every transaction ends and nothing is left behind
    assert decided, log
    assert len({m.status for m in decided if m.status >= 300}) <= 1, [m.status for m in decided]
    first_2xx = next((i for i, m in enumerate(decided) if m.status < 300), len(decided))
    assert all(m.status < 300 for m in decided[first_2xx:]), [m.status for m in decided]
    assert len(w.node.table) == 0 and w.node.proxy.idle


def test_single_record_route_setting_when_changing_transport_rfc3261_16_6_step4() -> None:
    w = World(settings=ProxySettings(domains=("example.com",), record_route_double=False))
    w.register(contacts=("<sip:bob@192.0.2.10:5062;transport=tcp>",), flow=BOB_TCP_FLOW)
    fwd = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    assert fwd.headers.values("record-route") == [rr_tcp(w, BOB_TCP_FLOW)]


def test_ipv6_call_record_route_and_loose_route_rfc5118() -> None:
    local6 = Endpoint("UDP", "2001:db8::1", 5060)
    alice6 = Endpoint("UDP", "2001:db8::20", 5060)
    bob6 = Endpoint("UDP", "2001:db8::10", 5062)
    w = World()
    w.sender.listeners["UDP"] = local6
    w.node.add_local_endpoint(local6)
    alice_flow, bob_flow = Flow(local6, alice6), Flow(local6, bob6)
    w.register(contacts=("<sip:bob@[2001:db8::10]:5062>",), flow=bob_flow)
    text = invite().replace("192.0.2.20:5060", "[2001:db8::20]:5060")
    sent = w.receive(text, alice_flow)
    assert only(sent, lambda s: s.is_response()).remote == alice6
    out = only(sent, lambda s: s.is_request("INVITE"))
    assert out.remote == bob6
    assert out.message.headers.values("record-route") == ["<sip:[2001:db8::1]:5060;lr>"]
    assert out.message.top_via.host == "[2001:db8::1]"
    ok = only(w.receive(answer(out.message, 200, contact="<sip:bob@[2001:db8::10]:5062>"), bob_flow)).message
    bye = in_dialog("BYE", ok, cseq=2, branch="z9hG4bKv6bye").replace("192.0.2.20:5060", "[2001:db8::20]:5060")
    fwd_bye = only(w.receive(bye, alice_flow))
    assert fwd_bye.remote == bob6 and fwd_bye.message.routes == []


def test_locally_generated_branch_responses_carry_a_to_tag_rfc3261_8_2_6_2_16_9(world: World) -> None:
    """A 408 for a branch that timed out (or a 500 for one that could not be sent) is generated by
    the proxy: like any final response it gets a To tag (§8.2.6.2, §16.9), so the caller can ACK it."""
    call_to_bob(world)
    sent = world.run_for(32.2)
    timeout = only(sent, lambda s: s.is_response())
    assert timeout.is_response(408) and timeout.message.to_tag

    w = World()
    w.register()
    w.sender.fail_to[BOB] = SendError("Connection Refused", 503)
    final = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_response() and s.message.status >= 200)
    assert final.message.status == 500 and final.message.to_tag

    w = World(module(lambda msg: setattr(msg, "ruri", "tel:+15551234") or msg.t_relay()))
    final = only(w.receive(invite(), ALICE_FLOW), lambda s: s.is_response() and s.message.status >= 200)
    assert final.message.status == 416 and final.message.to_tag  # §16.6 step 7: no route to tel:
