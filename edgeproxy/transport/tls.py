"""SIP over TLS (RFC 3261 §18, §26.2.1; RFC 5922 server identity; RFC 5630 sips).

The stream is framed exactly as over TCP: :class:`SipTlsProtocol` is a
:class:`~edgeproxy.transport.tcp.SipStreamProtocol` under Twisted's ``TLSMemoryBIOProtocol`` (pyOpenSSL),
whose flows carry the transport ``TLS`` (Via ``SIP/2.0/TLS``). The one difference is *when* a
connection exists for the rest of the node: only once the TLS handshake has completed
(``IHandshakeListener``). Before that it has no id and no flow, counts as pending against
``max_connections`` and is aborted after ``handshake_timeout``; a handshake that fails -- an untrusted
or missing client certificate, a server certificate for another name, no common protocol version --
is logged with the peer's address and closes that connection only. An outbound connection opened to
send (§18.1.1) completes its sends only after the handshake; a failure fails them with
``SendError(..., 503)``.

Certificates. :class:`TlsSettings` names PEM files: ``certificate`` (the leaf first, then any
intermediates: a chain file), ``key``, ``ca`` (the authorities trusted for peers). The same
certificate is the server's and, for mutual TLS toward trunks, the client's. ``sni`` maps server names
to other certificate/key pairs; OpenSSL's server-name callback
(``set_tlsext_servername_callback``) swaps the connection's context when a client asks for one of
them (a ``*.example.com`` key matches one label). Outbound connections verify the server's
certificate against the name the destination was given by (or its IP address) with
``service-identity``, unless ``verify_server`` is off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ..interfaces import ConnectionRegistry, Dial, MessageSink, Timer
from ..sip.address import ip_literal
from ..sip.endpoint import Endpoint
from ._util import peer_host
from .tcp import SipClientFactory, SipServerFactory, SipStreamProtocol

__all__ = ["TlsSettings", "TlsContexts", "SipTlsProtocol", "SipTlsServerFactory", "SipTlsClientFactory",
           "TlsServerWrapper", "handshake_failure_reason"]

log = Logger(namespace="edgeproxy.transport.tls")

_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1_0,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_CACHE = 256


@dataclass(frozen=True)
class TlsSettings:
    """TLS for ``tls`` and ``wss`` listeners and outbound ``TLS`` connections.

    ``certificate``: PEM chain file (leaf first); ``key``: its PEM private key (unencrypted);
    ``ca``: PEM bundle of the authorities that sign peers' certificates ("" = the system's trust
    store, for outbound connections only). ``min_version``: ``"1.2"`` (default) or ``"1.3"``
    (``"1.0"``/``"1.1"`` only for old trunks, if the local OpenSSL still allows them); ``max_version``
    caps it (``"1.2"`` for clients that mishandle TLS 1.3, e.g. sipsak 0.9.8; "" = none). ``ciphers``: an
    OpenSSL cipher string for TLS 1.2 and below ("" = Twisted's defaults; TLS 1.3 suites are fixed).
    ``groups``: the key-exchange groups, an OpenSSL list in order of preference ("" = OpenSSL's
    defaults, which put the post-quantum hybrid ``X25519MLKEM768`` first). Each connection that used
    it keeps the client's ML-KEM public key, about 7.8 KB: ``"X25519:P-256"`` saves that per idle
    connection (10,000 WSS clients: ~78 MB) at the price of classical-only key exchange. The default
    stays post-quantum: SIP signalling carries SDES-SRTP keys and credentials that a recording made
    today must not give away later, and with it an idle WSS client costs the whole node 35.5 KiB
    (29.1 KiB classical; ``bench/ws_memory.py``).
    ``require_client_cert``: inbound peers must present a certificate signed by ``ca`` (mutual TLS
    for trunks). ``verify_server``: outbound connections check the server's certificate and its name.
    ``sni``: ``{server name: (certificate, key)}`` served instead of the default to clients that ask
    for that name. ``handshake_timeout``: seconds a connection may take to complete its handshake.
    """

    certificate: str = ""
    key: str = ""
    ca: str = ""
    min_version: str = "1.2"
    max_version: str = ""
    ciphers: str = ""
    groups: str = ""
    require_client_cert: bool = False
    verify_server: bool = True
    sni: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    handshake_timeout: float = 10.0


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} {path!r}: {exc.strerror or exc}") from None


def _load_certificates(path: str, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"the TLS {what} {path!r} holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificates(data)
    except Exception as exc:
        raise ValueError(f"the TLS {what} {path!r} holds a broken certificate: {exc}") from None


def _load_key(path: str) -> Any:
    data = _read(path, "key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except Exception as exc:
        raise ValueError(f"the TLS key {path!r} is not a readable unencrypted PEM private key: {exc}") from None


try:  # the interface of trustRoot; public in spirit (documented on CertificateOptions), private in name
    from twisted.internet._sslverify import IOpenSSLTrustRoot as _TrustRootInterface
except ImportError:  # pragma: no cover - older or newer Twisted
    _TrustRootInterface = None  # type: ignore[assignment,misc]


class _CaBundle:
    """Trust the authorities of one PEM bundle file: OpenSSL reads the file into each context's store
    (no pyOpenSSL certificate objects, which pyOpenSSL 24.3+ deprecates)."""

    def __init__(self, path: str) -> None:
        _load_certificates(path, "CA bundle")  # fail early, with the file's name
        self.path = path

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.load_verify_locations(self.path)


if _TrustRootInterface is not None:
    implementer(_TrustRootInterface)(_CaBundle)


def _groups_setters() -> tuple[Any, Any]:
    """OpenSSL's ``SSL_CTX_set1_curves_list`` / ``SSL_set1_curves_list`` (pyOpenSSL has no public
    call for groups; cryptography's bindings, which it uses, have these two)."""
    try:
        from cryptography.hazmat.bindings.openssl.binding import Binding
    except ImportError:  # pragma: no cover
        return None, None
    lib = Binding().lib
    return getattr(lib, "SSL_CTX_set1_curves_list", None), getattr(lib, "SSL_set1_curves_list", None)


def _trust_root(path: str) -> Any:
    if _TrustRootInterface is not None:
        return _CaBundle(path)
    return ssl.trustRootFromCertificates(  # pragma: no cover
        [ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM))
         for c in _load_certificates(path, "CA bundle")])


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClient:
    """An outbound connection creator that does not check the server (``verify_server = false``)
    but still sends the server name (SNI) when it is a DNS name."""

    def __init__(self, options: ssl.CertificateOptions, server_name: str) -> None:
        self._options = options
        self._name = None if ip_literal(server_name) is not None else server_name.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._name:
            connection.set_tlsext_host_name(self._name)
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class _WithGroups:
    """An outbound connection creator whose connections offer only the configured groups."""

    def __init__(self, creator: Any, groups: bytes) -> None:
        self._creator = creator
        self._groups = groups

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self._creator.clientConnectionForTLS(tlsProtocol)
        _, ssl_setter = _groups_setters()
        ssl_setter(connection._ssl, self._groups)
        return connection


