"""A real Prometheus server for the metrics tests (Debian's ``prometheus`` package; ``.ci/run`` installs it).

:func:`prometheus_server` starts ``prometheus`` on a free loopback port with a 1 s scrape interval,
the given targets and a storage directory of the test's own, waits until it is ready, and ends it by
PID. Without the binary the test is skipped with the reason -- except under ``CI=true``, where a
missing server fails: CI must not pass by running nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from .ports import free_port

LOOPBACK = "127.0.0.1"


def prometheus_path() -> str | None:
    return shutil.which("prometheus") or next((p for p in ("/usr/bin/prometheus",) if os.access(p, os.X_OK)), None)


def require_prometheus() -> str:
    path = prometheus_path()
    if path is None:
        reason = "prometheus is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


class Prometheus:
    """A running server: :meth:`query` asks its HTTP API (``/api/v1/query``)."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now (``data.result``)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            answer = json.load(reply)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr``, or None when the vector is empty."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, accept: Callable[[float | None], bool], timeout: float = 20.0) -> float | None:
        """Query ``expr`` until ``accept(value)``; the last value (the caller asserts on it)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.value(expr)
            if accept(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.25)

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as reply:
            active: list[dict[str, Any]] = json.load(reply)["data"]["activeTargets"]
            return active


@contextmanager
def prometheus_server(workdir: Path, targets: Sequence[str], metrics_path: str = "/metrics",
                      startup_timeout: float = 30.0) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (``host:port``) every second, for the ``with`` block."""
    binary = require_prometheus()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: edgeproxy\n"
        f"    metrics_path: {metrics_path}\n"
        f"    static_configs:\n      - targets: [{', '.join(repr(t) for t in targets)}]\n",
        encoding="utf-8")
    port = free_port(LOOPBACK)
    log_path = workdir / "prometheus.log"
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}", "--log.level=warn"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(process, port, log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited with status {process.returncode}:\n{server.log()[-3000:]}",
                            pytrace=False)
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready within {startup_timeout} s:\n{server.log()[-3000:]}", pytrace=False)
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
