"""Phones behind NAT over UDP, on the socket-less node of ``test_proxy_node`` with the shipped default
route and no NAT setting: nathelper's ``nat_uac_test`` marks them, ``save()`` keeps their source
address, and the UDP flow token in our Record-Route (RFC 5626 §5.3) brings every in-dialog request
to the address the phone really sends from, in both directions.

Cast: the node on UDP 127.0.0.1:5060; Alice (FreeSWITCH's role) on UDP 192.0.2.20:5060, not behind
NAT; Carol and Dave behind NAT: they write their private address (10.0.0.x) in Via and Contact and
send from a public one (198.51.100.x). Nothing is sent anywhere: the sender records.
"""

from __future__ import annotations

import pytest
from support.proxy import ALICE, ALICE_FLOW, LOCAL_UDP, Sent, World, answer, only, sip, wire

from edgeproxy.proxy.flowtoken import FlowTokens
from edgeproxy.proxy.nat import NatFlagError, fix_nated_contact, is_private, nat_uac_test, parse_nat_flags
from edgeproxy.sip import Request, Response
from edgeproxy.sip.endpoint import Endpoint, Flow

CAROL_PUBLIC = Endpoint("UDP", "198.51.100.7", 40001)
DAVE_PUBLIC = Endpoint("UDP", "198.51.100.8", 40002)
CAROL_FLOW = Flow(LOCAL_UDP, CAROL_PUBLIC)
DAVE_FLOW = Flow(LOCAL_UDP, DAVE_PUBLIC)
PRIVATE = {"carol": "10.0.0.5:5060", "dave": "10.0.0.6:5060", "alice": "192.0.2.20:5060"}
FLOWS = {"carol": CAROL_FLOW, "dave": DAVE_FLOW, "alice": ALICE_FLOW}


def request(method: str, frm: str, to: str, *, uri: str | None = None, call_id: str = "nat-1", cseq: int = 1,
            route: list[str] | None = None, contact: str | None = None, to_tag: str | None = None,
            from_tag: str = "f1", branch: str = "z9hG4bKn1", body: str = "") -> str:
    """A request as ``frm`` writes it: Via (with rport) and Contact name its own (private) address."""
    return sip(
        f"{method} {uri or f'sip:{to}@example.com'} SIP/2.0",
        f"Via: SIP/2.0/UDP {PRIVATE[frm]};branch={branch};rport",
        "Max-Forwards: 70",
        *([f"Route: {', '.join(route)}"] if route else []),
        f"From: <sip:{frm}@example.com>;tag={from_tag}",
        f"To: <sip:{to}@example.com>{f';tag={to_tag}' if to_tag else ''}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{frm}@{contact or PRIVATE[frm]}>",
        *(["Content-Type: application/sdp"] if body else []),
        body=body,
    )


def register(world: World, user: str) -> Response:
    sent = world.receive(request("REGISTER", user, user, uri="sip:example.com", call_id=f"reg-{user}"), FLOWS[user])
    ok = only(sent).message
    assert isinstance(ok, Response) and ok.status == 200, ok
    return ok


def relayed(sent: list[Sent], method: str) -> Sent:
    return only(sent, lambda s: s.is_request(method))


def in_dialog(world: World, method: str, frm: str, to: str, dialog: Request, *, caller: bool, cseq: int,
              target: str, branch: str) -> list[Sent]:
    """``frm`` sends ``method`` in the dialog the INVITE/SUBSCRIBE ``dialog`` (as the callee got it)
    set up: the caller's route set is the Record-Route reversed, the callee's in order (§12.1)."""
    rr = dialog.headers.values("record-route")
    route = list(reversed(rr)) if caller else rr
    return world.receive(request(method, frm, to, uri=target, call_id=dialog.call_id, cseq=cseq, route=route,
                                 to_tag="t2" if caller else "f1", from_tag="f1" if caller else "t2",
                                 branch=branch), FLOWS[frm])


def call(world: World, caller: str, callee: str, *, answer_contact: str | None = None) -> Request:
    """``caller`` INVITEs ``callee`` (registered) and the callee answers 200 (with another Contact
    than it registered when ``answer_contact`` says so); the INVITE as the callee got it."""
    sent = world.receive(request("INVITE", caller, callee, call_id=f"{caller}-{callee}"), FLOWS[caller])
    out = relayed(sent, "INVITE")
    assert out.remote == FLOWS[callee].remote  # the NAT address, never the private Contact
    fwd = out.message
    assert isinstance(fwd, Request)
    ok = answer(fwd, 200, to_tag="t2", contact=f"<sip:{callee}@{answer_contact or PRIVATE[callee]}>")
    back = world.receive(ok, FLOWS[callee])
    assert only(back, lambda s: s.is_response(200)).remote == FLOWS[caller].remote
    return fwd


