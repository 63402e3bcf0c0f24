"""JSON-RPC 2.0 over HTTP for the MI commands (OpenSIPS ``mi_http``): ``POST <path>``.

* The body is one JSON-RPC request object or a batch (an array of them). A request without ``id`` is
  a notification: it runs and gets no answer (a body of notifications only gets ``204``); as in
  OpenSIPS, a notification that is not even a valid request still gets its -32600/-32700.
* Answers are ``200`` with ``{"jsonrpc": "2.0", "result": ..., "id": ...}`` or ``{"jsonrpc": "2.0",
  "error": {"code", "message"[, "data"]}, "id": ...}`` -- JSON-RPC errors are not HTTP errors, so
  clients (the ``opensips`` package, opensips-cli) read their code and message.
* HTTP-level refusals: ``405`` for any method but POST (``Allow: POST``), ``413`` for a body over
  ``max_request_size`` (never buffered beyond it), ``401`` without the right ``Authorization: Bearer``
  when ``token`` is set, ``404`` for another path. A command that does not answer within ``timeout``
  gets -32000.
"""

from __future__ import annotations

import hmac
import json
from io import BytesIO
from typing import Any, Protocol, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList, TimeoutError, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from .commands import INVALID_REQUEST, PARSE_ERROR, SERVER_ERROR, MICommands, MIError
from .metrics_settings import MetricsSettings
from .parts import NodeParts
from .settings import MISettings

__all__ = ["MIResource", "MISite", "MetricsResource", "Paths", "ManagementService", "start_management", "start_metrics"]

log = Logger(namespace="edgeproxy.management")

_JSON = b"application/json"


def _answer(request_id: Any, *, result: Any = None, error: MIError | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"jsonrpc": "2.0"}
    if error is not None:
        out["error"] = error.to_json()
    else:
        out["result"] = result
    out["id"] = request_id
    return out


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