class TlsContexts:
    """The OpenSSL contexts of one node, built once from :class:`TlsSettings` (a missing or broken
    file raises ValueError naming it, so a node refuses to start rather than fail per connection).

    ``server`` is the connection creator for ``tls``/``wss`` listeners (None without a
    certificate); :meth:`client` returns the creator for an outbound connection to a server name.
    """

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        version = _VERSIONS.get(str(settings.min_version))
        if version is None:
            raise ValueError(f"TLS min_version must be one of {', '.join(_VERSIONS)}, got {settings.min_version!r}")
        common: dict[str, Any] = {}
        if version in (ssl.TLSVersion.TLSv1_0, ssl.TLSVersion.TLSv1_1):
            common["insecurelyLowerMinimumTo"] = version
        else:
            common["raiseMinimumTo"] = version
        if settings.max_version:
            highest = _VERSIONS.get(str(settings.max_version))
            if highest is None:
                raise ValueError(f"TLS max_version must be one of {', '.join(_VERSIONS)}, "
                                 f"got {settings.max_version!r}")
            if list(_VERSIONS.values()).index(highest) < list(_VERSIONS.values()).index(version):
                raise ValueError(f"TLS max_version {settings.max_version} is below min_version {settings.min_version}")
            common["lowerMaximumSecurityTo"] = highest
            if "raiseMinimumTo" in common:  # Twisted wants the explicit minimum with a maximum
                common["insecurelyLowerMinimumTo"] = common.pop("raiseMinimumTo")
        if settings.ciphers:
            try:
                SSL.Context(SSL.TLS_METHOD).set_cipher_list(settings.ciphers.encode("ascii"))
                accepted = ssl.AcceptableCiphers.fromOpenSSLCipherString(settings.ciphers)
            except Exception as exc:
                raise ValueError(f"TLS ciphers {settings.ciphers!r} are not an OpenSSL cipher string: {exc}") from None
            common["acceptableCiphers"] = accepted
        self._common = common
        self._groups = settings.groups.strip().encode("ascii") if settings.groups else b""
        if self._groups:
            ctx_setter, _ = _groups_setters()
            if ctx_setter is None:
                raise ValueError("TLS groups cannot be set with this pyOpenSSL/cryptography")
            if ctx_setter(SSL.Context(SSL.TLS_METHOD)._context, self._groups) != 1:
                raise ValueError(f"TLS groups {settings.groups!r} are not a list of groups this OpenSSL knows")
        self._trust: Any = None
        if settings.ca:
            self._trust = _trust_root(settings.ca)
        if settings.require_client_cert and self._trust is None:
            raise ValueError("TLS require_client_cert needs a ca bundle to check client certificates against")
        self._identity: dict[str, Any] = {}
        if settings.certificate or settings.key:
            if not (settings.certificate and settings.key):
                raise ValueError("TLS needs both certificate and key (or neither)")
            self._identity = self._identity_options(settings.certificate, settings.key)
        self.server: ssl.CertificateOptions | None = None
        self._by_name: dict[str, SSL.Context] = {}
        if self._identity:
            self.server = self._server_options(self._identity)
            self._apply_groups(self.server.getContext())
            for name, pair in (settings.sni or {}).items():
                try:
                    cert, key = pair
                except (TypeError, ValueError):
                    raise ValueError(f"TLS sni {name!r} must be a (certificate, key) pair") from None
                context = self._server_options(self._identity_options(cert, key)).getContext()
                self._apply_groups(context)
                self._by_name[name.lower().rstrip(".")] = context
            if self._by_name:
                self.server.getContext().set_tlsext_servername_callback(self._select_certificate)
        elif settings.sni:
            raise ValueError("TLS sni needs a default certificate and key as well")
        self._clients: dict[str, Any] = {}
        self._unverified: ssl.CertificateOptions | None = None

    def _apply_groups(self, context: SSL.Context) -> None:
        if self._groups:
            ctx_setter, _ = _groups_setters()
            ctx_setter(context._context, self._groups)

    def _identity_options(self, cert_path: str, key_path: str) -> dict[str, Any]:
        chain = _load_certificates(cert_path, "certificate")
        key = _load_key(key_path)
        leaf = chain[0]
        try:
            context = SSL.Context(SSL.TLS_METHOD)
            context.use_certificate(leaf)
            context.use_privatekey(key)
            context.check_privatekey()
        except SSL.Error:
            raise ValueError(f"the TLS key {key_path!r} does not match the certificate {cert_path!r}") from None
        return {"certificate": leaf, "privateKey": key, "extraCertChain": chain[1:]}

    def _server_options(self, identity: dict[str, Any]) -> ssl.CertificateOptions:
        options = dict(self._common, **identity)
        if self.settings.require_client_cert:
            options["trustRoot"] = self._trust  # implies verify and requireCertificate
        return ssl.CertificateOptions(**options)

    @property
    def has_server(self) -> bool:
        return self.server is not None

    def server_names(self) -> list[str]:
        """The SNI names served with their own certificate."""
        return sorted(self._by_name)

    def _select_certificate(self, connection: SSL.Connection) -> None:
        """OpenSSL's server-name callback: serve the certificate configured for the name asked for
        (exact, else ``*.parent``), else keep the default."""
        try:
            raw = connection.get_servername()
            if not raw:
                return
            name = raw.decode("ascii", "replace").lower().rstrip(".")
            context = self._by_name.get(name)
            if context is None and "." in name:
                context = self._by_name.get("*." + name.split(".", 1)[1])
            if context is not None:
                connection.set_context(context)
        except Exception:
            log.failure("choosing the certificate for a TLS server name failed")

    def client(self, server_name: str) -> Any:
        """The connection creator for an outbound connection to ``server_name`` (the destination's
        host name, or its IP address when it was given as one), whose certificate must name it."""
        if not self.settings.verify_server:
            if self._unverified is None:
                self._unverified = ssl.CertificateOptions(**dict(self._common, **self._identity))
                self._apply_groups(self._unverified.getContext())
            return _UnverifiedClient(self._unverified, server_name)
        creator = self._clients.get(server_name)
        if creator is None:
            if len(self._clients) >= _CLIENT_CACHE:
                self._clients.clear()
            extra = dict(self._common)
            if self._identity:
                extra.update(self._identity)
            trust = self._trust if self._trust is not None else ssl.platformTrust()
            creator = ssl.optionsForClientTLS(server_name, trustRoot=trust, extraCertificateOptions=extra)
            if self._groups:
                creator = _WithGroups(creator, self._groups)
            self._clients[server_name] = creator
        return creator


