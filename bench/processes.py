"""The processes a load benchmark starts and watches: children stopped by their own PID, the proxy under
test (started, probed with OPTIONS, accounted from /proc) and the shared store of the federated scenario."""

from __future__ import annotations

import os
import random
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from procfs import addr_is_bound, free_port_on, log, memory_snapshot, process_tree, read_stat, tree_cpu_seconds

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
