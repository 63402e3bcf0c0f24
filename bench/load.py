#!/usr/bin/env python3
"""One-command SIP load benchmark for edgeproxy (or any registrar + stateful proxy).

    python bench/load.py [--proxy 127.0.0.1:5060] [--transport udp|tcp]
                         [--scenarios register,invite] [--reg-rates 1000,2000,4000]
                         [--call-rates 100,300,600] [--step-secs 10]
                         [--start-cmd "twistd -n edgeproxy --config bench/bench.toml"]
                         [--proxy-pid PID] [--users 10000] [--memory-contacts 100000]

SIPp (Debian's ``sip-tester``) drives the load; this script only orchestrates it:

* ``register``: SIPp sends REGISTER for users ``uNNNNN`` (Contact
  ``sip:uNNNNN@127.0.0.1:5070``, Expires 3600) at each rate of a ladder, then
  bisects between the last passing and the first failing rate.
* ``invite``: all users are first registered towards one SIPp UAS on
  127.0.0.1:5070; then a SIPp UAC places full calls (INVITE, 180/200, ACK,
  pause, BYE, 200) through the proxy, which must Record-Route.
* ``--memory-contacts N``: N more distinct contacts are registered at a bounded
  rate and the proxy's resident memory growth per contact is reported.

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

Safety: loopback targets only; every child process this script starts is
stopped by its own PID (TERM, then KILL); nothing else is ever signalled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
SCENARIO_DIR = BENCH_DIR / "scenarios"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc accounting


@dataclass
class ProcStat:
    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime
    start: int  # start time (ticks after boot): tells a PID apart from a later reuse


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2 :].split()
    # rest[0] is field 3 (state); utime..cstime are fields 14..17, starttime is 22
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        cpu_ticks=int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14]),
        start=int(rest[19]),
    )


def process_tree(root: int) -> list[ProcStat]:
    """``root`` and all its live descendants (a multi-process proxy forks workers)."""
    top = read_stat(root)
    if top is None:
        return []
    by_parent: dict[int, list[ProcStat]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                by_parent.setdefault(st.ppid, []).append(st)
    out, todo = [], [top]
    while todo:
        st = todo.pop()
        out.append(st)
        todo.extend(by_parent.get(st.pid, ()))
    return out


def tree_cpu_seconds(root: int) -> float | None:
    tree = process_tree(root)
    if not tree:
        return None
    return sum(st.cpu_ticks for st in tree) / CLK_TCK


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... of one process, in kB."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Vm") or line.startswith("Rss"):
                    key, _, val = line.partition(":")
                    parts = val.split()
                    if parts and parts[0].isdigit():
                        out[key] = int(parts[0])
    except OSError:
        pass
    return out


def tree_pss_kb(root: int) -> int | None:
    """Sum of the proportional set size over the tree: the memory of a forking proxy
    (shared pages counted once), equal to RSS minus shared libraries for one process."""
    total, seen = 0, False
    for st in process_tree(root):
        try:
            with open(f"/proc/{st.pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        seen = True
                        break
        except OSError:
            pass
    return total if seen else None


def memory_snapshot(pid: int) -> dict[str, int | None]:
    st = status_kb(pid)
    return {"rss_kb": st.get("VmRSS"), "hwm_kb": st.get("VmHWM"), "tree_pss_kb": tree_pss_kb(pid)}


def udp_rcvbuf_errors() -> int:
    """Machine-wide count of UDP datagrams dropped because a receive buffer was full."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


