"""The management interface (OpenSIPS MI) without sockets: the commands over real parts, the JSON-RPC
resource over twisted.web's in-memory requests, and the ``[mi]`` configuration.

The parts are the real thing on a ``task.Clock``: an InMemoryLocation and a Registrar that contacts
are registered through (REGISTER text parsed as from the wire), and a Node running the shipped
default route for the statistics. The end-to-end test (``test_e2e_management.py``) runs the same
commands over HTTP against ``twistd edgeproxy`` with a third-party client.
"""

from __future__ import annotations

import json
import os
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import (
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from edgeproxy.cluster import Cluster, NodeTable
from edgeproxy.config import Config, ConfigError, load_config
from edgeproxy.location import LookupResult
from edgeproxy.management import MISettings
from edgeproxy.management.commands import ALL_METHODS, STATISTICS
from edgeproxy.management.http import MIResource
from edgeproxy.management.loglevel import (LogLevelControl, find_level_filters, parse_level, register_level_filter,
                                           unregister_level_filter)
from edgeproxy.proxy.flood import FloodDetector, FloodSettings
from edgeproxy.registrar import RegistrarSettings
from edgeproxy.sip import parse_datagram
from edgeproxy.sip.endpoint import Endpoint, Flow
from support.management import LOCAL, World, options

@pytest.fixture
def world() -> World:
    return World()


def register_two(world: World) -> None:
    world.register("alice", "<sip:alice@192.0.2.10:5062>",
                   extra="User-Agent: Phone/1.0\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n", nat=True)
    world.register("alice", '<sip:alice@192.0.2.11:5070>;q=0.5;+sip.instance="<urn:uuid:1234>";reg-id=1',
                   expires=120, source=Endpoint("UDP", "192.0.2.11", 5070))
    world.register("bob", "<sip:bob@192.0.2.20:5080>", source=Endpoint("UDP", "192.0.2.20", 5080))


# -- usrloc ---------------------------------------------------------------------------------------------

def test_ul_dump_lists_every_aor_with_its_contacts_in_opensips_shape(world: World) -> None:
    register_two(world)
    world.clock.advance(10)
    dump = world.call("ul_dump")
    assert list(dump) == ["Domains"]
    (domain,) = dump["Domains"]
    assert domain["name"] == "location"
    assert [a["AOR"] for a in domain["AORs"]] == ["alice", "bob"]
    alice = domain["AORs"][0]["Contacts"]
    assert [c["Contact"] for c in alice] == ["sip:alice@192.0.2.11:5070", "sip:alice@192.0.2.10:5062"]  # q order
    first, second = alice[1], alice[0]
    assert first == {
        "Contact": "sip:alice@192.0.2.10:5062", "Expires": 290, "Q": "", "Callid": first["Callid"], "Cseq": 7,
        "User-agent": "Phone/1.0", "Received": "sip:192.0.2.10:5062", "State": "CS_NEW", "Flags": 0,
        "Cflags": "NAT", "Socket": "udp:127.0.0.1:5060", "Methods": 1 | 2 | 4 | 8 | 32,
    }
    assert first["Callid"].startswith("reg-alice-")
    assert second["Expires"] == 110 and second["Q"] == "0.5" and second["Cflags"] == ""
    assert second["Methods"] == ALL_METHODS  # no Allow: every method (OpenSIPS ALL_METHODS)
    assert second["SIP_instance"] == "<urn:uuid:1234>"
    json.dumps(dump)  # JSON-able as it is


def test_ul_dump_brief_and_empty_table(world: World) -> None:
    assert world.call("ul_dump") == {"Domains": [{"name": "location", "AORs": []}]}
    register_two(world)
    assert world.call("ul_dump", ["brief"]) == {"Domains": [{"name": "location",
                                                             "AORs": [{"AOR": "alice"}, {"AOR": "bob"}]}]}
    assert world.call("ul_dump", {"brief": 1})["Domains"][0]["AORs"] == [{"AOR": "alice"}, {"AOR": "bob"}]
    assert "Contacts" in world.call("ul_dump", {"brief": 0})["Domains"][0]["AORs"][0]


def test_ul_dump_skips_expired_contacts(world: World) -> None:
    register_two(world)
    world.clock.advance(150)  # alice's q=0.5 contact (120 s) is gone, its other one (300 s) is not
    aors = world.call("ul_dump")["Domains"][0]["AORs"]
    assert [len(a["Contacts"]) for a in aors] == [1, 1]
    assert aors[0]["Contacts"][0]["Expires"] == 150


def test_ul_show_contact(world: World) -> None:
    register_two(world)
    shown = world.call("ul_show_contact", {"table_name": "location", "aor": "bob"})
    assert shown["AOR"] == "bob" and [c["Contact"] for c in shown["Contacts"]] == ["sip:bob@192.0.2.20:5080"]
    # positional, and the domain dropped as OpenSIPS does without use_domain; a sip: URI is keyed like To
    assert world.call("ul_show_contact", ["location", "bob@example.com"]) == shown
    assert world.call("ul_show_contact", ["location", "sip:bob@example.com"]) == shown


def test_ul_show_contact_errors(world: World) -> None:
    register_two(world)
    missing = world.error("ul_show_contact", {"table_name": "location", "aor": "carol"})
    assert (missing.code, missing.message) == (404, "AOR not found")
    table = world.error("ul_show_contact", ["users", "bob"])
    assert (table.code, table.message) == (404, "Table not found")
    for params in (None, ["location"], {"table_name": "location"}, {"table": "location", "aor": "bob"},
                   "bob", {"table_name": "location", "aor": 7}):
        err = world.error("ul_show_contact", params)
        assert err.code == -32602 and err.message == "Invalid params", params
        assert "table_name" in str(err.data) or "aor" in str(err.data)


def test_use_domain_requires_the_domain() -> None:
    world = World(RegistrarSettings(use_domain=True))
    world.register("alice", "<sip:alice@192.0.2.10:5062>")
    assert world.call("ul_show_contact", ["location", "alice@EXAMPLE.com"])["AOR"] == "alice@example.com"
    err = world.error("ul_show_contact", ["location", "alice"])
    assert (err.code, err.message) == (400, "Domain missing in AOR")


def test_ul_rm_removes_the_aor_and_tells_the_listeners(world: World) -> None:
    register_two(world)
    assert world.call("ul_rm", {"table_name": "location", "aor": "alice"}) == "OK"
    assert ("emptied", "alice") in world.listener.events
    found: list[Any] = []
    world.location.lookup("alice").addCallback(found.append)
    assert found[0][0] == LookupResult.NOT_FOUND
    assert [a["AOR"] for a in world.call("ul_dump")["Domains"][0]["AORs"]] == ["bob"]
    assert world.call("ul_rm", ["location", "nobody"]) == "OK"  # as OpenSIPS: not an error
    assert world.call("usrloc:rm", ["location", "bob"]) == "OK"  # OpenSIPS 4's name
    assert world.call("ul_dump")["Domains"][0]["AORs"] == []


def test_ul_rm_contact(world: World) -> None:
    register_two(world)
    ok = world.call("ul_rm_contact", {"table_name": "location", "aor": "alice",
                                      "contact": "sip:alice@192.0.2.11:5070"})
    assert ok == "OK"
    assert ("emptied", "alice") not in world.listener.events  # alice keeps her other contact
    left = world.call("ul_show_contact", ["location", "alice"])["Contacts"]
    assert [c["Contact"] for c in left] == ["sip:alice@192.0.2.10:5062"]
    gone = world.error("ul_rm_contact", ["location", "alice", "sip:alice@192.0.2.99"])
    assert (gone.code, gone.message) == (404, "Contact not found")
    nobody = world.error("ul_rm_contact", ["location", "carol", "sip:carol@192.0.2.1"])
    assert (nobody.code, nobody.message) == (404, "AOR not found")
    assert world.call("ul_rm_contact", ["location", "alice", "<sip:alice@192.0.2.10:5062>"]) == "OK"
    assert ("emptied", "alice") in world.listener.events


# -- statistics -------------------------------------------------------------------------------------

def test_get_statistics_maps_our_counters(world: World) -> None:
    register_two(world)
    for n in range(3):  # the default route answers OPTIONS to the node itself: 200
        world.node.message_received(parse_datagram(options(n)), Flow(LOCAL, Endpoint("UDP", "192.0.2.30", 5060)))
    stats = world.call("get_statistics", {"statistics": ["all"]})
    assert stats["core:rcv_requests"] == 3 and stats["sl:sent_replies"] == 3
    assert stats["usrloc:registered_users"] == 2 and stats["usrloc:location-users"] == 2
    assert stats["usrloc:location-contacts"] == 3
    assert stats["registrar:default_expire"] == 3600
    assert {"core:rcv_replies", "core:drop_requests", "core:err_requests", "core:timestamp",
            "tm:UAS_transactions", "tm:inuse_transactions"} <= set(stats)
    assert not any(k.startswith(("pike:", "auth:", "nathelper:", "federation:")) for k in stats)  # not running
    assert world.call("get_statistics", [["usrloc:"]]) == {
        "usrloc:registered_users": 2, "usrloc:location-users": 2, "usrloc:location-contacts": 3}
    # positional names, a bare name, a group:name, case-insensitive like OpenSIPS
    assert world.call("get_statistics", ["RCV_requests", "core:rcv_replies"]) == {
        "core:rcv_requests": 3, "core:rcv_replies": 0}
    world.wall[0] += 42
    assert world.call("get_statistics", ["timestamp"]) == {"core:timestamp": 42}
    assert world.call("get_statistics", {"statistics": "tm:"})["tm:UAS_transactions"] == 0


def test_get_statistics_errors(world: World) -> None:
    err = world.error("get_statistics", ["no_such_stat", "nogroup:"])
    assert (err.code, err.message) == (404, "Statistics Not Found")
    for params in (None, {"statistics": [1, 2]}, {"stats": ["all"]}):
        assert world.error("get_statistics", params).code == -32602


def test_list_and_reset_statistics(world: World) -> None:
    register_two(world)
    world.node.message_received(parse_datagram(options(1)), Flow(LOCAL, Endpoint("UDP", "192.0.2.30", 5060)))
    types = world.call("list_statistics")
    assert types["core:rcv_requests"] == "incremental"
    assert types["usrloc:registered_users"] == "non-incremental"
    assert world.call("list_statistics", [["core:"]])["core:timestamp"] == "non-incremental"
    assert world.call("reset_statistics", {"statistics": ["rcv_requests", "usrloc:registered_users"]}) == "OK"
    assert world.node.stats["requests"] == 0 and world.node.stats["replied"] == 1  # only what was named
    assert world.call("get_statistics", ["registered_users"]) == {"usrloc:registered_users": 2}  # a gauge
    assert world.error("reset_statistics", ["nope"]).code == 404


def test_statistics_of_optional_parts() -> None:
    world = World(flood=FloodDetector(FloodSettings(reqs_density_per_unit=2, check_all=True)))
    source = Flow(LOCAL, Endpoint("UDP", "192.0.2.66", 5060))
    for n in range(6):
        world.node.message_received(parse_datagram(options(100 + n)), source)
    stats = world.call("get_statistics", ["pike:"])
    assert stats["pike:flood_dropped"] >= 3 and stats["pike:blocked_ips"] == 1
    assert stats["pike:tracked_ips"] == 1 and stats["pike:blocked_events"] == 1
    assert world.call("pike_list") == {"IPs": ["192.0.2.66"]}
    documented = {key.split(":")[0] for key, _, _ in STATISTICS}
    assert {k.split(":")[0] for k in world.call("get_statistics", ["all"])} <= documented


def test_malformed_input_and_its_flood_drops_are_statistics() -> None:
    """Issue 16: what hostile input does is counted (``core:bad_msg_hdr``, ``pike:flood_dropped``)
    and logged aggregated, not a line per message."""
    from edgeproxy.sip.errors import SipParseError
    world = World(flood=FloodDetector(FloodSettings(reqs_density_per_unit=2, check_all=True)))
    source = Flow(LOCAL, Endpoint("UDP", "192.0.2.66", 5060))
    err = SipParseError("Missing Call-ID", is_request=True, partial=[("via", "SIP/2.0/UDP 192.0.2.66"),
                                                                     ("cseq", "1 OPTIONS")])
    answered = [world.node.malformed_received(err, source, 100) for _ in range(6)]
    assert answered[:2] == [True, True] and answered[-1] is False
    stats = world.call("get_statistics", ["core:bad_msg_hdr", "pike:flood_dropped"])
    assert stats == {"core:bad_msg_hdr": 6, "pike:flood_dropped": answered.count(False)}


# -- clusterer, pike: only when they run ----------------------------------------------------------

def test_pike_and_clusterer_commands_exist_only_with_their_parts(world: World) -> None:
    for method in ("pike_list", "clusterer_list", "no_such_command"):
        err = world.error(method)
        assert (err.code, err.message) == (-32601, "Method not found")
    assert "pike_list" not in world.call("which") and "clusterer_list" not in world.call("which")
    world = World(flood=FloodDetector(FloodSettings()))
    assert world.call("pike_list") == {"IPs": []}
    assert "pike_list" in world.call("which")


def test_clusterer_list(world: World) -> None:
    rows = [{"cluster_id": 1, "node_id": 1, "url": "bin:127.0.0.11", "sip_addr": "127.0.0.11"},
            {"cluster_id": 1, "node_id": 2, "url": "bin:127.0.0.12", "sip_addr": "127.0.0.12",
             "description": "edge-2"},
            {"cluster_id": 1, "node_id": 3, "url": "bin:127.0.0.13", "state": 0}]
    world.parts.cluster = Cluster(world.clock, 1, NodeTable.from_dicts(rows))
    listing = world.call("clusterer_list")
    (cluster,) = listing["Clusters"]
    assert cluster["cluster_id"] == 1
    assert [n["node_id"] for n in cluster["Nodes"]] == [2, 3]  # this node is not listed, as in OpenSIPS
    two, three = cluster["Nodes"]
    assert two == {"node_id": 2, "url": "bin:127.0.0.12", "link_state": "Probe", "next_hop": "none",
                   "description": "edge-2", "state": "enabled", "sip_addr": "127.0.0.12"}
    assert three["link_state"] == "Down" and three["state"] == "disabled" and three["description"] == "none"


# -- core -----------------------------------------------------------------------------------------

def test_uptime_version_which_help_ps(world: World) -> None:
    world.wall[0] += 75
    up = world.call("uptime")
    assert up["Up time"] == "75 [sec]" and set(up) == {"Now", "Up since", "Up time"}
    assert world.call("version")["Server"].startswith("edgeproxy 0.1.0 (Twisted ")
    names = world.call("which")
    assert {"ul_dump", "ul_show_contact", "ul_rm", "ul_rm_contact", "get_statistics", "list_statistics",
            "reset_statistics", "uptime", "version", "which", "ps", "log_level", "help"} <= set(names)
    assert world.call("which", ["ul_rm_contact"]) == [["table_name", "aor", "contact"]]
    assert world.error("which", ["nope"]).code == 404
    assert world.call("help", {"mi_cmd": "ul_rm"})["Exported by"] == "usrloc"
    (proc,) = world.call("ps")["Processes"]
    assert proc["PID"] == os.getpid() and proc["ID"] == 0


def test_log_level_get_and_set(world: World) -> None:
    (proc,) = world.call("log_level")["Processes"]
    assert proc["Log level"] == 3 and proc["PID"] == os.getpid()
    assert world.call("log_level", {"level": 4}) == {"New global log level": 4, "Log level name": "debug"}
    assert world.predicate.logLevelForNamespace("edgeproxy.proxy") == LogLevel.debug
    assert world.node.settings.log_decisions is True  # the proxy's per-decision debug lines follow
    assert world.call("log_level", ["warning"])["New global log level"] == 1
    assert world.predicate.defaultLogLevel == LogLevel.warn and world.node.settings.log_decisions is False
    assert world.call("log_level", {"level": -3})["Log level name"] == "critical"
    assert world.call("log_level", {"level": "3", "pid": os.getpid()}) == {"Log level": 3, "Log level name": "info"}
    for params in ({"level": 9}, {"level": "loud"}, {"level": True}):
        assert world.error("log_level", params).code == -32602
    bad_pid = world.error("log_level", {"level": 3, "pid": os.getpid() + 100000})
    assert bad_pid.code == -32602 and bad_pid.data == "Bad PID"


def test_log_level_without_a_filter_is_an_error_not_a_crash(world: World) -> None:
    world.mi.log_control = LogLevelControl(world.node, [], initial="debug")
    assert world.call("log_level")["Processes"][0]["Log level"] == 4
    assert world.error("log_level", [1]).code == 500


def test_level_mapping_and_filter_discovery() -> None:
    assert [parse_level(n) for n in (4, 3, 2, 1, 0, -1, -2, -4)] == [
        LogLevel.debug, LogLevel.info, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.error,
        LogLevel.critical, LogLevel.critical]
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    assert predicate not in find_level_filters()
    register_level_filter(predicate)  # what edgeproxy.tap does with twistd's observer's predicate
    try:
        assert predicate in find_level_filters()
    finally:
        unregister_level_filter(predicate)
    assert predicate not in find_level_filters()


def test_internal_failure_is_a_server_error_and_a_log_line(world: World) -> None:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        world.location.aors = lambda: 1 / 0  # type: ignore[method-assign]
        err = world.error("ul_dump")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (err.code, err.message) == (-32000, "Server error")
    failures = [e for e in events if "log_failure" in e]
    assert failures and failures[0]["log_failure"].check(ZeroDivisionError)


# -- the JSON-RPC resource (twisted.web's in-memory request) ----------------------------------------

def http(world: World, body: bytes | str | None, *, method: bytes = b"POST", path: bytes = b"/mi",
         settings: MISettings | None = None,
         headers: dict[bytes, bytes] | None = None) -> tuple[int, Any, DummyRequest]:
    resource = MIResource(world.mi, settings or MISettings(listen="127.0.0.1:8888"), world.clock)
    request = DummyRequest([p for p in path.split(b"/") if p])
    request.method = method
    request.path = path
    request.content = BytesIO(body.encode() if isinstance(body, str) else (body or b""))
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    out = resource.render(request)
    if out is not NOT_DONE_YET:
        request.write(out)
        request.finish()
    assert request.finished, "the resource did not answer at once"
    data = b"".join(request.written)
    code = request.responseCode or 200
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = data.decode()
    return code, parsed, request


def rpc(method: str, params: Any = None, id: Any = 1) -> dict:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not None:
        message["id"] = id
    return message


def test_http_request_and_answer(world: World) -> None:
    register_two(world)
    code, answer, request = http(world, json.dumps(rpc("ul_show_contact", ["location", "bob"], id="x7")))
    assert code == 200 and request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    assert answer["jsonrpc"] == "2.0" and answer["id"] == "x7" and answer["result"]["AOR"] == "bob"
    code, answer, _ = http(world, json.dumps(rpc("ul_show_contact", ["location", "zed"])))
    assert code == 200 and answer == {"jsonrpc": "2.0", "error": {"code": 404, "message": "AOR not found"}, "id": 1}
    _, answer, _ = http(world, json.dumps(rpc("nope")))
    assert answer["error"] == {"code": -32601, "message": "Method not found"}
    _, answer, _ = http(world, json.dumps(rpc("ul_rm", {"aor": "bob"})))
    assert answer["error"]["code"] == -32602 and "table_name" in answer["error"]["data"]
    _, answer, _ = http(world, json.dumps(rpc("uptime", {})))  # what the opensips package sends
    assert "Up time" in answer["result"]


def test_http_batch_and_notifications(world: World) -> None:
    register_two(world)
    batch = [rpc("ul_dump", ["brief"], id=1), rpc("ul_rm", ["location", "alice"], id=None),
             rpc("nope", id=3), 5, rpc("which", id=None)]
    code, answer, _ = http(world, json.dumps(batch))
    assert code == 200 and isinstance(answer, list)
    assert [a["id"] for a in answer] == [1, 3, None]
    assert answer[0]["result"]["Domains"][0]["AORs"] == [{"AOR": "alice"}, {"AOR": "bob"}]
    assert answer[1]["error"]["code"] == -32601 and answer[2]["error"]["code"] == -32600
    assert world.call("ul_dump", ["brief"])["Domains"][0]["AORs"] == [{"AOR": "bob"}]  # the notification ran
    code, answer, request = http(world, json.dumps(rpc("ul_rm", ["location", "bob"], id=None)))
    assert code == 204 and answer is None and request.written == []
    assert world.call("ul_dump", ["brief"])["Domains"][0]["AORs"] == []
    code, answer, _ = http(world, json.dumps([rpc("uptime", id=None)]))
    assert code == 204


def test_http_bad_requests(world: World) -> None:
    _, answer, _ = http(world, b"{not json")
    assert answer == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}
    _, answer, _ = http(world, b"\xff\xfe")
    assert answer["error"]["code"] == -32700
    _, answer, _ = http(world, b"[]")
    assert answer["error"]["code"] == -32600
    for bad in ({"jsonrpc": "1.0", "method": "uptime", "id": 1}, {"jsonrpc": "2.0", "id": 2},
                {"jsonrpc": "2.0", "method": "uptime", "params": "x", "id": 3}, "uptime", 7):
        _, answer, _ = http(world, json.dumps(bad))
        assert answer["error"]["code"] == -32600 and answer["error"]["message"] == "Invalid Request", bad
    _, answer, _ = http(world, json.dumps({"jsonrpc": "2.0", "method": "uptime", "id": [1]}))
    assert answer["error"]["code"] == -32600 and answer["id"] is None


