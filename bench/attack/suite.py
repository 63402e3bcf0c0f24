"""The attack suite of issue 16: starts ``twistd edgeproxy`` on loopback with the default
configuration plus ``[auth]`` and ``[pike] check_all`` and UDP, TCP and WS listeners, runs the attacks
of :mod:`attacks` against it one after the other, and prints what each measured (volume, replies,
RSS, log lines, tracebacks). Everything is bounded in count and time and stays on 127.0.0.0/8; the
node is stopped by its PID.

    python bench/attack/suite.py                       # the full run (about 10 minutes)
    python bench/attack/suite.py --scale 0.02          # a small one (what tests/test_attack_suite.py runs)
    python bench/attack/suite.py --tree /path/to/old   # the same attacks against another checkout
    python bench/attack/suite.py --json out.json --only fuzz_udp,amplification

``--scale`` multiplies every count and duration; ``--fuzz N`` sets the mutated messages per
transport (default 350,000 at scale 1: over a million in all).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import attacks  # noqa: E402
from legit import Legitimate  # noqa: E402
from target import Target  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# alice is the password-guessing target, bob registers beside the guesser, carol (REGISTERs and
# calls) and pbx (FreeSWITCH's stand-in, answering) are the concurrent legitimate SIPp run
USERS = {"alice": "correct-horse-7", "bob": "builder", "carol": "c4rol-s3cret", "pbx": "fs-trunk-9"}


def free_udp_tcp_port(host: str) -> int:
    """A port free for UDP and TCP (and TCP port + 1)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a, \
                        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b:
                    a.bind((host, port))
                    b.bind((host, port + 1))
                return port
            except OSError:
                continue
    raise SystemExit("no free port")


def ratio(reply_bytes: int, request_bytes: int) -> str:
    """Reply bytes over request bytes, as ``x0.0012`` ('--' when nothing was counted)."""
    return f"x{reply_bytes / request_bytes:.4g}" if request_bytes and reply_bytes >= 0 else "--"


def totals(results: list[dict]) -> dict:
    """The whole run's unauthenticated traffic -- every attack that counts bytes both ways (the
    password guessing counts requests, not bytes) -- and its worst log rate."""
    counted = [r for r in results if r["sent_bytes"]]
    sent = sum(r["sent_bytes"] for r in counted)
    replied = sum(r["reply_bytes"] for r in counted)
    return {"request_bytes": sent, "reply_bytes": replied, "reply_ratio": replied / sent if sent else None,
            "max_lines_per_source_s": max((r["max_lines_per_source_s"] for r in results), default=0.0)}


def table(results: list[dict]) -> str:
    head = ("attack", "sent", "sent MB", "replies", "reply MB", "reply/request bytes", "s",
            "RSS before→after (peak) MB", "log lines", "max lines/src/s", "tracebacks")
    rows = [head]
    for r in results:
        rows.append((r["attack"], str(r["sent"]), f"{r['sent_bytes'] / 1e6:.2f}", str(r["replies"]),
                     f"{r['reply_bytes'] / 1e6:.3f}", ratio(r["reply_bytes"], r["sent_bytes"]), f"{r['seconds']:g}",
                     f"{r['rss_before_kb'] / 1024:.0f}→{r['rss_after_kb'] / 1024:.0f} ({r['rss_peak_kb'] / 1024:.0f})",
                     str(r["log_lines"]), f"{r['max_lines_per_source_s']:g}", str(r["tracebacks"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in results:
        if r["notes"]:
            out.append(f"  {r['attack']}: " + "; ".join(f"{k}: {v}" for k, v in r["notes"].items()))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--fuzz", type=int, default=350_000, help="mutated messages per transport at scale 1")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the edgeproxy source tree to run")
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench" / "attack" / "run")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", default="", help="comma-separated attack names")
    ap.add_argument("--no-pike", action="store_true", help="leave [pike] out (to fuzz the routes, not pike)")
    ap.add_argument("--no-legit", action="store_true", help="no concurrent legitimate SIPp run")
    args = ap.parse_args()
    k = args.scale

    def n(x: float, minimum: int = 1) -> int:
        return max(minimum, int(x * k))

    extra = {"auth": {"users": USERS}}
    if not args.no_pike:
        extra["pike"] = {"check_all": True}
    port = free_udp_tcp_port(args.host)
    target = Target(args.tree.resolve(), args.workdir, args.host, port, extra)
    fuzz = args.fuzz
    plan = {
        "amplification": lambda: attacks.amplification(target, max(3.0, 34.0 * min(k, 1.0))),
        "fuzz_udp": lambda: attacks.fuzz_udp(target, n(fuzz), 600 * k + 10),
        "fuzz_tcp": lambda: attacks.fuzz_tcp(target, n(fuzz), 600 * k + 10),
        "fuzz_ws": lambda: attacks.fuzz_ws(target, n(fuzz), 600 * k + 10),
        "handshake_bomb": lambda: attacks.handshake_bomb(target, n(100, 4), max(2.0, 5.0 * min(k * 10, 1.0))),
        "state_flood": lambda: attacks.state_flood(target, n(10_000, 50), 60_000, max(2.0, 35.0 * min(k, 1.0))),
        "slowloris": lambda: attacks.slowloris(target, n(2000, 20), max(3.0, 30.0 * min(k, 1.0))),
        "password_guessing": lambda: attacks.password_guessing(target, n(100, 12), 5.0, "alice", USERS["alice"]),
    }
    only = [x for x in args.only.split(",") if x]
    results = []
    legit = Legitimate(args.workdir / "legit", f"{args.host}:{port}", USERS, rate=1.0, limit=n(1200, 300),
                       seconds=1200 * k + 300)
    legit_counts: dict = {}
    target.start()
    try:
        rss_start = target.rss_kb()
        if not args.no_legit:
            legit.start()
        for name, run in plan.items():
            if only and name not in only:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
            results.append(run().as_dict())
            if not target.running():
                print("the node died", file=sys.stderr)
                break
        if not args.no_legit:
            print(f"[{time.strftime('%H:%M:%S')}] stopping the legitimate SIPp run ...", file=sys.stderr, flush=True)
            legit_counts = legit.stop()
        summary = {"tree": str(args.tree), "scale": k, "rss_start_kb": rss_start,
                   "rss_end_kb": target.rss_kb() if target.running() else 0, "alive": target.running(),
                   "tracebacks": target.log().count("Traceback"), "log_lines": len(target.log().splitlines()),
                   "legitimate": legit_counts, "totals": totals(results), "results": results}
    finally:
        if not args.no_legit and not legit_counts:
            legit.stop()
        target.stop()
    print(table(results))
    print(f"node RSS {summary['rss_start_kb'] / 1024:.0f} MB at the start, {summary['rss_end_kb'] / 1024:.0f} MB at"
          f" the end; alive: {summary['alive']}; tracebacks in the log: {summary['tracebacks']};"
          f" log lines: {summary['log_lines']}")
    t = summary["totals"]
    print(f"unauthenticated traffic in all: {t['request_bytes']:,} request bytes, {t['reply_bytes']:,} reply bytes"
          f" ({ratio(t['reply_bytes'], t['request_bytes'])}); most log lines per source per second:"
          f" {t['max_lines_per_source_s']:g}")
    if legit_counts:
        print("concurrent legitimate SIPp run (digest REGISTERs and calls to the PBX, through the node):",
              "; ".join(f"{k}: {v}" for k, v in legit_counts.items()))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
