"""Checking a request's digest credentials and building challenges: OpenSIPS's ``www_authorize`` /
``proxy_authorize`` and ``www_challenge`` / ``proxy_challenge``, behind the route API.

The order of the checks is OpenSIPS's, chosen so that the cheap refusals come first and a forger
cannot spend anything that belongs to a real client: credentials for our realm (else -4), their
shape (a malformed header is the client's error: 400), the nonce's signature and age (-3, answered
with a ``stale=true`` challenge that UAs follow without asking the user again) -- all before the
subscriber store is asked; then the user (-1), the response (-2), and only after a match is the nonce
consumed, so replaying a captured request (-3) does not burn a nonce a real UA still holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ..latency import LatencyHistogram
from ..sip.message import Request
from ..sip.values import parse_credentials
from .backoff import FailureBackoff
from .digest import DigestError, DigestResponse, base_algorithm, challenge_value, compute_ha1, response_matches
from .nonce import NonceIssuer, NonceState
from .settings import AuthSettings
from .subscribers import MemorySubscribers, Subscriber, SubscriberStore, SubscriberStoreError, SubscriberTable

__all__ = ["AuthResult", "AuthOutcome", "Authenticator", "DigestError", "HostileInputLog", "default_realm",
           "subscriber_store"]

log = Logger(namespace="edgeproxy.auth")

#: Header holding the credentials, by challenge kind (RFC 3261 §22.2 / §22.3).
CREDENTIALS_HEADER = {False: "Authorization", True: "Proxy-Authorization"}
CHALLENGE_HEADER = {False: "WWW-Authenticate", True: "Proxy-Authenticate"}


class AuthResult(IntEnum):
    """``$retcode`` of OpenSIPS's ``www_authorize`` / ``proxy_authorize``."""

    AUTHORIZED = 1
    INVALID_USER = -1
    INVALID_PASSWORD = -2
    STALE_NONCE = -3
    NO_CREDENTIALS = -4
    GENERIC_ERROR = -5


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """What a check found: the result, and for a match who authenticated (``$au``, ``$ar``) and the
    header value that did it (removed by ``consume_credentials``). ``stale`` asks the next challenge
    for ``stale=true``."""

    result: AuthResult
    username: str | None = None
    realm: str | None = None
    header: str | None = None
    stale: bool = False
    subscriber: Subscriber | None = None


def default_realm(request: Request, proxy: bool) -> str:
    """OpenSIPS's realm for ``""``: the To domain of a REGISTER (the user being registered), the From
    domain of anything else."""
    uri = request.to.uri if request.method == "REGISTER" and not proxy else request.from_.uri
    return getattr(uri, "host", "") or ""


class HostileInputLog(Protocol):
    """Where repeated authentication failures and subscriber-store failures are reported: the node's
    aggregated log of hostile input (:class:`~edgeproxy.proxy.noise.NoiseLog`: one line per source per
    interval, with counts), so that a guesser spraying user names is not a line per user, nor a flood
    of REGISTERs while the database is down a line per request (issue 16)."""

    def note(self, source: str, kind: str, detail: str = "", *, level: LogLevel = LogLevel.info) -> None: ...


