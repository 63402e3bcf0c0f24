"""RFC 3263 location over real DNS: runs :func:`edgeproxy.dns.locate` with answers from
``twisted.names`` (part of Twisted), a bounded answer cache and the hosts file.

Theory of operation. :meth:`DnsLocator.locate` starts the pure procedure for a query and feeds it
rounds of answers. Each question of a round is answered, in this order, from the hosts file (A/AAAA
of a name listed there), from the cache, by joining a lookup of the same question already in flight
(so a burst of calls to one trunk asks the DNS once), or by a new lookup. A round answered entirely
from memory goes on at once, so a next hop whose answers are cached is located synchronously and the
proxy sends in the same turn of the reactor, as it does for an IP literal.

Every location is bounded by ``[dns] timeout``: when it expires the location fails with
``SendError("Name Resolution Failed")`` (503), whatever the DNS is doing; lookups still running go on
and fill the cache for the calls after. NXDOMAIN ends a location at the first round.
"""

from __future__ import annotations

import errno
import os
import random
import socket
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.names import client, dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure

from ..dns import AAAA, NAPTR, SRV, A, Answer, AnswerCache, DnsSettings, Naptr, Question, ServerQuery, Srv, parse_hosts
from ..dns import locate as rfc3263_locate
from ..interfaces import SendError, noteworthy
from ..sip.endpoint import Endpoint

__all__ = ["DnsLocator", "HostsFile"]

log = Logger(namespace="edgeproxy.dns")

_TYPES = {NAPTR: dns.NAPTR, SRV: dns.SRV, A: dns.A, AAAA: dns.AAAA}
_RESOLV_CONF = "/etc/resolv.conf"
_HOSTS = "/etc/hosts"
_HOSTS_CHECK = 5.0  # seconds between checks whether the hosts file changed


class HostsFile:
    """The hosts file, re-read when its modification time changes (looked at every few seconds at
    most, so a busy proxy does not stat it per call). A missing file is an empty table."""

    def __init__(self, path: str, clock: Any) -> None:
        self.path = path
        self.clock = clock
        self._mtime: float | None = None
        self._checked = -_HOSTS_CHECK
        self._table: dict[str, tuple[str, ...]] = {}

    def get(self, name: str) -> tuple[str, ...] | None:
        now = self.clock.seconds()
        if now - self._checked >= _HOSTS_CHECK:
            self._checked = now
            self._reload()
        return self._table.get(name)

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            with open(self.path, encoding="utf-8", errors="replace") as f:
                self._table = parse_hosts(f.read())
            self._mtime = mtime
        except OSError:
            self._table, self._mtime = {}, None


