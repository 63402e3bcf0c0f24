"""The Prometheus exposition without sockets: the latency histogram, what the node and the proxy core
count on the message path (on a ``task.Clock``), the collector's output read back with
prometheus-client's own parser, the ``/metrics`` resource over twisted.web's in-memory requests, and
the ``[metrics]`` configuration. ``test_e2e_metrics.py`` has a real Prometheus scrape a real node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.management import LOCAL, World, options
from support.proxy import ALICE_FLOW, BOB_FLOW, answer, invite, only
from support.proxy import World as ProxyWorld
from twisted.web.test.requesthelper import DummyRequest

from edgeproxy.config import ConfigError, load_config
from edgeproxy.latency import LatencyHistogram
from edgeproxy.management import MICommands
from edgeproxy.management.http import MetricsResource, Paths
from edgeproxy.management.metrics_settings import MetricsSettings
from edgeproxy.management.prometheus import CONTENT_TYPE, exposition, metrics_registry
from edgeproxy.service import RunningNode
from edgeproxy.sip import Request, parse_datagram
from edgeproxy.sip.endpoint import Endpoint, Flow

CALLER = Endpoint("UDP", "192.0.2.40", 5060)
BOB = Endpoint("UDP", "192.0.2.20", 5080)


def samples(world: World) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition: (name, sorted labels) -> value, parsed as Prometheus would."""
    text = exposition(metrics_registry(world.mi, MetricsSettings(process=False))).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def proxy_samples(world: ProxyWorld) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parts = RunningNode(world.node, None, world.location, world.registrar)  # type: ignore[arg-type]
    text = exposition(metrics_registry(MICommands(parts), MetricsSettings(process=False))).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# -- the histogram -------------------------------------------------------------------------------

def test_histogram_buckets_are_inclusive_upper_bounds_and_cumulative() -> None:
    h = LatencyHistogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(value)
    assert h.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert h.count == 5 and h.sum == pytest.approx(8.65)
    h.reset()
    assert h.count == 0 and h.sum == 0
    with pytest.raises(ValueError):
        LatencyHistogram((1.0, 0.5))


# -- what the message path counts ----------------------------------------------------------------

def test_a_call_is_counted_by_method_class_transport_and_setup_time() -> None:
    world = ProxyWorld()
    world.register()
    forwarded = only(world.receive(invite(), ALICE_FLOW), lambda s: s.is_request("INVITE")).message
    assert isinstance(forwarded, Request)
    during = proxy_samples(world)
    assert during[("edgeproxy_tm_transactions", (("side", "server"), ("transport", "UDP")))] == 1
    assert during[("edgeproxy_tm_transactions", (("side", "client"), ("transport", "UDP")))] == 1

    world.clock.advance(2.2)  # the callee rings for 2.2 s, then answers
    world.receive(answer(forwarded, 180), BOB_FLOW)
    world.receive(answer(forwarded, 200), BOB_FLOW)
    proxy = world.node.proxy
    assert proxy.finals == [0, 0, 1, 0, 0, 0, 0]
    assert proxy.setup_time.count == 1 and proxy.setup_time.sum == pytest.approx(2.2)
    assert world.node.methods["INVITE"] == 1 and world.node.reply_classes[1:3] == [1, 1]

    got = proxy_samples(world)
    assert got[("edgeproxy_core_rcv_requests_by_method_total", (("method", "INVITE"),))] == 1
    assert got[("edgeproxy_core_rcv_replies_by_class_total", (("class", "2xx"),))] == 1
    assert got[("edgeproxy_tm_transactions_by_class_total", (("class", "2xx"),))] == 1
    assert got[("edgeproxy_tm_invite_setup_seconds_bucket", (("le", "1.0"),))] == 0
    assert got[("edgeproxy_tm_invite_setup_seconds_bucket", (("le", "2.5"),))] == 1
    assert got[("edgeproxy_tm_invite_setup_seconds_count", ())] == 1
    assert got[("edgeproxy_tm_invite_setup_seconds_sum", ())] == pytest.approx(2.2)


def test_a_method_from_the_network_never_becomes_a_label_of_its_own() -> None:
    world = World()
    text = options(7).replace(b"OPTIONS", b"XYZZY")
    world.node.message_received(parse_datagram(text), Flow(LOCAL, CALLER))
    assert world.node.methods["OTHER"] == 1 and "XYZZY" not in world.node.methods
    stats = world.call("get_statistics", ["core:"])
    assert stats["core:rcv_requests_other"] == 1 and stats["core:rcv_requests"] == 1


def test_the_register_processing_time_is_observed_when_the_route_ends() -> None:
    world = World()
    text = (f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {BOB.hostport};branch=z9hG4bKr1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=r1\r\nTo: <sip:bob@example.com>\r\n"
            f"Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@{BOB.hostport}>\r\nContent-Length: 0\r\n\r\n")
    world.node.message_received(parse_datagram(text.encode()), Flow(LOCAL, BOB))
    assert world.node.register_time.count == 1  # a synchronous save: 0 s on the test clock
    assert samples(world)[("edgeproxy_registrar_register_duration_seconds_count", ())] == 1


# -- the exposition is the MI's statistics -------------------------------------------------------

