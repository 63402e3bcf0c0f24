"""SIP over UDP (RFC 3261 §18.1.1, §18.2.1, §18.3): one datagram is one message.

The protocol is thin, like ``twisted.names.dns.DNSDatagramProtocol``: it parses and hands the message
to the sink it was built with (a datagram has no connection, so it needs no
:class:`~edgeproxy.interfaces.ConnectionRegistry`). This is the benchmarked hot path, so it does no
logging, no formatting and no copying for a valid message.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from ..interfaces import MessageSink
from ..proxy.noise import NoiseLog
from ..sip.endpoint import Endpoint, Flow
from ..sip.errors import SipParseError
from ..sip.parser import Limits, parse_datagram
from ._util import error_reply
from .stun import binding_response, is_stun

__all__ = ["SipDatagramProtocol"]

log = Logger(namespace="edgeproxy.transport.udp")

_DROP_ON_SEND = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


class SipDatagramProtocol(DatagramProtocol):
    """One UDP listener (RFC 3261 §18): receives for the sink and sends from the same socket, so
    responses leave from the port the request arrived on (§18.2.2, RFC 3581 §4 symmetric response).

    Keep-alives are handled here and never reach the sink: CRLF-only datagrams are ignored, STUN
    Binding requests (RFC 5626 §4.4.2) get a Binding response, other STUN messages are dropped. A
    malformed request is answered with the core's status (400, 505, 513 ...) sent back to the
    datagram's source address, once the sink has counted it (``malformed_received``: pike, the
    aggregated log); a malformed response is dropped (§18.1.2). Nothing raised while handling a
    datagram escapes into the reactor.
    """

    noisy = False

    def __init__(self, sink: MessageSink, limits: Limits, local: Endpoint, family: int,
                 noise: NoiseLog | None = None) -> None:
        self._sink = sink
        self.local = local
        """The advertised endpoint of this listener; the ``local`` of every flow it reports."""
        self.family = family
        self._limits = limits
        self._sock: socket.socket | None = None
        self._noise = noise  # the node's aggregated log of hostile input (None: a line each)

    def startProtocol(self) -> None:
        self._sock = self.transport.getHandle()  # type: ignore[union-attr]

    def stopProtocol(self) -> None:
        self._sock = None

    @property
    def open(self) -> bool:
        return self._sock is not None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            message = parse_datagram(data, self._limits)
        except SipParseError as exc:
            self._reject(exc, data, addr)
            return
        except Exception:
            log.failure("parser crashed on a datagram from {addr}", addr=addr)
            return
        if message is None:
            return
        try:
            self._sink.message_received(message, Flow(self.local, Endpoint("UDP", addr[0], addr[1])))
        except Exception:
            log.failure("sink failed on a message from {addr}", addr=addr)

    def _reject(self, exc: SipParseError, data: bytes, addr: Any) -> None:
        try:
            if is_stun(data):
                stun_reply = binding_response(data, addr[0], addr[1])
                if stun_reply is not None:
                    self.sendto(stun_reply, addr[0], addr[1])
                return
            # counted (pike) and logged (aggregated) by the sink first; no reply to a flooding source
            if not self._sink.malformed_received(exc, Flow(self.local, Endpoint("UDP", addr[0], addr[1])), len(data)):
                return
            reply = error_reply(exc)
            if reply is not None:
                self.sendto(reply, addr[0], addr[1])
        except OSError as err:  # EMSGSIZE, EHOSTUNREACH ...: the reply is lost, as on the network
            why = str(err.strerror or err)
            if self._noise is not None:
                self._noise.note(addr[0], "reply to a malformed datagram not sent", why)
            else:
                log.info("reply to a malformed datagram from {host}:{port} not sent: {why}", host=addr[0],
                         port=addr[1], why=why)
        except Exception:
            log.failure("failed to answer a malformed datagram from {addr}", addr=addr)

    def sendto(self, data: bytes, host: str, port: int) -> None:
        """Send one datagram to an IP literal of this socket's family.

        Bypasses ``Port.write`` (which re-validates the address on every call): the manager has
        already checked it. A full socket buffer drops the datagram as the network would (the
        transaction layer retransmits, §17.1.1.2); other errors raise ``OSError``.
        """
        sock = self._sock
        if sock is None:
            raise OSError(errno.EBADF, "UDP listener closed")
        while True:
            try:
                sock.sendto(data, (host, port))
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _DROP_ON_SEND:
                    return
                raise
