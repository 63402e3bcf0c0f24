"""Running under systemd: ``packaging/edgeproxy.service`` (Type=notify, restart on failure, a user of
its own, the example configuration path) and the node's side of ``Type=notify``: ``READY=1`` over
``$NOTIFY_SOCKET`` only once every listener is bound (``edgeproxy/sdnotify.py``).

The readiness tests play systemd with a Unix datagram socket of their own (abstract namespace, the
``@`` form systemd itself uses) and run the real ``twistd -n edgeproxy``. The unit is checked with
``systemd-analyze verify`` where systemd is installed (not a server: skipped with the reason without it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeproxy.sdnotify import sd_notify
from support.ports import free_port

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "packaging" / "edgeproxy.service"
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_says_what_the_issue_asks() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["edgeproxy"] and s["Group"] == ["edgeproxy"]
    (exec_start,) = s["ExecStart"]
    assert exec_start.split() == ["/opt/edgeproxy/.venv/bin/twistd", "--nodaemon", "--pidfile=", "--logfile=-",
                                  "edgeproxy", "--config", "/etc/edgeproxy/edgeproxy.toml"]
    sysusers = (REPO / "packaging" / "edgeproxy.sysusers.conf").read_text()
    assert any(line.split()[:2] == ["u", "edgeproxy"] for line in sysusers.splitlines() if line and line[0] != "#")


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (a systemd host has it: apt-get install systemd)")
    twistd = Path(sys.executable).with_name("twistd")
    assert twistd.exists(), twistd
    # the unit as installed, but with this environment's twistd: verify checks that ExecStart exists
    unit = tmp_path / "edgeproxy.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgeproxy/.venv/bin/twistd", str(twistd)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_sd_notify_without_systemd_sends_nothing() -> None:
    assert sd_notify("READY=1", {}) is False
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": "@edgeproxy-nobody-" + secrets.token_hex(6)}) is False  # logged


class FakeSystemd:
    """The receiving end of ``$NOTIFY_SOCKET``: a datagram socket in the abstract namespace."""

    def __init__(self) -> None:
        self.name = "@edgeproxy-test-" + secrets.token_hex(8)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float) -> float:
        """Receive until a datagram holds ``line``; when (monotonic) it came."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                raise AssertionError(f"no {line!r} within {timeout} s; got {self.messages}") from None
            if line in self.messages[-1].split("\n"):
                return time.monotonic()

    def close(self) -> None:
        self.sock.close()


def options_ok(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
        s.sendto((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKsd1\r\n"
                  "Max-Forwards: 70\r\nFrom: <sip:sd@127.0.0.1>;tag=sd\r\nTo: <sip:127.0.0.1>\r\n"
                  "Call-ID: sd-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
                 ("127.0.0.1", port))
        return s.recv(65535).startswith(b"SIP/2.0 200 ")


def start(tmp_path: Path, systemd: FakeSystemd, *listen: str) -> subprocess.Popen[str]:
    env = dict(os.environ, NOTIFY_SOCKET=systemd.name)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    args = [a for spec in listen for a in ("-l", spec)]
    return subprocess.Popen(TWISTD + ["-n", "--pidfile=", "edgeproxy", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_ready_only_once_every_listener_is_bound_then_stopping(tmp_path: Path) -> None:
    systemd = FakeSystemd()
    udp, tcp = free_port(), free_port()
    node = start(tmp_path, systemd, f"udp:127.0.0.1:{udp}", f"tcp:127.0.0.1:{tcp}")
    try:
        systemd.wait_for("READY=1", timeout=30)
        # at READY both listeners are already there: no wait, no retry
        assert options_ok(udp)
        with socket.create_connection(("127.0.0.1", tcp), timeout=2):
            pass
        assert f"STATUS=listening on udp:127.0.0.1:{udp}, tcp:127.0.0.1:{tcp}" in systemd.messages[-1].split("\n")
        node.send_signal(signal.SIGTERM)
        systemd.wait_for("STOPPING=1", timeout=15)
        # twistd ends by the signal it was stopped with; systemd counts SIGTERM as a clean stop
        assert node.wait(15) in (0, -signal.SIGTERM)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        systemd.close()


def test_a_node_that_cannot_bind_never_says_ready(tmp_path: Path) -> None:
    systemd = FakeSystemd()
    port = free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", port))
    try:
        node = start(tmp_path, systemd, f"tcp:127.0.0.1:{free_port()}", f"udp:127.0.0.1:{port}")
        output, _ = node.communicate(timeout=30)
        assert node.returncode == 1, output
        systemd.sock.settimeout(0.2)
        try:
            while True:
                systemd.messages.append(systemd.sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert not any("READY=1" in m.split("\n") for m in systemd.messages), systemd.messages
    finally:
        holder.close()
        systemd.close()
