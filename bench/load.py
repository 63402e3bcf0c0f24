#!/usr/bin/env python3
"""One-command SIP load benchmark for edgeproxy (or any registrar + stateful proxy).

    python bench/load.py [--proxy 127.0.0.1:5060] [--transport udp|tcp]
                         [--scenarios register,invite] [--reg-rates 1000,2000,4000]
                         [--call-rates 100,300,600] [--step-secs 10]
                         [--start-cmd "twistd -n edgeproxy --config bench/bench.toml"]
                         [--proxy-pid PID] [--users 10000] [--memory-contacts 100000]
    python bench/load.py --scenarios federated [--call-rates 100,200,400,600] [--step-secs 6]

SIPp (Debian's ``sip-tester``) drives the load; this script only orchestrates it:

* ``register``: SIPp sends REGISTER for users ``uNNNNN`` (Contact
  ``sip:uNNNNN@127.0.0.1:5070``, Expires 3600) at each rate of a ladder, then
  bisects between the last passing and the first failing rate.
* ``invite``: all users are first registered towards one SIPp UAS on
  127.0.0.1:5070; then a SIPp UAC places full calls (INVITE, 180/200, ACK,
  pause, BYE, 200) through the proxy, which must Record-Route.
* ``--auth``: the same two ladders against a node with digest authentication:
  the node's configuration (``{config}`` in ``--start-cmd``) gets an ``[auth]``
  section holding every bench user; each registration is REGISTER -> 401 ->
  REGISTER with Authorization -> 200, each call INVITE -> 407 -> ACK -> INVITE
  with Proxy-Authorization -> 200, placed by another bench user.
* ``--memory-contacts N``: N more distinct contacts are registered at a bounded
  rate and the proxy's resident memory growth per contact is reported.
* ``federated`` (run on its own): starts a SecantusDB store and two nodes X
  (127.0.0.11) and Y (127.0.0.12) running routes/federated.py with the
  configurations in bench/federated/, registers every user on X, then runs a
  ``direct`` call ladder (the UAC, bound to the FreeSWITCH address, calls X)
  and a ``federated`` one (it calls Y: global lookup, store query, extra hop
  to X), and compares them: calls/s, p99 INVITE->200, CPU per call of X, Y and
  the store, and store round-trips per call (from the server's ``top``).

Each step is one SIPp run bounded by ``-m`` (rate x step seconds) and
``-timeout``. A step passes when every call completed, none failed, the
achieved rate is >= 95 % of the offered one, UAC retransmissions are <= 0.1 %
of the calls, and the p99 response time (REGISTER->200, INVITE->200) is <=
200 ms. A failing step is followed by a longer cool-down so the proxy's
pending transactions drain before the next step.

The proxy's CPU time (utime+stime of the process and its descendants, from
/proc) is read before and after each step and turned into CPU microseconds per
successful REGISTER or call; its VmRSS/VmHWM come from /proc/PID/status.

Output: one ``RESULT ...`` line per step, one ``MAX ...`` line per scenario,
one ``MEMORY ...`` line and a final ``SUMMARY ...`` line, on stdout and in
``OUTDIR/results.txt`` (plus ``OUTDIR/results.json``); SIPp's raw files are
kept in one directory per step under OUTDIR (default
/tmp/edgeproxy-bench/<timestamp>/).

Safety: loopback targets only; every child process this script starts (SIPp,
the proxy, the federated nodes and store) is stopped by its own PID (TERM, then
KILL); nothing else is ever signalled.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fed_scenario import FED_DIR, run_federated, start_federated
from processes import Children, Proxy
from procfs import BENCH_DIR, log
from sipp_ladder import Bench, auth_node_config, fmt, parse_rates, write_users


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="SIPp load benchmark for a SIP registrar + stateful proxy (edgeproxy).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--proxy", default="127.0.0.1:5060", help="HOST:PORT of the proxy (loopback only)")
    ap.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    ap.add_argument("--scenarios", default="register,invite", help="comma list, run in this order, of: register, invite, memory "
                         "(memory = --memory-contacts registrations, default 100000); or federated alone (two nodes "
                         "and a store started here: the --fed-ladders call ladders)")
    ap.add_argument("--reg-rates", default="1000,2000,4000,5000,8000,12000,16000",
                    help="REGISTER/s ladder (comma or space separated)")
    ap.add_argument("--call-rates", default="100,200,400,600,800,1200", help="calls/s ladder")
    ap.add_argument("--step-secs", type=float, default=10.0, help="seconds of load per step (calls = rate x this)")
    ap.add_argument("--refine", type=int, default=2, help="bisection steps between last pass and first fail")
    ap.add_argument("--start-cmd", help="start the proxy with this command (run via 'bash -c exec ...'), stop it at the end; "
                         "{config} in it stands for the node configuration (--node-config, or with --auth the "
                         "generated OUTDIR/bench-auth.toml)")
    ap.add_argument("--node-config", default=str(BENCH_DIR / "bench.toml"),
                    help="the node configuration {config} names in --start-cmd; --auth writes a copy with [auth]")
    ap.add_argument("--auth", action="store_true",
                    help="digest authentication: the node gets an [auth] section with every bench user ({config} "
                         "in --start-cmd), registrations answer a 401 and calls a 407 first (scenarios "
                         "register_auth.xml, uac_auth.xml); register and invite ladders only")
    ap.add_argument("--write-auth-config", metavar="PATH",
                    help="only write the --auth node configuration (--node-config + [auth] with --users users) to "
                         "PATH and exit: for a node you start yourself (--proxy-pid), or a profiling run")
    ap.add_argument("--proxy-pid", type=int, help="PID of an already running proxy (CPU and memory accounting)")
    ap.add_argument("--start-timeout", type=float, default=30.0, help="seconds to wait for the started proxy to answer")
    ap.add_argument("--users", type=int, default=10000, help="distinct users uNNNNN in the register/invite load")
    ap.add_argument("--memory-contacts", type=int, default=0, help="register N more contacts and report bytes per contact (adds the memory scenario, "
                         "last, unless --scenarios names it)")
    ap.add_argument("--memory-rate", type=int, default=2000, help="REGISTER/s for the memory measurement")
    ap.add_argument("--memory-settle", type=float, default=35.0,
                    help="seconds to wait after the memory registrations before the final RSS reading")
    ap.add_argument("--preload-rate", type=int, default=2000, help="REGISTER/s for the invite scenario's preload")
    ap.add_argument("--pause-ms", type=int, default=1000, help="call hold time between ACK and BYE")
    ap.add_argument("--expires", type=int, default=3600)
    ap.add_argument("--uas-port", type=int, default=5070)
    ap.add_argument("--uac-port", type=int, default=5061)
    ap.add_argument("--reg-port", type=int, default=5062, help="local port of the preload/memory registration SIPp")
    ap.add_argument("--recv-timeout-ms", type=int, default=5000, help="SIPp -recv_timeout: a call fails after this")
    ap.add_argument("--min-fraction", type=float, default=0.95, help="pass: achieved >= this x offered rate")
    ap.add_argument("--max-retrans", type=float, default=0.001, help="pass: UAC retransmissions <= this x calls")
    ap.add_argument("--max-p99-ms", type=float, default=200.0, help="pass: p99 REGISTER/INVITE->200 time")
    ap.add_argument("--cooldown", type=float, default=3.0, help="seconds after a passing step")
    ap.add_argument("--fail-cooldown", type=float, default=35.0,
                    help="seconds after a failing step (let the proxy's transactions time out)")
    ap.add_argument("--max-other-cpu", type=float, default=25.0,
                    help="a step is 'noisy' when processes other than SIPp and the proxy used more than "
                         "this %% of a core during it (a shared machine)")
    ap.add_argument("--retry-noisy", type=int, default=1,
                    help="repeat a failed noisy step (or, federated, one during which the store stalled) up to N times")
    ap.add_argument("--stop-grace", type=float, default=2.0, help="seconds the UAS outlives the UAC")
    ap.add_argument("--sipp", default=shutil.which("sipp") or "/usr/bin/sipp")
    ap.add_argument("--sipp-buff", type=int, default=4 * 1024 * 1024, help="SIPp socket buffer size")
    ap.add_argument("--outdir", help="default /tmp/edgeproxy-bench/<timestamp>/")
    ap.add_argument("--trace-msg", action="store_true", help="SIPp -trace_msg (every message to a file: low rates only)")
    ap.add_argument("--label", default="", help="free text copied into the SUMMARY line (e.g. the commit)")
    ap.add_argument("--full-ladder", action="store_true",
                    help="run every rate of the ladder even after a failing one (no bisection): complete comparison tables")
    fed = ap.add_argument_group("federated scenario (--scenarios federated)")
    fed.add_argument("--fed-ladders", default="direct,federated",
                     help="call ladders, in this order: direct (UAC -> X, the users' home) and/or federated (UAC -> Y)")
    fed.add_argument("--fed-config-dir", default=str(FED_DIR), help="directory with node-x.toml and node-y.toml")
    fed.add_argument("--fed-sip-port", type=int, default=0,
                     help="SIP port of both nodes; 0: 5060 when free on both addresses, else a free one")
    fed.add_argument("--fed-bin-port", type=int, default=0,
                     help="cluster link port of both nodes; 0: 5555 when free, else a free one")
    fed.add_argument("--fed-phone-ip", default="127.0.0.31", help="loopback address of the bench UAS (every user's Contact)")
    fed.add_argument("--store-url", help="use this MongoDB (mongodb://127.0.0.1:PORT/?...) instead of starting SecantusDB; "
                     "the run uses a database of its own in it")
    fed.add_argument("--max-store-stall-ms", type=float, default=50.0,
                     help="a step during which a store ping took longer than this is flagged store_stall=1 "
                          "(and repeated if it failed, see --retry-noisy)")
    fed.add_argument("--store-cmd", help="the SecantusDB server executable (default: secantusd-py next to this Python)")
    a = ap.parse_args(argv)
    if a.write_auth_config:
        Path(a.write_auth_config).write_text(auth_node_config(Path(a.node_config), "u", a.users))
        print(f"{a.write_auth_config}: {a.users} users")
        return 0

    host, _, port = a.proxy.rpartition(":")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    if not (host.startswith("127.") or host == "::1"):
        ap.error("--proxy must be a loopback address (127.0.0.0/8 or ::1)")
    if not os.path.exists(a.sipp):
        ap.error(f"SIPp not found at {a.sipp} (apt-get install sip-tester)")
    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in ("register", "invite", "memory", "federated"):
            ap.error(f"unknown scenario {s!r}")
    federated = "federated" in scenarios
    fed_ladders = [s.strip() for s in a.fed_ladders.split(",") if s.strip()]
    if federated:
        if scenarios != ["federated"] or a.memory_contacts:
            ap.error("the federated scenario runs on its own (it starts its own nodes): --scenarios federated")
        if a.start_cmd or a.proxy_pid:
            ap.error("--start-cmd/--proxy-pid do not apply to the federated scenario (it starts nodes X and Y itself)")
        if not fed_ladders or any(s not in ("direct", "federated") for s in fed_ladders):
            ap.error("--fed-ladders: a comma list of direct, federated")
        if a.store_url and not re.match(r"^mongodb://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?(/|$)", a.store_url):
            ap.error("--store-url must be a loopback mongodb:// URL")
    if a.memory_contacts and "memory" not in scenarios:
        scenarios.append("memory")  # last: the ladders run against a proxy with only the bench users
    if "memory" in scenarios and not a.memory_contacts:
        a.memory_contacts = 100000
    if a.start_cmd and a.proxy_pid:
        ap.error("--start-cmd and --proxy-pid are exclusive")
    if a.auth:
        if federated or "memory" in scenarios:
            ap.error("--auth runs the register and invite ladders only (not memory or federated)")
        if a.start_cmd and "{config}" not in a.start_cmd:
            ap.error("--auth: write {config} where --start-cmd names the node configuration "
                     "(e.g. --config {config}): the node must hold the bench users, written to OUTDIR/bench-auth.toml")
        if a.users < 2:
            ap.error("--auth needs at least 2 --users (a user calls another)")

    outdir = Path(a.outdir) if a.outdir else Path("/tmp/edgeproxy-bench") / time.strftime("%Y%m%d-%H%M%S")
    outdir.mkdir(parents=True, exist_ok=True)
    children = Children()
    proxy = Proxy(host, int(port), a.transport, children, outdir)
    bench = Bench(a, outdir, proxy, children)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    log(f"outdir {outdir}")
    with open(outdir / "env.txt", "w") as f:
        f.write(f"argv: {shlex.join(sys.argv)}\n")
        for cmd in ([a.sipp, "-v"], ["uname", "-srm"], ["nproc"]):
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout
                f.write(next((line for line in out.splitlines() if line.strip()), "") + "\n")
            except (OSError, subprocess.TimeoutExpired):
                pass

    summary: dict[str, Any] = {"label": a.label or None, "transport": a.transport, **bench.auth_fields}
    rc = 0
    try:
        bench.users_csv = outdir / "users.csv"
        write_users(bench.users_csv, "u", 1, a.users, auth=a.auth)
        node_config = Path(a.node_config).resolve()
        if a.auth:
            node_config = outdir / "bench-auth.toml"
            node_config.write_text(auth_node_config(Path(a.node_config), "u", a.users))
            log(f"auth: {a.users} users in {node_config}" + ("" if a.start_cmd else
                " (the node you started must hold them: see --write-auth-config)"))
        if a.start_cmd:
            a.start_cmd = a.start_cmd.replace("{config}", shlex.quote(str(node_config)))
        if federated:
            bench.topology = start_federated(a, outdir, children)
            summary.update(run_federated(a, bench, fed_ladders))
            for name, node in bench.topo.nodes.items():
                summary[f"{name}_peak_rss_kb"] = node.memory().get("hwm_kb")
            bench.emit("SUMMARY " + " ".join(f"{k}={fmt(v, k)}" for k, v in summary.items()))
            return 0
        if a.start_cmd:
            proxy.start(a.start_cmd, a.start_timeout)
        else:
            proxy.attach(a.proxy_pid)

        for scenario in scenarios:
            if scenario == "memory":
                m = bench.memory(a.memory_contacts)
                summary["bytes_per_contact"] = m.get("bytes_per_contact")
            elif scenario == "register":
                m = bench.ladder("register", parse_rates(a.reg_rates))
                summary["max_register_per_s"] = m["max_pass_rate"]
                summary["cpu_us_per_register"] = m["cpu_us_per_op"]
                if a.auth:
                    summary["cpu_us_per_register_request"] = m.get("cpu_us_per_request")
            else:
                if not bench.bulk_register("preload", "u", a.users, a.preload_rate):
                    raise SystemExit("preload registration failed: the invite scenario needs every user registered")
                time.sleep(1)
                m = bench.ladder("invite", parse_rates(a.call_rates))
                summary["max_calls_per_s"] = m["max_pass_rate"]
                summary["cpu_us_per_call"] = m["cpu_us_per_op"]
        mem = proxy.memory()
        summary["peak_rss_kb"] = mem.get("hwm_kb")
        summary["rss_kb"] = mem.get("rss_kb")
        summary["tree_pss_kb"] = mem.get("tree_pss_kb")
        bench.emit("SUMMARY " + " ".join(f"{k}={fmt(v, k)}" for k, v in summary.items()))
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except SystemExit as e:
        if e.code not in (None, 0):
            log(f"aborted: {e.code}")
            rc = 1
    finally:
        # SIPp runs first, then the nodes (TERM, 10 s grace: a federated node deletes its store records on
        # a clean stop, so the store goes last), then the store; all by PID
        topo = bench.topo
        ours = {n.proc for n in topo.nodes.values()} | {topo.store.proc if topo.store else None}
        for p in list(children.procs):
            if p not in ours:
                Children.stop(p, 3.0)
                children.forget(p)
        for node in topo.nodes.values():
            node.stop()
        if topo.store is not None:
            topo.store.close()
        children.stop_all()
        (outdir / "results.json").write_text(json.dumps({"summary": summary, "results": bench.results}, indent=2) + "\n")
        log(f"results in {outdir / 'results.txt'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
