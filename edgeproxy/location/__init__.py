"""The location service (RFC 3261 §10.2; OpenSIPS usrloc): bindings of addresses-of-record to contacts.

* :class:`Binding`, :class:`LookupResult` — the stored value and OpenSIPS's ``lookup()`` return codes.
* :class:`LocationService`, :class:`LocationListener` — the Deferred-returning interface and the
  AoR created/emptied events (what OpenSIPS federation publishes to NoSQL).
* :class:`InMemoryLocation` — the per-node implementation with timer-driven expiry.
* :class:`ChangeJournal` — the AoRs changed since a persistent usrloc last wrote them.
* :func:`binding_destination` — Request-URI, next hop and route set for a binding.
"""

from .binding import EMPTY_PARAMS, Binding, LookupResult, order_key
from .destination import binding_destination, uri_endpoint
from .journal import ChangeJournal
from .memory import InMemoryLocation
from .service import LocationListener, LocationService, LocationUnavailable

__all__ = [
    "Binding", "LookupResult", "EMPTY_PARAMS", "order_key",
    "LocationService", "LocationListener", "LocationUnavailable", "InMemoryLocation", "ChangeJournal",
    "binding_destination", "uri_endpoint",
]