def test_every_mi_statistic_is_exported_with_its_value() -> None:
    world = World()
    world.register("alice", "<sip:alice@192.0.2.10:5062>")
    for n in range(3):
        world.node.message_received(parse_datagram(options(n)), Flow(LOCAL, CALLER))
    got = samples(world)
    stats = world.call("get_statistics", ["all"])
    kinds = world.call("list_statistics")
    families = {(name, labels) for name, labels in got}
    for st in world.mi.statistics():
        from edgeproxy.management.prometheus import metric_family

        name = "edgeproxy_" + metric_family(st) + ("_total" if kinds[st.key] == "incremental" else "")
        key = (name, tuple(sorted(st.labels)))
        assert key in families, f"{st.key} is not exported as {key}"
        assert got[key] == stats[st.key], st.key
    assert got[("edgeproxy_core_rcv_requests_total", ())] == 3
    assert got[("edgeproxy_core_rcv_requests_by_method_total", (("method", "OPTIONS"),))] == 3
    assert got[("edgeproxy_usrloc_registered_users", ())] == 1


# -- HTTP ------------------------------------------------------------------------------------------

def render(resource: Any, method: bytes = b"GET", path: bytes = b"/metrics",
           headers: dict[bytes, bytes] | None = None) -> tuple[int, bytes, DummyRequest]:
    request = DummyRequest([])
    request.method = method
    request.path = path
    for k, v in (headers or {}).items():
        request.requestHeaders.setRawHeaders(k, [v])
    body = resource.render(request)
    return request.responseCode or 200, body, request


def test_metrics_resource_answers_get_only_and_honours_the_token() -> None:
    world = World()
    resource = MetricsResource(world.mi, MetricsSettings(process=True))
    code, body, request = render(resource)
    assert code == 200 and b"edgeproxy_core_rcv_requests_total" in body
    assert b"process_resident_memory_bytes" in body
    assert request.responseHeaders.getRawHeaders(b"content-type") == [CONTENT_TYPE.encode()]
    code, _, request = render(resource, method=b"POST")
    assert code == 405 and request.responseHeaders.getRawHeaders(b"allow") == [b"GET, HEAD"]

    guarded = MetricsResource(world.mi, MetricsSettings(process=False), token="s3cret")
    assert render(guarded)[0] == 401
    assert render(guarded, headers={b"authorization": b"Bearer wrong"})[0] == 401
    assert render(guarded, headers={b"authorization": b"Bearer s3cret"})[0] == 200


def test_paths_send_each_path_to_its_resource() -> None:
    world = World()
    metrics = MetricsResource(world.mi, MetricsSettings(process=False))

    class Other(MetricsResource):
        def render(self, request: Any) -> bytes:
            return b"other"

    root = Paths({"/metrics": metrics}, Other(world.mi, MetricsSettings(process=False)))
    assert b"edgeproxy_" in render(root, path=b"/metrics/")[1]
    assert render(root, path=b"/mi")[1] == b"other"


# -- configuration ---------------------------------------------------------------------------------

def test_metrics_configuration(tmp_path: Path) -> None:
    def load(text: str) -> Any:
        path = tmp_path / "edge.toml"
        path.write_text(text)
        return load_config(str(path))

    assert load("").metrics is None
    with pytest.raises(ConfigError, match="metrics.listen: not set, and there is no \\[mi\\] listen"):
        load("[metrics]\n")
    config = load('[mi]\nlisten = "127.0.0.1:8888"\n[metrics]\n')
    assert config.metrics == MetricsSettings()
    own = load('[metrics]\nlisten = "127.0.0.1:9102"\npath = "/prom"\nprefix = "edge"\nprocess = false\n')
    assert own.metrics == MetricsSettings(listen="127.0.0.1:9102", path="/prom", prefix="edge", process=False)
    with pytest.raises(ConfigError, match="did you mean"):
        load('[metrics]\nlisten = "127.0.0.1:9102"\npaht = "/x"\n')
    with pytest.raises(ConfigError, match="metrics.prefix"):
        load('[metrics]\nlisten = "127.0.0.1:9102"\nprefix = "a-b"\n')
    with pytest.raises(ConfigError, match="metrics.listen"):
        load('[metrics]\nlisten = "example.com:9102"\n')


def test_dispatcher_destinations_are_exported_with_their_state(tmp_path: Path) -> None:
    from twisted.internet.task import Clock

    from edgeproxy.service import build_node

    path = tmp_path / "node.toml"
    path.write_text('[node]\nlisten = ["udp:127.0.0.1:5060"]\n[dispatcher]\n'
                    '[[dispatcher.destinations]]\nsetid = 1\ndestination = "sip:192.0.2.50:5060"\n'
                    '[[dispatcher.destinations]]\nsetid = 1\ndestination = "sip:192.0.2.51:5060"\nstate = 1\n')
    running = build_node(load_config(str(path)), Clock())
    assert running.dispatcher is not None
    text = exposition(metrics_registry(MICommands(running), MetricsSettings(process=False))).decode()
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for family in text_string_to_metric_families(text) for s in family.samples}

    def state(uri: str, name: str) -> float:
        return got[("edgeproxy_dispatcher_destination_state",
                    (("destination", uri), ("setid", "1"), ("state", name)))]

    assert state("sip:192.0.2.50:5060", "Active") == 1 and state("sip:192.0.2.50:5060", "Inactive") == 0
    assert state("sip:192.0.2.51:5060", "Active") == 0 and state("sip:192.0.2.51:5060", "Inactive") == 1
    assert ("edgeproxy_dispatcher_state_changes_total", ()) in got
