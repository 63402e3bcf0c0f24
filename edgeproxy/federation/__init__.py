"""Federation: a location store shared by several nodes (OpenSIPS usrloc ``federation-cachedb-cluster``).

Each node keeps its contacts in memory (:class:`~edgeproxy.location.InMemoryLocation`) and publishes,
per address-of-record, one small document to MongoDB saying "this AoR has bindings on node
``home_ip``" (same ``_id``/``aor``/``home_ip`` shape as OpenSIPS, plus ``refreshed_at`` and a TTL
``expires_at``). A global lookup asks MongoDB which other nodes hold an AoR and relays there.

* :func:`parse_mongo_url` / :class:`MongoURL` — OpenSIPS ``cachedb_url`` (``mongodb[:instance]://…/db.collection``).
* :class:`MongoStore` — the Deferred API over PyMongo's ``AsyncMongoClient`` (needs the asyncio reactor),
  behind an :class:`OperationGate` (bounded in-flight operations and waiting queue, firm deadlines,
  coalesced identical reads); failures are :class:`StoreError`, :class:`StoreTimeout`,
  :class:`StoreOverloaded`.
* :class:`FederationPublisher` — the location listener that keeps this node's records right: upsert
  on first binding, delete on last, periodic refresh, start-up cleanup, re-publication after outages.
* :func:`global_lookup` / :class:`GlobalLookup` — local bindings + remote nodes; -3 when the store is down.
* :class:`Federation`, :class:`FederationService`, :class:`FederationSettings` /
  :func:`federation_settings` — wiring into a node and its configuration.
* :func:`arrange_asyncio_reactor` / :func:`require_asyncio_reactor` — the reactor the store needs.

PyMongo is imported only when a :class:`MongoStore` is built (the ``mongo`` extra).
"""

from .gate import OperationGate, StoreError, StoreOverloaded, StoreTimeout
from .lookup import GlobalLookup, global_lookup, remote_target
from .publisher import FederationPublisher
from .reactor import (
    REACTOR_INSTRUCTION,
    FederationReactorError,
    arrange_asyncio_reactor,
    deferred_from_coroutine,
    is_asyncio_reactor,
    require_asyncio_reactor,
)
from .service import Federation, FederationService
from .settings import FederationSettings, federation_settings
from .store import MongoStore, home_record, record_id
from .url import MongoURL, MongoURLError, parse_mongo_url

__all__ = [
    "parse_mongo_url", "MongoURL", "MongoURLError",
    "MongoStore", "StoreError", "StoreTimeout", "StoreOverloaded", "OperationGate", "home_record", "record_id",
    "FederationPublisher",
    "global_lookup", "GlobalLookup", "remote_target",
    "Federation", "FederationService", "FederationSettings", "federation_settings",
    "arrange_asyncio_reactor", "require_asyncio_reactor", "is_asyncio_reactor", "deferred_from_coroutine",
    "FederationReactorError", "REACTOR_INSTRUCTION",
]
