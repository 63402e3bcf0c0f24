"""Probing the destinations, as OpenSIPS's ``ds_check_timer()`` does.

Every ``ds_ping_interval`` seconds each destination of the probed sets (``ds_probing_list``, default
all) that is not Inactive -- Inactive is "switched off by the operator", never probed -- and that is
Probing, or has ``probe_mode = 1``, or every one with ``ds_probing_mode = 1``, gets a
``ds_ping_method`` request (OPTIONS) with Request-URI and To its row's URI and From ``ds_ping_from``.
It is sent as a client transaction of the node (:class:`ProbeSender`: the proxy's transactions, so
retransmissions over UDP and the matching of the reply are the proxy's own), and its outcome goes to
:meth:`Dispatcher.probe_result`: 200 or a code of ``options_reply_codes`` is alive; anything else,
no reply within ``probe_timeout`` (408), or a destination that cannot be sent to or whose name does
not resolve (503) is a failed probe. A destination whose previous probe is still unanswered is not
probed again in that round (OpenSIPS lets them overlap). Nothing a round does raises into the reactor.

``stats`` of the dispatcher count what was sent and how it ended; :attr:`Prober.sent` counts the
probes per destination URI (the probe traffic the benchmark reports).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..sip.uri import SipURI, parse_uri
from .service import Dispatcher
from .table import INACTIVE, PROBING, Destination

__all__ = ["Prober", "ProbeSender"]

log = Logger(namespace="edgeproxy.dispatcher")


class ProbeSender(Protocol):
    """Sends one request of the node's own and fires with the final status: the reply's, 408 when
    none came within ``timeout`` seconds, 503 when it could not be sent (no route, no listener, a
    name that does not resolve)."""

    def send_request(self, method: str, uri: SipURI, from_uri: str, timeout: float) -> "Deferred[int]": ...


class Prober:
    """The probing timer of one dispatcher (see the module docstring)."""

    def __init__(self, dispatcher: Dispatcher, sender: ProbeSender, clock: IReactorTime,
                 responsible: Callable[[Destination], bool] | None = None) -> None:
        self.dispatcher = dispatcher
        # cluster_probing_mode "distributed": whether this node probes a destination (None: all)
        self.responsible = responsible
        self.sender = sender
        self.clock = clock
        self.sent: dict[str, int] = {}
        self._in_flight: set[tuple[int, str]] = set()
        self._loop: LoopingCall | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.running

    def start(self) -> None:
        settings = self.dispatcher.settings
        if not settings.probing or self.running:
            return
        loop = self._loop = LoopingCall(self.probe)
        loop.clock = self.clock
        loop.start(settings.ds_ping_interval, now=True).addErrback(
            lambda f: log.failure("dispatcher: probing stopped", f))

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def due(self, dest: Destination) -> bool:
        """Whether ``dest`` is probed in a round (``ds_check_timer``'s rule)."""
        settings = self.dispatcher.settings
        if dest.flags & INACTIVE or not settings.probes_set(dest.setid):
            return False
        if self.responsible is not None and not self.responsible(dest):
            return False
        return bool(dest.flags & PROBING) or dest.probe_mode == 1 or settings.ds_probing_mode == 1

    def probe(self) -> None:
        """One round: a probe to every destination due that has none in flight."""
        try:
            for dest in list(self.dispatcher.table.destinations()):
                key = (dest.setid, dest.uri.lower())
                if key in self._in_flight or not self.due(dest):
                    continue
                self._send(dest, key)
        except Exception:
            log.failure("dispatcher: a probing round failed")

    def _send(self, dest: Destination, key: tuple[int, str]) -> None:
        settings = self.dispatcher.settings
        self._in_flight.add(key)
        self.dispatcher.stats["probes_sent"] += 1
        self.sent[dest.uri] = self.sent.get(dest.uri, 0) + 1
        # Request-URI and To: the row's URI, user part included (ds_check_timer); headers are dropped
        uri = parse_uri(dest.uri)
        target = uri.replace(headers={}) if isinstance(uri, SipURI) and uri.headers else uri
        d = maybeDeferred(self.sender.send_request, settings.ds_ping_method,
                          target if isinstance(target, SipURI) else dest.dst_uri, settings.ds_ping_from,
                          settings.probe_timeout)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(dest, key), errbackArgs=(dest, key))

    def _answered(self, status: int, dest: Destination, key: tuple[int, str]) -> None:
        self._in_flight.discard(key)
        self.dispatcher.probe_result(dest, status)

    def _failed(self, failure: Failure, dest: Destination, key: tuple[int, str]) -> Any:
        self._in_flight.discard(key)
        log.failure("dispatcher: probing {uri} failed", failure, uri=dest.uri)
        self.dispatcher.probe_result(dest, 503, "probe error")
