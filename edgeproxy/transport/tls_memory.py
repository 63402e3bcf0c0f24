"""Giving back the memory an idle TLS connection keeps in its memory BIOs.

Twisted runs TLS through pyOpenSSL with a pair of OpenSSL memory BIOs per connection: received
ciphertext is written into one, what OpenSSL produces is read out of the other. An OpenSSL memory
BIO's buffer grows to the largest chunk it ever held and never shrinks, so an idle connection keeps
the size of its handshake flights -- the ClientHello with its key shares in one, the server's
certificate chain in the other -- about 5 KB per connection, an eighth of the per-connection
budget of issue 4 (10,000 idle WSS clients in ≤ 40 KB each). ``SSL_MODE_RELEASE_BUFFERS``, which
Twisted sets, frees OpenSSL's own record buffers but not the BIOs.

:func:`release_bio_buffers` swaps an idle connection's two BIOs for fresh, empty ones (OpenSSL's
``SSL_set_bio`` frees the old pair). :class:`IdleTlsReclaimer` does it once per burst of activity:
every ``interval`` seconds it releases the connections that received something in the previous
window and have been quiet for ``quiet`` seconds since, so a busy connection is not churned on every
message and an idle one is not touched again.

pyOpenSSL has no public call for this: the swap uses its ``Connection``'s BIO attributes and the
OpenSSL functions of the bindings it is built on. When a pyOpenSSL release lacks them, nothing is
swapped and the connections just keep their buffers (logged once).
"""

from __future__ import annotations

from typing import Mapping

from OpenSSL import SSL
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..interfaces import Clock, Connection

__all__ = ["release_bio_buffers", "IdleTlsReclaimer", "RELEASE_INTERVAL", "RELEASE_QUIET"]

log = Logger(namespace="edgeproxy.transport.tls")

RELEASE_INTERVAL = 10.0
"""Seconds between two sweeps of :class:`IdleTlsReclaimer`."""
RELEASE_QUIET = 1.0
"""Seconds a connection must have received nothing before its buffers are released."""

try:
    # the bindings pyOpenSSL itself runs on (its private OpenSSL._util holds these same two objects)
    from cryptography.hazmat.bindings.openssl.binding import Binding

    _binding = Binding()
    _ffi, _lib = _binding.ffi, _binding.lib

    _SUPPORTED = all(hasattr(_lib, name) for name in ("BIO_new", "BIO_s_mem", "BIO_get_mem_data", "SSL_set_bio"))
except ImportError:  # pragma: no cover - pyOpenSSL without its bindings module
    _ffi = _lib = None
    _SUPPORTED = False

_warned = False


def _warn_unsupported() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.info("TLS buffers cannot be released with this pyOpenSSL: idle connections keep them")


def release_bio_buffers(connection: SSL.Connection) -> bool:
    """Replace ``connection``'s memory BIOs by empty ones when neither holds unread bytes.

    Returns whether it did. A connection made over a socket (no memory BIOs) or one with data
    still in either BIO is left alone: the swap must never drop a byte of the stream. Empty BIOs
    carry no state, so the swap is safe at any point of the connection, handshake included."""
    into = getattr(connection, "_into_ssl", None)
    out = getattr(connection, "_from_ssl", None)
    if into is None or out is None or not _SUPPORTED:
        if getattr(connection, "_socket", None) is None:  # memory BIOs we cannot reach: say so once
            _warn_unsupported()
        return False  # (TLS over a socket has no memory BIOs: nothing to release)
    pending = _ffi.new("char **")
    if _lib.BIO_get_mem_data(into, pending) or _lib.BIO_get_mem_data(out, pending):
        return False
    new_into = _lib.BIO_new(_lib.BIO_s_mem())
    if new_into == _ffi.NULL:
        return False
    new_out = _lib.BIO_new(_lib.BIO_s_mem())
    if new_out == _ffi.NULL:
        _lib.BIO_free(new_into)
        return False
    _lib.SSL_set_bio(connection._ssl, new_into, new_out)  # takes both, frees the old pair
    connection._into_ssl = new_into
    connection._from_ssl = new_out
    return True


class IdleTlsReclaimer:
    """Releases the BIO buffers of the TLS-based connections in ``connections`` after each burst
    of activity (see the module's docstring).

    ``connections`` maps ids to protocols with ``last_received`` (reactor seconds) and a
    ``transport`` whose ``getHandle()`` is the ``SSL.Connection`` for TLS and WSS; others are
    skipped. The sweep reads one float per connection (about 1 ms per 10,000 connections)."""

    def __init__(self, reactor: Clock, connections: Mapping[int, Connection], interval: float = RELEASE_INTERVAL,
                 quiet: float = RELEASE_QUIET) -> None:
        self.reactor = reactor
        self.connections = connections
        self.interval = interval
        self.quiet = quiet
        self.released = 0
        self._since = float("-inf")
        self._loop: LoopingCall | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        """Start sweeping (idempotent); the first sweep is ``interval`` seconds from now."""
        if self._loop is None and self.interval > 0:
            loop = self._loop = LoopingCall(self.sweep)
            loop.clock = self.reactor  # type: ignore[assignment]  # an IReactorTime; Clock is its two calls
            loop.start(self.interval, now=False).addErrback(
                lambda f: log.failure("TLS buffer sweep failed", f))

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def release(self, proto: Connection) -> bool:
        """Release one connection's buffers now (the manager calls this when a handshake completes:
        its flights are the largest data most connections ever see). A connection that is no
        longer in ``connections`` (closed meanwhile) is left alone."""
        flow = proto.flow
        if flow is None or flow.connection_id is None or self.connections.get(flow.connection_id) is not proto:
            return False
        transport = getattr(proto, "transport", None)
        handle = getattr(transport, "getHandle", None)
        connection = handle() if handle is not None else None
        if isinstance(connection, SSL.Connection) and release_bio_buffers(connection):
            self.released += 1
            return True
        return False

    def sweep(self) -> int:
        """Release every connection that received something after the previous sweep's cut-off and
        nothing in the last ``quiet`` seconds; returns how many were released."""
        cutoff = self.reactor.seconds() - self.quiet
        since, self._since = self._since, cutoff
        done = 0
        for proto in list(self.connections.values()):
            last = getattr(proto, "last_received", None)
            if last is not None and since < last <= cutoff and self.release(proto):
                done += 1
        return done