def handshake_failure_reason(reason: Failure) -> str:
    """A short text for why a TLS connection ended before or during its handshake."""
    value = reason.value
    if isinstance(value, ssl.VerificationError) or type(value).__name__ in ("VerificationError",
                                                                             "CertificateError"):
        return f"certificate name mismatch ({value})"
    if isinstance(value, SSL.Error):
        details = []
        for item in value.args[0] if value.args and isinstance(value.args[0], list) else ():
            if isinstance(item, tuple) and item:
                details.append(str(item[-1]))
        return "; ".join(details) or str(value) or "TLS error"
    return reason.getErrorMessage()


@implementer(IHandshakeListener)
class SipTlsProtocol(SipStreamProtocol):
    """One SIP-over-TLS connection. Framing, keep-alives and errors are those of
    :class:`SipStreamProtocol`; it joins the registry (id, flow, sends) when the handshake completes,
    which must happen within ``handshake_timeout`` seconds (:attr:`TlsSettings.handshake_timeout`)."""

    transport_name = "TLS"

    def __init__(self, registry: ConnectionRegistry, sink: MessageSink, local: Endpoint | None,
                 dial: Dial | None = None, handshake_timeout: float = TlsSettings.handshake_timeout) -> None:
        super().__init__(registry, sink, local, dial)
        self.handshake_timeout = handshake_timeout
        self._handshake_call: Timer | None = None

    def connectionMade(self) -> None:
        # TCP is up; the handshake is running (RFC 3261 §26.2.1: no message before it is done).
        registry = self.registry
        registry.handshake_started(self, peer_host(self.transport))
        timeout = self.handshake_timeout
        if timeout and timeout > 0:
            self._handshake_call = registry.clock.callLater(timeout, self._handshake_timed_out)

    def handshakeCompleted(self) -> None:
        self._cancel_handshake_timer()
        self.registry.handshake_ended(self)
        if self.closing:
            return
        super().connectionMade()

    def _cancel_handshake_timer(self) -> None:
        call, self._handshake_call = self._handshake_call, None
        if call is not None and call.active():
            call.cancel()

    def _handshake_timed_out(self) -> None:
        self._handshake_call = None
        # handshake junk from scanners is not a line per connection (issue 16)
        self.registry.note_event(peer_host(self.transport), "TLS handshake failed",
                                 f"with {self._peer()}: timed out")
        self.abort()

    def _peer(self) -> str:
        try:
            transport: Any = self.transport
            peer = transport.getPeer()
            return Endpoint("TLS", peer.host, peer.port).hostport
        except Exception:
            return "?"

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_handshake_timer()
        registry = self.registry
        if registry.handshake_ended(self) or (self.flow is None and self.dial is not None):
            why = handshake_failure_reason(reason)
            # our own dials too: a route may send towards any address a request named
            registry.note_event(peer_host(self.transport), "TLS handshake failed", f"with {self._peer()}: {why}")
            dial, self.dial = self.dial, None
            if dial is not None:
                registry.dial_failed(dial, reason)
        super().connectionLost(reason)


