"""Run SIPp and edgeproxy nodes as subprocesses, for end-to-end tests on the loopback interface.

* :class:`Sipp` runs one scenario of ``tests/sipp/`` in the foreground (:meth:`Sipp.run`, bounded by
  ``-m`` calls and ``-timeout``) or in the background (:meth:`Sipp.start`, e.g. a callee UAS, stopped
  by PID). Every run writes its message, error, statistics and screen logs into a work directory
  and returns a :class:`SippResult` to assert on.
* :func:`edgeproxy_node` (:mod:`.node_harness`'s, importable from here too) starts ``twistd -n
  edgeproxy --config FILE`` on a free port with short timers, waits until it answers an OPTIONS (or
  logs that it listens), and stops it by PID.
* :func:`require_sipp` skips a test when SIPp is missing -- except under ``CI=true``, where a
  missing SIPp is a failure, so CI can never pass by running nothing.

Scenario keys: each scenario's header comment lists ``key NAME DEFAULT  description`` lines. The
harness passes ``-key NAME VALUE`` for every one of them (SIPp refuses a scenario that uses an
unset key), taking the caller's value or the default. A default may name ``{remote_host}``,
``{remote_port}``, ``{local_ip}``, ``{local_port}`` or an earlier key, e.g. ``{expires}``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from .node_harness import REPO, TEST_TIMERS, EdgeproxyNode, edgeproxy_node, read_log, spawn_twistd, toml_text
from .ports import LOOPBACK, bindable, free_port

__all__ = [
    "REPO",
    "SCENARIOS",
    "LOOPBACK",
    "sipp_path",
    "require_sipp",
    "free_port",
    "scenario_keys",
    "Sipp",
    "SippProcess",
    "SippResult",
    "SipMessage",
    "EdgeproxyNode",
    "edgeproxy_node",
    "spawn_twistd",
    "TEST_TIMERS",
    "toml_text",
]

SCENARIOS = Path(__file__).resolve().parents[1] / "sipp"

#: SIPp ``-t`` modes for our transport names (one socket for UDP, one connection for TCP).
TRANSPORT_MODES = {"udp": "u1", "tcp": "t1"}


# -- finding SIPp ---------------------------------------------------------------------------------


def sipp_path() -> str | None:
    """The SIPp binary: ``$SIPP`` if set, else ``sipp`` on PATH; None when there is none."""
    configured = os.environ.get("SIPP")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("sipp")


def require_sipp() -> str:
    """The SIPp binary, or skip the calling test -- or fail it when ``CI=true``."""
    path = sipp_path()
    if path is not None:
        return path
    reason = "SIPp is not installed (Debian/Ubuntu: apt-get install -y sip-tester; or set SIPP=/path/to/sipp)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


def _port_in_use(transport: str, host: str, port: int) -> bool:
    """Whether some socket is bound to (listening on, for TCP) ``host:port``.

    Read from ``/proc/net`` so that the check cannot steal the port from the process starting up;
    elsewhere fall back to trying to bind it.
    """
    table = Path("/proc/net/udp" if transport == "udp" else "/proc/net/tcp")
    if table.exists():
        wanted = {f"{socket.htonl(int.from_bytes(socket.inet_aton(h), 'big')):08X}:{port:04X}"
                  for h in (host, "0.0.0.0")}
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] in wanted and (transport == "udp" or fields[3] == "0A"):
                return True
        return False
    return not bindable(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM, host, port)


# -- scenarios ------------------------------------------------------------------------------------

_KEY_LINE = re.compile(r"^\s*key\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<default>.*?)(?:\s{2,}.*)?$", re.M)


def scenario_path(scenario: str | os.PathLike[str]) -> Path:
    """``"uas_answer"`` or ``"uas_answer.xml"`` names a file of ``tests/sipp/``; a path is a path."""
    p = Path(scenario)
    if p.parent == Path(".") and not p.exists():
        p = SCENARIOS / (p.name if p.suffix == ".xml" else f"{p.name}.xml")
    if not p.is_file():
        raise FileNotFoundError(f"no SIPp scenario {scenario!r} (looked at {p})")
    return p


def scenario_keys(scenario: str | os.PathLike[str]) -> dict[str, str]:
    """The keys a scenario declares in its header comment, with their (unformatted) defaults."""
    text = scenario_path(scenario).read_text(encoding="iso-8859-1")
    comment = text.split("-->", 1)[0]
    return {m["name"]: m["default"].strip() for m in _KEY_LINE.finditer(comment)}


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SipMessage:
    """One entry of SIPp's ``-trace_msg`` log: ``direction`` is ``"sent"`` or ``"received"``."""

    direction: str
    transport: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def status(self) -> int | None:
        """The status code of a response, None for a request."""
        m = re.match(r"SIP/2\.0 (\d{3})", self.first_line)
        return int(m.group(1)) if m else None

    @property
    def method(self) -> str | None:
        """The method of a request, None for a response."""
        return None if self.status is not None else self.first_line.split(" ", 1)[0]

    def header(self, name: str) -> list[str]:
        """Values of header ``name`` (case-insensitive; compact forms are not expanded)."""
        head = self.text.split("\n\n", 1)[0]
        prefix = name.lower() + ":"
        return [line.split(":", 1)[1].strip() for line in head.split("\n")[1:] if line.lower().startswith(prefix)]


