#!/usr/bin/env python3
"""WSS registration + call load benchmark for edgeproxy (issue 4), in one command, on loopback.

    python bench/wss_load.py                                   # 1,000 connections, default ladders
    python bench/wss_load.py --connections 200 --reg-rates 200,400 --call-rates 20,40 --step-secs 5
    python bench/wss_load.py --proxy 127.0.0.1:8443 --ca ca.pem --proxy-pid 12345   # a running node

SIPp has no WebSocket transport, so the load comes from ``bench/wss/load_client.mjs``: one Node
process holding N WebSocket-over-TLS connections (``ws`` package, ``sip`` subprotocol), one user
``wNNNNN`` per connection with the Via/Contact shape of JsSIP (random ``.invalid`` hosts,
``transport=ws``). This script:

1. makes a throw-away CA and server certificate (tests/support/tls_ca.py) in a temporary directory, writes a
   node configuration (a ``wss:127.0.0.1:PORT`` listener, warn logging, connection limits above N)
   and starts ``twistd -n --pidfile= edgeproxy --config FILE`` (or attaches to ``--proxy``/``--proxy-pid``),
   with RLIMIT_NOFILE raised for it and for the client;
2. reads the proxy's VmRSS, opens one warm-up connection, reads it again, opens the other N-1
   connections (at most ``--concurrency`` handshakes in flight) and REGISTERs each: the ``CONNECT``
   line (registrations/s including the TLS and WebSocket handshakes, CPU per connection);
3. lets them sit idle ``--settle`` seconds and reads VmRSS: the ``MEMORY`` line (bytes per connection);
4. the ``refresh`` ladder: REGISTER refreshes (same Call-ID, CSeq+1) spread over the connections at
   each offered rate for ``--step-secs``; then the ``call`` ladder: connection i calls another
   registered connection (INVITE, 180, 200, ACK, ``--hold-ms``, BYE, 200; ACK and BYE loose-routed
   with the 200's Record-Route set) -- each ladder stops at its first failing rate and bisects, with
   bench/load.py's ladder, pass rule and output format;
5. un-registers every connection (Expires: 0), closes them, stops the proxy (by its PID only).

Results: ``RESULT``/``MAX``/``CONNECT``/``MEMORY``/``UNREGISTER``/``SUMMARY`` lines on stdout and in
``OUTDIR/results.txt``, everything in ``OUTDIR/results.json``, the proxy's output in ``OUTDIR/proxy.log``
and the client's stderr in ``OUTDIR/client.stderr``. CPU and memory come from /proc with bench/load.py's
helpers (imported, not copied). Every phase is bounded in count and in time; ``--timeout`` bounds the
whole run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CLIENT_DIR = BENCH_DIR / "wss"
CLIENT_SCRIPT = CLIENT_DIR / "load_client.mjs"
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT / "tests"))

import procfs  # noqa: E402  (bench/procfs.py: /proc accounting)
from fed_scenario import _python_tool  # noqa: E402
from processes import Children, Proxy, StallProbe  # noqa: E402
from procfs import CpuSampler, log  # noqa: E402
from sipp_ladder import Bench, fmt, parse_rates, percentile, toml_dumps  # noqa: E402  (bench/load.py's ladder and output)
from ws_memory import raise_nofile  # noqa: E402

#: issue 4's memory target for an idle registered WSS connection
TARGET_BYTES_PER_CONNECTION = 40 * 1024
#: a client transaction with no final answer after this long has failed (Timer B/F, 64 x T1)
TX_TIMEOUT = 32.0


# --------------------------------------------------------------------------- readiness probe


def wss_probe(host: str, port: int, ca: str, timeout: float) -> str | None:
    """One TLS handshake (trusting ``ca``) and WebSocket upgrade with the ``sip`` subprotocol; the
    HTTP status line when the server switched protocols, else None. The connection is closed at once:
    it never registers, so the node keeps no binding of it."""
    try:
        context = ssl.create_default_context(cafile=ca)
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                key = base64.b64encode(os.urandom(16)).decode()
                tls.sendall((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                             "Sec-WebSocket-Protocol: sip\r\n\r\n").encode())
                head = b""
                deadline = time.monotonic() + timeout
                while b"\r\n\r\n" not in head and time.monotonic() < deadline:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                status = head.split(b"\r\n", 1)[0].decode("ascii", "replace")
                return status if status.startswith("HTTP/1.1 101") else None
    except (OSError, ssl.SSLError):
        return None


# --------------------------------------------------------------------------- the Node client


class ClientGone(SystemExit):
    """The load client exited, missed a phase's time bound or reported an error."""