class TlsServerWrapper(TLSMemoryBIOFactory):
    """Twisted's TLS server wrapper, except that the wrapped factory may refuse a connection
    (``buildProtocol`` returning None closes the socket before any handshake)."""

    noisy = False

    def buildProtocol(self, addr: Any) -> Any:
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)


class SipTlsServerFactory(SipServerFactory):
    """Builds the :class:`SipTlsProtocol` of each admitted connection of one TLS listener (wrapped
    by the manager in a ``TLSMemoryBIOFactory``)."""

    transport_name = "TLS"

    def __init__(self, registry: ConnectionRegistry, sink: MessageSink, handshake_timeout: float) -> None:
        super().__init__(registry, sink)
        self.handshake_timeout = handshake_timeout

    def connection(self, dial: Dial | None) -> SipTlsProtocol:
        return SipTlsProtocol(self.registry, self.sink, self.local, dial, self.handshake_timeout)


class SipTlsClientFactory(SipClientFactory):
    """Builds the protocol of one outbound TLS connection."""

    transport_name = "TLS"

    def __init__(self, registry: ConnectionRegistry, sink: MessageSink, dial: Dial, handshake_timeout: float) -> None:
        super().__init__(registry, sink, dial)
        self.handshake_timeout = handshake_timeout

    def connection(self, dial: Dial | None) -> SipTlsProtocol:
        return SipTlsProtocol(self.registry, self.sink, None, dial, self.handshake_timeout)
