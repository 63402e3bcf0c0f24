"""Run the stock SIP-over-WebSocket libraries (JsSIP, SIP.js) in Node as test user agents.

The client scripts live in ``tests/webrtc/`` with their ``package.json`` and lockfile (``npm ci`` there
installs exactly the locked versions). :class:`WebClient` starts one as a subprocess and speaks the
line protocol of ``tests/webrtc/common.mjs``: events (one JSON object per stdout line) are collected
by a reader thread and waited for with :meth:`WebClient.wait`; commands go to its stdin. Every wait
is bounded; clients are stopped by PID; each client also exits by itself after its ``deadline``.

:func:`wss_node` runs the node under test with a WSS listener whose certificate a fresh test CA
issued (:class:`WebNode`: its URL, the CA file the clients trust, and :meth:`WebNode.client`).

:func:`require_node` skips a test when ``node`` or the installed packages are missing -- and fails
it under ``CI=true``, so CI cannot pass by running nothing.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

from .sipp_harness import LOOPBACK, EdgeproxyNode, edgeproxy_node, free_port
from .tls_ca import TestCA

__all__ = ["WEBRTC_DIR", "node_path", "require_node", "WebClient", "WebNode", "wss_node", "sip_messages",
           "header"]

WEBRTC_DIR = Path(__file__).resolve().parents[1] / "webrtc"
SCRIPTS = {"jssip": "jssip_client.mjs", "sipjs": "sipjs_client.mjs"}


def node_path() -> str | None:
    return shutil.which("node")


def require_node() -> str:
    """``node`` with the client packages installed, or skip (fail under ``CI=true``)."""
    node = node_path()
    reason = None
    if node is None:
        reason = "Node.js is not installed (Debian/Ubuntu: apt-get install -y nodejs npm)"
    else:
        missing = [p for p in ("jssip", "sip.js", "ws") if not (WEBRTC_DIR / "node_modules" / p).is_dir()]
        if missing:
            reason = f"{', '.join(missing)} not installed in tests/webrtc (run: cd tests/webrtc && npm ci)"
    if reason is None:
        assert node is not None
        return node
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


class WebClient:
    """One JsSIP or SIP.js user agent (``lib`` = ``"jssip"`` / ``"sipjs"``) connected to ``ws_url``
    as ``uri``; ``ca`` is the PEM file Node trusts in addition to its own (NODE_EXTRA_CA_CERTS).
    Further options (``answer``, ``ring_ms``, ``expires``, ``origin``, ``register``, ``password``,
    ``auth_user``) go to the script."""

    def __init__(self, lib: str, uri: str, ws_url: str, *, ca: str | None = None, workdir: Path,
                 deadline: float = 90.0, **options: Any) -> None:
        node = require_node()
        self.lib = lib
        self.uri = uri
        self.events: list[dict[str, Any]] = []
        self._queue: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        self._seen = 0
        env = dict(os.environ)
        if ca is not None:
            env["NODE_EXTRA_CA_CERTS"] = ca
        workdir.mkdir(parents=True, exist_ok=True)
        name = uri.split(":", 1)[-1].split("@", 1)[0]
        self.stderr_path = workdir / f"{lib}-{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        argv = [node, str(WEBRTC_DIR / SCRIPTS[lib]),
                json.dumps({"uri": uri, "ws": ws_url, "deadline": deadline, **options})]
        self.process = subprocess.Popen(argv, cwd=WEBRTC_DIR, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._stderr)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "noise", "text": line.decode("utf-8", "replace")}
            self._queue.put(event)
        self._queue.put(None)

    def _drain(self, timeout: float) -> bool:
        """Move events from the reader to :attr:`events`; False once the process's output ended."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        if item is None:
            self._queue.put(None)
            return False
        self.events.append(item)
        return True

    def wait(self, event: str, timeout: float = 10.0, where: Callable[[dict[str, Any]], bool] | None = None,
             after: int | None = None) -> dict[str, Any]:
        """The first event named ``event`` (and matching ``where``) among those at index ``after``
        (default: not yet returned by a wait) and later; fails the test after ``timeout`` seconds."""
        start = self._seen if after is None else after
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.events):
                e = self.events[index]
                index += 1
                if e.get("event") == event and (where is None or where(e)):
                    self._seen = max(self._seen, index)
                    return e
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            alive = self._drain(min(remaining, 0.2))
            if not alive and index >= len(self.events):
                break
        raise AssertionError(f"{self.lib} {self.uri}: no {event!r} event within {timeout}s\n{self.describe()}")

    def mark(self) -> int:
        """An index to pass as ``after=`` to look only at events from now on."""
        while self._drain(0):
            if self._queue.empty():
                break
        return len(self.events)

    def command(self, cmd: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        self.process.stdin.flush()

    def wire(self, direction: str | None = None) -> list[str]:
        """The SIP messages seen on the WebSocket (``"in"``/``"out"``), as text."""
        self.mark()
        return [e["text"] for e in self.events
                if e.get("event") == "wire" and (direction is None or e.get("dir") == direction)]

    def describe(self, tail: int = 40) -> str:
        self.mark()
        lines = []
        for e in self.events[-tail:]:
            if e.get("event") == "wire":
                lines.append(f"  wire {e.get('dir')}: {e.get('text', '').splitlines()[0] if e.get('text') else ''}")
            else:
                lines.append(f"  {json.dumps(e)[:300]}")
        try:
            err = self.stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            err = ""
        return "events:\n" + "\n".join(lines) + (f"\nstderr:\n{err}" if err.strip() else "")

    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID: the tab crashed; the kernel closes its connection, no goodbyes."""
        if self.running():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def stop(self, grace: float = 3.0) -> None:
        """Ask the library to stop (un-registers), then SIGTERM and SIGKILL by PID."""
        if self.running():
            try:
                self.command("stop")
                self.process.wait(grace)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.running():
                break
            try:
                os.kill(self.process.pid, sig)
                self.process.wait(2)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        self._stderr.close()

    def __enter__(self) -> "WebClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def sip_messages(texts: list[str], first: str) -> list[str]:
    """The messages among ``texts`` whose first line starts with ``first`` (e.g. ``"BYE "``,
    ``"SIP/2.0 200"``)."""
    return [t for t in texts if t.startswith(first)]


def header(message: str, name: str) -> list[str]:
    """The values of the header ``name`` (full name, any case) in the head of ``message``."""
    head = message.split("\r\n\r\n", 1)[0]
    return [line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:]
            if line.lower().startswith(name.lower() + ":")]


class WebNode:
    """The node under test, its WSS URL and the CA file the clients trust."""

    def __init__(self, node: EdgeproxyNode, wss_port: int, ca: str, workdir: Path, domain: str) -> None:
        self.node = node
        self.wss_port = wss_port
        self.url = f"wss://127.0.0.1:{wss_port}"
        self.ca = ca
        self.workdir = workdir
        self.domain = domain

    def client(self, lib: str, user: str, **options: Any) -> WebClient:
        """A :class:`WebClient` for ``sip:user@domain`` (``user`` may name its own domain: ``u@host``)."""
        aor = user if "@" in user else f"{user}@{self.domain}"
        return WebClient(lib, f"sip:{aor}", self.url, ca=self.ca, workdir=self.workdir, **options)


@contextmanager
def wss_node(workdir: Path, domain: str, config: Mapping[str, Mapping[str, Any]] | None = None) -> Iterator[WebNode]:
    """An edgeproxy node for ``domain`` listening on UDP and TCP (one port) and WSS (another), its
    certificate issued for 127.0.0.1 by a new test CA; ``config`` adds sections or keys."""
    ca = TestCA(workdir / "pki")
    server = ca.issue("server", dns=["localhost"], ips=["127.0.0.1"])
    port, wss_port = free_port(), free_port()
    sections: dict[str, dict[str, Any]] = {
        "node": {"listen": [f"udp:{LOOPBACK}:{port}", f"tcp:{LOOPBACK}:{port}", f"wss:{LOOPBACK}:{wss_port}"],
                 "domains": [domain]},
        "tls": {"certificate": server.cert, "key": server.key},
    }
    for section, table in (config or {}).items():
        sections.setdefault(section, {}).update(table)
    with edgeproxy_node(workdir / "node", config=sections, port=port) as node:
        yield WebNode(node, wss_port, ca.cert, workdir, domain)