def test_http_refusals(world: World) -> None:
    code, _, request = http(world, None, method=b"GET")
    assert code == 405 and request.responseHeaders.getRawHeaders(b"allow") == [b"POST"]
    code, _, _ = http(world, json.dumps(rpc("uptime")), path=b"/other")
    assert code == 404
    secured = MISettings(listen="127.0.0.1:8888", token="s3cret")
    body = json.dumps(rpc("uptime"))
    code, _, request = http(world, body, settings=secured)
    assert code == 401 and request.responseHeaders.getRawHeaders(b"www-authenticate")
    code, _, _ = http(world, body, settings=secured, headers={b"authorization": b"Bearer wrong"})
    assert code == 401
    code, answer, _ = http(world, body, settings=secured, headers={b"authorization": b"Bearer s3cret"})
    assert code == 200 and "Up time" in answer["result"]


def test_http_timeout_answers_server_error(world: World) -> None:
    never: Deferred = Deferred()
    world.mi._commands["uptime"] = world.mi._commands["uptime"].__class__(
        "uptime", ((),), lambda: never, "never answers")
    resource = MIResource(world.mi, MISettings(listen="127.0.0.1:8888", timeout=2), world.clock)
    request = DummyRequest([b"mi"])
    request.method, request.path = b"POST", b"/mi"
    request.content = BytesIO(json.dumps(rpc("uptime")).encode())
    assert resource.render(request) is NOT_DONE_YET
    assert not request.finished
    world.clock.advance(2.5)
    assert request.finished
    answer = json.loads(b"".join(request.written))
    assert answer["error"]["code"] == -32000 and "2 s" in answer["error"]["data"]