class DnsLocator:
    """The node's :class:`~edgeproxy.interfaces.Locator`: ``settings`` is the ``[dns]`` table;
    ``resolver`` an ``IResolver`` to use instead of a ``twisted.names.client.Resolver`` for
    ``settings.servers`` (or the system's ``/etc/resolv.conf``); ``rng`` orders SRV weights."""

    def __init__(self, reactor: Any, settings: DnsSettings = DnsSettings(), *, resolver: Any = None,  # noqa: B008
                 hosts: str = _HOSTS, rng: random.Random | None = None) -> None:
        self.reactor = reactor
        self.settings = settings
        self.cache = AnswerCache(settings.cache_size)
        self.hosts = HostsFile(hosts, reactor)
        self.rng = rng if rng is not None else random.Random()
        self._resolver = resolver
        self._inflight: dict[Question, list[Deferred]] = {}
        self._running: set[_Location] = set()
        self.stats = {"locations": 0, "queries": 0, "cache_hits": 0, "timeouts": 0, "refused": 0}
        # per lookup: three tries within the location's budget (a lost datagram is retried)
        self._query_timeout = (settings.timeout / 3,) * 3

    @property
    def resolver(self) -> Any:
        if self._resolver is None:
            servers = list(self.settings.servers)
            if servers:
                self._resolver = _QuietResolver(servers=servers, reactor=self.reactor)
            else:
                self._resolver = _QuietResolver(resolv=_RESOLV_CONF, reactor=self.reactor)
        return self._resolver

    def locate(self, query: ServerQuery, transports: frozenset[str]) -> "Deferred[list[Endpoint]]":
        """See :meth:`edgeproxy.interfaces.Locator.locate`."""
        self.stats["locations"] += 1
        s = self.settings
        procedure = rfc3263_locate(query, transports, self.rng, naptr=s.naptr, srv=s.srv,
                                   static=self.hosts.get(query.host))
        return _Location(self, procedure, query.host).start()

    def stop(self) -> None:
        """Fail the locations still waiting (their branches end at once) and stop the resolver's
        periodic re-reading of resolv.conf, so a stopped node leaves no timer behind."""
        for location in list(self._running):
            location.abandon()
        parse = getattr(self._resolver, "_parseCall", None)
        if parse is not None and parse.active():
            parse.cancel()

    # -- answers --------------------------------------------------------------------------------
    def known(self, question: Question) -> Answer | None:
        """An answer from memory: the hosts file (A/AAAA) or the cache."""
        if question.rtype in (A, AAAA):
            listed = self.hosts.get(question.name)
            if listed is not None:
                v6 = question.rtype == AAAA
                return Answer(tuple(a for a in listed if (":" in a) == v6))
        answer = self.cache.get(question, self.reactor.seconds())
        if answer is not None:
            self.stats["cache_hits"] += 1
        return answer

    @property
    def in_flight(self) -> int:
        """DNS lookups running now (one resolver socket each)."""
        return len(self._inflight)

    def fetch(self, question: Question) -> "Deferred[Answer]":
        """The answer from the DNS (never fails: a failure is an ``Answer(failed=True)``); joins a
        lookup of the same question already in flight. Beyond ``[dns] max_queries`` lookups in
        flight a new question fails at once, uncached (``refused``): the names come from requests,
        and each lookup holds a socket (issue 16)."""
        waiting = self._inflight.get(question)
        if waiting is not None:
            d: Deferred = Deferred()
            waiting.append(d)
            return d
        if len(self._inflight) >= self.settings.max_queries:
            refused = self.stats["refused"] = self.stats["refused"] + 1
            if noteworthy(refused):
                log.info("dns: {n} lookups in flight (max_queries): {name} not looked up ({refused} so far)",
                         n=len(self._inflight), name=question.name, refused=refused)
            return succeed(Answer.failure())
        d = Deferred()
        self._inflight[question] = [d]
        self.stats["queries"] += 1
        try:
            lookup = self.resolver.query(dns.Query(question.name, _TYPES[question.rtype], dns.IN),
                                         timeout=self._query_timeout)
        except Exception:
            lookup = fail()
        lookup.addCallbacks(_answer, _failed, callbackArgs=(question,), errbackArgs=(question,))
        lookup.addCallback(self._answered, question)
        return d

    def _answered(self, answer: Answer, question: Question) -> None:
        self.cache.put(question, answer, self.reactor.seconds())
        for d in self._inflight.pop(question, ()):
            d.callback(answer)


class _QuietResolver(client.Resolver):
    """``twisted.names.client.Resolver`` whose per-query UDP sockets (a random source port each,
    against spoofing) are not announced in the log: "Starting protocol ..."/"Stopping protocol ..."
    twice per DNS query would drown the node's log at a few calls per second."""

    def _connectedProtocol(self, interface: str = "") -> Any:
        protocol = dns.DNSDatagramProtocol(self, reactor=self._reactor)
        protocol.noisy = False
        for attempt in range(1000):
            try:
                self._reactor.listenUDP(dns.randomSource(), protocol, interface=interface)
                return protocol
            except CannotListenError as exc:
                if getattr(exc.socketError, "errno", None) == errno.EMFILE or attempt == 999:
                    raise
        raise AssertionError("unreachable")


