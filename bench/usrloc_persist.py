#!/usr/bin/env python3
"""REGISTER throughput with usrloc persistence on, next to memory only, on the same run (issue 12).

    python bench/usrloc_persist.py [--users 20000] [--rounds 2] [--timer-interval 5] [--no-mariadb]

For each mode -- ``memory`` (single-instance-no-db), ``write-back`` to SQLite, ``write-through`` to
SQLite, ``write-back`` to MariaDB's ``location`` table (mysql://root@127.0.0.1:3306/test, a table of
its own, dropped afterwards), ``full-sharing`` (node 127.0.0.11 replicating every change to a peer on
127.0.0.12) -- one ``twistd edgeproxy`` node (UDP) is started, ``--users``
fresh users register and then refresh once (CSeq 2) through a raw-UDP loader keeping ``--window``
(100) REGISTERs in flight (tests/support/registrations.py), and the node's CPU time is read from /proc before and after.
Each write-back interval flushes during the run (``--timer-interval``); the CPU time is read one
interval after the last REGISTER, so the flushes' cost is in the CPU per REGISTER. Modes alternate for
``--rounds`` rounds so machine noise hits them alike.

Output: one ``RESULT mode=... registers_per_s=... cpu_us_per_register=...`` line per run and a
``SUMMARY`` line per mode (median over rounds) with its ratio to memory-only. Only loopback is used;
every node is stopped by its own PID.

    python bench/usrloc_persist.py --flush-cost [--users 10000] [--rounds 3] [--no-mariadb]
    python bench/usrloc_persist.py --restart [--users 10000] [--rounds 3] [--late 50] [--no-mariadb]

Flush cost: the CPU a write-back flush costs the node per contact, measured in one process (see
:func:`flush_cost`): the steady figure behind write-back's REGISTER/s.

Restart (issue 12's acceptance, timed): a write-back node (SQLite, then MariaDB; ``timer_interval``
2 s) gets ``--users`` UDP registrations; once a flush has written them all (MI ``get_statistics``),
``--late`` more users register and the node is killed with SIGKILL before the next flush. The same
configuration is started again and probed with an OPTIONS every 10 ms: ``answered_ms`` is the time
from the spawn to the first answer (the node loads the table before it listens, so every loaded
contact is callable then); ``load_ms`` and its parts are the node's own log line. ``lost`` is how
many registrations the restarted node does not have (users + late - loaded), next to ``pending``,
the changes not yet written at the kill (``usrloc:db_pending_aors``). ``RESTART`` lines per run,
then ``SUMMARY`` medians.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

from processes import Children, Proxy, sip_probe  # noqa: E402
from procfs import free_port_on, log  # noqa: E402
from support.mi import mi_result  # noqa: E402
from support.registrations import Registration, register_many  # noqa: E402

HOST = "127.0.0.1"
X_IP, Y_IP = "127.0.0.11", "127.0.0.12"  # the full-sharing pair
args_window = 100  # REGISTERs in flight (--window)
DB_URL = "mysql://root@127.0.0.1:3306/test"


def config_text(port: int, mode: str, db: str, interval: float, host: str = HOST, cluster: str = "") -> str:
    text = f'[node]\nlisten = ["udp:{host}:{port}"]\nlog_level = "info"\n[registrar]\nmin_expires = 60\n'
    if mode == "full-sharing":
        return text + f'[usrloc]\nworking_mode_preset = "full-sharing-cluster"\n{cluster}'
    if mode != "memory":
        preset = ("single-instance-sql-write-back" if mode.startswith("write-back")
                  else "single-instance-sql-write-through")
        text += f'[usrloc]\nworking_mode_preset = "{preset}"\ndb_url = "{db}"\ntimer_interval = {interval}\n'
        if db.startswith("mysql"):
            text += f'table = "{mode.replace("-", "_")}_bench"\n'
    return text


def run(mode: str, users: int, interval: float, outdir: Path, children: Children) -> dict[str, float]:
    host = X_IP if mode == "full-sharing" else HOST
    port = free_port_on([host], socket.SOCK_DGRAM, 0)
    db = DB_URL if mode == "write-back-mariadb" else f"sqlite://{outdir}/{mode}-{port}.db"
    twistd = Path(sys.executable).parent / "twistd"
    peer = None
    cluster = ""
    if mode == "full-sharing":  # the node under test replicates everything to a peer, Y
        peer_port = free_port_on([Y_IP], socket.SOCK_DGRAM, 0)
        bins = {ip: free_port_on([ip], socket.SOCK_STREAM, 0) for ip in (X_IP, Y_IP)}
        rows = "".join(f'[[cluster.nodes]]\ncluster_id = 1\nnode_id = {n}\nurl = "bin:{ip}:{bins[ip]}"\n'
                       f'sip_addr = "{ip}:{p}"\nflags = "seed"\n'
                       for n, ip, p in ((1, X_IP, port), (2, Y_IP, peer_port)))
        peer_conf = outdir / f"peer-{peer_port}.toml"
        peer_conf.write_text(config_text(peer_port, mode, db, interval, Y_IP,
                                         f"[cluster]\nmy_node_id = 2\nping_interval = 0.5\n{rows}"))
        peer = Proxy(Y_IP, peer_port, "udp", children, outdir, name=f"peer-{peer_port}")
        peer.start(f"{twistd} -n --pidfile= edgeproxy --config {peer_conf}", 30)
        cluster = f"[cluster]\nmy_node_id = 1\nping_interval = 0.5\n{rows}"
    conf = outdir / f"{mode}-{port}.toml"
    conf.write_text(config_text(port, mode, db, interval, host, cluster))
    proxy = Proxy(host, port, "udp", children, outdir, name=f"{mode}-{port}")
    proxy.start(f"{twistd} -n --pidfile= edgeproxy --config {conf}", 30)
    if peer is not None:
        deadline = time.monotonic() + 10
        while "node 2 is UP" not in proxy.log_since(0) and time.monotonic() < deadline:
            time.sleep(0.1)
    try:
        regs = [Registration(f"b{i:06d}", f"sip:b{i:06d}@{HOST}:9") for i in range(users)]
        cpu0, t0 = proxy.cpu() or 0.0, time.monotonic()
        first = register_many((host, port), regs, window=args_window, timeout=300)
        for r in regs:
            r.cseq = 2
        second = register_many((host, port), regs, window=args_window, timeout=300)
        took = time.monotonic() - t0
        if mode not in ("memory", "full-sharing"):
            time.sleep(interval + 1.0)  # the flush of the last changes is part of their cost
        cpu = (proxy.cpu() or 0.0) - cpu0
        ok = first.ok + second.ok
        peer_cpu = peer.cpu() if peer is not None else None
    finally:
        proxy.stop()
        if peer is not None:
            peer.stop()
    flushes = proxy.log_since(0).count("usrloc: wrote")
    if mode == "write-back-mariadb":
        drop_bench_table()
    result = {"ok": ok, "sent": 2 * users, "seconds": took, "rate": ok / took, "cpu_us": cpu * 1e6 / max(ok, 1),
              "flushes": flushes}
    peer_note = f" peer_cpu_s={peer_cpu:.2f}" if peer_cpu is not None else ""
    log(f"RESULT mode={mode} registers={ok}/{2 * users} seconds={took:.2f} registers_per_s={result['rate']:.0f} "
        f"cpu_us_per_register={result['cpu_us']:.0f} write_back_flushes={flushes}{peer_note}")
    return result


def drop_bench_table() -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS `write_back_mariadb_bench`")
    conn.close()


_LOADED = re.compile(r"loaded (\d+) contacts .* in (\d+) ms \(read (\d+), bindings (\d+), table (\d+);")


def restart(backend: str, users: int, late: int, outdir: Path, children: Children) -> dict[str, float]:
    """One SIGKILL and restart of a write-back node holding ``users`` + ``late`` registrations."""
    mode = "write-back-mariadb" if backend == "mariadb" else "write-back"
    port = free_port_on([HOST], socket.SOCK_DGRAM, 0)
    mi_port = free_port_on([HOST], socket.SOCK_STREAM, 0)
    db = DB_URL if backend == "mariadb" else f"sqlite://{outdir}/restart-{port}.db"
    conf = outdir / f"restart-{backend}-{port}.toml"
    conf.write_text(config_text(port, mode, db, 2.0) + f'[mi]\nlisten = "{HOST}:{mi_port}"\n')
    mi = f"http://{HOST}:{mi_port}/mi"
    cmd = f"{Path(sys.executable).parent / 'twistd'} -n --pidfile= edgeproxy --config {conf}"
    try:
        first = Proxy(HOST, port, "udp", children, outdir, name=f"restart-{backend}-{port}-a")
        first.start(cmd, 30)
        regs = [Registration(f"r{i:06d}", f"sip:r{i:06d}@{HOST}:9") for i in range(users)]
        assert register_many((HOST, port), regs, window=args_window, timeout=300).ok == users
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a flush has written every one of them
            stats = mi_result(mi, "get_statistics", {"statistics": ["usrloc:"]})
            if stats["usrloc:db_pending_aors"] == 0 and stats["usrloc:db_written_contacts"] >= users:
                break
            time.sleep(0.05)
        lates = [Registration(f"late{i:05d}", f"sip:late{i:05d}@{HOST}:9") for i in range(late)]
        assert register_many((HOST, port), lates, timeout=60).ok == late
        pending = mi_result(mi, "get_statistics", {"statistics": ["usrloc:"]})["usrloc:db_pending_aors"]
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        children.forget(first.proc)

        second = Proxy(HOST, port, "udp", children, outdir, name=f"restart-{backend}-{port}-b")
        started = time.monotonic()
        second.proc = children.start(["bash", "-c", "exec " + cmd], cwd=Path.cwd(), stdout_path=second.log_path,
                                     start_new_session=True)
        while sip_probe(HOST, port, "udp", 0.01) is None:
            if second.proc.poll() is not None or time.monotonic() - started > 60:
                raise SystemExit(f"the restarted node did not answer (see {second.log_path})")
        answered = time.monotonic() - started
        line = _LOADED.search(second.log_since(0))
        assert line is not None, second.log_since(0)[-2000:]
        loaded, load_ms, read_ms, built_ms, table_ms = (int(g) for g in line.groups())
        second.stop()
    finally:
        if backend == "mariadb":
            drop_bench_table()
    result = {"answered_ms": answered * 1000, "load_ms": load_ms, "read_ms": read_ms, "bindings_ms": built_ms,
              "table_ms": table_ms, "loaded": loaded, "lost": users + late - loaded, "pending": pending}
    log(f"RESTART backend={backend} contacts={users + late} answered_ms={result['answered_ms']:.0f} "
        f"load_ms={load_ms} (read {read_ms}, bindings {built_ms}, table {table_ms}) loaded={loaded} "
        f"lost={result['lost']} pending_at_kill={pending} late={late}")
    return result


def alternate(rounds: int, names: list[str], prefix: str,
              one: Callable[[str, Path, Children], dict[str, float]]) -> dict[str, list[dict[str, float]]]:
    """``one(name, outdir, children)`` for every name, ``rounds`` times in turn (machine noise hits each
    alike); every process started is stopped at the end."""
    outdir = Path(tempfile.mkdtemp(prefix=prefix))
    children = Children()
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    try:
        for _ in range(rounds):
            for name in names:
                results[name].append(one(name, outdir, children))
    finally:
        children.stop_all()
    return results


def restarts(args: argparse.Namespace) -> int:
    backends = ["sqlite"] + ([] if args.no_mariadb else ["mariadb"])
    results = alternate(args.rounds, backends, "edgeproxy-usrloc-restart-",
                        lambda backend, outdir, children: restart(backend, args.users, args.late, outdir, children))
    for backend in backends:
        runs = results[backend]
        log(f"SUMMARY backend={backend} contacts={args.users + args.late} answered_ms="
            f"{statistics.median(r['answered_ms'] for r in runs):.0f} (max {max(r['answered_ms'] for r in runs):.0f})"
            f" load_ms={statistics.median(r['load_ms'] for r in runs):.0f} lost={[int(r['lost']) for r in runs]} "
            f"pending_at_kill={[int(r['pending']) for r in runs]}")
    return 0


def flush_cost(args: argparse.Namespace) -> int:
    """CPU of write-back flushes in this process (the node's side: the snapshot in the reactor, the rows
    and the driver's work in the worker thread, here run inline), per contact: ``--users`` AoRs saved,
    flushed, refreshed (CSeq 2), flushed again; best of ``--rounds``. Only the public API is used, so
    ``PYTHONPATH=<an older tree>`` measures that tree."""
    from twisted.internet.defer import maybeDeferred
    from twisted.internet.task import Clock

    from edgeproxy.location import Binding, ChangeJournal, InMemoryLocation
    from edgeproxy.sip.endpoint import Endpoint, Flow
    from edgeproxy.sip.uri import parse_uri
    from edgeproxy.usrloc import Persistence, open_table

    outdir = Path(tempfile.mkdtemp(prefix="edgeproxy-usrloc-flush-"))
    local = Endpoint("UDP", HOST, 5060)
    urls = [("sqlite", f"sqlite://{outdir}/flush.db")] + ([] if args.no_mariadb else [("mariadb", DB_URL)])
    for name, url in urls:
        best: dict[int, float] = {}
        for round_ in range(args.rounds):
            clock = Clock()
            clock.advance(time.time())
            journal = ChangeJournal()
            location = InMemoryLocation(clock, [journal])
            table = open_table(url, "write_back_mariadb_bench" if name == "mariadb" else f"flush{round_}")
            persistence = Persistence(location, journal, table, mode="write-back", timer_interval=60,
                                      use_domain=False, clock=clock, runner=maybeDeferred)
            persistence.load()
            for cseq in (1, 2):
                for i in range(args.users):
                    remote = Endpoint("UDP", HOST, 10000 + i % 50000)
                    aor = f"f{i:06d}"
                    location.replace(aor, [Binding(
                        aor=aor, uri=parse_uri(f"sip:{aor}@{HOST}:9"), expires_at=clock.seconds() + 3600,
                        call_id=f"c{i}@{HOST}", cseq=cseq, received=remote, flow=Flow(local, remote),
                        user_agent="bench", last_modified=clock.seconds())])
                cpu = time.process_time()
                done: list[object] = []
                persistence.flush().addBoth(done.append)
                while not done:  # the rows are made a slice per reactor turn
                    clock.advance(0)
                assert done[0] == args.users, done[0]
                spent = (time.process_time() - cpu) * 1e6 / args.users
                best[cseq] = min(best.get(cseq, spent), spent)
            table.close()
        if name == "mariadb":
            drop_bench_table()
        log(f"FLUSH backend={name} contacts={args.users} cpu_us_per_contact new={best[1]:.2f} "
            f"refresh={best[2]:.2f} (best of {args.rounds})")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timer-interval", type=float, default=5.0)
    ap.add_argument("--no-mariadb", action="store_true")
    ap.add_argument("--window", type=int, default=100,
                    help="REGISTERs in flight; keep it small enough that the node answers them within the "
                         "loader's 0.5 s retransmission timer, or retransmissions measure the loader")
    ap.add_argument("--restart", action="store_true", help="time a SIGKILL and restart instead (see above)")
    ap.add_argument("--late", type=int, default=50, help="--restart: users registered after the last flush")
    ap.add_argument("--flush-cost", action="store_true", help="CPU per contact of a flush, in this process")
    ap.add_argument("--modes", default="", help="only these modes (comma separated; memory is always run)")
    args = ap.parse_args()
    global args_window
    args_window = args.window
    if args.restart:
        return restarts(args)
    if args.flush_cost:
        return flush_cost(args)
    modes = ["memory", "write-back", "write-through", "full-sharing"] + ([] if args.no_mariadb else
                                                                        ["write-back-mariadb"])
    if args.modes:
        modes = ["memory"] + [m for m in args.modes.split(",") if m in modes and m != "memory"]
    results = alternate(args.rounds, modes, "edgeproxy-usrloc-bench-",
                        lambda mode, outdir, children: run(mode, args.users, args.timer_interval, outdir, children))
    base_rate = statistics.median(r["rate"] for r in results["memory"])
    base_cpu = statistics.median(r["cpu_us"] for r in results["memory"])
    for mode in modes:
        rate = statistics.median(r["rate"] for r in results[mode])
        cpu = statistics.median(r["cpu_us"] for r in results[mode])
        log(f"SUMMARY mode={mode} registers_per_s={rate:.0f} ({100 * rate / base_rate:.0f} % of memory-only) "
            f"cpu_us_per_register={cpu:.0f} ({100 * base_cpu / cpu:.0f} % of memory-only's throughput per CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
