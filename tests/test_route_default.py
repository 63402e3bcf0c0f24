"""routes/default.py through :class:`edgeproxy.routing.testing.RouteHarness`: the documented way to
unit-test a route module. The harness runs the route over a real in-memory location service and
registrar and records what the route decided (replies, relay, Record-Route, targets) instead of
sending anything; the proxy engine itself is tested in test_proxy_node.py.

Copy this file as the starting point for tests of your own route module.
"""

from __future__ import annotations

import pytest

import edgeproxy_routes.default as route
from edgeproxy.routing import LookupResult
from edgeproxy.routing import RouteReply
from edgeproxy.routing.loader import load_route_module
from edgeproxy.routing.testing import RouteHarness
from edgeproxy.sip.endpoint import Endpoint


def sip(*lines: str) -> str:
    return "\n".join([*lines, "Content-Length: 0"]) + "\n\n"


def invite(uri: str = "sip:bob@example.com", *extra: str, to_tag: str | None = None, method: str = "INVITE") -> str:
    return sip(
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKdef1;rport",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        f"To: <sip:bob@example.com>{f';tag={to_tag}' if to_tag else ''}",
        "Call-ID: default-1@192.0.2.20",
        f"CSeq: 1 {method}",
        *extra,
    )


def register(user: str = "bob", domain: str = "example.com", contact: str = "<sip:bob@192.0.2.10:5062>") -> str:
    return sip(
        f"REGISTER sip:{domain} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKreg1",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{domain}>;tag=r1",
        f"To: <sip:{user}@{domain}>",
        "Call-ID: reg-default-1",
        "CSeq: 1 REGISTER",
        f"Contact: {contact}",
    )


@pytest.fixture
def h() -> RouteHarness:
    return RouteHarness(domains=["example.com"])


def test_the_default_route_loads_and_has_a_request_route() -> None:
    loaded = load_route_module("edgeproxy_routes.default")
    assert loaded.request_route is route.request_route
    assert loaded.failure_route is None and loaded.onreply_route is None


# -- REGISTER ---------------------------------------------------------------------------------------


def test_register_is_saved_and_answered_200(h: RouteHarness) -> None:
    result = h.run(route.request_route, register(), source=Endpoint("UDP", "192.0.2.10", 5062))
    assert result.error is None
    assert result.reply_code == 200
    assert not result.relayed
    bindings = h.location.get("bob")
    assert [str(b.uri) for b in bindings] == ["sip:bob@192.0.2.10:5062"]


def test_register_for_a_foreign_domain_is_refused_403(h: RouteHarness) -> None:
    result = h.run(route.request_route, register(domain="elsewhere.example.net"))
    assert result.reply_code == 403
    assert h.location.get("bob") == []


def test_register_with_bad_contact_is_answered_by_the_registrar(h: RouteHarness) -> None:
    result = h.run(route.request_route, register(contact="<sip:bob@192.0.2.10>;expires=abc;q=7"))
    assert result.reply_code == 400
    assert h.location.get("bob") == []


# -- initial requests -------------------------------------------------------------------------------


def test_invite_to_registered_user_is_relayed_with_record_route(h: RouteHarness) -> None:
    h.register("sip:bob@example.com", "sip:bob@192.0.2.10:5062")
    result = h.run(route.request_route, invite())
    assert result.error is None and result.replies == []
    assert result.relayed and result.record_routed
    assert [str(t.uri) for t in result.targets] == ["sip:bob@192.0.2.10:5062"]
    assert result.targets[0].destination.remote == Endpoint("UDP", "192.0.2.10", 5062)
    assert result.request.request.uri_text == "sip:bob@192.0.2.10:5062"  # lookup rewrote the R-URI


def test_invite_to_user_with_two_contacts_has_two_targets_with_q(h: RouteHarness) -> None:
    h.register("sip:bob@example.com", "sip:bob@192.0.2.10:5062")
    text = register(contact="<sip:bob@192.0.2.11:5064>;q=0.5")
    assert h.run(route.request_route, text.replace("reg-default-1", "reg-default-2")).reply_code == 200
    result = h.run(route.request_route, invite())
    assert result.relayed
    assert sorted(str(t.uri) for t in result.targets) == ["sip:bob@192.0.2.10:5062", "sip:bob@192.0.2.11:5064"]
    assert {t.q for t in result.targets} == {None, 0.5}


