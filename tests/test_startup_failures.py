"""A node that cannot start ends its process with status 1 and one line saying why -- in the foreground
and as a daemon -- so that a supervisor (systemd, a container runtime) does not take it for running.

Each case runs the real ``twistd edgeproxy`` as an operator does; every run is bounded (5 s to exit),
and afterwards no process of the run is left (its pid file is gone, nothing runs from its directory).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ports import free_port

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 5.0  # seconds a failing start may take to exit


def twistd(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    argv = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]
    started = time.monotonic()
    result = subprocess.run(argv + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    return result, time.monotonic() - started


def left_running(directory: Path) -> list[str]:
    """Processes whose command line names ``directory`` (the run's own pid/log/config files)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(directory) in cmdline and int(pid) != os.getpid():
            out.append(f"{pid}: {cmdline}")
    return out


@pytest.fixture
def taken_udp_port() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that another socket holds for the length of the test."""
    port = free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", port))
    try:
        yield port
    finally:
        holder.close()


def assert_one_line_failure(result: subprocess.CompletedProcess[str], took: float, reason: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert took < DEADLINE, f"took {took:.1f} s to exit"
    assert f"edgeproxy: cannot start: {reason}" in output, output
    assert "Traceback" not in output, output


def test_port_taken_foreground(tmp_path: Path, taken_udp_port: int) -> None:
    result, took = twistd("-n", "--pidfile=", "edgeproxy", "-l", f"udp:127.0.0.1:{taken_udp_port}", cwd=tmp_path)
    assert_one_line_failure(result, took, f"cannot listen on 127.0.0.1:{taken_udp_port}: Address already in use")
    assert left_running(tmp_path) == []


def test_port_taken_daemon(tmp_path: Path, taken_udp_port: int) -> None:
    pidfile, logfile = tmp_path / "edge.pid", tmp_path / "edge.log"
    result, took = twistd(f"--pidfile={pidfile}", f"--logfile={logfile}", "edgeproxy",
                          "-l", f"udp:127.0.0.1:{taken_udp_port}", cwd=tmp_path)
    assert result.returncode == 1 and took < DEADLINE, (result.stdout, result.stderr, took)
    # twistd's parent prints what its daemonised child reports, the reason included
    assert f"cannot listen on 127.0.0.1:{taken_udp_port}: Address already in use" in result.stderr
    # the daemonised child exits on its own right after reporting: give it until the deadline (a
    # loaded machine), then nothing of the run may be left
    deadline = time.monotonic() + DEADLINE
    while (pidfile.exists() or left_running(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists()
    assert left_running(tmp_path) == []
    assert "cannot start: cannot listen" in logfile.read_text()


def test_address_not_on_this_host(tmp_path: Path) -> None:
    """192.0.2.1 (TEST-NET-1) is on no interface here: binding fails, nothing is sent."""
    port = free_port()
    result, took = twistd("-n", "--pidfile=", "edgeproxy", "-l", f"tcp:192.0.2.1:{port}", cwd=tmp_path)
    assert_one_line_failure(result, took, f"cannot listen on 192.0.2.1:{port}: Cannot assign requested address")


def test_second_listener_taken_after_the_first_bound(tmp_path: Path, taken_udp_port: int) -> None:
    """The first listener binds, the second cannot: the node still exits (not half up)."""
    first = free_port()
    result, took = twistd("-n", "--pidfile=", "edgeproxy", "-l", f"tcp:127.0.0.1:{first}",
                          "-l", f"udp:127.0.0.1:{taken_udp_port}", cwd=tmp_path)
    assert_one_line_failure(result, took, f"cannot listen on 127.0.0.1:{taken_udp_port}: Address already in use")


def test_cluster_table_unreachable_exits_after_the_reactor_started(tmp_path: Path) -> None:
    """The node table comes from a database that refuses connections: found only once the reactor
    runs (the query is asynchronous), the failure still ends the process with status 1."""
    port = free_port()
    closed = free_port()  # nobody listens there: the connection is refused at once
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[node]\nlisten = ["udp:127.0.0.1:{port}"]\n'
        f'[cluster]\nmy_node_id = 1\ndb_url = "mysql://root@127.0.0.1:{closed}/opensips"\n')
    result, took = twistd("-n", "--pidfile=", "edgeproxy", "--config", str(config), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and took < DEADLINE + 5, (output, took)
    assert "edgeproxy: cannot start:" in output and str(closed) in output, output
    assert left_running(tmp_path) == []


def test_sip_addr_that_reaches_no_listener(tmp_path: Path) -> None:
    """The issue's second node on one host: SIP moved off 5060, its row's sip_addr left without the
    port. It would start and every call to it would time out; it refuses to start instead."""
    port = free_port("127.0.0.12")
    config = tmp_path / "node-y.toml"
    config.write_text(
        f'[node]\nlisten = ["udp:127.0.0.12:{port}"]\n'
        '[cluster]\nmy_node_id = 2\n'
        '[[cluster.nodes]]\ncluster_id = 1\nnode_id = 1\nurl = "bin:127.0.0.11"\nsip_addr = "127.0.0.11"\n'
        '[[cluster.nodes]]\ncluster_id = 1\nnode_id = 2\nurl = "bin:127.0.0.12"\nsip_addr = "127.0.0.12"\n')
    result, took = twistd("-n", "--pidfile=", "edgeproxy", "--config", str(config), cwd=tmp_path)
    # refused while the options are read, as every configuration error: the line is the whole output
    assert result.returncode == 1 and took < DEADLINE, (result.stdout, result.stderr, took)
    assert (result.stdout + result.stderr).strip() == (
        "config: cluster.nodes (node_id 2) sip_addr: '127.0.0.12' matches no UDP listener of this node: other nodes "
        f"send to 127.0.0.12:5060 (node.listen UDP: udp:127.0.0.12:{port}); write the port: \"127.0.0.12:{port}\"")


def test_usrloc_database_unreachable_exits(tmp_path: Path) -> None:
    """Write-back persistence whose location table cannot be read: the node must not come up empty
    (it would answer as if nobody were registered), it exits 1 naming the database."""
    port = free_port()
    closed = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[node]\nlisten = ["udp:127.0.0.1:{port}"]\n'
        f'[usrloc]\ndb_mode = 2\ndb_url = "mysql://root@127.0.0.1:{closed}/opensips"\n')
    result, took = twistd("-n", "--pidfile=", "edgeproxy", "--config", str(config), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and took < DEADLINE + 5, (output, took)
    assert "edgeproxy: cannot start: usrloc: cannot load the location table:" in output, output
    assert str(closed) in output and "Traceback" not in output, output
    assert left_running(tmp_path) == []
