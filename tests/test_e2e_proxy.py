"""End to end over real sockets: ``twistd edgeproxy`` as a subprocess, SIPp as the independent peer.

Phones are SIPp processes that REGISTER to the node and then answer (or reject, or ignore) the calls
it sends to their Contact from the same socket (``-oocsf``); callers are SIPp UACs that follow the
Record-Route set, so ACK and BYE traverse the proxy. Registrar corner cases and hostile input are
driven from raw sockets, since SIPp cannot send a malformed message on purpose.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.phones import register_phone
from support.raw_sip import RawUA, register_text, status
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, edgeproxy_node, free_port, require_sipp


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    require_sipp()
    with edgeproxy_node(tmp_path_factory.mktemp("node"), config={"registrar": {"min_expires": 30}}) as n:
        yield n


def sipp_for(tmp_path: Path, transport: str) -> Sipp:
    return Sipp(tmp_path / transport, transport)


def methods(messages: list, direction: str) -> list[str]:
    return [m.first_line.split(" ")[0] for m in messages if m.direction == direction]


# -- raw-socket helpers ---------------------------------------------------------------------------

def udp_exchange(node: EdgeproxyNode, data: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout)
        s.sendto(data, (node.host, node.port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def contacts(reply: str) -> list[str]:
    return re.findall(r"^(?:Contact|m): *(.*?)\r$", reply, re.M | re.I)


@pytest.fixture
def ua(node: EdgeproxyNode) -> Iterator[RawUA]:
    u = RawUA(node)
    yield u
    u.close()


# -- REGISTER (RFC 3261 §10.3) ----------------------------------------------------------------------

def test_register_200_lists_every_binding_with_expires(ua: RawUA) -> None:
    user = f"multi{ua.port}"
    r1 = ua.request(register_text(user, ua.port, call_id=f"a{ua.port}", cseq=1,
                                  contact=f"<sip:{user}@{LOOPBACK}:5001>", expires=300))
    r2 = ua.request(register_text(user, ua.port, call_id=f"b{ua.port}", cseq=1,
                                  contact=f"<sip:{user}@{LOOPBACK}:5002>;expires=120", expires=None))
    assert status(r1) == 200 and status(r2) == 200
    found = contacts(r2)
    assert len(found) == 2
    assert any(f":5001>;expires=300" in c for c in found) and any(":5002>;expires=120" in c for c in found)
    query = ua.request(register_text(user, ua.port, call_id=f"c{ua.port}", cseq=1, contact=None, expires=None))
    assert status(query) == 200 and len(contacts(query)) == 2


def test_register_refresh_and_unregister_with_expires_zero_and_star(ua: RawUA) -> None:
    user = f"refresh{ua.port}"
    cid = f"r{ua.port}"
    contact = f"<sip:{user}@{LOOPBACK}:5003>"
    assert status(ua.request(register_text(user, ua.port, call_id=cid, cseq=1, contact=contact, expires=300))) == 200
    refreshed = ua.request(register_text(user, ua.port, call_id=cid, cseq=2, contact=contact, expires=200))
    assert [c.endswith("expires=200") for c in contacts(refreshed)] == [True]
    gone = ua.request(register_text(user, ua.port, call_id=cid, cseq=3, contact=contact, expires=0))
    assert status(gone) == 200 and contacts(gone) == []
    ua.request(register_text(user, ua.port, call_id=cid, cseq=4, contact=contact, expires=300))
    star = ua.request(register_text(user, ua.port, call_id=cid, cseq=5, contact="*", expires=0))
    assert status(star) == 200 and contacts(star) == []
    bad_star = ua.request(register_text(user, ua.port, call_id=cid, cseq=6, contact="*", expires=60))
    assert status(bad_star) == 400


def test_register_too_brief_expires_is_clamped_to_min_expires(ua: RawUA) -> None:
    user = f"brief{ua.port}"
    reply = ua.request(register_text(user, ua.port, call_id=f"m{ua.port}", cseq=1,
                                     contact=f"<sip:{user}@{LOOPBACK}:5004>", expires=5))
    assert status(reply) == 200 and contacts(reply)[0].endswith("expires=30")


def test_register_out_of_order_cseq_is_400(ua: RawUA) -> None:
    user = f"cseq{ua.port}"
    cid = f"o{ua.port}"
    contact = f"<sip:{user}@{LOOPBACK}:5005>"
    assert status(ua.request(register_text(user, ua.port, call_id=cid, cseq=10, contact=contact))) == 200
    assert status(ua.request(register_text(user, ua.port, call_id=cid, cseq=9, contact=contact))) == 400


def test_register_423_when_configured_to_reject(tmp_path: Path) -> None:
    require_sipp()
    with edgeproxy_node(tmp_path, transports=("udp",),
                        config={"registrar": {"min_expires": 60, "min_expires_mode": "reject"}}) as n:
        u = RawUA(n)
        try:
            reply = u.request(register_text("short", u.port, call_id="s1", cseq=1,
                                            contact=f"<sip:short@{LOOPBACK}:5006>", expires=10))
        finally:
            u.close()
    assert status(reply) == 423 and re.search(r"^Min-Expires: 60\r$", reply, re.M)


def test_bindings_expire_after_their_time(tmp_path: Path) -> None:
    require_sipp()
    with edgeproxy_node(tmp_path, transports=("udp",), config={"registrar": {"min_expires": 1}}) as n:
        u = RawUA(n)
        try:
            user = "ephemeral"
            reply = u.request(register_text(user, u.port, call_id="e1", cseq=1,
                                            contact=f"<sip:{user}@{LOOPBACK}:5007>", expires=1))
            assert status(reply) == 200 and len(contacts(reply)) == 1
            time.sleep(2.2)
            query = u.request(register_text(user, u.port, call_id="e2", cseq=1, contact=None, expires=None))
        finally:
            u.close()
    assert status(query) == 200 and contacts(query) == []


# -- calls (RFC 3261 §16) ---------------------------------------------------------------------------

@pytest.mark.parametrize(("caller_t", "callee_t"), [("udp", "udp"), ("tcp", "tcp"), ("udp", "tcp"), ("tcp", "udp")])
def test_call_through_the_proxy_with_record_route(node: EdgeproxyNode, tmp_path: Path, caller_t: str, callee_t: str) -> None:
    user = f"bob{caller_t}{callee_t}"
    callee = register_phone(sipp_for(tmp_path, callee_t), node.address, user, "uas_answer")
    try:
        caller = sipp_for(tmp_path, caller_t).run("uac_call", node.address, user=user, duration_ms=100,
                                                  keys={"domain": LOOPBACK}).assert_ok()
        callee.wait_for_message(r"^BYE ", timeout=10)
    finally:
        phone = callee.stop()
    assert caller.successful_calls == 1
    assert methods(caller.messages, "sent") == ["INVITE", "ACK", "BYE"]
    received = [m.status for m in caller.received()]
    assert received[-2:] == [200, 200] and 180 in received
    # ACK and BYE carry the proxy's Record-Route as Route, so they traverse it (§16.6 step 4, §16.12)
    ack, bye = caller.sent()[1], caller.sent()[2]
    routes = ack.header("Route")
    assert routes and all(f"{LOOPBACK}:{node.port}" in r and ";lr" in r for r in routes)
    assert bye.header("Route") == routes
    if caller_t != callee_t:
        assert len(", ".join(routes).split(",")) == 2  # double Record-Route across transports
    # the callee got the INVITE from the proxy (two Vias: ours on top), then the ACK and the BYE
    got = [m for m in phone.messages if m.direction == "received"]
    names = [m.first_line.split(" ")[0] for m in got]
    assert names.count("INVITE") == 1 and "ACK" in names and "BYE" in names
    invite = next(m for m in got if m.first_line.startswith("INVITE"))
    vias = ", ".join(invite.header("Via")).split(",")
    assert len(vias) == 2 and f"{LOOPBACK}:{node.port}" in vias[0]


def test_cancel_before_answer_gives_487(node: EdgeproxyNode, tmp_path: Path) -> None:
    callee = register_phone(sipp_for(tmp_path, "udp"), node.address, "ringing", "uas_noanswer")
    try:
        caller = sipp_for(tmp_path, "udp").run("uac_cancel", node.address, user="ringing",
                                               keys={"domain": LOOPBACK}).assert_ok()
        callee.wait_for_message(r"^CANCEL ", timeout=10)
    finally:
        callee.stop()
    assert 487 in [m.status for m in caller.received()]


def test_callee_busy_486_is_propagated(node: EdgeproxyNode, tmp_path: Path) -> None:
    callee = register_phone(sipp_for(tmp_path, "udp"), node.address, "busy", "uas_reject",
                            keys={"code": 486, "reason": "Busy Here"})
    try:
        caller = sipp_for(tmp_path, "udp").run("uac_expect", node.address, user="busy",
                                               keys={"domain": LOOPBACK, "expect_code": 486})
        caller.assert_ok()
    finally:
        phone = callee.stop()
    # the hop-by-hop ACK for the 486 came from the proxy (§17.1.1.3)
    assert "ACK" in [m.first_line.split(" ")[0] for m in phone.messages if m.direction == "received"]


def test_callee_never_answers_gives_408_after_timer_c(node: EdgeproxyNode, tmp_path: Path) -> None:
    callee = register_phone(sipp_for(tmp_path, "udp"), node.address, "sleepy", "uas_noanswer")
    try:
        started = time.monotonic()
        caller = sipp_for(tmp_path, "udp").run("uac_expect", node.address, user="sleepy", timeout=30,
                                               keys={"domain": LOOPBACK, "expect_code": 408})
        elapsed = time.monotonic() - started
        caller.assert_ok()
        callee.wait_for_message(r"^CANCEL ", timeout=5)  # §16.8: the proxy CANCELs the branch
    finally:
        callee.stop()
    assert 3.5 < elapsed < 20  # timer C is 4 s in the test configuration


def test_unregistered_callee_gets_404(node: EdgeproxyNode, tmp_path: Path) -> None:
    sipp_for(tmp_path, "udp").run("uac_expect", node.address, user="nobody",
                                  keys={"domain": LOOPBACK, "expect_code": 404}).assert_ok()


def invite_text(user: str, port: int, branch: str, max_forwards: int = 70, call_id: str = "raw") -> bytes:
    sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    return (
        f"INVITE sip:{user}@{LOOPBACK} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch={branch};rport\r\n"
        f"Max-Forwards: {max_forwards}\r\nFrom: <sip:raw@{LOOPBACK}>;tag=raw1\r\nTo: <sip:{user}@{LOOPBACK}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:raw@{LOOPBACK}:{port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
    ).encode() + sdp


def test_max_forwards_zero_gets_483(node: EdgeproxyNode, ua: RawUA) -> None:
    reply = ua.request(invite_text("anyone", ua.port, "z9hG4bK-mf0", max_forwards=0, call_id=f"mf{ua.port}"))
    assert status(reply) == 483


def test_retransmitted_invite_is_absorbed(node: EdgeproxyNode, tmp_path: Path, ua: RawUA) -> None:
    callee = register_phone(sipp_for(tmp_path, "udp"), node.address, "once", "uas_answer")
    try:
        invite = invite_text("once", ua.port, "z9hG4bK-retrans1", call_id=f"rt{ua.port}")
        ua.sock.sendto(invite, (node.host, node.port))
        ua.sock.sendto(invite, (node.host, node.port))
        time.sleep(0.3)
        ua.sock.sendto(invite, (node.host, node.port))
        callee.wait_for_message(r"^INVITE ", timeout=5)
        time.sleep(1.0)
    finally:
        phone = callee.stop()
    invites = [m for m in phone.messages if m.direction == "received" and m.first_line.startswith("INVITE")]
    assert len(invites) == 1


# -- hostile input ------------------------------------------------------------------------------------

BAD_DATAGRAMS = {
    "garbage": b"\x00\xff garbage that is not SIP at all\r\n\r\n",
    "truncated": register_text("trunc", 9, call_id="t1", cseq=1, contact=f"<sip:t@{LOOPBACK}:9>")[:120],
    "wrong_content_length": register_text("cl", 9, call_id="cl1", cseq=1).replace(b"Content-Length: 0",
                                                                                  b"Content-Length: 500"),
    "missing_call_id": register_text("nocid", 9, call_id="x", cseq=1).replace(b"Call-ID: x\r\n", b""),
    "missing_from": re.sub(rb"From: [^\r]*\r\n", b"", register_text("nofrom", 9, call_id="nf", cseq=1)),
}


@pytest.mark.parametrize("name", sorted(BAD_DATAGRAMS))
def test_bad_datagram_gets_400_or_is_dropped_and_node_survives(node: EdgeproxyNode, ua: RawUA, name: str) -> None:
    data = BAD_DATAGRAMS[name].replace(b":9;", f":{ua.port};".encode())
    reply = udp_exchange(node, data, timeout=1.0)
    if name in ("wrong_content_length", "missing_call_id", "missing_from"):
        assert reply is not None and reply.startswith(b"SIP/2.0 400 "), reply
    assert node.running()
    ok = ua.request(register_text(f"alive{name}", ua.port, call_id=f"alive{name}{ua.port}", cseq=1,
                                  contact=f"<sip:alive@{LOOPBACK}:5010>"))
    assert status(ok) == 200


def test_one_megabyte_header_over_tcp_is_refused_and_connection_closed(node: EdgeproxyNode) -> None:
    with socket.create_connection((node.host, node.port), timeout=5) as s:
        head = (f"REGISTER sip:{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/TCP {LOOPBACK}:1;branch=z9hG4bK-big\r\n"
                f"From: <sip:big@{LOOPBACK}>;tag=1\r\nTo: <sip:big@{LOOPBACK}>\r\nCall-ID: big\r\n"
                f"CSeq: 1 REGISTER\r\nX-Big: ").encode()
        s.sendall(head)
        reply = b""
        try:
            for _ in range(64):
                s.sendall(b"x" * 16384)
        except OSError:
            pass  # the node closed the connection while we were still sending: what we want
        s.settimeout(3)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    assert reply.startswith(b"SIP/2.0 513 ") or reply == b""
    assert node.running()


def test_calls_still_work_after_the_abuse(node: EdgeproxyNode, tmp_path: Path) -> None:
    for name in sorted(BAD_DATAGRAMS):
        udp_exchange(node, BAD_DATAGRAMS[name], timeout=0.2)
    test_call_through_the_proxy_with_record_route(node, tmp_path, "udp", "udp")
