"""What Prometheus metrics and call records cost: the invite ladder of ``bench/load.py`` on a node
without them and on one with them, in one run, interleaved (off, on, off, on ...) so that the machine's
other load weighs on both alike.

    python bench/observability.py [--rounds 2] [--call-rates 100,200,300,400,600] [--step-secs 5]

"on" is ``bench/bench.toml`` plus ``[mi]`` + ``[metrics]`` (``GET /metrics`` scraped every second by
this script while the ladder runs, as a Prometheus would) and ``[acc]`` writing JSON lines to a file:
every call makes an attempt and an ended-call record. Ports are free ones on loopback (another bench
or test may hold 5060). Each node and SIPp is started and stopped by ``load.py`` (by PID); the
scraper is a thread of this process, stopped with its node. Prints per round and mode the highest
calls/s with no failed call and the node's CPU microseconds per call, then the ratios on/off.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from procfs import free_port_on  # noqa: E402


def node_config(mode: str, outdir: Path, mi_port: int) -> Path:
    text = (HERE / "bench.toml").read_text()
    if mode == "on":
        text += (f'\n[mi]\nlisten = "127.0.0.1:{mi_port}"\n\n[metrics]\n\n'
                 f'[acc]\nfile = "{outdir / "calls.jsonl"}"\n')
    path = outdir / f"bench-{mode}.toml"
    path.write_text(text)
    return path


def scrape(url: str, stop: threading.Event, counts: list[int]) -> None:
    """GET the metrics every second until ``stop``, as Prometheus with a 1 s interval."""
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                reply.read()
            counts[0] += 1
        except OSError:
            counts[1] += 1  # the node is not up yet, or going away


def run(mode: str, args: argparse.Namespace, outdir: Path) -> dict:
    outdir.mkdir(parents=True, exist_ok=True)
    sip = free_port_on(["127.0.0.1"], 0, 0)
    uas, uac, reg, mi = (free_port_on(["127.0.0.1"], 0, 0) for _ in range(4))
    config = node_config(mode, outdir, mi)
    start = (f"env PYTHONPATH={REPO} {Path(sys.executable).parent / 'twistd'} -n --pidfile= edgeproxy "
             f"--config {{config}} -l udp:127.0.0.1:{sip} -l tcp:127.0.0.1:{sip}")
    argv = [sys.executable, str(HERE / "load.py"), "--scenarios", "invite", "--call-rates", args.call_rates,
            "--step-secs", str(args.step_secs), "--users", str(args.users), "--proxy", f"127.0.0.1:{sip}",
            "--uas-port", str(uas), "--uac-port", str(uac), "--reg-port", str(reg), "--node-config", str(config),
            "--start-cmd", start, "--outdir", str(outdir / "load"), "--label", f"observability {mode}"]
    stop = threading.Event()
    counts = [0, 0]
    scraper = None
    if mode == "on":
        scraper = threading.Thread(target=scrape, args=(f"http://127.0.0.1:{mi}/metrics", stop, counts), daemon=True)
        scraper.start()
    try:
        subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, timeout=args.timeout)
    finally:
        stop.set()
        if scraper is not None:
            scraper.join(5)
    summary = json.loads((outdir / "load" / "results.json").read_text())["summary"]
    records = outdir / "calls.jsonl"
    summary["scrapes"] = counts[0]
    summary["call_records"] = sum(1 for _ in records.open()) if records.exists() else 0
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--call-rates", default="100,200,300,400,600")
    ap.add_argument("--step-secs", type=float, default=5.0)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one load.py run may take")
    ap.add_argument("--outdir", default="")
    args = ap.parse_args()
    outdir = Path(args.outdir or f"/tmp/edgeproxy-bench/observability-{time.strftime('%Y%m%d-%H%M%S')}")
    results: dict[str, list[dict]] = {"off": [], "on": []}
    for n in range(args.rounds):
        for mode in ("off", "on"):
            summary = run(mode, args, outdir / f"{n}-{mode}")
            results[mode].append(summary)
            print(f"round {n} {mode}: max_calls_per_s={summary.get('max_calls_per_s')} "
                  f"cpu_us_per_call={summary.get('cpu_us_per_call')} scrapes={summary['scrapes']} "
                  f"call_records={summary['call_records']}", flush=True)

    def best(mode: str, key: str, pick=max) -> float:
        values = [s[key] for s in results[mode] if s.get(key)]
        return pick(values) if values else float("nan")

    rate_off, rate_on = best("off", "max_calls_per_s"), best("on", "max_calls_per_s")
    cpu_off, cpu_on = best("off", "cpu_us_per_call", min), best("on", "cpu_us_per_call", min)
    print(f"SUMMARY max_calls_per_s off={rate_off:g} on={rate_on:g} on/off={rate_on / rate_off:.3f} "
          f"cpu_us_per_call off={cpu_off:.0f} on={cpu_on:.0f} on/off={cpu_on / cpu_off:.3f}")
    (outdir / "observability.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
