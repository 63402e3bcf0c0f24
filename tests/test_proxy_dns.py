"""The proxy and RFC 3263: next hops named by a host name are located before sending, and a branch
fails over across the located targets (§4.3) -- without sockets.

Same world as ``test_proxy_node.py`` (a real Node with a ``task.Clock`` and a recording sender), plus
a :class:`FakeLocator` holding the located targets per host name, so every rule is checked on what
would be on the wire: which target got which copy, the Via branch of each attempt, what the caller
sees.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import formatEvent

from edgeproxy.dns import ServerQuery
from edgeproxy.proxy.settings import ProxySettings
from edgeproxy.interfaces import SendError
from edgeproxy.sip import Request
from edgeproxy.sip.endpoint import Endpoint
from edgeproxy.transaction import TimerSettings
from support.proxy import (
    ALICE_FLOW,
    World,
    answer,
    cancel,
    invite,
    module,
    non2xx_ack,
    only,
    requests,
    responses,
    sip,
)

TRUNK_URI = "sip:+15551234@carrier.test"
FIRST = Endpoint("UDP", "192.0.2.50", 5070)
SECOND = Endpoint("UDP", "192.0.2.51", 5070)
TCP_FIRST = Endpoint("TCP", "192.0.2.60", 5071)


class FakeLocator:
    """Located targets by host name: a list (fires at once), a Deferred (fires when the test says),
    or an exception (the location fails)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.queries: list[tuple[ServerQuery, frozenset[str]]] = []

    def locate(self, query: ServerQuery, transports: frozenset[str]) -> "Deferred[list[Endpoint]]":
        self.queries.append((query, transports))
        found = self.answers.get(query.host, [])
        if isinstance(found, Deferred):
            return found
        if isinstance(found, Exception):
            return fail(found)
        return succeed(list(found))


def trunk_route(msg: Any) -> None:
    """Relay everything to its Request-URI (a carrier trunk), record-routing initial requests."""
    if msg.has_totag():
        if msg.loose_route():
            msg.t_relay()
        return
    msg.record_route()
    msg.t_relay()


def make_world(answers: dict[str, Any], *, failover: bool = True, timers: TimerSettings | None = None) -> World:
    return World(module(trunk_route), ProxySettings(domains=("example.com",), dns_failover=failover), timers,
                 locator=FakeLocator(answers))


def call(w: World, uri: str = TRUNK_URI, **kw: Any) -> list[Any]:
    return w.receive(invite(uri=uri, **kw), ALICE_FLOW)


def branch_of(message: Request) -> str:
    return message.top_via.branch or ""


def test_invite_to_a_name_goes_to_the_first_located_target() -> None:
    w = make_world({"carrier.test": [FIRST, SECOND]})
    sent = call(w)
    out = only(sent, lambda s: s.is_request("INVITE"))
    assert out.remote == FIRST
    assert out.message.top_via.transport == "UDP"
    assert out.message.uri_text == TRUNK_URI  # the Request-URI is untouched: only the next hop is located
    query, transports = w.node.locator.queries[0]
    assert query == ServerQuery("carrier.test") and transports == frozenset({"UDP", "TCP"})


def test_ip_literal_next_hop_never_asks_the_locator() -> None:
    w = make_world({})
    sent = call(w, uri="sip:+1555@192.0.2.99:5080")
    assert only(sent, lambda s: s.is_request("INVITE")).remote == Endpoint("UDP", "192.0.2.99", 5080)
    assert w.node.locator.queries == []


def test_transport_error_fails_over_to_the_next_target_as_a_new_transaction() -> None:
    w = make_world({"carrier.test": [TCP_FIRST, SECOND]})
    w.sender.fail_to[TCP_FIRST] = SendError("Connection Refused")
    sent = call(w)
    invites = requests(sent, "INVITE")
    assert [s.remote for s in invites] == [TCP_FIRST, SECOND]
    assert invites[0].message.top_via.transport == "TCP" and invites[1].message.top_via.transport == "UDP"
    assert branch_of(invites[0].message) != branch_of(invites[1].message)  # §4.3: a new transaction
    # the Record-Route of each copy faces the listener it leaves by
    assert "transport=tcp" in invites[0].message.headers.get("record-route")
    assert "transport=tcp" not in invites[1].message.headers.get("record-route")
    assert [s.message.status for s in responses(sent)] == [100]  # the caller sees no failure
    ok = answer(invites[1].message, 200)
    forwarded = w.receive(ok, ALICE_FLOW)
    assert [s.message.status for s in responses(forwarded)] == [200]
    w.assert_drained()


def test_no_response_at_all_fails_over_after_timer_b() -> None:
    w = make_world({"carrier.test": [FIRST, SECOND]}, timers=TimerSettings(t1=0.1))  # timer B 6.4 s
    sent = call(w)
    assert only(sent, lambda s: s.is_request("INVITE")).remote == FIRST
    later = w.run_for(7.0)
    invites = requests(later, "INVITE")
    assert {s.remote for s in invites} == {FIRST, SECOND}  # FIRST's retransmissions, then SECOND
    assert invites[-1].remote == SECOND
    assert responses(later) == []
    after = w.run_for(1.0)
    assert all(s.remote == SECOND for s in requests(after, "INVITE"))  # FIRST is given up
    w.receive(answer(invites[-1].message, 486), ALICE_FLOW)
    w.assert_drained()


