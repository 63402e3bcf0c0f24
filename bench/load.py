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
import hashlib
import json
import math
import os
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar
from urllib.parse import parse_qsl, urlencode

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


def _proc_net_addr(hexaddr: str) -> tuple[str, int]:
    """``0B00007F:13C4`` (an IPv4 /proc/net/udp address) -> ("127.0.0.11", 5060); IPv6 as hex text."""
    ip_hex, _, port_hex = hexaddr.rpartition(":")
    if len(ip_hex) == 8:
        ip = socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1])
    else:
        ip = ip_hex
    return ip, int(port_hex, 16)


def udp_addr_drops() -> dict[tuple[str, int], int]:
    """Datagrams dropped per local UDP (address, port) (summed over the sockets bound to it)."""
    out: dict[tuple[str, int], int] = {}
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    key = _proc_net_addr(cols[1])
                    out[key] = out.get(key, 0) + int(cols[-1])
        except (OSError, StopIteration, ValueError, IndexError):
            pass
    return out


def drops_at(table: dict[tuple[str, int], int], host: str, port: int) -> int:
    """Drops of the sockets that receive what is sent to host:port (bound to it or to the wildcard)."""
    return sum(v for (ip, p), v in table.items() if p == port and ip in (host, "0.0.0.0", "0" * 32))


def addr_is_bound(host: str, port: int, transport: str) -> bool:
    """True when something on this machine is bound to (UDP) / listens on (TCP) host:port, or to the
    wildcard address with that port. IPv4 hosts only; anything else falls back to port_is_bound."""
    try:
        socket.inet_aton(host)
    except OSError:
        return port_is_bound(port, transport)
    files = ("/proc/net/udp",) if transport == "udp" else ("/proc/net/tcp",)
    for path in files:
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    ip, p = _proc_net_addr(cols[1])
                    if p == port and ip in (host, "0.0.0.0") and (transport == "udp" or cols[3] == "0A"):
                        return True
        except (OSError, StopIteration, ValueError):
            pass
    # a wildcard IPv6 socket (dual stack) takes IPv4 too
    return _v6_wildcard_bound(port, transport)


def _v6_wildcard_bound(port: int, transport: str) -> bool:
    path = "/proc/net/udp6" if transport == "udp" else "/proc/net/tcp6"
    try:
        with open(path) as f:
            next(f)
            for line in f:
                cols = line.split()
                ip, p = _proc_net_addr(cols[1])
                if p == port and ip == "0" * 32 and (transport == "udp" or cols[3] == "0A"):
                    return True
    except (OSError, StopIteration, ValueError):
        pass
    return False


def free_port_on(hosts: list[str], kind: int, preferred: int) -> int:
    """``preferred`` when it can be bound on every host (UDP and TCP for SIP, TCP for the cluster
    link), else a port the kernel hands out that can; bound and released at once (racy, checked again
    by the starter)."""
    def free(port: int) -> bool:
        for host in hosts:
            for k in ((socket.SOCK_DGRAM, socket.SOCK_STREAM) if kind == 0 else (kind,)):
                with socket.socket(socket.AF_INET, k) as s:
                    try:
                        s.bind((host, port))
                    except OSError:
                        return False
        return True

    if preferred and free(preferred):
        return preferred
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        if free(port):
            return port
    raise SystemExit(f"no port free on all of {', '.join(hosts)}")


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


