"""The sans-IO dialog table (OpenSIPS dialog): states, matching, validate_dialog, profiles, lifetimes
and the BYEs it builds -- driven directly with SIP text and numbers for time, no reactor."""

from __future__ import annotations

import pytest

from edgeproxy.config import load_config
from edgeproxy.config_error import ConfigError
from edgeproxy.dialog import DialogSettings, DialogState, DialogTable, ProfileError
from edgeproxy.sip import Request, Response, parse_datagram
from edgeproxy.sip.endpoint import Destination, Endpoint, Flow

LOCAL = Endpoint("UDP", "127.0.0.1", 5060)
CALLER = Destination(Endpoint("UDP", "192.0.2.20", 5060))
SETTINGS = DialogSettings(default_timeout=60, profiles_with_value=("caller",), profiles_no_value=("trunk",))


def msg(text: str) -> Request | Response:
    parsed = parse_datagram(text.replace("\n", "\r\n").encode() + b"Content-Length: 0\r\n\r\n")
    assert parsed is not None
    return parsed


def invite(call_id: str = "c1", tag: str = "a1") -> Request:
    r = msg(f"INVITE sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bK1\n"
            f"From: \"A\" <sip:alice@example.com>;tag={tag}\nTo: <sip:bob@example.com>\nCall-ID: {call_id}\n"
            f"CSeq: 10 INVITE\nContact: <sip:alice@192.0.2.20:5060>\n")
    assert isinstance(r, Request)
    return r


def ok(status: int = 200, tag: str = "b1") -> Response:
    r = msg(f"SIP/2.0 {status} X\nVia: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bK1\n"
            f"From: \"A\" <sip:alice@example.com>;tag=a1\nTo: <sip:bob@example.com>;tag={tag}\nCall-ID: c1\n"
            f"CSeq: 10 INVITE\nContact: <sip:bob@192.0.2.10:5062>\n")
    assert isinstance(r, Response)
    return r


def request(method: str, cseq: int, from_tag: str = "a1", to_tag: str = "b1",
            uri: str = "sip:bob@192.0.2.10:5062") -> Request:
    r = msg(f"{method} {uri} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bK{cseq}{method}\n"
            f"From: <sip:x@example.com>;tag={from_tag}\nTo: <sip:y@example.com>;tag={to_tag}\nCall-ID: c1\n"
            f"CSeq: {cseq} {method}\n")
    assert isinstance(r, Request)
    return r


def confirmed(t: DialogTable, now: float = 0.0, flags: str = "B"):  # type: ignore[no-untyped-def]
    d = t.create(invite(), now, None, (), flags)
    assert t.confirm(d, ok(), now, None, ("<sip:10.0.0.9;lr>",))
    return d


def test_state_counts_and_stats() -> None:
    t = DialogTable(SETTINGS)
    d = t.create(invite(), 0, None, (), "B")
    assert t.create(invite(), 0, None, ()) is d  # create_dialog() again: the same dialog
    assert (t.count(DialogState.UNCONFIRMED), t.stats["processed_dialogs"]) == (1, 1)
    t.provisional(d, ok(180))
    assert t.early == 1
    t.confirm(d, ok(), 1.0, None, ())
    assert (t.early, t.active, d.timeout_at) == (0, 1, 61.0)
    assert not t.confirm(d, ok(tag="other"), 1.0, None, ())  # a second fork's 2xx
    assert t.in_dialog(d, request("ACK", 10), True) is None and d.state == DialogState.CONFIRMED
    assert t.in_dialog(d, request("BYE", 11), True) == "Upstream BYE"
    assert len(t) == 0 and t.active == 0 and d.state == DialogState.DELETED


def test_match_needs_both_tags_either_direction() -> None:
    t = DialogTable(SETTINGS)
    d = confirmed(t)
    assert t.match(request("BYE", 11)) == (d, True)
    assert t.match(request("BYE", 1, from_tag="b1", to_tag="a1", uri="sip:alice@192.0.2.20:5060")) == (d, False)
    assert t.match(request("BYE", 11, to_tag="evil")) is None
    assert t.match(request("BYE", 11, from_tag="evil")) is None


def test_validate_dialog_codes() -> None:
    t = DialogTable(SETTINGS)
    d = confirmed(t)
    assert t.validate(d, request("ACK", 10), True) == 1
    assert t.validate(d, request("ACK", 9), True) == -1
    assert t.validate(d, request("BYE", 10), True) == -1  # not above the INVITE's
    assert t.validate(d, request("BYE", 11, uri="sip:bob@192.0.2.99"), True) == -2
    assert t.validate(d, request("BYE", 1, "b1", "a1", "sip:alice@192.0.2.20:5060"), False) == 1


