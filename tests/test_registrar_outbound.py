"""Registrar.save() with Path (RFC 3327), instance replacement and SIP Outbound (RFC 5626:
``+sip.instance``/``reg-id``, flows, Flow-Timer), and saves for one AoR serialised over a slow location
service. The rest of save() is ``test_registrar.py``'s."""

from __future__ import annotations

from support.messages import register
from support.registrar import UDP, WSS, RegistrarTestCase
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from edgeproxy.location import InMemoryLocation
from edgeproxy.registrar import Registrar, RegistrarSettings, binding_destination
from edgeproxy.sip import Request
from edgeproxy.sip.endpoint import Destination, Endpoint


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
