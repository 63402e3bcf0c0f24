"""The dispatcher's pure parts: rows and state (edgeproxy.dispatcher.table), OpenSIPS's hash and the
selection algorithms (edgeproxy.dispatcher.select), the [dispatcher] section, and the Dispatcher's
reload and state changes. No network, no reactor (the prober is tested with task.Clock)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock

from edgeproxy.config import ConfigError, load_config
from edgeproxy.dispatcher import (
    INACTIVE,
    PROBING,
    Dispatcher,
    DispatcherSettings,
    build_table,
    ds_hash,
    parse_flags,
    select,
    uri_hash_keys,
)
from edgeproxy.dispatcher.prober import Prober
from edgeproxy.sip.uri import SipURI, parse_uri

ROWS = [
    {"setid": 1, "destination": "sip:127.0.0.21:5060", "weight": 1},
    {"setid": 1, "destination": "sip:127.0.0.22:5060", "weight": 2},
    {"setid": 1, "destination": "sip:127.0.0.23:5060", "weight": 3},
]


def table(rows=ROWS):
    t, errors = build_table(rows)
    assert errors == []
    return t


def never(n: int) -> int:
    raise AssertionError("rand() called")


# -- rows ------------------------------------------------------------------------------------------------

def test_row_becomes_destination_with_du_stripped_of_user_and_headers() -> None:
    t = table([{"setid": 2, "destination": "sip:fs@10.0.0.5:5080;transport=tcp?X-A=1", "attrs": "pool=a",
                "priority": 5, "description": "fs one", "socket": "udp:127.0.0.1:5060"}])
    d = t.get(2).destinations[0]
    assert d.uri == "sip:fs@10.0.0.5:5080;transport=tcp?X-A=1"
    assert str(d.dst_uri) == "sip:10.0.0.5:5080;transport=tcp"
    assert (d.host, d.port, d.addresses) == ("10.0.0.5", 5080, ("10.0.0.5",))
    assert (d.attrs, d.priority, d.description, d.socket, d.weight) == ("pool=a", 5, "fs one", "udp:127.0.0.1:5060", 1)
    assert d.state_name == "Active"


def test_bad_rows_are_reported_one_line_each_and_the_rest_loads() -> None:
    rows = [
        {"id": 1, "setid": 1, "destination": "sip:10.0.0.1"},
        {"id": 2, "setid": None, "destination": "sip:10.0.0.2"},
        {"id": 3, "setid": 1, "destination": ""},
        {"id": 4, "setid": 1, "destination": "http://example.com/"},
        {"id": 5, "setid": 1, "destination": "sip:[bad"},
        {"id": 6, "setid": 1, "destination": "sip:10.0.0.6", "priority": "high"},
        {"id": 7, "setid": 1, "destination": "sip:10.0.0.1"},
        {"id": 8, "setid": 1, "destination": "sip:10.0.0.8", "weight": "7abc"},
    ]
    t, errors = build_table(rows)
    assert [d.uri for d in t.get(1).destinations] == ["sip:10.0.0.1", "sip:10.0.0.8"]
    assert t.get(1).destinations[1].weight == 7  # leading digits, as OpenSIPS parses CHAR weights
    assert len(errors) == 6
    assert errors[0].startswith("row id 2") and "no setid" in errors[0]
    assert "row id 4" in errors[2] and "not a sip: or sips: URI" in errors[2]
    assert "row id 7" in errors[5] and "duplicate" in errors[5]
    assert all("\n" not in e for e in errors)


def test_sets_are_ordered_by_priority_highest_first_stable() -> None:
    t = table([{"setid": 1, "destination": f"sip:10.0.0.{i}", "priority": p} for i, p in
               enumerate([0, 10, 0, 10, 5], start=1)])
    assert [d.uri for d in t.get(1).destinations] == ["sip:10.0.0.2", "sip:10.0.0.4", "sip:10.0.0.5",
                                                      "sip:10.0.0.1", "sip:10.0.0.3"]


def test_state_column_read_only_with_persistent_state() -> None:
    rows = [{"setid": 1, "destination": "sip:10.0.0.1", "state": 1}, {"setid": 1, "destination": "sip:10.0.0.2",
                                                                        "state": 2}]
    t, _ = build_table(rows)
    assert [d.state_name for d in t.get(1).destinations] == ["Inactive", "Probing"]
    t, _ = build_table(rows, persistent_state=False)
    assert [d.state_name for d in t.get(1).destinations] == ["Active", "Active"]


def test_mark_follows_opensips_rules_including_threshold_and_quirk() -> None:
    d = table().get(1).destinations[0]
    assert not d.mark("p", 3) and not d.mark("p", 3) and d.active  # two of three
    assert d.mark("p", 3) and d.flags == PROBING
    assert d.mark("a", 3) and d.active and d.failure_count == 0
    assert d.mark("i", 3) and d.flags == INACTIVE
    assert d.mark("p", 3) and d.active  # OpenSIPS: "p" on an inactive destination makes it active


# -- hash -------------------------------------------------------------------------------------------------

def _mix(h: int) -> int:
    h &= 0xFFFFFFFF
    return (((h + (h >> 11)) + ((h >> 13) + (h >> 23))) & 0xFFFFFFFF) or 1


def test_hash_is_opensips_ds_get_hash() -> None:
    # "abcd": one big-endian word w = 0x61626364, plus w ^ (w >> 3); the empty tail adds 0
    w = 0x61626364
    assert ds_hash("abcd") == _mix(w ^ (w >> 3))
    # "abcde": the word, then the tail byte as a word of its own
    assert ds_hash("abcde") == _mix((w ^ (w >> 3)) + (0x65 ^ (0x65 >> 3)))
    # two keys are summed before mixing
    assert ds_hash("abcd", "e") == ds_hash("abcde")
    # bytes are C chars (signed on x86): 0xC3 is -61 in the tail word
    tail = (-61) & 0xFFFFFFFF
    assert ds_hash(b"\xc3") == _mix(tail ^ (tail >> 3))
    assert ds_hash("") == 1  # never 0


def test_uri_hash_keys() -> None:
    def keys(text: str, user_only: bool = False):
        uri = parse_uri(text)
        assert isinstance(uri, SipURI)
        return uri_hash_keys(uri, user_only)

    assert keys("sip:alice@example.com") == ("alice", "example.com")
    assert keys("sip:alice@example.com:5060") == ("alice", "example.com")  # the default port is left out
    assert keys("sip:alice@example.com:5070") == ("alice", "example.com:5070")
    assert keys("sips:alice@example.com:5061") == ("alice", "example.com")
    assert keys("sip:alice@example.com:5070", user_only=True) == ("alice", None)


# -- selection ----------------------------------------------------------------------------------------------

def test_flags() -> None:
    assert parse_flags("f") .failover and parse_flags(" F u ").user_only and parse_flags("Da").use_default
    with pytest.raises(ValueError, match="unknown flag"):
        parse_flags("s")


def test_round_robin_weighted_cycle() -> None:
    dset = table().get(1)
    picks = [select(dset, 4, parse_flags(""), None, never)[0].uri[-7:-5] for _ in range(12)]
    assert picks == ["21", "22", "22", "23", "23", "23"] * 2


def test_round_robin_equal_weights_and_inactive_skipped() -> None:
    dset = table([dict(r, weight=1) for r in ROWS]).get(1)
    dset.destinations[1].flags = INACTIVE
    counts = Counter(select(dset, 4, parse_flags(""), None, never)[0].uri for _ in range(300))
    assert counts == {"sip:127.0.0.21:5060": 150, "sip:127.0.0.23:5060": 150}


def test_hash_algorithms_are_stable_and_weighted() -> None:
    dset = table().get(1)
    flags = parse_flags("")
    counts = Counter(select(dset, 0, flags, ds_hash(f"call-{i}@x"), never)[0].uri for i in range(6000))
    for uri, share in zip(sorted(counts), (1 / 6, 2 / 6, 3 / 6)):
        assert abs(counts[uri] / 6000 - share) < 0.05, counts
    h = ds_hash("one-call@x")
    assert len({select(dset, 0, flags, h, never)[0].uri for _ in range(20)}) == 1


def test_hash_repicks_among_active_when_chosen_is_down() -> None:
    dset = table().get(1)
    h = next(ds_hash(f"c{i}") for i in range(1000) if select(dset, 0, parse_flags(""), ds_hash(f"c{i}"),
                                                              never)[0].uri.endswith("23:5060"))
    dset.destinations[2].flags = PROBING
    assert select(dset, 0, parse_flags(""), h, never)[0].uri != "sip:127.0.0.23:5060"
    assert select(dset, 0, parse_flags(""), None, never) is None  # missing hash input: -1


def test_failover_list_order_and_default_flag() -> None:
    rows = [{"setid": 1, "destination": f"sip:10.0.0.{i}"} for i in range(1, 5)]
    dset = table(rows).get(1)
    chosen = select(dset, 8, parse_flags("f"), None, never)
    assert [d.uri for d in chosen] == ["sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3", "sip:10.0.0.4"]
    dset.destinations[1].flags = INACTIVE
    chosen = select(dset, 8, parse_flags("fd"), None, never)  # .4 is the default: last, used when needed
    assert [d.uri for d in chosen] == ["sip:10.0.0.1", "sip:10.0.0.3", "sip:10.0.0.4"]
    assert [d.uri for d in select(dset, 8, parse_flags("f"), None, never, max_results=2)] == \
        ["sip:10.0.0.1", "sip:10.0.0.3"]
    for d in dset.destinations[:3]:
        d.flags = INACTIVE
    assert [d.uri for d in select(dset, 8, parse_flags("d"), None, never)] == ["sip:10.0.0.4"]
    dset.destinations[3].flags = INACTIVE
    assert select(dset, 8, parse_flags("fd"), None, never) is None


def test_random_is_weighted() -> None:
    dset = table().get(1)
    draws = iter(range(6))
    picks = [select(dset, 6, parse_flags(""), None, lambda n: next(draws) % n)[0].uri[-7:-5] for _ in range(6)]
    assert picks == ["21", "22", "22", "23", "23", "23"]


# -- settings and the Dispatcher ------------------------------------------------------------------------------

def test_config_section(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('[dispatcher]\nds_ping_interval = 5\noptions_reply_codes = [403]\n'
                    '[[dispatcher.destinations]]\nsetid = 1\ndestination = "sip:127.0.0.21"\nweight = 2\n')
    config = load_config(str(path))
    assert config.dispatcher is not None and config.dispatcher.probing
    assert config.dispatcher.alive(403) and not config.dispatcher.alive(404)
    assert config.dispatcher.destinations[0]["weight"] == 2
    assert load_config().dispatcher is None
    path.write_text('[dispatcher]\n[[dispatcher.destinations]]\nsetid = 1\ndestination = "http://x"\n')
    with pytest.raises(ConfigError, match=r"dispatcher.destinations\[0\].*not a sip"):
        load_config(str(path))
    path.write_text('[dispatcher]\n[[dispatcher.destinations]]\nsetid = 1\ndestinaton = "sip:x"\n')
    with pytest.raises(ConfigError, match='did you mean "destination"'):
        load_config(str(path))
    path.write_text('[dispatcher]\nds_probing_treshold = 2\n')
    with pytest.raises(ConfigError, match='did you mean "ds_probing_threshold"'):
        load_config(str(path))


def test_reload_keeps_state_of_remaining_destinations_and_old_table_on_failure() -> None:
    rows = list(ROWS)
    answers = [succeed(rows)]
    ds = Dispatcher(DispatcherSettings(db_url="mysql://root@127.0.0.1/test"), load_rows=lambda: answers.pop(0))
    assert ds.reload().result == 3
    ds.set_state(ds.table.find(1, "sip:127.0.0.22:5060"), "i", "test")
    answers.append(succeed(rows + [{"setid": 1, "destination": "sip:127.0.0.24:5060"}, {"setid": "x"}]))
    assert ds.reload().result == 4
    assert ds.table.find(1, "SIP:127.0.0.22:5060").state_name == "Inactive"
    assert ds.stats["bad_rows"] == 1
    answers.append(fail(RuntimeError("db down")))
    d = ds.reload()
    d.addErrback(lambda f: None)
    assert len(ds.table) == 4


def test_probe_results_and_listeners() -> None:
    ds = Dispatcher(DispatcherSettings(destinations=tuple(ROWS), ds_probing_mode=1, ds_probing_threshold=2,
                                       options_reply_codes=(501,)))
    shared = []
    ds.subscribe(lambda setid, uri, flags: shared.append((uri, flags)))
    d = ds.table.find(1, "sip:127.0.0.21:5060")
    ds.probe_result(d, 408)
    assert d.active
    ds.probe_result(d, 408)
    assert d.state_name == "Probing" and shared == [("sip:127.0.0.21:5060", PROBING)]
    ds.probe_result(d, 501)
    assert d.active and shared[-1] == ("sip:127.0.0.21:5060", 0)
    assert ds.apply_remote(1, "sip:127.0.0.21:5060", INACTIVE, "node 2") and d.state_name == "Inactive"
    assert len(shared) == 2  # a replicated state is not shared again
    assert ds.stats["state_changes"] == 3


class FakeSender:
    """Answers probes from a table of statuses (the real UAC is tested over sockets)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.status: dict[str, int] = {}
        self.sent: list[str] = []

    def send_request(self, method, uri, from_uri, timeout):
        from twisted.internet.defer import Deferred

        self.sent.append(str(uri))
        d = Deferred()
        self.clock.callLater(0.1, d.callback, self.status.get(str(uri), 200))
        return d