def test_invite_to_unknown_user_gets_404(h: RouteHarness) -> None:
    result = h.run(route.request_route, invite("sip:carol@example.com"))
    assert result.replies == [(404, "Not Found", False)]
    assert not result.relayed


def test_invite_to_expired_registration_gets_404(h: RouteHarness) -> None:
    h.register("sip:bob@example.com", "sip:bob@192.0.2.10:5062", expires=60)
    h.clock.advance(61)
    assert h.run(route.request_route, invite()).reply_code == 404


def test_invite_for_a_foreign_domain_is_refused_403(h: RouteHarness) -> None:
    result = h.run(route.request_route, invite("sip:bob@elsewhere.example.net"))
    assert result.replies == [(403, "Relaying Forbidden", False)]
    assert not result.relayed


def test_request_to_our_address_counts_as_local(h: RouteHarness) -> None:
    h.register("sip:bob@example.com", "sip:bob@192.0.2.10:5062")
    result = h.run(route.request_route, invite("sip:bob@127.0.0.1:5060"))
    assert result.relayed


def test_method_not_accepted_by_the_contact_gets_405_rfc3840(h: RouteHarness) -> None:
    saved = h.run(route.request_route, register(contact='<sip:bob@192.0.2.10:5062>;methods="INVITE,ACK,BYE,CANCEL"'))
    assert saved.reply_code == 200
    assert h.run(route.request_route, invite(method="INVITE")).relayed
    result = h.run(route.request_route, invite(method="MESSAGE"))
    assert result.replies == [(405, "Method Not Allowed", False)]


def test_lookup_returns_opensips_codes(h: RouteHarness) -> None:
    """Route code written against OpenSIPS ``$retcode`` values keeps working."""
    assert (LookupResult.FOUND, LookupResult.NOT_FOUND, LookupResult.METHOD_NOT_ALLOWED, LookupResult.ERROR) == (1, -1, -2, -3)


# -- in-dialog requests -----------------------------------------------------------------------------


def test_in_dialog_bye_with_route_to_us_is_loose_routed(h: RouteHarness) -> None:
    text = invite("sip:bob@192.0.2.10:5062", "Route: <sip:127.0.0.1:5060;lr>", to_tag="b1", method="BYE")
    result = h.run(route.request_route, text)
    assert result.relayed and not result.record_routed and result.replies == []
    assert result.request.request.routes == []  # our entry popped (§16.4)
    assert [str(t.uri) for t in result.targets] == ["sip:bob@192.0.2.10:5062"]


def test_in_dialog_request_with_double_record_route_pops_both(h: RouteHarness) -> None:
    text = invite("sip:bob@192.0.2.10:5062", "Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5060;transport=tcp;lr>",
                  to_tag="b1", method="BYE")
    result = h.run(route.request_route, text)
    assert result.relayed and result.request.request.routes == []


def test_in_dialog_request_routed_through_another_proxy_keeps_its_route(h: RouteHarness) -> None:
    text = invite("sip:bob@192.0.2.10:5062", "Route: <sip:127.0.0.1:5060;lr>, <sip:p2.example.net;lr>",
                  to_tag="b1", method="BYE")
    result = h.run(route.request_route, text)
    assert result.relayed
    assert [str(r.uri) for r in result.request.request.routes] == ["sip:p2.example.net;lr"]


def test_in_dialog_reinvite_is_not_record_routed_again(h: RouteHarness) -> None:
    text = invite("sip:bob@192.0.2.10:5062", "Route: <sip:127.0.0.1:5060;lr>", to_tag="b1")
    result = h.run(route.request_route, text)
    assert result.relayed and not result.record_routed


def test_in_dialog_request_without_route_gets_404(h: RouteHarness) -> None:
    result = h.run(route.request_route, invite("sip:bob@192.0.2.10:5062", to_tag="b1", method="BYE"))
    assert result.replies == [(404, "Not here", False)]
    assert not result.relayed


