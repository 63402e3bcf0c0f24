"""The seed's three topologies as route modules (``routes/federated.py``, ``routes/redirect.py``,
``routes/failover.py``), unit-tested with :class:`edgeproxy.routing.testing.RouteHarness`: no network,
a real registrar and location table, the cluster and the shared store stood in for by
``cluster_peers``, ``homes`` (global lookup) and ``raw_query`` (``cache_raw_query``).

Addresses are the seed's: nodes 10.0.1.100 (X, "this" node) and 10.0.2.100 (Y), FreeSWITCH
10.0.1.50 / 10.0.2.50, phones 192.0.2.x, users ``user@sip.domain.com`` (usrloc ``use_domain``)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import fail
from twisted.internet.task import Clock

from edgeproxy.federation import StoreError, StoreOverloaded, StoreTimeout
from edgeproxy.location import InMemoryLocation
from edgeproxy.registrar import RegistrarSettings
from edgeproxy.routing import LookupResult
from edgeproxy.routing.testing import RouteHarness, RouteResult
from edgeproxy.sip.endpoint import Endpoint
from edgeproxy_routes import failover, federated, redirect

DOMAIN = "sip.domain.com"
X, Y = "10.0.1.100", "10.0.2.100"
FS1, FS2 = "10.0.1.50", "10.0.2.50"
PHONE = Endpoint("UDP", "192.0.2.10", 5062)
ALICE = f"sip:alice@{DOMAIN}"
ALICE_CONTACT = "sip:alice@192.0.2.10:5062"
PARAMS = {"freeswitch": [FS1, FS2], "cluster_id": 1, "domain": DOMAIN, "private_ip": X,
          "collection": "userlocation"}


def harness(**kw: Any) -> RouteHarness:
    kw.setdefault("params", dict(PARAMS))
    kw.setdefault("cluster_peers", {1: [Y]})
    return RouteHarness(domains=[DOMAIN], local=Endpoint("UDP", X, 5060),
                        settings=RegistrarSettings(use_domain=True), **kw)


def src(ip: str) -> Endpoint:
    return Endpoint("UDP", ip, 5060)


def invite(ruri: str = ALICE, *, to: str = ALICE, extra: str = "", method: str = "INVITE") -> str:
    return (f"{method} {ruri} SIP/2.0\n"
            "Via: SIP/2.0/UDP 10.0.1.50:5060;branch=z9hG4bK-seed1\n"
            "Max-Forwards: 70\n"
            f"From: <sip:fs@{DOMAIN}>;tag=fs1\n"
            f"To: <{to}>\n"
            "Call-ID: seed-call-1\n"
            f"CSeq: 1 {method}\n"
            f"Contact: <sip:fs@{FS1}:5060>\n"
            f"{extra}"
            "Content-Length: 0\n\n")


def register_message_only(h: RouteHarness) -> None:
    """alice's contact accepts MESSAGE only (Contact ``methods`` parameter, RFC 3840): an INVITE
    lookup with flag ``m`` gives -2."""
    text = (f"REGISTER sip:{DOMAIN} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-rm\n"
            f"Max-Forwards: 70\nFrom: <{ALICE}>;tag=rm\nTo: <{ALICE}>\nCall-ID: reg-m\nCSeq: 1 REGISTER\n"
            f"Contact: <{ALICE_CONTACT}>;methods=\"MESSAGE\"\nExpires: 300\nContent-Length: 0\n\n")
    assert replied(h.run(failover.request_route, text, PHONE))[0] == 200


class BrokenLocation(InMemoryLocation):
    """A location table whose lookups fail (its storage is gone): ``lookup()`` gives -3."""

    def lookup(self, aor: str, method: str | None = None) -> Any:
        return fail(RuntimeError("the location table cannot be read"))


def harness_giving(code: LookupResult, *, store: bool = False) -> RouteHarness:
    """A harness whose ``lookup()`` of alice gives ``code`` for real: nobody registered (-1), a
    MESSAGE-only contact (-2, with flag ``m``), a failing location table (-3) or, for a global lookup
    (``store``), the store down with nothing local (-3)."""
    if code == LookupResult.ERROR:
        return harness(homes=StoreError("homes", ConnectionError("down"), True)) if store else \
            harness(location=BrokenLocation(Clock()))
    h = harness(homes={}) if store else harness()
    if code == LookupResult.METHOD_NOT_ALLOWED:
        register_message_only(h)
    return h


def targets(result: RouteResult) -> list[tuple[str, str | None]]:
    return [(str(t.uri), str(t.dst_uri) if t.dst_uri is not None else None) for t in result.targets]


def replied(result: RouteResult) -> tuple[int, str | None]:
    assert result.error is None, result.error
    assert not result.relayed, targets(result)
    assert len(result.replies) == 1, result.replies
    code, reason, _ = result.replies[0]
    return code, reason


def relayed(result: RouteResult) -> list[tuple[str, str | None]]:
    assert result.error is None, result.error
    assert result.relayed and not result.replies, result.replies
    return targets(result)


ALL_ROUTES = pytest.mark.parametrize("route", [federated, redirect, failover], ids=lambda m: m.__name__)


# -- the shared prelude (routes/_common.py) ---------------------------------------------------------

@ALL_ROUTES
def test_seed_prelude_max_forwards_exhausted_is_483(route) -> None:
    result = harness().run(route.request_route, invite(extra="Max-Forwards: 0\n").replace("Max-Forwards: 70\n", ""),
                           src(FS1))
    assert replied(result) == (483, "Too Many Hops")


@ALL_ROUTES
def test_seed_prelude_in_dialog_requests_follow_their_route_or_get_404(route) -> None:
    h = harness()
    bye = invite("sip:alice@192.0.2.10:5062", method="BYE").replace(f"To: <{ALICE}>", f"To: <{ALICE}>;tag=a1")
    routed = h.run(route.request_route, bye.replace("Content-Length", f"Route: <sip:{X};lr>\nContent-Length"), src(FS1))
    assert relayed(routed) == [("sip:alice@192.0.2.10:5062", None)]
    assert replied(h.run(route.request_route, bye, src(FS1))) == (404, "Not here")
    ack = invite("sip:alice@192.0.2.10:5062", method="ACK").replace(f"To: <{ALICE}>", f"To: <{ALICE}>;tag=a1")
    stray_ack = h.run(route.request_route, ack, src(FS1))
    assert not stray_ack.relayed and not stray_ack.replies and stray_ack.error is None


@ALL_ROUTES
def test_seed_prelude_options_ping_to_the_node_gets_one_200_and_nothing_else(route) -> None:
    """FreeSWITCH gateway pings: exactly one reply (the prelude once fell through to the lookup
    and sent a 404 after the 200)."""
    ping = invite(f"sip:{X}", to=f"sip:{X}", method="OPTIONS")
    result = harness().run(route.request_route, ping, src(FS1))
    assert result.replies == [(200, "OK", False)] and not result.relayed and result.error is None


@ALL_ROUTES
def test_seed_prelude_preloaded_route_to_another_host_is_refused(route) -> None:
    result = harness().run(route.request_route, invite(extra="Route: <sip:203.0.113.9;lr>\n"), src(FS1))
    assert replied(result) == (403, "Preload Route denied")


@ALL_ROUTES
def test_seed_prelude_register_is_saved_for_our_domain_only(route) -> None:
    h = harness()
    register = (f"REGISTER sip:{DOMAIN} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-r1\n"
                f"Max-Forwards: 70\nFrom: <{ALICE}>;tag=r1\nTo: <{ALICE}>\nCall-ID: reg-1\nCSeq: 1 REGISTER\n"
                f"Contact: <{ALICE_CONTACT}>\nExpires: 300\nContent-Length: 0\n\n")
    assert replied(h.run(route.request_route, register, PHONE))[0] == 200
    assert [str(b.uri) for b in h.location.get(f"alice@{DOMAIN}")] == [ALICE_CONTACT]
    foreign = register.replace(f"REGISTER sip:{DOMAIN}", "REGISTER sip:other.example").replace("reg-1", "reg-2")
    assert replied(h.run(route.request_route, foreign, PHONE)) == (403, "Forbidden")


@ALL_ROUTES
def test_seed_calls_from_endpoints_go_to_the_first_freeswitch(route) -> None:
    h = harness()
    result = h.run(route.request_route, invite(f"sip:5551234@{DOMAIN}", to=f"sip:5551234@{DOMAIN}"), PHONE)
    assert relayed(result) == [(f"sip:5551234@{DOMAIN}", f"sip:{FS1}")]
    assert result.record_routed
    no_fs = harness(params={**PARAMS, "freeswitch": []})
    assert replied(no_fs.run(route.request_route, invite(), PHONE)) == (404, "Not Found")


# -- federated: cluster_check_addr + global lookup ---------------------------------------------------

def test_seed_federated_from_a_cluster_node_local_lookup_relays_to_the_contact() -> None:
    h = harness(homes={f"alice@{DOMAIN}": [Y]})
    h.register(ALICE, ALICE_CONTACT)
    result = h.run(federated.request_route, invite(), src(Y))
    assert relayed(result) == [(ALICE_CONTACT, None)]  # no branch back to Y: the loop guard
    assert result.record_routed


def test_seed_federated_from_a_cluster_node_not_local_is_404_not_here() -> None:
    h = harness(homes={f"alice@{DOMAIN}": [Y]})  # the store says Y has her: Y itself asked, no ping-pong
    assert replied(h.run(federated.request_route, invite(), src(Y))) == (404, "Not Here")


def test_seed_federated_from_freeswitch_local_user_goes_straight_to_the_contact() -> None:
    h = harness(homes={})
    h.register(ALICE, ALICE_CONTACT)
    assert relayed(h.run(federated.request_route, invite(), src(FS2))) == [(ALICE_CONTACT, None)]


def test_seed_federated_from_freeswitch_remote_user_goes_to_her_home_node() -> None:
    h = harness(homes={f"alice@{DOMAIN}": [Y]})
    result = h.run(federated.request_route, invite(), src(FS1))
    assert relayed(result) == [(ALICE, f"sip:{Y}")]
    assert result.record_routed


def test_seed_federated_user_on_both_nodes_local_contact_first_then_the_other_node() -> None:
    h = harness(homes={f"alice@{DOMAIN}": [Y]})
    h.register(ALICE, ALICE_CONTACT)
    assert relayed(h.run(federated.request_route, invite(), src(FS1))) == [(ALICE_CONTACT, None), (ALICE, f"sip:{Y}")]


def test_seed_federated_from_freeswitch_nobody_is_404_not_found() -> None:
    h = harness(homes={})
    assert replied(h.run(federated.request_route, invite(), src(FS1))) == (404, "Not Found")


@pytest.mark.parametrize("error", [
    StoreError("homes", ConnectionError("no server"), True),
    StoreTimeout("homes", 1.0, "in the store"),
    StoreOverloaded("homes", 256),
], ids=["down", "timeout", "overloaded"])
def test_seed_federated_store_failure_is_503_with_retry_after_not_404_and_local_still_relays(error) -> None:
    """-3 (the store could not be asked) is "try another node or later", never "nobody has her"."""
    h = harness(homes=error)
    result = h.run(federated.request_route, invite(), src(FS1))
    assert replied(result) == (503, "Service Unavailable")
    assert result.reply_headers == [("Retry-After", "5")]
    h.register(ALICE, ALICE_CONTACT)
    assert relayed(h.run(federated.request_route, invite(), src(FS1))) == [(ALICE_CONTACT, None)]


def test_seed_federated_retry_after_comes_from_route_params() -> None:
    h = harness(homes=StoreOverloaded("homes", 256), params={**PARAMS, "retry_after": 2})
    result = h.run(federated.request_route, invite(), src(FS1))
    assert replied(result) == (503, "Service Unavailable") and result.reply_headers == [("Retry-After", "2")]


@pytest.mark.parametrize("source, expected", [(Y, (500, "Server Internal Error")),
                                              (FS1, (503, "Service Unavailable"))], ids=["cluster", "freeswitch"])
def test_seed_federated_lookup_codes(source, expected) -> None:
    """-1 is 404, -2 is 405, -3 is 500 for a cluster node's local lookup (no store involved: an internal
    error) and 503 + Retry-After for FreeSWITCH's global lookup (the store)."""
    not_found = "Not Here" if source == Y else "Not Found"
    codes = {LookupResult.NOT_FOUND: (404, not_found), LookupResult.ERROR: expected,
             LookupResult.METHOD_NOT_ALLOWED: (405, "Not Allowed")}
    for code, reply in codes.items():
        if source == FS1 and code == LookupResult.METHOD_NOT_ALLOWED:
            continue  # FreeSWITCH's global lookup has no flag m: -2 cannot happen there (next test)
        h = harness_giving(code, store=source == FS1)
        assert replied(h.run(federated.request_route, invite(), src(source))) == reply