class LoadClient:
    """``node bench/wss/load_client.mjs`` as a child process: commands go to its stdin as JSON lines,
    phase results come back one JSON line each (read by a thread into a queue, so every wait is
    bounded and the proxy's CPU can be sampled meanwhile). Registered in ``children`` so it is stopped
    by its PID however the run ends."""

    def __init__(self, node: str, options: dict[str, Any], children: Children, outdir: Path) -> None:
        self.children = children
        self.stderr_path = outdir / "client.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([node, str(CLIENT_SCRIPT), json.dumps(options)], cwd=CLIENT_DIR,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        children.procs.append(self.proc)
        self.pid = self.proc.pid
        self._lines: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        threading.Thread(target=self._read, name="load-client-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self._lines.put(json.loads(raw))
            except ValueError:
                self._lines.put({"phase": "noise", "text": raw.decode("utf-8", "replace")[:500]})
        self._lines.put(None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        st = procfs.read_stat(self.pid)
        return st.cpu_ticks / procfs.CLK_TCK if st is not None else None

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def wait_for(self, phase: str, bound: float, on_tick: Callable[[], None] | None = None) -> dict[str, Any]:
        """The next line of ``phase``; ClientGone on an ``error``/``deadline`` line, on exit or after
        ``bound`` seconds. ``on_tick`` runs about once a second while waiting."""
        deadline = time.monotonic() + bound
        next_tick = 0.0
        while True:
            now = time.monotonic()
            if on_tick is not None and now >= next_tick:
                on_tick()
                next_tick = now + 1.0
            if now >= deadline:
                raise ClientGone(f"load client: no {phase!r} result within {bound:.0f} s")
            try:
                line = self._lines.get(timeout=min(0.2, max(0.01, deadline - now)))
            except queue.Empty:
                continue
            if line is None:
                raise ClientGone(f"load client exited ({self.proc.poll()}) waiting for {phase!r}:\n{self.stderr_tail()}")
            if line.get("phase") == phase:
                return line
            if line.get("phase") in ("error", "deadline"):
                raise ClientGone(f"load client: {json.dumps(line)[:2000]}")
            log(f"load client: {json.dumps(line)[:300]}")

    def command(self, cmd: str, bound: float, on_tick: Callable[[], None] | None = None, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ClientGone(f"load client: cannot send {cmd!r}: {exc}\n{self.stderr_tail()}") from None
        return self.wait_for(cmd, bound, on_tick)


# --------------------------------------------------------------------------- the bench


def achieved_rate(done_ms: list[float], offered_rate: float, offered: int) -> float:
    """Completions per second, first to last completion (as bench/load.py computes it from SIPp)."""
    if len(done_ms) > 1 and max(done_ms) > min(done_ms):
        return (len(done_ms) - 1) / ((max(done_ms) - min(done_ms)) / 1000.0)
    if len(done_ms) == 1 and offered == 1:
        return float(offered_rate)
    return 0.0


class WssBench(Bench):
    """bench/load.py's Bench with the Node WSS client in place of SIPp: ``run_step`` is one client
    phase (``refresh`` or ``call``), the ladder, bisection, cool-downs, noisy-step retries and the
    ``RESULT``/``MAX`` output are load.py's."""

    scenarios_without_hold = ("refresh",)
    #: the Node client, once started; the connections registered so far
    client: LoadClient | None = None
    registered: int = 0
    #: the started node's UDP listener for StallProbe (host, port, transport), None when attached
    stall_target: SimpleNamespace | None = None

    def alive(self) -> bool:
        return super().alive() and (self.client is None or self.client.alive())

    def measure(self, run: Callable[[Callable[[], None]], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run ``run(tick)`` (a client phase) and account for it: the proxy's CPU seconds and CPU %
        samples, the client's CPU, and the CPU of everybody else on the machine (a shared host)."""
        sampler = CpuSampler(self.proxy.pid)
        cpu0 = self.proxy.cpu()
        client_cpu0 = self.client.cpu_seconds() if self.client else None
        host0, self0 = procfs.task_runtimes(), procfs.self_cpu_seconds()
        t0 = time.monotonic()
        sampler.tick()
        out = run(sampler.tick)
        span = time.monotonic() - t0
        live_s = procfs.runtime_delta(host0, procfs.task_runtimes())
        self_s = procfs.self_cpu_seconds() - self0
        cpu1 = self.proxy.cpu()
        client_cpu1 = self.client.cpu_seconds() if self.client else None
        cpu_s = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        client_s = (client_cpu1 - client_cpu0) if client_cpu0 is not None and client_cpu1 is not None else None
        samples = sampler.samples
        acc: dict[str, Any] = {
            "wall_s": round(span, 1),
            "cpu_s": round(cpu_s, 2) if cpu_s is not None else None,
            "cpu_pct_avg": round(sum(samples) / len(samples), 0) if samples else None,
            "cpu_pct_max": round(max(samples), 0) if samples else None,
            "client_cpu_pct": round(100 * client_s / span, 0) if client_s is not None and span > 0 else None,
        }
        ours = self_s + (cpu_s or 0) + (client_s or 0)
        acc["other_cpu_pct"] = max(0.0, round(100 * (live_s - ours) / span, 0)) if span > 0 else None
        acc["noisy"] = int((acc["other_cpu_pct"] or 0) > self.args.max_other_cpu)
        return out, acc

    def run_step(self, scenario: str, rate: int) -> dict[str, Any]:
        a = self.args
        assert self.client is not None
        if time.monotonic() > a.deadline:
            raise SystemExit(f"--timeout ({a.timeout:.0f} s) reached before the {scenario} step at {rate}/s")
        is_call = scenario == "call"
        hold_s = a.pause_ms / 1000.0 if is_call else 0.0
        bound = a.step_secs + hold_s + (2 if is_call else 1) * TX_TIMEOUT + 20
        offered = max(1, int(round(rate * a.step_secs)))
        log(f"step {scenario} rate={rate}/s ops={offered} over {self.registered} WSS connections")

        def run(tick: Callable[[], None]) -> dict[str, Any]:
            assert self.client is not None
            if is_call:
                return self.client.command("calls", bound, tick, rate=rate, secs=a.step_secs, hold_ms=a.pause_ms)
            return self.client.command("refresh", bound, tick, rate=rate, secs=a.step_secs)

        # how long the node's event loop took, at worst, to answer an OPTIONS (Max-Forwards 0) sent every
        # 0.1 s over UDP during the step: a p99 failure with a long stall is the node's (GC, a burst)
        probe = StallProbe({"proxy": self.stall_target}, None).start() if self.stall_target else None
        try:
            res, acc = self.measure(run)
        finally:
            stalls = probe.stop() if probe is not None else {}
        lat = sorted(res.get("lat_ms") or [])
        ok, failed = int(res["ok"]), int(res["failed"])
        achieved = achieved_rate(res.get("done_ms") or [], rate, offered)
        p99 = percentile(lat, 99)
        mem = self.proxy.memory()
        checks = {
            "all_ok": ok == offered and failed == 0,
            "rate": achieved >= a.min_fraction * rate,
            "p99": p99 is not None and p99 <= a.max_p99_ms,
            "proxy_alive": self.alive(),
        }
        r: dict[str, Any] = {
            "scenario": scenario, "transport": "wss", "rate": rate, "offered": offered,
            "connections": res.get("connections"), "ok": ok, "failed": failed,
            "incomplete": int(res.get("incomplete", 0)), "achieved": round(achieved, 1),
            "rtt_ms_p50": percentile(lat, 50), "rtt_ms_p99": p99, "rtt_ms_max": lat[-1] if lat else None,
        }
        if is_call:
            r["bye_ms_p99"] = percentile(sorted(res.get("bye_ms") or []), 99)
            r["hold_ms"] = a.pause_ms
            for key in ("callee_invites", "callee_acks", "callee_byes", "callee_no_ack", "callee_2xx_retrans",
                        "caller_ack_resent"):
                r[key] = res.get(key)
        r["stall_ms"] = stalls.get("proxy")
        r["client_lag_ms_max"] = res.get("client_lag_ms_max")
        r["unexpected"] = sum((res.get("unexpected_requests") or {}).values()) + int(res.get("unexpected_responses") or 0)
        r["ws_closed"] = res.get("ws_closed")
        r.update(acc)
        r["cpu_us_per_op"] = round(acc["cpu_s"] * 1e6 / ok, 1) if acc["cpu_s"] is not None and ok else None
        r["rss_kb"], r["hwm_kb"] = mem.get("rss_kb"), mem.get("hwm_kb")
        r["failures"] = ",".join(f"{k}:{v}" for k, v in sorted((res.get("failures") or {}).items())) or "-"
        r["failed_checks"] = ",".join(k for k, v in checks.items() if not v) or "-"
        r["pass"] = int(all(checks.values()))
        self.results.append({"kind": "step", **r})
        self.emit("RESULT " + " ".join(f"{k}={fmt(v, k)}" for k, v in r.items()))
        return r

    def connect(self, count: int, bound: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Open connections until ``count`` exist, each REGISTERed once."""
        assert self.client is not None

        def run(tick: Callable[[], None]) -> dict[str, Any]:
            assert self.client is not None
            return self.client.command("connect", bound + 10, tick, count=count, timeout=bound)

        res, acc = self.measure(run)
        self.registered += int(res["registered"])
        return res, acc


def node_config(port: int, probe_port: int, cert: str, key: str, connections: int, expires: int,
                domain: str | None) -> dict[str, Any]:
    """The node under test: one WSS listener on loopback and room for every connection (plus a UDP
    listener on ``probe_port`` that only the stall probe uses). The registrar
    accepts the clients' expiry as is (``max_expires`` above it), the TCP idle timer (which WebSocket
    connections share) is longer than any run, and warn logging keeps the log out of the CPU figures.
    Everything else is edgeproxy's default, ``[ws]`` included (30 s server pings)."""
    node: dict[str, Any] = {"listen": [f"wss:127.0.0.1:{port}", f"udp:127.0.0.1:{probe_port}"], "log_level": "warn"}
    if domain:
        node["domains"] = [domain]
    return {
        "node": node,
        "registrar": {"max_expires": max(7200, 2 * expires)},
        "limits": {"max_connections": connections + 1024, "tcp_idle_timeout": 7200},
        "tls": {"certificate": cert, "key": key},
        "ws": {"max_connections": 0},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="WSS registration + call load benchmark for edgeproxy (issue 4).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--connections", type=int, default=1000, help="WSS connections, one registered user each")
    ap.add_argument("--concurrency", type=int, default=100, help="TLS + WebSocket handshakes in flight at once")
    ap.add_argument("--reg-rates", default="500,1000,2000,4000",
                    help="REGISTER refresh/s ladder (comma or space separated; empty: no refresh ladder)")
    ap.add_argument("--call-rates", default="50,100,200,400,600", help="calls/s ladder (empty: no call ladder)")
    ap.add_argument("--step-secs", type=float, default=10.0, help="seconds of load per step (ops = rate x this)")
    ap.add_argument("--hold-ms", dest="pause_ms", type=int, default=1000, help="call hold time between ACK and BYE")
    ap.add_argument("--timeout", type=float, default=1800.0, help="bound of the whole run, in seconds")
    ap.add_argument("--settle", type=float, default=15.0,
                    help="seconds the registered connections sit idle before the memory reading (the node "
                         "gives back idle connections' TLS buffers in a sweep every 10 s)")
    ap.add_argument("--expires", type=int, default=3600, help="REGISTER expiry asked by the clients")
    ap.add_argument("--domain", default="", help="AoR and Request-URI host (also node.domains); default 127.0.0.1")
    ap.add_argument("--refine", type=int, default=2, help="bisection steps between last pass and first fail")
    ap.add_argument("--full-ladder", action="store_true", help="run every rate even after a failing one")
    ap.add_argument("--min-fraction", type=float, default=0.95, help="pass: achieved >= this x offered rate")
    ap.add_argument("--max-p99-ms", type=float, default=200.0, help="pass: p99 REGISTER->200 / INVITE->200")
    ap.add_argument("--cooldown", type=float, default=3.0, help="seconds after a passing step")
    ap.add_argument("--fail-cooldown", type=float, default=35.0,
                    help="seconds after a failing step (the proxy's transactions time out)")
    ap.add_argument("--max-other-cpu", type=float, default=25.0,
                    help="a step is 'noisy' when processes other than the proxy, the client and this script "
                         "used more than this %% of a core")
    ap.add_argument("--retry-noisy", type=int, default=1, help="repeat a failed noisy step up to N times")
    ap.add_argument("--port", type=int, default=0, help="WSS port of the started proxy (0: a free one)")
    ap.add_argument("--proxy", help="HOST:PORT of a running node's WSS listener (loopback) instead of starting one")
    ap.add_argument("--ca", help="with --proxy: PEM file of the authority that signed its certificate")
    ap.add_argument("--proxy-pid", type=int, help="with --proxy: its PID, for the CPU and memory figures")
    ap.add_argument("--start-timeout", type=float, default=30.0, help="seconds for the started proxy to answer")
    ap.add_argument("--node", default=shutil.which("node") or "node", help="the Node.js executable")
    ap.add_argument("--outdir", help="default /tmp/edgeproxy-bench/wss-<timestamp>/")
    ap.add_argument("--trace-msg", action="store_true",
                    help="the client writes every SIP message to OUTDIR/client.stderr (low rates only)")
    ap.add_argument("--label", default="", help="free text copied into the SUMMARY line (e.g. the commit)")
    a = ap.parse_args(argv)
    if a.connections < 2:
        ap.error("--connections must be >= 2 (a call needs a caller and a callee)")
    if a.proxy_pid and not a.proxy:
        ap.error("--proxy-pid goes with --proxy (a node started here is accounted by itself)")
    if a.proxy:
        if not a.ca:
            ap.error("--proxy needs --ca (the authority the client trusts for the node's certificate)")
        host = a.proxy.rpartition(":")[0].strip("[]")
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            ap.error("--proxy must be a loopback address")
    if not CLIENT_SCRIPT.exists() or not (CLIENT_DIR / "node_modules" / "ws").is_dir():
        ap.error(f"the ws package is not installed in {CLIENT_DIR} (run: cd bench/wss && npm ci)")
    a.transport = "wss"  # the ladder's MAX lines name the transport
    a.deadline = time.monotonic() + a.timeout
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    outdir = Path(a.outdir) if a.outdir else Path("/tmp/edgeproxy-bench") / time.strftime("wss-%Y%m%d-%H%M%S")
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "results.txt").write_text("")
    # the node (started here, it inherits the limit) and the client each hold one descriptor per connection
    nofile = raise_nofile(a.connections + 1024)
    if nofile < a.connections + 64:
        raise SystemExit(f"RLIMIT_NOFILE is {nofile}: too low for {a.connections} connections")

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    children = Children()
    tmp = tempfile.TemporaryDirectory(prefix="wss-load-")
    summary: dict[str, Any] = {"label": a.label or None, "transport": "wss", "connections": a.connections}
    bench: WssBench | None = None
    rc = 0
    log(f"outdir {outdir}")
    try:
        if a.proxy:
            host, _, port_text = a.proxy.rpartition(":")
            host, port, ca_file = host.strip("[]"), int(port_text), a.ca
            if host == "localhost":
                host = "127.0.0.1"
        else:
            from support.tls_ca import TestCA

            ca = TestCA(Path(tmp.name) / "pki")
            server = ca.issue("server", dns=["localhost"], ips=["127.0.0.1"])
            host, ca_file = "127.0.0.1", ca.cert
            port = a.port or procfs.free_port_on([host], socket.SOCK_STREAM, 0)
        proxy = Proxy(host, port, "tcp", children, outdir, probe=lambda t: wss_probe(host, port, ca_file, t))
        bench = WssBench(a, outdir, proxy, children)
        with open(outdir / "env.txt", "w") as f:
            f.write(f"argv: {shlex.join(sys.argv)}\n")
            for cmd in ([a.node, "--version"], ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                        ["uname", "-srm"], ["nproc"]):
                try:
                    out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout
                    f.write(f"{cmd[0]}: " + next((line for line in out.splitlines() if line.strip()), "") + "\n")
                except (OSError, subprocess.TimeoutExpired):
                    pass

        if a.proxy:
            proxy.attach(a.proxy_pid)
        else:
            cfg = outdir / "node.toml"
            probe_port = procfs.free_port_on([host], socket.SOCK_DGRAM, 0)
            cfg.write_text("# generated by bench/wss_load.py\n\n" + toml_dumps(
                node_config(port, probe_port, server.cert, server.key, a.connections, a.expires, a.domain or None)))
            bench.stall_target = SimpleNamespace(host=host, port=probe_port, transport="udp")
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
            env["PYTHONUNBUFFERED"] = "1"
            proxy.env = env
            twistd = _python_tool("twistd") or "twistd"
            proxy.start(f"{shlex.quote(twistd)} -n --pidfile= edgeproxy --config {shlex.quote(str(cfg))}",
                        a.start_timeout)

        client = LoadClient(a.node, {
            "url": f"wss://{host}:{port}", "ca": ca_file, "domain": a.domain or "127.0.0.1", "expires": a.expires,
            "concurrency": a.concurrency, "deadline": int(a.timeout) + 60, "trace": a.trace_msg,
        }, children, outdir)
        bench.client = client
        ready = client.wait_for("ready", 30)
        log(f"load client pid {client.pid} ({ready.get('node')}) ready")

        # -- memory baseline, warm-up connection, then the N registered connections
        time.sleep(1)
        mem_empty = proxy.memory()
        warm, _ = bench.connect(1, 60)
        if warm["registered"] != 1:
            raise SystemExit(f"the warm-up connection did not register: {json.dumps(warm)[:1000]}")
        time.sleep(1)
        mem_one = proxy.memory()
        conn_bound = 60 + a.connections / 20
        res, acc = bench.connect(a.connections, conn_bound)
        lat = sorted(res.get("lat_ms") or [])
        handshakes = sorted(res.get("handshake_ms") or [])
        wanted = int(res["wanted"])
        registered = int(res["registered"])
        secs = float(res["secs"]) or 1e-9
        c: dict[str, Any] = {
            "connections": bench.registered, "new": wanted, "opened": res["opened"], "registered": registered,
            "failed": res["failed"], "secs": round(secs, 2), "reg_per_s": round(registered / secs, 1),
            "handshake_ms_p50": percentile(handshakes, 50), "handshake_ms_p99": percentile(handshakes, 99),
            "rtt_ms_p50": percentile(lat, 50), "rtt_ms_p99": percentile(lat, 99), "concurrency": a.concurrency,
            "client_lag_ms_max": res.get("client_lag_ms_max"), "tls_version": warm.get("tls_version"),
            "tls_group": warm.get("tls_group"), **acc,
            "cpu_us_per_connection": round(acc["cpu_s"] * 1e6 / registered, 1) if acc["cpu_s"] is not None and registered else None,
            "failures": ",".join(f"{k}:{v}" for k, v in sorted((res.get("failures") or {}).items())) or "-",
        }
        bench.results.append({"kind": "connect", **c})
        bench.emit("CONNECT " + " ".join(f"{k}={fmt(v, k)}" for k, v in c.items()))
        summary["registered"] = bench.registered
        summary["initial_reg_per_s"] = c["reg_per_s"]
        summary["cpu_us_per_connection"] = c["cpu_us_per_connection"]
        if bench.registered < a.connections:
            raise SystemExit(f"only {bench.registered} of {a.connections} connections registered; see {outdir}")

        log(f"{bench.registered} connections registered; idle {a.settle:.0f} s before the memory reading")
        time.sleep(a.settle)
        mem_idle = proxy.memory()

        def per_connection(before: dict[str, Any], after: dict[str, Any], key: str, n: int) -> float | None:
            if before.get(key) is None or after.get(key) is None or n <= 0:
                return None
            return round((after[key] - before[key]) * 1024 / n, 0)

        m: dict[str, Any] = {
            "connections": bench.registered,
            "rss_kb_before": mem_empty.get("rss_kb"), "rss_kb_one": mem_one.get("rss_kb"),
            "rss_kb_idle": mem_idle.get("rss_kb"),
            "bytes_per_connection": per_connection(mem_empty, mem_idle, "rss_kb", bench.registered),
            "bytes_per_connection_warm": per_connection(mem_one, mem_idle, "rss_kb", bench.registered - 1),
            "pss_bytes_per_connection": per_connection(mem_empty, mem_idle, "tree_pss_kb", bench.registered),
            "target_bytes": TARGET_BYTES_PER_CONNECTION,
        }
        m["within_target"] = int(m["bytes_per_connection"] is not None and m["bytes_per_connection"] <= TARGET_BYTES_PER_CONNECTION)
        bench.results.append({"kind": "memory", **m})
        bench.emit("MEMORY " + " ".join(f"{k}={fmt(v, k)}" for k, v in m.items()))
        summary["bytes_per_connection"] = m["bytes_per_connection"]
        summary["bytes_per_connection_warm"] = m["bytes_per_connection_warm"]

        for scenario, rates in (("refresh", parse_rates(a.reg_rates)), ("call", parse_rates(a.call_rates))):
            if not rates:
                continue
            mx = bench.ladder(scenario, rates)
            if scenario == "refresh":
                summary["max_register_per_s"], summary["cpu_us_per_register"] = mx["max_pass_rate"], mx["cpu_us_per_op"]
            else:
                summary["max_calls_per_s"], summary["cpu_us_per_call"] = mx["max_pass_rate"], mx["cpu_us_per_op"]

        res = client.command("unregister", 60 + a.connections / 20 + TX_TIMEOUT,
                             timeout=30 + a.connections / 20 + TX_TIMEOUT)
        u = {"wanted": res["wanted"], "ok": res["ok"], "failed": res["failed"], "secs": res["secs"],
             "failures": ",".join(f"{k}:{v}" for k, v in sorted((res.get("failures") or {}).items())) or "-"}
        bench.results.append({"kind": "unregister", **u})
        bench.emit("UNREGISTER " + " ".join(f"{k}={fmt(v, k)}" for k, v in u.items()))
        summary["unregistered"] = u["ok"]
        client.command("close", 15)
        mem = proxy.memory()
        summary["peak_rss_kb"] = mem.get("hwm_kb")
        summary["rss_kb"] = mem.get("rss_kb")
        bench.emit("SUMMARY " + " ".join(f"{k}={fmt(v, k)}" for k, v in summary.items()))
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except SystemExit as e:
        if e.code not in (None, 0):
            log(f"aborted: {e.code}")
            rc = 1
    finally:
        # the client first (its connections close with it), then the proxy: each by its own PID
        client_obj = bench.client if bench is not None else None
        if client_obj is not None:
            try:
                if client_obj.alive() and client_obj.proc.stdin is not None:
                    client_obj.proc.stdin.close()  # the client drops its connections and exits
                    client_obj.proc.wait(3)
            except (OSError, subprocess.TimeoutExpired):
                pass
            Children.stop(client_obj.proc, 3.0)
            children.forget(client_obj.proc)
        if bench is not None:
            bench.proxy.stop()
        children.stop_all()
        tmp.cleanup()
        results = bench.results if bench is not None else []
        (outdir / "results.json").write_text(json.dumps({"summary": summary, "results": results}, indent=2) + "\n")
        log(f"results in {outdir / 'results.txt'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