def test_in_dialog_ack_without_route_is_dropped_silently(h: RouteHarness) -> None:
    result = h.run(route.request_route, invite("sip:bob@192.0.2.10:5062", to_tag="b1", method="ACK"))
    assert result.replies == [] and not result.relayed and result.error is None


def test_in_dialog_ack_with_route_is_relayed(h: RouteHarness) -> None:
    text = invite("sip:bob@192.0.2.10:5062", "Route: <sip:127.0.0.1:5060;lr>", to_tag="b1", method="ACK")
    assert h.run(route.request_route, text).relayed


def test_preloaded_route_to_us_on_initial_request_is_removed_rfc3261_16_4(h: RouteHarness) -> None:
    h.register("sip:bob@example.com", "sip:bob@192.0.2.10:5062")
    result = h.run(route.request_route, invite("sip:bob@example.com", "Route: <sip:127.0.0.1:5060;lr>"))
    assert result.request.request.routes == [] or result.reply_code == 403


# -- the harness with a route of your own ------------------------------------------------------------


def test_harness_records_sip_error_and_exceptions(h: RouteHarness) -> None:
    def refuses(msg):
        raise RouteReply(403, "Forbidden")

    def crashes(msg):
        raise KeyError("boom")

    assert h.run(refuses, invite()).replies == [(403, "Forbidden", True)]
    crashed = h.run(crashes, invite())
    assert isinstance(crashed.error, KeyError)
    assert crashed.replies == [(500, "Server Internal Error", True)]  # what the node answers, too


def test_harness_answers_a_route_that_decides_nothing_as_the_node_does(h: RouteHarness) -> None:
    """Neither a reply nor a relay: ``proxy.no_reply_status`` (500); ``drop()``: nothing at all."""
    def undecided(msg):
        msg.record_route()

    def dropper(msg):
        msg.drop()

    assert h.run(undecided, invite()).replies == [(500, "Server Internal Error", True)]
    assert h.run(dropper, invite()).replies == []


def test_harness_runs_async_routes_and_sees_branches(h: RouteHarness) -> None:
    async def fork(msg):
        await msg.lookup("location")
        msg.append_branch("sip:voicemail@192.0.2.30")
        msg.t_relay()

    h.register("sip:bob@example.com", "sip:bob@192.0.2.10:5062")
    result = h.run(fork, invite())
    assert [str(t.uri) for t in result.targets] == ["sip:bob@192.0.2.10:5062", "sip:voicemail@192.0.2.30"]


def test_options_to_the_node_itself_is_answered_200_keepalive(h: RouteHarness) -> None:
    # FreeSWITCH gateways and SBCs ping their proxy with OPTIONS sip:<proxy>; a 404 would mark it down
    result = h.run(route.request_route, invite("sip:example.com", method="OPTIONS"))
    assert result.reply_code == 200 and not result.relayed


def test_options_to_a_user_is_routed_like_any_request(h: RouteHarness) -> None:
    result = h.run(route.request_route, invite("sip:nobody@example.com", method="OPTIONS"))
    assert result.reply_code == 404


def test_harness_save_keeps_the_nat_and_sipping_flags_a_route_sets() -> None:
    """``msg.nat`` / ``msg.sipping`` before ``save()`` reach the binding in RouteHarness as in the node."""
    from edgeproxy.routing.testing import RouteHarness

    def route(msg):
        msg.nat = True
        msg.sipping = True
        return msg.save("location")

    h = RouteHarness(domains=["example.com"])
    text = ("REGISTER sip:example.com SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-nat\nMax-Forwards: 70\n"
            "From: <sip:alice@example.com>;tag=n\nTo: <sip:alice@example.com>\nCall-ID: nat-1\nCSeq: 1 REGISTER\n"
            "Contact: <sip:alice@10.0.0.5:5062>\nContent-Length: 0\n\n")
    assert h.run(route, text).replies[0][0] == 200
    [binding] = h.location.get("alice")
    assert binding.nat and binding.sipping


# -- the harness runs the node's verbs: what its own copy of lookup/save used to get wrong ------------

