"""The attack suite of issue 16 (``bench/attack/suite.py``) at a small scale, as CI runs it: the
script starts its own ``twistd edgeproxy`` (default configuration plus ``[auth]`` and ``[pike]
check_all``, UDP/TCP/WS on loopback), fuzzes it over the three transports with mutated messages,
probes amplification, bombs the WebSocket handshake, floods state with 60 KB INVITEs, holds slowloris
connections and guesses a password beside a legitimate user, while SIPp registers and calls a SIPp
PBX through the node as legitimate users do (``bench/attack/legit.py``). What is asserted comes from the run's
JSON: the node lived through it with no traceback in its log, unauthenticated traffic got fewer bytes
back than it sent (one reply per probe datagram), memory stayed bounded, the password was not found
and every legitimate REGISTER and call of the concurrent SIPp run succeeded. Counts and RSS, never timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.sipp_harness import require_sipp

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "attack" / "suite.py"


def test_the_attack_suite_at_small_scale(tmp_path: Path) -> None:
    require_sipp()
    out = tmp_path / "suite.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--scale", "0.01", "--workdir", str(tmp_path / "run"),
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(out.read_text())
    results = {r["attack"].split(" (")[0]: r for r in summary["results"]}
    assert summary["alive"] and summary["tracebacks"] == 0, run.stdout
    assert all(r["tracebacks"] == 0 and r["notes"]["alive"] for r in results.values())
    for name in ("fuzz UDP", "fuzz TCP", "fuzz WS"):
        r = results[name]
        assert r["sent"] >= 1000, r
        assert r["reply_bytes"] <= r["sent_bytes"], r
    for probe, got in results["amplification probe"]["notes"].items():
        if isinstance(got, dict):
            assert got["replies"] == 1, (probe, got)  # one datagram in, one out, over 3 s
            assert got["reply_bytes"] <= got["request_bytes"] + 200, (probe, got)
    bomb = results["WS handshake bomb"]
    assert bomb["rss_after_kb"] - bomb["rss_before_kb"] < 20 * 1024, bomb
    flood = results["state flood"]
    assert flood["rss_peak_kb"] - flood["rss_before_kb"] < 30 * 1024, flood
    guessing = results["password guessing"]
    assert guessing["notes"]["password found"] is False, guessing
    assert guessing["notes"]["legitimate REGISTERs failed"] == 0 < guessing["notes"]["legitimate REGISTERs ok"]
    # the concurrent legitimate SIPp run: digest REGISTERs and calls to a SIPp PBX through the node
    legit = summary["legitimate"]
    assert legit["legitimate REGISTERs failed"] == 0 < legit["legitimate REGISTERs ok"], legit
    assert legit["legitimate calls failed"] == 0 < legit["legitimate calls ok"], legit
    assert legit["INVITEs delivered to the PBX"] >= legit["legitimate calls ok"], legit
    assert summary["rss_end_kb"] - summary["rss_start_kb"] < 50 * 1024, summary
    assert summary["log_lines"] < 400, summary["log_lines"]
