"""Memory per idle registered WSS connection (the issue's target: 10,000 connections, ≤ 40 KB each).

Starts an edgeproxy WSS listener in a child process (loopback only), then from this process opens N
WebSocket-over-TLS connections with the ``sip`` subprotocol (autobahn's Twisted client, at most
``--concurrency`` handshakes at a time), sends one REGISTER on each and waits for its 200, lets them
sit idle, and reads the server's RSS (``/proc/PID/status`` VmRSS, after a ``gc.collect()`` in the
server). Reports (RSS with N connections - RSS with one) / N.

    python bench/ws_memory.py                      # N = 2000, bare transport (a sink answers 200)
    python bench/ws_memory.py -n 10000             # raises RLIMIT_NOFILE to what is needed
    python bench/ws_memory.py -n 10000 --node      # the whole node: registrar + location table too
    python bench/ws_memory.py --groups X25519:P-256  # classical key exchange only (see TlsSettings.groups)
    python bench/ws_memory.py --trim --trace       # how much is freed heap, and where Python memory goes

With OpenSSL's default groups the hybrid post-quantum X25519MLKEM768 is negotiated, and OpenSSL keeps
each client's ML-KEM public key (~7.8 KB) for the life of the connection. The transport manager swaps
a connection's TLS memory BIOs for empty ones after its handshake and after each burst of traffic
(``edgeproxy/transport/tls_memory.py``; sweeps every 10 s), hence the default ``--idle`` of 15 s.

Measured here (2 cores, ``-n 10000 --node``): 35.5 KiB per connection with the default groups,
29.1 KiB with ``--groups X25519:P-256`` (before the BIO release: 40.5 and 32.6 KiB).

Every wait is bounded (``--timeout``, default 600 s overall); the server is stopped (by its PID only)
however the run ends. Certificates are made at run time in a temporary directory.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- server (child process) --------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> None:
    raise_nofile(args.connections + 1024)
    if args.trace:
        import tracemalloc

        tracemalloc.start(1)
    from twisted.internet import reactor, stdio
    from twisted.protocols.basic import LineReceiver

    from edgeproxy.sip.endpoint import Destination
    from edgeproxy.sip.message import Request
    from edgeproxy.transport import TransportManager, parse_listen
    from edgeproxy.transport.tls import TlsSettings
    from edgeproxy.transport.ws import WsSettings

    tls = TlsSettings(certificate=args.cert, key=args.key, groups=args.groups)
    ws = WsSettings(ping_interval=args.ping_interval, ping_timeout=10.0)
    state: dict[str, Any] = {}

    if args.node:
        from edgeproxy.config import Config
        from edgeproxy.service import build_node

        running = build_node(Config(), reactor)
        manager = running.transports
        manager.tls_settings, manager.ws_settings = tls, ws
        manager.max_connections = args.connections + 1024
        manager.idle_timeout = None
        state["running"] = running

        def start() -> Any:
            return running.start(["wss:127.0.0.1:0"])
    else:
        class Answer:
            def message_received(self, message: Any, flow: Any) -> None:
                if isinstance(message, Request):
                    manager.send(Destination(flow.remote, flow), message.make_response(200)).addErrback(lambda f: None)

            def flow_closed(self, flow: Any) -> None:
                pass

            def malformed_received(self, error: Any, flow: Any, size: int) -> bool:
                return True

        manager = TransportManager(reactor, max_connections=args.connections + 1024, idle_timeout=None,
                                   tls=tls, ws=ws)

        def start() -> Any:
            manager.start(Answer())
            return manager.listen(parse_listen("wss:127.0.0.1:0"))

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            if line.strip() in (b"rss", b"trim"):
                gc.collect()
                if line.strip() == b"trim":  # how much of the RSS is freed heap glibc kept
                    import ctypes

                    ctypes.CDLL("libc.so.6").malloc_trim(0)
                if args.trace and "snapshot" not in state:
                    import tracemalloc

                    state["snapshot"] = tracemalloc.take_snapshot()
                self.sendLine(f"RSS {rss_kib()} {manager.connection_count}".encode())
            elif line.strip() == b"top":  # with --trace: where the Python memory is
                import tracemalloc

                snap = tracemalloc.take_snapshot()
                diff = snap.compare_to(state["snapshot"], "lineno")
                for stat in diff[:45]:
                    sys.stderr.write(f"{stat}\n")
                sys.stderr.write(f"traced growth {sum(d.size_diff for d in diff)} bytes\n")
            elif line.strip() == b"quit":
                reactor.stop()

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    def started(_: Any) -> None:
        port = manager.listeners[0].bound.port
        stdio.StandardIO(Control())
        sys.stdout.write(f"PORT {port}\n")
        sys.stdout.flush()

    reactor.callWhenRunning(lambda: start().addCallback(started).addErrback(
        lambda f: (f.printTraceback(), reactor.stop())))
    reactor.run()


# -- clients (this process) --------------------------------------------------------------------------
def register(i: int, port: int) -> bytes:
    user = f"u{i:06d}"
    host = f"{user}.invalid"
    return (
        f"REGISTER sip:127.0.0.1:{port};transport=ws SIP/2.0\r\n"
        f"Via: SIP/2.0/WSS {host};branch=z9hG4bK{i:08d}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag=t{i}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: reg-{i}@bench\r\n"
        f"CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{host};transport=ws>;expires=3600\r\n"
        f"Supported: path, outbound\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def run_clients(port: int, n: int, concurrency: int, ca: str, deadline: float, idle: float,
                measure: Any) -> tuple[int, int, float]:
    """Open ``n`` connections, register each, wait ``idle`` seconds, then call ``measure()`` while
    they are all still open (stopping the reactor closes them)."""
    from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
    from twisted.internet import reactor, ssl
    from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

    creator = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(Path(ca).read_bytes()))
    stats = {"ok": 0, "failed": 0, "started": 0, "inflight": 0}
    keep: list[Any] = []
    t0 = time.monotonic()

    class Client(WebSocketClientProtocol):
        index = 0
        counted = False

        def onOpen(self) -> None:
            self.sendMessage(register(self.index, port), False)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.count(payload.startswith(b"SIP/2.0 200"))

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            self.count(False)

        def count(self, ok: bool) -> None:
            if self.counted:
                return
            self.counted = True
            stats["ok" if ok else "failed"] += 1
            stats["inflight"] -= 1
            pump()

    factory = WebSocketClientFactory(f"wss://localhost:{port}/", protocols=["sip"], reactor=reactor)
    factory.protocol = Client
    factory.setProtocolOptions(openHandshakeTimeout=60, autoPingInterval=0)
    endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30))

    def failed(reason: Any) -> None:
        stats["failed"] += 1
        stats["inflight"] -= 1
        pump()

    def pump() -> None:
        while stats["started"] < n and stats["inflight"] < concurrency:
            i = stats["started"]
            stats["started"] += 1
            stats["inflight"] += 1
            d = endpoint.connect(factory)

            def made(proto: Any, i: int = i) -> None:
                proto.index = i
                keep.append(proto)

            d.addCallbacks(made, failed)
        if stats["ok"] + stats["failed"] >= n and "done" not in stats:
            stats["done"] = time.monotonic() - t0
            print(f"  {stats['ok']} registered, {stats['failed']} failed in {stats['done']:.1f} s; "
                  f"idle for {idle:.0f} s", flush=True)
            reactor.callLater(max(0.0, min(idle, deadline - time.monotonic())), finish)

    def finish() -> None:
        try:
            measure(stats["ok"])
        finally:
            reactor.stop()

    def give_up() -> None:
        if reactor.running:
            print(f"  deadline reached with {stats['ok']} registered", flush=True)
            reactor.stop()

    reactor.callWhenRunning(pump)
    reactor.callLater(max(deadline - time.monotonic(), 1.0), give_up)
    reactor.run()
    return stats["ok"], stats["failed"], stats.get("done", time.monotonic() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--connections", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight at once")
    parser.add_argument("--idle", type=float, default=15.0,
                        help="seconds to let connections sit before measuring (the node releases idle TLS "
                        "buffers every 10 s)")
    parser.add_argument("--ping-interval", type=float, default=30.0)
    parser.add_argument("--groups", default="", help='TLS key-exchange groups, e.g. "X25519:P-256" '
                        '(default: OpenSSL\'s, with the post-quantum hybrid X25519MLKEM768 first)')
    parser.add_argument("--node", action="store_true", help="run the whole node (registrar, location table)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--trim", action="store_true", help="also measure after malloc_trim(0) in the server")
    parser.add_argument("--trace", action="store_true", help="server: tracemalloc; print the top lines")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return 0

    n = max(1, min(args.connections, 60000))
    limit = raise_nofile(n + 1024)
    if limit < n + 64:
        print(f"RLIMIT_NOFILE is {limit}: too low for {n} connections", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    from support.tls_ca import TestCA

    with tempfile.TemporaryDirectory(prefix="ws-memory-") as tmp:
        ca = TestCA(tmp)
        server_cert = ca.issue("server", dns=["localhost"], ips=["127.0.0.1"])
        cmd = [sys.executable, __file__, "--serve", "-n", str(n), "--cert", server_cert.cert, "--key",
               server_cert.key, "--ping-interval", str(args.ping_interval), "--groups", args.groups]
        cmd += (["--node"] if args.node else []) + (["--trace"] if args.trace else [])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert server.stdout is not None and server.stdin is not None
            line = server.stdout.readline()
            if not line.startswith("PORT "):
                print(f"server did not start: {line!r}", file=sys.stderr)
                return 1
            port = int(line.split()[1])

            def server_rss() -> tuple[int, int]:
                server.stdin.write("rss\n")  # type: ignore[union-attr]
                server.stdin.flush()  # type: ignore[union-attr]
                reply = server.stdout.readline().split()  # type: ignore[union-attr]
                return int(reply[1]), int(reply[2])

            empty, _ = server_rss()
            # one connection first: imports, TLS contexts and caches warm, the baseline
            ok, failed, _ = run_clients_once(port, 1, 1, ca.cert, deadline)
            base, _ = server_rss()
            print(f"server RSS: {empty} KiB listening, {base} KiB with one connection", flush=True)
            print(f"opening {n} WSS connections (sip subprotocol, one REGISTER each) ...", flush=True)

            def measure(registered: int) -> None:
                loaded, count = server_rss()
                per = (loaded - base) * 1024 / max(registered, 1)
                mode = "node (registrar + location)" if args.node else "transport only"
                mode += f", TLS groups {args.groups or 'OpenSSL default'}"
                print(f"server RSS: {loaded} KiB with {count} connections open ({mode})")
                print(f"RSS per idle WSS connection: {per / 1024:.1f} KiB ({per:.0f} bytes) "
                      f"over {registered} connections")
                print(f"this client process: {rss_kib()} KiB", flush=True)
                if args.trim:
                    server.stdin.write("trim\n")  # type: ignore[union-attr]
                    server.stdin.flush()  # type: ignore[union-attr]
                    trimmed = int(server.stdout.readline().split()[1])  # type: ignore[union-attr]
                    print(f"after malloc_trim(0): {trimmed} KiB, {(trimmed - base) / max(registered, 1):.1f} KiB "
                          f"per connection (freed heap glibc had kept)", flush=True)
                if args.trace:
                    server.stdin.write("top\n")  # type: ignore[union-attr]
                    server.stdin.flush()  # type: ignore[union-attr]
                    time.sleep(3)

            ok, failed, secs = run_clients(port, n, args.concurrency, ca.cert, deadline, args.idle, measure)
            return 0 if ok == n else 1
        finally:
            try:
                if server.poll() is None and server.stdin is not None:
                    server.stdin.write("quit\n")
                    server.stdin.flush()
                    server.wait(10)
            except Exception:
                pass
            if server.poll() is None:
                os.kill(server.pid, signal.SIGKILL)
                server.wait()


_pending_plan: dict[str, Any] = {}


def run_clients_once(port: int, n: int, concurrency: int, ca: str, deadline: float) -> tuple[int, int, float]:
    """The baseline connection, opened before the reactor runs (it runs once per process): a plain
    blocking TLS + WebSocket handshake and one REGISTER with the standard library."""
    import socket
    import ssl as std_ssl

    from support.ws_client import ws_frame, ws_upgrade

    context = std_ssl.create_default_context(cafile=ca)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    tls = context.wrap_socket(sock, server_hostname="localhost")
    try:
        head = ws_upgrade(tls, "localhost", port)
    except ConnectionError:
        return 0, 1, 0.0
    if not head.startswith(b"HTTP/1.1 101"):
        return 0, 1, 0.0
    tls.sendall(ws_frame(register(999999, port)))
    data = head.split(b"\r\n\r\n", 1)[1]
    while b"SIP/2.0" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            return 0, 1, 0.0
        data += chunk
    _pending_plan["first"] = tls  # keep it open for the whole run
    return (1, 0, 0.0) if b"SIP/2.0 200" in data else (0, 1, 0.0)


if __name__ == "__main__":
    sys.exit(main())