def test_byes_are_built_from_what_was_seen() -> None:
    t = DialogTable(SETTINGS)
    d = confirmed(t)
    t.in_dialog(d, request("INFO", 12), True)
    (to_callee, d1, callee1), (to_caller, d2, callee2) = t.end(d, "MI Termination", [("Reason", "SIP;cause=200")])
    assert (d1, callee1, d2, callee2) == (d, True, d, False)
    assert to_callee.uri_text == "sip:bob@192.0.2.10:5062" and to_callee.cseq.number == 13
    assert to_callee.headers.get("route") == "<sip:10.0.0.9;lr>"
    assert to_callee.from_tag == "a1" and to_callee.to_tag == "b1" and to_callee.headers.get("reason")
    assert to_caller.uri_text == "sip:alice@192.0.2.20:5060" and to_caller.cseq.number == 1
    assert to_caller.from_tag == "b1" and to_caller.to_tag == "a1" and not to_caller.routes
    assert to_caller.headers.get("to") == '"A" <sip:alice@example.com>;tag=a1'
    assert t.end(d, "again") == []


def test_lifetime_expiry_and_retiming() -> None:
    t = DialogTable(SETTINGS)
    d = confirmed(t, flags="B")
    assert t.next_deadline() == 60.0
    t.set_timeout(d, 5, 10.0)  # $DLG_timeout = 5 at t=10: ends at 15
    assert t.next_deadline() == 15.0 and t.timeout_left(d, 12.0) == 3
    assert t.expire(14.9) == []
    assert len(t.expire(15.0)) == 2 and t.stats["expired_dialogs"] == 1 and t.next_deadline() is None
    silent = confirmed(DialogTable(SETTINGS), flags="")
    assert silent.bye_on_timeout is False


def test_flow_closed_ends_only_that_flows_confirmed_dialogs() -> None:
    t = DialogTable(SETTINGS)
    flow = Flow(Endpoint("WSS", "127.0.0.1", 443), Endpoint("WSS", "127.0.0.1", 40000), 3)
    d = t.create(invite(), 0, flow, ())
    other = t.create(invite("c2"), 0, None, ())
    assert t.flow_closed(Flow(LOCAL, CALLER.remote)) == ([], [])
    t.confirm(d, ok(), 0, None, ())
    out, early = t.flow_closed(flow)
    assert early == []
    assert [(x, callee) for _, x, callee in out] == [(d, True), (d, False)]
    assert d.state == DialogState.DELETED and other.state == DialogState.UNCONFIRMED


def test_profiles_count_exactly_and_release_on_every_end() -> None:
    t = DialogTable(SETTINGS)
    a = t.create(invite("c1"), 0, None, ())
    b = t.create(invite("c2"), 0, None, ())
    t.set_profile(a, "caller", "alice")
    t.set_profile(b, "caller", "alice")
    t.set_profile(b, "trunk", "ignored value")
    assert t.profile_size("caller", "alice") == 2 and t.profile_size("caller") == 2
    assert t.profile_size("trunk") == 1 and t.in_profile(b, "trunk") and not t.in_profile(a, "trunk")
    assert t.profile_dialogs("caller", "alice") == [a, b]
    with pytest.raises(ProfileError):
        t.set_profile(a, "caller")  # valued profile without a value
    with pytest.raises(ProfileError):
        t.set_profile(a, "nosuch", "x")
    t.fail(a, 487)
    assert t.profile_size("caller", "alice") == 1 and t.stats["failed_dialogs"] == 1
    assert t.unset_profile(b, "caller", "alice") and t.profile_size("caller") == 0
    t.fail(b, 0)
    assert t.profile_size("trunk") == 0 and t.profiles.counts == {"caller": {}, "trunk": {}}


def test_late_2xx_revives_a_failed_dialog_with_its_profiles() -> None:
    t = DialogTable(SETTINGS)
    d = t.create(invite(), 0, None, ())
    t.set_profile(d, "caller", "alice")
    t.fail(d, 487)
    assert t.profile_size("caller") == 0
    assert t.confirm(d, ok(), 1, None, ())
    assert t.active == 1 and t.profile_size("caller", "alice") == 1 and len(t) == 1


def test_find_by_did_or_call_id() -> None:
    t = DialogTable(SETTINGS)
    d = confirmed(t)
    assert t.find(d.did) == [d] and t.find("c1") == [d] and t.find("nope") == [] and t.find("zz.1") == []
    assert d.db_id == (d.h_entry << 32) + d.h_id


def test_dialog_section_in_the_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "edge.toml"
    path.write_text('[dialog]\ndefault_timeout = 7200\nprofiles_with_value = "caller;trunk"\n'
                    'profiles_no_value = ["calls"]\n')
    c = load_config(str(path))
    assert c.dialog == DialogSettings(7200, ("caller", "trunk"), ("calls",))
    path.write_text('[dialog]\ndefault_timout = 5\n')
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(str(path))
    path.write_text('[dialog]\nprofiles_with_value = ["a b"]\n')
    with pytest.raises(ConfigError, match="profile name"):
        load_config(str(path))
    assert load_config().dialog.default_timeout == 43200


