"""NAT keep-alive pinging of registered contacts, as OpenSIPS's nathelper pinger does.

A phone behind NAT on UDP can be reached only while its NAT binding lives, and NATs forget a UDP
binding after 30-120 s of silence while a registration lasts an hour. nathelper therefore sends
something to every contact registered with ``nat_bflag`` every ``natping_interval`` seconds, from the
socket the REGISTER arrived on to the address it came from (``received``), so the NAT keeps the
mapping open. This module is that pinger; the ``[nathelper]`` section of the configuration is
:class:`NatPingSettings`::

    [nathelper]
    natping_interval = 30       # seconds between two pings of a contact; 0: no pinging (the default)
    natping_partitions = 1      # pings spread over this many slices of the interval
    natping_tcp = false         # true: ping TCP/TLS flows too (over their connection, never dialled)
    sipping_method = "OPTIONS"  # the request sent to contacts saved with msg.sipping = True
    sipping_from = ""           # its From URI; "": sip:pinger@<the node's host>
    remove_on_timeout = false   # true: a SIP-pinged contact that stops answering is removed
    max_pings_lost = 3          # ... after this many unanswered pings in a row

Theory of operation:

* **What is pinged**: the live bindings with ``nat`` set (``msg.nat = True`` before ``save()``) and a
  flow. UDP bindings always; TCP and TLS bindings only with ``natping_tcp`` (their connection is kept
  by RFC 5626 CRLF keep-alives and TCP keepalive otherwise), over the connection they registered on:
  a closed connection is a failed ping, never a new connection. WebSocket flows are never pinged
  here (``[ws] ping_interval`` keeps them with WebSocket pings). A ping goes to the binding's
  ``received`` address over its flow (``Destination(flow_only=True)``): from the listener the REGISTER
  arrived on, and never from another one nor to the Contact's (private) address.
* **Two kinds**: by default the RFC 5626 keep-alive ``CRLF CRLF`` (4 bytes, what OpenSIPS's 4-byte
  UDP ping is for; every SIP parser ignores it). A binding saved with ``msg.sipping = True``
  (nathelper's ``sipping_bflag``) gets a ``sipping_method`` request instead: stateless (no
  transaction, no retransmission), Request-URI and To the Contact, a Via branch of its own
  (``z9hG4bKnp<random>.<n>``). Its reply -- any status -- comes back to the node as a response that
  matches no transaction; :meth:`Node._stray_response` hands it to :meth:`NatPinger.response_received`
  first, which recognises the branch prefix and swallows it (no stray-response log line, no route).
* **Lost pings**: each SIP-pinged binding has a small record (the branch of its ping in flight and a
  count of unanswered pings). When its next ping is due and the previous one is still unanswered,
  the count goes up; a reply sets it back to 0, and so does a re-registration. With
  ``remove_on_timeout`` a binding whose count reaches ``max_pings_lost`` is removed with
  :meth:`LocationService.remove` -- as an expired binding goes: the AoR's last binding going tells the
  location listeners (federation, cluster) -- and a log line names the AoR and the contact.
* **Spreading**: one ``LoopingCall`` every ``natping_interval / natping_partitions`` seconds, on the
  injected clock; each tick pings one partition (an AoR's partition is ``hash(aor) % partitions``, so
  a contact is pinged at the same phase of every interval). At the start of each interval the AoRs
  are listed once and bucketed; each tick then reads its AoRs' bindings as they are *then*, so a
  binding removed or expired since is skipped, and one registered during the interval waits for the
  next. A tick delayed by a busy reactor runs the slices it missed (at most one interval's).
* **Failures**: a ping that cannot be sent (listener closed, connection gone) is counted and logged
  once per binding -- not again while it keeps failing, again after a ping to it succeeded. Nothing
  a tick does raises into the reactor (a LoopingCall that raises stops for good).
* **Memory**: nothing per CRLF-pinged binding beyond its AoR in the interval's list; per SIP-pinged
  binding one ``__slots__`` record, its dict entry and the branch of the ping in flight. No timer per
  binding.

The pinger needs a location service that reads synchronously (``aors()`` and ``get(aor)``, as
:class:`~edgeproxy.location.InMemoryLocation` has) and a :class:`~edgeproxy.interfaces.Sender`.
"""

from __future__ import annotations

import binascii
import os
import re
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING, Any, Iterable, TypeAlias

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..sip.endpoint import Destination
from .binding import Binding

if TYPE_CHECKING:
    from ..sip.message import Response
    from ..sip.uri import SipURI

__all__ = ["NatPingSettings", "NatPinger", "KEEPALIVE"]

log = Logger(namespace="edgeproxy.nathelper")

_METHOD = re.compile(r"^[A-Z]{1,32}$")
_PINGED = frozenset({"UDP", "TCP", "TLS"})  # WebSocket flows have their own pings ([ws] ping_interval)


