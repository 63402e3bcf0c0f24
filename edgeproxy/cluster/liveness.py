"""Sans-IO liveness of one cluster peer, and the seed/sync status of this node in one cluster.

No Twisted, no sockets, no clock: every input carries ``now`` (seconds, any monotonic origin) and
every output is a list of :class:`Effect` for the driver (:class:`edgeproxy.cluster.Cluster`) to carry
out. The driver calls :meth:`NodeLiveness.tick` at :meth:`NodeLiveness.next_deadline` and feeds in
what the link reports (pong, send failure, link lost, inbound ping).

The rules follow OpenSIPS ``clusterer`` (``heartbeats_timer``, ``handle_ping``/``handle_pong``; README
parameters ``ping_interval``, ``ping_timeout``, ``node_timeout``, column ``no_ping_retries``):

* An UP node gets a regular ping when the link has been idle for ``ping_interval`` (no ping sent and
  no pong received for that long).
* A ping not answered within ``ping_timeout`` is retried at once; each retry waits ``ping_timeout``.
  After ``no_ping_retries`` unanswered retries the node is DOWN (with 0 retries, at the first miss).
  A silent peer is thus declared down ``(no_ping_retries + 1) * ping_timeout`` after the first
  unanswered ping (4 s with the defaults), as in OpenSIPS.
* A ping that cannot be sent at all (connection refused, link lost) spends the same retry budget,
  one attempt per ``ping_timeout``: a refused peer is down ``no_ping_retries * ping_timeout`` after
  the first failure.
* A DOWN node is pinged again ``node_timeout`` after the last ping (OpenSIPS default 60 s; the
  :class:`~edgeproxy.cluster.Cluster` defaults it to ``ping_interval``), and at once when it pings
  us (OpenSIPS: a ping from a down node restarts pinging). Only a pong makes a node UP.

One deliberate difference: OpenSIPS stops routing to a node at its first missed pong (the link leaves
``LS_UP``); here :attr:`NodeLiveness.up` stays true while the retries run and turns false only when
the budget is spent, so one slow pong does not flap routing. :attr:`NodeLiveness.state` shows the
retrying phase for whoever wants the stricter view.
"""

from __future__ import annotations

import enum
import math

__all__ = ["LinkState", "Effect", "NodeLiveness", "SyncStatus"]

_NEVER = -math.inf


class LinkState(enum.Enum):
    """Phase of the heartbeat with one peer (OpenSIPS link states in brackets)."""

    PROBE = "probe"              #: a fresh ping is due now [LS_RESTART_PINGING]
    PROBING = "probing"          #: a fresh ping to a not-up node is out [LS_RESTARTED]
    UP = "up"                    #: answered; a regular ping may be out [LS_UP]
    RETRYING = "retrying"        #: a retry ping is out [LS_RETRYING]
    SEND_FAILED = "send-failed"  #: the last ping could not be sent; retry after ping_timeout [LS_RETRY_SEND_FAIL]
    DOWN = "down"                #: retries spent; re-probed after node_timeout [LS_DOWN]


class Effect(enum.Enum):
    """What the driver must do after an input."""

    PING = "ping"    #: send a fresh ping now
    RETRY = "retry"  #: send a retry ping now (a pong was missed or a send failed)
    UP = "up"        #: the node became up: log it, notify subscribers
    DOWN = "down"    #: the node became down: log it, notify subscribers


