"""RFC 5626 flow tokens: the user part of this node's Record-Route (or Path) URI that names the
connection a client used, so that requests coming back along the route set reach it over that same
connection (§5.3), which matters for clients nobody can dial -- WebSocket browsers (RFC 7118 §5),
clients behind NAT.

A token is ``base64url(payload || mac)`` without padding (only unreserved URI characters, so it
survives as a URI user part unescaped):

* ``payload`` = version (1 byte, 1) | transport (1 byte: TCP, TLS, WS, WSS) | connection id (8 bytes,
  the transport manager's id, never reused within a process) | remote port (2 bytes) | remote
  address (4 or 16 bytes);
* ``mac`` = the first 10 bytes of HMAC-SHA256 over ``payload`` with a random per-process secret.

So a token is stateless (the node keeps no table of them), cannot be forged or altered to point at
another connection (403 when its MAC is wrong, as RFC 5626 §5.3 says for a tampered token), and
dies with the process (after a restart nothing matches the new secret: the connections it named are
gone too). A valid token for a connection that has closed gives 430 Flow Failed at the transport.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import struct

from ..sip.endpoint import Endpoint, Flow

__all__ = ["FlowTokens", "InvalidFlowToken"]

_VERSION = 1
_TRANSPORTS = ("TCP", "TLS", "WS", "WSS")
_HEAD = struct.Struct(">BBQH")
_MAC_LEN = 10
_LENGTHS = (_HEAD.size + 4 + _MAC_LEN, _HEAD.size + 16 + _MAC_LEN)
# lengths of the base64url text of those, without padding
_TEXT_LENGTHS = tuple((n * 4 + 2) // 3 for n in _LENGTHS)


class InvalidFlowToken(ValueError):
    """A user part that has the shape of one of our flow tokens but whose MAC does not verify."""


class FlowTokens:
    """Makes and checks the flow tokens of one process (``secret``: random unless given, for tests)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(32)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_LEN]

    def encode(self, flow: Flow | None) -> str | None:
        """The token naming ``flow``; None when it is not a connection we can name (UDP, no id,
        a remote that is not an IP address)."""
        if flow is None or flow.connection_id is None:
            return None
        remote = flow.remote
        try:
            kind = _TRANSPORTS.index(remote.transport)
            address = ipaddress.ip_address(remote.host).packed
        except ValueError:
            return None
        payload = _HEAD.pack(_VERSION, kind, flow.connection_id, remote.port) + address
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode("ascii")

    def decode(self, user: str | None, local: Endpoint | None = None) -> Flow | None:
        """The flow named by the URI user part ``user``; None when ``user`` is not a token at all;
        raises :class:`InvalidFlowToken` when it looks like one but fails the MAC. ``local`` becomes
        the flow's local endpoint (the token does not carry it: the connection id is what counts)."""
        if not user or len(user) not in _TEXT_LENGTHS:
            return None
        try:
            raw = base64.urlsafe_b64decode(user + "=" * (-len(user) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) not in _LENGTHS or raw[0] != _VERSION or raw[1] >= len(_TRANSPORTS):
            return None
        payload, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidFlowToken(user)
        _, kind, cid, port = _HEAD.unpack_from(payload)
        host = str(ipaddress.ip_address(payload[_HEAD.size:]))
        transport = _TRANSPORTS[kind]
        remote = Endpoint(transport, host, port)
        return Flow(local if local is not None else Endpoint(transport, "0.0.0.0", 0), remote, cid)
