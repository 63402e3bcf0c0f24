"""What the asyncio reactor costs the SIP hot path: a UDP echo measured under each reactor.

``python bench/reactor_bench.py [-n 100000] [--window 32] [reactor ...]`` starts, for
each reactor (``epoll``, ``asyncio``, and ``asyncio-uvloop`` when uvloop is installed), a Twisted UDP
echo server in a child process, drives it from a plain-socket client in this process (``window``
datagrams outstanding, then one sent per one received), and prints the server's CPU time per datagram
(user + system, ``getrusage``, from the first datagram to the last) and the wall-clock time per
datagram; then the same in ping-pong (window 1: one reactor wake-up per datagram, the worst case). The federation store needs the asyncio reactor (PyMongo's
``AsyncMongoClient`` runs on an asyncio loop), so this is the number to weigh against it.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

__all__ = ["main"]

_SERVER = r"""
import resource, sys
kind = sys.argv[1]
if kind.startswith("asyncio"):
    import asyncio
    if kind == "asyncio-uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor
    asyncioreactor.install(loop)
elif kind == "epoll":
    from twisted.internet import epollreactor
    epollreactor.install()
elif kind == "poll":
    from twisted.internet import pollreactor
    pollreactor.install()
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

total = int(sys.argv[2])

class Echo(DatagramProtocol):
    count = 0
    start = None
    def datagramReceived(self, data, addr):
        if self.count == 0:
            self.start = resource.getrusage(resource.RUSAGE_SELF)
        self.count += 1
        self.transport.write(data, addr)
        if self.count == total:
            end = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (end.ru_utime - self.start.ru_utime) + (end.ru_stime - self.start.ru_stime)
            sys.stdout.write(f"{cpu!r}\n")
            sys.stdout.flush()
            self.count = 0

port = reactor.listenUDP(0, Echo(), interface="127.0.0.1")
sys.stdout.write(f"{port.getHost().port} {type(reactor).__name__}\n")
sys.stdout.flush()
reactor.run()
"""

_PAYLOAD = (b"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-bench\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n"
            b"Call-ID: bench@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def _drive(port: int, total: int, window: int) -> float:
    """Send ``total`` datagrams keeping ``window`` outstanding; the wall-clock seconds it took."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.connect(("127.0.0.1", port))
    s.settimeout(5.0)
    sent = received = 0
    t0 = time.perf_counter()
    while sent < min(window, total):
        s.send(_PAYLOAD)
        sent += 1
    while received < total:
        s.recv(4096)
        received += 1
        if sent < total:
            s.send(_PAYLOAD)
            sent += 1
    elapsed = time.perf_counter() - t0
    s.close()
    return elapsed


def run_one(kind: str, total: int, window: int) -> dict[str, float | str]:
    """Measure one reactor: µs per datagram of server CPU and of wall-clock time, with ``window``
    datagrams outstanding (``cpu_us``, ``wall_us``) and in ping-pong (``rtt_cpu_us``, ``rtt_us``)."""
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, kind, str(total)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port_s, name = proc.stdout.readline().split()
        port = int(port_s)
        _drive(port, total, window)  # warm-up round
        proc.stdout.readline()
        wall = _drive(port, total, window)
        cpu = float(proc.stdout.readline())
        rtt = _drive(port, total, 1)
        rtt_cpu = float(proc.stdout.readline())
        return {"reactor": name, "cpu_us": cpu / total * 1e6, "wall_us": wall / total * 1e6,
                "rtt_cpu_us": rtt_cpu / total * 1e6, "rtt_us": rtt / total * 1e6}
    finally:
        proc.terminate()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100000, help="datagrams per measurement")
    parser.add_argument("--window", type=int, default=32, help="datagrams outstanding")
    parser.add_argument("--repeat", type=int, default=3, help="runs per reactor (the best is shown)")
    parser.add_argument("reactors", nargs="*", default=None)
    args = parser.parse_args(argv)
    kinds = args.reactors or ["epoll", "asyncio"]
    if not args.reactors:
        try:
            import uvloop  # noqa: F401
            kinds.append("asyncio-uvloop")
        except ImportError:
            pass
    print(f"UDP echo, {args.n} datagrams of {len(_PAYLOAD)} bytes, window {args.window}; "
          f"best of {args.repeat}; server CPU per datagram is the cost that matters")
    for kind in kinds:
        runs = [run_one(kind, args.n, args.window) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["cpu_us"])
        pp = min(runs, key=lambda r: r["rtt_cpu_us"])
        print(f"{kind:15} {best['reactor']:24} window {args.window}: cpu {best['cpu_us']:5.1f} µs/dgram, "
              f"wall {best['wall_us']:5.1f} µs/dgram | ping-pong: cpu {pp['rtt_cpu_us']:5.1f} µs/dgram, "
              f"rtt {pp['rtt_us']:5.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
