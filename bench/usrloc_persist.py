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
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

from processes import Children, Proxy  # noqa: E402
from procfs import free_port_on, log  # noqa: E402

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
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=True)
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS `write_back_mariadb_bench`")
        conn.close()
    result = {"ok": ok, "sent": 2 * users, "seconds": took, "rate": ok / took, "cpu_us": cpu * 1e6 / max(ok, 1),
              "flushes": flushes}
    peer_note = f" peer_cpu_s={peer_cpu:.2f}" if peer_cpu is not None else ""
    log(f"RESULT mode={mode} registers={ok}/{2 * users} seconds={took:.2f} registers_per_s={result['rate']:.0f} "
        f"cpu_us_per_register={result['cpu_us']:.0f} write_back_flushes={flushes}{peer_note}")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timer-interval", type=float, default=5.0)
    ap.add_argument("--no-mariadb", action="store_true")
    ap.add_argument("--window", type=int, default=100,
                    help="REGISTERs in flight; keep it small enough that the node answers them within the "
                         "loader's 0.5 s retransmission timer, or retransmissions measure the loader")
    args = ap.parse_args()
    global args_window
    args_window = args.window
    modes = ["memory", "write-back", "write-through", "full-sharing"] + ([] if args.no_mariadb else
                                                                        ["write-back-mariadb"])
    outdir = Path(tempfile.mkdtemp(prefix="edgeproxy-usrloc-bench-"))
    children = Children()
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    try:
        for _ in range(args.rounds):
            for mode in modes:
                results[mode].append(run(mode, args.users, args.timer_interval, outdir, children))
    finally:
        children.stop_all()
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