class StallProbe:
    """While a step runs, a thread asks each node an OPTIONS (Max-Forwards 0: answered by the node's
    route at once, nothing is relayed) and the store a ``ping``, every ``interval`` seconds, one at a
    time, and keeps the slowest answer of each: a node whose event loop stalls (a long GC, a burst of
    work) or a store that stalls shows up here, which tells where a p99 spike came from. A probe
    that gets no answer within 2 s counts as 2000 ms."""

    def __init__(self, nodes: dict[str, Any], store: Any, interval: float = 0.1):
        self.nodes, self.store, self.interval = nodes, store, interval
        self.worst: dict[str, float] = {name: 0.0 for name in nodes}
        if store is not None:
            self.worst["store"] = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-probe", daemon=True)

    def start(self) -> StallProbe:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        return {k: round(v, 1) for k, v in self.worst.items()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, node in self.nodes.items():
                t = time.monotonic()
                answered = sip_probe(node.host, node.port, "udp" if node.transport == "udp" else "tcp", 2.0, 0)
                ms = (time.monotonic() - t) * 1000 if answered else 2000.0
                self.worst[name] = max(self.worst[name], ms)
            if self.store is not None:
                t = time.monotonic()
                ok = self.store.ping()
                ms = (time.monotonic() - t) * 1000 if ok else 2000.0
                self.worst["store"] = max(self.worst["store"], ms)


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


def sip_probe(host: str, port: int, transport: str, timeout: float = 1.0, max_forwards: int = 70) -> str | None:
    """Send one OPTIONS; return the status line of any SIP response, or None.

    ``max_forwards=0`` makes a proxy answer (483) instead of routing the OPTIONS: for a route (the
    federated one) that would relay it to FreeSWITCH."""
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
                f"Max-Forwards: {max_forwards}\r\n"
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
    """One SIP node under test: started here (``start``) or attached by PID. ``name`` names its log
    and PID files (``OUTDIR/<name>.log``); ``probe_max_forwards`` is the Max-Forwards of the readiness
    OPTIONS (see :func:`sip_probe`). ``probe``, when given, replaces that OPTIONS as the readiness
    check (a listener an OPTIONS over UDP/TCP cannot reach, such as WSS): it returns a line
    describing the answer, or None while nothing answers."""

    def __init__(self, host: str, port: int, transport: str, children: Children, outdir: Path,
                 name: str = "proxy", env: dict[str, str] | None = None, probe_max_forwards: int = 70,
                 probe: Callable[[float], str | None] | None = None):
        self.host, self.port, self.transport = host, port, transport
        self.children = children
        self.outdir = outdir
        self.name = name
        self.env = env
        self.probe_max_forwards = probe_max_forwards
        self.probe = probe
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.known_tree: dict[int, int] = {}  # pid -> start time, of everything the started proxy forked

    def start(self, cmd: str, timeout: float) -> None:
        if addr_is_bound(self.host, self.port, self.transport):
            raise SystemExit(f"something already listens on {self.transport} {self.host}:{self.port}; not starting {cmd!r}")
        log(f"starting {self.name}: {cmd}")
        # exec: the PID we get is the proxy itself, not a shell
        self.proc = self.children.start(
            ["bash", "-c", "exec " + cmd], cwd=Path.cwd(), stdout_path=self.log_path, start_new_session=True,
            **({"env": self.env} if self.env is not None else {}),
        )
        self.pid = self.proc.pid
        (self.outdir / f"{self.name}.pid").write_text(f"{self.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{self.name} exited with {self.proc.returncode} during start-up:\n{tail}")
            answer = self.ready(0.5)
            if answer:
                log(f"{self.name} pid {self.pid} answers: {answer}")
                self.remember_tree()
                return
            time.sleep(0.2)
        what = "the readiness probe" if self.probe is not None else "an OPTIONS"
        raise SystemExit(f"{self.name} did not answer {what} within {timeout:.0f} s (see {self.log_path})")

    def ready(self, timeout: float) -> str | None:
        """The readiness check: ``probe`` if given, else an OPTIONS (:func:`sip_probe`)."""
        if self.probe is not None:
            return self.probe(timeout)
        return sip_probe(self.host, self.port, self.transport, timeout, self.probe_max_forwards)

    @property
    def log_path(self) -> Path:
        return self.outdir / f"{self.name}.log"

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def attach(self, pid: int | None) -> None:
        self.pid = pid
        answer = self.probe(2.0) if self.probe is not None else sip_probe(self.host, self.port, self.transport, 2.0)
        if not answer:
            what = "the readiness probe" if self.probe is not None else "OPTIONS"
            raise SystemExit(f"nothing answers {what} at {self.transport}:{self.host}:{self.port}")
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
        log(f"{self.name} pid {self.pid} stopped (exit status {rc})")
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


# --------------------------------------------------------------------------- the shared store (federated)


class Store:
    """The federation's shared location store: a SecantusDB started here (``secantusd-py --host
    127.0.0.1 --port <free> --storage-path :memory:``, stopped by its PID) or a MongoDB given by
    ``--store-url`` (not started, not stopped, no CPU figure). The run uses a database of its own.

    Per-step counters are read from the server: ``serverStatus`` (``opcounters``, ``network.numRequests``)
    and ``top`` (count and server time per operation kind, per namespace). ``top`` is what the store
    round-trips per call are computed from: it sees only the bench's collection, so neither this
    script's own monitoring commands nor another tenant of a shared MongoDB are counted."""

    def __init__(self, children: Children, outdir: Path, database: str, collection: str):
        self.children = children
        self.outdir = outdir
        self.database, self.collection = database, collection
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.base_uri = ""
        self._client: Any = None

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.collection}"

    def cachedb_url(self) -> str:
        """The nodes' ``[federation] cachedb_url``: the server's URI with ``/database.collection``."""
        rest, _, query = self.base_uri.partition("?")
        scheme, _, authority = rest.partition("://")
        authority = authority.split("/", 1)[0]
        return f"{scheme}://{authority}/{self.namespace}" + (f"?{query}" if query else "")

    def client(self) -> Any:
        if self._client is None:
            try:
                from pymongo import MongoClient
            except ImportError:
                raise SystemExit("the federated scenario needs PyMongo: pip install 'pymongo>=4.13,<5'") from None
            self._client = MongoClient(self.base_uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
        return self._client

    def ping(self) -> bool:
        try:
            self.client().admin.command("ping")
            return True
        except Exception:
            return False

    def start(self, exe: str, timeout: float) -> None:
        port = free_port_on(["127.0.0.1"], socket.SOCK_STREAM, 0)
        self.base_uri = f"mongodb://127.0.0.1:{port}/?replicaSet=secantus"
        argv = [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:"]
        log(f"starting store: {shlex.join(argv)}")
        self.proc = self.children.start(argv, cwd=self.outdir, stdout_path=self.outdir / "store.log",
                                        start_new_session=True)
        self.pid = self.proc.pid
        (self.outdir / "store.pid").write_text(f"{self.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.outdir / "store.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"store exited with {self.proc.returncode} during start-up:\n{tail}")
            if self.ping():
                log(f"store pid {self.pid} answers on 127.0.0.1:{port}")
                return
            time.sleep(0.2)
        raise SystemExit(f"store did not answer ping within {timeout:.0f} s (see {self.outdir / 'store.log'})")

    def attach(self, uri: str) -> None:
        self.base_uri = uri
        if not self.ping():
            raise SystemExit(f"no MongoDB answers ping at {uri}")
        log(f"store at {uri} answers (not started here: no CPU figure)")

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def cpu(self) -> float | None:
        return tree_cpu_seconds(self.pid) if self.pid else None

    def counters(self) -> dict[str, Any] | None:
        """serverStatus opcounters + numRequests, and ``top`` of the bench's namespace; None when the
        server does not answer them (the per-call store figures are then NA)."""
        try:
            admin = self.client().admin
            ss = admin.command("serverStatus")
            out: dict[str, Any] = {"opcounters": dict(ss.get("opcounters", {})),
                                   "requests": (ss.get("network") or {}).get("numRequests")}
            try:
                out["top"] = admin.command("top").get("totals", {}).get(self.namespace, {})
            except Exception:
                out["top"] = None
            return out
        except Exception as exc:
            log(f"store counters unavailable: {exc}")
            return None

    def count_homes(self, home_ip: str) -> int:
        try:
            return int(self.client()[self.database][self.collection].count_documents({"home_ip": home_ip}))
        except Exception:
            return -1

    def close(self) -> None:
        if self._client is not None and self.proc is None and self.base_uri:
            # a MongoDB of the user's (--store-url): drop this run's own database, nothing else
            try:
                self._client.drop_database(self.database)
            except Exception as exc:
                log(f"could not drop database {self.database}: {exc}")
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                pass
            self._client = None
        if self.proc is not None:
            rc = Children.stop(self.proc, 10.0)
            self.children.forget(self.proc)
            log(f"store pid {self.pid} stopped (exit status {rc})")
            self.proc = None


def store_deltas(before: dict[str, Any] | None, after: dict[str, Any] | None, namespace: str,
                 calls: int, ok: int) -> dict[str, Any]:
    """Per-step store figures (see Store): ``store_find_per_call`` -- find + getMore commands on the
    bench collection per call placed (the round-trips of the global lookups); ``store_find_per_ok_call``
    -- the same per successful call (differs from the former only in a failing step: a lookup that
    timed out client-side before its find was sent made no round-trip); ``store_ops_per_call``
    -- every operation on the collection per call (writes by the publisher included);
    ``store_writes`` -- insert/update/remove on it during the step; ``store_us_per_find`` -- the
    server's own time per find; ``store_requests_per_call`` -- every wire request the server got,
    per call (driver heartbeats of both nodes and this script's counter reads included: an upper
    bound); ``store_query_opcounter`` -- the server-wide opcounters.query delta (cross-check)."""
    out: dict[str, Any] = {"store_find_per_call": None, "store_find_per_ok_call": None,
                           "store_ops_per_call": None, "store_writes": None,
                           "store_us_per_find": None, "store_requests_per_call": None,
                           "store_query_opcounter": None}
    if not before or not after or not calls:
        return out

    def top(snapshot: dict[str, Any], section: str, what: str = "count") -> int:
        t = snapshot.get("top") or {}
        return int((t.get(section) or {}).get(what, 0) or 0)

    if before.get("top") is not None and after.get("top") is not None:
        finds = (top(after, "queries") - top(before, "queries")) + (top(after, "getmore") - top(before, "getmore"))
        out["store_find_per_call"] = round(finds / calls, 3)
        out["store_find_per_ok_call"] = round(finds / ok, 3) if ok else None
        out["store_ops_per_call"] = round((top(after, "total") - top(before, "total")) / calls, 3)
        out["store_writes"] = sum(top(after, k) - top(before, k) for k in ("insert", "update", "remove"))
        q = top(after, "queries") - top(before, "queries")
        if q:
            out["store_us_per_find"] = round((top(after, "queries", "time") - top(before, "queries", "time")) / q, 0)
    if before.get("requests") is not None and after.get("requests") is not None:
        out["store_requests_per_call"] = round((after["requests"] - before["requests"]) / calls, 3)
    qa, qb = after["opcounters"].get("query"), before["opcounters"].get("query")
    if qa is not None and qb is not None:
        out["store_query_opcounter"] = int(qa) - int(qb)
    return out


# --------------------------------------------------------------------------- SIPp runs


def bench_password(user: str) -> str:
    """The password of bench user ``user`` in the auth variant: derived from the name, so that a node
    configured by one run (OUTDIR/bench-auth.toml) serves the next one too."""
    return "pw" + hashlib.sha256(f"edgeproxy-bench:{user}".encode()).hexdigest()[:10]


def write_users(path: Path, prefix: str, first: int, count: int, auth: bool = False) -> None:
    """SIPp's -inf file: one user a line, taken in turn. With ``auth`` a line is
    ``user;[authentication ...];caller;[authentication ...];``: the auth scenarios register ``user``
    and call it from ``caller``, the user half the list away. The credentials are whole SIPp
    ``[authentication username=... password=...]`` keywords, written into the message where the
    scenario says ``[field1]`` / ``[field3]``: SIPp 3.6 expands keywords inside an injected field, but
    not ``[fieldN]`` nested inside ``[authentication ...]``."""
    def credentials(user: str) -> str:
        return f"[authentication username={user} password={bench_password(user)}]"

    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(first, first + count):
            user = f"{prefix}{i:05d}"
            if not auth:
                f.write(f"{user};\n")
                continue
            caller = f"{prefix}{first + (i - first + count // 2) % count:05d}"
            f.write(f"{user};{credentials(user)};{caller};{credentials(caller)};\n")


def auth_node_config(base: Path, prefix: str, count: int) -> str:
    """``base`` (the bench's node configuration) with an ``[auth]`` section whose ``[auth.users]``
    are the bench users ``prefix00001``... and their :func:`bench_password`; the rest of ``[auth]``
    is the node's defaults (MD5, qop=auth, 30 s nonces, a random secret)."""
    import tomllib

    doc = tomllib.loads(base.read_text())
    if "auth" in doc:
        raise SystemExit(f"{base} already has an [auth] section; --auth writes its own")
    users = {f"{prefix}{i:05d}": bench_password(f"{prefix}{i:05d}") for i in range(1, count + 1)}
    doc["auth"] = {"users": users}
    return (f"# generated by bench/load.py --auth from {base}: its settings, plus [auth] with the\n"
            f"# {count} bench users ({prefix}00001...) and their passwords\n\n" + toml_dumps(doc))


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


def fmt(v: Any, key: str = "") -> str:
    if v is None:
        return "NA"
    if (("find_per" in key or key.startswith("store_")) and ("per_call" in key or "per_ok_call" in key)
            and isinstance(v, (int, float)) and not isinstance(v, bool)):
        return f"{v:.3f}"  # store round-trips per call: 1.000 vs 1.004 matters
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


@dataclass
class Topology:
    """What a run drives: the SIP nodes whose CPU is accounted (``nodes``, by name), which node the UAC
    sends each scenario to (``entry``), which node the users register with (``home``), the loopback
    addresses SIPp binds to, the users' domain (None: the Request-URI host is the proxy's address)
    and the shared store, if any. The single-proxy bench is one node named ``proxy``."""

    nodes: dict[str, Proxy]
    entry: dict[str, str]
    home: str
    uac_ip: str = "127.0.0.1"
    uas_ip: str = "127.0.0.1"
    domain: str | None = None
    store: Store | None = None

    @property
    def single(self) -> bool:
        return list(self.nodes) == ["proxy"]


@dataclass
class Bench:
    args: argparse.Namespace
    outdir: Path
    proxy: Proxy
    children: Children
    results: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    users_csv: Path = Path("users.csv")
    topology: Topology | None = None
    #: ladders whose operations are not calls: their MAX line has no ``pause_ms`` (a subclass driving
    #: other load, such as bench/wss_load.py, names its own)
    scenarios_without_hold: ClassVar[tuple[str, ...]] = ("register",)

    def __post_init__(self) -> None:
        if self.topology is None:
            self.topology = Topology(nodes={"proxy": self.proxy}, entry={"register": "proxy", "invite": "proxy"},
                                     home="proxy")

    # -- helpers
    @property
    def auth(self) -> bool:
        """The auth variant (``--auth``): digest round trips before every REGISTER and call."""
        return bool(getattr(self.args, "auth", False))

    @property
    def auth_fields(self) -> dict[str, Any]:
        return {"auth": 1} if self.auth else {}

    @property
    def topo(self) -> Topology:
        assert self.topology is not None
        return self.topology

    @staticmethod
    def address(node: Proxy) -> str:
        host = f"[{node.host}]" if ":" in node.host else node.host
        return f"{host}:{node.port}"

    @property
    def target(self) -> str:
        return self.address(self.proxy)

    def entry_node(self, scenario: str) -> Proxy:
        return self.topo.nodes[self.topo.entry[scenario]]

    def alive(self) -> bool:
        """Every node under test (and the store this script started) still runs."""
        store = self.topo.store
        return all(n.alive() for n in self.topo.nodes.values()) and (store is None or store.alive())

    def emit(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)
        with open(self.outdir / "results.txt", "a") as f:
            f.write(line + "\n")

    def sipp_common(self, tmode: str, ip: str = "127.0.0.1") -> list[str]:
        a = self.args
        return [
            "-i", ip, "-t", tmode, "-nostdin",
            "-buff_size", str(a.sipp_buff),
            "-max_log_size", "5000000",
            "-trace_err", "-trace_screen",
        ] + (["-trace_msg"] if a.trace_msg else [])

    @property
    def tmode(self) -> str:
        return {"udp": "u1", "tcp": "t1"}[self.args.transport]

    def contact_keys(self) -> list[str]:
        a = self.args
        keys = [
            "-key", "c_host", self.topo.uas_ip, "-key", "c_port", str(a.uas_port),
            "-key", "c_transport", a.transport, "-key", "c_expires", str(a.expires),
        ]
        if self.topo.domain:
            keys += ["-key", "domain", self.topo.domain]
        return keys

    def wait_bounded(self, p: subprocess.Popen, bound: float, on_tick: Callable[[], None] | None = None) -> int | None:
        deadline = time.monotonic() + bound
        next_tick = 0.0
        while p.poll() is None and time.monotonic() < deadline:
            if on_tick and time.monotonic() >= next_tick:
                on_tick()
                next_tick = time.monotonic() + 1.0
            if not self.alive():
                log("a process under test has exited!")
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
        write_users(users, prefix, first, count, auth=self.auth)
        bound = count / rate * 2 + 30
        xml = "fed_register.xml" if self.topo.domain else "register_auth.xml" if self.auth else "register.xml"
        home = self.topo.nodes[self.topo.home]
        argv = [
            a.sipp, self.address(home), "-sf", str(SCENARIO_DIR / xml), "-inf", str(users),
            "-p", str(a.reg_port), *self.sipp_common(self.tmode, self.topo.uas_ip), *self.contact_keys(),
            "-r", str(rate), "-m", str(count), "-l", str(rate * 2 + 100),
            "-recv_timeout", str(a.recv_timeout_ms), "-timeout", f"{int(bound)}s",
            "-trace_stat", "-stf", "stat.csv", "-fd", "1",
        ]
        (d / "cmd.txt").write_text(shlex.join(argv) + "\n")
        log(f"{name}: registering {count} contacts ({prefix}{first:05d}...) at {rate}/s with {home.name}")
        p = self.children.start(argv, cwd=d, stdout_path=d / "sipp.out")
        self.wait_bounded(p, bound + 10)
        st = read_stat_csv(d / "stat.csv")
        ok, failed = as_int(st, "SuccessfulCall(C)"), as_int(st, "FailedCall(C)")
        log(f"{name}: {ok}/{count} REGISTER ok, {failed} failed")
        return ok == count

    # -- the bench UAS (one SIPp playing every registered user)
    def start_uas(self, d: Path, bound: float) -> subprocess.Popen:
        a = self.args
        ip = self.topo.uas_ip
        uas_argv = [
            a.sipp, "-sf", str(SCENARIO_DIR / "uas.xml"), "-p", str(a.uas_port),
            *self.sipp_common(self.tmode, ip), "-timeout", f"{int(bound)}s",
            "-trace_stat", "-stf", "uas_stat.csv", "-fd", "1",
        ]
        (d / "uas_cmd.txt").write_text(shlex.join(uas_argv) + "\n")
        if addr_is_bound(ip, a.uas_port, a.transport):
            raise SystemExit(f"{a.transport} {ip}:{a.uas_port} (--uas-port) is taken by another process")
        uas = self.children.start(uas_argv, cwd=d, stdout_path=d / "uas.out")
        t_end = time.monotonic() + 10
        while not addr_is_bound(ip, a.uas_port, a.transport) and time.monotonic() < t_end and uas.poll() is None:
            time.sleep(0.05)
        if uas.poll() is not None or not addr_is_bound(ip, a.uas_port, a.transport):
            raise SystemExit(f"SIPp UAS did not come up on {ip}:{a.uas_port}; see {d / 'uas.out'}")
        return uas

    def stop_uas(self, uas: subprocess.Popen) -> None:
        time.sleep(self.args.stop_grace)
        Children.stop(uas, 3.0)
        self.children.forget(uas)

    def uac_argv(self, scenario: str, rate: int, calls: int, limit: int, bound: int) -> list[str]:
        a = self.args
        if scenario == "register":
            xml = "register_auth.xml" if self.auth else "register.xml"
        else:
            xml = "fed_uac.xml" if self.topo.domain else "uac_auth.xml" if self.auth else "uac.xml"
        argv = [
            a.sipp, self.address(self.entry_node(scenario)), "-sf", str(SCENARIO_DIR / xml), "-inf", str(self.users_csv),
            "-p", str(a.uac_port), *self.sipp_common(self.tmode, self.topo.uac_ip), *self.contact_keys(),
            "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(limit),
            "-d", str(a.pause_ms), "-recv_timeout", str(a.recv_timeout_ms), "-timeout", f"{bound}s",
            "-trace_stat", "-stf", "uac_stat.csv", "-fd", "1",
            # SIPp writes response times in batches of -rtt_freq and drops the last partial batch
            # at exit: keep batches small against the step so < 0.5 % of the samples are lost
            "-trace_rtt", "-rtt_freq", str(max(1, min(100, calls // 200))),
        ]
        if scenario != "register":
            # a stray 180 after the 200, or a late retransmission, must not abort a call; they are counted
            argv += ["-default_behaviors", "all,-abortunexp"]
        return argv

    # -- a few calls through the full path before a ladder (the cluster link up, the store filled)
    def smoke(self, scenario: str, calls: int = 20, rate: int = 10, attempts: int = 5) -> bool:
        a = self.args
        for attempt in range(1, attempts + 1):
            d = self.outdir / f"smoke-{scenario}-{attempt}"
            d.mkdir(parents=True, exist_ok=True)
            bound = int(calls / rate + a.pause_ms / 1000 + a.recv_timeout_ms / 1000 + 10)
            uas = self.start_uas(d, bound + 10)
            argv = self.uac_argv(scenario, rate, calls, calls + 10, bound)
            (d / "uac_cmd.txt").write_text(shlex.join(argv) + "\n")
            uac = self.children.start(argv, cwd=d, stdout_path=d / "uac.out")
            self.wait_bounded(uac, bound + 10)
            self.stop_uas(uas)
            st = read_stat_csv(d / "uac_stat.csv")
            ok = as_int(st, "SuccessfulCall(C)")
            log(f"smoke {scenario}: {ok}/{calls} calls ok (attempt {attempt})")
            if ok == calls:
                return True
            if not self.alive():
                return False
            time.sleep(2)
        return False

    # -- one rate step
    def run_step(self, scenario: str, rate: int) -> dict[str, Any]:
        a = self.args
        topo = self.topo
        is_call = scenario != "register"
        calls = max(1, int(round(rate * a.step_secs)))
        pause_s = a.pause_ms / 1000.0 if is_call else 0.0
        bound = int(2 * a.step_secs + pause_s + a.recv_timeout_ms / 1000 + 15)
        d = self.outdir / f"{scenario}-{rate}"
        if d.exists():
            d = self.outdir / f"{scenario}-{rate}-{int(time.time())}"
        d.mkdir(parents=True)
        uas = None
        if is_call:
            limit = int(rate * (pause_s + 2) * 2 + 100)
            uas = self.start_uas(d, bound + 10)
        else:
            limit = rate * 2 + 100
        argv = self.uac_argv(scenario, rate, calls, limit, bound)
        (d / "uac_cmd.txt").write_text(shlex.join(argv) + "\n")
        log(f"step {scenario} rate={rate}/s calls={calls} ({a.transport}) -> {self.entry_node(scenario).name}")

        drops0 = udp_rcvbuf_errors()
        # per socket: the nodes' listeners, the UAC's and the UAS's (key: the drops_<name> field)
        watched = {name: (n.host, n.port) for name, n in topo.nodes.items()}
        watched.update(uac=(topo.uac_ip, a.uac_port), uas=(topo.uas_ip, a.uas_port))
        addr_drops0 = udp_addr_drops()
        port_drops_max: dict[str, int] = {k: 0 for k in watched}

        def drops_tick() -> None:
            now = udp_addr_drops()
            for k, (host, port) in watched.items():
                # SIPp's sockets are new in each run; the nodes' live on: count their increase
                base = drops_at(addr_drops0, host, port) if k in topo.nodes else 0
                port_drops_max[k] = max(port_drops_max[k], drops_at(now, host, port) - base)

        samplers = {name: CpuSampler(n.pid) for name, n in topo.nodes.items()}
        store = topo.store
        if store is not None:
            samplers["store"] = CpuSampler(store.pid)

        def tick() -> None:
            for s in samplers.values():
                s.tick()
            if a.transport == "udp":
                drops_tick()

        cpu0 = {name: n.cpu() for name, n in topo.nodes.items()}
        store_cpu0 = store.cpu() if store is not None else None
        store0 = store.counters() if store is not None else None
        log_marks = {name: n.log_size() for name, n in topo.nodes.items()}
        host0, kids0, self0 = task_runtimes(), children_cpu_seconds(), self_cpu_seconds()
        tick()
        # the multi-node topology: watch the nodes' and the store's responsiveness during the step
        probe = None if topo.single else StallProbe(topo.nodes, store).start()
        t0 = time.monotonic()
        uac = self.children.start(argv, cwd=d, stdout_path=d / "uac.out")
        uac_rc = self.wait_bounded(uac, bound + 10, tick)
        wall = time.monotonic() - t0
        stalls = probe.stop() if probe is not None else {}
        uas_stats: dict[str, str] = {}
        if uas is not None:
            self.stop_uas(uas)
            uas_stats = read_stat_csv(d / "uas_stat.csv")
        cpu1 = {name: n.cpu() for name, n in topo.nodes.items()}
        store_cpu1 = store.cpu() if store is not None else None
        store1 = store.counters() if store is not None else None
        live_s, sipp_s = runtime_delta(host0, task_runtimes()), children_cpu_seconds() - kids0
        self_s = self_cpu_seconds() - self0
        span = time.monotonic() - t0
        drops = udp_rcvbuf_errors() - drops0
        if a.transport == "udp":
            drops_tick()
        mem = {name: n.memory() for name, n in topo.nodes.items()}
        new_logs = {name: n.log_since(log_marks[name]) for name, n in topo.nodes.items()}

        st = read_stat_csv(d / "uac_stat.csv")
        ok, failed = as_int(st, "SuccessfulCall(C)"), as_int(st, "FailedCall(C)")
        created = as_int(st, "TotalCallCreated") or calls
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
        node_cpu: dict[str, float | None] = {}
        for name in topo.nodes:
            c0, c1 = cpu0[name], cpu1[name]
            node_cpu[name] = (c1 - c0) if (c0 is not None and c1 is not None) else None
        known = [v for v in node_cpu.values() if v is not None]
        cpu_s = sum(known) if known else None
        store_cpu = (store_cpu1 - store_cpu0) if (store_cpu0 is not None and store_cpu1 is not None) else None
        checks = {
            "all_ok": ok == calls and failed == 0,
            "rate": achieved >= a.min_fraction * rate,
            "retrans": retrans <= a.max_retrans * calls,
            "p99": p99 is not None and p99 <= a.max_p99_ms,
            "proxy_alive": self.alive(),
        }
        r: dict[str, Any] = {
            "scenario": scenario, "transport": a.transport, **self.auth_fields, "rate": rate, "calls": calls,
            "ok": ok, "failed": failed, "incomplete": max(0, calls - ok - failed),
            "achieved": round(achieved, 1), "retrans": retrans, "unexpected": unexpected,
            "unexp_ignored": ignored, "udp_drops_host": drops,
            **({f"drops_{k}": v for k, v in port_drops_max.items()} if a.transport == "udp" else {}),
            "rtt_ms_p50": percentile(rtt.get(1, []), 50), "rtt_ms_p99": p99,
            "rtt_ms_max": rtt[1][-1] if rtt.get(1) else None,
        }
        if is_call:
            r["bye_ms_p99"] = percentile(rtt.get(2, []), 99)
            r["uas_ok"] = as_int(uas_stats, "SuccessfulCall(C)")
            r["uas_failed"] = as_int(uas_stats, "FailedCall(C)")
        r["wall_s"] = round(wall, 1)

        def per_op(seconds: float | None) -> float | None:
            return round(seconds * 1e6 / ok, 1) if (seconds is not None and ok) else None

        def pct(sampler: CpuSampler, fn: Callable[[list[float]], float]) -> float | None:
            return round(fn(sampler.samples), 0) if sampler.samples else None

        def avg(v: list[float]) -> float:
            return sum(v) / len(v)

        r["cpu_s"] = round(cpu_s, 2) if cpu_s is not None else None
        r["cpu_us_per_op"] = per_op(cpu_s)  # all nodes together
        if self.auth and scenario == "register" and r["cpu_us_per_op"] is not None:
            # an authenticated registration is two REGISTER requests (401, then 200)
            r["cpu_us_per_request"] = round(r["cpu_us_per_op"] / 2, 1)
        if topo.single:
            r["cpu_pct_avg"] = pct(samplers["proxy"], avg)
            r["cpu_pct_max"] = pct(samplers["proxy"], max)
        else:
            for name in topo.nodes:
                r[f"{name}_cpu_us_per_op"] = per_op(node_cpu[name])
                r[f"{name}_cpu_pct_avg"] = pct(samplers[name], avg)
                r[f"{name}_cpu_pct_max"] = pct(samplers[name], max)
        if store is not None:
            r["store_cpu_us_per_op"] = per_op(store_cpu)
            r["store_cpu_pct_avg"] = pct(samplers["store"], avg)
            r.update(store_deltas(store0, store1, store.namespace, created, ok))
        for name, ms in stalls.items():
            r[f"stall_ms_{name}"] = ms
        if "store" in stalls:
            # the store stopped answering for a while during the step: a failure may be the store's
            r["store_stall"] = int(stalls["store"] > a.max_store_stall_ms)
        # machine-wide view: SIPp's own CPU, and CPU used by neither SIPp nor the processes under test
        # (other tenants: a busy machine makes the step's numbers unreliable)
        r["sipp_cpu_pct"] = round(100 * sipp_s / span, 0)
        # live_s: threads still alive now -- the nodes, the store, this script, everybody else (SIPp has exited)
        r["host_cpu_pct"] = round(100 * (live_s + sipp_s) / span, 0)
        ours = self_s + (cpu_s or 0) + (store_cpu or 0)
        r["other_cpu_pct"] = max(0.0, round(100 * (live_s - ours) / span, 0))
        r["noisy"] = int(r["other_cpu_pct"] > a.max_other_cpu)
        if not topo.single:
            # cluster health during the step, from the nodes' logs (warnings)
            r["peer_down"] = sum(text.count(" is DOWN") for text in new_logs.values())
            r["store_fail"] = sum(text.count("store failed") for text in new_logs.values())
            # of which: lookups refused at once because the store's queue was full or would not drain
            # in time (StoreOverloaded), and lookups that ran out of time (StoreTimeout); the calls
            # concerned were answered 503 + Retry-After
            r["store_shed"] = sum(text.count("already waiting for the store") for text in new_logs.values())
            r["store_timeout"] = sum(text.count("store unavailable: no answer within") for text in new_logs.values())
        if topo.single:
            r["rss_kb"], r["hwm_kb"] = mem["proxy"].get("rss_kb"), mem["proxy"].get("hwm_kb")
        else:
            for name in topo.nodes:
                r[f"{name}_rss_kb"] = mem[name].get("rss_kb")
        r["sipp_rc"] = uac_rc
        r["failed_checks"] = ",".join(k for k, v in checks.items() if not v) or "-"
        r["pass"] = int(all(checks.values()))
        self.results.append({"kind": "step", **r})
        self.emit("RESULT " + " ".join(f"{k}={fmt(v, k)}" for k, v in r.items()))
        return r

    # -- ladder for one scenario
    def ladder(self, scenario: str, rates: list[int]) -> dict[str, Any]:
        a = self.args
        best: dict[str, Any] | None = None
        first_fail: int | None = None
        noisy_steps: list[int] = []
        stall_steps: list[int] = []

        def step(rate: int) -> bool:
            nonlocal best, first_fail
            if not self.alive():
                raise SystemExit("a process under test is gone; stopping")
            r = self.run_step(scenario, rate)
            for _ in range(a.retry_noisy):
                if r["pass"] or not (r["noisy"] or r.get("store_stall")) or not self.alive():
                    break
                # this attempt; the last one is counted below
                (noisy_steps if r["noisy"] else stall_steps).append(rate)
                why = (f"other processes used {r['other_cpu_pct']:.0f}% CPU" if r["noisy"] else
                       f"the store stalled {r['stall_ms_store']:.0f} ms (SecantusDB's TTL sweep, every 60 s)")
                log(f"step failed while {why}: cooling down {a.fail_cooldown:.0f} s and repeating it")
                time.sleep(a.fail_cooldown)
                r = self.run_step(scenario, rate)
            if r["noisy"]:
                noisy_steps.append(rate)
            if r.get("store_stall"):
                stall_steps.append(rate)
            if r["pass"]:
                # the maximum is the highest passing rate below the first failing one (--full-ladder
                # goes on after a failure; a later pass above it does not count)
                if (best is None or rate > best["rate"]) and (first_fail is None or rate < first_fail):
                    best = r
                time.sleep(a.cooldown)
                return True
            first_fail = rate if first_fail is None else min(first_fail, rate)
            if self.alive():
                log(f"step failed ({r['failed_checks']}); cooling down {a.fail_cooldown:.0f} s")
                time.sleep(a.fail_cooldown)
            return False

        for rate in rates:
            if not step(rate) and not a.full_ladder:
                break
        lo = best["rate"] if best else 0
        for _ in range(0 if a.full_ladder else a.refine):
            if first_fail is None:
                break
            mid = round_rate((lo + first_fail) / 2)
            if mid <= lo or mid >= first_fail:
                break
            if step(mid):
                lo = mid
        m = {
            "scenario": scenario, "transport": a.transport, **self.auth_fields,
            "max_pass_rate": best["rate"] if best else 0,
            "first_fail_rate": first_fail,
            "cpu_us_per_op": best["cpu_us_per_op"] if best else None,
            **({"cpu_us_per_request": best.get("cpu_us_per_request") if best else None}
               if self.auth and scenario == "register" else {}),
            **({"cpu_pct_avg": best["cpu_pct_avg"] if best else None} if self.topo.single else {}),
            "rtt_ms_p99": best["rtt_ms_p99"] if best else None,
            "step_secs": a.step_secs,
            "noisy_steps": len(noisy_steps),
            **({} if self.topo.store is None else {"store_stall_steps": len(stall_steps)}),
        }
        if best is not None and not self.topo.single:
            for k in [f"{name}_cpu_us_per_op" for name in self.topo.nodes] + [
                    "store_cpu_us_per_op", "store_find_per_call", "store_ops_per_call", "store_us_per_find"]:
                if k in best:
                    m[k] = best[k]
        if scenario not in self.scenarios_without_hold:
            m["pause_ms"] = a.pause_ms
        self.results.append({"kind": "max", **m})
        self.emit("MAX " + " ".join(f"{k}={fmt(v, k)}" for k, v in m.items()))
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
        self.emit("MEMORY " + " ".join(f"{k}={fmt(v, k)}" for k, v in m.items()))
        return m


# --------------------------------------------------------------------------- the federated scenario

FED_DIR = BENCH_DIR / "federated"
#: issue 5's targets: federated calls/s >= this x the direct-call rate; store round-trips per call
TARGET_FED_RATIO = 0.5
TARGET_STORE_RT = 1.0


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def toml_dumps(doc: dict[str, Any]) -> str:
    """Enough TOML for the node configurations: tables, arrays of tables, scalars and lists."""
    lines: list[str] = []

    def is_table_array(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    def table(name: str, t: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in t.items() if not isinstance(v, dict) and not is_table_array(v))
        lines.append("")
        for k, v in t.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)
            elif is_table_array(v):
                for row in v:
                    lines.append(f"[[{name}.{k}]]")
                    lines.extend(f"{rk} = {_toml_value(rv)}" for rk, rv in row.items())
                    lines.append("")

    for name, t in doc.items():
        table(name, t)
    return "\n".join(lines)


def _python_tool(name: str) -> str | None:
    """A console script of the interpreter running this script (not a pyenv shim first on PATH)."""
    sibling = Path(sys.executable).with_name(name)
    return str(sibling) if sibling.exists() else shutil.which(name)


def _host_of(spec: str) -> tuple[str, str, int]:
    """``udp:127.0.0.11:5060`` -> ("udp", "127.0.0.11", 5060)."""
    proto, _, rest = spec.partition(":")
    host, _, port = rest.rpartition(":")
    return proto, host.strip("[]"), int(port)


def fed_node_config(src: Path, sip_port: int, bin_port: int, cachedb_url: str) -> dict[str, Any]:
    """A node configuration from ``bench/federated/<file>``: the listeners and the rows' ``url`` /
    ``sip_addr`` moved to the ports of this run, ``cachedb_url`` pointing at this run's store, the route
    path made absolute. Anything else as written."""
    import tomllib

    doc = tomllib.loads(src.read_text())
    node = doc.setdefault("node", {})
    node["listen"] = [f"{proto}:{host}:{sip_port}" for proto, host, _ in map(_host_of, node.get("listen", []))]
    route = node.get("route", "")
    if route and route.endswith(".py") and not os.path.isabs(route):
        node["route"] = str((src.parent / route).resolve())
    for row in doc.get("cluster", {}).get("nodes", []):
        ip = row["url"].split(":")[1]
        row["url"] = f"bin:{ip}:{bin_port}"
        host = str(row.get("sip_addr") or ip)
        if host.count(":") == 1:  # host:port (IPv4 or a name): keep the host
            host = host.split(":")[0]
        row["sip_addr"] = host if sip_port == 5060 else f"{host}:{sip_port}"
    fed = doc.setdefault("federation", {})
    # the file's query options (say ?minPoolSize=20) are kept, the store's (replicaSet=...) added
    file_query = str(fed.get("cachedb_url", "")).partition("?")[2]
    base, _, query = cachedb_url.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    options.update(parse_qsl(file_query, keep_blank_values=True))
    fed["cachedb_url"] = base + ("?" + urlencode(options) if options else "")
    return doc


def start_federated(a: argparse.Namespace, outdir: Path, children: Children) -> Topology:
    """Store, then nodes X (home) and Y (non-home): the topology of the ``federated`` scenario."""
    cfg_dir = Path(a.fed_config_dir)
    srcs = {"x": cfg_dir / "node-x.toml", "y": cfg_dir / "node-y.toml"}
    import tomllib

    raw = {name: tomllib.loads(p.read_text()) for name, p in srcs.items()}
    ips = {name: _host_of(doc["node"]["listen"][0])[1] for name, doc in raw.items()}
    for name, ip in ips.items():
        if not ip.startswith("127."):
            raise SystemExit(f"{srcs[name]}: node {name} must listen on loopback, got {ip}")
    freeswitch = raw["y"].get("route_params", {}).get("freeswitch") or []
    if not freeswitch or freeswitch != raw["x"].get("route_params", {}).get("freeswitch"):
        raise SystemExit(f"{cfg_dir}: both nodes need the same route_params.freeswitch (the bench UAC's address)")
    uac_ip = str(freeswitch[0]).split(":")[0]  # the bench binds IPv4 loopback addresses
    domains = raw["x"]["node"].get("domains") or []
    if not domains:
        raise SystemExit(f"{srcs['x']}: node.domains must name the users' domain")
    for ip in (uac_ip, a.fed_phone_ip):
        if not ip.startswith("127."):
            raise SystemExit(f"the bench only binds loopback addresses, got {ip}")

    node_ips = [ips["x"], ips["y"]]
    sip_port = a.fed_sip_port or free_port_on(node_ips, 0, 5060)
    bin_port = a.fed_bin_port or free_port_on(node_ips, socket.SOCK_STREAM, 5555 if sip_port != 5555 else 5556)
    log(f"federated: X {ips['x']}:{sip_port}, Y {ips['y']}:{sip_port}, cluster link port {bin_port}, "
        f"FreeSWITCH (UAC) {uac_ip}:{a.uac_port}, phones (UAS) {a.fed_phone_ip}:{a.uas_port}, domain {domains[0]}")

    store = Store(children, outdir, f"edgeproxy_bench_{os.getpid()}", "userlocation")
    if a.store_url:
        store.attach(a.store_url)
    else:
        exe = a.store_cmd or _python_tool("secantusd-py")
        if not exe:
            raise SystemExit("secantusd-py not found (pip install secantusdb) and no --store-url given")
        store.start(exe, a.start_timeout)

    twistd = _python_tool("twistd") or "twistd"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR.parent)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    nodes: dict[str, Proxy] = {}
    for name in ("x", "y"):
        cfg = outdir / f"node-{name}.toml"
        cfg.write_text(f"# generated by bench/load.py from {srcs[name]}\n\n"
                       + toml_dumps(fed_node_config(srcs[name], sip_port, bin_port, store.cachedb_url())))
        node = Proxy(ips[name], sip_port, a.transport, children, outdir, name=name, env=env, probe_max_forwards=0)
        nodes[name] = node
        node.start(f"{shlex.quote(twistd)} -n --pidfile= edgeproxy --config {shlex.quote(str(cfg))}", a.start_timeout)
    return Topology(nodes=nodes, entry={"direct": "x", "federated": "y"}, home="x", uac_ip=uac_ip,
                    uas_ip=a.fed_phone_ip, domain=domains[0], store=store)


def run_federated(a: argparse.Namespace, bench: Bench, ladders: list[str]) -> dict[str, Any]:
    """Preload the users on X, check the path, run the ladders, compare them."""
    topo = bench.topo
    assert topo.store is not None
    if not bench.bulk_register("preload", "u", a.users, a.preload_rate):
        raise SystemExit("preload registration failed: the federated scenario needs every user registered on X")
    home_ip = fed_sip_addr(topo.nodes["x"])
    deadline = time.monotonic() + 60
    n = -1
    while time.monotonic() < deadline:
        n = topo.store.count_homes(home_ip)
        if n >= a.users:
            break
        time.sleep(0.5)
    log(f"store: {n} records with home_ip {home_ip} (want {a.users})")
    if n < a.users:
        raise SystemExit("X did not publish every user to the store within 60 s")
    for scenario in ladders:
        if not bench.smoke(scenario):
            raise SystemExit(f"smoke calls ({scenario}) did not all succeed: see {bench.outdir}/smoke-{scenario}-*")
    time.sleep(1)
    maxes = {}
    for scenario in ladders:
        maxes[scenario] = bench.ladder(scenario, parse_rates(a.call_rates))
    return compare(bench, maxes)


def fed_sip_addr(node: Proxy) -> str:
    return node.host if node.port == 5060 else f"{node.host}:{node.port}"


def compare(bench: Bench, maxes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One COMPARE line per rate (direct vs federated), a FEDERATED verdict and a Markdown table."""
    steps: dict[tuple[str, int], dict[str, Any]] = {}
    for res in bench.results:
        if res.get("kind") == "step" and res["scenario"] in ("direct", "federated"):
            steps[(res["scenario"], res["rate"])] = res  # the last attempt of a repeated (noisy) step
    rates = sorted({rate for _, rate in steps})
    cols = [("achieved", "achieved"), ("p99_ms", "rtt_ms_p99"), ("pass", "pass"), ("noisy", "noisy"),
            ("x_cpu_us", "x_cpu_us_per_op"), ("y_cpu_us", "y_cpu_us_per_op"), ("store_cpu_us", "store_cpu_us_per_op"),
            ("find_per_call", "store_find_per_call"), ("find_per_ok_call", "store_find_per_ok_call"),
            ("stall_ms_x", "stall_ms_x"), ("stall_ms_y", "stall_ms_y"), ("stall_ms_store", "stall_ms_store"),
            ("failed_checks", "failed_checks")]
    header = ("| offered calls/s | direct: calls/s | p99 INVITE→200 ms | µs CPU X / Y / store per call | store finds/call "
              "| federated: calls/s | p99 INVITE→200 ms | µs CPU X / Y / store per call | store finds/call |")
    table = [header, "|---|---|---|---|---|---|---|---|---|"]
    for rate in rates:
        line: dict[str, Any] = {"rate": rate}
        cells = [str(rate)]
        for scen in ("direct", "federated"):
            r = steps.get((scen, rate))
            for short, key in cols:
                line[f"{scen}_{short}"] = r.get(key) if r else None
            if r is None:
                cells += ["—"] * 4
                continue
            mark = "" if r["pass"] else f" ✗ {r['failed_checks']}"
            mark += " (noisy)" if r["noisy"] else ""
            mark += " (store stall)" if r.get("store_stall") else ""
            cells += [f"{fmt(r['achieved'])}{mark}", fmt(r["rtt_ms_p99"]),
                      " / ".join(fmt(r.get(k)) for k in ("x_cpu_us_per_op", "y_cpu_us_per_op", "store_cpu_us_per_op")),
                      fmt(r.get("store_find_per_call"), "store_find_per_call")]
        bench.emit("COMPARE " + " ".join(f"{k}={fmt(v, k)}" for k, v in line.items()))
        table.append("| " + " | ".join(cells) + " |")
    md, fd = maxes.get("direct", {}), maxes.get("federated", {})
    v: dict[str, Any] = {
        "max_direct": md.get("max_pass_rate"), "direct_first_fail": md.get("first_fail_rate"),
        "max_federated": fd.get("max_pass_rate"), "federated_first_fail": fd.get("first_fail_rate"),
    }
    v["ratio"] = round(v["max_federated"] / v["max_direct"], 2) if v["max_federated"] is not None and v["max_direct"] else None
    # the ratio is exact only when the direct ladder found its limit
    v["ratio_bound"] = "exact" if md.get("first_fail_rate") else "direct_not_saturated"
    v["ratio_ok"] = int(v["ratio"] is not None and v["ratio"] >= TARGET_FED_RATIO)
    # store round-trips per call, over the passing steps (every call completed: per call placed and
    # per successful call are then the same)
    def finds_of(scen: str) -> list[float]:
        return [r["store_find_per_call"] for (s, _), r in steps.items()
                if s == scen and r["pass"] and r.get("store_find_per_call") is not None]

    finds, direct_finds = finds_of("federated"), finds_of("direct")
    v["store_find_per_call_min"] = min(finds) if finds else None
    v["store_find_per_call_max"] = max(finds) if finds else None
    v["direct_store_find_per_call_max"] = max(direct_finds) if direct_finds else None
    v["store_rt_ok"] = int(bool(finds) and all(abs(f - TARGET_STORE_RT) < 0.005 for f in finds))
    v["target_ratio"] = TARGET_FED_RATIO
    v["noisy_steps"] = sum(m.get("noisy_steps", 0) for m in maxes.values())
    v["store_stall_steps"] = sum(m.get("store_stall_steps", 0) for m in maxes.values())
    bench.emit("FEDERATED " + " ".join(f"{k}={fmt(x, k)}" for k, x in v.items()))
    for row in table:
        bench.emit(row)
    return v


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
