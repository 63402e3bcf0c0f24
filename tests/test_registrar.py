"""Registrar.save(): RFC 3261 §10.3 steps 5-8 with OpenSIPS registrar semantics."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from edgeproxy.location import Binding, InMemoryLocation, LookupResult
from edgeproxy.registrar import Registrar, RegistrarSettings, aor_of, binding_destination
from edgeproxy.sip import Request, Response, parse_name_address, parse_uri
from edgeproxy.sip.endpoint import Destination, Endpoint, Flow
from support.doubles import LocationRecorder
from support.messages import register

T0 = 1_700_000_000.0
UDP = Flow(Endpoint("UDP", "192.0.2.1", 5060), Endpoint("UDP", "198.51.100.7", 5062))
WSS = Flow(Endpoint("WSS", "192.0.2.1", 443), Endpoint("WSS", "203.0.113.50", 51234), 17)


class RegistrarTestCase(SynchronousTestCase):
    settings = RegistrarSettings()

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.location = InMemoryLocation(self.clock)
        self.events = LocationRecorder()
        self.location.subscribe(self.events)
        self.registrar = Registrar(self.location, self.settings, self.clock)

    def save(self, request: Request, flow: Flow = UDP, **kw) -> Response:
        response = self.successResultOf(self.registrar.save(request, flow, **kw))
        self.assertIsInstance(response, Response)
        return response

    def bindings(self, aor: str = "alice") -> list[Binding]:
        return self.successResultOf(self.location.contacts(aor))

    def contacts(self, response: Response) -> dict[str, dict]:
        """Contact URI text → params of a 200 OK."""
        out = {}
        for value in response.headers.values("contact"):
            na = parse_name_address(value, "Contact")
            out[str(na.uri)] = na.params
        return out

    def expires_of(self, response: Response) -> dict[str, int]:
        return {uri: int(p["expires"]) for uri, p in self.contacts(response).items()}


class BasicTests(RegistrarTestCase):
    def test_200_lists_every_binding_with_expires_and_date(self) -> None:
        r = self.save(register("<sip:alice@198.51.100.7:5062>;expires=600"))
        self.assertEqual(r.status, 200)
        self.assertEqual(self.expires_of(r), {"sip:alice@198.51.100.7:5062": 600})
        self.clock.advance(100)
        r = self.save(register("<sip:alice@203.0.113.9>", call_id="other-phone", extra=("Expires: 1800",)))
        self.assertEqual(self.expires_of(r), {"sip:alice@198.51.100.7:5062": 500, "sip:alice@203.0.113.9": 1800})
        date = parsedate_to_datetime(r.headers.get("date"))
        self.assertEqual(date.timestamp(), T0 + 100)
        self.assertTrue(r.headers.get("date").endswith(" GMT"))
        # copied per §8.2.6.2; the To tag is the caller's job
        self.assertEqual(r.call_id, "other-phone")
        self.assertEqual(r.cseq.number, 1)

    def test_binding_contents(self) -> None:
        self.save(register("<sip:alice@198.51.100.7:5062>;q=0.7;expires=300",
                           extra=("User-Agent: Phone/1.0", "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS")))
        (b,) = self.bindings()
        self.assertEqual(b.aor, "alice")
        self.assertEqual(b.uri, parse_uri("sip:alice@198.51.100.7:5062"))
        self.assertEqual(b.expires_at, T0 + 300)
        self.assertEqual(b.q, 0.7)
        self.assertEqual((b.call_id, b.cseq), ("reg-1@host", 1))
        self.assertEqual(b.received, UDP.remote)
        self.assertIs(b.flow, UDP)
        self.assertEqual(b.user_agent, "Phone/1.0")
        self.assertEqual(b.methods, frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"}))
        self.assertFalse(b.nat)
        self.assertEqual(b.last_modified, T0)
        self.assertEqual(dict(b.contact_params), {})

    def test_default_expires(self) -> None:
        r = self.save(register("<sip:alice@198.51.100.7>"))
        self.assertEqual(self.expires_of(r), {"sip:alice@198.51.100.7": 3600})

    def test_contact_param_beats_header(self) -> None:
        r = self.save(register("<sip:a@192.0.2.10>;expires=120", "<sip:b@192.0.2.11>", extra=("Expires: 240",)))
        self.assertEqual(self.expires_of(r), {"sip:a@192.0.2.10": 120, "sip:b@192.0.2.11": 240})

    def test_garbage_and_overlarge_expires_get_default(self) -> None:
        # RFC 4475 §3.1.2.4: a value over 2**32-1 may be treated as the default
        r = self.save(register("<sip:a@192.0.2.10>;expires=280297596632815",
                               "<sip:b@192.0.2.11>;expires=soon",
                               "<sip:c@192.0.2.12>", extra=("Expires: never",)))
        self.assertEqual(set(self.expires_of(r).values()), {3600})

    def test_refresh_updates_expiry_without_duplicating(self) -> None:
        self.save(register("<sip:alice@198.51.100.7>;expires=600"))
        self.clock.advance(500)
        r = self.save(register("<sip:alice@198.51.100.7>;expires=600", cseq=2))
        self.assertEqual(self.expires_of(r), {"sip:alice@198.51.100.7": 600})
        self.assertEqual(len(self.bindings()), 1)
        self.assertEqual(self.bindings()[0].cseq, 2)
        self.clock.advance(500)  # the original expiry has passed
        self.assertEqual(len(self.bindings()), 1)
        self.assertEqual(self.events.events, [("created", "alice")])

    def test_refresh_matches_equivalent_uri(self) -> None:
        # §19.1.4: host is case-insensitive, parameter order irrelevant
        self.save(register("<sip:alice@PHONE.example.org;transport=tcp;x=1>"))
        r = self.save(register("<sip:alice@phone.example.org;x=1;transport=TCP>", cseq=2))
        self.assertEqual(len(self.contacts(r)), 1)

    def test_query_without_contact(self) -> None:
        self.save(register("<sip:alice@198.51.100.7>;expires=600"))
        self.clock.advance(10)
        r = self.save(register(call_id="query", cseq=1))
        self.assertEqual(r.status, 200)
        self.assertEqual(self.expires_of(r), {"sip:alice@198.51.100.7": 590})
        self.assertEqual(len(self.bindings()), 1)
        r = self.save(register(to="<sip:nobody@example.com>"))
        self.assertEqual((r.status, r.headers.get_all("contact")), (200, []))

    def test_nat_binding_echoes_received(self) -> None:
        r = self.save(register("<sip:alice@10.0.0.5:5060>"), nat=True)
        (params,) = self.contacts(r).values()
        self.assertEqual(params["received"], '"sip:198.51.100.7:5062"')
        self.assertTrue(self.bindings()[0].nat)
        r = self.save(register("<sip:alice@10.0.0.5:5060>", call_id="x"), WSS, nat=True)
        self.assertIn('"sip:203.0.113.50:51234;transport=wss"', [p.get("received") for p in self.contacts(r).values()])

    def test_received_param_name_configurable(self) -> None:
        registrar = Registrar(self.location, RegistrarSettings(received_param="rcv"), self.clock)
        r = self.successResultOf(registrar.save(register("<sip:alice@10.0.0.5>"), UDP, nat=True))
        (params,) = self.contacts(r).values()
        self.assertIn("rcv", params)
        self.assertNotIn("received", params)

    def test_non_nat_binding_has_no_received(self) -> None:
        r = self.save(register("<sip:alice@198.51.100.7>"))
        (params,) = self.contacts(r).values()
        self.assertNotIn("received", params)

    def test_feature_params_kept_and_echoed(self) -> None:
        r = self.save(register('<sip:alice@198.51.100.7>;+sip.ice;audio;methods="INVITE,BYE";received=evil'))
        (b,) = self.bindings()
        self.assertEqual(dict(b.contact_params), {"+sip.ice": None, "audio": None, "methods": '"INVITE,BYE"'})
        self.assertEqual(b.methods, frozenset({"INVITE", "BYE"}))
        (params,) = self.contacts(r).values()
        self.assertIn("+sip.ice", params)
        self.assertNotIn("received", params)  # a client cannot set it

    def test_contact_params_shared_between_bindings(self) -> None:
        self.save(register("<sip:a@192.0.2.10>;+sip.ice"))
        self.save(register("<sip:b@192.0.2.11>;+sip.ice", to="<sip:bob@example.com>"))
        self.assertIs(self.bindings("alice")[0].contact_params, self.bindings("bob")[0].contact_params)

    def test_methods_param_beats_allow(self) -> None:
        self.save(register('<sip:a@192.0.2.10>;methods="MESSAGE"', "<sip:b@192.0.2.11>",
                           extra=("Allow: INVITE, ACK",)))
        by_uri = {str(b.uri): b.methods for b in self.bindings()}
        self.assertEqual(by_uri, {"sip:a@192.0.2.10": frozenset({"MESSAGE"}),
                                  "sip:b@192.0.2.11": frozenset({"INVITE", "ACK"})})

    def test_aor_override(self) -> None:
        self.save(register("<sip:a@192.0.2.10>"), aor="sip:Carol@Example.com")
        self.assertEqual(len(self.bindings("Carol")), 1)
        self.save(register("<sip:a@192.0.2.10>"), aor="custom-key")
        self.assertEqual(len(self.bindings("custom-key")), 1)

    def test_non_sip_to_is_400(self) -> None:
        r = self.save(register("<sip:a@192.0.2.10>", to="<tel:+15551234>"))
        self.assertEqual(r.status, 400)

    def test_non_sip_contact_is_400(self) -> None:
        r = self.save(register("<tel:+15551234>"))
        self.assertEqual(r.status, 400)
        self.assertEqual(self.bindings(), [])

    def test_malformed_contact_is_400(self) -> None:
        req = register("<sip:a@192.0.2.10>")
        req.headers.add("Contact", "<sip:b@192.0.2.11>;;bad")
        r = self.save(req)
        self.assertEqual(r.status, 400)
        self.assertEqual(self.bindings(), [])


class UnregisterTests(RegistrarTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.save(register("<sip:a@192.0.2.10>", "<sip:b@192.0.2.11>"))

    def test_expires_zero_param_removes_that_binding(self) -> None:
        r = self.save(register("<sip:a@192.0.2.10>;expires=0", cseq=2))
        self.assertEqual(self.expires_of(r), {"sip:b@192.0.2.11": 3600})
        self.assertEqual(self.events.events, [("created", "alice")])
        r = self.save(register("<sip:b@192.0.2.11>;expires=0", cseq=3))
        self.assertEqual((r.status, r.headers.get_all("contact")), (200, []))
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_expires_zero_header_removes(self) -> None:
        r = self.save(register("<sip:a@192.0.2.10>", "<sip:b@192.0.2.11>", cseq=2, extra=("Expires: 0",)))
        self.assertEqual((r.status, r.headers.get_all("contact")), (200, []))
        self.assertEqual(self.location.get("alice"), [])
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_star_removes_all(self) -> None:
        r = self.save(register("*", cseq=2, extra=("Expires: 0",)))
        self.assertEqual((r.status, r.headers.get_all("contact")), (200, []))
        self.assertEqual(len(self.location), 0)
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_star_from_other_call_id(self) -> None:
        r = self.save(register("*", call_id="another", cseq=1, extra=("Expires: 0",)))
        self.assertEqual(r.status, 200)
        self.assertEqual(len(self.location), 0)

    def test_star_with_nonzero_expires_is_400(self) -> None:
        for extra in (("Expires: 60",), (), ("Expires: soon",)):
            r = self.save(register("*", cseq=5, extra=extra))
            self.assertEqual(r.status, 400, extra)
        self.assertEqual(len(self.bindings()), 2)

    def test_star_with_other_contacts_is_400(self) -> None:
        req = register("*", cseq=2, extra=("Expires: 0",))
        req.headers.add("Contact", "<sip:c@192.0.2.12>")
        self.assertEqual(self.save(req).status, 400)
        self.assertEqual(len(self.bindings()), 2)

    def test_star_with_old_cseq_is_400(self) -> None:
        self.save(register("<sip:a@192.0.2.10>", cseq=7))
        r = self.save(register("*", cseq=3, extra=("Expires: 0",)))
        self.assertEqual(r.status, 400)
        self.assertEqual(len(self.bindings()), 2)

    def test_unregistering_unknown_contact_is_harmless(self) -> None:
        r = self.save(register("<sip:zzz@192.0.2.99>;expires=0", cseq=2))
        self.assertEqual(r.status, 200)
        self.assertEqual(len(self.contacts(r)), 2)


class ExpiryPolicyTests(RegistrarTestCase):
    def test_too_brief_is_clamped_by_default(self) -> None:
        r = self.save(register("<sip:a@192.0.2.10>;expires=10"))
        self.assertEqual(self.expires_of(r), {"sip:a@192.0.2.10": 60})

    def test_too_brief_rejected_with_423_and_min_expires(self) -> None:
        registrar = Registrar(self.location, RegistrarSettings(min_expires_mode="reject", min_expires=300),
                              self.clock)
        r = self.successResultOf(registrar.save(
            register("<sip:a@192.0.2.10>;expires=3600", "<sip:b@192.0.2.11>;expires=30"), UDP))
        self.assertEqual((r.status, r.reason), (423, "Interval Too Brief"))
        self.assertEqual(r.headers.get("min-expires"), "300")
        self.assertEqual(self.bindings(), [])  # all-or-nothing
        # expires=0 is never too brief; the server default is never rejected
        r = self.successResultOf(registrar.save(register("<sip:a@192.0.2.10>;expires=0"), UDP))
        self.assertEqual(r.status, 200)

    def test_max_expires_lowers(self) -> None:
        registrar = Registrar(self.location, RegistrarSettings(max_expires=900), self.clock)
        r = self.successResultOf(registrar.save(
            register("<sip:a@192.0.2.10>;expires=7200", "<sip:b@192.0.2.11>"), UDP))
        self.assertEqual(set(self.expires_of(r).values()), {900})

    def test_bindings_expire_after_their_time(self) -> None:
        self.save(register("<sip:a@192.0.2.10>;expires=120"))
        self.clock.advance(119)
        self.assertEqual(self.successResultOf(self.location.lookup("alice"))[0], LookupResult.FOUND)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(self.location.lookup("alice")), (LookupResult.NOT_FOUND, []))
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_settings_validation(self) -> None:
        self.assertRaises(ValueError, RegistrarSettings, min_expires_mode="sometimes")
        self.assertRaises(ValueError, RegistrarSettings, path_mode="maybe")
        self.assertRaises(ValueError, RegistrarSettings, max_contacts=-1)


class OrderingTests(RegistrarTestCase):
    def test_lower_cseq_same_call_id_is_400(self) -> None:
        self.save(register("<sip:a@192.0.2.10>;expires=600", cseq=5))
        r = self.save(register("<sip:a@192.0.2.10>;expires=0", cseq=4))
        self.assertEqual((r.status, r.reason), (400, "Invalid CSeq"))
        self.assertEqual(len(self.bindings()), 1)

    def test_lower_cseq_other_call_id_updates(self) -> None:
        self.save(register("<sip:a@192.0.2.10>;expires=600", cseq=5))
        r = self.save(register("<sip:a@192.0.2.10>;expires=60", call_id="new-boot", cseq=1))
        self.assertEqual(self.expires_of(r), {"sip:a@192.0.2.10": 60})
        self.assertEqual(self.bindings()[0].call_id, "new-boot")

    def test_retransmission_answers_200_without_change(self) -> None:
        first = register("<sip:a@192.0.2.10>;expires=600", cseq=5)
        self.save(first)
        self.clock.advance(10)
        again = register("<sip:a@192.0.2.10>;expires=600", cseq=5)
        r = self.save(again)
        self.assertEqual(r.status, 200)
        self.assertEqual(self.expires_of(r), {"sip:a@192.0.2.10": 590})
        self.assertEqual(self.bindings()[0].last_modified, T0)

    def test_equal_cseq_after_cseq_delay_is_a_new_update(self) -> None:
        # OpenSIPS allow_dup_cseq: a UA reusing its CSeq keeps its binding alive
        self.save(register("<sip:a@192.0.2.10>;expires=600", cseq=5))
        self.clock.advance(21)
        r = self.save(register("<sip:a@192.0.2.10>;expires=600", cseq=5))
        self.assertEqual(self.expires_of(r), {"sip:a@192.0.2.10": 600})
        self.assertEqual(self.bindings()[0].last_modified, T0 + 21)

    def test_retransmitted_unregister_is_harmless(self) -> None:
        self.save(register("<sip:a@192.0.2.10>", cseq=1))
        for _ in range(2):
            r = self.save(register("<sip:a@192.0.2.10>;expires=0", cseq=2))
            self.assertEqual(r.status, 200)
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_failed_request_changes_nothing(self) -> None:
        self.save(register("<sip:a@192.0.2.10>", cseq=5))
        r = self.save(register("<sip:b@192.0.2.11>", "<sip:a@192.0.2.10>;expires=0", cseq=4))
        self.assertEqual(r.status, 400)
        self.assertEqual([str(b.uri) for b in self.bindings()], ["sip:a@192.0.2.10"])

    def test_duplicate_contact_in_one_request_last_wins(self) -> None:
        r = self.save(register("<sip:a@192.0.2.10>;expires=100", "<sip:a@192.0.2.10>;expires=200"))
        self.assertEqual(self.expires_of(r), {"sip:a@192.0.2.10": 200})

    def test_invalid_q_is_400(self) -> None:
        for q in ("1.5", "high", "-0.1"):
            r = self.save(register(f"<sip:a@192.0.2.10>;q={q}"))
            self.assertEqual(r.status, 400, q)
        self.assertEqual(self.bindings(), [])

    def test_q_ordering_in_200_and_lookup(self) -> None:
        r = self.save(register("<sip:low@192.0.2.10>;q=0.1", "<sip:high@192.0.2.11>;q=1.0",
                               "<sip:mid@192.0.2.12>;q=0.5"))
        self.assertEqual(list(self.contacts(r)), ["sip:high@192.0.2.11", "sip:mid@192.0.2.12", "sip:low@192.0.2.10"])
        self.assertEqual(self.contacts(r)["sip:mid@192.0.2.12"]["q"], "0.5")
        code, found = self.successResultOf(self.location.lookup("alice"))
        self.assertEqual([b.uri.user for b in found], ["high", "mid", "low"])
        self.clock.advance(5)
        self.save(register("<sip:newer@192.0.2.13>;q=0.5", call_id="second"))
        code, found = self.successResultOf(self.location.lookup("alice"))
        self.assertEqual([b.uri.user for b in found], ["high", "newer", "mid", "low"])


class MaxContactsTests(RegistrarTestCase):
    settings = RegistrarSettings(max_contacts=2, retry_after=30)

    def test_exceeding_is_503_and_nothing_changes(self) -> None:
        self.save(register("<sip:a@192.0.2.10>;expires=600"))
        self.clock.advance(10)
        r = self.save(register("<sip:a@192.0.2.10>;expires=900", "<sip:b@192.0.2.11>", "<sip:c@192.0.2.12>",
                               cseq=2))
        self.assertEqual((r.status, r.reason), (503, "Too many registered contacts"))
        self.assertEqual(r.headers.get("retry-after"), "30")
        (b,) = self.bindings()
        self.assertEqual((b.cseq, b.expires_at), (1, T0 + 600))

    def test_replacing_and_removing_counts_final_set(self) -> None:
        self.save(register("<sip:a@192.0.2.10>", "<sip:b@192.0.2.11>"))
        r = self.save(register("<sip:a@192.0.2.10>;expires=0", "<sip:c@192.0.2.12>", cseq=2))
        self.assertEqual(r.status, 200)
        self.assertEqual(set(self.expires_of(r)), {"sip:b@192.0.2.11", "sip:c@192.0.2.12"})


class DomainTests(SynchronousTestCase):
    def test_aor_of(self) -> None:
        uri = parse_uri("sip:Alice@Example.COM:5070;transport=tcp")
        self.assertEqual(aor_of(uri, True), "Alice@example.com")
        self.assertEqual(aor_of(uri, False), "Alice")
        self.assertEqual(aor_of(parse_uri("sip:%41lice@example.com"), True), "Alice@example.com")
        self.assertEqual(aor_of(parse_uri("sips:example.com"), False), "example.com")

    def _registrar(self, use_domain: bool) -> tuple[Registrar, InMemoryLocation]:
        clock = Clock()
        location = InMemoryLocation(clock)
        return Registrar(location, RegistrarSettings(use_domain=use_domain), clock), location

    def test_use_domain_off_merges_domains(self) -> None:
        registrar, location = self._registrar(False)
        self.successResultOf(registrar.save(register("<sip:a@192.0.2.10>", to="<sip:alice@one.example>"), UDP))
        r = self.successResultOf(registrar.save(
            register("<sip:b@192.0.2.11>", to="<sip:alice@two.example>", call_id="x"), UDP))
        self.assertEqual(len(r.headers.get_all("contact")), 2)
        self.assertEqual(location.aors(), ["alice"])

    def test_use_domain_on_separates_domains(self) -> None:
        registrar, location = self._registrar(True)
        self.successResultOf(registrar.save(register("<sip:a@192.0.2.10>", to="<sip:alice@ONE.example>"), UDP))
        r = self.successResultOf(registrar.save(
            register("<sip:b@192.0.2.11>", to="<sip:alice@two.example>", call_id="x"), UDP))
        self.assertEqual(len(r.headers.get_all("contact")), 1)
        self.assertEqual(sorted(location.aors()), ["alice@one.example", "alice@two.example"])


class PathTests(RegistrarTestCase):
    PATH = ("Path: <sip:edge.example.net;lr>", "Path: <sip:198.51.100.99:5080;transport=tcp;lr>")

    def _with(self, mode: str) -> Registrar:
        return Registrar(self.location, RegistrarSettings(path_mode=mode), self.clock)

    def test_lazy_stores_and_echoes_only_if_supported(self) -> None:
        r = self.save(register("<sip:a@10.0.0.5>", extra=self.PATH))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get_all("path"), [])
        self.assertEqual(self.bindings()[0].path,
                         ("<sip:edge.example.net;lr>", "<sip:198.51.100.99:5080;transport=tcp;lr>"))
        r = self.save(register("<sip:a@10.0.0.5>", cseq=2, extra=self.PATH + ("Supported: path",)))
        self.assertEqual(r.headers.values("path"),
                         ["<sip:edge.example.net;lr>", "<sip:198.51.100.99:5080;transport=tcp;lr>"])

    def test_path_used_as_route_set(self) -> None:
        self.save(register("<sip:a@10.0.0.5>", extra=self.PATH), nat=True)
        uri, dest, routes = binding_destination(self.bindings()[0])
        self.assertEqual(str(uri), "sip:a@10.0.0.5")
        self.assertEqual(routes, ["<sip:edge.example.net;lr>", "<sip:198.51.100.99:5080;transport=tcp;lr>"])
        self.assertEqual(dest, Destination(Endpoint("UDP", "edge.example.net", 5060)))

    def test_strict_rejects_without_supported_path(self) -> None:
        registrar = self._with("strict")
        r = self.successResultOf(registrar.save(register("<sip:a@10.0.0.5>", extra=self.PATH), UDP))
        self.assertEqual(r.status, 420)
        self.assertEqual(r.headers.get("unsupported"), "path")
        self.assertEqual(self.bindings(), [])
        r = self.successResultOf(registrar.save(
            register("<sip:a@10.0.0.5>", extra=self.PATH + ("Supported: path",)), UDP))
        self.assertEqual(r.status, 200)
        self.assertEqual(len(r.headers.values("path")), 2)
        # no Path: nothing to reject
        r = self.successResultOf(registrar.save(register("<sip:b@10.0.0.6>", cseq=2), UDP))
        self.assertEqual(r.status, 200)

    def test_off_stores_but_never_echoes(self) -> None:
        registrar = self._with("off")
        r = self.successResultOf(registrar.save(
            register("<sip:a@10.0.0.5>", extra=self.PATH + ("Supported: path",)), UDP))
        self.assertEqual(r.headers.get_all("path"), [])
        self.assertEqual(len(self.bindings()[0].path), 2)

    def test_ignore_drops_path(self) -> None:
        registrar = self._with("ignore")
        self.successResultOf(registrar.save(register("<sip:a@10.0.0.5>", extra=self.PATH), UDP))
        self.assertEqual(self.bindings()[0].path, ())

    def test_malformed_path_is_400(self) -> None:
        r = self.save(register("<sip:a@10.0.0.5>", extra=("Path: <sip:edge.example.net;lr",)))
        self.assertEqual(r.status, 400)


class InstanceTests(RegistrarTestCase):
    """WebRTC clients (JsSIP, SIP.js) register a new random .invalid contact on every page load with
    the same +sip.instance/reg-id; the new binding must replace the old one (RFC 5626 §6)."""

    INSTANCE = '+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'

    def jssip(self, user: str, call_id: str, cseq: int = 1, reg_id: int | None = 1, expires: int = 600) -> Request:
        rid = f";reg-id={reg_id}" if reg_id is not None else ""
        return register(f"<sip:{user}@{user}host.invalid;transport=ws>;+sip.ice{rid};{self.INSTANCE};expires={expires}",
                        call_id=call_id, cseq=cseq, extra=("Supported: path, gruu, outbound",))

    def test_same_instance_and_reg_id_replaces(self) -> None:
        self.save(self.jssip("k3j", "load-1"), WSS)
        self.clock.advance(20)
        r = self.save(self.jssip("p9q", "load-2"), WSS)
        self.assertEqual(list(self.contacts(r)), ["sip:p9q@p9qhost.invalid;transport=ws"])
        params = self.contacts(r)["sip:p9q@p9qhost.invalid;transport=ws"]
        self.assertEqual(params["+sip.instance"], '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"')
        self.assertEqual(params["reg-id"], "1")
        self.assertEqual(params["expires"], "600")
        (b,) = self.bindings()
        self.assertEqual(b.instance, "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>")
        self.assertEqual(b.reg_id, 1)
        self.assertEqual(self.events.events, [("created", "alice")])

    def test_different_reg_id_is_another_flow(self) -> None:
        self.save(self.jssip("k3j", "load-1", reg_id=1), WSS)
        r = self.save(self.jssip("p9q", "load-2", reg_id=2), WSS)
        self.assertEqual(len(self.contacts(r)), 2)

    def test_instance_without_reg_id_replaces(self) -> None:
        self.save(self.jssip("k3j", "load-1", reg_id=None), WSS)
        r = self.save(self.jssip("p9q", "load-2", reg_id=None), WSS)
        self.assertEqual(list(self.contacts(r)), ["sip:p9q@p9qhost.invalid;transport=ws"])

    def test_instance_unregister_with_new_contact(self) -> None:
        self.save(self.jssip("k3j", "load-1"), WSS)
        r = self.save(self.jssip("p9q", "load-2", expires=0), WSS)
        self.assertEqual(r.headers.get_all("contact"), [])
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_invalid_reg_id_is_400(self) -> None:
        r = self.save(register(f"<sip:a@h.invalid;transport=ws>;reg-id=abc;{self.INSTANCE}"), WSS)
        self.assertEqual(r.status, 400)

    def test_websocket_binding_reached_over_its_connection(self) -> None:
        self.save(self.jssip("k3j", "load-1"), WSS)
        uri, dest, routes = binding_destination(self.bindings()[0])
        self.assertEqual(uri.user, "k3j")
        self.assertEqual(dest, Destination(WSS.remote, WSS, flow_only=True))
        self.assertEqual(routes, [])

    def test_closed_connection_removes_binding(self) -> None:
        self.save(self.jssip("k3j", "load-1"), WSS)
        self.save(register("<sip:desk@198.51.100.7>", call_id="desk"), UDP)
        self.assertEqual(self.successResultOf(self.location.remove_flow(WSS)), 1)
        self.assertEqual([b.uri.user for b in self.bindings()], ["desk"])
        self.successResultOf(self.location.remove_flow(UDP))
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])


class OutboundTests(RegistrarTestCase):
    """RFC 5626 §6: outbound processing only for a first-hop REGISTER (or a Path marked ``ob``) that
    says ``Supported: outbound`` and has ``+sip.instance`` and ``reg-id``; ``reg-id`` is ignored
    otherwise and the REGISTER is still accepted."""

    settings = RegistrarSettings(flow_timer=120)
    INSTANCE = InstanceTests.INSTANCE

    def outbound_register(self, user: str, call_id: str, reg_id: int = 1, supported: str = "path, gruu, outbound",
                          extra: tuple[str, ...] = ()) -> Request:
        contact = f"<sip:{user}@{user}host.invalid;transport=ws>;reg-id={reg_id};{self.INSTANCE};expires=600"
        headers = ((f"Supported: {supported}",) if supported else ()) + extra
        return register(contact, call_id=call_id, extra=headers)

    def test_first_hop_gets_require_outbound_and_flow_timer(self) -> None:
        r = self.save(self.outbound_register("k3j", "load-1"), WSS)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get_all("require"), ["outbound"])
        self.assertEqual(r.headers.get("flow-timer"), "120")
        self.assertEqual(self.bindings()[0].reg_id, 1)
        # two reg-ids of one instance are two flows, both kept
        r = self.save(self.outbound_register("p9q", "load-2", reg_id=2), WSS)
        self.assertEqual(len(self.contacts(r)), 2)

    def test_without_supported_outbound_reg_id_is_ignored(self) -> None:
        r = self.save(self.outbound_register("k3j", "load-1", supported="path"), WSS)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get_all("require"), [])
        self.assertIsNone(r.headers.get("flow-timer"))
        self.assertIsNone(self.bindings()[0].reg_id)
        self.assertNotIn("reg-id", self.contacts(r)["sip:k3j@k3jhost.invalid;transport=ws"])
        # the instance alone then identifies the UA: a second reg-id replaces instead of adding
        r = self.save(self.outbound_register("p9q", "load-2", reg_id=2, supported="path"), WSS)
        self.assertEqual(list(self.contacts(r)), ["sip:p9q@p9qhost.invalid;transport=ws"])

    def test_not_first_hop_needs_an_ob_path(self) -> None:
        via = "Via: SIP/2.0/TCP edge.example.net;branch=z9hG4bKedge1"
        plain = self.outbound_register("k3j", "load-1", extra=(via, "Path: <sip:edge.example.net;lr>"))
        r = self.save(plain, WSS)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get_all("require"), [])
        self.assertIsNone(self.bindings()[0].reg_id)
        marked = self.outbound_register("p9q", "load-2", reg_id=3,
                                        extra=(via, "Path: <sip:tok@edge.example.net;lr;ob>"))
        r = self.save(marked, WSS)
        self.assertEqual(r.headers.get_all("require"), ["outbound"])
        self.assertEqual({b.reg_id for b in self.bindings()}, {None, 3})

    def test_contact_without_reg_id_is_not_outbound(self) -> None:
        r = self.save(register("<sip:desk@198.51.100.7;transport=tcp>", extra=("Supported: outbound",)))
        self.assertEqual(r.headers.get_all("require"), [])

    def test_outbound_off_ignores_reg_id(self) -> None:
        self.registrar = Registrar(self.location, RegistrarSettings(outbound=False, flow_timer=120), self.clock)
        r = self.save(self.outbound_register("k3j", "load-1"), WSS)
        self.assertEqual(r.headers.get_all("require"), [])
        self.assertIsNone(self.bindings()[0].reg_id)

    def test_no_flow_timer_by_default(self) -> None:
        self.registrar = Registrar(self.location, RegistrarSettings(), self.clock)
        r = self.save(self.outbound_register("k3j", "load-1"), WSS)
        self.assertEqual(r.headers.get_all("require"), ["outbound"])
        self.assertIsNone(r.headers.get("flow-timer"))


class ConcurrencyTests(SynchronousTestCase):
    """Over a location service that answers later, REGISTERs for one AoR are applied one at a time."""

    def test_saves_for_one_aor_are_serialised(self) -> None:
        clock = Clock()
        inner = InMemoryLocation(clock)

        class Slow:
            clock_ = clock

            def __init__(self) -> None:
                self.pending: list[tuple[Deferred, object]] = []

            def contacts(self, aor: str) -> Deferred:
                d: Deferred = Deferred()
                self.pending.append((d, lambda: inner.get(aor)))
                return d

            def replace(self, aor: str, bindings: list) -> Deferred:
                inner.replace(aor, bindings)
                return succeed(None)

            def release(self) -> None:
                d, value = self.pending.pop(0)
                d.callback(value())

        slow = Slow()
        registrar = Registrar(slow, RegistrarSettings(), clock)  # type: ignore[arg-type]
        d1 = registrar.save(register("<sip:a@192.0.2.10>", cseq=1), UDP)
        d2 = registrar.save(register("<sip:b@192.0.2.11>", cseq=2), UDP)
        self.assertEqual(len(slow.pending), 1)  # the second waits for the first
        slow.release()
        self.assertEqual(self.successResultOf(d1).status, 200)
        self.assertEqual(len(slow.pending), 1)
        slow.release()
        r2 = self.successResultOf(d2)
        self.assertEqual(len(r2.headers.get_all("contact")), 2)
        self.assertEqual(registrar._queues, {})

    def test_storage_failure_is_500(self) -> None:
        class Broken:
            def contacts(self, aor: str) -> Deferred:
                return succeed([])

            def replace(self, aor: str, bindings: list) -> Deferred:
                d: Deferred = Deferred()
                d.errback(RuntimeError("disk on fire"))
                return d

        registrar = Registrar(Broken(), RegistrarSettings(), Clock())  # type: ignore[arg-type]
        r = self.successResultOf(registrar.save(register("<sip:a@192.0.2.10>"), UDP))
        self.assertEqual(r.status, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(registrar._queues, {})
