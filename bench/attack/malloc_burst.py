"""Memory after a burst, in-process: does the node give back what a burst of big requests took?

A :class:`~edgeproxy.node.Node` on a ``task.Clock`` (no sockets) takes ``--count`` INVITEs of
``--size`` octets answered statefully (``send_reply(486)``: each transaction lives until Timer H),
then the clock runs past Timer H so every transaction ends, and the garbage collector runs. RSS is
read from /proc at the start, at the peak, after the burst has ended, and after glibc's
``malloc_trim(0)``; with ``--variants`` the same run is repeated in child processes under the glibc
tunables operators use (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``)
and a table is printed. The time one ``malloc_trim(0)`` takes is printed too (what calling it
would cost the reactor: the node does not call it, see bench/README.md "Memory held by a burst").

    python bench/attack/malloc_burst.py --variants [--count 10000] [--size 60000]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parents[1]))  # PYTHONPATH (another checkout) first
sys.path.insert(0, str(HERE))

VARIANTS: list[tuple[str, dict[str, str]]] = [
    ("glibc defaults", {}),
    ("MALLOC_ARENA_MAX=2", {"MALLOC_ARENA_MAX": "2"}),
    ("MALLOC_MMAP_THRESHOLD_=131072", {"MALLOC_MMAP_THRESHOLD_": "131072"}),
    ("MALLOC_TRIM_THRESHOLD_=131072", {"MALLOC_TRIM_THRESHOLD_": "131072"}),
    ("MMAP_THRESHOLD_ + TRIM_THRESHOLD_ 131072 + ARENA_MAX=2",
     {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}),
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_run(count: int, size: int) -> dict[str, float]:
    from state_flood import SOURCE, CountingSender, invite, send_reply_route
    from twisted.internet.task import Clock

    from edgeproxy.location import InMemoryLocation
    from edgeproxy.node import Node
    from edgeproxy.proxy.settings import ProxySettings
    from edgeproxy.registrar import Registrar, RegistrarSettings
    from edgeproxy.sip import parse_datagram

    clock = Clock()
    clock.advance(1000)
    node = Node(clock, CountingSender(), Registrar(InMemoryLocation(clock), RegistrarSettings(), clock),
                send_reply_route(), ProxySettings(domains=("example.com",)))
    gc.collect()
    out = {"start": rss_mb()}
    for i in range(count):
        message = parse_datagram(invite(i, size))
        assert message is not None
        node.message_received(message, SOURCE)
    out["peak"] = rss_mb()
    for _ in range(int(40 / 0.25)):
        clock.advance(0.25)
    del node
    gc.collect()
    out["after"] = rss_mb()
    libc = ctypes.CDLL("libc.so.6")
    started = time.perf_counter()
    libc.malloc_trim(0)
    out["trim_ms"] = (time.perf_counter() - started) * 1000
    out["after_trim"] = rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=60_000)
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--json", action="store_true", help="one run, its numbers as JSON (used by --variants)")
    args = ap.parse_args()
    if not args.variants:
        result = one_run(args.count, args.size)
        print(json.dumps(result) if args.json else result)
        return
    rows = []
    for name, env in VARIANTS:
        child = subprocess.run([sys.executable, __file__, "--count", str(args.count), "--size", str(args.size),
                                "--json"], env={**os.environ, **env}, capture_output=True, text=True, check=True)
        r = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append((name, r))
        print(f"{name}: {r}", file=sys.stderr)
    print(f"{args.count} INVITEs of {args.size} octets answered statefully, every transaction ended:")
    print("| glibc setting | RSS start | peak | after the burst | after malloc_trim(0) | trim took |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['start']:.0f} MB | {r['peak']:.0f} MB | {r['after']:.0f} MB | {r['after_trim']:.0f} MB"
              f" | {r['trim_ms']:.1f} ms |")


if __name__ == "__main__":
    main()
