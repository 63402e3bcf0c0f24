"""Bounded polling for end-to-end tests: wait for a running node's state (a log line, a replicated
record, a dialog gone) without sleeping a fixed time. Every wait has a timeout that fails the test
with what it waited for."""

from __future__ import annotations

import re
import socket
import time
from typing import Any, Callable, Protocol

__all__ = ["wait_until", "wait_log", "wait_listening", "Logging"]


class Logging(Protocol):
    """A running node whose log can be read (:class:`~support.sipp_harness.EdgeproxyNode`)."""

    @property
    def address(self) -> str: ...

    def log(self) -> str: ...


def wait_until(what: str, check: Callable[[], Any], timeout: float = 10.0, step: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy and return that; fail with ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {value!r})")
        time.sleep(step)


def wait_log(node: Logging, pattern: str, timeout: float = 10.0, after: int = 0) -> float:
    """Wait until the node's log (from offset ``after``) matches ``pattern`` (a regular expression,
    multi-line); returns when (``time.monotonic()``). Fails with the end of the log."""
    regex = re.compile(pattern, re.M)
    try:
        wait_until(f"{pattern!r} in the log of {node.address}", lambda: regex.search(node.log()[after:]),
                   timeout=timeout, step=0.01)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{node.log()[-3000:]}") from None
    return time.monotonic()


def wait_listening(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until a TCP listener (the MI's, the metrics') accepts connections on ``host``:``port``."""
    def accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(f"a listener on {host}:{port}", accepts, timeout=timeout)
