"""The node under attack and the attacker's tools: a ``twistd edgeproxy`` started on loopback from a
given source tree (this one, or an older checkout for "before" numbers), stopped by its PID; its RSS
and log read from /proc and its log file; a WebSocket connection from a chosen source address, made
with the tests' blocking client (``tests/support/ws_client.py``: RFC 6455 handshake with the ``sip``
subprotocol, masked frames).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from support.sipp_harness import toml_text  # noqa: E402  (the tests' TOML writer)
from support.ws_client import ws_frame, ws_upgrade  # noqa: E402  (the one blocking WebSocket client)

__all__ = ["Target", "ws_connect", "ws_frame"]


class Target:
    """One ``twistd -n edgeproxy`` on ``host``, UDP and WS on ``port``, TCP on ``port + 1``."""

    def __init__(self, tree: Path, workdir: Path, host: str, port: int, extra: dict[str, dict[str, Any]]) -> None:
        self.tree, self.workdir, self.host, self.port = tree, workdir, host, port
        self.tcp_port = port + 1
        workdir.mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "node": {"listen": [f"udp:{host}:{port}", f"tcp:{host}:{port + 1}", f"ws:{host}:{port}"],
                     "log_level": "info", "domains": [host]},
        }
        for name, table in extra.items():
            sections.setdefault(name, {}).update(table)
        self.config = workdir / "edgeproxy.toml"
        self.config.write_text(toml_text(sections))
        self.log_path = workdir / "edgeproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(self.tree), PYTHONUNBUFFERED="1")
        twistd = str(Path(sys.executable).with_name("twistd"))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([twistd, "-n", "--pidfile=", "edgeproxy", "--config", str(self.config)],
                                         cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"edgeproxy exited during start-up:\n{self.log()[-3000:]}")
            if self.options_answered(0.3):
                return
        raise SystemExit(f"edgeproxy did not answer within {timeout} s:\n{self.log()[-3000:]}")

    def options_answered(self, wait: float, source: str = "127.0.0.1") -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            p = s.getsockname()[1]
            s.sendto((f"OPTIONS sip:{self.host}:{self.port} SIP/2.0\r\nVia: SIP/2.0/UDP {source}:{p};"
                      f"branch=z9hG4bK-probe{time.monotonic_ns()}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{source}>;"
                      f"tag=p\r\nTo: <sip:{self.host}>\r\nCall-ID: probe{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                      "Content-Length: 0\r\n\r\n").encode(), (self.host, self.port))
            s.settimeout(wait)
            try:
                return s.recv(65535).startswith(b"SIP/2.0 ")
            except OSError:
                return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            return proc.wait(5)


# -- WebSocket (RFC 6455) on a plain socket ---------------------------------------------------------

def ws_connect(host: str, port: int, source: str, timeout: float = 3.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect((host, port))
    head = ws_upgrade(s, host, port)
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return s
