"""The ds_* route verbs (edgeproxy.routing.verbs, msg.ds_*) through RouteHarness, which runs the node's
own verbs: what $du becomes, the failover list, marking, ds_is_in_list, ds_count, attrs, bad input."""

from __future__ import annotations

from collections import Counter

import pytest

from edgeproxy.dispatcher import DispatcherSettings
from edgeproxy.routing.testing import RouteHarness
from edgeproxy.sip.endpoint import Endpoint

ROWS = (
    {"setid": 1, "destination": "sip:127.0.0.21:5060", "attrs": "fs=a"},
    {"setid": 1, "destination": "sip:127.0.0.22:5060", "attrs": "fs=b"},
    {"setid": 1, "destination": "sip:fs@127.0.0.23:5060", "attrs": "fs=c"},
    {"setid": 2, "destination": "sip:10.9.9.9", "weight": 0},
)


def invite(call_id: str = "c1@x", ruri: str = "sip:bob@example.com", frm: str = "sip:alice@example.com") -> str:
    return (f"INVITE {ruri} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-{call_id}\n"
            f"Max-Forwards: 70\nFrom: <{frm}>;tag=1\nTo: <{ruri}>\nCall-ID: {call_id}\nCSeq: 1 INVITE\n"
            "Contact: <sip:alice@192.0.2.20>\nContent-Length: 0\n\n")


@pytest.fixture
def harness() -> RouteHarness:
    return RouteHarness(domains=["example.com"], dispatcher=DispatcherSettings(destinations=ROWS))


def test_select_sets_du_and_relays_there(harness: RouteHarness) -> None:
    seen = {}

    def route(msg):
        seen["code"] = msg.ds_select_dst(1, 8)
        seen["attrs"] = msg.ds_attrs
        msg.t_relay()

    result = harness.run(route, invite())
    assert seen == {"code": 1, "attrs": "fs=a"}
    assert str(result.targets[0].dst_uri) == "sip:127.0.0.21:5060"
    assert str(result.targets[0].uri) == "sip:bob@example.com"  # the Request-URI is left alone
    assert harness.dispatcher.table.find(1, "sip:127.0.0.21:5060").first_hit_counter == 1


def test_round_robin_through_the_verb(harness: RouteHarness) -> None:
    hops = Counter()

    def route(msg):
        assert msg.ds_select_dst(1, 4) == 1
        hops[str(msg.du)] += 1
        msg.t_relay()

    for i in range(30):
        harness.run(route, invite(f"c{i}"))
    assert hops == {"sip:127.0.0.21:5060": 10, "sip:127.0.0.22:5060": 10, "sip:127.0.0.23:5060": 10}


def test_failover_list_next_and_mark(harness: RouteHarness) -> None:
    steps = []

    def route(msg):
        steps.append(msg.ds_select_dst(1, 8, "f"))
        steps.append((str(msg.du), msg.ds_attrs))
        steps.append(msg.ds_mark_dst("i"))  # the destination tried: .21
        steps.append(msg.ds_next_dst())
        steps.append((str(msg.du), msg.ds_attrs))
        steps.append(msg.ds_next_dst())
        steps.append((str(msg.du), msg.ds_attrs))  # the user part is not in $du
        steps.append(msg.ds_next_dst())
        msg.sl_send_reply(503, "No more")

    harness.run(route, invite())
    assert steps == [1, ("sip:127.0.0.21:5060", "fs=a"), 1, 1, ("sip:127.0.0.22:5060", "fs=b"), 1,
                     ("sip:127.0.0.23:5060", "fs=c"), -1]
    assert harness.dispatcher.table.find(1, "sip:127.0.0.21:5060").state_name == "Inactive"
    codes = []
    harness.run(lambda msg: (codes.append(msg.ds_select_dst(1, 8, "f")), codes.append(str(msg.du)),
                             msg.sl_send_reply(200)), invite("c2"))
    assert codes == [1, "sip:127.0.0.22:5060"]  # the inactive one is skipped now


