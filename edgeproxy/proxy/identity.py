"""Which hosts are this node (OpenSIPS ``myself``): its listeners, advertised names and domains."""

from __future__ import annotations

from typing import Iterable

from ..sip.endpoint import Endpoint

__all__ = ["LocalIdentity"]


class LocalIdentity:
    """The addresses and domains a Request-URI or Route may name to mean this node (§16.4)."""

    def __init__(self, domains: Iterable[str] = (), endpoints: Iterable[Endpoint] = ()) -> None:
        self._domains = {d.lower() for d in domains}
        self._hosts: set[str] = set()
        for endpoint in endpoints:
            self.add_endpoint(endpoint)

    def add_endpoint(self, endpoint: Endpoint) -> None:
        """Learn an address the node is reachable at (a listener once bound, an advertised name)."""
        host = endpoint.host.lower()
        self._hosts.add(f"{host}:{endpoint.port}")
        self._hosts.add(host)

    def is_myself(self, host: str, port: int | None = None) -> bool:
        """Whether ``host`` (and ``port``, when given) is this node; a domain of ours matches on any
        port."""
        host = host.lower()
        if host.startswith("["):
            host = host[1:-1]
        if host in self._domains:
            return True
        if port is None:
            return host in self._hosts
        return f"{host}:{port}" in self._hosts