# -- nat_uac_test, fix_nated_contact ------------------------------------------------------------------

def parsed(text: str) -> Request:
    message = wire(text)
    assert isinstance(message, Request)
    return message


def test_nat_uac_test_flags_one_by_one() -> None:
    natted = parsed(request("INVITE", "carol", "alice", body="v=0\r\nc=IN IP4 10.0.0.5\r\nm=audio 4000 RTP/AVP 0\r\n"))
    plain = parsed(request("INVITE", "alice", "bob"))
    for name, bit in (("private-contact", 1), ("diff-ip-src-via", 2), ("private-via", 4), ("private-sdp", 8),
                      ("diff-port-src-via", 16), ("diff-ip-src-contact", 32), ("diff-port-src-contact", 64)):
        assert nat_uac_test(natted, CAROL_FLOW, name), name
        assert nat_uac_test(natted, CAROL_FLOW, bit), bit
        assert not nat_uac_test(plain, ALICE_FLOW, name), name
    assert parse_nat_flags("19") == 19 == parse_nat_flags("private-contact, diff-ip-src-via,diff-port-src-via")
    assert not nat_uac_test(natted, CAROL_FLOW, 0)
    with pytest.raises(NatFlagError):
        parse_nat_flags("private-contacts")
    # a source port other than the Via's (5060 when it has none) alone is enough for 16
    moved = Flow(LOCAL_UDP, Endpoint("UDP", "192.0.2.20", 5070))
    assert nat_uac_test(plain, moved, "diff-port-src-via") and not nat_uac_test(plain, moved, "diff-ip-src-via")


def test_private_is_rfc1918_and_shared_space_not_loopback() -> None:
    for host in ("10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1", "100.127.255.254"):
        assert is_private(host), host
    for host in ("127.0.0.1", "127.0.0.99", "172.32.0.1", "192.0.2.10", "100.128.0.1", "::1", "fd00::1", "example.com"):
        assert not is_private(host), host
    assert is_private("192.0.0.5", cgn=True) and not is_private("192.0.0.5")


def test_fix_nated_contact_names_the_source_and_keeps_the_rest() -> None:
    req = parsed(request("INVITE", "carol", "alice", contact="10.0.0.5:5060;transport=udp;maddr=10.0.0.1"))
    assert fix_nated_contact(req, CAROL_FLOW)
    assert req.headers.values("contact") == ["<sip:carol@198.51.100.7:40001;transport=udp>"]
    star = parsed(sip("REGISTER sip:example.com SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKs",
                      "From: <sip:carol@example.com>;tag=1", "To: <sip:carol@example.com>", "Call-ID: s",
                      "CSeq: 1 REGISTER", "Contact: *", "Expires: 0"))
    assert not fix_nated_contact(star, CAROL_FLOW)


def test_fix_nated_contact_verb_works_once_per_request() -> None:
    from support.proxy import module

    seen: list[tuple[bool, bool, str | None]] = []

    def route(msg) -> None:
        first, second = msg.fix_nated_contact(), msg.fix_nated_contact()
        seen.append((first, second, msg.header("Contact")))
        msg.sl_send_reply(200)

    world = World(module(route))
    world.receive(request("MESSAGE", "carol", "alice"), CAROL_FLOW)
    assert seen == [(True, False, "<sip:carol@198.51.100.7:40001>")]


# -- the default route, no NAT setting ------------------------------------------------------------------

@pytest.fixture
def world() -> World:
    return World()


def test_a_natted_register_is_flagged_and_answered_with_received(world: World) -> None:
    ok = register(world, "carol")
    assert 'received="sip:198.51.100.7:40001"' in (ok.headers.get("contact") or "")
    [binding] = world.location.get("carol")
    assert binding.nat and binding.received == CAROL_PUBLIC
    register(world, "alice")
    assert not world.location.get("alice")[0].nat  # its Via and Contact are where it sends from


def test_freeswitch_calls_a_natted_phone_every_request_reaches_it(world: World) -> None:
    register(world, "carol")
    # the phone answers with another private Contact than it registered: nothing depends on it
    fwd = call(world, "alice", "carol", answer_contact="10.0.0.9:5070")
    [rr] = fwd.headers.values("record-route")
    assert rr.startswith("<sip:") and "@127.0.0.1:5060;lr;ob>" in rr  # one entry, Carol's flow token
    target = "sip:carol@10.0.0.9:5070"
    for n, method in enumerate(("ACK", "INVITE", "UPDATE", "INFO", "OPTIONS", "BYE"), start=2):
        sent = in_dialog(world, method, "alice", "carol", fwd, caller=True, cseq=n, target=target,
                         branch=f"z9hG4bKa{n}")
        out = relayed(sent, method)
        assert out.remote == CAROL_PUBLIC and out.destination.flow is not None
        assert out.destination.flow.local == LOCAL_UDP  # from the listener the phone sends to
        assert out.message.uri_text == target  # its Contact is left alone
        assert not out.message.headers.values("route")
    # and the phone's own in-dialog requests go to FreeSWITCH's Contact
    for n, method in enumerate(("INVITE", "BYE"), start=10):
        sent = in_dialog(world, method, "carol", "alice", fwd, caller=False, cseq=n,
                         target=f"sip:alice@{PRIVATE['alice']}", branch=f"z9hG4bKc{n}")
        assert relayed(sent, method).remote == ALICE