def test_seed_federated_method_filter_only_on_the_cluster_nodes_local_lookup() -> None:
    """The seed's cluster block looks up with flag ``m`` (-2 -> 405); its FreeSWITCH block with ``g``
    alone, so there the contact is tried whatever methods it listed."""
    h = harness(homes={})
    register_message_only(h)
    assert replied(h.run(federated.request_route, invite(), src(Y))) == (405, "Not Allowed")
    assert relayed(h.run(federated.request_route, invite(), src(FS1))) == [(ALICE_CONTACT, None)]


def test_seed_federated_cluster_id_comes_from_route_params() -> None:
    h = harness(params={**PARAMS, "cluster_id": 2}, cluster_peers={1: [Y], 2: ["10.0.3.100"]})
    h.register(ALICE, ALICE_CONTACT)
    # Y is not in cluster 2 and not FreeSWITCH: treated as an endpoint, sent to FreeSWITCH
    assert relayed(h.run(federated.request_route, invite(), src(Y))) == [(ALICE, f"sip:{FS1}")]
    assert relayed(h.run(federated.request_route, invite(), src("10.0.3.100"))) == [(ALICE_CONTACT, None)]


# -- redirect: cache_raw_query + 302 --------------------------------------------------------------------

def record(home: str, aor: str = f"alice@{DOMAIN}") -> dict:
    return {"_id": aor + home, "aor": aor, "home_ip": home}


