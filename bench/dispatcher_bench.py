#!/usr/bin/env python3
"""Calls/s through ``ds_select_dst`` over three media servers, next to direct relay to one, same run.

    python bench/dispatcher_bench.py [--rates 100,200,300,400,500,600] [--step-secs 8] [--port 15080]

Three SIPp UAS (bench/scenarios/uas.xml, ``-aa`` so they answer the probes' OPTIONS) on 127.0.0.21, .22
and .23, and one edgeproxy node (``twistd -n edgeproxy``) running the shipped
``edgeproxy_routes.failover`` route, started twice:

* ``direct``: no ``[dispatcher]``, ``route_params.freeswitch = ["127.0.0.21:PORT"]``: every call is
  relayed to one server (``$du``), as before the dispatcher existed;
* ``dispatcher``: a ``[dispatcher]`` set of the three servers, probed every 5 s (``ds_probing_mode =
  1``); each call is ``ds_select_dst(1, 4, "f")`` (round robin, failover list kept) with
  ``$T_fr_timeout`` and ``t_on_failure`` armed.

For each, a ladder of offered rates: one SIPp UAC run per step (bench/scenarios/uac.xml, -m rate x
step seconds, -d 0), passing when every call completed, none failed and the achieved rate is >= 95 %
of the offered one. Reported per step: achieved calls/s, the node's CPU microseconds per call (utime +
stime from /proc), and for ``dispatcher`` the probes sent per destination (MI ``ds_list`` /
``get_statistics``) over the run. The summary compares the highest passing rates.

Loopback only; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from processes import Children, Proxy  # noqa: E402
from procfs import SCENARIO_DIR, log  # noqa: E402
from sipp_ladder import as_int, read_stat_csv  # noqa: E402
from support.mi import mi_result as mi  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SERVERS = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
NODE = "127.0.0.1"


def node_config(mode: str, port: int, uas_port: int, mi_port: int) -> str:
    lines = [
        "[node]", f'listen = ["udp:{NODE}:{port}"]', 'route = "edgeproxy_routes.failover"', 'log_level = "warn"',
        "[mi]", f'listen = "{NODE}:{mi_port}"',
        "[route_params]", "freeswitch_algorithm = 4",
    ]
    if mode == "direct":
        lines.append(f'freeswitch = ["{SERVERS[0]}:{uas_port}"]')
    else:
        lines += ["[dispatcher]", "ds_ping_interval = 5", "ds_probing_mode = 1"]
        for host in SERVERS:
            lines += ["[[dispatcher.destinations]]", "setid = 1", f'destination = "sip:{host}:{uas_port}"']
    return "\n".join(lines) + "\n"


def run_step(sipp: str, children: Children, directory: Path, target: str, rate: int, secs: int) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    users = directory / "users.csv"
    users.write_text("SEQUENTIAL\nbob;\n")
    calls = rate * secs
    bound = secs * 3 + 20
    argv = [sipp, target, "-sf", str(SCENARIO_DIR / "uac.xml"), "-inf", str(users), "-i", NODE, "-t", "u1",
            "-nostdin", "-r", str(rate), "-m", str(calls), "-l", str(rate * 4 + 100), "-d", "0",
            "-timeout", f"{bound}s", "-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_err"]
    (directory / "cmd.txt").write_text(shlex.join(argv) + "\n")
    started = time.monotonic()
    p = children.start(argv, cwd=directory, stdout_path=directory / "sipp.out")
    try:
        p.wait(bound + 10)
    except Exception:
        pass
    Children.stop(p, 3.0)
    children.forget(p)
    elapsed = time.monotonic() - started
    st = read_stat_csv(directory / "stat.csv")
    ok, failed = as_int(st, "SuccessfulCall(C)"), as_int(st, "FailedCall(C)")
    try:
        achieved = float(st.get("CallRate(C)") or 0)  # SIPp's own cumulative call rate
    except ValueError:
        achieved = 0.0
    return {"rate": rate, "calls": calls, "ok": ok, "failed": failed, "elapsed": round(elapsed, 2),
            "achieved": round(achieved, 1), "retransmissions": as_int(st, "Retransmissions(C)"),
            "passed": ok == calls and failed == 0 and achieved >= 0.95 * rate}


def run_mode(mode: str, args: argparse.Namespace, children: Children, outdir: Path) -> list[dict[str, Any]]:
    d = outdir / mode
    d.mkdir(parents=True, exist_ok=True)
    uas_port, mi_port = args.port + 1, args.port + 2
    servers = []
    for host in SERVERS:
        argv = [args.sipp, "-sf", str(SCENARIO_DIR / "uas.xml"), "-i", host, "-p", str(uas_port), "-t", "u1",
                "-nostdin", "-aa", "-trace_err"]
        servers.append(children.start(argv, cwd=d, stdout_path=d / f"uas-{host}.out"))
    config = d / "node.toml"
    config.write_text(node_config(mode, args.port, uas_port, mi_port))
    proxy = Proxy(NODE, args.port, "udp", children, d, name=f"node-{mode}")
    twistd = shutil.which("twistd", path=str(Path(sys.executable).parent)) or "twistd"
    proxy.start(f"{twistd} -n --pidfile= edgeproxy --config {config}", 30)
    results = []
    started = time.monotonic()
    try:
        for rate in args.rates:
            cpu0 = proxy.cpu() or 0.0
            r = run_step(args.sipp, children, d / f"rate-{rate}", f"{NODE}:{args.port}", rate, args.step_secs)
            cpu1 = proxy.cpu() or 0.0
            r["cpu_us_per_call"] = round((cpu1 - cpu0) / r["ok"] * 1e6) if r["ok"] else None
            r["mode"] = mode
            log(f"RESULT {json.dumps(r)}")
            results.append(r)
            if not r["passed"]:
                break
            time.sleep(2)
        if mode == "dispatcher":
            minutes = (time.monotonic() - started) / 60
            listed = mi(f"http://{NODE}:{mi_port}/mi", "ds_list")["PARTITIONS"][0]["SETS"][0]["Destinations"]
            stats = mi(f"http://{NODE}:{mi_port}/mi", "get_statistics", [["dispatcher:"]])
            log(f"PROBES {json.dumps(stats)} over {minutes:.1f} min, hits "
                f"{json.dumps({x['URI']: x['first_hit_counter'] for x in listed})}")
            per_dest = stats.get("dispatcher:probes_sent", 0) / len(SERVERS)
            results.append({"mode": "probes", "per_destination": per_dest,
                            "per_destination_per_minute": round(per_dest / minutes, 1)})
    finally:
        proxy.stop()
        for p in servers:
            Children.stop(p, 3.0)
            children.forget(p)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="100,200,300,400,500,600")
    ap.add_argument("--step-secs", type=int, default=8)
    ap.add_argument("--port", type=int, default=15080, help="node UDP port; +1 the servers', +2 the MI's")
    ap.add_argument("--sipp", default=shutil.which("sipp") or "sipp")
    ap.add_argument("--outdir", default=f"/tmp/edgeproxy-bench/dispatcher-{time.strftime('%Y%m%d-%H%M%S')}")
    args = ap.parse_args(argv)
    args.rates = [int(r) for r in args.rates.split(",")]
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    children = Children()
    try:
        results = {mode: run_mode(mode, args, children, outdir) for mode in ("direct", "dispatcher")}
    finally:
        children.stop_all()
    best = {m: max((r["rate"] for r in rs if r.get("passed")), default=0) for m, rs in results.items()}
    achieved = {m: max((r["achieved"] for r in rs if r.get("passed")), default=0.0) for m, rs in results.items()}
    ratio = achieved["dispatcher"] / achieved["direct"] if achieved["direct"] else 0.0
    summary = {"max_passing_rate": best, "achieved_at_max": achieved, "dispatcher_vs_direct": round(ratio, 3)}
    log(f"SUMMARY {json.dumps(summary)}")
    (outdir / "results.json").write_text(json.dumps({"steps": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
