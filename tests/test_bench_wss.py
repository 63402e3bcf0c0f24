"""Smoke test of the WSS load benchmark (``bench/wss_load.py`` + ``bench/wss/load_client.mjs``).

The real thing at a tiny size: the script makes its CA, starts ``twistd edgeproxy`` on a free WSS port,
and the Node client opens 20 WebSocket-over-TLS connections, registers them, refreshes at 50/s, places
calls at 5/s (INVITE, 180, 200, ACK, hold, BYE, 200 between two of its connections through the node),
un-registers and closes. What is checked comes from the run's ``results.json``: every registration,
refresh, call and un-registration succeeded, a memory figure per connection was reported, and the node
the script started is gone afterwards. Pass/fail of the rate rule (p99 <= 200 ms) is not asserted: on a
shared machine the latency is not ours to promise, the counts are.

Skipped when ``node`` or ``bench/wss/node_modules`` is missing, except under ``CI=true`` (as the WebRTC
tests do: CI must not pass by running nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.webrtc_harness import node_path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "wss_load.py"
CLIENT_DIR = ROOT / "bench" / "wss"
CONNECTIONS = 20


def require_bench_client() -> str:
    """``node`` with bench/wss's packages installed, or skip (fail under ``CI=true``)."""
    node = node_path()
    if node is None:
        reason = "Node.js is not installed (Debian/Ubuntu: apt-get install -y nodejs npm)"
    elif not (CLIENT_DIR / "node_modules" / "ws").is_dir():
        reason = "ws not installed in bench/wss (run: cd bench/wss && npm ci)"
    else:
        return node
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie has stopped running
    except OSError:
        return True


def test_wss_load_smoke(tmp_path: Path) -> None:
    node = require_bench_client()
    outdir = tmp_path / "out"
    argv = [sys.executable, str(SCRIPT), "--node", node, "--connections", str(CONNECTIONS),
            "--reg-rates", "50", "--call-rates", "5", "--step-secs", "2", "--hold-ms", "200",
            "--settle", "1", "--cooldown", "0.5", "--fail-cooldown", "1", "--refine", "0", "--retry-noisy", "0",
            "--timeout", "90", "--outdir", str(outdir)]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=150)
    report = f"exit {run.returncode}\nstdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-4000:]}"
    assert run.returncode == 0, report

    doc = json.loads((outdir / "results.json").read_text())
    summary: dict[str, Any] = doc["summary"]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in doc["results"]:
        by_kind.setdefault(row["kind"], []).append(row)

    # every connection registered (the warm-up one, then the other 19), none failed
    assert summary["registered"] == CONNECTIONS, report
    (connect,) = by_kind["connect"]
    assert connect["registered"] == CONNECTIONS - 1 and connect["failed"] == 0, report
    assert summary["initial_reg_per_s"] > 0, report

    steps = {s["scenario"]: s for s in by_kind["step"]}
    refresh, call = steps["refresh"], steps["call"]
    assert refresh["offered"] == 100 and refresh["ok"] == 100 and refresh["failed"] == 0, report
    assert call["offered"] == 10 and call["ok"] == 10 and call["failed"] == 0, report
    # the callee side saw every dialog through: INVITE, ACK, BYE, each over its own WebSocket
    assert call["callee_invites"] == call["callee_acks"] == call["callee_byes"] == 10, report
    assert refresh["rtt_ms_p99"] is not None and call["rtt_ms_p99"] is not None, report
    assert refresh["ws_closed"] == 0 and call["ws_closed"] == 0, report
    assert {m["scenario"] for m in by_kind["max"]} == {"refresh", "call"}, report

    (memory,) = by_kind["memory"]
    assert memory["connections"] == CONNECTIONS
    assert memory["rss_kb_idle"] and memory["rss_kb_before"], report
    assert isinstance(summary["bytes_per_connection"], (int, float)), report

    (unregister,) = by_kind["unregister"]
    assert unregister["ok"] == CONNECTIONS and unregister["failed"] == 0, report
    assert "SUMMARY " in (outdir / "results.txt").read_text()

    # the node the script started was stopped (by its PID) before it returned
    proxy_pid = int((outdir / "proxy.pid").read_text())
    assert process_gone(proxy_pid), f"proxy pid {proxy_pid} still running\n{report}"
