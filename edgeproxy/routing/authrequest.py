"""``msg``'s authentication (OpenSIPS ``auth`` / ``auth_db``): ``$au``, ``$ar``,
``www_authorize`` / ``proxy_authorize``, ``www_challenge`` / ``proxy_challenge``,
``consume_credentials``, ``db_check_to`` / ``db_check_from`` -- :class:`AuthRequest`, a part of
:class:`~edgeproxy.routing.api.RouteRequest`, over the node's
:class:`~edgeproxy.auth.Authenticator` (RFC 3261 §22, RFC 7616).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, maybeDeferred

from ..auth import Authenticator, AuthOutcome, AuthResult
from ..sip.uri import URI, SipURI
from .part import RequestPart

__all__ = ["AuthRequest"]


class AuthRequest(RequestPart):
    """``msg``'s authentication functions (a part of :class:`~edgeproxy.routing.api.RouteRequest`)."""

    __slots__ = ()

    @property
    def au(self) -> str | None:
        """The user whose credentials were accepted (OpenSIPS ``$au``), None before that."""
        a = self._state.auth
        return a.username if a is not None and a.result is AuthResult.AUTHORIZED else None

    @property
    def ar(self) -> str | None:
        """The realm of the accepted credentials (OpenSIPS ``$ar``)."""
        a = self._state.auth
        return a.realm if a is not None and a.result is AuthResult.AUTHORIZED else None

    @property
    def auth_enabled(self) -> bool:
        """Whether the node has an ``[auth]`` section (Kamailio's ``WITH_AUTH``)."""
        return self._verbs.authenticator() is not None

    def www_authorize(self, realm: str = "", table: str = "subscriber") -> "Deferred[AuthResult]":
        """Check the ``Authorization`` credentials for ``realm`` (``""``: the To domain of a REGISTER,
        the From domain otherwise). Fires with an :class:`AuthResult`: AUTHORIZED (1), INVALID_USER
        (-1), INVALID_PASSWORD (-2), STALE_NONCE (-3), NO_CREDENTIALS (-4), GENERIC_ERROR (-5: the
        store could not answer). Malformed credentials raise a 400."""
        return self._authorize(realm, table, proxy=False)

    def proxy_authorize(self, realm: str = "", table: str = "subscriber") -> "Deferred[AuthResult]":
        """:meth:`www_authorize` for ``Proxy-Authorization`` (calls and other requests to relay)."""
        return self._authorize(realm, table, proxy=True)

    def _authenticator(self) -> Authenticator:
        auth = self._verbs.authenticator()
        if auth is None:
            raise RuntimeError("the route authenticates, but the node has no [auth] section")
        return auth

    def _authorize(self, realm: str, table: str, proxy: bool) -> "Deferred[AuthResult]":
        state = self._state

        def keep(outcome: AuthOutcome) -> AuthResult:
            state.auth = outcome
            return outcome.result

        # maybeDeferred: malformed credentials raise a DigestError (400) that the route's await sees
        d = maybeDeferred(self._authenticator().authorize, state.request, realm, proxy=proxy, table=table,
                          source=state.source.remote.host)
        return d.addCallback(keep)

    def www_challenge(self, realm: str = "", qop: str | None = None, algorithms: str | None = None) -> None:
        """Answer 401 with a ``WWW-Authenticate`` challenge per algorithm (``"SHA-256,MD5"``; default
        ``[auth] algorithms``), ``qop`` ``"auth"``, ``"auth-int"``, ``"auth,auth-int"`` or ``""``
        (default ``[auth] qop``); ``stale=true`` when the last authorize found a stale nonce."""
        self._challenge(realm, qop, algorithms, proxy=False)

    def proxy_challenge(self, realm: str = "", qop: str | None = None, algorithms: str | None = None) -> None:
        """Answer 407 with ``Proxy-Authenticate`` challenges (see :meth:`www_challenge`)."""
        self._challenge(realm, qop, algorithms, proxy=True)

    def _challenge(self, realm: str, qop: str | None, algorithms: str | None, proxy: bool) -> None:
        state = self._state
        names = tuple(a.strip() for a in algorithms.split(",") if a.strip()) if algorithms else None
        stale = state.auth is not None and state.auth.stale
        state.reply_headers += self._authenticator().challenge(state.request, realm, proxy=proxy, stale=stale,
                                                               qop=qop, algorithms=names)
        if proxy:
            self._verbs.reply(state, 407, "Proxy Authentication Required", False)
        else:
            self._verbs.reply(state, 401, "Unauthorized", False)

    def consume_credentials(self) -> bool:
        """Remove the accepted credentials from the request before it is relayed (the next hop has no
        use for them, and they name our realm); False when nothing was accepted."""
        state = self._state
        a = state.auth
        if a is None or a.result is not AuthResult.AUTHORIZED or a.header is None:
            return False
        return any(state.request.headers.discard(name, a.header) for name in ("Authorization", "Proxy-Authorization"))

    def check_to(self) -> bool:
        """OpenSIPS ``db_check_to()``: the To user is the one who authenticated (a REGISTER may only
        change its own bindings)."""
        return self._is_auth_user(self._state.request.to.uri)

    def check_from(self) -> bool:
        """OpenSIPS ``db_check_from()``: the From user is the one who authenticated (no calling as
        somebody else)."""
        return self._is_auth_user(self._state.request.from_.uri)

    def _is_auth_user(self, uri: URI) -> bool:
        user = self.au
        if user is None or not isinstance(uri, SipURI) or uri.user is None:
            return False
        name, at, domain = user.partition("@")
        if at and domain.lower() != uri.host.lower():
            return False
        return name == uri.user