@dataclass(frozen=True)
class NatPingSettings:
    """The ``[nathelper]`` section (see the module docstring); OpenSIPS nathelper's parameters of the
    same names. ``remove_on_timeout`` stands for ``remove_on_timeout_bflag`` (a switch here, for every
    SIP-pinged binding) and ``msg.sipping`` for ``sipping_bflag``."""

    natping_interval: float = 0.0
    natping_partitions: int = 1
    natping_tcp: bool = False
    sipping_method: str = "OPTIONS"
    sipping_from: str = ""
    remove_on_timeout: bool = False
    max_pings_lost: int = 3

    def __post_init__(self) -> None:
        if self.natping_interval < 0:
            raise ValueError("natping_interval must be >= 0 (0: no pinging)")
        if self.natping_partitions < 1:
            raise ValueError("natping_partitions must be >= 1")
        if not _METHOD.match(self.sipping_method):
            raise ValueError("sipping_method must be a SIP method in capitals, e.g. OPTIONS")
        if self.max_pings_lost < 1:
            raise ValueError("max_pings_lost must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.natping_interval > 0


class _Ping:
    """A keep-alive already in its wire form (a SIP ping built from a template: no parse, no header
    objects; or the 4-byte CRLFCRLF), what a Sender serialises with ``to_bytes()`` like any message."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def to_bytes(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"<ping {self.data[:16]!r}>"


#: RFC 5626 §3.5.1 CRLFCRLF: one shared object for every binding.
KEEPALIVE = _Ping(b"\r\n\r\n")


#: a SIP-pinged binding: (address of record, contact URI)
_Key: TypeAlias = "tuple[str, SipURI]"


class _State:
    """What is kept per SIP-pinged binding: the branch of its ping in flight (None: answered or none
    sent), how many pings in a row went unanswered, and when the binding was written (a
    re-registration starts the count again)."""

    __slots__ = ("branch", "missed", "written")

    def __init__(self, written: float) -> None:
        self.branch: str | None = None
        self.missed = 0
        self.written = written


class NatPinger:
    """Keeps the NAT bindings of registered contacts open (OpenSIPS nathelper's pinger).

    ``location`` reads synchronously (``aors()``, ``get(aor)``); ``sender`` sends (the node's
    transports); ``clock`` is an ``IReactorTime`` (the reactor, or ``task.Clock`` in tests) and must be
    the location's. :meth:`start` begins pinging (nothing when ``natping_interval`` is 0), :meth:`stop`
    ends it; the node hands responses that match no transaction to :meth:`response_received`.
    ``stats`` counts what was done.
    """

    def __init__(self, location: Any, sender: Any, settings: NatPingSettings, clock: Any, *,
                 user_agent_header: str = "") -> None:
        self.location = location
        self.sender = sender
        self.settings = settings
        self.clock = clock
        random = binascii.hexlify(os.urandom(4)).decode()
        self.branch_prefix = f"z9hG4bKnp{random}."  # 'n' is no hex digit: never a proxy branch
        self._tag = f"np{random}"
        self._seq = count(1)
        self.from_uri = settings.sipping_from
        # OpenSIPS user_agent_header ([proxy]): the SIP pings are requests of the node's own
        self._user_agent = f"{user_agent_header}\r\n" if user_agent_header else ""
        parts = settings.natping_partitions
        self._partitions = parts
        self._buckets: list[list[str]] = [[] for _ in range(parts)]
        self._states: list[dict[_Key, _State]] = [{} for _ in range(parts)]
        self._failed: list[set[_Key]] = [set() for _ in range(parts)]
        self._in_flight: dict[str, _State] = {}
        self._next = 0
        self._loop: LoopingCall | None = None
        self.stats = {"keepalives": 0, "sip_pings": 0, "replies": 0, "send_failures": 0, "removed": 0}

    # -- life cycle ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.running

    def start(self, node_host: str = "127.0.0.1") -> None:
        """Begin pinging; ``node_host`` completes the default From (``sip:pinger@<node_host>``)."""
        if not self.settings.enabled or self.running:
            return
        if not self.from_uri:
            host = f"[{node_host}]" if ":" in node_host and not node_host.startswith("[") else node_host
            self.from_uri = f"sip:pinger@{host}"
        self._next = 0
        loop = self._loop = LoopingCall.withCount(self._tick)
        loop.clock = self.clock
        d = loop.start(self.settings.natping_interval / self._partitions, now=False)
        d.addErrback(lambda f: log.failure("NAT pinger stopped", f))

    def stop(self) -> None:
        """Stop pinging and forget every ping's state (late replies are still recognised and dropped)."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        parts = self._partitions
        self._buckets = [[] for _ in range(parts)]
        self._states = [{} for _ in range(parts)]
        self._failed = [set() for _ in range(parts)]
        self._in_flight = {}

    # -- replies -------------------------------------------------------------------------------------
    def response_received(self, response: Response) -> bool:
        """True when ``response`` answers one of our pings (then it is dealt with here); any status
        counts as an answer: the contact is alive and its NAT binding open."""
        branch = response.top_via.branch or ""  # parsed once: the node reads it next anyway
        if not branch.startswith(self.branch_prefix):
            return False
        self.stats["replies"] += 1
        state = self._in_flight.pop(branch, None)
        if state is not None:  # only the ping in flight is in _in_flight, under its own branch
            state.branch = None
            state.missed = 0
        return True

    # -- the ticks -----------------------------------------------------------------------------------
    def _tick(self, elapsed: int) -> None:
        """One slice, or the slices a late tick missed (at most one interval's worth)."""
        for _ in range(min(max(elapsed, 1), self._partitions)):
            part = self._next % self._partitions
            self._next += 1
            try:
                if part == 0:
                    self._list_aors()
                self._ping_partition(part)
            except Exception:
                log.failure("NAT pinger: slice {part} failed", part=part)

    def _list_aors(self) -> None:
        aors = list(self.location.aors())
        parts = self._partitions
        if parts == 1:
            self._buckets = [aors]
            return
        buckets: list[list[str]] = [[] for _ in range(parts)]
        for aor in aors:
            buckets[hash(aor) % parts].append(aor)
        self._buckets = buckets

    def _ping_partition(self, part: int) -> None:
        aors, self._buckets[part] = self._buckets[part], []
        states: dict[_Key, _State] = {}
        failed: set[_Key] = set()
        old_states, old_failed = self._states[part], self._failed[part]
        self._states[part], self._failed[part] = states, failed
        get = self.location.get
        tcp = self.settings.natping_tcp
        for aor in aors:
            try:
                bindings: Iterable[Binding] = get(aor)
            except Exception:
                log.failure("NAT pinger: reading {aor} failed", aor=aor)
                continue
            for b in bindings:
                if not b.nat:
                    continue
                flow = b.flow
                if flow is None:
                    continue
                transport = flow.remote.transport
                if transport != "UDP" and (not tcp or transport not in _PINGED):
                    continue
                if b.sipping:
                    message = self._sip_ping(aor, b, old_states, states)
                    if message is None:
                        continue
                    self.stats["sip_pings"] += 1
                else:
                    message = KEEPALIVE
                    self.stats["keepalives"] += 1
                d = maybeDeferred(self.sender.send, Destination(b.received or flow.remote, flow, True), message)
                d.addErrback(self._failed_send, aor, b.uri, failed, old_failed)
        in_flight = self._in_flight
        for state in old_states.values():  # bindings gone since the last interval
            if state.branch is not None:
                in_flight.pop(state.branch, None)

    def _sip_ping(self, aor: str, b: Binding, old_states: dict[_Key, _State], states: dict[_Key, _State]
                  ) -> _Ping | None:
        """The ping for a SIP-pinged binding, after counting a previous unanswered one; None when the
        binding was removed for not answering."""
        key = (aor, b.uri)
        state = old_states.pop(key, None)
        in_flight = self._in_flight
        if state is not None and state.written != b.last_modified:  # registered again: alive
            if state.branch is not None:
                in_flight.pop(state.branch, None)
            state = None
        if state is None:
            state = _State(b.last_modified)
        elif state.branch is not None:
            in_flight.pop(state.branch, None)
            state.branch = None
            state.missed += 1
            settings = self.settings
            if settings.remove_on_timeout and state.missed >= settings.max_pings_lost:
                self._remove(aor, b, state.missed)
                return None
        branch = f"{self.branch_prefix}{next(self._seq):x}"
        state.branch = branch
        in_flight[branch] = state
        states[key] = state
        flow = b.flow
        assert flow is not None
        local = flow.local
        method = self.settings.sipping_method
        uri = str(b.uri)
        return _Ping((
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{flow.remote.transport} {local.hostport};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <{self.from_uri}>;tag={self._tag}\r\n"
            f"To: <{uri}>\r\n"
            f"Call-ID: {branch[7:]}@{local.hostport}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"{self._user_agent}"
            f"Content-Length: 0\r\n\r\n"
        ).encode("utf-8", "surrogateescape"))

    def _remove(self, aor: str, b: Binding, missed: int) -> None:
        self.stats["removed"] += 1
        log.info("nathelper: {aor} contact {contact} did not answer {n} {method} pings in a row: removed",
                 aor=aor, contact=str(b.uri), n=missed, method=self.settings.sipping_method)
        maybeDeferred(self.location.remove, aor, b.uri).addErrback(
            lambda f: log.failure("nathelper: removing {contact} of {aor} failed", f, aor=aor, contact=str(b.uri)))

    def _failed_send(self, failure: Failure, aor: str, uri: SipURI, failed: set[_Key], old_failed: set[_Key]
                     ) -> None:
        self.stats["send_failures"] += 1
        key = (aor, uri)
        if key not in old_failed and key not in failed:
            log.info("nathelper: cannot ping {aor} contact {contact}: {why}", aor=aor, contact=str(uri),
                     why=getattr(failure.value, "reason", None) or failure.getErrorMessage())
        failed.add(key)