class FakeLink:
    """Two ProfileReplications wired to each other, as two nodes' clusters would carry their data."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.peer: FakeLink | None = None
        self.handler = None
        self.subscribers: list = []
        self.sent: list[str] = []

    def send_all(self, cluster_id: int, capability: str, payload: str) -> int:
        self.sent.append(payload)
        if self.peer is not None and self.peer.handler is not None:
            self.peer.handler(cluster_id, self.node_id, payload)
            return 1
        return 0

    def register_capability(self, name: str, handler) -> None:  # type: ignore[no-untyped-def]
        assert name == "dialog-prof-repl"
        self.handler = handler

    def subscribe(self, callback):  # type: ignore[no-untyped-def]
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)


def test_replicated_profiles_count_the_other_nodes_calls() -> None:
    from twisted.internet.task import Clock

    from edgeproxy.dialog.replication import ProfileReplication

    settings = DialogSettings(profiles_with_value=("caller/b", "local"), profile_replication_cluster=1,
                              replicate_profiles_expire=3)
    clock = Clock()
    a, b = DialogTable(settings), DialogTable(settings)
    la, lb = FakeLink(1), FakeLink(2)
    la.peer, lb.peer = lb, la
    ra = ProfileReplication(a.profiles, la, 1, clock, 0.2, 3)
    rb = ProfileReplication(b.profiles, lb, 1, clock, 0.2, 3)
    ra.start()
    rb.start()
    d1 = a.create(invite("c1"), 0, None, ())
    a.set_profile(d1, "caller", "alice")
    a.set_profile(d1, "local", "alice")
    clock.advance(0.2)
    assert b.profile_size("caller", "alice") == 1 and b.profile_size("caller") == 1
    assert b.profile_size("local", "alice") == 0  # not a /b profile: per node
    d2 = b.create(invite("c2"), 0, None, ())
    b.set_profile(d2, "caller", "alice")
    clock.advance(0.2)
    assert a.profile_size("caller", "alice") == 2 and b.profile_size("caller", "alice") == 2
    a.fail(d1, 487)  # the call on A ends: B sees it within a tick
    clock.advance(0.2)
    assert b.profile_size("caller", "alice") == 1
    sent = len(la.sent)
    clock.advance(0.2)
    assert len(la.sent) == sent  # nothing changed: nothing sent (until the keep-alive)
    # a peer declared down stops counting at once; a silent one after replicate_profiles_expire
    for callback in la.subscribers:
        callback(2, False)
    assert a.profile_size("caller", "alice") == 0
    rb.stop()
    clock.advance(0.2)
    assert a.profile_size("caller") == 0
    ra.received(1, 2, '{"profiles": {"caller": {"alice": 5}}}')
    assert a.profile_size("caller", "alice") == 5
    clock.pump([0.2] * 20)  # 4 s of silence from node 2
    assert a.profile_size("caller", "alice") == 0 and ra.stats["expired"] == 1
    for bad in ("nonsense", '{"profiles": {"caller": {"alice": -1}}}', '{"profiles": []}', "[1]"):
        ra.received(1, 2, bad)
    assert ra.stats["refused"] == 4 and a.profile_size("caller") == 0
    ra.stop()


def test_replicated_profiles_need_a_cluster_in_the_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "edge.toml"
    path.write_text('[dialog]\nprofiles_with_value = ["caller/b"]\n')
    with pytest.raises(ConfigError, match="profile_replication_cluster"):
        load_config(str(path))
    path.write_text('[dialog]\nprofiles_with_value = ["caller/b"]\nprofile_replication_cluster = 1\n')
    with pytest.raises(ConfigError, match="cluster.my_node_id"):
        load_config(str(path))
    path.write_text('[dialog]\nprofiles_with_value = ["caller/s"]\n')
    with pytest.raises(ConfigError, match="profile name"):
        load_config(str(path))


def test_ended_calls_do_not_stay_in_the_lifetime_heap() -> None:
    """A call ended by BYE long before its 12 h lifetime must not be kept (with its strings) until
    then: the heap is compacted once most of its entries are stale."""
    t = DialogTable(DialogSettings())  # default_timeout 43200
    for i in range(2000):
        d = t.create(invite(f"churn-{i}"), i, None, ())
        assert t.confirm(d, ok(), i, None, ())
        assert t.in_dialog(d, request("BYE", 11), True) == "Upstream BYE"
    assert len(t) == 0 and t.pending_timers <= 130
    keep = t.create(invite("keep"), 0, None, (), "B")
    t.confirm(keep, ok(), 0, None, ())
    for i in range(300):
        t.set_timeout(keep, 100 + i % 7, 0)  # re-timed again and again: still one live entry
    assert t.pending_timers <= 130 and t.next_deadline() == 100 + 299 % 7
    assert len(t.expire(200)) == 2 and t.pending_timers == 0
