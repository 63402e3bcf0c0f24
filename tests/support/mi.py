"""The tests' own JSON-RPC client of a node's MI over HTTP (``[mi] listen`` + ``path``): the one place
the end-to-end tests build and post MI requests.

The tests ask the node directly, with ``urllib``, rather than through :mod:`edgeproxy.ctl`: what
``edgeproxy-ctl`` and opensips-cli print is compared with the node's own answer
(``test_e2e_opensips_cli``), so that answer must not come through either of them.

* :func:`post` -- one HTTP request, whatever its status (405, 413, 401 ... are answers to check);
* :func:`rpc` -- one JSON-RPC message (or batch), HTTP 200 asserted, the decoded answer;
* :func:`mi_answer` / :func:`mi_result` -- one command by name: the whole answer (``result`` or
  ``error``) or its ``result``, retried while the node's listener is not up yet (``wait`` seconds).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["post", "rpc", "mi_answer", "mi_result"]


def post(url: str, body: bytes, headers: dict[str, str] | None = None,
         method: str = "POST") -> tuple[int, bytes, Any]:
    """``(status, body, headers)`` of one request to ``url``."""
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read(), reply.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


def rpc(url: str, message: Any) -> Any:
    """The decoded answer to ``message`` (a JSON-RPC request or batch); the HTTP status must be 200."""
    status, body, _ = post(url, json.dumps(message).encode())
    assert status == 200, (status, body)
    return json.loads(body)


def mi_answer(url: str, method: str, params: Any = None, wait: float = 0.0) -> dict[str, Any]:
    """The JSON-RPC answer to ``method`` (``params`` left out when None), asked again while the
    connection fails (the node still starting) for up to ``wait`` seconds."""
    message = {"jsonrpc": "2.0", "id": 1, "method": method, **({"params": params} if params is not None else {})}
    deadline = time.monotonic() + wait
    while True:
        try:
            answer: dict[str, Any] = rpc(url, message)
            return answer
        except urllib.error.HTTPError:
            raise
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def mi_result(url: str, method: str, params: Any = None, wait: float = 0.0) -> Any:
    """The ``result`` of ``method`` (see :func:`mi_answer`); an ``error`` answer fails the test."""
    answer = mi_answer(url, method, params, wait)
    assert "result" in answer, answer
    return answer["result"]
