"""/proc accounting for the load benchmarks: CPU of a process tree, its memory (RSS, PSS), UDP receive
drops per port, per-thread run time, free ports, a CPU sampler and a stall probe (bench/load.py,
bench/wss_load.py)."""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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

