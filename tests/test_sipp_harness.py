"""The SIPp harness and our scenarios, proved SIPp against SIPp with no proxy in between.

Each flow runs over UDP (``-t u1``) and TCP (``-t t1``). The negative tests matter as much as the
positive ones: a scenario whose checks cannot fail would let every end-to-end test pass.
"""

from __future__ import annotations

import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support.node_harness import options_probe
from support.sipp_harness import (
    LOOPBACK,
    edgeproxy_node,
    SCENARIOS,
    Sipp,
    SippResult,
    free_port,
    parse_message_log,
    require_sipp,
    scenario_keys,
    toml_text,
)


@pytest.fixture(params=["udp", "tcp"])
def sipp(request: pytest.FixtureRequest, tmp_path: Path) -> Sipp:
    require_sipp()
    return Sipp(tmp_path / request.param, request.param)


def first_lines(result: SippResult, direction: str) -> list[str]:
    return [m.first_line.split(" sip:")[0] for m in result.messages if m.direction == direction]


# -- scenario files -------------------------------------------------------------------------------

ALL_SCENARIOS = sorted(SCENARIOS.glob("*.xml"))


def test_scenarios_exist() -> None:
    names = {p.stem for p in ALL_SCENARIOS}
    assert {"register", "uas_answer", "uas_reject", "uas_noanswer", "uac_call", "uac_cancel", "uac_expect"} <= names


@pytest.mark.parametrize("path", ALL_SCENARIOS, ids=lambda p: p.stem)
def test_scenario_is_well_formed_and_every_key_is_used(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag == "scenario" and root.get("name") == path.stem
    text = path.read_text(encoding="iso-8859-1")
    body = text.split("-->", 1)[1]
    keys = scenario_keys(path)
    for key in keys:
        used_by_default = any("{" + key + "}" in default for default in keys.values())
        assert f"[{key}]" in body or used_by_default, f"{path.name}: key {key} is declared but never used"


def test_key_defaults_may_name_addresses_and_earlier_keys(tmp_path: Path) -> None:
    sipp = Sipp(tmp_path, "udp", sipp="/bin/true")
    argv, _, port, _ = sipp.command("register", "127.0.0.1:5099", user="alice", keys={"expires": 120})
    pairs = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "-key"}
    assert pairs == {
        "domain": "127.0.0.1:5099",
        "contact_host": LOOPBACK,
        "contact_port": str(port),
        "expires": "120",
        "expect_expires": "120",
    }
    assert argv[argv.index("-s") + 1] == "alice"
    assert argv[argv.index("-t") + 1] == "u1"


def test_an_undeclared_key_is_refused(tmp_path: Path) -> None:
    sipp = Sipp(tmp_path, "tcp", sipp="/bin/true")
    with pytest.raises(ValueError, match="declares no key expries"):
        sipp.command("register", "127.0.0.1:5099", keys={"expries": 60})


def test_message_log_parsing() -> None:
    log = (
        "----------------------------------------------- 2026-11-25 11:33:07.083345\n"
        "UDP message sent (120 bytes):\n\n"
        "REGISTER sip:127.0.0.1:5998 SIP/2.0\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@h>\r\n\r\n\n"
        "----------------------------------------------- 2026-11-25 11:33:07.083554\n"
        "TCP message received [264] bytes :\n\n"
        "SIP/2.0 200 OK\r\nContact: <sip:a@h>;expires=60\r\nContact: <sip:b@h>;expires=30\r\n\r\n\n"
    )
    sent, received = parse_message_log(log)
    assert (sent.direction, sent.transport, sent.method, sent.status) == ("sent", "UDP", "REGISTER", None)
    assert (received.direction, received.transport, received.status) == ("received", "TCP", 200)
    assert received.header("contact") == ["<sip:a@h>;expires=60", "<sip:b@h>;expires=30"]


def test_free_port_is_free_for_udp_and_tcp() -> None:
    import socket

    port = free_port()
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((LOOPBACK, port))


def test_toml_text_round_trips() -> None:
    import tomllib

    config = {"node": {"listen": ["udp:127.0.0.1:5070"], "route": 'a"b.py'}, "timers": {"t1": 0.1},
              "proxy": {"auto_100trying": False}}
    assert tomllib.loads(toml_text(config)) == config


