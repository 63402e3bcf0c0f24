#!/usr/bin/env python3
"""Full-sharing bulk sync: how long a (re)starting node takes to pull N contacts from its peer, and
the bytes per contact on the cluster link (issue 12: 100,000 contacts in under 5 s).

    python bench/usrloc_sync.py [--contacts 100000]

Starts node Y (127.0.0.12) with ``working_mode_preset = "full-sharing-cluster"`` alone, registers
``--contacts`` users on it over UDP (raw REGISTER loader, tests/support/registrations.py), then
starts node X (127.0.0.11), which asks Y for its table as soon as the cluster link is up. Reported,
from the two nodes' log lines: the donor's time to serialise and send, X's time from its request to
the end marker, contacts, bytes and bytes per contact, the time from X's start to the sync's end, and
the CPU seconds X (start-up included) and Y used meanwhile -- on a shared machine the CPU time says
more than the wall time -- the load average, and what the heartbeat saw during the sync: pings
retried, nodes declared DOWN (flow control keeps both at 0), and which node asked which for its
table (only X should: Y is synced).
Loopback only; both nodes are stopped by their own PID.
"""

from __future__ import annotations

import argparse
import re
import socket
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

X_IP, Y_IP = "127.0.0.11", "127.0.0.12"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=100_000)
    args = ap.parse_args()
    outdir = Path(tempfile.mkdtemp(prefix="edgeproxy-usrloc-sync-"))
    ports = {ip: (free_port_on([ip], socket.SOCK_DGRAM, 0), free_port_on([ip], socket.SOCK_STREAM, 0))
             for ip in (X_IP, Y_IP)}
    rows = "".join(f'[[cluster.nodes]]\ncluster_id = 1\nnode_id = {n}\nurl = "bin:{ip}:{ports[ip][1]}"\n'
                   f'sip_addr = "{ip}:{ports[ip][0]}"\nflags = "seed"\n' for n, ip in ((1, X_IP), (2, Y_IP)))
    twistd = Path(sys.executable).parent / "twistd"
    children = Children()
    nodes = {}
    try:
        for n, ip in ((2, Y_IP), (1, X_IP)):
            conf = outdir / f"node{n}.toml"
            conf.write_text(f'[node]\nlisten = ["udp:{ip}:{ports[ip][0]}"]\nlog_level = "info"\n'
                            f'[usrloc]\nworking_mode_preset = "full-sharing-cluster"\n'
                            f'[cluster]\nmy_node_id = {n}\nping_interval = 0.5\nping_timeout = 1.0\n{rows}')
            nodes[n] = (conf, Proxy(ip, ports[ip][0], "udp", children, outdir, name=f"node{n}"))
        conf, y = nodes[2]
        y.start(f"{twistd} -n --pidfile= edgeproxy --config {conf}", 30)
        regs = [Registration(f"s{i:06d}", f"sip:s{i:06d}@127.0.0.1:{10000 + i % 50000}") for i in range(args.contacts)]
        out = register_many((Y_IP, ports[Y_IP][0]), regs, window=500, timeout=900)
        log(f"registered {out.ok} of {args.contacts} on Y in {out.seconds:.1f} s")
        conf, x = nodes[1]
        started = time.monotonic()
        y_cpu0 = y.cpu() or 0.0
        x.start(f"{twistd} -n --pidfile= edgeproxy --config {conf}", 30)
        deadline = time.monotonic() + 300
        line = ""
        x_cpu_asked = None
        while time.monotonic() < deadline:
            text = x.log_since(0)
            if x_cpu_asked is None and "for its location table" in text:
                x_cpu_asked = x.cpu() or 0.0  # start-up done: what X uses from now on is the sync's
            found = [text for text in text.splitlines() if "usrloc: synced" in text]
            if found:
                line = found[0]
                break
            time.sleep(0.05)
        after_start = time.monotonic() - started
        x_cpu, y_cpu = x.cpu() or 0.0, (y.cpu() or 0.0) - y_cpu0
        time.sleep(1.0)  # a DOWN would come within ping_timeout after the sync's last chunk
        logs = {"X": x.log_since(0), "Y": y.log_since(0)}
        heartbeat = " ".join(f"{name}: {text.count('is DOWN')} DOWN, {text.count('not answering')} retries, "
                             f"{text.count('for its location table')} sync requests"
                             for name, text in logs.items())
        donor = next((t for t in logs["Y"].splitlines() if "usrloc: sent" in t), "")
        log(f"DONOR {donor.split('] ', 1)[-1]}")
        log(f"SYNCED {line.split('] ', 1)[-1]}")
        m = re.search(r"synced (\d+) contacts .* in (\d+) ms \((\d+) bytes, (\d+) bytes per contact", line)
        if m:
            log(f"RESULT contacts={m.group(1)} sync_ms={m.group(2)} bytes={m.group(3)} bytes_per_contact={m.group(4)} "
                f"x_start_to_synced_s={after_start:.2f} x_cpu_s={x_cpu:.2f} "
                f"x_sync_cpu_s={x_cpu - (x_cpu_asked or 0):.2f} "
                f"y_cpu_s={y_cpu:.2f} (X's x_cpu_s includes twistd's start-up, x_sync_cpu_s is from its request on "
                f"(50 ms polling); Y's its donation) loadavg={Path('/proc/loadavg').read_text().split()[0]}")
            log(f"HEARTBEAT {heartbeat}")
        else:
            log(f"RESULT no sync seen within 300 s (see {outdir})")
    finally:
        for _, proxy in nodes.values():
            proxy.stop()
        children.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
