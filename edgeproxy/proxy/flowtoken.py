"""RFC 5626 flow tokens: the user part of this node's Record-Route (or Path) URI that names the flow
a client used, so that requests coming back along the route set reach it over that same flow
(§5.3), which matters for clients nobody can dial -- WebSocket browsers (RFC 7118 §5), clients
behind NAT.

A token is ``base64url(payload || mac)`` without padding (only unreserved URI characters, so it
survives as a URI user part unescaped). Two kinds, told apart by their length:

* **connection** tokens (TCP, TLS, WS, WSS): ``payload`` = version (1 byte, 3) | transport (1 byte) |
  incarnation (4 bytes) | connection id (8 bytes, the transport manager's id) | remote port (2 bytes)
  | remote address (4 or 16 bytes). Connection ids are numbered afresh by every process, so the
  token also carries the process's *incarnation*, 4 random bytes drawn at start: a token of an
  earlier process (a restart, an upgrade) still verifies -- the node's key survives -- but names a
  connection that died with that process, which RFC 5626 §5.3 answers with 430 Flow Failed
  (:class:`StaleFlowToken`); it is never sent down another client's connection that got the same
  id. (Version 1, the earlier per-process-key layout, cannot be verified any more: 403.)
* **UDP** tokens: ``payload`` = version (1 byte, 2) | remote port (2 bytes) | remote address (4 or
  16 bytes) -- the address the client really sends from, its NAT binding. The MAC also covers the
  listener the token faces, i.e. the ``transport:host:port`` of the Record-Route URI the token sits
  in, so a token cannot be moved to another listener's URI, and a request that pops it leaves from
  that very listener (a NAT only lets in packets from the address the client sent to). They are
  signed with the node's key alone, which survives a restart (``[proxy] flow_token_secret``, else
  a key kept in ``node.state_dir``): in-dialog requests of calls set up before a restart or an
  upgrade still reach the phone behind its NAT.

``mac`` = the first 10 bytes of HMAC-SHA256. A token is stateless (the node keeps no table of them)
and cannot be forged or altered (403 when its MAC is wrong, as RFC 5626 §5.3 says for a tampered
token). A valid token for a connection that has closed gives 430 Flow Failed (§5.3, §11.5): at the
transport when this process closed it, at :meth:`FlowTokens.decode` when an earlier process had it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import socket
import struct
from pathlib import Path

from ..sip.endpoint import Endpoint, Flow

__all__ = ["FlowTokens", "InvalidFlowToken", "StaleFlowToken", "load_key", "KEY_FILE"]

_CONNECTION_V1 = 1  # the layout without incarnation: recognised (ours) but never verified
_UDP = 2
_CONNECTION = 3
_TRANSPORTS = ("TCP", "TLS", "WS", "WSS")
_HEAD = struct.Struct(">BB4sQH")
_V1_HEAD_SIZE = 12
_UDP_HEAD = struct.Struct(">BH")
_MAC_LEN = 10
_CONN_LENGTHS = (_HEAD.size + 4 + _MAC_LEN, _HEAD.size + 16 + _MAC_LEN)
_V1_LENGTHS = (_V1_HEAD_SIZE + 4 + _MAC_LEN, _V1_HEAD_SIZE + 16 + _MAC_LEN)
_UDP_LENGTHS = (_UDP_HEAD.size + 4 + _MAC_LEN, _UDP_HEAD.size + 16 + _MAC_LEN)
# lengths of the base64url text of those, without padding
_TEXT_LENGTHS = frozenset((n * 4 + 2) // 3 for n in _CONN_LENGTHS + _V1_LENGTHS + _UDP_LENGTHS)

KEY_FILE = "flow-token.key"
"""The file in ``node.state_dir`` that keeps the key when no ``flow_token_secret`` is configured."""


class InvalidFlowToken(ValueError):
    """A user part that has the shape of one of our flow tokens but whose MAC does not verify: forged
    or altered, answered 403 (RFC 5626 §5.3)."""

    status = 403
    reason = "Invalid Flow Token"


class StaleFlowToken(ValueError):
    """A genuine connection token of an earlier process of this node: the connection it names is gone
    with that process, answered 430 Flow Failed (RFC 5626 §5.3, §11.5) unless the request can go
    elsewhere. ``flow`` is what it named, without a connection id (none of ours is that one)."""

    status = 430
    reason = "Flow Failed"

    def __init__(self, user: str, flow: Flow) -> None:
        super().__init__(user)
        self.flow = flow


def _listener(local: Endpoint) -> bytes:
    """What a UDP token's MAC says about the listener it faces (host as the URI writes it)."""
    host = local.host[1:-1] if local.host.startswith("[") else local.host
    return f"|{local.transport}:{host.lower()}:{local.port}".encode("ascii", "replace")