def test_a_natted_phone_calls_freeswitch_and_its_bye_reaches_the_phone(world: World) -> None:
    register(world, "alice")
    fwd = call(world, "carol", "alice")
    [rr] = fwd.headers.values("record-route")
    assert ";ob>" in rr  # msg.nat on the INVITE: Carol's flow is named
    sent = in_dialog(world, "BYE", "alice", "carol", fwd, caller=False, cseq=5, target=f"sip:carol@{PRIVATE['carol']}",
                     branch="z9hG4bKbye")
    assert relayed(sent, "BYE").remote == CAROL_PUBLIC
    sent = in_dialog(world, "INVITE", "carol", "alice", fwd, caller=True, cseq=2,
                     target=f"sip:alice@{PRIVATE['alice']}", branch="z9hG4bKre")
    assert relayed(sent, "INVITE").remote == ALICE


def test_natted_phone_to_natted_phone_double_record_route_both_ways(world: World) -> None:
    register(world, "dave")
    fwd = call(world, "carol", "dave")
    assert len(fwd.headers.values("record-route")) == 2  # one flow token per side, same listener
    sent = in_dialog(world, "BYE", "carol", "dave", fwd, caller=True, cseq=2, target=f"sip:dave@{PRIVATE['dave']}",
                     branch="z9hG4bKcb")
    assert relayed(sent, "BYE").remote == DAVE_PUBLIC
    sent = in_dialog(world, "INVITE", "dave", "carol", fwd, caller=False, cseq=3,
                     target=f"sip:carol@{PRIVATE['carol']}", branch="z9hG4bKdr")
    assert relayed(sent, "INVITE").remote == CAROL_PUBLIC


def test_subscribe_is_record_routed_and_notify_reaches_the_natted_subscriber(world: World) -> None:
    register(world, "alice")
    sent = world.receive(request("SUBSCRIBE", "carol", "alice", call_id="sub-1"), CAROL_FLOW)
    fwd = relayed(sent, "SUBSCRIBE").message
    assert isinstance(fwd, Request) and len(fwd.headers.values("record-route")) == 1
    for n in (1, 2):
        sent = in_dialog(world, "NOTIFY", "alice", "carol", fwd, caller=False, cseq=n,
                         target=f"sip:carol@{PRIVATE['carol']}", branch=f"z9hG4bKnot{n}")
        assert relayed(sent, "NOTIFY").remote == CAROL_PUBLIC


def test_refer_is_record_routed(world: World) -> None:
    register(world, "alice")
    sent = world.receive(request("REFER", "carol", "alice", call_id="ref-1"), CAROL_FLOW)
    fwd = relayed(sent, "REFER").message
    assert isinstance(fwd, Request) and ";ob>" in fwd.headers.values("record-route")[0]


def test_a_tampered_or_foreign_udp_token_is_403(world: World) -> None:
    register(world, "carol")
    fwd = call(world, "alice", "carol")
    [rr] = fwd.headers.values("record-route")
    token = rr[len("<sip:"):rr.index("@")]
    altered = token[:4] + ("A" if token[4] != "A" else "B") + token[5:]
    foreign = FlowTokens(b"another node's key").encode(CAROL_FLOW)
    moved = rr.replace("127.0.0.1:5060", "127.0.0.1:5070")  # a token is bound to its listener
    world.node.add_local_endpoint(Endpoint("UDP", "127.0.0.1", 5070))
    for n, route in enumerate((rr.replace(token, altered), rr.replace(token, foreign or ""), moved)):
        sent = world.receive(request("BYE", "alice", "carol", uri="sip:carol@10.0.0.5:5060", call_id=fwd.call_id,
                                     cseq=7 + n, route=[route], to_tag="t2", branch=f"z9hG4bKt{n}"), ALICE_FLOW)
        out = only(sent)
        assert out.is_response(403) and out.remote == ALICE, out