def test_missing_sipp_skips_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPP", "/nonexistent/sipp")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y sip-tester"):
        require_sipp()


def test_missing_sipp_fails_the_test_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPP", "/nonexistent/sipp")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires it"):
        require_sipp()


# -- flows, SIPp against SIPp ---------------------------------------------------------------------


def test_answered_call_then_hang_up(sipp: Sipp) -> None:
    with sipp.start("uas_answer", user="bob") as uas:
        caller = sipp.run("uac_call", f"{LOOPBACK}:{uas.port}", user="bob", duration_ms=50).assert_ok()
        callee = uas.wait(10).assert_ok()
    assert caller.successful_calls == 1 and callee.successful_calls == 1
    assert first_lines(caller, "sent") == ["INVITE", "ACK", "BYE"]
    assert first_lines(caller, "received") == ["SIP/2.0 180 Ringing", "SIP/2.0 200 OK", "SIP/2.0 200 OK"]
    invite_ok = caller.received()[1]
    assert "application/sdp" in invite_ok.header("Content-Type")
    # with no proxy there is no route set: the ACK goes to the callee's Contact and has no Route
    ack = caller.sent()[1]
    assert ack.first_line.startswith(f"ACK sip:bob@{LOOPBACK}:{uas.port};transport={sipp.transport.upper()} ")
    assert ack.header("Route") == []


@pytest.mark.parametrize(("code", "reason"), [(404, "Not Found"), (486, "Busy Here"), (603, "Decline")])
def test_expected_final_error_passes(sipp: Sipp, code: int, reason: str) -> None:
    with sipp.start("uas_reject", user="bob", keys={"code": code, "reason": reason}) as uas:
        caller = sipp.run("uac_expect", f"{LOOPBACK}:{uas.port}", user="bob", keys={"expect_code": code})
        callee = uas.wait(10)
    caller.assert_ok()
    callee.assert_ok()
    assert first_lines(caller, "received")[-1] == f"SIP/2.0 {code} {reason}"
    invite, ack = caller.sent()
    # the ACK of a non-2xx final response is part of the INVITE transaction (RFC 3261 §17.1.1.3)
    assert ack.method == "ACK"
    assert ack.header("Via")[0].split(";branch=")[1] == invite.header("Via")[0].split(";branch=")[1]


def test_unexpected_final_error_fails(sipp: Sipp) -> None:
    with sipp.start("uas_reject", user="bob", keys={"code": 486, "reason": "Busy Here"}) as uas:
        caller = sipp.run("uac_expect", f"{LOOPBACK}:{uas.port}", user="bob", keys={"expect_code": 404})
        uas.wait(10)
    assert caller.returncode == 1 and caller.failed_calls == 1, caller.describe()
    assert "486/404" in caller.errors