def test_seed_redirect_queries_the_store_with_the_short_aor() -> None:
    h = harness(raw_query=[])
    h.run(redirect.request_route, invite(), src(FS1))
    assert h.raw_queries == [{"find": "userlocation", "filter": {"aor": f"alice@{DOMAIN}"}}]
    other = harness(params={**PARAMS, "collection": "locations"}, raw_query=[])
    other.run(redirect.request_route, invite(), src(FS1))
    assert other.raw_queries[0]["find"] == "locations"


def test_seed_redirect_registered_nowhere_is_405_so_freeswitch_does_not_retry() -> None:
    h = harness(raw_query=[])
    assert replied(h.run(redirect.request_route, invite(), src(FS1))) == (405, "Not Allowed")


def test_seed_redirect_registered_on_another_node_is_302_to_it() -> None:
    h = harness(raw_query=[record(Y)])
    result = h.run(redirect.request_route, invite(), src(FS1))
    assert result.replies == [(302, "Moved Temporarily", True)]  # send_reply: stateful, Contact = $branch
    assert [str(b.uri) for b in result.state.branches] == [f"sip:alice@{Y}"]
    assert result.responses[0].headers.get("Contact") == f"<sip:alice@{Y}>"
    assert not result.relayed


def test_seed_redirect_registered_here_after_the_302_relays_with_the_domain_aor() -> None:
    """The 302 rewrote the Request-URI's host to this node's address: the lookup rebuilds the AoR
    with the configured domain, from the To user (``$tU``)."""
    h = harness(raw_query=[record(X)])
    h.register(ALICE, ALICE_CONTACT)
    result = h.run(redirect.request_route, invite(f"sip:alice@{X}"), src(FS2))
    assert relayed(result) == [(ALICE_CONTACT, None)]
    assert result.record_routed