def test_prober_marks_down_after_threshold_and_up_on_first_good_reply() -> None:
    clock = Clock()
    ds = Dispatcher(DispatcherSettings(destinations=tuple(ROWS), ds_ping_interval=10, ds_probing_mode=1,
                                       ds_probing_threshold=3))
    sender = FakeSender(clock)
    prober = Prober(ds, sender, clock)
    sender.status["sip:127.0.0.22:5060"] = 408
    prober.start()
    clock.advance(0.1)
    dest = ds.table.find(1, "sip:127.0.0.22:5060")
    assert len(sender.sent) == 3 and dest.active
    for _ in range(2):
        clock.advance(10)
        clock.advance(0.1)
    assert dest.state_name == "Probing"  # within interval x threshold of the first failure
    sender.status.clear()
    clock.advance(10)
    clock.advance(0.1)
    assert dest.active
    assert prober.sent["sip:127.0.0.22:5060"] == 4
    ds.set_state(dest, "i", "operator")
    before = len(sender.sent)
    clock.advance(10)
    assert "sip:127.0.0.22:5060" not in sender.sent[before:]  # Inactive is never probed
    prober.stop()


def test_prober_mode_0_probes_only_probing_destinations() -> None:
    clock = Clock()
    ds = Dispatcher(DispatcherSettings(destinations=tuple(ROWS), ds_ping_interval=10))
    sender = FakeSender(clock)
    prober = Prober(ds, sender, clock)
    dest = ds.table.find(1, "sip:127.0.0.23:5060")
    ds.set_state(dest, "p", "x")
    ds.set_state(dest, "p", "x")
    ds.set_state(dest, "p", "x")
    assert dest.state_name == "Probing"
    prober.start()
    clock.advance(0.1)
    assert sender.sent == ["sip:127.0.0.23:5060"] and dest.active
    clock.advance(10)
    assert sender.sent == ["sip:127.0.0.23:5060"]
    prober.stop()