class NodeLiveness:
    """The heartbeat state machine for one peer. Starts in :attr:`LinkState.PROBE`, not up."""

    def __init__(self, no_ping_retries: int = 3, *, ping_interval: float = 4.0,
                 ping_timeout: float = 1.0, node_timeout: float | None = None) -> None:
        if no_ping_retries < 0:
            raise ValueError("no_ping_retries must be >= 0")
        if ping_interval <= 0 or ping_timeout <= 0:
            raise ValueError("ping_interval and ping_timeout must be > 0")
        self.no_ping_retries = no_ping_retries
        self.ping_interval = float(ping_interval)
        self.ping_timeout = float(ping_timeout)
        self.node_timeout = float(ping_interval if node_timeout is None else node_timeout)
        if self.node_timeout <= 0:
            raise ValueError("node_timeout must be > 0")
        #: Current phase.
        self.state = LinkState.PROBE
        #: The verdict: true from a pong until the retry budget is spent.
        self.up = False
        #: When the last ping was handed to the link, and when the last pong came.
        self.last_ping = _NEVER
        self.last_pong = _NEVER
        #: A ping is out and not yet answered or failed.
        self.awaiting = False
        #: Retries left in the current failure sequence (``None``: the ping out is a fresh one).
        self.retries_left: int | None = None

    # -- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`tick` has something to do (``-inf``: at once)."""
        if self.state is LinkState.PROBE:
            return _NEVER
        if self.awaiting or self.state is LinkState.SEND_FAILED:
            return self.last_ping + self.ping_timeout
        if self.state is LinkState.DOWN:
            return self.last_ping + self.node_timeout
        # UP and idle
        return max(self.last_ping, self.last_pong) + self.ping_interval

    def tick(self, now: float) -> list[Effect]:
        """Do what is due at ``now``: a fresh ping, a retry, or declaring the node down."""
        if now < self.next_deadline():
            return []
        out: list[Effect] = []
        if self.state in (LinkState.PROBE, LinkState.DOWN):
            self._send(now, LinkState.PROBING, fresh=True, out=out)
        elif self.state is LinkState.SEND_FAILED:
            self._send(now, LinkState.RETRYING, fresh=False, out=out)
        elif self.awaiting:
            self._failed(now, timed_out=True, out=out)
        else:  # UP, idle for ping_interval
            self._send(now, LinkState.UP, fresh=True, out=out)
        return out

    # -- inputs from the link -------------------------------------------------------------------

    def pong_received(self, now: float) -> list[Effect]:
        """A pong (any answer to our ping) arrived: the node is up, the retry budget is refilled.

        A late pong (after the retry that followed it was sent, or after the node was declared
        down) still proves the node alive and counts.
        """
        self.last_pong = now
        self.awaiting = False
        self.retries_left = None
        self.state = LinkState.UP
        if not self.up:
            self.up = True
            return [Effect.UP]
        return []

    def send_failed(self, now: float) -> list[Effect]:
        """The ping out could not be sent (connect refused or timed out, link lost under it)."""
        if not self.awaiting:
            return []
        out: list[Effect] = []
        self._failed(now, timed_out=False, out=out)
        return out

    def link_lost(self, now: float) -> list[Effect]:
        """The connection to the node closed. A ping in flight failed; an idle UP link re-probes
        at once (OpenSIPS restarts pinging when a send to an up node fails)."""
        if self.awaiting:
            return self.send_failed(now)
        if self.state is LinkState.UP:
            self.state = LinkState.PROBE
        return []

    def ping_received(self, now: float) -> list[Effect]:
        """The node pinged us (already checked as genuine). A DOWN node is re-probed at once; it
        becomes up when it answers our ping, not because it sent one (OpenSIPS ``handle_ping``)."""
        if self.state is LinkState.DOWN:
            self.state = LinkState.PROBE
        return []

    # -- internals --------------------------------------------------------------------------------

    def _send(self, now: float, state: LinkState, *, fresh: bool, out: list[Effect]) -> None:
        self.last_ping = now
        self.awaiting = True
        self.state = state
        if fresh:
            self.retries_left = None
        out.append(Effect.PING if fresh else Effect.RETRY)

    def _failed(self, now: float, *, timed_out: bool, out: list[Effect]) -> None:
        self.awaiting = False
        if self.retries_left is None:
            self.retries_left = self.no_ping_retries
        if self.retries_left == 0:
            self.retries_left = None
            self.state = LinkState.DOWN
            if self.up:
                self.up = False
                out.append(Effect.DOWN)
            return
        self.retries_left -= 1
        if timed_out:
            self._send(now, LinkState.RETRYING, fresh=False, out=out)
        else:
            self.state = LinkState.SEND_FAILED

    def __repr__(self) -> str:
        return (f"NodeLiveness(state={self.state.value}, up={self.up}, awaiting={self.awaiting}, "
                f"retries_left={self.retries_left})")


class SyncStatus:
    """Whether this node's data is synced in one cluster (OpenSIPS capability sync, seed rule).

    A node starts (or, after :meth:`restart`, restarts) "not synced" and becomes synced by pulling
    the data from a synced peer (a *donor*), see :meth:`donor_synced`. A *seed* node (``flags`` =
    ``seed``) that finds no donor within ``seed_fallback_interval`` falls back to "synced" with
    whatever it has (OpenSIPS README, ``seed_fallback_interval``). A non-seed node stays not synced
    until a donor appears -- which is why a cluster needs at least one seed.
    """

    def __init__(self, seed: bool, fallback_interval: float, now: float) -> None:
        if fallback_interval < 0:
            raise ValueError("seed_fallback_interval must be >= 0")
        self.seed = seed
        self.fallback_interval = float(fallback_interval)
        self.synced = False
        #: How the node got synced: ``"fallback"``, ``"donor <id>"``, or ``None``.
        self.how: str | None = None
        self._fallback_at = math.inf
        self.restart(now)

    def restart(self, now: float) -> None:
        """Forget the synced state (node start, or an operator's "sync again")."""
        self.synced = False
        self.how = None
        self._fallback_at = now + self.fallback_interval if self.seed else math.inf

    def next_deadline(self) -> float:
        """When :meth:`tick` may change something (``inf``: never)."""
        return math.inf if self.synced else self._fallback_at

    def tick(self, now: float) -> bool:
        """Apply the seed fallback if due; true when this call made the node synced."""
        if not self.synced and now >= self._fallback_at:
            self.synced, self.how = True, "fallback"
            return True
        return False

    def donor_synced(self, donor_node_id: int, now: float) -> bool:
        """A synced peer is up and the data was pulled from it; true when this made us synced."""
        if self.synced:
            return False
        self.synced, self.how = True, f"donor {donor_node_id}"
        return True
