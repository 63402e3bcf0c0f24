"""Dialog profiles shared by the nodes of a cluster (OpenSIPS ``profile_replication_cluster`` and
``/b`` profiles, ``dlg_profile.c`` / ``dlg_repl_profile.h``): a per-user limit holds for the whole
edge, whichever node a call goes through.

As OpenSIPS does it: every node sends its own counts of the replicated profiles to the other nodes
of the cluster (capability ``dialog-prof-repl``) -- at most every ``replicate_profiles_timer`` ms
when they changed, and at least every half ``replicate_profiles_expire`` so that peers know it is
alive -- and a profile's size is the node's own count plus the fresh counts of its peers. A peer's
counts are dropped when they are older than ``replicate_profiles_expire`` seconds or when the
cluster declares the peer down, so the calls of a dead node stop counting.

No Twisted here: the timer is the :class:`~edgeproxy.interfaces.Clock`'s ``callLater`` and the
cluster is a :class:`ProfileLink` (:class:`edgeproxy.cluster.Cluster` is one). What a peer sends is
checked like any input: JSON of ``{"profiles": {name: {value: count}}}`` with bounded sizes; anything
else is logged and ignored.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Protocol

from twisted.logger import Logger

from ..interfaces import Clock, Timer
from .profiles import Profiles

__all__ = ["ProfileReplication", "ProfileLink", "CAPABILITY"]

log = Logger(namespace="edgeproxy.dialog")

CAPABILITY = "dialog-prof-repl"
MAX_ENTRIES = 200_000  # (profile, value) pairs accepted from one peer


class ProfileLink(Protocol):
    """What the replication uses of the cluster (:class:`edgeproxy.cluster.Cluster`)."""

    def send_all(self, cluster_id: int, capability: str, payload: str) -> int: ...

    def register_capability(self, name: str, handler: Callable[[int, int, str], None]) -> None: ...

    def subscribe(self, callback: Callable[[int, bool], None]) -> Callable[[], None]: ...


def _counts(data: Any) -> dict[str, dict[str, int]] | None:
    """A peer's counts if ``data`` has the expected shape, else None."""
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        return None
    out: dict[str, dict[str, int]] = {}
    entries = 0
    for name, values in data["profiles"].items():
        if not isinstance(name, str) or not isinstance(values, dict):
            return None
        kept: dict[str, int] = {}
        for value, n in values.items():
            if not isinstance(value, str) or not isinstance(n, int) or isinstance(n, bool) or n < 0:
                return None
            entries += 1
            if entries > MAX_ENTRIES:
                return None
            if n:
                kept[value] = n
        out[name] = kept
    return out


class ProfileReplication:
    """Sends this node's counts of the replicated profiles and keeps the peers' (module docstring)."""

    def __init__(self, profiles: Profiles, link: ProfileLink, cluster_id: int, clock: Clock,
                 interval: float = 0.2, expire: float = 10.0) -> None:
        self.profiles = profiles
        self.link = link
        self.cluster_id = cluster_id
        self.clock = clock
        self.interval = interval
        self.expire = expire
        self.stats = {"sent": 0, "received": 0, "refused": 0, "expired": 0}
        self._heard: dict[int, float] = {}  # peer node id -> when its counts arrived
        self._sent_version = -1
        self._sent_at = 0.0
        self._timer: Timer | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self.link.register_capability(CAPABILITY, self.received)
        self._unsubscribe = self.link.subscribe(self.node_changed)
        self._timer = self.clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _tick(self) -> None:
        now = self.clock.seconds()
        try:
            for node_id, at in list(self._heard.items()):
                if now - at > self.expire:
                    log.info("dialog profiles: node {n} sent no counts for {s:g} s, its calls no longer count",
                             n=node_id, s=self.expire)
                    self._forget(node_id)
                    self.stats["expired"] += 1
            version = self.profiles.version
            if version != self._sent_version or now - self._sent_at >= self.expire / 2:
                payload = json.dumps({"profiles": self.profiles.snapshot()}, separators=(",", ":"))
                self.link.send_all(self.cluster_id, CAPABILITY, payload)
                self._sent_version, self._sent_at = version, now
                self.stats["sent"] += 1
        except Exception:
            log.failure("dialog profile replication failed")
        self._timer = self.clock.callLater(self.interval, self._tick)

    def received(self, cluster_id: int, node_id: int, payload: str) -> None:
        """A peer's counts (the capability's handler)."""
        if cluster_id != self.cluster_id:
            return
        try:
            counts = _counts(json.loads(payload))
        except ValueError:
            counts = None
        if counts is None:
            self.stats["refused"] += 1
            log.info("dialog profiles: malformed counts from node {n} ignored", n=node_id)
            return
        self.profiles.set_remote(node_id, counts)
        self._heard[node_id] = self.clock.seconds()
        self.stats["received"] += 1

    def node_changed(self, node_id: int, up: bool) -> None:
        """Cluster subscriber: a peer declared down stops counting at once."""
        if not up and node_id in self._heard:
            self._forget(node_id)

    def _forget(self, node_id: int) -> None:
        self._heard.pop(node_id, None)
        self.profiles.drop_remote(node_id)
