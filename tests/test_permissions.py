"""Trusted address groups (OpenSIPS ``permissions``): matching, rows, configuration, the route verbs
and the MI commands -- without a database (``test_permissions_db.py`` has the MariaDB table).

The expectations are OpenSIPS 3.4's ``check_addr()`` as ``opensips-modules.md`` §2 describes it: 1 /
-1 / -2, group 0 rows and calls, port 0 and proto ``any`` as wildcards, the pattern only when both
sides give one, hosts before subnets, the per-part "group not found" pre-check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from edgeproxy.config import ConfigError, load_config
from edgeproxy.management import MICommands, MIError
from edgeproxy.permissions import (
    AddressMatch,
    AddressResult,
    AddressRowError,
    AddressTable,
    Permissions,
    PermissionsSettings,
    parse_row,
    route_params_rows,
)
from edgeproxy.routing.testing import RouteHarness
from edgeproxy.node import Node
from edgeproxy.sip.endpoint import Endpoint, Flow
from edgeproxy.service import RunningNode
from support.proxy import LOCAL_UDP, World, module, only, sip, wire


def rows(*specs: dict[str, Any]) -> AddressTable:
    return AddressTable(parse_row(s) for s in specs)


def test_host_row_matches_its_address_any_port_and_transport() -> None:
    t = rows({"grp": 1, "ip": "10.0.1.50"})
    assert t.check(1, "10.0.1.50", 5060, "udp") == AddressMatch(AddressResult.MATCH, "")
    assert t.check(1, "10.0.1.50", 40000, "tcp").code == 1
    assert t.check(1, "10.0.1.51", 5060, "udp").code == -1
    assert t.check(2, "10.0.1.50", 5060, "udp").code == -2  # no row of group 2 anywhere


def test_port_and_proto_of_a_row_must_fit_unless_the_call_asks_for_any() -> None:
    t = rows({"grp": 1, "ip": "10.0.1.50", "port": 5080, "proto": "tcp"})
    assert t.check(1, "10.0.1.50", 5080, "tcp").code == 1
    assert t.check(1, "10.0.1.50", 5060, "tcp").code == -1
    assert t.check(1, "10.0.1.50", 5080, "udp").code == -1
    assert t.check(1, "10.0.1.50", 0, "any").code == 1  # port 0 and proto any in the call: wildcards


def test_subnets_ipv4_and_ipv6() -> None:
    t = rows({"grp": 3, "ip": "192.168.0.0", "mask": 16, "context_info": "lan"},
             {"grp": 3, "ip": "2001:db8::", "mask": 32, "context_info": "v6"},
             {"grp": 3, "ip": "2001:DB8:0:0::7", "mask": 128, "context_info": "v6host"})
    assert t.check(3, "192.168.44.1", 5060, "udp") == AddressMatch(AddressResult.MATCH, "lan")
    assert t.check(3, "192.169.0.1", 5060, "udp").code == -1
    assert t.check(3, "2001:db8:ffff::1", 5060, "tls").context_info == "v6"
    assert t.check(3, "2001:db9::1", 5060, "tls").code == -1
    assert t.check(3, "[2001:db8::7]", 5060, "tls").context_info == "v6host"  # hosts before subnets
    assert [r.ip for r in t.hosts] == ["2001:db8::7"] and len(t.subnets) == 2
    assert t.check(3, "not-an-ip", 5060, "udp").code == -1


def test_group_zero_rows_and_calls_and_the_per_part_group_precheck() -> None:
    t = rows({"grp": 0, "ip": "10.0.0.1"}, {"grp": 5, "ip": "10.0.0.2"}, {"grp": 6, "ip": "172.16.0.0", "mask": 12})
    assert t.check(5, "10.0.0.1", 0, "any").code == 1  # a group-0 row matches group 5, which has host rows
    assert t.check(6, "10.0.0.1", 0, "any").code == -1  # group 6 has no host row: the hash is not searched
    assert t.check(7, "10.0.0.1", 0, "any").code == -2
    assert t.check(0, "172.16.9.9", 0, "any").code == 1  # group 0 asked: any row


def test_pattern_only_when_both_sides_have_one() -> None:
    t = rows({"grp": 1, "ip": "10.0.0.1", "pattern": "sip:*@example.com", "context_info": "ex"})
    assert t.check(1, "10.0.0.1", 0, "any", "sip:bob@example.com").code == 1
    assert t.check(1, "10.0.0.1", 0, "any", "sip:bob@other.net").code == -1
    assert t.check(1, "10.0.0.1", 0, "any", None).code == 1  # no pattern in the call: the row's is not used
    t2 = rows({"grp": 1, "ip": "10.0.0.1", "pattern": "*"})
    assert t2.check(1, "10.0.0.1", 0, "any", ".hidden").code == -1  # FNM_PERIOD
    assert t2.check(1, "10.0.0.1", 0, "any", "visible").code == 1


def test_the_row_loaded_last_is_tried_first_and_gives_its_context() -> None:
    t = rows({"grp": 1, "ip": "10.0.0.1", "context_info": "old"}, {"grp": 1, "ip": "10.0.0.1", "context_info": "new"})
    assert t.check(1, "10.0.0.1", 0, "any").context_info == "new"


def test_get_source_group_ignores_proto_and_pattern() -> None:
    t = rows({"grp": 4, "ip": "10.0.0.1", "port": 5060, "proto": "tcp", "pattern": "x"},
             {"grp": 9, "ip": "10.1.0.0", "mask": 16})
    assert t.source_group("10.0.0.1", 5060) == 4
    assert t.source_group("10.0.0.1", 5061) == -1
    assert t.source_group("10.1.2.3", 1) == 9
    assert t.source_group("10.2.0.1", 1) == -1


@pytest.mark.parametrize("row, why", [
    ({"grp": 1, "ip": "fs1.example.com"}, "not an IPv4 or IPv6"),
    ({"grp": 1, "ip": "10.0.0.1", "mask": 33}, "mask 33 is out of range 0..32"),
    ({"grp": 1, "ip": "::1", "mask": 129}, "mask 129 is out of range 0..128"),
    ({"grp": 1, "ip": "10.0.0.1", "proto": "none"}, "proto is 'none'"),
    ({"grp": 1, "ip": "10.0.0.1", "proto": "xyz"}, "proto 'xyz'"),
    ({"grp": -1, "ip": "10.0.0.1"}, "grp -1 is out of range"),
    ({"grp": None, "ip": "10.0.0.1"}, "grp is NULL"),
    ({"grp": 1, "ip": None}, "not an IPv4 or IPv6"),
])
def test_rows_opensips_skips_are_refused(row: dict[str, Any], why: str) -> None:
    with pytest.raises(AddressRowError, match=why):
        parse_row(row)


# -- configuration ------------------------------------------------------------------------------------

def config(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "edge.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path))


def test_permissions_section_rows(tmp_path: Path) -> None:
    c = config(tmp_path, '[permissions]\n[[permissions.address]]\ngrp = 2\nip = "10.0.0.0"\nmask = 8\n'
                         'context_info = "core"\n[[permissions.address]]\ngrp = 2\nip = "::1"\n')
    assert c.permissions.db_url == "" and c.permissions.table == "address"
    assert [(r.grp, r.ip, r.mask, r.context_info) for r in c.permissions.address] == [
        (2, "10.0.0.0", 8, "core"), (2, "::1", 128, None)]


@pytest.mark.parametrize("text, message", [
    ('[permissions]\n[[permissions.address]]\ngrp = 1\nip = "fs.example"\n',
     "config: permissions.address[0]: ip 'fs.example' is not an IPv4 or IPv6 address"),
    ('[permissions]\n[[permissions.address]]\ngrp = 1\nip = "10.0.0.1"\nmaks = 8\n',
     'config: permissions.address[0].maks: unknown column (did you mean "mask"?)'),
    ('[permissions]\ndb_url = "postgres://x/y"\n', "config: permissions.db_url: scheme 'postgres' is not supported"),
    ('[permissions]\ntable = "a b"\n', 'config: permissions.table: must be a plain SQL table name, got "a b"'),
    ('[permisions]\n', 'did you mean "permissions"?'),
])
def test_permissions_section_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, text)
    assert message in str(err.value)


def test_route_params_freeswitch_is_the_default_group(tmp_path: Path) -> None:
    c = config(tmp_path, '[route_params]\nfreeswitch = ["10.0.1.50", "10.0.2.50:5080", "fs.example.com"]\n')
    assert [(r.grp, r.ip, r.port, r.context_info) for r in c.permissions.address] == [
        (1, "10.0.1.50", 0, "freeswitch"), (1, "10.0.2.50", 0, "freeswitch")]
    c = config(tmp_path, '[permissions]\n[[permissions.address]]\ngrp = 1\nip = "10.9.9.9"\n'
                         '[route_params]\nfreeswitch = ["10.0.1.50"]\nfreeswitch_group = 7\n')
    assert [(r.grp, r.ip) for r in c.permissions.address] == [(1, "10.9.9.9"), (7, "10.0.1.50")]
    assert config(tmp_path, "").permissions is None
    with pytest.raises(ConfigError, match="route_params.freeswitch_group"):
        route_params_rows({"freeswitch": ["10.0.0.1"], "freeswitch_group": 0})


# -- the route verbs (harness and node run the same verbs) ----------------------------------------------

INVITE = """INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.1.50:5060;branch=z9hG4bK-perm-1
Max-Forwards: 70
From: <sip:alice@example.com>;tag=a
To: <sip:bob@example.com>
Call-ID: perm-1
CSeq: 1 INVITE
Content-Length: 0

