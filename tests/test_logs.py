"""Logs a person can follow: every line about a message carries its Call-ID and transaction id, the
route's ``xlog``/``log`` lines too, a JSON format for log shippers, and a bounded number of lines for
what a peer can cause once per message (aggregated by the node's NoiseLog).

Units on a ``task.Clock`` and captured log events; end to end, ``twistd edgeproxy`` with
``log_format = "json"`` and a route that ``xlog``s, driven by SIPp calls and a flood of malformed
datagrams, its log read back line by line.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.proxy import ALICE_FLOW, World, invite, only
from support.sipp_harness import LOOPBACK, Sipp, edgeproxy_node, require_sipp
from twisted.logger import LogLevel, globalLogPublisher, formatEvent

from edgeproxy.logcontext import message_context
from edgeproxy.management.logformat import ContextObserver, json_line
from edgeproxy.routing.loader import load_route_module
from edgeproxy.sip import parse_datagram


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(seen.append)


# -- units ---------------------------------------------------------------------------------------

def test_message_context_is_the_call_id_and_the_top_via_branch() -> None:
    request = parse_datagram(invite().encode())
    assert message_context(request) == {"call_id": "call-1@192.0.2.20", "tx": "z9hG4bKalice1"}
    assert message_context(object()) == {}  # headers that cannot be read are left out, never raised


def test_context_observer_shows_the_context_after_the_text_once() -> None:
    lines: list[str] = []
    observer = ContextObserver(lambda e: lines.append(formatEvent(e)))  # type: ignore[arg-type]
    observer({"log_format": "branch to {dest} failed", "dest": "192.0.2.9:5060", "call_id": "c1", "tx": "z9hG4bKx"})
    observer({"log_format": "{call_id}: 404", "call_id": "c2", "tx": "z9hG4bKy"})
    observer({"log_format": "listening on {port}", "port": 5060})
    assert lines == ["branch to 192.0.2.9:5060 failed [call_id=c1 tx=z9hG4bKx]", "c2: 404 [tx=z9hG4bKy]",
                     "listening on 5060"]


def test_json_line_has_the_text_and_the_fields() -> None:
    line = json_line({"log_format": "branch to {dest} failed", "dest": ("192.0.2.9", 5060), "call_id": "c1",
                      "tx": "z9hG4bKx", "log_level": LogLevel.info, "log_namespace": "edgeproxy.proxy",
                      "log_time": 1_700_000_000.25})
    assert line is not None and line.endswith("\n")
    data = json.loads(line)
    assert data == {"time": "2023-11-14T22:13:20.250+00:00", "level": "info", "namespace": "edgeproxy.proxy",
                    "message": "branch to ('192.0.2.9', 5060) failed", "dest": "('192.0.2.9', 5060)",
                    "call_id": "c1", "tx": "z9hG4bKx"}


def test_route_xlog_and_log_carry_the_message_context(events: list[dict[str, Any]], tmp_path: Path) -> None:
    route = tmp_path / "xlog_route.py"
    route.write_text("def request_route(msg):\n"
                     "    msg.xlog('about to relay ' + msg.method)\n"
                     "    msg.log('an OpenSIPS level', 'L_WARN')\n"
                     "    msg.sl_send_reply(404, 'Not Here')\n")
    world = World(routes=load_route_module(str(route)))
    only(world.receive(invite(), ALICE_FLOW), lambda s: s.is_response(404))
    mine = [e for e in events if e.get("log_namespace") == "edgeproxy.route"]
    assert [(formatEvent(e), e["log_level"]) for e in mine] == [
        ("about to relay INVITE", LogLevel.info), ("an OpenSIPS level", LogLevel.warn)]
    assert all(e["call_id"] == "call-1@192.0.2.20" and e["tx"] == "z9hG4bKalice1" for e in mine)


def test_a_debug_xlog_is_an_event_only_while_the_node_is_at_debug(events: list[dict[str, Any]],
                                                                   tmp_path: Path) -> None:
    """Below debug a debug ``xlog`` builds nothing (no event, no message context): the shipped
    failover route writes one per relayed call. MI ``log_level`` 4 (``set_log_decisions``) turns it on."""
    route = tmp_path / "debug_route.py"
    route.write_text("def request_route(msg):\n"
                     "    msg.xlog('relayed ' + msg.method, 'L_DBG')\n"
                     "    msg.sl_send_reply(404, 'Not Here')\n")
    world = World(routes=load_route_module(str(route)))
    only(world.receive(invite(), ALICE_FLOW), lambda s: s.is_response(404))
    assert [e for e in events if e.get("log_namespace") == "edgeproxy.route"] == []
    world.node.set_log_decisions(True)
    only(world.receive(invite(branch="z9hG4bKalice2"), ALICE_FLOW), lambda s: s.is_response(404))
    mine = [e for e in events if e.get("log_namespace") == "edgeproxy.route"]
    assert [(formatEvent(e), e["log_level"], e["tx"]) for e in mine] == [
        ("relayed INVITE", LogLevel.debug, "z9hG4bKalice2")]


# -- end to end ----------------------------------------------------------------------------------

ROUTE = """\
from edgeproxy_routes.default import request_route as stock