class _Location:
    """One run of the procedure: rounds of questions until it returns, or the deadline passes."""

    def __init__(self, locator: DnsLocator, procedure: Any, host: str) -> None:
        self.locator = locator
        self.procedure = procedure
        self.host = host
        self.result: Deferred = Deferred()
        self.deadline: Any = None

    def start(self) -> "Deferred[list[Endpoint]]":
        self._advance(None)
        if not self.result.called:
            self.deadline = self.locator.reactor.callLater(self.locator.settings.timeout, self._expired)
            self.locator._running.add(self)
        return self.result

    def abandon(self) -> None:
        self.procedure.close()
        self._finish(Failure(SendError("Transport Stopped")))

    def _advance(self, answers: dict[Question, Answer] | None) -> None:
        while True:
            try:
                questions = next(self.procedure) if answers is None else self.procedure.send(answers)
            except StopIteration as done:
                self._finish(done.value)
                return
            except Exception:
                log.failure("locating {host} failed", host=self.host)
                self._finish(Failure(SendError("Name Resolution Failed")))
                return
            answers = {}
            missing: list[tuple[Question, Deferred]] = []
            for q in questions:
                known = self.locator.known(q)
                if known is not None:
                    answers[q] = known
                else:
                    missing.append((q, self.locator.fetch(q)))
            if missing:
                self._wait(answers, missing)
                return

    def _wait(self, answers: dict[Question, Answer], missing: list[tuple[Question, Deferred]]) -> None:
        left = [len(missing)]

        def one(answer: Answer, q: Question) -> None:
            answers[q] = answer
            left[0] -= 1
            if left[0] == 0 and not self.result.called:
                self._advance(answers)

        for q, d in missing:
            d.addCallback(one, q)

    def _finish(self, value: Any) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        self.locator._running.discard(self)
        if self.result.called:
            return
        if isinstance(value, Failure):
            self.result.errback(value)
        else:
            log.debug("{host} located: {targets}", host=self.host, targets=", ".join(map(str, value)) or "nothing")
            self.result.callback(value)

    def _expired(self) -> None:
        self.deadline = None
        self.locator.stats["timeouts"] += 1
        log.info("locating {host}: no answer from the DNS within {t:g} s", host=self.host,
                 t=self.locator.settings.timeout)
        self.procedure.close()
        self._finish(Failure(SendError("Name Resolution Failed")))


# -- twisted.names records -> plain answers -------------------------------------------------------------

def _answer(result: tuple[list[Any], list[Any], list[Any]], question: Question) -> Answer:
    answers, authority, _ = result
    wanted = _TYPES[question.rtype]
    records: list[Any] = []
    ttls: list[int] = []
    for rr in answers:
        if rr.type != wanted:
            continue  # CNAMEs: the server put the target's records in the answer as well
        record = _record(rr.payload)
        if record is not None and record not in records:
            records.append(record)
            ttls.append(rr.ttl)
    if records:
        return Answer(tuple(records), float(min(ttls)))
    return Answer((), _negative_ttl(authority))


def _failed(failure: Failure, question: Question) -> Answer:
    if failure.check(DNSNameError):
        args = getattr(failure.value, "args", ())
        message = args[0] if args else None
        return Answer((), _negative_ttl(getattr(message, "authority", ())), nxdomain=True)
    log.info("DNS {rtype} {name}: {why}", rtype=question.rtype, name=question.name,
             why=failure.getErrorMessage() or getattr(failure.type, "__name__", "error"))
    return Answer.failure()


def _negative_ttl(authority: Any) -> float:
    """RFC 2308 §5: a negative answer lives min(SOA TTL, SOA minimum); without an SOA, not at all."""
    for rr in authority or ():
        if rr.type == dns.SOA:
            return float(min(rr.ttl, rr.payload.minimum))
    return 0.0


def _record(payload: Any) -> Any:
    if isinstance(payload, dns.Record_A):
        return payload.dottedQuad()
    if isinstance(payload, dns.Record_AAAA):
        return socket.inet_ntop(socket.AF_INET6, payload.address)
    if isinstance(payload, dns.Record_SRV):
        return Srv(payload.priority, payload.weight, payload.port, payload.target.name.decode("ascii", "replace"))
    if isinstance(payload, dns.Record_NAPTR):
        return Naptr(payload.order, payload.preference, payload.flags.string.decode("ascii", "replace"),
                     payload.service.string.decode("ascii", "replace"),
                     payload.regexp.string.decode("ascii", "replace"),
                     payload.replacement.name.decode("ascii", "replace"))
    return None
