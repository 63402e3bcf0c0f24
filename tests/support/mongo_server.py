"""A MongoDB wire-protocol server for tests: SecantusDB in a child process, or a real MongoDB.

* ``MONGO_URI`` set (e.g. ``mongodb://127.0.0.1:27017/?replicaSet=rs0``): tests use that server, each
  in its own database (``edgeproxy_test_<pid>_<random>``, dropped afterwards). Tests that must stop
  and restart the server are skipped there.
* otherwise, when ``secantusd-py`` is installed (``pip install secantusdb``, test-only):
  :class:`SecantusServer` runs ``secantusd-py --host 127.0.0.1 --port PORT --storage-path :memory:`` on
  a free port, waits until it answers ``ping``, and stops it with SIGTERM by its PID.
* neither: :func:`server_or_skip` skips with the reason — but fails under ``CI=true``, where a silently
  skipped store test would hide a missing install step.

Plain blocking code (sync PyMongo for the readiness ping): it runs in fixtures, outside the reactor.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from .ports import free_port

__all__ = ["SecantusServer", "MongoTarget", "server_or_skip", "store_url", "free_port", "no_server_reason",
           "running_target", "start_target", "stop_target"]

SECANTUS = "secantusd-py"


def secantus_executable() -> str | None:
    """``secantusd-py`` beside this interpreter (a virtual environment need not be on PATH), else on
    PATH; None when it is not installed."""
    sibling = Path(sys.executable).parent / SECANTUS
    return str(sibling) if sibling.exists() else shutil.which(SECANTUS)


def _ping(uri: str, timeout: float) -> bool:
    from pymongo import MongoClient

    client: Any = MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000))
    try:
        client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


class SecantusServer:
    """One ``secantusd-py`` process with in-memory storage on ``port`` (a free one by default).

    :meth:`start` may be called again after :meth:`stop`: the same port, an empty database — a MongoDB
    that crashed and came back without its data."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        """Connection string without a path (the server presents itself as replica set ``secantus``)."""
        return f"mongodb://127.0.0.1:{self.port}/?replicaSet=secantus"

    def start(self, timeout: float = 30.0) -> None:
        exe = secantus_executable()
        if exe is None:
            raise RuntimeError(f"{SECANTUS} is not installed (pip install secantusdb)")
        self.process = subprocess.Popen(
            [exe, "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", ":memory:"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"{SECANTUS} exited with {self.process.returncode}: {err.strip()[-500:]}")
            if _ping(self.uri, 0.3):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{SECANTUS} on port {self.port} did not answer ping within {timeout:g} s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @contextmanager
    def stalled(self) -> Iterator[None]:
        """The server frozen (SIGSTOP) for the ``with`` block, then thawed (SIGCONT): its sockets stay
        open and the kernel still accepts connections, but nothing is answered -- a store that hangs
        (a long GC, a stuck disk, an overloaded host) rather than one that is down."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            raise RuntimeError("the server is not running")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(proc.pid, signal.SIGCONT)


@dataclass
class MongoTarget:
    """Where the tests' store lives: ``base_uri`` (no path), the test ``database``, and the
    :class:`SecantusServer` when the tests own the server (None with ``MONGO_URI``)."""

    base_uri: str
    database: str
    server: SecantusServer | None = None

    @property
    def restartable(self) -> bool:
        return self.server is not None

    def url(self, collection: str) -> str:
        """An OpenSIPS-style cachedb URL for ``collection`` in the test database."""
        return store_url(self.base_uri, self.database, collection)


def store_url(base_uri: str, database: str, collection: str) -> str:
    """Put ``/database.collection`` into a connection string (``mongodb://h:p/?opts`` or ``mongodb://h:p``)."""
    rest, _, query = base_uri.partition("?")
    scheme, _, authority = rest.partition("://")
    authority = authority.split("/", 1)[0]
    return f"{scheme}://{authority}/{database}.{collection}" + (f"?{query}" if query else "")


def no_server_reason() -> str | None:
    """Why no store test can run here, or None when one can."""
    if os.environ.get("MONGO_URI"):
        return None
    try:
        import pymongo  # noqa: F401
    except ImportError:
        return "pymongo is not installed (pip install 'pymongo>=4.13,<5')"
    if secantus_executable() is None:
        return f"no MongoDB server: {SECANTUS} is not installed (pip install secantusdb) and MONGO_URI is not set"
    return None


def server_or_skip() -> None:
    """Skip the calling test/fixture when no server can be had — fail instead under ``CI=true``."""
    reason = no_server_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the store tests must run in CI)", pytrace=False)
    pytest.skip(reason)


def start_target() -> MongoTarget:
    """Start (or point at) the server for a test session; stop it with :func:`stop_target`."""
    database = f"edgeproxy_test_{os.getpid()}_{secrets.token_hex(3)}"
    uri = os.environ.get("MONGO_URI")
    if uri:
        return MongoTarget(uri, database)
    server = SecantusServer()
    server.start()
    return MongoTarget(server.uri, database, server)


def stop_target(target: MongoTarget) -> None:
    if target.server is not None:
        target.server.stop()
        return
    from pymongo import MongoClient

    client: Any = MongoClient(target.base_uri, serverSelectionTimeoutMS=2000)
    try:
        client.drop_database(target.database)
    except Exception:
        pass
    finally:
        client.close()


@contextmanager
def running_target() -> Iterator[MongoTarget]:
    """The store for the ``with`` block (a test's fixture): skipped without one, or failed under
    ``CI=true`` (:func:`server_or_skip`); started by :func:`start_target`, then stopped."""
    server_or_skip()
    target = start_target()
    try:
        yield target
    finally:
        stop_target(target)