def test_udp_tokens_survive_a_restart_with_the_same_key_connection_tokens_do_not() -> None:
    key = b"k" * 32
    before = World(flow_tokens=FlowTokens(key))
    register(before, "carol")
    fwd = call(before, "alice", "carol")
    after = World(flow_tokens=FlowTokens(key))  # a new process: no registrations, no transactions
    sent = in_dialog(after, "BYE", "alice", "carol", fwd, caller=True, cseq=9, target=f"sip:carol@{PRIVATE['carol']}",
                     branch="z9hG4bKafter")
    assert relayed(sent, "BYE").remote == CAROL_PUBLIC
    tcp = Flow(Endpoint("TCP", "127.0.0.1", 5060), Endpoint("TCP", "198.51.100.7", 40003), 7)
    token = FlowTokens(key).encode(tcp)
    with pytest.raises(ValueError):  # connection ids are numbered again by every process
        FlowTokens(key).decode(token, Endpoint("TCP", "127.0.0.1", 5060))


# -- the key that survives a restart ------------------------------------------------------------------

def test_the_key_is_made_once_in_the_state_dir_and_kept(tmp_path) -> None:
    from edgeproxy.proxy.flowtoken import KEY_FILE, load_key

    state = tmp_path / "state"
    key, why = load_key("", state)
    assert why is None and key is not None and len(key) == 32
    path = state / KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key("", state) == (key, None)  # the next start reads the same key
    configured, _ = load_key("s3cret", state)
    assert configured not in (None, key) and load_key("s3cret", None)[0] == configured
    assert load_key("", None) == (None, None)  # no configuration file: a key of this process
    path.write_text("not hex\n")
    broken, why = load_key("", state)
    assert broken is None and why is not None and "hex key" in why


def test_build_node_uses_the_state_dir_key(tmp_path) -> None:
    from twisted.internet.task import Clock

    from edgeproxy.config import load_config
    from edgeproxy.service import build_node

    (tmp_path / "edge.toml").write_text('[node]\nstate_dir = "st"\n')
    config = load_config(str(tmp_path / "edge.toml"))
    assert config.node.state_dir == str(tmp_path / "st")
    one, two = (build_node(config, Clock()).node.forwarder.flow_tokens for _ in range(2))
    token = one.encode(CAROL_FLOW)
    assert token is not None and two.decode(token, LOCAL_UDP) == CAROL_FLOW
    assert (tmp_path / "st" / "flow-token.key").exists()


def test_another_nodes_token_is_relayed_to_that_node(world: World) -> None:
    """Issue 11 item 6: a Record-Route entry of another node (its UDP flow token, its address) is not
    ours: the in-dialog request is relayed to that node, which owns the phone's NAT binding."""
    other = FlowTokens(b"node 2's key")
    token = other.encode(Flow(Endpoint("UDP", "127.0.0.12", 5060), CAROL_PUBLIC))
    route = f"<sip:{token}@127.0.0.12:5060;lr;ob>"
    sent = world.receive(request("BYE", "alice", "carol", uri="sip:carol@10.0.0.5:5060", call_id="x-node",
                                 route=[route], to_tag="t2", branch="z9hG4bKxn"), ALICE_FLOW)
    out = relayed(sent, "BYE")
    assert out.remote == Endpoint("UDP", "127.0.0.12", 5060)
    assert out.message.headers.values("route") == [route]  # node 2 pops it and finds Carol


def test_a_tcp_phone_sending_from_an_ephemeral_port_is_not_flagged(world: World) -> None:
    """Over a connection the source port is ephemeral whatever the Via says: the shipped routes
    leave the port test out there, so the phone is reached at its Contact once its connection closed."""
    from support.proxy import BOB_TCP_FLOW

    world.register(contacts=("<sip:bob@192.0.2.10:5062;transport=tcp>",), flow=BOB_TCP_FLOW)  # Via port 5062
    [binding] = world.location.get("bob")
    assert not binding.nat and binding.flow == BOB_TCP_FLOW


def test_the_state_directory_is_systemds_when_not_configured(tmp_path) -> None:
    """packaging/edgeproxy.service runs with ProtectSystem=strict (/etc read-only) and
    StateDirectory=edgeproxy: systemd's $STATE_DIRECTORY is where the key goes, unless
    node.state_dir says otherwise; without either, the configuration file's directory."""
    from edgeproxy.config import load_config
    from edgeproxy.service import state_directory

    (tmp_path / "plain.toml").write_text("")
    (tmp_path / "set.toml").write_text('[node]\nstate_dir = "st"\n')
    plain, configured = load_config(str(tmp_path / "plain.toml")), load_config(str(tmp_path / "set.toml"))
    systemd = {"STATE_DIRECTORY": "/var/lib/edgeproxy:/var/lib/other"}
    assert state_directory(plain, systemd) == "/var/lib/edgeproxy"
    assert state_directory(configured, systemd) == str(tmp_path / "st")
    assert state_directory(plain, {}) == str(tmp_path)