class Authenticator:
    """One node's digest authentication: the nonce issuer, the subscriber store and the settings.

    ``clock`` is anything with ``seconds()`` (the reactor, or ``task.Clock`` in tests).
    """

    def __init__(self, settings: AuthSettings, store: SubscriberStore, clock: Any,
                 noise: HostileInputLog | None = None) -> None:
        self.noise = noise  # None: a line each (tests, tools)
        self.settings = settings
        self.store = store
        self.clock = clock
        secret = settings.secret.encode() if settings.secret else os.urandom(32)
        self.nonces = NonceIssuer(secret, settings.nonce_expire, reuse=settings.nonce_reuse)
        self.stats = {result.name.lower(): 0 for result in AuthResult}
        self.stats["backoff"] = 0  # attempts refused unchecked: their user or source was backed off
        self.failures = FailureBackoff(settings.max_failures, settings.failure_window, settings.backoff)
        self.source_failures = FailureBackoff(settings.max_failures_per_source, settings.failure_window,
                                              settings.backoff)
        # subscriber-store lookups: how long they took (answers and failures alike) and how many failed
        self.store_latency = LatencyHistogram()
        self.store_errors = 0

    def authorize(self, request: Request, realm: str = "", *, proxy: bool = False,
                  table: str | None = None, source: str | None = None) -> "Deferred[AuthOutcome]":
        """Check the request's credentials for ``realm`` (``""``: :func:`default_realm`).

        ``source`` is the address the request came from: with the credentials' user, what repeated
        failures back off (:class:`~.backoff.FailureBackoff`, ``[auth] max_failures``); while either
        is backed off the credentials are not checked and the outcome is -2, whatever they are.

        Raises :class:`~.digest.DigestError` (status 400) when our realm's credentials are malformed;
        every other outcome, store failures included, is an :class:`AuthOutcome`. ``table`` is the
        script's table name, accepted when it is the configured one (or OpenSIPS's ``subscriber``).
        """
        if table is not None and table not in ("subscriber", self.settings.table):
            raise ValueError(f"table {table!r}: credentials come from [auth] table {self.settings.table!r}")
        realm = realm or default_realm(request, proxy)
        found = self._credentials(request, realm, proxy)
        if found is None:
            return succeed(self._count(AuthOutcome(AuthResult.NO_CREDENTIALS, realm=realm)))
        header, creds = found
        if creds.algorithm not in self.settings.algorithms:
            # answered with an algorithm we did not offer: a fresh challenge offers the right ones
            return succeed(self._count(AuthOutcome(AuthResult.NO_CREDENTIALS, realm=realm)))
        now = self.clock.seconds()
        user = f"{creds.username}@{realm}" if self.settings.use_domain else creds.username
        if self.failures.blocked(user, now) or (source is not None and self.source_failures.blocked(source, now)):
            self.stats["backoff"] += 1
            return succeed(self._count(AuthOutcome(AuthResult.INVALID_PASSWORD, realm=realm)))
        if self.nonces.verify(creds.nonce, now) is not NonceState.VALID:
            return succeed(self._count(AuthOutcome(AuthResult.STALE_NONCE, realm=realm, stale=True)))
        d = self.store.get(creds.username, realm if self.settings.use_domain else None)
        d.addBoth(self._timed, now)
        checked = d.addCallbacks(self._check, self._store_failed, callbackArgs=(request, creds, header, realm),
                                 errbackArgs=(creds, realm))
        return checked.addCallback(self._record, user, source)

    def _record(self, outcome: AuthOutcome, user: str, source: str | None) -> AuthOutcome:
        """Count a wrong password or an unknown user against the user and the source; a success
        clears the user's record (only the user knows the password: the source's stays)."""
        if outcome.result in (AuthResult.INVALID_PASSWORD, AuthResult.INVALID_USER):
            now = self.clock.seconds()
            if self.failures.failed(user, now):
                self._backed_off(source, f"user {user} backed off after {self.failures.max_failures} failed attempts")
            if source is not None and self.source_failures.failed(source, now):
                self._backed_off(source, f"source backed off after {self.source_failures.max_failures} failed attempts")
        elif outcome.result == AuthResult.AUTHORIZED:
            self.failures.succeeded(user)
        return outcome

    def challenge(self, request: Request, realm: str = "", *, proxy: bool = False, stale: bool = False,
                  qop: str | None = None, algorithms: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
        """The challenge headers of a 401 (``proxy``: 407) to ``request``, one per algorithm, preferred
        first (RFC 8760 §2.4), each with a fresh nonce; ``realm`` ``""``: :func:`default_realm`."""
        # challenge_value checks (and canonicalises) the algorithm and qop: a bad one is a ValueError
        realm = realm or default_realm(request, proxy)
        name = CHALLENGE_HEADER[proxy]
        qop = self.settings.qop if qop is None else qop
        now = self.clock.seconds()
        return [(name, challenge_value(realm, self.nonces.issue(now), algorithm=algorithm, qop=qop, stale=stale))
                for algorithm in (algorithms or self.settings.algorithms)]

    # -- steps ------------------------------------------------------------------------------------------
    def _credentials(self, request: Request, realm: str, proxy: bool) -> tuple[str, DigestResponse] | None:
        """The first Digest credentials for ``realm`` (other realms' belong to other servers on the
        path, RFC 3261 §22.3); malformed ones for our realm raise DigestError (400)."""
        for value in request.headers.get_all(CREDENTIALS_HEADER[proxy]):
            creds = parse_credentials(value)
            if creds.scheme.lower() != "digest" or creds.params.get("realm") != realm:
                continue
            return value, DigestResponse.from_credentials(creds)
        return None

    def _check(self, subscriber: Subscriber | None, request: Request, creds: DigestResponse, header: str,
               realm: str) -> AuthOutcome:
        if subscriber is None:
            return self._count(AuthOutcome(AuthResult.INVALID_USER, realm=realm))
        ha1 = subscriber.ha1.get(base_algorithm(creds.algorithm))
        if ha1 is None and subscriber.password is not None:
            ha1 = compute_ha1(creds.algorithm, creds.username, realm, subscriber.password)
        if ha1 is None:
            log.warn("auth: subscriber {user} has no {alg} HA1 and no password", user=creds.username,
                     alg=base_algorithm(creds.algorithm))
            return self._count(AuthOutcome(AuthResult.GENERIC_ERROR, realm=realm))
        if not response_matches(creds, ha1, request.method, request.body or b""):
            return self._count(AuthOutcome(AuthResult.INVALID_PASSWORD, realm=realm))
        # ACK and CANCEL repeat the INVITE's credentials (RFC 3261 §22.1): checked, never consumed. A
        # REGISTER has no server transaction to absorb its retransmissions: the same request again
        # (same response, Call-ID and CSeq) is let through to the registrar, which answers it as one
        proof = (f"{creds.response}|{request.call_id}|{request.cseq.number}"
                 if request.method == "REGISTER" else None)
        if request.method not in ("ACK", "CANCEL") and not self.nonces.consume(creds.nonce, creds.nc,
                                                                              self.clock.seconds(),
                                                                              resend_proof=proof):
            return self._count(AuthOutcome(AuthResult.STALE_NONCE, realm=realm, stale=True))
        return self._count(AuthOutcome(AuthResult.AUTHORIZED, username=creds.username, realm=realm, header=header,
                                       subscriber=subscriber))

    def _timed(self, result: Any, started: float) -> Any:
        self.store_latency.observe(self.clock.seconds() - started)
        if isinstance(result, Failure):
            self.store_errors += 1
        return result

    def _backed_off(self, source: str | None, what: str) -> None:
        noise = self.noise
        if noise is not None and source is not None:
            noise.note(source, "auth back-off", what)
        else:
            log.info("auth: {what} (source {source})", what=what, source=source)

    def _store_failed(self, failure: Failure, creds: DigestResponse, realm: str) -> AuthOutcome:
        if failure.check(SubscriberStoreError):
            noise = self.noise
            if noise is not None:
                # the database is down: every request asking for credentials fails the same way, so
                # the store is the source: its first failure said, the rest counted per interval
                noise.note(f"subscriber store {self.settings.table}", "credentials unavailable",
                           f"{creds.username}@{realm}: {failure.getErrorMessage()}", level=LogLevel.error)
            else:
                log.error("auth: credentials of {user}@{realm} unavailable: {why}", user=creds.username,
                          realm=realm, why=failure.getErrorMessage())
        else:
            log.failure("auth: subscriber lookup of {user}@{realm} failed", failure, user=creds.username, realm=realm)
        return self._count(AuthOutcome(AuthResult.GENERIC_ERROR, realm=realm))

    def _count(self, outcome: AuthOutcome) -> AuthOutcome:
        self.stats[outcome.result.name.lower()] += 1
        return outcome

    def close(self) -> Any:
        return self.store.close()


def subscriber_store(settings: AuthSettings, reactor: Any = None) -> SubscriberStore:
    """The store the settings name: the subscriber table of ``db_url``, else ``[auth.users]``."""
    if settings.db_url:
        return SubscriberTable(settings.db_url, settings.table, reactor=reactor,
                               password_column=settings.password_column, calculate_ha1=settings.calculate_ha1,
                               use_domain=settings.use_domain, load_credentials=settings.load_credentials,
                               timeout=settings.timeout)
    return MemorySubscribers(settings.users, use_domain=settings.use_domain)

