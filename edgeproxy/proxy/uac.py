"""Requests of the node's own, sent as client transactions (OpenSIPS ``tm``'s ``t_uac``): the
dispatcher's probes.

:class:`LocalUac` builds the request (``method`` to ``uri``, From ``from_uri`` with a tag of ours,
To ``uri``, a fresh Call-ID, CSeq 1), finds its next hop the way a relayed request's is found (an IP
literal as it is; a name through the RFC 3263 locator, first target), puts our Via on it from the
listener facing that hop, and hands it to the proxy as a :class:`LocalRequest`: the proxy runs its
client transaction (retransmissions over UDP, the reply matched by our Via branch) and tells the
LocalRequest what happened. The caller gets the final status: the reply's, 408 when none came within
its ``timeout``, 503 when it could not be sent or the name does not resolve. Provisional replies are
ignored.
"""

from __future__ import annotations

import binascii
import os
from itertools import count
from typing import Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..interfaces import SendError
from ..sip.endpoint import Destination, Endpoint
from ..sip.message import Headers, Request
from ..sip.uri import SipURI
from ..transaction import DeliverResponse, SendRequest, Timeout, TransportFailure
from .context import Branch
from .forwarding import Forwarder

__all__ = ["LocalRequest", "LocalTransactions", "LocalUac"]

log = Logger(namespace="edgeproxy.proxy")


class LocalRequest:
    """The owner of a client transaction the node started itself: it sends what the transaction
    sends and reports the first final outcome to ``done`` (once)."""

    __slots__ = ("request", "destination", "forwarder", "done")

    def __init__(self, request: Request, destination: Destination, forwarder: Forwarder,
                 done: Callable[[int], None]) -> None:
        if forwarder.user_agent is not None:  # OpenSIPS user_agent_header: a request of the node's own
            request.headers.add(*forwarder.user_agent)
        self.request = request
        self.destination = destination
        self.forwarder = forwarder
        self.done: Callable[[int], None] | None = done

    def handle(self, action: object) -> None:
        """One action of its transaction (its end, Terminated, is the proxy's)."""
        if isinstance(action, SendRequest):
            d = self.forwarder.sender.send(self.destination, action.request)
            d.addErrback(self._send_failed)
        elif isinstance(action, DeliverResponse):
            if action.response.status >= 200:
                self.finish(action.response.status)
        elif isinstance(action, Timeout):
            self.finish(408)
        elif isinstance(action, TransportFailure):
            self.finish(503)

    def _send_failed(self, failure: Failure) -> None:
        err = failure.value
        self.finish(err.status if isinstance(err, SendError) else 503)

    def finish(self, status: int) -> None:
        done, self.done = self.done, None
        if done is not None:
            done(status)


class LocalTransactions(Protocol):
    """What :class:`LocalUac` asks of the proxy core (:class:`~edgeproxy.proxy.engine.StatefulProxy`):
    run the client transaction of a request of the node's own (OpenSIPS ``t_uac``)."""

    def start_local(self, owner: LocalRequest) -> None: ...


class LocalUac:
    """Sends the node's own requests through ``proxy``'s transactions (see the module docstring)."""

    def __init__(self, proxy: LocalTransactions, forwarder: Forwarder, clock: IReactorTime) -> None:
        self.proxy = proxy
        self.forwarder = forwarder
        self.clock = clock
        self._tag = binascii.hexlify(os.urandom(4)).decode()
        self._seq = count(1)

    def send_request(self, method: str, uri: SipURI, from_uri: str, timeout: float) -> "Deferred[int]":
        """Send ``method`` to ``uri``; fires with the final status (see the module docstring)."""
        result: Deferred[int] = Deferred()
        n = next(self._seq)
        h = Headers()
        h.add("Max-Forwards", "70")
        h.add("From", f"<{from_uri}>;tag={self._tag}")
        h.add("To", f"<{uri}>")
        h.add("Call-ID", f"{self._tag}-{n:x}@edgeproxy")
        h.add("CSeq", f"1 {method}")
        h.add("Content-Length", "0")
        request = Request(method, uri, h)
        timer: list[IDelayedCall] = []

        def done(status: int) -> None:
            if timer and timer[0].active():
                timer[0].cancel()
            if not result.called:
                result.callback(status)

        timer.append(self.clock.callLater(timeout, done, 408))
        try:
            destination, query = self.forwarder.next_hop(request, Branch(uri))
        except SendError as exc:
            done(exc.status)
            return result
        if query is None:
            self._start(request, destination, done)
            return result

        def located(targets: list[Endpoint]) -> None:
            if not targets:
                log.info("{method} to {uri}: {host} does not resolve", method=method, uri=str(uri), host=query.host)
                done(503)
            elif not result.called:
                self._start(request, Destination(targets[0], server_name=query.host), done)

        self.forwarder.locate(query).addCallbacks(located, lambda f: done(503))
        return result

    def _start(self, request: Request, destination: Destination, done: Callable[[int], None]) -> None:
        local = self.forwarder.sender.local_endpoint(destination.remote.transport, destination.remote)
        if local is None:
            done(503)
            return
        request.push_via(f"SIP/2.0/{local.transport} {local.hostport};branch={self.forwarder.new_branch()}")
        self.proxy.start_local(LocalRequest(request, destination, self.forwarder, done))