def test_a_target_that_answered_1xx_is_not_failed_over_on_timeout() -> None:
    w = make_world({"carrier.test": [FIRST, SECOND]}, timers=TimerSettings(t1=0.1, timer_c=3.0))
    sent = call(w)
    out = only(sent, lambda s: s.is_request("INVITE")).message
    w.receive(answer(out, 180), ALICE_FLOW)
    later = w.run_for(4.0)
    assert all(s.remote == FIRST for s in requests(later, "INVITE") + requests(later, "CANCEL"))
    assert {s.message.status for s in responses(later)} == {408}  # timer C: the target is alive


def test_503_fails_over_and_the_503_is_acked_to_its_sender() -> None:
    w = make_world({"carrier.test": [FIRST, SECOND]})
    sent = call(w)
    first = only(sent, lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(first, 503), ALICE_FLOW)
    assert only(sent, lambda s: s.is_request("ACK")).remote == FIRST
    assert only(sent, lambda s: s.is_request("INVITE")).remote == SECOND
    assert responses(sent) == []
    second = only(sent, lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(second, 200), ALICE_FLOW)
    assert [s.message.status for s in responses(sent)] == [200]


def test_503_from_the_last_target_is_the_branch_answer() -> None:
    w = make_world({"carrier.test": [FIRST, SECOND]})
    first = only(call(w), lambda s: s.is_request("INVITE")).message
    second = only(w.receive(answer(first, 503), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(second, 503), ALICE_FLOW)
    assert [s.message.status for s in responses(sent)] == [500]  # §16.7 step 6: a lone 503 becomes 500
    w.assert_drained()


def test_other_failures_do_not_fail_over() -> None:
    w = make_world({"carrier.test": [FIRST, SECOND]})
    first = only(call(w), lambda s: s.is_request("INVITE")).message
    sent = w.receive(answer(first, 404), ALICE_FLOW)
    assert requests(sent, "INVITE") == []
    assert [s.message.status for s in responses(sent)] == [404]


def test_failover_can_be_switched_off() -> None:
    w = make_world({"carrier.test": [TCP_FIRST, SECOND]}, failover=False)
    w.sender.fail_to[TCP_FIRST] = SendError("Connection Refused")
    sent = call(w)
    assert [s.remote for s in requests(sent, "INVITE")] == [TCP_FIRST]
    assert [s.message.status for s in responses(sent)] == [100, 500]


def test_every_target_failing_gives_the_last_failure() -> None:
    w = make_world({"carrier.test": [TCP_FIRST, Endpoint("TCP", "192.0.2.61", 5071)]})
    for target in w.node.locator.answers["carrier.test"]:
        w.sender.fail_to[target] = SendError("Connection Refused", 477)
    sent = call(w)
    assert len(requests(sent, "INVITE")) == 2
    assert [(s.message.status, s.message.reason) for s in responses(sent)] == [(100, "Trying"),
                                                                               (477, "Connection Refused")]
    w.assert_drained()


def test_targets_without_a_listener_are_skipped() -> None:
    w = make_world({"carrier.test": [Endpoint("TLS", "192.0.2.70", 5061), SECOND]})  # no TLS listener
    sent = call(w)
    assert [s.remote for s in requests(sent, "INVITE")] == [SECOND]


@pytest.mark.parametrize("outcome", [[], SendError("Name Resolution Failed")])
def test_name_that_does_not_resolve_answers_at_once(outcome: Any) -> None:
    w = make_world({"carrier.test": outcome})
    sent = call(w)
    assert requests(sent, "INVITE") == []
    final = responses(sent)[-1].message
    assert final.status == 500  # the branch's 503 Name Resolution Failed, §16.7 step 6
    assert final.to_tag and final.headers.values("via")[0].startswith("SIP/2.0/UDP 192.0.2.20:5060")
    w.assert_drained()


def test_name_resolution_failure_is_what_failure_route_sees() -> None:
    seen: list[tuple[int, str]] = []

    def failure_route(msg: Any) -> None:
        seen.append((msg.reply_code, msg.reply.reason))

    def route(msg: Any) -> None:
        msg.t_on_failure(failure_route)
        msg.t_relay()

    w = World(module(route), ProxySettings(domains=("example.com",)), locator=FakeLocator({}))
    w.receive(invite(uri=TRUNK_URI), ALICE_FLOW)
    assert seen == [(503, "Name Resolution Failed")]


def test_location_in_progress_then_cancel_gives_487_and_sends_nothing() -> None:
    pending: Deferred = Deferred()
    w = make_world({"carrier.test": pending})
    sent = call(w)
    assert requests(sent, "INVITE") == [] and [s.message.status for s in responses(sent)] == [100]
    sent = w.receive(cancel(to="+15551234"), ALICE_FLOW)
    assert [s.message.status for s in responses(sent)] == [200]
    pending.callback([FIRST])
    sent = w.sender.take()
    assert requests(sent, "INVITE") == []
    final = only(sent).message
    assert final.status == 487
    w.receive(non2xx_ack(final, uri=TRUNK_URI), ALICE_FLOW)
    w.assert_drained()


def test_location_that_completes_later_sends_then() -> None:
    pending: Deferred = Deferred()
    w = make_world({"carrier.test": pending})
    call(w)
    pending.callback([FIRST])
    assert only(w.sender.take(), lambda s: s.is_request("INVITE")).remote == FIRST


def test_tls_target_carries_the_uri_domain_for_the_certificate_check() -> None:
    w = make_world({"carrier.test": [Endpoint("TLS", "192.0.2.70", 5061)]})
    w.sender.listeners["TLS"] = Endpoint("TLS", "127.0.0.1", 5061)
    sent = call(w, uri="sips:+1555@carrier.test")
    out = only(sent, lambda s: s.is_request("INVITE"))
    assert out.destination.server_name == "carrier.test"  # RFC 5922 §4: the domain, not the target
    assert out.message.top_via.transport == "TLS"
    assert w.node.locator.queries[0][0] == ServerQuery("carrier.test", secure=True)


def test_route_header_name_is_located_not_the_request_uri() -> None:
    w = make_world({"proxy.carrier.test": [SECOND]})
    sent = call(w, uri="sip:bob@192.0.2.99", extra=("Route: <sip:proxy.carrier.test;lr>",))
    # an initial request with a pre-loaded Route to someone else: trunk_route relays it by the Route
    assert only(sent, lambda s: s.is_request("INVITE")).remote == SECOND
    assert w.node.locator.queries[0][0] == ServerQuery("proxy.carrier.test")


def test_ack_for_2xx_is_forwarded_statelessly_to_the_located_target() -> None:
    w = make_world({"carrier.test": [SECOND]})
    ack = sip(
        "ACK sip:+15551234@192.0.2.99 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKack1;rport",
        "Max-Forwards: 70",
        "Route: <sip:127.0.0.1:5060;lr>, <sip:carrier.test;lr>",
        'From: "Alice" <sip:alice@example.com>;tag=a1',
        "To: <sip:+15551234@carrier.test>;tag=t1",
        "Call-ID: ack-1",
        "CSeq: 1 ACK",
    )
    sent = w.receive(ack, ALICE_FLOW)
    out = only(sent)
    assert out.is_request("ACK") and out.remote == SECOND
    assert out.message.top_via.transport == "UDP"


def _lines_about(logged: list[dict[str, Any]], text: str) -> list[str]:
    """The node's log lines (edgeproxy namespaces) that mention ``text``."""
    out = [formatEvent(e) for e in logged if str(e.get("log_namespace", "")).startswith("edgeproxy")]
    return [line for line in out if text in line]


def test_a_burst_of_failovers_from_one_dead_target_is_two_lines(logged: list[dict[str, Any]]) -> None:
    """Issue 16: a carrier's dead first server was a line per call ("trying the next target"); through
    the node's NoiseLog it is the first per target per interval, then one line with the count."""
    w = make_world({"carrier.test": [TCP_FIRST, SECOND]})
    w.sender.fail_to[TCP_FIRST] = SendError("Connection Refused")
    n = 300
    for i in range(n):
        invites = requests(call(w, branch=f"z9hG4bKburst{i}", call_id=f"burst-{i}@192.0.2.20"), "INVITE")
        assert [s.remote for s in invites] == [TCP_FIRST, SECOND]  # each call still fails over
    w.clock.advance(w.node.noise.interval)
    lines = _lines_about(logged, str(TCP_FIRST))
    assert len(lines) == 2, lines
    assert "INVITE to tcp:192.0.2.60:5071 failed (Connection Refused): trying the next target of carrier.test" \
        in lines[0]
    assert f"{n - 1} failover" in lines[1]
    assert w.node.noise.totals["failover"] == n


def test_branches_stranded_by_a_node_going_down_are_two_lines(logged: list[dict[str, Any]]) -> None:
    """Issue 16: ``end_branches_to`` (a cluster node declared down) said a line per stranded branch;
    now one per destination per interval, with the count. Every branch still ends with 480."""
    w = make_world({"carrier.test": [FIRST]})
    n = 200
    for i in range(n):
        call(w, branch=f"z9hG4bKstrand{i}", call_id=f"strand-{i}@192.0.2.20")
    ended = w.node.proxy.end_branches_to(lambda host: host == FIRST.host, FIRST.port, "cluster node 2 is down")
    assert ended == n
    finals = [s.message.status for s in responses(w.run_for(0.1)) if s.message.status >= 300]
    assert finals == [480] * n
    w.clock.advance(w.node.noise.interval)
    lines = _lines_about(logged, str(FIRST))
    assert len(lines) == 2, lines
    assert "cluster node 2 is down" in lines[0] and f"{n - 1} branch ended" in lines[1]