"""

SEEN: list[Any] = []


def trusting_route(msg) -> None:
    code = msg.check_source_address(1)
    SEEN.append((code, bool(code), msg.context_info, msg.get_source_group(),
                 msg.check_address(1, "10.0.1.50", 5060, "UDP"), msg.check_address(0, "192.0.2.1")))
    if code:
        msg.sl_send_reply(200, f"Trusted {msg.context_info}")
    else:
        msg.sl_send_reply(403, "Forbidden")


def test_verbs_in_the_harness() -> None:
    h = RouteHarness(permissions=PermissionsSettings(address=(parse_row({"grp": 1, "ip": "10.0.1.50", "port": 5060,
                                                                         "context_info": "fs1"}),)))
    SEEN.clear()
    assert h.run(trusting_route, INVITE, source=Endpoint("UDP", "10.0.1.50", 5060)).reply_code == 200
    assert h.run(trusting_route, INVITE, source=Endpoint("UDP", "10.0.1.50", 5062)).reply_code == 403
    assert SEEN == [(1, True, "fs1", 1, 1, -1), (-1, False, None, -1, 1, -1)]  # a miss keeps the last match's
    assert h.run(trusting_route, INVITE, source=Endpoint("TCP", "10.0.1.50", 5060)).responses[0].reason == "Trusted fs1"


def test_verbs_without_address_groups_answer_group_not_found() -> None:
    SEEN.clear()
    RouteHarness().run(trusting_route, INVITE)
    assert SEEN == [(-2, False, None, -1, -2, -2)]


def test_harness_builds_the_route_params_group_as_the_node_does() -> None:
    SEEN.clear()
    h = RouteHarness(params={"freeswitch": ["10.0.1.50"]})
    assert h.run(trusting_route, INVITE, source=Endpoint("UDP", "10.0.1.50", 5999)).reply_code == 200
    assert SEEN[0][:3] == (1, True, "freeswitch")


@pytest.mark.parametrize("call", [
    lambda msg: msg.check_address("1", "10.0.0.1"),
    lambda msg: msg.check_address(1, "10.0.0.1", 70000),
    lambda msg: msg.check_address(1, "10.0.0.1", 0, "carrier-pigeon"),
    lambda msg: msg.check_source_address(1, partition="other"),
])
def test_bad_arguments_are_the_routes_error(call: Any) -> None:
    def route(msg):
        call(msg)
        msg.sl_send_reply(200)

    result = RouteHarness(params={"freeswitch": ["10.0.0.1"]}).run(route, INVITE)
    assert result.reply_code == 500 and isinstance(result.error, ValueError)


def test_only_a_match_is_true_as_in_the_script() -> None:
    assert not AddressResult.NO_MATCH and not AddressResult.GROUP_NOT_FOUND and AddressResult.MATCH
    assert AddressResult.NO_MATCH == -1 and AddressResult.GROUP_NOT_FOUND == -2 and AddressResult.MATCH == 1


# -- MI ---------------------------------------------------------------------------------------------------

def mi_world(settings: PermissionsSettings) -> tuple[MICommands, Permissions]:
    w = World()
    permissions = Permissions(settings)
    parts = RunningNode(w.node, None, w.location, w.registrar, permissions=permissions)  # type: ignore[arg-type]
    return MICommands(parts), permissions


def result_of(d: Deferred) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the command did not answer at once"
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_mi_address_dump_subnet_dump_and_reload_shapes() -> None:
    mi, _ = mi_world(PermissionsSettings(address=(
        parse_row({"grp": 1, "ip": "10.0.1.50", "context_info": "fs1"}),
        parse_row({"grp": 2, "ip": "192.168.0.0", "mask": 16, "port": 5060, "proto": "udp", "pattern": "sip:*"}))))
    assert result_of(mi.execute("address_dump")) == {"Partitions": [{"name": "default", "Destinations": [
        {"grp": 1, "ip": "10.0.1.50", "mask": "32", "port": 0, "proto": "any", "pattern": "",
         "context_info": "fs1"}]}]}
    assert result_of(mi.execute("subnet_dump", ["default"])) == {"part": "default", "Destinations": [
        {"grp": 2, "ip": "192.168.0.0", "mask": "16", "port": 5060, "proto": "udp", "pattern": "sip:*",
         "context_info": ""}]}
    assert result_of(mi.execute("address_reload")) == "OK"
    with pytest.raises(MIError, match="400 Trusted partition not found"):
        result_of(mi.execute("address_dump", {"partition": "carriers"}))
    stats = result_of(mi.execute("get_statistics", [["permissions:"]]))
    assert stats == {"permissions:address_rows": 1, "permissions:subnet_rows": 1, "permissions:reloads": 1,
                     "permissions:reload_failures": 0, "permissions:skipped_rows": 0}


def test_mi_commands_exist_only_with_address_groups() -> None:
    w = World()
    mi = MICommands(RunningNode(w.node, None, w.location, w.registrar))  # type: ignore[arg-type]
    assert "address_dump" not in mi.names()
    with pytest.raises(MIError, match="Method not found"):
        result_of(mi.execute("address_reload"))



# -- on a node (the verbs as the node runs them, IPv6 sources included) ------------------------------------

def test_node_check_source_address_ipv6_subnet_and_port() -> None:
    def route(msg):
        if msg.check_source_address(4):
            msg.sl_send_reply(200, f"Trusted {msg.context_info}")
        else:
            msg.sl_send_reply(403, f"Forbidden {int(msg.check_source_address(4))}")

    w = World(module(route))
    permissions = Permissions(PermissionsSettings(address=(
        parse_row({"grp": 4, "ip": "2001:db8:10::", "mask": 48, "port": 5060, "context_info": "v6-media"}),)))
    node = Node(w.clock, w.sender, w.registrar, module(route), w.node.settings, permissions=permissions)
    node.add_local_endpoint(LOCAL_UDP)

    def ask(host: str, port: int) -> str:
        text = sip("OPTIONS sip:[::1]:5060 SIP/2.0", f"Via: SIP/2.0/UDP [{host}]:{port};branch=z9hG4bK-v6{port}",
                   "Max-Forwards: 70", "From: <sip:a@example.com>;tag=1", "To: <sip:b@example.com>",
                   f"Call-ID: v6-{host}-{port}", "CSeq: 1 OPTIONS")
        node.message_received(wire(text), Flow(LOCAL_UDP, Endpoint("UDP", host, port)))
        return only(w.sender.take()).message.reason

    assert ask("2001:db8:10:ff::7", 5060) == "Trusted v6-media"
    assert ask("2001:db8:10:ff::7", 5061) == "Forbidden -1"   # the row's port only
    assert ask("2001:db8:11::7", 5060) == "Forbidden -1"      # outside the /48