def test_seed_redirect_a_record_here_without_a_binding_is_404_not_here() -> None:
    h = harness(raw_query=[record(X)])  # a stale record: this node has no binding for her
    assert replied(h.run(redirect.request_route, invite(f"sip:alice@{X}"), src(FS1))) == (404, "Not Here")


def test_seed_redirect_records_on_several_nodes_prefer_this_one() -> None:
    h = harness(raw_query=[record(Y), record(X)])
    h.register(ALICE, ALICE_CONTACT)
    assert relayed(h.run(redirect.request_route, invite(), src(FS1))) == [(ALICE_CONTACT, None)]


def test_seed_redirect_method_not_accepted_is_405() -> None:
    h = harness(raw_query=[record(X)])
    register_message_only(h)
    assert replied(h.run(redirect.request_route, invite(), src(FS1))) == (405, "Not Allowed")


@pytest.mark.parametrize("error", [
    StoreError("raw_command", ConnectionError("no server"), True),
    StoreTimeout("raw_command", 1.0, "waiting for a free connection"),
    StoreOverloaded("raw_command", 256),
], ids=["down", "timeout", "overloaded"])
def test_seed_redirect_store_failure_is_503_with_retry_after(error) -> None:
    h = harness(raw_query=error)
    result = h.run(redirect.request_route, invite(), src(FS1))
    assert replied(result) == (503, "Location Store Unavailable")
    assert result.reply_headers == [("Retry-After", "5")]