# -- [mi] in the configuration --------------------------------------------------------------------

def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "edge.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_config_mi_section(tmp_path: Path) -> None:
    assert Config().mi is None and load_config(None).mi is None
    config = load_config(write(tmp_path, '[mi]\nlisten = "127.0.0.1:8888"\ntoken = "t"\n'))
    assert config.mi == MISettings(listen="127.0.0.1:8888", token="t")
    assert config.mi.address == ("127.0.0.1", 8888) and not config.mi.remote
    assert load_config(write(tmp_path, "[mi]\n")).mi == MISettings()  # present but off
    v6 = load_config(write(tmp_path, '[mi]\nlisten = "[::1]:8888"\npath = "/opensips/mi"\n')).mi
    assert v6.address == ("::1", 8888) and v6.path == "/opensips/mi"
    remote = load_config(write(tmp_path, '[mi]\nlisten = "0.0.0.0:8888"\nallow_remote = true\n'))
    assert remote.mi.remote


@pytest.mark.parametrize("text, key", [
    ('listen = "0.0.0.0:8888"', "mi.listen"),
    ('listen = "192.0.2.1:8888"', "mi.listen"),
    ('listen = "8888"', "mi.listen"),
    ('listen = "mi.example.com:8888"', "mi.listen"),
    ('listen = "127.0.0.1:99999"', "mi.listen"),
    ('path = "mi"', "mi.path"),
    ('max_request_size = 10', "mi.max_request_size"),
    ('tokn = "x"', "mi.tokn"),
])
def test_config_mi_mistakes(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"[mi]\n{text}\n"))
    assert info.value.key == key
