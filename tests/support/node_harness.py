"""Run edgeproxy nodes as ``twistd`` subprocesses, for end-to-end tests on the loopback interface.

* :func:`edgeproxy_node` starts ``twistd -n edgeproxy --config FILE`` on a free port with short
  timers (:data:`TEST_TIMERS`), waits until it answers an OPTIONS (or logs that it listens), and stops
  it by PID; :func:`spawn_twistd` starts one from a configuration file of the caller's, not waited for.
* :func:`toml_text` writes a configuration; :class:`EdgeproxyNode` is the running node (its log,
  stop, kill).

The SIPp half of the end-to-end harness is :mod:`.sipp_harness`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pytest

from .ports import LOOPBACK, free_port

__all__ = ["REPO", "TEST_TIMERS", "EdgeproxyNode", "edgeproxy_node", "spawn_twistd", "toml_text", "twistd_argv",
           "read_log", "options_probe"]

REPO = Path(__file__).resolve().parents[2]


def read_log(path: Path) -> str:
    """The text of a log file a subprocess writes ("" until it exists; undecodable bytes replaced)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


#: Short transaction timers for tests (timer B/F = 64*T1 = 6.4 s; timer C = 4 s).
TEST_TIMERS: dict[str, Any] = {"t1": 0.1, "t2": 0.4, "t4": 0.5, "timer_c": 4.0}


def _toml_key(key: str) -> str:
    """A bare key when TOML allows one, else a quoted one (``"alice@example.com"``)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table, e.g. a [[cluster.nodes]] row in a list
        return "{" + ", ".join(f"{_toml_key(key)} = {_toml_value(v)}" for key, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_text(config: Mapping[str, Mapping[str, Any]]) -> str:
    """A TOML document of ``{section: {key: value}}``: scalars, lists, and dicts as inline tables
    (so ``{"cluster": {"nodes": [{"node_id": 1, ...}, ...]}}`` writes the node rows)."""
    lines: list[str] = []
    for section, table in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    return "\n".join(lines)


def twistd_argv() -> list[str]:
    """twistd of the interpreter running the tests (not whatever ``twistd`` is first on PATH)."""
    sibling = Path(sys.executable).with_name("twistd")
    if sibling.exists():
        return [str(sibling)]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


def options_probe(host: str, port: int, transport: str, timeout: float) -> bool:
    """Whether a SIP OPTIONS sent to host:port gets any response within ``timeout``."""
    n = time.monotonic_ns()
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout)
        try:
            if transport == "udp":
                s.bind((LOOPBACK, 0))
            else:
                s.connect((host, port))
            local_port = s.getsockname()[1]
            request = (
                f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/{transport.upper()} {LOOPBACK}:{local_port};branch=z9hG4bK-probe{n};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:probe@{LOOPBACK}>;tag=probe{n}\r\n"
                f"To: <sip:{host}:{port}>\r\n"
                f"Call-ID: probe-{n}@{LOOPBACK}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            if transport == "udp":
                s.sendto(request, (host, port))
            else:
                s.sendall(request)
            return s.recv(65535).startswith(b"SIP/2.0 ")
        except OSError:
            return False


@dataclass
class EdgeproxyNode:
    """A running ``twistd -n edgeproxy`` subprocess."""

    host: str
    port: int
    transports: tuple[str, ...]
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        """``host:port``, the remote SIPp takes."""
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return read_log(self.log_path)

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL by PID: a crash, no clean shutdown (nothing unpublished, no goodbyes)."""
        if self.running():
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        return self.process.returncode

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM by PID (twistd stops the reactor and the services), SIGKILL after ``grace``."""
        if self.running():
            try:
                os.kill(self.process.pid, signal.SIGTERM)
                self.process.wait(grace)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def spawn_twistd(config_path: Path, host: str, port: int, transports: Sequence[str], *, cwd: Path,
                 log_path: Path, netns: str | None = None) -> EdgeproxyNode:
    """Start ``twistd -n --pidfile= edgeproxy --config FILE`` (as an operator runs it) from this
    source tree (``PYTHONPATH``, so an installed copy cannot shadow it), output to ``log_path``; not
    waited for. ``netns``: inside that network namespace (``ip netns exec`` execs: the PID is twistd's)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    argv = (["ip", "netns", "exec", netns] if netns else []) + twistd_argv() + [
        "-n", "--pidfile=", "edgeproxy", "--config", str(config_path)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT)
    return EdgeproxyNode(host, port, tuple(transports), process, config_path, log_path)


@contextmanager
def edgeproxy_node(
    workdir: str | os.PathLike[str],
    *,
    config: Mapping[str, Mapping[str, Any]] | None = None,
    transports: Sequence[str] = ("udp", "tcp"),
    port: int | None = None,
    route: str | None = None,
    log_level: str = "debug",
    startup_timeout: float = 20.0,
    host: str = LOOPBACK,
    netns: str | None = None,
) -> Iterator[EdgeproxyNode]:
    """Run an edgeproxy node for the duration of the ``with`` block.

    The node listens on ``host``:``port`` (127.0.0.1 and a free port by default; a cluster test puts
    its nodes on 127.0.0.11, 127.0.0.12, ...) for each of ``transports``, with
    :data:`TEST_TIMERS`; ``config`` adds or replaces keys (``{"registrar": {"min_expires": 10}}``).
    twistd runs from this source tree (``PYTHONPATH``), so an installed copy cannot shadow it. The
    node is ready when it answers an OPTIONS or logs that it listens; if it exits first, the test
    fails with its log. ``netns`` runs it inside that network namespace (``ip netns exec``, which
    execs: the PID is twistd's); ready is then only the log line -- no probe is sent from outside.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(LOOPBACK if netns else host)
    sections: dict[str, dict[str, Any]] = {
        "node": {"listen": [f"{t}:{host}:{port}" for t in transports], "log_level": log_level},
        "timers": dict(TEST_TIMERS),
    }
    if route is not None:
        sections["node"]["route"] = route
    for section, table in (config or {}).items():
        sections.setdefault(section, {}).update(table)
    config_path = workdir / "edgeproxy.toml"
    config_path.write_text(toml_text(sections), encoding="utf-8")
    log_path = workdir / "edgeproxy.log"

    node = spawn_twistd(config_path, host, port, transports, cwd=workdir, log_path=log_path, netns=netns)
    process = node.process
    try:
        deadline = time.monotonic() + startup_timeout
        probe = "udp" if "udp" in transports else transports[0]
        while True:
            if not node.running():
                pytest.fail(f"edgeproxy exited with status {process.returncode} while starting:\n"
                            f"{' '.join(process.args)}\n{node.log()[-4000:]}", pytrace=False)
            if "edgeproxy listening on" in node.log() or (netns is None and options_probe(host, port, probe, 0.2)):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"edgeproxy did not answer OPTIONS on {probe}:{node.address} within "
                            f"{startup_timeout}s:\n{node.log()[-4000:]}", pytrace=False)
            time.sleep(0.1)
        yield node
    finally:
        node.stop()