def test_seed_redirect_local_lookup_error_is_500_not_404() -> None:
    h = harness(raw_query=[record(X)], location=BrokenLocation(Clock()))
    assert replied(h.run(redirect.request_route, invite(f"sip:alice@{X}"), src(FS1))) == (500, "Server Internal Error")


def test_seed_redirect_documents_without_home_ip_count_as_nowhere() -> None:
    h = harness(raw_query=lambda command: [{"_id": "x", "aor": command["filter"]["aor"]}])
    assert replied(h.run(redirect.request_route, invite(), src(FS1))) == (405, "Not Allowed")


def test_seed_redirect_from_a_cluster_node_is_not_special() -> None:
    """The redirect variant has no cluster_check_addr block: a request from Y that is not FreeSWITCH
    is an endpoint's call and goes to FreeSWITCH; the store is not asked."""
    h = harness(raw_query=[record(Y)])
    assert relayed(h.run(redirect.request_route, invite(), src(Y))) == [(ALICE, f"sip:{FS1}")]
    assert h.raw_queries == []


# -- serialized failover: local lookup only ---------------------------------------------------------------

def test_seed_failover_local_user_is_relayed() -> None:
    h = harness()
    h.register(ALICE, ALICE_CONTACT)
    result = h.run(failover.request_route, invite(), src(FS1))
    assert relayed(result) == [(ALICE_CONTACT, None)]
    assert result.record_routed


def test_seed_failover_user_elsewhere_is_404_even_when_a_store_knows_her() -> None:
    h = harness(homes={f"alice@{DOMAIN}": [Y]}, raw_query=[record(Y)])  # no cluster, no Mongo: not asked
    assert replied(h.run(failover.request_route, invite(), src(FS1))) == (404, "Not Found")
    assert h.raw_queries == []


def test_seed_failover_method_not_accepted_is_405() -> None:
    h = harness()
    register_message_only(h)
    assert replied(h.run(failover.request_route, invite(), src(FS1))) == (405, "Not Allowed")


def test_seed_failover_lookup_codes_map_like_the_seed() -> None:
    """-1 is 404, -2 is 405, -3 (the lookup failed) is 500 — "not found" only when she is not here."""
    codes = {LookupResult.NOT_FOUND: (404, "Not Found"), LookupResult.ERROR: (500, "Server Internal Error"),
             LookupResult.METHOD_NOT_ALLOWED: (405, "Not Allowed")}
    for code, expected in codes.items():
        h = harness_giving(code)
        assert replied(h.run(failover.request_route, invite(), src(FS1))) == expected