def test_mi_commands_shapes_and_errors() -> None:
    from types import SimpleNamespace

    from edgeproxy.management.dispatcher import DispatcherCommands
    from edgeproxy.management.rpc import MIError

    rows = ROWS + [{"setid": 2, "destination": "sip:10.0.0.9", "socket": "udp:127.0.0.1:5060", "attrs": "a=1",
                    "description": "spare", "priority": 3}]
    ds = Dispatcher(DispatcherSettings(destinations=tuple(rows)))
    mi = DispatcherCommands()
    mi.parts = SimpleNamespace(dispatcher=ds)  # type: ignore[assignment]
    listed = mi.ds_list()
    sets = listed["PARTITIONS"][0]["SETS"]
    assert [s["id"] for s in sets] == [1, 2]
    assert sets[0]["Destinations"][0] == {"URI": "sip:127.0.0.21:5060", "state": "Active", "first_hit_counter": 0}
    assert sets[1]["Destinations"][0] == {"URI": "sip:10.0.0.9", "state": "Active", "first_hit_counter": 0,
                                          "socket": "udp:127.0.0.1:5060", "attr": "a=1"}
    full = mi.ds_list(1)["PARTITIONS"][0]["SETS"][1]["Destinations"][0]
    assert (full["weight"], full["priority"], full["description"]) == (1, 3, "spare")
    assert mi.ds_set_state("inactive", "default:2", "SIP:10.0.0.9") == "OK"
    assert ds.table.find(2, "sip:10.0.0.9").state_name == "Inactive"
    for args, code in ((("x", "1", "sip:10.0.0.9"), 500), (("a", "one", "sip:10.0.0.9"), 500),
                       (("a", "2", "sip:10.0.0.8"), 404), (("a", "other:2", "sip:10.0.0.9"), 500)):
        with pytest.raises(MIError) as err:
            mi.ds_set_state(*args)
        assert err.value.code == code, args
    with pytest.raises(MIError, match="Unknown partition"):
        mi.ds_list(0, "other")
    empty = Dispatcher(DispatcherSettings())
    mi.parts = SimpleNamespace(dispatcher=empty)  # type: ignore[assignment]
    assert mi.ds_list() == {"PARTITIONS": [{"name": "default"}]}  # SETS absent, as OpenSIPS


def test_probe_goes_to_the_rows_uri_user_part_included() -> None:
    clock = Clock()
    rows = ({"setid": 1, "destination": "sip:fs@127.0.0.21:5060;transport=udp?X-A=1", "probe_mode": 1},)
    ds = Dispatcher(DispatcherSettings(destinations=rows, ds_ping_interval=10))
    sender = FakeSender(clock)
    prober = Prober(ds, sender, clock)
    prober.start()
    assert sender.sent == ["sip:fs@127.0.0.21:5060;transport=udp"]  # probe_mode 1: probed while Active
    prober.stop()