def test_harness_lookup_of_a_malformed_aor_is_error_as_on_the_node(h: RouteHarness) -> None:
    """A malformed AoR is -3 (ERROR) for the route to map, not an exception out of the route."""
    seen: list[LookupResult] = []

    async def route(msg):
        seen.append(await msg.lookup("location", "", "bob@[not-an-address"))
        msg.sl_send_reply(404, "Not Found")

    result = h.run(route, invite())
    assert result.error is None and seen == [LookupResult.ERROR] and result.reply_code == 404


def test_harness_save_with_flag_r_does_not_reply(h: RouteHarness) -> None:
    """``save("location", "r")``: the bindings are stored and the route sends its own reply."""
    async def route(msg):
        stored = await msg.save("location", "r")
        msg.sl_send_reply(202 if stored else 500, "Stored")

    result = h.run(route, register())
    assert result.replies == [(202, "Stored", False)]
    assert [b.uri.host for b in h.location.get("bob")] == ["192.0.2.10"]


def test_harness_save_reply_carries_a_to_tag_as_on_the_node(h: RouteHarness) -> None:
    """The registrar's 200 gets our To tag (§8.2.6.2), in the harness as on the wire."""
    result = h.run(route.request_route, register())
    [response] = result.responses
    assert response.status == 200 and response.to_tag


def test_a_misspelled_hook_stops_the_route_module_at_load_time(tmp_path) -> None:
    """``onreply_rout`` would never run: the module is refused with the name it resembles; helpers
    with other names, or starting with ``_``, are fine."""
    from edgeproxy.routing import RouteLoadError

    bad = tmp_path / "typo_route.py"
    bad.write_text("def request_route(msg):\n    msg.t_relay()\n\ndef onreply_rout(msg, reply):\n    pass\n")
    with pytest.raises(RouteLoadError, match="onreply_rout looks like a misspelled onreply_route"):
        load_route_module(str(bad))
    good = tmp_path / "helper_route.py"
    good.write_text("def request_route(msg):\n    msg.t_relay()\n\ndef _onreply_rout(msg, reply):\n    pass\n\n"
                    "def to_freeswitch(msg):\n    pass\n")
    assert load_route_module(str(good)).onreply_route is None


# -- a dotted route name in the current directory (issue 15) -------------------------------------------

BLOCKLIST = '''from edgeproxy_routes.default import request_route as _default
from blockhelpers import BLOCKED


async def request_route(msg):
    if msg.fU in BLOCKED:
        msg.sl_send_reply(403, "Forbidden")
        return
    await _default(msg)
'''


def test_dotted_name_in_the_current_directory_loads(tmp_path, monkeypatch) -> None:
    """``-r blocklist`` beside ``blocklist.py`` (and the helper module it imports): found in the current
    directory, which joins the end of the path, so installed packages still come first."""
    import sys

    (tmp_path / "blocklist.py").write_text(BLOCKLIST)
    (tmp_path / "blockhelpers.py").write_text('BLOCKED = {"mallory"}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    loaded = load_route_module("blocklist")
    assert loaded.module.__file__ == str(tmp_path / "blocklist.py") and sys.path[-1] == str(tmp_path)
    h = RouteHarness(domains=["example.com"])
    result = h.run(loaded.request_route, invite().replace("alice@example.com", "mallory@example.com"))
    assert result.replies == [(403, "Forbidden", False)]


def test_dotted_name_found_nowhere_says_what_to_do(tmp_path, monkeypatch) -> None:
    from edgeproxy.routing.loader import RouteLoadError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(RouteLoadError) as caught:
        load_route_module("blocklst.rules")
    assert str(caught.value) == (
        f"route module 'blocklst.rules': no module named 'blocklst' on the Python path or in the current directory"
        f' ({tmp_path}); name a file instead ("blocklst/rules.py", relative to the configuration file or, on the'
        " command line, to the current directory), or add its directory to PYTHONPATH")


def test_a_missing_import_inside_the_route_is_reported_as_such(tmp_path, monkeypatch) -> None:
    from edgeproxy.routing.loader import RouteLoadError

    (tmp_path / "needy.py").write_text("import not_installed_anywhere\n\ndef request_route(msg):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RouteLoadError, match="No module named 'not_installed_anywhere'"):
        load_route_module("needy")