class FlowTokens:
    """Makes and checks the flow tokens of one node (one process). ``secret`` is the node's key
    (random unless given: then nothing survives a restart, and an earlier process's token is 403,
    not 430); connection tokens carry a random incarnation drawn here."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = secret if secret is not None else os.urandom(32)
        self._incarnation = os.urandom(4)

    def encode(self, flow: Flow | None, local: Endpoint | None = None) -> str | None:
        """The token naming ``flow``; None when it is not a flow we can name (no id, a remote
        that is not an IP address). A UDP flow's token is bound to ``local``, the listener of the
        Record-Route URI it goes in (default: the flow's own)."""
        if flow is None:
            return None
        remote = flow.remote
        try:
            address = socket.inet_pton(socket.AF_INET6 if ":" in remote.host else socket.AF_INET, remote.host)
        except (OSError, ValueError):
            return None
        if flow.connection_id is None:
            if remote.transport != "UDP":
                return None
            payload = _UDP_HEAD.pack(_UDP, remote.port) + address
            mac = self._mac(self._key, payload + _listener(local if local is not None else flow.local))
        else:
            if remote.transport not in _TRANSPORTS:
                return None
            payload = _HEAD.pack(_CONNECTION, _TRANSPORTS.index(remote.transport), self._incarnation,
                                 flow.connection_id, remote.port) + address
            mac = self._mac(self._key, payload)
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")

    @staticmethod
    def _mac(key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, "sha256")[:_MAC_LEN]  # one-shot: no HMAC object per message

    @staticmethod
    def looks_like(user: str | None) -> bool:
        """Whether ``user`` has the shape of one of our tokens (its MAC unchecked)."""
        return _raw(user) is not None

    def decode(self, user: str | None, local: Endpoint | None = None) -> Flow | None:
        """The flow named by the URI user part ``user``; None when ``user`` is not a token at all;
        raises :class:`InvalidFlowToken` when it looks like one but fails the MAC, and
        :class:`StaleFlowToken` for a connection of an earlier process. ``local`` is the listener the
        URI holding the token names: it becomes the flow's local endpoint, and a UDP token is
        checked against it (without it, a UDP token cannot verify)."""
        raw = _raw(user)
        if raw is None:
            return None
        payload, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        if raw[0] == _UDP:
            if local is None or not hmac.compare_digest(mac, self._mac(self._key, payload + _listener(local))):
                raise InvalidFlowToken(user)
            _, port = _UDP_HEAD.unpack_from(payload)
            host = _address(payload[_UDP_HEAD.size:])
            return Flow(local, Endpoint("UDP", host, port))
        if raw[0] == _CONNECTION_V1 or not hmac.compare_digest(mac, self._mac(self._key, payload)):
            raise InvalidFlowToken(user)
        _, kind, incarnation, cid, port = _HEAD.unpack_from(payload)
        host = _address(payload[_HEAD.size:])
        transport = _TRANSPORTS[kind]
        remote = Endpoint(transport, host, port)
        local = local if local is not None else Endpoint(transport, "0.0.0.0", 0)
        if incarnation != self._incarnation:
            raise StaleFlowToken(user or "", Flow(local, remote))
        return Flow(local, remote, cid)


def _address(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def _raw(user: str | None) -> bytes | None:
    """The decoded bytes of a user part shaped like a token (length, alphabet, version), else None."""
    if not user or len(user) not in _TEXT_LENGTHS:
        return None
    try:
        raw = base64.urlsafe_b64decode(user + "=" * (-len(user) % 4))
    except (binascii.Error, ValueError):
        return None
    if raw[0] == _UDP:
        return raw if len(raw) in _UDP_LENGTHS else None
    if raw[0] == _CONNECTION and len(raw) in _CONN_LENGTHS and raw[1] < len(_TRANSPORTS):
        return raw
    if raw[0] == _CONNECTION_V1 and len(raw) in _V1_LENGTHS and raw[1] < len(_TRANSPORTS):
        return raw
    return None


def load_key(secret: str, state_dir: Path | None) -> tuple[bytes | None, str | None]:
    """The node's flow-token key and, when something went wrong, why (for a warning).

    A configured ``secret`` wins (the same on every node of a cluster). Else the key kept in
    ``state_dir/flow-token.key`` (32 random bytes, hex, made on first start with mode 0600), so
    that in-dialog requests of calls set up before a restart still verify. None when there is no
    state directory or it cannot be used: a per-process key, tokens die with the process."""
    if secret:
        return hashlib.sha256(b"edgeproxy flow tokens|" + secret.encode("utf-8")).digest(), None
    if state_dir is None:
        return None, None
    path = state_dir / KEY_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {path}: {exc}"
    if text:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) < 16:
            return None, f"{path} does not hold a hex key of at least 16 bytes"
        return key, None
    key = os.urandom(32)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key.hex() + "\n")
    except FileExistsError:  # another process made it meanwhile: use theirs
        return load_key("", state_dir)
    except OSError as exc:
        return None, f"cannot write {path}: {exc}"
    return key, None
