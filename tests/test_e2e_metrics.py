"""End to end: a real Prometheus scrapes ``twistd edgeproxy`` while SIPp registers and calls through it.

The node serves ``GET /metrics`` on its MI listener (``[mi] listen`` + ``[metrics]``); Prometheus
(Debian's package, started by :func:`support.prometheus_server.prometheus_server` on loopback with a
1 s scrape interval) scrapes it. What Prometheus's HTTP API answers must be what SIPp reports having
sent: the REGISTER and INVITE counts (by method label), one setup time per call in the INVITE setup
histogram, one processing time per REGISTER. Skipped without the prometheus binary, except under
``CI=true`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from pathlib import Path

from support.ports import free_port
from support.prometheus_server import prometheus_server, require_prometheus
from support.sipp_harness import LOOPBACK, Sipp, edgeproxy_node, require_sipp

CALLS = 10
REGISTERS = 5


def sent(result: object, method: str) -> int:
    return sum(1 for m in result.sent() if m.method == method)  # type: ignore[attr-defined]


def test_prometheus_scrapes_the_counts_sipp_reports(tmp_path: Path) -> None:
    require_sipp()
    require_prometheus()
    mi_port = free_port()
    config = {"mi": {"listen": f"{LOOPBACK}:{mi_port}"}, "metrics": {"path": "/metrics"},
              "registrar": {"min_expires": 30}}
    with edgeproxy_node(tmp_path / "node", config=config, log_level="info") as node:
        # the exposition itself, before Prometheus: text format, the process collector's series
        with urllib.request.urlopen(f"http://{LOOPBACK}:{mi_port}/metrics", timeout=5) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = reply.read().decode()
        assert "# TYPE edgeproxy_core_rcv_requests_total counter" in text
        assert "process_resident_memory_bytes" in text and "process_open_fds" in text

        with prometheus_server(tmp_path / "prometheus", [f"{LOOPBACK}:{mi_port}"]) as prom:
            sipp = Sipp(tmp_path / "sipp")
            phone = sipp.start("register", node.address, user="bob", ooc="uas_answer", duration_ms=60_000,
                               timeout=70, keys={"expires": 300})
            try:
                phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
                others = sipp.run("register", node.address, user="carol", calls=REGISTERS, rate=20,
                                  keys={"expires": 300}).assert_ok()
                calls = sipp.run("uac_call", node.address, user="bob", calls=CALLS, rate=20, duration_ms=100,
                                 timeout=30).assert_ok()
            finally:
                phone_result = phone.stop()
            assert calls.successful_calls == CALLS
            registers = sent(phone_result, "REGISTER") + sent(others, "REGISTER")
            invites = sent(calls, "INVITE")
            assert registers == REGISTERS + 1 and invites >= CALLS

            def count(method: str) -> str:
                return f'edgeproxy_core_rcv_requests_by_method_total{{method="{method}"}}'

            got_register = prom.wait_for(count("REGISTER"), lambda v: v == registers)
            got_invite = prom.wait_for(count("INVITE"), lambda v: v == invites)
            assert (got_register, got_invite) == (registers, invites), (prom.targets(), node.log()[-2000:])
            assert prom.wait_for(count("BYE"), lambda v: v == CALLS) == sent(calls, "BYE") == CALLS

            # one setup time per call (each INVITE got exactly one final response), all under the
            # largest bucket; one processing time per REGISTER
            setups = prom.wait_for("edgeproxy_tm_invite_setup_seconds_count", lambda v: v == CALLS)
            assert setups == CALLS
            assert prom.value('edgeproxy_tm_invite_setup_seconds_bucket{le="+Inf"}') == CALLS
            median = prom.value("histogram_quantile(0.5, edgeproxy_tm_invite_setup_seconds_bucket)")
            assert median is not None and not math.isnan(median) and 0 < median <= 5
            assert prom.value("edgeproxy_tm_invite_setup_seconds_sum") > 0  # type: ignore[operator]
            assert prom.wait_for("edgeproxy_registrar_register_duration_seconds_count",
                                 lambda v: v == registers) == registers
            # the MI's statistics, under their own names
            assert prom.value("edgeproxy_usrloc_registered_users") == 2
            assert prom.value('edgeproxy_tm_transactions_by_class_total{class="2xx"}') >= CALLS  # type: ignore[operator]
            assert prom.value("edgeproxy_core_rcv_requests_total") >= registers + invites  # type: ignore[operator]


def test_metrics_on_a_listener_of_their_own(tmp_path: Path) -> None:
    """``[metrics] listen``: GET /metrics answers there, with no MI beside it (nothing that changes the
    node), and anything but GET is refused."""
    require_sipp()
    port = free_port()
    config = {"metrics": {"listen": f"{LOOPBACK}:{port}", "path": "/prom", "prefix": "edge", "process": False}}
    with edgeproxy_node(tmp_path / "node", config=config, log_level="info") as node:
        Sipp(tmp_path / "sipp").run("register", node.address, user="ann", keys={"expires": 300}).assert_ok()
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/prom", timeout=5) as reply:
            text = reply.read().decode()
        assert 'edge_core_rcv_requests_by_method_total{method="REGISTER"} 1.0' in text
        assert "edge_usrloc_registered_users 1.0" in text and "process_" not in text
        for path, method, code in (("/mi", "POST", 404), ("/prom", "POST", 405)):
            request = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", data=b"{}", method=method)
            try:
                urllib.request.urlopen(request, timeout=5)
                raise AssertionError(f"{method} {path} answered 200")
            except urllib.error.HTTPError as err:
                assert err.code == code, (path, err.code)