def test_unknown_or_dead_set_is_minus_one_not_an_exception(harness: RouteHarness) -> None:
    codes = []

    def route(msg):
        codes.append(msg.ds_select_dst(7, 4, "f"))
        codes.append(msg.ds_next_dst())
        codes.append(msg.ds_mark_dst("p"))
        codes.append(msg.ds_count(7, "a"))
        codes.append(msg.du)
        msg.sl_send_reply(503, "Service Unavailable")

    result = harness.run(route, invite())
    assert codes == [-1, -1, -1, -1, None] and result.error is None and result.reply_code == 503
    for d in harness.dispatcher.table.get(1).destinations:
        harness.dispatcher.set_state(d, "i", "test")
    result = harness.run(lambda msg: codes.append(msg.ds_select_dst(1, 0)) or msg.sl_send_reply(503), invite())
    assert codes[-1] == -1


def test_bad_flags_and_states_are_route_errors(harness: RouteHarness) -> None:
    result = harness.run(lambda msg: msg.ds_select_dst(1, 4, "s"), invite())
    assert isinstance(result.error, ValueError) and result.reply_code == 500
    result = harness.run(lambda msg: (msg.ds_select_dst(1, 4), msg.ds_mark_dst("x")), invite())
    assert isinstance(result.error, ValueError)


def test_is_in_list_and_count(harness: RouteHarness) -> None:
    out = []

    def route(msg):
        out.append(msg.ds_is_in_list())  # $si, any port, any set
        out.append(msg.ds_is_in_list("127.0.0.22", 5060, 1))
        out.append(msg.ds_is_in_list("127.0.0.22", 5070, 1))
        out.append(msg.ds_is_in_list("10.9.9.9", 5099, 2))  # no port in the URI: any port
        out.append(msg.ds_is_in_list("127.0.0.22", 0, 2))
        out.append(msg.ds_is_in_list("fs.example.com", 0))  # not an IP: no
        out.append(msg.ds_count(1, ""))
        out.append(msg.ds_count(1, "a"))
        msg.sl_send_reply(200)

    harness.run(route, invite(), source=Endpoint("UDP", "127.0.0.21", 5060))
    harness.dispatcher.set_state(harness.dispatcher.table.find(1, "sip:127.0.0.22:5060"), "i", "test")
    harness.run(route, invite(), source=Endpoint("UDP", "192.0.2.1", 5060))
    assert out[:8] == [True, True, False, True, False, False, 3, 3]
    assert out[8:] == [False, True, False, True, False, False, 3, 2]
    active_only = []
    harness.run(lambda msg: (active_only.append(msg.ds_is_in_list("127.0.0.22", 0, 1, active_only=True)),
                             msg.sl_send_reply(200)), invite())
    assert active_only == [False]


def test_hash_over_call_id_keeps_a_call_on_one_destination(harness: RouteHarness) -> None:
    picks = {}

    def route(msg):
        msg.ds_select_dst(1, 0)
        picks.setdefault(msg.call_id, set()).add(str(msg.du))
        msg.sl_send_reply(200)

    for i in range(50):
        for _ in range(3):
            harness.run(route, invite(f"call-{i}@x"))
    assert all(len(hops) == 1 for hops in picks.values())
    assert len({h for hops in picks.values() for h in hops}) == 3


def test_without_dispatcher_the_verbs_raise() -> None:
    h = RouteHarness(domains=["example.com"])
    result = h.run(lambda msg: msg.ds_select_dst(1, 4), invite())
    assert isinstance(result.error, RuntimeError) and result.reply_code == 500
    flags = []
    h.run(lambda msg: (flags.append(msg.ds_enabled), msg.sl_send_reply(200)), invite())
    assert flags == [False]


def test_select_domain_rewrites_the_request_uri_host(harness: RouteHarness) -> None:
    seen = []

    def route(msg):
        seen.append(msg.ds_select_domain(1, 8, "f"))
        seen.append((str(msg.ruri), msg.du))
        seen.append(msg.ds_next_domain())
        seen.append(str(msg.ruri))
        msg.t_relay()

    result = harness.run(route, invite())
    assert seen == [1, ("sip:bob@127.0.0.21:5060", None), 1, "sip:bob@127.0.0.22:5060"]
    assert str(result.targets[0].uri) == "sip:bob@127.0.0.22:5060" and result.targets[0].dst_uri is None
    tel = []
    harness.run(lambda msg: (tel.append(msg.ds_select_domain(1, 8)), msg.sl_send_reply(404)),
                invite(ruri="tel:+15551234"))
    assert tel == [-1]