_MSG_ENTRY = re.compile(
    r"^-{20,} [^\n]*\n(?P<transport>\w+) message (?P<dir>sent|received)[^\n]*\n\n(?P<text>.*?)(?=^-{20,} |\Z)",
    re.M | re.S,
)


def parse_message_log(text: str) -> list[SipMessage]:
    """Split a SIPp ``-trace_msg`` log into messages (line ends normalised to ``\\n``)."""
    text = text.replace("\r\n", "\n")
    return [SipMessage(m["dir"], m["transport"], m["text"].strip("\n") + "\n") for m in _MSG_ENTRY.finditer(text)]


@dataclass
class SippResult:
    """What one SIPp run left behind. ``returncode`` follows SIPp: 0 every call succeeded, 1 at
    least one failed, 97 stopped by an internal command, 99 no call processed, 255/254 fatal;
    negative when it died of a signal. ``stopped``: the harness signalled it (see
    :meth:`SippProcess.stop`), so calls may have been cut short -- check the counters.

    Calls handled by an out-of-call scenario (``-oocsf``) are not in SIPp's statistics: assert on
    :attr:`messages` for those."""

    name: str
    argv: list[str]
    returncode: int
    workdir: Path
    stats: dict[str, str] = field(default_factory=dict)
    message_log: str = ""
    errors: str = ""
    screen: str = ""
    logs: str = ""
    output: str = ""
    timed_out: bool = False
    stopped: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def counter(self, name: str) -> int:
        """A cumulative counter of the final statistics row, e.g. ``counter("SuccessfulCall")``."""
        value = self.stats.get(f"{name}(C)", self.stats.get(name, "0"))
        try:
            return int(float(value))
        except ValueError:
            return 0

    @property
    def successful_calls(self) -> int:
        return self.counter("SuccessfulCall")

    @property
    def failed_calls(self) -> int:
        return self.counter("FailedCall")

    @property
    def retransmissions(self) -> int:
        return self.counter("Retransmissions")

    @property
    def messages(self) -> list[SipMessage]:
        return parse_message_log(self.message_log)

    def received(self) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "received"]

    def sent(self) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "sent"]

    def describe(self, tail: int = 3000) -> str:
        """A report for assertion messages: command, exit status, counters, errors, screen."""
        parts = [
            f"sipp {self.name}: exit status {self.returncode}"
            f"{' (timed out)' if self.timed_out else ''}{' (stopped by the harness)' if self.stopped else ''}, "
            f"{self.successful_calls} successful / {self.failed_calls} failed calls",
            "argv: " + " ".join(self.argv),
            f"logs in {self.workdir}",
        ]
        if self.errors.strip():
            parts.append("errors:\n" + self.errors.strip()[-tail:])
        if self.screen.strip():
            parts.append("screen:\n" + self.screen.strip()[-tail:])
        elif self.output.strip():
            parts.append("output:\n" + self.output.strip()[-tail:])
        return "\n".join(parts)

    def assert_ok(self) -> "SippResult":
        assert self.ok, self.describe()
        return self