def task_runtimes() -> dict[int, int]:
    """On-CPU nanoseconds of every thread on the machine (/proc/*/task/*/schedstat, exact).

    /proc/stat's busy counters are sampled at the timer tick and were seen to be off by a factor of
    two here (a SIPp-driven load wakes in step with the tick); the per-task run time is exact."""
    out: dict[int, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    out[int(tid)] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return out


def runtime_delta(before: dict[int, int], after: dict[int, int]) -> float:
    """Seconds run between two task_runtimes() snapshots by the threads alive at the second one
    (threads that ended in between are missed: a lower bound)."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items() if ns >= before.get(tid, 0)) / 1e9


def children_cpu_seconds() -> float:
    """CPU of this script's reaped children (the SIPp runs), from getrusage."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def udp_port_drops() -> dict[int, int]:
    """Datagrams dropped per local UDP port (summed over the sockets bound to it)."""
    out: dict[int, int] = {}
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    port = int(cols[1].rsplit(":", 1)[1], 16)
                    out[port] = out.get(port, 0) + int(cols[-1])
        except (OSError, StopIteration, ValueError, IndexError):
            pass
    return out


def port_is_bound(port: int, transport: str) -> bool:
    """True when something on this machine listens on (UDP: is bound to) ``port``."""
    files = ("/proc/net/udp", "/proc/net/udp6") if transport == "udp" else ("/proc/net/tcp", "/proc/net/tcp6")
    want = f":{port:04X}"
    for path in files:
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[1].endswith(want) and (transport == "udp" or cols[3] == "0A"):
                        return True
        except (OSError, StopIteration):
            pass
    return False


class CpuSampler:
    """Per-second CPU % (of one core) of the proxy tree, sampled while a step runs."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.samples: list[float] = []
        self._last: tuple[float, float] | None = None

    def tick(self) -> None:
        if self.pid is None:
            return
        cpu = tree_cpu_seconds(self.pid)
        now = time.monotonic()
        if cpu is None:
            return
        if self._last is not None and now - self._last[0] >= 0.5:
            self.samples.append(100.0 * (cpu - self._last[1]) / (now - self._last[0]))
            self._last = (now, cpu)
        elif self._last is None:
            self._last = (now, cpu)


# --------------------------------------------------------------------------- child processes


class Children:
    """Every process this script starts; stopped by PID only (TERM, grace, KILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], cwd: Path, stdout_path: Path, **kw: Any) -> subprocess.Popen:
        out = open(stdout_path, "wb")
        try:
            p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kw)
        finally:
            out.close()
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen, grace: float = 5.0) -> int | None:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    p.send_signal(signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        return p.returncode

    def forget(self, p: subprocess.Popen) -> None:
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p, 3.0)
        self.procs.clear()


# --------------------------------------------------------------------------- the proxy under test


