"""Registrar.save() refuses values longer than usrloc's ``location`` columns, as OpenSIPS's registrar
does (lib/reg/config.h limits; rerrno R_AOR_LEN, R_CONTACT_LEN, R_CALLID_LEN), so that nothing is
accepted that persistence could not write (``usrloc.rows.fits``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from support.messages import register
from support.registrar import RegistrarTestCase
from twisted.logger import globalLogPublisher

from edgeproxy.config import load_config
from edgeproxy.location import Binding
from edgeproxy.registrar import RegistrarSettings
from edgeproxy.usrloc.rows import binding_row, fits

CONTACT = "<sip:alice@198.51.100.7:5062>"


class DefaultLimitTests(RegistrarTestCase):
    """The defaults are OpenSIPS's: username/domain 64, AoR 256, Contact URI and Call-ID 255."""

    def assert_refused(self, request, reason: str) -> None:
        before = sorted(self.location.aors())
        r = self.save(request)
        self.assertEqual((r.status, r.reason), (400, reason))
        self.assertEqual(sorted(self.location.aors()), before)  # nothing stored (RFC 3261 §10.3 step 7)

    def test_callid_of_255_accepted_256_refused(self) -> None:
        self.assertEqual(self.save(register(CONTACT, call_id="c" * 255)).status, 200)
        self.assert_refused(register(CONTACT, call_id="c" * 256), "Callid too long")
        self.assert_refused(register(CONTACT, call_id="c" * 300), "Callid too long")

    def test_username_of_64_accepted_65_refused(self) -> None:
        self.assertEqual(self.save(register(CONTACT, to=f"<sip:{'u' * 64}@example.com>")).status, 200)
        self.assert_refused(register(CONTACT, to=f"<sip:{'u' * 65}@example.com>"), "Address Of Record too long")

    def test_domain_over_64_refused_even_without_use_domain(self) -> None:
        # OpenSIPS extract_aor() checks the host whether or not use_domain keys on it
        host = "h" * 60 + ".example.com"
        self.assert_refused(register(CONTACT, to=f"<sip:alice@{host}>"), "Address Of Record too long")

    def test_aor_argument_is_checked_too(self) -> None:
        r = self.save(register(CONTACT), aor=f"sip:{'u' * 65}@example.com")
        self.assertEqual((r.status, r.reason), (400, "Address Of Record too long"))
        r = self.save(register(CONTACT), aor="k" * 257)  # a verbatim key: its own length
        self.assertEqual((r.status, r.reason), (400, "Address Of Record too long"))
        self.assertEqual(self.save(register(CONTACT), aor="k" * 256).status, 200)

    def test_any_contact_over_255_refuses_the_whole_register(self) -> None:
        long_uri = f"<sip:alice@198.51.100.7:5062;x={'p' * 240}>"
        self.assert_refused(register(CONTACT, long_uri), "Contact/received too long")
        fitting = f"<sip:alice@198.51.100.7;x={'p' * (255 - len('sip:alice@198.51.100.7;x='))}>"
        self.assertEqual(self.save(register(fitting)).status, 200)

    def test_a_query_and_a_star_removal_do_not_check_the_callid(self) -> None:
        # OpenSIPS checks the Call-ID only when it stores contacts (pack_ci()); a query stores nothing
        self.assertEqual(self.save(register(call_id="c" * 300)).status, 200)
        self.assertEqual(self.save(register("*", call_id="c" * 300, extra=("Expires: 0",))).status, 200)

    def test_what_is_accepted_fits_the_location_table(self) -> None:
        self.save(register(f"<sip:alice@198.51.100.7;x={'p' * 200}>", call_id="c" * 255,
                           to=f"<sip:{'a' * 64}@example.com>"))
        (b,) = self.successResultOf(self.location.contacts("a" * 64))
        self.assertIsInstance(b, Binding)
        self.assertTrue(fits(binding_row(b, use_domain=True)))

    def test_refusals_are_logged_once_per_doubling_with_their_count(self) -> None:
        seen: list[dict] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        for _ in range(9):
            self.save(register(CONTACT, call_id="c" * 300))
        lines = [e for e in seen if e.get("log_namespace", "").startswith("edgeproxy.registrar")]
        self.assertEqual([e["count"] for e in lines], [1, 2, 4, 8])
        self.assertEqual(self.registrar.refused_too_long, 9)


class ConfiguredLimitTests(RegistrarTestCase):
    settings = RegistrarSettings(max_callid_len=32, max_contact_len=40, max_username_len=8)

    def test_configured_limits_apply(self) -> None:
        self.assertEqual(self.save(register(CONTACT, call_id="c" * 33)).reason, "Callid too long")
        self.assertEqual(self.save(register(CONTACT, to="<sip:alicealice@example.com>")).reason,
                         "Address Of Record too long")
        self.assertEqual(self.save(register("<sip:alice@198.51.100.7:5062;transport=tcp;x=1>")).reason,
                         "Contact/received too long")
        self.assertEqual(self.save(register(CONTACT, call_id="c" * 32)).status, 200)

    def test_limits_are_read_from_the_registrar_table(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "edgeproxy.toml")
            path.write_text("[registrar]\nmax_callid_len = 100\nmax_aor_len = 128\n")
            settings = load_config(str(path)).registrar
        self.assertEqual((settings.max_callid_len, settings.max_aor_len, settings.max_contact_len), (100, 128, 255))
        with self.assertRaises(ValueError):
            RegistrarSettings(max_contact_len=0)
