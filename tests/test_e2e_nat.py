"""Phones behind NAT, end to end: ``twistd edgeproxy`` with the shipped default route and no NAT
setting at all, SIPp on both sides.

A "NATed" phone is a SIPp agent bound on 127.0.0.31 (a second one on 127.0.0.32) -- its public NAT
address -- whose Via, Contact and SDP name 127.0.0.99:5099, standing for its private address:
nothing listens there, and a request sent there is lost. (Loopback, not a private range: no test
sends a packet to a private-range address; the node detects the NAT because the Via is not where
the request came from, nathelper's ``diff-ip-src-via``.) FreeSWITCH is a SIPp agent on 127.0.0.21.
Every request of a dialog must reach the phone's real socket: SIPp's scenarios fail the call when
one is missing (every wait bounded by ``-timeout``).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
from support.phones import natted
from support.sipp_harness import EdgeproxyNode, Sipp, SippProcess, edgeproxy_node, free_port, require_sipp

FREESWITCH = "127.0.0.21"
PHONE = "127.0.0.31"
PHONE2 = "127.0.0.32"
NODE = "127.0.0.1"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    require_sipp()
    with edgeproxy_node(tmp_path_factory.mktemp("nat") / "node") as n:  # no NAT setting: the default
        yield n


def register(tmp_path: Path, node: EdgeproxyNode, user: str, *, transport: str = "udp", ip: str = PHONE,
             nat: bool = True, hangup: str = "caller", answer_port: int = 5099) -> SippProcess:
    """A registered UA that answers one call with ``call_uas.xml`` (behind NAT unless ``nat`` is
    False); its answers carry Contact 127.0.0.99:``answer_port``."""
    keys: dict[str, object] = {"hangup": hangup}
    if nat:
        keys.update(natted(transport), answer_host="127.0.0.99", answer_port=answer_port)
    else:
        keys["contact_params"] = f";transport={transport}"
    sipp = Sipp(tmp_path / f"{user}-{transport}", transport=transport, local_ip=ip)
    phone = sipp.start("nat_register", node.address, user=user, ooc="call_uas", duration_ms=60_000, timeout=70,
                       keys={"domain": NODE, **keys})
    phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
    return phone


def call(tmp_path: Path, node: EdgeproxyNode, callee: str, *, ip: str = FREESWITCH, nat: bool = False,
         hangup: str = "caller", pause_ms: int = 200, name: str = "caller"):
    keys: dict[str, object] = {"domain": NODE, "hangup": hangup}
    if nat:
        keys.update(natted("udp"))
    return Sipp(tmp_path / name, transport="udp", local_ip=ip).run(
        "call_uac", node.address, user=callee, duration_ms=pause_ms if hangup == "caller" else 0, timeout=20,
        keys=keys)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("hangup", ["caller", "callee"])
def test_freeswitch_calls_a_natted_phone_every_request_reaches_it(node: EdgeproxyNode, tmp_path: Path,
                                                                 transport: str, hangup: str) -> None:
    user = f"carol-{transport}-{hangup}"
    # it answers with another private Contact than it registered (5098): nothing depends on it
    phone = register(tmp_path, node, user, transport=transport, hangup=hangup, answer_port=5098)
    try:
        result = call(tmp_path, node, user, hangup=hangup)
        phone_result = phone.stop()
    finally:
        phone.stop()
    result.assert_ok()
    got = [m.first_line.split(" ")[0] for m in phone_result.received() if not m.first_line.startswith("SIP/")]
    # INVITE, ACK, FreeSWITCH's re-INVITE and its ACK, then the BYE when FreeSWITCH hangs up
    expected = ["INVITE", "ACK", "INVITE", "ACK"] + (["BYE"] if hangup == "caller" else [])
    assert got == expected, phone_result.describe()
    statuses = [m.status for m in phone_result.received() if m.first_line.startswith("SIP/")]
    assert statuses[-1] == 200 and 200 in statuses[:-1]  # its own re-INVITE and BYE were answered
    assert result.successful_calls == 1


def test_a_natted_phone_calls_freeswitch_and_freeswitchs_bye_reaches_it(node: EdgeproxyNode,
                                                                       tmp_path: Path) -> None:
    fs = register(tmp_path, node, "fs-1", ip=FREESWITCH, nat=False, hangup="callee")
    try:
        result = call(tmp_path, node, "fs-1", ip=PHONE, nat=True, hangup="callee")
    finally:
        fs_result = fs.stop()
    result.assert_ok()
    got = [m.first_line.split(" ")[0] for m in result.received() if not m.first_line.startswith("SIP/")]
    assert got == ["INVITE", "ACK", "BYE"], result.describe()  # FreeSWITCH's re-INVITE, its ACK, its BYE
    assert fs_result.failed_calls == 0, fs_result.describe()


def test_natted_phone_to_natted_phone(node: EdgeproxyNode, tmp_path: Path) -> None:
    dave = register(tmp_path, node, "dave", ip=PHONE2, hangup="callee")
    try:
        result = call(tmp_path, node, "dave", ip=PHONE, nat=True, hangup="callee")
    finally:
        dave_result = dave.stop()
    result.assert_ok()
    got = [m.first_line.split(" ")[0] for m in dave_result.received() if not m.first_line.startswith("SIP/")]
    assert got == ["INVITE", "ACK", "INVITE", "ACK"], dave_result.describe()
    assert dave_result.failed_calls == 0, dave_result.describe()


def test_a_closed_tcp_flow_does_not_strand_a_udp_contact(node: EdgeproxyNode, tmp_path: Path) -> None:
    """The issue's reproducer: a phone REGISTERs over TCP a UDP Contact (no outbound parameters) and
    closes the connection, as SIPp does after ``-m 1``; a call to it half a second later must reach
    the Contact over UDP (only outbound or WebSocket bindings are flow-only)."""
    contact_port = free_port()
    uas = Sipp(tmp_path / "uas", transport="udp").start("uas_answer", port=contact_port, user="bob5", calls=3,
                                                          timeout=40)
    try:
        for attempt in range(3):
            Sipp(tmp_path / f"reg{attempt}", transport="tcp").run(
                "nat_register", node.address, user="bob5", duration_ms=0, timeout=10,
                keys={"domain": NODE, "contact_port": contact_port, "contact_params": ""}).assert_ok()
            time.sleep(0.5)
            result = Sipp(tmp_path / f"call{attempt}", transport="udp", local_ip=FREESWITCH).run(
                "uac_call", node.address, user="bob5", duration_ms=100, timeout=15, keys={"domain": NODE})
            result.assert_ok()
    finally:
        uas_result = uas.stop()
    assert uas_result.successful_calls == 3, uas_result.describe()


def test_a_call_set_up_before_a_restart_keeps_reaching_the_phone(tmp_path: Path) -> None:
    """The token key survives a restart (kept in the node's state directory, here the config
    file's): FreeSWITCH's BYE of a call set up before the node restarted reaches the NATed phone."""
    require_sipp()
    workdir, port = tmp_path / "node", free_port()
    with edgeproxy_node(workdir, port=port) as before:
        phone = register(tmp_path, before, "erin")
        fs = Sipp(tmp_path / "fs", transport="udp", local_ip=FREESWITCH).start(
            "call_uac", before.address, user="erin", duration_ms=5_000, timeout=30,
            keys={"domain": NODE, "hangup": "caller"})
        fs.wait_for_message(r"(?s)^ACK .*From: [^\r\n]*tag=uas", timeout=15)  # the phone's re-INVITE done
    assert (workdir / "flow-token.key").exists()
    try:
        with edgeproxy_node(workdir, port=port) as after:
            result = fs.wait(30)
            assert "forged flow token" not in after.log() and "gone with a restart" not in after.log()
    finally:
        phone_result = phone.stop()
    result.assert_ok()
    got = [m.first_line.split(" ")[0] for m in phone_result.received() if not m.first_line.startswith("SIP/")]
    assert got[-1] == "BYE", phone_result.describe()


def test_a_tcp_flow_gone_with_a_restart_is_430_flow_failed(tmp_path: Path) -> None:
    """RFC 5626 §5.3 / §11.5: a phone behind NAT on TCP with an outbound (``ob``) Contact is in a
    call with FreeSWITCH when the node restarts. Its connection died with the old process, so
    FreeSWITCH's BYE, whose Route names that connection with a genuine token, gets 430 Flow Failed
    -- not 403, which stays for forged tokens -- and the node logs no forged token."""
    require_sipp()
    workdir, port = tmp_path / "node", free_port()
    keys = {**natted("tcp"), "contact_params": ";transport=tcp;ob", "answer_host": "127.0.0.99",
            "answer_port": 5099, "hangup": "caller"}
    with edgeproxy_node(workdir, port=port) as before:
        phone = Sipp(tmp_path / "phone", transport="tcp", local_ip=PHONE).start(
            "nat_register", before.address, user="frank", ooc="call_uas", duration_ms=60_000, timeout=70,
            keys={"domain": NODE, **keys})
        phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
        fs = Sipp(tmp_path / "fs", transport="udp", local_ip=FREESWITCH).start(
            "call_uac", before.address, user="frank", duration_ms=5_000, timeout=30,
            keys={"domain": NODE, "hangup": "caller"})
        fs.wait_for_message(r"(?s)^ACK .*From: [^\r\n]*tag=uas", timeout=15)  # the phone's re-INVITE done
    try:
        with edgeproxy_node(workdir, port=port) as after:
            result = fs.wait(30)
            log = after.log()
    finally:
        phone.stop()
    bye_answers = [m.status for m in result.received() if m.first_line.startswith("SIP/") and
                   any("BYE" in v for v in m.header("CSeq"))]
    assert bye_answers and set(bye_answers) == {430}, result.describe()
    assert "forged" not in log and "a connection gone with a restart" in log


def test_a_natted_phone_subscribes_and_every_notify_reaches_it(node: EdgeproxyNode, tmp_path: Path) -> None:
    notifier = Sipp(tmp_path / "notifier", transport="udp", local_ip=FREESWITCH).start(
        "nat_register", node.address, user="presence-1", ooc="notify_uas", duration_ms=60_000, timeout=70,
        keys={"domain": NODE})
    try:
        notifier.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
        result = Sipp(tmp_path / "watcher", transport="udp", local_ip=PHONE).run(
            "subscribe_uac", node.address, user="presence-1", timeout=20, keys={"domain": NODE, **natted("udp")})
    finally:
        notifier_result = notifier.stop()
    result.assert_ok()
    got = [m.first_line.split(" ")[0] for m in result.received() if not m.first_line.startswith("SIP/")]
    assert got == ["NOTIFY", "NOTIFY", "NOTIFY"], result.describe()
    assert notifier_result.failed_calls == 0, notifier_result.describe()


def test_a_forged_or_tampered_flow_token_is_403(node: EdgeproxyNode, tmp_path: Path) -> None:
    """A token is checked before anything is relayed: one made with another key, or one whose bytes
    were changed, gets 403 on the wire (RFC 5626 §5.3), and nothing reaches the address it names."""
    from edgeproxy.proxy.flowtoken import FlowTokens
    from edgeproxy.sip.endpoint import Endpoint, Flow

    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind((PHONE2, 0))
    victim.settimeout(0.5)
    local = Endpoint("UDP", NODE, node.port)
    forged = FlowTokens(b"not the node's key").encode(Flow(local, Endpoint("UDP", PHONE2, victim.getsockname()[1])))
    assert forged is not None
    tampered = forged[:3] + ("A" if forged[3] != "A" else "B") + forged[4:]
    with victim, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fs:
        fs.bind((FREESWITCH, 0))
        fs.settimeout(5)
        for n, token in enumerate((forged, tampered)):
            bye = (f"BYE sip:carol@127.0.0.99:5099 SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {FREESWITCH}:{fs.getsockname()[1]};branch=z9hG4bKforged{n};rport\r\n"
                   f"Route: <sip:{token}@{NODE}:{node.port};lr;ob>\r\n"
                   "Max-Forwards: 70\r\nFrom: <sip:fs@127.0.0.1>;tag=f1\r\nTo: <sip:carol@127.0.0.1>;tag=c1\r\n"
                   f"Call-ID: forged-{n}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
            fs.sendto(bye.encode(), (NODE, node.port))
            answer = fs.recv(65535).decode()
            assert answer.startswith("SIP/2.0 403 "), answer
        with pytest.raises(socket.timeout):
            victim.recv(65535)