def sip_probe(host: str, port: int, transport: str, timeout: float = 1.0) -> str | None:
    """Send one OPTIONS; return the status line of any SIP response, or None."""
    tag = f"{random.getrandbits(48):x}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        s.settimeout(timeout)
        try:
            if kind == socket.SOCK_DGRAM:
                s.bind((host, 0))
            else:
                s.connect((host, port))
            lhost, lport = s.getsockname()[:2]
            via_host = f"[{lhost}]" if ":" in lhost else lhost
            uri_host = f"[{host}]" if ":" in host else host
            msg = (
                f"OPTIONS sip:{uri_host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/{transport.upper()} {via_host}:{lport};rport;branch=z9hG4bK-bench-{tag}\r\n"
                "Max-Forwards: 70\r\n"
                f"To: <sip:{uri_host}:{port}>\r\n"
                f"From: <sip:bench-probe@{uri_host}>;tag={tag}\r\n"
                f"Call-ID: bench-probe-{tag}@{via_host}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            if kind == socket.SOCK_DGRAM:
                s.sendto(msg, (host, port))
            else:
                s.sendall(msg)
            deadline = time.monotonic() + timeout
            buf = b""
            while time.monotonic() < deadline:
                chunk = s.recv(65535)
                if not chunk:
                    return None
                buf += chunk
                if buf.startswith(b"SIP/2.0 ") and b"\r\n" in buf:
                    return buf.split(b"\r\n", 1)[0].decode("ascii", "replace")
                if kind == socket.SOCK_DGRAM:
                    buf = b""
        except OSError:
            return None
    return None


class Proxy:
    def __init__(self, host: str, port: int, transport: str, children: Children, outdir: Path):
        self.host, self.port, self.transport = host, port, transport
        self.children = children
        self.outdir = outdir
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.known_tree: dict[int, int] = {}  # pid -> start time, of everything the started proxy forked

    def start(self, cmd: str, timeout: float) -> None:
        if port_is_bound(self.port, self.transport):
            raise SystemExit(f"something already listens on {self.transport} port {self.port}; not starting {cmd!r}")
        log(f"starting proxy: {cmd}")
        # exec: the PID we get is the proxy itself, not a shell
        self.proc = self.children.start(
            ["bash", "-c", "exec " + cmd], cwd=Path.cwd(), stdout_path=self.outdir / "proxy.log", start_new_session=True
        )
        self.pid = self.proc.pid
        (self.outdir / "proxy.pid").write_text(f"{self.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.outdir / "proxy.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"proxy exited with {self.proc.returncode} during start-up:\n{tail}")
            answer = sip_probe(self.host, self.port, self.transport, 0.5)
            if answer:
                log(f"proxy pid {self.pid} answers: {answer}")
                self.remember_tree()
                return
            time.sleep(0.2)
        raise SystemExit(f"proxy did not answer an OPTIONS within {timeout:.0f} s (see {self.outdir / 'proxy.log'})")

    def attach(self, pid: int | None) -> None:
        self.pid = pid
        answer = sip_probe(self.host, self.port, self.transport, 2.0)
        if not answer:
            raise SystemExit(f"nothing answers OPTIONS at {self.transport}:{self.host}:{self.port}")
        log(f"proxy at {self.host}:{self.port} answers: {answer}" + (f" (pid {pid})" if pid else " (no --proxy-pid: no CPU/RSS figures)"))

    def remember_tree(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for st in process_tree(self.proc.pid):
                self.known_tree[st.pid] = st.start

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is None or read_stat(self.pid) is not None

    def cpu(self) -> float | None:
        return tree_cpu_seconds(self.pid) if self.pid else None

    def memory(self) -> dict[str, int | None]:
        return memory_snapshot(self.pid) if self.pid else {}

    def stop(self) -> None:
        if self.proc is None:
            return
        self.remember_tree()
        rc = Children.stop(self.proc, 10.0)
        self.children.forget(self.proc)
        log(f"proxy pid {self.pid} stopped (exit status {rc})")
        # workers the proxy forked and left behind: only those we saw, if still the same process
        for pid, start in self.known_tree.items():
            if pid == self.proc.pid:
                continue
            st = read_stat(pid)
            if st is not None and st.start == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None


# --------------------------------------------------------------------------- SIPp runs


def write_users(path: Path, prefix: str, first: int, count: int) -> None:
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(first, first + count):
            f.write(f"{prefix}{i:05d};\n")


def read_stat_csv(path: Path) -> dict[str, str]:
    """The last (cumulative) row of a SIPp -trace_stat file."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";")))


def as_int(stats: dict[str, str], key: str) -> int:
    try:
        return int(float(stats.get(key) or 0))
    except ValueError:
        return 0


def read_rtt(directory: Path) -> tuple[dict[int, list[float]], list[float]]:
    """All response times by rtd number (ms), and the completion times of rtd 1 (ms since SIPp start)."""
    times: dict[int, list[float]] = {}
    done1: list[float] = []
    for path in directory.glob("*_rtt.csv"):
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.strip().split(";")
                if len(parts) != 3 or not parts[2].isdigit():
                    continue
                try:
                    date, rt = float(parts[0]), float(parts[1])
                except ValueError:
                    continue
                n = int(parts[2])
                times.setdefault(n, []).append(rt)
                if n == 1:
                    done1.append(date)
    for v in times.values():
        v.sort()
    return times, done1


def percentile(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def fmt(v: Any) -> str:
    if v is None:
        return "NA"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


@dataclass
class Bench:
    args: argparse.Namespace
    outdir: Path
    proxy: Proxy
    children: Children
    results: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    users_csv: Path = Path("users.csv")

    # -- helpers
    @property
    def target(self) -> str:
        host = f"[{self.proxy.host}]" if ":" in self.proxy.host else self.proxy.host
        return f"{host}:{self.proxy.port}"

    def emit(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)
        with open(self.outdir / "results.txt", "a") as f:
            f.write(line + "\n")

    def sipp_common(self, tmode: str) -> list[str]:
        a = self.args
        return [
            "-i", "127.0.0.1", "-t", tmode, "-nostdin",
            "-buff_size", str(a.sipp_buff),
            "-max_log_size", "5000000",
            "-trace_err", "-trace_screen",
        ] + (["-trace_msg"] if a.trace_msg else [])

    @property
    def tmode(self) -> str:
        return {"udp": "u1", "tcp": "t1"}[self.args.transport]

    def contact_keys(self) -> list[str]:
        a = self.args
        return [
            "-key", "c_host", "127.0.0.1", "-key", "c_port", str(a.uas_port),
            "-key", "c_transport", a.transport, "-key", "c_expires", str(a.expires),
        ]

    def wait_bounded(self, p: subprocess.Popen, bound: float, on_tick: Callable[[], None] | None = None) -> int | None:
        deadline = time.monotonic() + bound
        next_tick = 0.0
        while p.poll() is None and time.monotonic() < deadline:
            if on_tick and time.monotonic() >= next_tick:
                on_tick()
                next_tick = time.monotonic() + 1.0
            if not self.proxy.alive():
                log("the proxy process has exited!")
                break
            time.sleep(0.1)
        if p.poll() is None:
            log(f"sipp pid {p.pid} still running after {bound:.0f} s: stopping it")
        rc = Children.stop(p, 3.0)
        self.children.forget(p)
        return rc

    # -- bulk registration (preload for calls, memory measurement): must be loss-free
    def bulk_register(self, name: str, prefix: str, count: int, rate: int, first: int = 1) -> bool:
        a = self.args
        d = self.outdir / name
        d.mkdir(parents=True, exist_ok=True)
        users = d / "users.csv"
        write_users(users, prefix, first, count)
        bound = count / rate * 2 + 30
        argv = [
            a.sipp, self.target, "-sf", str(SCENARIO_DIR / "register.xml"), "-inf", str(users),
            "-p", str(a.reg_port), *self.sipp_common(self.tmode), *self.contact_keys(),
            "-r", str(rate), "-m", str(count), "-l", str(rate * 2 + 100),
            "-recv_timeout", str(a.recv_timeout_ms), "-timeout", f"{int(bound)}s",
            "-trace_stat", "-stf", "stat.csv", "-fd", "1",
        ]
        (d / "cmd.txt").write_text(shlex.join(argv) + "\n")
        log(f"{name}: registering {count} contacts ({prefix}{first:05d}...) at {rate}/s")
        p = self.children.start(argv, cwd=d, stdout_path=d / "sipp.out")
        self.wait_bounded(p, bound + 10)
        st = read_stat_csv(d / "stat.csv")
        ok, failed = as_int(st, "SuccessfulCall(C)"), as_int(st, "FailedCall(C)")
        log(f"{name}: {ok}/{count} REGISTER ok, {failed} failed")
        return ok == count

    # -- one rate step
    def run_step(self, scenario: str, rate: int) -> dict[str, Any]:
        a = self.args
        calls = max(1, int(round(rate * a.step_secs)))
        pause_s = a.pause_ms / 1000.0 if scenario == "invite" else 0.0
        bound = int(2 * a.step_secs + pause_s + a.recv_timeout_ms / 1000 + 15)
        d = self.outdir / f"{scenario}-{rate}"
        if d.exists():
            d = self.outdir / f"{scenario}-{rate}-{int(time.time())}"
        d.mkdir(parents=True)
        uas = None
        if scenario == "invite":
            xml = SCENARIO_DIR / "uac.xml"
            limit = int(rate * (pause_s + 2) * 2 + 100)
            uas_argv = [
                a.sipp, "-sf", str(SCENARIO_DIR / "uas.xml"), "-p", str(a.uas_port),
                *self.sipp_common(self.tmode), "-timeout", f"{bound + 10}s",
                "-trace_stat", "-stf", "uas_stat.csv", "-fd", "1",
            ]
            (d / "uas_cmd.txt").write_text(shlex.join(uas_argv) + "\n")
            if port_is_bound(a.uas_port, a.transport):
                raise SystemExit(f"{a.transport} port {a.uas_port} (--uas-port) is taken by another process")
            uas = self.children.start(uas_argv, cwd=d, stdout_path=d / "uas.out")
            t_end = time.monotonic() + 10
            while not port_is_bound(a.uas_port, a.transport) and time.monotonic() < t_end and uas.poll() is None:
                time.sleep(0.05)
            if uas.poll() is not None or not port_is_bound(a.uas_port, a.transport):
                raise SystemExit(f"SIPp UAS did not come up on port {a.uas_port}; see {d / 'uas.out'}")
        else:
            xml = SCENARIO_DIR / "register.xml"
            limit = rate * 2 + 100
        argv = [
            a.sipp, self.target, "-sf", str(xml), "-inf", str(self.users_csv),
            "-p", str(a.uac_port), *self.sipp_common(self.tmode), *self.contact_keys(),
            "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(limit),
            "-d", str(a.pause_ms), "-recv_timeout", str(a.recv_timeout_ms), "-timeout", f"{bound}s",
            "-trace_stat", "-stf", "uac_stat.csv", "-fd", "1",
            # SIPp writes response times in batches of -rtt_freq and drops the last partial batch
            # at exit: keep batches small against the step so < 0.5 % of the samples are lost
            "-trace_rtt", "-rtt_freq", str(max(1, min(100, calls // 200))),
        ]
        if scenario == "invite":
            # a stray 180 after the 200, or a late retransmission, must not abort a call; they are counted
            argv += ["-default_behaviors", "all,-abortunexp"]
        (d / "uac_cmd.txt").write_text(shlex.join(argv) + "\n")
        log(f"step {scenario} rate={rate}/s calls={calls} ({a.transport})")

        drops0 = udp_rcvbuf_errors()
        watched = {"proxy": self.proxy.port, "uac": a.uac_port, "uas": a.uas_port}
        port_drops0 = udp_port_drops()
        port_drops_max: dict[str, int] = {k: 0 for k in watched}

        def drops_tick() -> None:
            now = udp_port_drops()
            for k, port in watched.items():
                # SIPp's sockets are new in each run; the proxy's live on: count its increase
                base = port_drops0.get(port, 0) if k == "proxy" else 0
                port_drops_max[k] = max(port_drops_max[k], now.get(port, 0) - base)

        def tick() -> None:
            sampler.tick()
            if a.transport == "udp":
                drops_tick()

        cpu0 = self.proxy.cpu()
        host0, kids0, self0 = task_runtimes(), children_cpu_seconds(), self_cpu_seconds()
        sampler = CpuSampler(self.proxy.pid)
        sampler.tick()
        t0 = time.monotonic()
        uac = self.children.start(argv, cwd=d, stdout_path=d / "uac.out")
        uac_rc = self.wait_bounded(uac, bound + 10, tick)
        wall = time.monotonic() - t0
        uas_stats: dict[str, str] = {}
        if uas is not None:
            time.sleep(a.stop_grace)
            Children.stop(uas, 3.0)
            self.children.forget(uas)
            uas_stats = read_stat_csv(d / "uas_stat.csv")
        cpu1 = self.proxy.cpu()
        live_s, sipp_s = runtime_delta(host0, task_runtimes()), children_cpu_seconds() - kids0
        self_s = self_cpu_seconds() - self0
        span = time.monotonic() - t0
        drops = udp_rcvbuf_errors() - drops0
        if a.transport == "udp":
            drops_tick()
        mem = self.proxy.memory()

        st = read_stat_csv(d / "uac_stat.csv")
        ok, failed = as_int(st, "SuccessfulCall(C)"), as_int(st, "FailedCall(C)")
        if uac_rc not in (0, 1) and ok + failed == 0:
            # SIPp never got going (most often: its local port is taken by someone else)
            tail = (d / "uac.out").read_text(errors="replace")[-1500:]
            raise SystemExit(f"SIPp UAC failed to run (exit {uac_rc}); {d / 'uac.out'}:\n{tail}")
        retrans = as_int(st, "Retransmissions(C)")
        unexpected = as_int(st, "OutOfCallMsgs(C)") + as_int(st, "DeadCallMsgs(C)")
        ignored = 0
        for errf in d.glob("*_errors.log"):
            with open(errf, errors="replace") as f:
                ignored += sum(line.count("Continuing call on unexpected message") for line in f)
        rtt, done1 = read_rtt(d)
        achieved = 0.0
        if len(done1) > 1 and max(done1) > min(done1):
            achieved = (len(done1) - 1) / ((max(done1) - min(done1)) / 1000.0)
        elif len(done1) == 1:
            achieved = float(rate) if calls == 1 else 0.0
        p99 = percentile(rtt.get(1, []), 99)
        cpu_s = (cpu1 - cpu0) if (cpu0 is not None and cpu1 is not None) else None
        checks = {
            "all_ok": ok == calls and failed == 0,
            "rate": achieved >= a.min_fraction * rate,
            "retrans": retrans <= a.max_retrans * calls,
            "p99": p99 is not None and p99 <= a.max_p99_ms,
            "proxy_alive": self.proxy.alive(),
        }
        r: dict[str, Any] = {
            "scenario": scenario, "transport": a.transport, "rate": rate, "calls": calls,
            "ok": ok, "failed": failed, "incomplete": max(0, calls - ok - failed),
            "achieved": round(achieved, 1), "retrans": retrans, "unexpected": unexpected,
            "unexp_ignored": ignored, "udp_drops_host": drops,
            **({f"drops_{k}": v for k, v in port_drops_max.items()} if a.transport == "udp" else {}),
            "rtt_ms_p50": percentile(rtt.get(1, []), 50), "rtt_ms_p99": p99,
            "rtt_ms_max": rtt[1][-1] if rtt.get(1) else None,
        }
        if scenario == "invite":
            r["bye_ms_p99"] = percentile(rtt.get(2, []), 99)
            r["uas_ok"] = as_int(uas_stats, "SuccessfulCall(C)")
            r["uas_failed"] = as_int(uas_stats, "FailedCall(C)")
        r["wall_s"] = round(wall, 1)
        r["cpu_s"] = round(cpu_s, 2) if cpu_s is not None else None
        r["cpu_us_per_op"] = round(cpu_s * 1e6 / ok, 1) if (cpu_s is not None and ok) else None
        r["cpu_pct_avg"] = round(sum(sampler.samples) / len(sampler.samples), 0) if sampler.samples else None
        r["cpu_pct_max"] = round(max(sampler.samples), 0) if sampler.samples else None
        # machine-wide view: SIPp's own CPU, and CPU used by neither SIPp nor the proxy (other tenants:
        # a busy machine makes the step's numbers unreliable)
        r["sipp_cpu_pct"] = round(100 * sipp_s / span, 0)
        # live_s: threads still alive now -- the proxy, this script, everybody else (SIPp has exited)
        r["host_cpu_pct"] = round(100 * (live_s + sipp_s) / span, 0)
        r["other_cpu_pct"] = max(0.0, round(100 * (live_s - self_s - (cpu_s or 0)) / span, 0))
        r["noisy"] = int(r["other_cpu_pct"] > a.max_other_cpu)
        r["rss_kb"], r["hwm_kb"] = mem.get("rss_kb"), mem.get("hwm_kb")
        r["sipp_rc"] = uac_rc
        r["failed_checks"] = ",".join(k for k, v in checks.items() if not v) or "-"
        r["pass"] = int(all(checks.values()))
        self.results.append({"kind": "step", **r})
        self.emit("RESULT " + " ".join(f"{k}={fmt(v)}" for k, v in r.items()))
        return r

    # -- ladder for one scenario
    def ladder(self, scenario: str, rates: list[int]) -> dict[str, Any]:
        a = self.args
        best: dict[str, Any] | None = None
        first_fail: int | None = None
        noisy_steps: list[int] = []

        def step(rate: int) -> bool:
            nonlocal best, first_fail
            if not self.proxy.alive():
                raise SystemExit("the proxy process is gone; stopping")
            r = self.run_step(scenario, rate)
            for _ in range(a.retry_noisy):
                if r["pass"] or not r["noisy"] or not self.proxy.alive():
                    break
                noisy_steps.append(rate)  # this attempt; the last one is counted below
                log(f"step failed while other processes used {r['other_cpu_pct']:.0f}% CPU: "
                    f"cooling down {a.fail_cooldown:.0f} s and repeating it")
                time.sleep(a.fail_cooldown)
                r = self.run_step(scenario, rate)
            if r["noisy"]:
                noisy_steps.append(rate)
            if r["pass"]:
                if best is None or rate > best["rate"]:
                    best = r
                time.sleep(a.cooldown)
                return True
            first_fail = rate if first_fail is None else min(first_fail, rate)
            if self.proxy.alive():
                log(f"step failed ({r['failed_checks']}); cooling down {a.fail_cooldown:.0f} s")
                time.sleep(a.fail_cooldown)
            return False

        for rate in rates:
            if not step(rate):
                break
        lo = best["rate"] if best else 0
        for _ in range(a.refine):
            if first_fail is None:
                break
            mid = round_rate((lo + first_fail) / 2)
            if mid <= lo or mid >= first_fail:
                break
            if step(mid):
                lo = mid
        m = {
            "scenario": scenario, "transport": a.transport,
            "max_pass_rate": best["rate"] if best else 0,
            "first_fail_rate": first_fail,
            "cpu_us_per_op": best["cpu_us_per_op"] if best else None,
            "cpu_pct_avg": best["cpu_pct_avg"] if best else None,
            "rtt_ms_p99": best["rtt_ms_p99"] if best else None,
            "step_secs": a.step_secs,
            "noisy_steps": len(noisy_steps),
        }
        if scenario == "invite":
            m["pause_ms"] = a.pause_ms
        self.results.append({"kind": "max", **m})
        self.emit("MAX " + " ".join(f"{k}={fmt(v)}" for k, v in m.items()))
        return m

    # -- memory per contact
    def memory(self, n: int) -> dict[str, Any]:
        a = self.args
        if not self.proxy.pid:
            log("memory: no proxy PID (use --start-cmd or --proxy-pid); skipped")
            return {}
        warm = min(1000, n)
        if not self.bulk_register("memory-warmup", "w", warm, min(a.memory_rate, 1000)):
            log("memory: warm-up registration failed")
        time.sleep(2)
        before = self.proxy.memory()
        cpu0 = self.proxy.cpu()
        ok = self.bulk_register("memory", "m", n, a.memory_rate)
        cpu1 = self.proxy.cpu()
        time.sleep(1)
        after = self.proxy.memory()
        log(f"memory: waiting {a.memory_settle:.0f} s for transaction state to expire")
        time.sleep(a.memory_settle)
        settled = self.proxy.memory()

        def per(b: dict, x: dict, key: str) -> float | None:
            if b.get(key) is None or x.get(key) is None:
                return None
            return round((x[key] - b[key]) * 1024 / n, 0)

        m = {
            "contacts": n, "registered_ok": int(ok), "rate": a.memory_rate,
            "rss_kb_before": before.get("rss_kb"), "rss_kb_after": after.get("rss_kb"),
            "rss_kb_settled": settled.get("rss_kb"),
            "bytes_per_contact": per(before, settled, "rss_kb"),
            "bytes_per_contact_unsettled": per(before, after, "rss_kb"),
            "pss_bytes_per_contact": per(before, settled, "tree_pss_kb"),
            "hwm_kb": settled.get("hwm_kb"),
            "cpu_us_per_register": round((cpu1 - cpu0) * 1e6 / n, 1) if cpu0 is not None and cpu1 is not None else None,
        }
        self.results.append({"kind": "memory", **m})
        self.emit("MEMORY " + " ".join(f"{k}={fmt(v)}" for k, v in m.items()))
        return m


def round_rate(x: float) -> int:
    """Round to two significant digits (bisection midpoints: 1500, 2800, 450 ...)."""
    if x <= 0:
        return 0
    mag = 10 ** max(0, int(math.floor(math.log10(x))) - 1)
    return int(round(x / mag) * mag)


def parse_rates(text: str) -> list[int]:
    return sorted({int(float(t)) for t in text.replace(",", " ").split() if t.strip()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="SIPp load benchmark for a SIP registrar + stateful proxy (edgeproxy).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--proxy", default="127.0.0.1:5060", help="HOST:PORT of the proxy (loopback only)")
    ap.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    ap.add_argument("--scenarios", default="register,invite", help="comma list, run in this order, of: register, invite, memory "
                         "(memory = --memory-contacts registrations, default 100000)")
    ap.add_argument("--reg-rates", default="1000,2000,4000,5000,8000,12000,16000",
                    help="REGISTER/s ladder (comma or space separated)")
    ap.add_argument("--call-rates", default="100,200,400,600,800,1200", help="calls/s ladder")
    ap.add_argument("--step-secs", type=float, default=10.0, help="seconds of load per step (calls = rate x this)")
    ap.add_argument("--refine", type=int, default=2, help="bisection steps between last pass and first fail")
    ap.add_argument("--start-cmd", help="start the proxy with this command (run via 'bash -c exec ...'), stop it at the end")
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
    ap.add_argument("--retry-noisy", type=int, default=1, help="repeat a failed noisy step up to N times")
    ap.add_argument("--stop-grace", type=float, default=2.0, help="seconds the UAS outlives the UAC")
    ap.add_argument("--sipp", default=shutil.which("sipp") or "/usr/bin/sipp")
    ap.add_argument("--sipp-buff", type=int, default=4 * 1024 * 1024, help="SIPp socket buffer size")
    ap.add_argument("--outdir", help="default /tmp/edgeproxy-bench/<timestamp>/")
    ap.add_argument("--trace-msg", action="store_true", help="SIPp -trace_msg (every message to a file: low rates only)")
    ap.add_argument("--label", default="", help="free text copied into the SUMMARY line (e.g. the commit)")
    a = ap.parse_args(argv)

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
        if s not in ("register", "invite", "memory"):
            ap.error(f"unknown scenario {s!r}")
    if a.memory_contacts and "memory" not in scenarios:
        scenarios.append("memory")  # last: the ladders run against a proxy with only the bench users
    if "memory" in scenarios and not a.memory_contacts:
        a.memory_contacts = 100000
    if a.start_cmd and a.proxy_pid:
        ap.error("--start-cmd and --proxy-pid are exclusive")

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

    summary: dict[str, Any] = {"label": a.label or None, "transport": a.transport}
    rc = 0
    try:
        if a.start_cmd:
            proxy.start(a.start_cmd, a.start_timeout)
        else:
            proxy.attach(a.proxy_pid)
        bench.users_csv = outdir / "users.csv"
        write_users(bench.users_csv, "u", 1, a.users)

        for scenario in scenarios:
            if scenario == "memory":
                m = bench.memory(a.memory_contacts)
                summary["bytes_per_contact"] = m.get("bytes_per_contact")
            elif scenario == "register":
                m = bench.ladder("register", parse_rates(a.reg_rates))
                summary["max_register_per_s"] = m["max_pass_rate"]
                summary["cpu_us_per_register"] = m["cpu_us_per_op"]
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
        bench.emit("SUMMARY " + " ".join(f"{k}={fmt(v)}" for k, v in summary.items()))
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except SystemExit as e:
        if e.code not in (None, 0):
            log(f"aborted: {e.code}")
            rc = 1
    finally:
        for p in list(children.procs):
            if p is not proxy.proc:
                Children.stop(p, 3.0)
                children.forget(p)
        proxy.stop()
        children.stop_all()
        (outdir / "results.json").write_text(json.dumps({"summary": summary, "results": bench.results}, indent=2) + "\n")
        log(f"results in {outdir / 'results.txt'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