def _last_stats(text: str) -> dict[str, str]:
    rows = [line for line in text.splitlines() if line.strip()]
    if len(rows) < 2:
        return {}
    header = rows[0].rstrip(";").split(";")
    values = rows[-1].rstrip(";").split(";")
    return dict(zip(header, values))


# -- running SIPp ---------------------------------------------------------------------------------


@dataclass
class _Files:
    messages: Path
    errors: Path
    stats: Path
    screen: Path
    logs: Path
    output: Path


class SippProcess:
    """A SIPp running in the background; stop it (by PID) with :meth:`stop` or await :meth:`wait`."""

    def __init__(self, name: str, argv: list[str], files: _Files, workdir: Path, port: int, transport: str,
                 host: str = LOOPBACK) -> None:
        self.name = name
        self.host = host
        self.argv = argv
        self.files = files
        self.workdir = workdir
        self.port = port
        self.transport = transport
        self._out = open(files.output, "wb")
        self.process = subprocess.Popen(
            argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT
        )
        self._result: SippResult | None = None
        self.stopped = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_listening(self, timeout: float = 10.0) -> "SippProcess":
        """Return once SIPp has bound its port (checked by failing to bind it ourselves)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"sipp exited before listening:\n{self.result().describe()}")
            if _port_in_use(self.transport, self.host, self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sipp did not listen on {self.transport}:{self.host}:{self.port} within {timeout}s")

    def wait_for_message(self, pattern: str, timeout: float = 10.0) -> SipMessage:
        """Wait until the message log holds a message whose text matches ``pattern`` (a regex)."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            for message in parse_message_log(read_log(self.files.messages)):
                if regex.search(message.text):
                    return message
            if time.monotonic() >= deadline or not self.running():
                raise AssertionError(
                    f"sipp {self.name}: no message matching {pattern!r}\n{self.stop().describe()}"
                )
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> SippResult:
        """Wait for SIPp to exit by itself (``-m`` calls done); past ``timeout`` stop it and mark the
        result ``timed_out``."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            result = self.stop()
            result.timed_out = True
            return result
        return self.result()

    def stop(self, grace: float = 2.0) -> SippResult:
        """Stop SIPp by its PID: SIGUSR1 (SIPp's soft exit: no new calls, let the current ones end,
        write the final statistics screen); if it still runs after ``grace`` seconds -- a call that
        waits in a long ``<pause/>`` never ends -- SIGTERM, then SIGKILL."""
        for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, None)):
            if not self.running():
                break
            self.stopped = True
            try:
                os.kill(self.process.pid, sig)
                self.process.wait(wait)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        return self.result()

    def result(self) -> SippResult:
        if self._result is not None:
            return self._result
        returncode = self.process.poll()
        f = self.files
        result = SippResult(
            name=self.name,
            argv=self.argv,
            returncode=returncode if returncode is not None else -999,
            workdir=self.workdir,
            stats=_last_stats(read_log(f.stats)),
            message_log=read_log(f.messages),
            errors=read_log(f.errors),
            screen=read_log(f.screen),
            logs=read_log(f.logs),
            output=read_log(f.output),
            stopped=self.stopped,
        )
        if returncode is not None:
            self._out.close()
            self._result = result
        return result

    def __enter__(self) -> "SippProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Sipp:
    """Runs scenarios of ``tests/sipp/`` on the loopback interface over one transport.

    ``workdir`` receives every run's logs (``<name>.messages.log``, ``.errors.log``, ``.stats.csv``,
    ``.screen.log``, ``.logs.log``, ``.out``); ``transport`` is ``"udp"`` (``-t u1``) or ``"tcp"``
    (``-t t1``); ``local_ip`` the loopback address SIPp binds (``-i``, e.g. ``127.0.0.21`` for a
    media server and ``127.0.0.31`` for a phone, so a proxy can tell them apart by source address).
    ``netns`` runs SIPp inside that network namespace (``ip netns exec``, which execs, so the PID is
    SIPp's): ``local_ip`` is then an address of that namespace, its ports are fresh (the free port
    numbers come from the test's own loopback), and a UAS is not probed for listening from outside.
    """

    def __init__(self, workdir: str | os.PathLike[str], transport: str = "udp", sipp: str | None = None,
                 local_ip: str = LOOPBACK, netns: str | None = None) -> None:
        if transport not in TRANSPORT_MODES:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORT_MODES)}, got {transport!r}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.transport = transport
        self.local_ip = local_ip
        self.netns = netns
        self.binary = sipp or require_sipp()
        self._runs = 0

    def command(
        self,
        scenario: str | os.PathLike[str],
        remote: str | None = None,
        *,
        port: int | None = None,
        user: str = "service",
        keys: Mapping[str, Any] | None = None,
        calls: int = 1,
        rate: float = 10.0,
        timeout: float = 20.0,
        duration_ms: int = 0,
        ooc: str | os.PathLike[str] | None = None,
        extra: Sequence[str] = (),
        name: str | None = None,
    ) -> tuple[list[str], _Files, int, str]:
        """The SIPp command line for one run, its log files, its local port and its name."""
        path = scenario_path(scenario)
        self._runs += 1
        name = name or f"{self._runs:02d}-{path.stem}"
        port_host = LOOPBACK if self.netns else self.local_ip
        port = port or free_port(port_host)
        remote_host, _, remote_port = (remote or "").rpartition(":") if remote else ("", "", "")
        files = _Files(
            messages=self.workdir / f"{name}.messages.log",
            errors=self.workdir / f"{name}.errors.log",
            stats=self.workdir / f"{name}.stats.csv",
            screen=self.workdir / f"{name}.screen.log",
            logs=self.workdir / f"{name}.logs.log",
            output=self.workdir / f"{name}.out",
        )
        values: dict[str, str] = {
            "remote_host": remote_host,
            "remote_port": remote_port,
            "local_ip": self.local_ip,
            "local_port": str(port),
        }
        given = {k: str(v) for k, v in (keys or {}).items()}
        declared = scenario_keys(path)
        if ooc is not None:
            declared = {**scenario_keys(ooc), **declared}
        unknown = set(given) - set(declared)
        if unknown:
            raise ValueError(f"{path.name} declares no key {', '.join(sorted(unknown))} (it has {', '.join(declared) or 'none'})")
        key_args: list[str] = []
        for key, default in declared.items():
            value = given[key] if key in given else default.format(**values)
            values[key] = value
            key_args += ["-key", key, value]
        argv = (["ip", "netns", "exec", self.netns] if self.netns else []) + [self.binary]
        if remote:
            argv.append(remote)
        argv += [
            "-sf", str(path),
            "-t", TRANSPORT_MODES[self.transport],
            "-i", self.local_ip, "-bind_local", "-p", str(port),
            "-cp", str(free_port(port_host)),
            "-s", user,
            "-m", str(calls),
            "-r", f"{rate:g}",
            "-d", str(duration_ms),
            "-timeout", f"{timeout:g}s", "-timeout_error",
            "-nostdin",
            "-trace_msg", "-message_file", str(files.messages),
            "-trace_err", "-error_file", str(files.errors),
            "-trace_stat", "-stf", str(files.stats), "-fd", "1",
            "-trace_screen", "-screen_file", str(files.screen),
            "-trace_logs", "-log_file", str(files.logs),
        ]
        if ooc is not None:
            argv += ["-oocsf", str(scenario_path(ooc))]
        argv += key_args
        argv += list(extra)
        return argv, files, port, name

    def start(self, scenario: str | os.PathLike[str], remote: str | None = None, **options: Any) -> SippProcess:
        """Start SIPp in the background (see :meth:`command` for the options). Without ``remote``
        (a UAS) return once it listens on its port; a UAC is returned at once -- over TCP SIPp's
        client mode does not listen at all. Typical use, the callee:
        ``with sipp.start("uas_answer", user="bob") as uas: ... uas.port ...``."""
        argv, files, port, name = self.command(scenario, remote, **options)
        process = SippProcess(name, argv, files, self.workdir, port, self.transport, self.local_ip)
        return process if remote or self.netns else process.wait_listening()

    def run(self, scenario: str | os.PathLike[str], remote: str | None = None, **options: Any) -> SippResult:
        """Run SIPp in the foreground until ``calls`` calls are done or ``timeout`` seconds passed."""
        timeout = float(options.get("timeout", 20.0))
        argv, files, port, name = self.command(scenario, remote, **options)
        proc = SippProcess(name, argv, files, self.workdir, port, self.transport, self.local_ip)
        return proc.wait(timeout + 10.0)
