"""InMemoryLocation (OpenSIPS usrloc semantics), Binding and binding_destination."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from edgeproxy.location import (
    EMPTY_PARAMS,
    Binding,
    InMemoryLocation,
    LocationListener,
    LookupResult,
    binding_destination,
    uri_endpoint,
)
from edgeproxy.sip import parse_uri
from edgeproxy.sip.endpoint import Destination, Endpoint, Flow
from support.doubles import LocationRecorder

T0 = 1_000_000.0
LOCAL_UDP = Endpoint("UDP", "192.0.2.1", 5060)
LOCAL_WSS = Endpoint("WSS", "192.0.2.1", 443)


def udp_flow(host: str = "198.51.100.7", port: int = 5060) -> Flow:
    return Flow(LOCAL_UDP, Endpoint("UDP", host, port))


def conn_flow(cid: int, transport: str = "TCP", host: str = "198.51.100.7", port: int = 40000) -> Flow:
    return Flow(Endpoint(transport, "192.0.2.1", 5060), Endpoint(transport, host, port), cid)


def binding(aor: str = "alice", contact: str = "sip:alice@198.51.100.7", *, expires: float = 3600,
            now: float = T0, q: float | None = None, flow: Flow | None = None, **kw) -> Binding:
    flow = flow if flow is not None else udp_flow()
    kw.setdefault("call_id", "cid-1")
    kw.setdefault("cseq", 1)
    return Binding(aor=aor, uri=parse_uri(contact), expires_at=now + expires, q=q, flow=flow,
                   received=flow.remote, last_modified=kw.pop("last_modified", now), **kw)


class LocationTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.loc = InMemoryLocation(self.clock)
        self.events = LocationRecorder()
        self.loc.subscribe(self.events)

    def lookup(self, aor: str, method: str | None = None) -> tuple[LookupResult, list[Binding]]:
        return self.successResultOf(self.loc.lookup(aor, method))

    def replace(self, aor: str, bindings: list[Binding]) -> None:
        self.assertIsNone(self.successResultOf(self.loc.replace(aor, bindings)))


class BindingTests(SynchronousTestCase):
    def test_expires_in_rounds_up_and_never_negative(self) -> None:
        b = binding(expires=600)
        self.assertEqual(b.expires_in(T0), 600)
        self.assertEqual(b.expires_in(T0 + 0.5), 600)
        self.assertEqual(b.expires_in(T0 + 599.5), 1)
        self.assertEqual(b.expires_in(T0 + 600), 0)
        self.assertEqual(b.expires_in(T0 + 10_000), 0)

    def test_lean_defaults(self) -> None:
        b = binding()
        self.assertIs(b.contact_params, EMPTY_PARAMS)
        self.assertFalse(hasattr(b, "__dict__"))
        self.assertEqual(b.path, ())
        self.assertIsNone(b.methods)
        self.assertTrue(b.allows("INVITE"))

    def test_hashable_and_value_equal(self) -> None:
        a = binding(contact_params={"+sip.ice": None})
        b = binding(contact_params={"+sip.ice": None})
        self.assertEqual(a, b)
        self.assertEqual(len({a, b}), 1)
        self.assertNotEqual(a, binding(cseq=2))

    def test_lookup_result_matches_opensips_retcodes(self) -> None:
        self.assertEqual([int(r) for r in LookupResult], [1, -1, -2, -3])
        self.assertEqual(LookupResult.METHOD_NOT_ALLOWED, -2)

    def test_recorder_is_a_listener(self) -> None:
        self.assertIsInstance(LocationRecorder(), LocationListener)


class StoreTests(LocationTestCase):
    def test_unknown_aor(self) -> None:
        self.assertEqual(self.lookup("nobody"), (LookupResult.NOT_FOUND, []))
        self.assertEqual(self.successResultOf(self.loc.contacts("nobody")), [])
        self.assertEqual(self.successResultOf(self.loc.remove("nobody")), 0)
        self.assertEqual(self.lookup(""), (LookupResult.ERROR, []))

    def test_replace_then_lookup(self) -> None:
        b = binding()
        self.replace("alice", [b])
        self.assertEqual(self.lookup("alice"), (LookupResult.FOUND, [b]))
        self.assertEqual(len(self.loc), 1)
        self.assertEqual(self.loc.binding_count, 1)
        self.assertEqual(self.loc.aors(), ["alice"])
        self.assertEqual(self.events.events, [("created", "alice")])

    def test_replace_with_nothing_removes_aor(self) -> None:
        self.replace("alice", [binding()])
        self.replace("alice", [])
        self.assertEqual(self.lookup("alice"), (LookupResult.NOT_FOUND, []))
        self.assertEqual(len(self.loc), 0)
        self.assertEqual(self.loc.binding_count, 0)
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_refresh_fires_no_event(self) -> None:
        self.replace("alice", [binding()])
        self.clock.advance(100)
        self.replace("alice", [binding(now=self.clock.seconds(), cseq=2)])
        self.replace("alice", [binding(now=self.clock.seconds(), cseq=3),
                               binding(contact="sip:alice@203.0.113.9", now=self.clock.seconds(), cseq=3)])
        self.assertEqual(self.events.events, [("created", "alice")])
        self.assertEqual(self.loc.binding_count, 2)

    def test_replace_with_only_expired_bindings_is_a_removal(self) -> None:
        self.replace("alice", [binding(expires=0)])
        self.assertEqual(self.events.events, [])
        self.assertEqual(len(self.loc), 0)

    def test_order_q_desc_then_most_recent_first(self) -> None:
        old_high = binding(contact="sip:a@192.0.2.10", q=0.9, last_modified=T0 - 50)
        new_high = binding(contact="sip:b@192.0.2.11", q=0.9, last_modified=T0 - 10)
        no_q = binding(contact="sip:c@192.0.2.12", q=None, last_modified=T0)
        low = binding(contact="sip:d@192.0.2.13", q=0.1, last_modified=T0)
        zero_old = binding(contact="sip:e@192.0.2.14", q=0.0, last_modified=T0 - 100)
        self.replace("alice", [low, zero_old, old_high, no_q, new_high])
        code, found = self.lookup("alice")
        self.assertEqual(code, LookupResult.FOUND)
        self.assertEqual(found, [new_high, old_high, low, no_q, zero_old])
        self.assertEqual(self.successResultOf(self.loc.contacts("alice")), found)

    def test_method_filtering(self) -> None:
        phone = binding(contact="sip:phone@192.0.2.10", methods=frozenset({"INVITE", "ACK", "BYE"}))
        presence = binding(contact="sip:pres@192.0.2.11", methods=frozenset({"SUBSCRIBE", "NOTIFY"}))
        self.replace("alice", [phone, presence])
        self.assertEqual(self.lookup("alice", "INVITE"), (LookupResult.FOUND, [phone]))
        self.assertEqual(self.lookup("alice", "notify"), (LookupResult.FOUND, [presence]))
        self.assertEqual(self.lookup("alice", "MESSAGE"), (LookupResult.METHOD_NOT_ALLOWED, []))
        self.assertEqual(self.lookup("alice")[0], LookupResult.FOUND)
        self.assertEqual(self.lookup("bob", "MESSAGE"), (LookupResult.NOT_FOUND, []))

    def test_unknown_methods_allow_everything(self) -> None:
        b = binding(methods=None)
        self.replace("alice", [b])
        self.assertEqual(self.lookup("alice", "MESSAGE"), (LookupResult.FOUND, [b]))

    def test_remove_all_and_by_uri(self) -> None:
        a = binding(contact="sip:alice@192.0.2.10")
        b = binding(contact="sip:alice@192.0.2.11;transport=tcp")
        self.replace("alice", [a, b])
        # §19.1.4: host case-insensitive, transport compared
        self.assertEqual(self.successResultOf(self.loc.remove("alice", parse_uri("sip:alice@192.0.2.99"))), 0)
        self.assertEqual(self.successResultOf(
            self.loc.remove("alice", parse_uri("sip:alice@192.0.2.11;transport=TCP"))), 1)
        self.assertEqual(self.lookup("alice"), (LookupResult.FOUND, [a]))
        self.assertEqual(self.events.events, [("created", "alice")])
        self.assertEqual(self.successResultOf(self.loc.remove("alice", parse_uri("sip:alice@192.0.2.10"))), 1)
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])
        self.replace("alice", [a, b])
        self.assertEqual(self.successResultOf(self.loc.remove("alice")), 2)
        self.assertEqual(self.events.events[-2:], [("created", "alice"), ("emptied", "alice")])

    def test_unsubscribe(self) -> None:
        self.loc.unsubscribe(self.events)
        self.loc.unsubscribe(self.events)
        self.replace("alice", [binding()])
        self.assertEqual(self.events.events, [])

    def test_failing_listener_does_not_break_the_store(self) -> None:
        class Broken:
            def aor_created(self, aor: str) -> None:
                raise RuntimeError("boom")

            aor_emptied = aor_created

        self.loc.unsubscribe(self.events)
        self.loc.subscribe(Broken())
        self.loc.subscribe(self.events)
        self.replace("alice", [binding()])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.events.events, [("created", "alice")])
        self.assertEqual(self.lookup("alice")[0], LookupResult.FOUND)


    def test_replace_many_is_replace_for_each_aor(self) -> None:
        """The bulk write of a full-sharing sync: same table, same events, same expiry as
        :meth:`replace` one AoR at a time, and one timer for all of them."""
        self.replace("carol", [binding("carol", "sip:carol@198.51.100.9")])
        alice = binding(expires=60)
        bob = binding("bob", "sip:bob@198.51.100.8", expires=30)
        dead = binding("dave", "sip:dave@198.51.100.5", now=T0 - 7200)
        written = self.loc.replace_many([("alice", [alice]), ("bob", [bob]), ("carol", []), ("dave", [dead])])
        self.assertEqual(written, 2)
        self.assertEqual(self.lookup("alice"), (LookupResult.FOUND, [alice]))
        self.assertEqual(self.lookup("bob"), (LookupResult.FOUND, [bob]))
        self.assertEqual(self.lookup("carol"), (LookupResult.NOT_FOUND, []))
        self.assertEqual(self.lookup("dave"), (LookupResult.NOT_FOUND, []))
        self.assertEqual(self.events.events, [("created", "carol"), ("created", "alice"), ("created", "bob"),
                                              ("emptied", "carol")])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(30)
        self.assertEqual(self.lookup("bob"), (LookupResult.NOT_FOUND, []))
        self.assertEqual(self.lookup("alice"), (LookupResult.FOUND, [alice]))
        self.clock.advance(30)
        self.assertEqual(len(self.loc), 0)
        self.assertEqual(self.events.events[-2:], [("emptied", "bob"), ("emptied", "alice")])


class ExpiryTests(LocationTestCase):
    def test_binding_expires_and_aor_emptied_fires(self) -> None:
        self.replace("alice", [binding(expires=60)])
        self.clock.advance(59)
        self.assertEqual(self.lookup("alice")[0], LookupResult.FOUND)
        self.clock.advance(1)
        self.assertEqual(self.lookup("alice"), (LookupResult.NOT_FOUND, []))
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])
        self.assertEqual(len(self.loc), 0)
        self.assertEqual(self.loc.binding_count, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lookup_hides_expired_before_the_timer_runs(self) -> None:
        self.replace("alice", [binding(expires=60)])
        self.loc.stop()  # no timer: only the read-side filter can hide it
        self.clock.advance(61)
        self.assertEqual(self.lookup("alice"), (LookupResult.NOT_FOUND, []))
        self.assertEqual(self.successResultOf(self.loc.contacts("alice")), [])
        self.assertEqual(self.loc.aors(), [])
        self.assertEqual(self.events.events, [("created", "alice")])

    def test_partial_expiry_keeps_aor(self) -> None:
        short = binding(contact="sip:a@192.0.2.10", expires=60)
        long = binding(contact="sip:b@192.0.2.11", expires=600)
        self.replace("alice", [short, long])
        self.clock.advance(60)
        self.assertEqual(self.lookup("alice"), (LookupResult.FOUND, [long]))
        self.assertEqual(self.loc.binding_count, 1)
        self.assertEqual(self.events.events, [("created", "alice")])
        self.clock.advance(540)
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_refresh_postpones_expiry(self) -> None:
        self.replace("alice", [binding(expires=60)])
        self.clock.advance(50)
        self.replace("alice", [binding(expires=60, now=self.clock.seconds(), cseq=2)])
        self.clock.advance(50)  # past the first expiry: the stale timer entry must not remove it
        self.assertEqual(self.lookup("alice")[0], LookupResult.FOUND)
        self.assertEqual(self.events.events, [("created", "alice")])
        self.clock.advance(10)
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_shortening_rearms_the_timer_earlier(self) -> None:
        self.replace("alice", [binding(expires=3600)])
        self.replace("alice", [binding(expires=30, cseq=2)])
        self.clock.advance(30)
        self.assertEqual(self.events.events, [("created", "alice"), ("emptied", "alice")])

    def test_one_timer_for_many_aors(self) -> None:
        for i in range(50):
            self.replace(f"u{i}", [binding(aor=f"u{i}", expires=100 + i)])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(100)
        self.assertEqual(len(self.loc), 49)
        self.clock.pump([1] * 60)
        self.assertEqual(len(self.loc), 0)
        self.assertEqual([e for e, _ in self.events.events].count("emptied"), 50)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_removed_then_recreated_aor_expires_on_its_new_time(self) -> None:
        self.replace("alice", [binding(expires=60)])
        self.replace("alice", [])
        self.replace("alice", [binding(expires=120)])
        self.clock.advance(60)
        self.assertEqual(self.lookup("alice")[0], LookupResult.FOUND)
        self.clock.advance(60)
        self.assertEqual(self.lookup("alice")[0], LookupResult.NOT_FOUND)
        self.assertEqual([e for e, _ in self.events.events], ["created", "emptied", "created", "emptied"])

    def test_stop_cancels_timer(self) -> None:
        self.replace("alice", [binding(expires=60)])
        self.loc.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.loc.stop()


class FlowTests(LocationTestCase):
    def test_remove_flow_drops_only_bindings_on_that_connection(self) -> None:
        ws1, ws2 = conn_flow(1, "WSS"), conn_flow(2, "WSS", port=40001)
        a1 = binding(contact="sip:a@x.invalid;transport=ws", flow=ws1)
        a2 = binding(contact="sip:b@y.invalid;transport=ws", flow=ws2)
        b1 = binding(aor="bob", contact="sip:c@z.invalid;transport=ws", flow=ws1)
        self.replace("alice", [a1, a2])
        self.replace("bob", [b1])
        self.assertEqual(self.successResultOf(self.loc.remove_flow(ws1)), 2)
        self.assertEqual(self.lookup("alice"), (LookupResult.FOUND, [a2]))
        self.assertEqual(self.lookup("bob"), (LookupResult.NOT_FOUND, []))
        self.assertIn(("emptied", "bob"), self.events.events)
        self.assertNotIn(("emptied", "alice"), self.events.events)
        self.assertEqual(self.successResultOf(self.loc.remove_flow(ws1)), 0)
        self.assertEqual(self.successResultOf(self.loc.remove_flow(ws2)), 1)
        self.assertEqual(self.events.events[-1], ("emptied", "alice"))
        self.assertEqual(self.loc._by_flow, {})

    def test_rebinding_over_new_connection_unindexes_old_flow(self) -> None:
        old, new = conn_flow(1), conn_flow(2, port=40001)
        self.replace("alice", [binding(flow=old)])
        self.replace("alice", [binding(flow=new, cseq=2)])
        self.assertEqual(self.successResultOf(self.loc.remove_flow(old)), 0)
        self.assertEqual(self.lookup("alice")[0], LookupResult.FOUND)
        self.assertEqual(self.successResultOf(self.loc.remove_flow(new)), 1)

    def test_shared_connection_index_shrinks_back(self) -> None:
        shared, other = conn_flow(1), conn_flow(2, port=40001)
        self.replace("alice", [binding(flow=shared)])
        self.replace("bob", [binding(aor="bob", flow=shared)])
        self.replace("carol", [binding(aor="carol", flow=shared)])
        self.assertEqual(self.loc._by_flow[shared], {"alice", "bob", "carol"})
        self.replace("alice", [binding(flow=other, cseq=2)])
        self.replace("carol", [])
        self.assertEqual(self.loc._by_flow[shared], "bob")
        self.assertEqual(self.successResultOf(self.loc.remove_flow(shared)), 1)
        self.assertEqual(self.lookup("alice")[0], LookupResult.FOUND)
        self.assertEqual(self.loc._by_flow, {other: "alice"})

    def test_remove_udp_flow_scans(self) -> None:
        f = udp_flow("203.0.113.5", 5070)
        self.replace("alice", [binding(flow=f), binding(contact="sip:alice@192.0.2.50")])
        self.assertEqual(self.successResultOf(self.loc.remove_flow(f)), 1)

    def test_expired_binding_leaves_flow_index(self) -> None:
        f = conn_flow(9)
        self.replace("alice", [binding(flow=f, expires=60)])
        self.clock.advance(60)
        self.assertEqual(self.loc._by_flow, {})
        self.assertEqual(self.successResultOf(self.loc.remove_flow(f)), 0)


class DestinationTests(SynchronousTestCase):
    def test_plain_udp_contact_goes_to_contact_uri(self) -> None:
        b = binding(contact="sip:alice@192.0.2.10:5070")
        uri, dest, routes = binding_destination(b)
        self.assertEqual(uri, parse_uri("sip:alice@192.0.2.10:5070"))
        self.assertEqual(dest, Destination(Endpoint("UDP", "192.0.2.10", 5070)))
        self.assertEqual(routes, [])

    def test_nat_goes_to_received_over_flow(self) -> None:
        f = udp_flow("203.0.113.5", 31337)
        b = binding(contact="sip:alice@10.0.0.5:5060", flow=f, nat=True)
        _, dest, _ = binding_destination(b)
        self.assertEqual(dest, Destination(f.remote, f, False))

    def test_connection_oriented_reuses_connection(self) -> None:
        f = conn_flow(3, "TLS", "203.0.113.5", 50000)
        b = binding(contact="sip:alice@10.0.0.5;transport=tls", flow=f)
        _, dest, _ = binding_destination(b)
        # the open connection is used first; if it has closed, the contact itself is dialled
        self.assertEqual(dest, Destination(Endpoint("TLS", "10.0.0.5", 5061), f, False))

    def test_websocket_invalid_host_is_flow_only(self) -> None:
        f = conn_flow(4, "WSS", "203.0.113.5", 50001)
        b = binding(contact="sip:k3j@df7jal23ls0d.invalid;transport=ws", flow=f)
        uri, dest, _ = binding_destination(b)
        self.assertEqual(str(uri), "sip:k3j@df7jal23ls0d.invalid;transport=ws")
        self.assertEqual(dest, Destination(f.remote, f, True))

    def test_udp_contact_registered_over_tcp_is_not_flow_only(self) -> None:
        # issue 11 item 5: the connection is used while open, the Contact once it has closed
        f = conn_flow(6, "TCP", "127.0.0.1", 15061)
        _, dest, _ = binding_destination(binding(contact="sip:bob@127.0.0.1:15070", flow=f))
        self.assertEqual(dest, Destination(Endpoint("UDP", "127.0.0.1", 15070), f, False))

    def test_outbound_reg_id_binding_is_flow_only(self) -> None:
        for f in (conn_flow(7, "TCP", "203.0.113.5", 50002), udp_flow("203.0.113.5", 5070)):
            b = binding(contact="sip:alice@192.0.2.10:5070;ob", flow=f, reg_id=1,
                        instance="<urn:uuid:00000000-0000-0000-0000-000000000001>")
            _, dest, _ = binding_destination(b)
            self.assertEqual(dest, Destination(f.remote, f, True))

    def test_path_is_route_set_and_first_hop(self) -> None:
        f = udp_flow("198.51.100.20", 5060)
        b = binding(contact="sip:alice@10.0.0.5", flow=f, nat=True,
                    path=("<sip:edge1.example.net;lr>", "<sip:198.51.100.20:5080;transport=tcp;lr>"))
        uri, dest, routes = binding_destination(b)
        self.assertEqual(str(uri), "sip:alice@10.0.0.5")
        self.assertEqual(routes, ["<sip:edge1.example.net;lr>", "<sip:198.51.100.20:5080;transport=tcp;lr>"])
        self.assertEqual(dest, Destination(Endpoint("UDP", "edge1.example.net", 5060)))

    def test_path_hop_equal_to_source_reuses_flow(self) -> None:
        f = conn_flow(5, "TCP", "198.51.100.20", 5060)
        b = binding(contact="sip:alice@10.0.0.5", flow=f, path=("<sip:198.51.100.20;transport=tcp;lr>",))
        _, dest, routes = binding_destination(b)
        self.assertEqual(dest, Destination(f.remote, f))

    def test_uri_endpoint_transport_rules(self) -> None:
        cases = {
            "sip:a@192.0.2.1": Endpoint("UDP", "192.0.2.1", 5060),
            "sip:a@192.0.2.1;transport=TCP": Endpoint("TCP", "192.0.2.1", 5060),
            "sip:a@192.0.2.1;transport=tls": Endpoint("TLS", "192.0.2.1", 5061),
            "sips:a@192.0.2.1": Endpoint("TLS", "192.0.2.1", 5061),
            "sips:a@192.0.2.1;transport=tcp": Endpoint("TLS", "192.0.2.1", 5061),
            "sip:a@h.example;transport=ws": Endpoint("WS", "h.example", 80),
            "sips:a@h.example;transport=ws": Endpoint("WSS", "h.example", 443),
            "sip:a@[2001:db8::1]:5062": Endpoint("UDP", "2001:db8::1", 5062),
            "sip:a@h.example;maddr=192.0.2.9": Endpoint("UDP", "192.0.2.9", 5060),
        }
        for text, expected in cases.items():
            self.assertEqual(uri_endpoint(parse_uri(text)), expected, text)


# -- model-based property test ---------------------------------------------------------------------
AORS = ["a", "b", "c"]
CONTACTS = ["sip:x@192.0.2.1", "sip:y@192.0.2.2", "sip:z@192.0.2.3"]
FLOWS = [conn_flow(1), conn_flow(2, port=40001), udp_flow()]

op = st.one_of(
    st.tuples(st.just("replace"), st.sampled_from(AORS),
              st.lists(st.tuples(st.sampled_from(CONTACTS), st.integers(0, 50), st.sampled_from(FLOWS)),
                       max_size=3, unique_by=lambda t: t[0])),
    st.tuples(st.just("remove"), st.sampled_from(AORS), st.one_of(st.none(), st.sampled_from(CONTACTS))),
    st.tuples(st.just("remove_flow"), st.sampled_from(FLOWS)),
    st.tuples(st.just("advance"), st.integers(0, 30)),
)


class ModelTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(op, max_size=40))
    def test_matches_simple_model(self, ops: list) -> None:
        clock = Clock()
        clock.advance(T0)
        loc = InMemoryLocation(clock)
        rec = LocationRecorder()
        loc.subscribe(rec)
        model: dict[str, list[tuple[str, float, Flow]]] = {}

        def live(aor: str) -> list[tuple[str, float, Flow]]:
            return [e for e in model.get(aor, []) if e[1] > clock.seconds()]

        for o in ops:
            if o[0] == "replace":
                _, aor, entries = o
                now = clock.seconds()
                bs = [binding(aor=aor, contact=c, expires=e, now=now, flow=f) for c, e, f in entries]
                loc.replace(aor, bs)
                model[aor] = [(c, now + e, f) for c, e, f in entries]
            elif o[0] == "remove":
                _, aor, contact = o
                n = self.successResultOf(loc.remove(aor, parse_uri(contact) if contact else None))
                expected = [e for e in live(aor) if contact is None or e[0] == contact]
                self.assertEqual(n, len(expected))
                model[aor] = [e for e in model.get(aor, []) if contact is not None and e[0] != contact]
            elif o[0] == "remove_flow":
                n = self.successResultOf(loc.remove_flow(o[1]))
                self.assertEqual(n, sum(1 for a in AORS for e in live(a) if e[2] == o[1]))
                for a in AORS:
                    model[a] = [e for e in model.get(a, []) if e[2] != o[1]]
            else:
                clock.advance(o[1])
            for aor in AORS:
                code, found = self.successResultOf(loc.lookup(aor))
                self.assertEqual(sorted(str(b.uri) for b in found), sorted(e[0] for e in live(aor)))
                self.assertEqual(code, LookupResult.FOUND if live(aor) else LookupResult.NOT_FOUND)
        # events alternate per AoR, and the final state matches them (after timers caught up)
        clock.advance(0)
        for aor in AORS:
            seq = [e for e, a in rec.events if a == aor]
            self.assertEqual(seq, ["created", "emptied"] * (len(seq) // 2) + ["created"] * (len(seq) % 2))
            self.assertEqual(len(seq) % 2 == 1, bool(live(aor)), (aor, seq))
        self.assertEqual(loc.binding_count, sum(len(live(a)) for a in AORS))
