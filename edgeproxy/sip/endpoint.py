"""Where a message came from and where it goes: transport-neutral addressing (RFC 3261 §18).

These are plain values shared by every layer: the core decides *what* to send to *which*
:class:`Destination`; the Twisted transports decide *how*. A :class:`Flow` names one connection (or,
for UDP, one local socket + remote address pair) so that requests for a client that registered over a
connection go back over that same connection (RFC 5626 §3, RFC 7118 §5).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RELIABLE", "Endpoint", "Flow", "Destination", "is_reliable", "default_port"]

RELIABLE = frozenset({"TCP", "TLS", "WS", "WSS", "SCTP"})


def is_reliable(transport: str) -> bool:
    """Whether ``transport`` is reliable, which switches off retransmissions (§17.1.1.2, §17.1.2.2)."""
    return transport in RELIABLE


def default_port(transport: str) -> int:
    """The port to use when a URI gives none (RFC 3263 §4.2; RFC 7118 uses the HTTP ports)."""
    return {"TLS": 5061, "WS": 80, "WSS": 443}.get(transport, 5060)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A transport address: ``transport`` is upper-case (``UDP``, ``TCP``, ``TLS``, ``WS``, ``WSS``),
    ``host`` an IP literal (IPv6 without brackets) or, for destinations not yet resolved, a name."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{self.hostport}"


@dataclass(frozen=True, slots=True)
class Flow:
    """One path to a peer (RFC 5626 §3.3 "flow"): the local listener, the remote address, and for
    connection-oriented transports the id of the connection the transport layer assigned.

    ``connection_id`` is None for UDP. Two flows are equal when all parts are, so a flow can key
    bindings and dialog routes.
    """

    local: Endpoint
    remote: Endpoint
    connection_id: int | None = None

    @property
    def transport(self) -> str:
        return self.remote.transport


@dataclass(frozen=True, slots=True)
class Destination:
    """Where to send one message: a remote endpoint, optionally pinned to an existing flow.

    When ``flow`` is set and still open, the transport uses it; otherwise it sends from the listener of
    ``remote.transport`` (opening a connection if needed), or fails with a transport error when
    ``flow_only`` forbids dialling (``.invalid`` WebSocket contacts, RFC 7118 §5.2).

    ``server_name`` is the name a TLS server's certificate must carry when ``remote`` holds an address
    found through DNS: the domain of the URI, not the SRV target (RFC 5922 §4). None: ``remote.host``.
    """

    remote: Endpoint
    flow: Flow | None = None
    flow_only: bool = False
    server_name: str | None = None
