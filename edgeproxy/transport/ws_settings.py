"""``[ws]``: the settings of WebSocket listeners, apart from :mod:`edgeproxy.transport.ws` so that
reading a configuration -- every node reads ``[ws]``, most run no WebSocket listener -- does not
import autobahn (~0.2 s of a node's start, and a restarted node must answer its users quickly:
issue 12). The transport manager imports :mod:`.ws` only for a ``ws``/``wss`` listener.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WsSettings"]


@dataclass(frozen=True)
class WsSettings:
    """WebSocket listeners (``ws`` and ``wss``; the TLS side of ``wss`` is :class:`TlsSettings`).

    ``path``: the HTTP path clients connect to (``"/ws"``; ``"*"`` accepts any path, the default).
    ``origins``: the ``Origin`` values browsers may come from, e.g. ``"https://app.example.com"``,
    with ``*`` wildcards (``"https://*.example.com"``); empty allows every origin. Requests without
    an ``Origin`` header (non-browser clients) are always allowed.
    ``max_message_size``: the largest WebSocket message (and frame) in octets; 0 uses the
    manager's ``limits.max_message_size``. ``ping_interval``/``ping_timeout``: seconds between
    server pings and to wait for the pong (0 disables). ``idle_timeout``: close a connection that
    received nothing, pongs included, for that long (0 = never). ``max_connections``: per listener,
    beyond it handshakes get 503 (0 = only the manager's overall limit). ``handshake_timeout``:
    seconds for the TLS and HTTP handshakes together. ``max_handshake_size``: the longest HTTP upgrade
    head in octets (request line and headers, up to the empty line), checked before the bytes are
    stored; beyond it the client gets 431 and the connection closes (8 KB, like HTTP servers' limits:
    issue 16 saw a head that never ended take 29 MB per connection).
    """

    path: str = "*"
    origins: tuple[str, ...] = ()
    max_message_size: int = 0
    ping_interval: float = 30.0
    ping_timeout: float = 10.0
    idle_timeout: float = 0.0
    max_connections: int = 0
    handshake_timeout: float = 5.0
    max_handshake_size: int = 8192
