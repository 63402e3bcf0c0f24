"""The location service interface: where the registrar writes bindings and the proxy reads them
(RFC 3261 §10.2 "location service"; OpenSIPS usrloc).

Every operation returns a Deferred so that a storage that does I/O (a shared database, a replicated
store) can implement the same interface as the per-node :class:`~edgeproxy.location.InMemoryLocation`,
whose Deferreds have already fired when returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol, Sequence, runtime_checkable

from ..sip.endpoint import Flow
from ..sip.uri import SipURI
from .binding import Binding, LookupResult

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

__all__ = ["LocationListener", "LocationService", "LocationUnavailable"]


class LocationUnavailable(Exception):
    """The location service could not commit a change (its database failed): the REGISTER fails with
    500 and the tentative bindings are withdrawn (RFC 3261 §10.3 step 7: "If any one of them fails
    (for example, because the back-end database commit failed), the request MUST fail with a 500
    (Server Error) response and all tentative binding updates MUST be removed"). The storage logs
    the outage; the registrar only answers."""

    status = 500
    reason = "Server Internal Error"


@runtime_checkable
class LocationListener(Protocol):
    """Told when an address-of-record appears in or disappears from the location service.

    These are the two events OpenSIPS's ``federation-cachedb`` usrloc mode publishes to NoSQL
    (``insert_urecord`` → metadata upsert; ``release_urecord``/timer/``delete_urecord`` → delete;
    reference §1.3): ``aor_created`` when an AoR gets its first binding, ``aor_emptied`` when it loses its
    last one — whatever the cause: an unregistering REGISTER, ``Contact: *``, expiry, a closed flow or an
    explicit :meth:`LocationService.remove`. Refreshes and changes to an AoR that keeps at least one
    binding fire nothing. Events for one AoR strictly alternate, starting with ``aor_created``.

    Listeners are called synchronously after the change is applied; an exception in a listener is
    logged and does not undo the change or stop other listeners.
    """

    def aor_created(self, aor: str) -> None: ...

    def aor_emptied(self, aor: str) -> None: ...


class LocationService(Protocol):
    """Bindings of addresses-of-record to contacts (RFC 3261 §10; OpenSIPS usrloc).

    AoRs are the canonical keys made by :func:`edgeproxy.registrar.aor_of`. Expired bindings are never
    returned and disappear on their own (firing ``aor_emptied`` when it was an AoR's last).
    """

    def replace(self, aor: str, bindings: Sequence[Binding]) -> "Deferred[None]":
        """Make ``bindings`` the complete set of bindings of ``aor``, atomically.

        This is the primitive behind the registrar's all-or-nothing update (RFC 3261 §10.3 step 7: "the
        binding updates MUST be committed … only if all binding updates and additions succeed"): the
        registrar reads the current set, computes the new one and writes it back in one call. An empty
        sequence (or only expired bindings) removes the AoR.
        """
        ...

    def lookup(self, aor: str, method: str | None = None) -> "Deferred[tuple[LookupResult, list[Binding]]]":
        """The live bindings of ``aor`` ordered by q (highest first), then most recently modified first
        (OpenSIPS ``lookup()``). With ``method`` (OpenSIPS flag ``m``, method filtering) only bindings
        accepting it are returned, and ``METHOD_NOT_ALLOWED`` (-2) when bindings exist but none does.
        ``NOT_FOUND`` (-1) comes with an empty list."""
        ...

    def contacts(self, aor: str) -> "Deferred[list[Binding]]":
        """The live bindings of ``aor`` in lookup order (empty when none)."""
        ...

    def remove(self, aor: str, uri: SipURI | None = None) -> "Deferred[int]":
        """Remove every binding of ``aor``, or only those whose contact URI equals ``uri`` (RFC 3261
        §19.1.4); fires with how many went (OpenSIPS ``remove()`` / MI ``ul_rm``)."""
        ...

    def remove_flow(self, flow: Flow) -> "Deferred[int]":
        """Remove every binding that arrived on ``flow`` because that connection closed and the client
        can no longer be reached through it (RFC 5626 §4.4 / RFC 7118 §5; Kamailio
        ``handle_lost_tcp``); fires with how many went."""
        ...

    def subscribe(self, listener: LocationListener) -> None:
        """Start telling ``listener`` about AoRs created and emptied."""
        ...

    def unsubscribe(self, listener: LocationListener) -> None:
        """Stop telling ``listener``; unknown listeners are ignored."""
        ...

    def aors(self) -> Iterable[str]:
        """The AoRs that currently have at least one live binding (statistics, MI-style dumps)."""
        ...

    def __len__(self) -> int:
        """How many AoRs are stored (cheap; may briefly include AoRs whose bindings just expired)."""
        ...