class MIResource(resource.Resource):
    """The resource at ``settings.path`` (every other path: 404)."""

    isLeaf = True

    def __init__(self, commands: MICommands, settings: MISettings, clock: Any = None) -> None:
        super().__init__()
        self.commands = commands
        self.settings = settings
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self._path = settings.path.rstrip("/") or "/"

    # -- HTTP ----------------------------------------------------------------------------------------
    def render(self, request: server.Request) -> Any:
        path = request.path.decode("latin-1")
        if (path.rstrip("/") or "/") != self._path:
            return self._plain(request, 404, "no MI here: POST JSON-RPC to " + self.settings.path)
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return self._plain(request, 405, "the MI takes POST with a JSON-RPC 2.0 body")
        if self.settings.token and not self._authorized(request):
            request.setHeader(b"www-authenticate", b'Bearer realm="edgeproxy-mi"')
            return self._plain(request, 401, "Authorization: Bearer <token> required")
        if getattr(request, "mi_too_large", False):
            return self._error_body(request, 413, MIError(INVALID_REQUEST, "Invalid Request",
                                                          f"body larger than {self.settings.max_request_size} bytes"))
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read()
        origin = _peer(request)
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return self._json(request, _answer(None, error=MIError(PARSE_ERROR, "Parse error")))
        if isinstance(message, list):
            if not message:
                return self._json(request, _answer(None, error=MIError(INVALID_REQUEST, "Invalid Request",
                                                                       "empty batch")))
            batch = DeferredList([self._one(item, origin) for item in message], consumeErrors=True)
            d: Deferred[Any] = batch.addCallback(
                lambda results: [answer for ok, answer in results if ok and answer is not None])
        else:
            d = self._one(message, origin)
        self._finish_later(request, d)
        return server.NOT_DONE_YET

    def _authorized(self, request: server.Request) -> bool:
        return _bearer_ok(request, self.settings.token)

    # -- JSON-RPC ------------------------------------------------------------------------------------
    def _one(self, message: Any, origin: str) -> "Deferred[dict[str, Any] | None]":
        """The answer to one request object (None for a notification)."""
        if not isinstance(message, dict):
            return succeed(_answer(None, error=MIError(INVALID_REQUEST, "Invalid Request")))
        has_id = "id" in message
        request_id = message.get("id")
        problem = None
        if has_id and not _valid_id(request_id):
            problem, request_id = "id must be a string, a number or null", None
        elif message.get("jsonrpc") != "2.0":
            problem = 'jsonrpc must be "2.0"'
        elif not isinstance(message.get("method"), str):
            problem = "method must be a string"
        elif "params" in message and not isinstance(message["params"], (list, dict)):
            problem = "params must be an array or an object"
        if problem is not None:
            return succeed(_answer(request_id, error=MIError(INVALID_REQUEST, "Invalid Request", problem)))
        d = self.commands.execute(message["method"], message.get("params"), origin=origin)
        d.addTimeout(self.settings.timeout, self.clock)

        def ok(result: Any) -> dict[str, Any] | None:
            return _answer(request_id, result=result) if has_id else None

        def failed(failure: Failure) -> dict[str, Any] | None:
            if isinstance(failure.value, MIError):
                error = failure.value
            elif failure.check(CancelledError, TimeoutError):
                log.warn("MI {method} from {origin}: no answer within {t:g} s", method=message["method"],
                         origin=origin, t=self.settings.timeout)
                error = MIError(SERVER_ERROR, "Server error", f"no answer within {self.settings.timeout:g} s")
            else:
                log.failure("MI {method} from {origin} failed", failure, method=message["method"], origin=origin)
                error = MIError(SERVER_ERROR, "Server error")
            return _answer(request_id, error=error) if has_id else None

        d.addCallbacks(ok, failed)
        return d

    # -- writing -------------------------------------------------------------------------------------
    def _finish_later(self, request: server.Request, d: Deferred) -> None:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def write(answer: Any) -> None:
            if gone:
                return
            if answer is None or answer == []:
                request.setResponseCode(204)
                request.finish()
                return
            try:
                data = json.dumps(answer, ensure_ascii=False, default=str).encode("utf-8")
            except (TypeError, ValueError):
                log.failure("MI answer is not JSON")
                data = json.dumps(_answer(None, error=MIError(SERVER_ERROR, "Server error"))).encode()
            request.setHeader(b"content-type", _JSON)
            request.write(data)
            request.finish()

        def failed(failure: Failure) -> None:
            log.failure("MI request failed", failure)
            write(_answer(None, error=MIError(SERVER_ERROR, "Server error")))

        d.addCallbacks(write, failed)

    def _json(self, request: server.Request, answer: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", _JSON)
        return json.dumps(answer).encode("utf-8")

    def _error_body(self, request: server.Request, code: int, error: MIError) -> bytes:
        return self._json(request, _answer(None, error=error), code)

    def _plain(self, request: server.Request, code: int, text: str) -> bytes:
        return _plain(request, code, text)


class MetricsResource(resource.Resource):
    """``GET <path>``: the Prometheus text exposition of a node (:mod:`.prometheus`), built when asked.
    ``token``, when set (the MI's, on the MI's listener), is required as ``Authorization: Bearer``
    (Prometheus's ``authorization`` scrape setting)."""

    isLeaf = True

    def __init__(self, commands: MICommands, settings: MetricsSettings, token: str = "") -> None:
        super().__init__()
        from .prometheus import metrics_registry

        self.settings = settings
        self.token = token
        self.registry = metrics_registry(commands, settings)

    def render(self, request: server.Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _plain(request, 405, "metrics are read with GET")
        if self.token and not _bearer_ok(request, self.token):
            request.setHeader(b"www-authenticate", b'Bearer realm="edgeproxy-metrics"')
            return _plain(request, 401, "Authorization: Bearer <token> required")
        from .prometheus import CONTENT_TYPE, exposition

        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        return exposition(self.registry)


class Paths(resource.Resource):
    """The root of a listener serving several resources, each at one exact path (the MI at
    ``[mi] path``, the metrics at ``[metrics] path``); any other path goes to ``fallback`` (whose
    answer there is 404)."""

    isLeaf = True

    def __init__(self, paths: dict[str, resource.Resource], fallback: resource.Resource) -> None:
        super().__init__()
        self.paths = {(p.rstrip("/") or "/"): r for p, r in paths.items()}
        self.fallback = fallback

    def render(self, request: server.Request) -> Any:
        path = request.path.decode("latin-1")
        return self.paths.get(path.rstrip("/") or "/", self.fallback).render(request)


def _bearer_ok(request: server.Request, token: str) -> bool:
    header = request.getHeader(b"authorization") or b""
    scheme, _, given = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode("utf-8"))


def _plain(request: server.Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return (text + "\n").encode("utf-8")


def _peer(request: server.Request) -> str:
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    return f"{host}:{getattr(peer, 'port', '?')}" if host else str(peer)


class _BoundedRequest(server.Request):
    """A request whose body is kept up to the site's ``max_request_size``: beyond it the rest is
    read and thrown away (the answer is 413), and a client that sends far more is disconnected."""

    mi_too_large = False
    _mi_received = 0

    def _limit(self) -> int:
        return cast(_SiteChannel, self.channel).site.max_request_size

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if length is not None and length > limit:
            self.mi_too_large = True
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        limit = self._limit()
        self._mi_received += len(data)
        if self._mi_received > limit:
            self.mi_too_large = True
            if self._mi_received > 16 * limit + 1_048_576:  # not worth reading any further
                if self.channel.transport is not None:
                    self.channel.transport.loseConnection()
            return
        if not self.mi_too_large and self.content is not None:
            self.content.write(data)


class _SiteChannel(Protocol):
    """An HTTP channel as a site builds it: ``Site.buildProtocol`` sets ``site`` on each."""

    site: MISite


class MISite(server.Site):
    """The HTTP site of the MI: bounded request bodies, no access log (commands are logged)."""

    noisy = False
    requestFactory = _BoundedRequest

    def __init__(self, root: resource.Resource, max_request_size: int, clock: Any = None) -> None:
        kwargs = {"reactor": clock} if clock is not None else {}
        super().__init__(root, requestFactory=_BoundedRequest, timeout=60, **kwargs)
        self.max_request_size = max_request_size

    def log(self, request: Any) -> None:  # commands that change something are logged by MICommands
        pass


class ManagementService:
    """The MI listener of a running node: :meth:`stop` closes it."""

    def __init__(self, commands: MICommands, settings: MISettings | None, port: Any) -> None:
        self.commands = commands
        self.settings = settings
        self.port = port

    @property
    def address(self) -> tuple[str, int]:
        host = self.port.getHost()
        return host.host, host.port

    def stop(self) -> "Deferred[None]":
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return port.stopListening() or succeed(None)


def start_management(parts: NodeParts, settings: MISettings, reactor: Any = None,
                     commands: MICommands | None = None, metrics: MetricsSettings | None = None
                     ) -> ManagementService:
    """Listen for MI requests on ``settings.listen`` over ``parts`` (a RunningNode), and with
    ``metrics`` serve the Prometheus exposition at its path on the same listener (behind the MI's
    ``token`` when one is set). Raises ``twisted.internet.error.CannotListenError`` when the address
    is taken."""
    if reactor is None:
        from twisted.internet import reactor
    commands = commands or MICommands(parts)
    root: resource.Resource = MIResource(commands, settings, reactor)
    if metrics is not None:
        root = Paths({metrics.path: MetricsResource(commands, metrics, settings.token)}, root)
    listening = _listen(reactor, settings.address, MISite(root, settings.max_request_size, reactor))
    bound = listening.getHost()
    if settings.remote:
        log.warn("MI listening on {host}:{port}, which is not a loopback address (allow_remote): anyone who "
                 "reaches it can remove registrations{auth}", host=bound.host, port=bound.port,
                 auth="" if settings.token else " -- and no token is set")
    else:
        log.info("MI (JSON-RPC) listening on http://{host}:{port}{path}", host=bound.host, port=bound.port,
                 path=settings.path)
    if metrics is not None:
        log.info("Prometheus metrics at http://{host}:{port}{path}", host=bound.host, port=bound.port,
                 path=metrics.path)
    return ManagementService(commands, settings, listening)


def start_metrics(parts: NodeParts, settings: MetricsSettings, reactor: Any = None) -> ManagementService:
    """Serve the Prometheus exposition on a listener of its own (``[metrics] listen``): only
    ``GET <path>`` there, no MI (nothing that can change the node), no token."""
    if reactor is None:
        from twisted.internet import reactor
    commands = MICommands(parts)
    metrics = MetricsResource(commands, settings)
    listening = _listen(reactor, settings.address,
                        MISite(Paths({settings.path: metrics}, _NotFound(settings.path)), 4096, reactor))
    bound = listening.getHost()
    log.info("Prometheus metrics at http://{host}:{port}{path}", host=bound.host, port=bound.port,
             path=settings.path)
    return ManagementService(commands, None, listening)


def _listen(reactor: Any, address: tuple[str, int], site: MISite) -> Any:
    """Listen with ``site`` on ``address`` (``[mi]``/``[metrics] listen``: ``localhost`` is 127.0.0.1)."""
    host, port = address
    return reactor.listenTCP(port, site, interface="127.0.0.1" if host == "localhost" else host)


class _NotFound(resource.Resource):
    isLeaf = True

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def render(self, request: server.Request) -> bytes:
        return _plain(request, 404, f"nothing here: GET {self.path}")
