"""Registrar.save(): RFC 3261 §10.3 steps 5-8 with OpenSIPS registrar semantics."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from support.messages import register
from support.registrar import T0, UDP, WSS, RegistrarTestCase
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from edgeproxy.location import InMemoryLocation, LookupResult
from edgeproxy.registrar import Registrar, RegistrarSettings, aor_of
from edgeproxy.sip import parse_uri


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