def test_cancel_while_ringing(sipp: Sipp) -> None:
    with sipp.start("uas_noanswer", user="carol") as uas:
        caller = sipp.run("uac_cancel", f"{LOOPBACK}:{uas.port}", user="carol").assert_ok()
        callee = uas.wait(10).assert_ok()
    assert first_lines(caller, "sent") == ["INVITE", "CANCEL", "ACK"]
    assert first_lines(caller, "received") == ["SIP/2.0 180 Ringing", "SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]
    invite, cancel, _ = caller.sent()
    # CANCEL matches the INVITE's transaction: same branch (RFC 3261 §9.1)
    assert cancel.header("Via")[0].split(";branch=")[1] == invite.header("Via")[0].split(";branch=")[1]
    # the callee's 487 answers the INVITE, with the INVITE's Via and CSeq, not the CANCEL's
    terminated = [m for m in callee.sent() if m.status == 487][0]
    assert terminated.header("CSeq") == ["1 INVITE"]
    assert terminated.header("Via") == callee.received()[0].header("Via")


def test_uas_that_gets_no_cancel_is_stopped_by_pid(sipp: Sipp) -> None:
    uas = sipp.start("uas_noanswer", user="carol")
    caller = sipp.start("uac_call", f"{LOOPBACK}:{uas.port}", user="carol")
    uas.wait_for_message(r"^SIP/2\.0 180 Ringing")
    callee = uas.stop(grace=0.5)
    caller.stop(grace=0.5)
    assert callee.stopped and not uas.running() and not caller.running()


def test_register_checks_the_granted_expires(sipp: Sipp) -> None:
    # more calls than made: a SIPp UAS exits after -m calls, and over TCP that close can beat the
    # caller's last step and fail it
    with sipp.start("registrar_stub", keys={"grant": 300}, calls=100) as registrar:
        remote = f"{LOOPBACK}:{registrar.port}"
        granted = sipp.run("register", remote, user="alice", keys={"expires": 300}).assert_ok()
        shortened = sipp.run("register", remote, user="alice", keys={"expires": 600})
        unchecked = sipp.run("register", remote, user="alice", keys={"expires": 600, "expect_expires": "any"})
    assert "registered alice expires=300" in granted.logs
    register = granted.sent()[0]
    assert register.header("Expires") == ["300"]
    port = granted.argv[granted.argv.index("-p") + 1]
    assert register.header("Contact") == [f"<sip:alice@{LOOPBACK}:{port};transport={sipp.transport.upper()}>"]
    assert shortened.returncode == 1 and "300/600" in shortened.errors, shortened.describe()
    unchecked.assert_ok()


def test_registered_ua_answers_calls_out_of_call(tmp_path: Path) -> None:
    """register.xml + -oocsf uas_answer.xml: one SIPp registers, then answers on the same socket.

    UDP only: SIPp's TCP client mode (-t t1) accepts no connections, so with no proxy nobody could
    reach the UA; through a proxy its INVITE comes over the REGISTER's connection."""
    require_sipp()
    sipp = Sipp(tmp_path, "udp")
    with sipp.start("registrar_stub", keys={"grant": 60}, calls=100) as registrar:
        ua = sipp.start("register", f"{LOOPBACK}:{registrar.port}", user="bob", keys={"expires": 60},
                        ooc="uas_answer", duration_ms=30000)
        ua.wait_for_message(r"^SIP/2\.0 200 OK")
        caller = sipp.run("uac_call", f"{LOOPBACK}:{ua.port}", user="bob").assert_ok()
        ua.wait_for_message(r"^SIP/2\.0 200 OK[^\n]*\n(.*\n)*CSeq: 2 BYE")
        callee = ua.stop(grace=0.5)
    assert [m.first_line.split(" sip:")[0] for m in callee.messages] == [
        "REGISTER", "SIP/2.0 200 OK",
        "INVITE", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK", "ACK", "BYE", "SIP/2.0 200 OK",
    ]
    assert caller.successful_calls == 1


def test_edgeproxy_node_starts_answers_and_stops(tmp_path: Path) -> None:
    with edgeproxy_node(tmp_path, config={"registrar": {"max_expires": 600}}) as node:
        assert node.running()
        for transport in ("udp", "tcp"):
            assert options_probe(node.host, node.port, transport, 2.0), node.log()
        assert "max_expires = 600" in node.config_path.read_text()
    assert not node.running()
    # twistd stops cleanly on SIGTERM, then re-raises the signal to report how it ended
    assert node.process.returncode == -signal.SIGTERM, node.log()
    assert "Server Shut Down." in node.log()


def test_register_through_edgeproxy_node(sipp: Sipp, tmp_path: Path) -> None:
    with edgeproxy_node(tmp_path / "node") as node:
        sipp.run("register", node.address, user="alice", keys={"expires": 300}).assert_ok()


def test_run_is_bounded_by_the_timeout(sipp: Sipp) -> None:
    """A UAC whose callee never answers ends at -timeout, with a failure status."""
    with sipp.start("uas_noanswer", user="dave") as uas:
        started = time.monotonic()
        caller = sipp.run("uac_call", f"{LOOPBACK}:{uas.port}", user="dave", timeout=2)
        elapsed = time.monotonic() - started
    assert caller.returncode != 0 and caller.successful_calls == 0, caller.describe()
    assert not caller.timed_out  # SIPp stopped itself; the harness did not have to
    assert 1.5 < elapsed < 8, elapsed