async def request_route(msg):
    if msg.is_method("INVITE"):
        msg.xlog("call to " + msg.rU)
    await stock(msg)
"""


def test_json_log_lines_of_a_call_carry_its_call_id_and_floods_stay_bounded(tmp_path: Path) -> None:
    require_sipp()
    route = tmp_path / "route.py"
    route.write_text(ROUTE)
    config = {"node": {"log_format": "json", "route": str(route)}, "registrar": {"min_expires": 30}}
    with edgeproxy_node(tmp_path / "node", config=config, log_level="info") as node:
        sipp = Sipp(tmp_path / "sipp")
        phone = sipp.start("register", node.address, user="bob", ooc="uas_answer", duration_ms=60_000,
                           timeout=70, keys={"expires": 300})
        try:
            phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
            before = len(node.log().splitlines())
            calls = sipp.run("uac_call", node.address, user="bob", calls=20, rate=20, duration_ms=50,
                             timeout=30).assert_ok()
            # a flood of garbage: one line at once, then one count per 10 s
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for n in range(300):
                    s.sendto(b"NOT SIP %d\r\n\r\n" % n, (LOOPBACK, node.port))
            sipp.run("uac_call", node.address, user="bob", calls=1, timeout=20).assert_ok()  # after the flood
        finally:
            phone.stop()
        lines = node.log().splitlines()
    records = []
    for line in lines:
        if line.startswith("{"):
            records.append(json.loads(line))
    assert records and all({"time", "level", "namespace", "message"} <= set(r) for r in records)
    call_ids = {m.header("Call-ID")[0] for m in calls.sent() if m.method == "INVITE"}
    xlogs = [r for r in records if r["namespace"] == "edgeproxy.route"]
    assert {r["call_id"] for r in xlogs} == call_ids | {r["call_id"] for r in xlogs[-1:]}
    assert all(r["message"] == "call to bob" and r["tx"].startswith("z9hG4bK") for r in xlogs)
    # 21 calls and 300 malformed datagrams at info level: no line per message beyond the route's own
    during = [json.loads(line) for line in lines[before:] if line.startswith("{")]
    others = [r for r in during if r["namespace"] != "edgeproxy.route"]
    malformed = [r for r in others if "malformed" in r["message"]]
    assert 1 <= len(malformed) <= 3, malformed
    assert len(others) <= 10, [r["message"] for r in others]


def test_text_log_lines_show_the_message_context(tmp_path: Path) -> None:
    require_sipp()
    route = tmp_path / "route.py"
    route.write_text(ROUTE)
    config = {"node": {"route": str(route)}, "registrar": {"min_expires": 30}}
    with edgeproxy_node(tmp_path / "node", config=config, log_level="info") as node:
        sipp = Sipp(tmp_path / "sipp")
        phone = sipp.start("register", node.address, user="bob", ooc="uas_answer", duration_ms=30_000,
                           timeout=40, keys={"expires": 300})
        try:
            phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
            calls = sipp.run("uac_call", node.address, user="bob", timeout=20).assert_ok()
        finally:
            phone.stop()
        log = node.log()
    (invite,) = [m for m in calls.sent() if m.method == "INVITE"]
    branch = re.search(r"branch=([^;\s]+)", invite.header("Via")[0]).group(1)  # type: ignore[union-attr]
    (line,) = [line for line in log.splitlines() if "call to bob" in line]
    assert "[edgeproxy.route#info]" in line
    assert line.endswith(f"call to bob [call_id={invite.header('Call-ID')[0]} tx={branch}]"), line
