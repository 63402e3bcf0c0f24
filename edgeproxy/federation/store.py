"""The shared location store in MongoDB (OpenSIPS usrloc ``federation-cachedb-cluster`` metadata).

One small document per (AoR, node) says "this AoR has bindings on that node"::

    {
      "_id":          "alice@example.com10.0.1.100",   # aor + sip_addr, no separator (OpenSIPS's key)
      "aor":          "alice@example.com",             # as OpenSIPS writes it
      "home_ip":      "10.0.1.100",                    # the node's sip_addr (bare host[:port])
      "refreshed_at": ISODate("2026-11-25T11:50:00Z"), # edgeproxy: last write by the owning node
      "expires_at":   ISODate("2026-11-25T11:56:00Z"), # edgeproxy: TTL index, refreshed_at + record_ttl
    }

``_id``, ``aor`` and ``home_ip`` are exactly OpenSIPS's (reference §1.2), so OpenSIPS nodes and
edgeproxy nodes can share one collection: an OpenSIPS node ignores the two extra fields, and records an
OpenSIPS node wrote (without ``expires_at``) never expire and are still found by :meth:`homes`. The
extra fields fix OpenSIPS's stale-record problem after a crash: the owning node refreshes its live
records (:class:`~edgeproxy.federation.FederationPublisher`), a TTL index on ``expires_at`` makes
MongoDB delete the records of a node that stopped doing so, and :meth:`homes` already ignores records
past ``expires_at`` (MongoDB's TTL sweep runs only every 60 s).

Theory of operation: every public method returns a Deferred and runs one coroutine on the asyncio
event loop that drives the (asyncio) reactor, through PyMongo's ``AsyncMongoClient``
(:func:`~edgeproxy.federation.reactor.deferred_from_coroutine`). The client is created on that loop
at the first operation and is only ever used from it (it is not thread-safe).

Operations do not go to the driver directly but through an :class:`~edgeproxy.federation.gate.OperationGate`
(see its module for the measurements behind it): at most ``max_in_flight`` in the driver, whose pool is
sized to the same number of connections and kept open (``maxPoolSize`` = ``minPoolSize`` =
``max_in_flight`` unless the URL sets them), so a checkout never waits inside PyMongo; the others wait
in a FIFO, lookups at most ``max_waiting`` of them (beyond: :class:`StoreOverloaded` at once). Each
operation has a firm deadline counted from its submission — lookups ``lookup_timeout`` (1 s by
default), writes ``write_timeout`` — after which the caller gets :class:`StoreTimeout`; the driver is
given the budget left at dispatch as its client-side timeout (``pymongo.timeout``) and is never
cancelled from outside (cancelling PyMongo's tasks inside its pool code left the pool unusable). Server
selection is bounded by ``serverSelectionTimeoutMS`` (1000 ms unless the URL says otherwise).
Concurrent :meth:`homes` calls for one AoR (and identical raw ``find`` commands) share one round-trip.
Failures arrive as :class:`StoreError` (or its subclasses), never as PyMongo exceptions, so callers
need not import PyMongo.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any, Iterable, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..latency import LatencyHistogram
from .gate import OperationGate, StoreError, StoreOverloaded, StoreTimeout
from .reactor import deferred_from_coroutine, event_loop_of, require_asyncio_reactor
from .url import MongoURL, parse_mongo_url

__all__ = ["MongoStore", "StoreError", "StoreTimeout", "StoreOverloaded", "home_record", "record_id",
           "MONGO_EXTRA_HINT"]

log = Logger(namespace="edgeproxy.federation.store")

MONGO_EXTRA_HINT = "the MongoDB store needs PyMongo >= 4.13: pip install 'pymongo>=4.13,<5' (edgeproxy[mongo])"

# Commands whose reply is a cursor: raw_command returns their documents (all batches).
_CURSOR_COMMANDS = frozenset({"find", "aggregate", "listcollections", "listindexes"})
# Reply fields that are driver/cluster bookkeeping, dropped from raw_command results.
_BOOKKEEPING = ("$clusterTime", "operationTime")
# Read-only raw commands whose identical concurrent copies share one round-trip.
_COALESCED_COMMANDS = frozenset({"find", "count", "distinct"})
# MongoDB error codes for "an index with these keys/that name exists with other options".
_INDEX_CONFLICTS = frozenset({85, 86})


def record_id(aor: str, sip_addr: str) -> str:
    """The ``_id`` of the record of ``aor`` on node ``sip_addr``: OpenSIPS's key, AoR then address."""
    return aor + sip_addr


def _utc(seconds: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc)


def _epoch(value: _dt.datetime) -> float:
    """Epoch seconds of a BSON date as PyMongo returns it (naive UTC unless tz_aware)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.timestamp()


def home_record(aor: str, sip_addr: str, now: float, ttl: float) -> dict[str, Any]:
    """The document published for ``aor`` on node ``sip_addr`` at ``now`` (epoch seconds) living
    ``ttl`` seconds unless refreshed (see the module docstring for the shape)."""
    return {"_id": record_id(aor, sip_addr), "aor": aor, "home_ip": sip_addr,
            "refreshed_at": _utc(now), "expires_at": _utc(now + ttl)}


def _import_pymongo() -> Any:
    try:
        import pymongo
    except ImportError:
        raise ImportError(MONGO_EXTRA_HINT) from None
    if not hasattr(pymongo, "AsyncMongoClient"):
        raise ImportError(f"{MONGO_EXTRA_HINT} (found {pymongo.version})")
    return pymongo


class MongoStore:
    """The shared location store: a Deferred API over PyMongo's ``AsyncMongoClient``.

    ``url`` is an OpenSIPS cachedb URL (``mongodb[:instance]://host:port/db.collection?options``, see
    :func:`~edgeproxy.federation.parse_mongo_url`) or a parsed :class:`MongoURL`. ``reactor`` must be
    Twisted's asyncio reactor (default: the installed reactor); anything else raises
    :class:`~edgeproxy.federation.FederationReactorError` here, at construction, with the command to
    use. ``server_selection_timeout`` applies unless the URL sets ``serverSelectionTimeoutMS``;
    ``lookup_timeout`` bounds :meth:`homes`, :meth:`raw_command` and :meth:`ping`, ``write_timeout``
    everything else — queueing included. ``max_in_flight`` operations at most are in the driver at once
    (and the pool keeps that many connections open unless the URL sets ``maxPoolSize`` /
    ``minPoolSize``; a smaller ``maxPoolSize`` lowers ``max_in_flight`` to match); ``max_waiting`` lookups
    at most wait for a slot (see the module docstring). ``client_options`` are extra keyword arguments
    for ``AsyncMongoClient``.
    """

    def __init__(self, url: str | MongoURL, *, reactor: Any = None, server_selection_timeout: float = 1.0,
                 connect_timeout: float = 2.0, lookup_timeout: float = 1.0, write_timeout: float = 5.0,
                 max_in_flight: int = 16, max_waiting: int = 256,
                 client_options: Mapping[str, Any] | None = None) -> None:
        self.url = url if isinstance(url, MongoURL) else parse_mongo_url(url)
        self.reactor = require_asyncio_reactor(reactor)
        self._loop = event_loop_of(self.reactor)
        self._pymongo = _import_pymongo()
        self.lookup_timeout = lookup_timeout
        self.write_timeout = write_timeout
        if max_in_flight < 1 or max_waiting < 0:
            raise ValueError("max_in_flight must be >= 1 and max_waiting >= 0")
        options: dict[str, Any] = {"appname": "edgeproxy"}
        if self.url.option("serverSelectionTimeoutMS") is None:
            options["serverSelectionTimeoutMS"] = int(server_selection_timeout * 1000)
        if self.url.option("connectTimeoutMS") is None:
            options["connectTimeoutMS"] = int(connect_timeout * 1000)
        url_max_pool = self.url.option("maxPoolSize")
        if url_max_pool is None:
            options["maxPoolSize"] = max_in_flight
        elif url_max_pool.isdigit() and int(url_max_pool) > 0:
            max_in_flight = min(max_in_flight, int(url_max_pool))
        if self.url.option("minPoolSize") is None:
            # open before they are needed: a connection made on the lookup path costs a TCP handshake
            # and a hello, and PyMongo makes at most two at a time (maxConnecting)
            options["minPoolSize"] = max_in_flight
        options.update(client_options or {})
        self.max_in_flight = max_in_flight
        self._client_options = options
        self._client: Any = None
        self._closed = False
        self._gate = OperationGate(self.reactor, max_in_flight, max_waiting,
                                   abandon_after=max(10.0, 2 * max(lookup_timeout, write_timeout)))
        # Fail now, not at the first operation, on a connection string PyMongo rejects.
        try:
            self._pymongo.uri_parser.parse_uri(self.url.client_uri, validate=True, warn=False)
        except Exception as exc:
            raise ValueError(f"invalid MongoDB URL {self.url}: {' '.join(str(exc).split())}") from None

    def __repr__(self) -> str:
        return f"<MongoStore {self.url}>"

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the gate in front of the driver (operations submitted, dispatched, queued,
        coalesced, timed out queued / running, refused as overloaded, ...) plus what is in flight and
        waiting now. For operators and tests; the store server's own counters are the reference for
        round-trips."""
        return {**self._gate.stats, "running": self._gate.running, "waiting": self._gate.waiting,
                "max_in_flight": self.max_in_flight}

    @property
    def latency(self) -> LatencyHistogram:
        """How long store operations took in the driver (dispatch -> completion), as a histogram."""
        return self._gate.histogram

    # -- plumbing ------------------------------------------------------------------------------------
    def _collection(self) -> Any:
        if self._closed:
            raise RuntimeError("store is closed")
        if self._client is None:
            self._client = self._pymongo.AsyncMongoClient(self.url.client_uri, **self._client_options)
        return self._client[self.url.database][self.url.collection]

    def _run(self, operation: str, timeout: float, coroutine_fn: Any, *args: Any, bounded: bool = True) -> Deferred:
        """Run ``coroutine_fn(collection, *args)`` on the loop through the gate, within ``timeout``
        seconds from now; errors become :class:`StoreError`. ``bounded``: refused at once
        (:class:`StoreOverloaded`) when ``max_waiting`` operations already wait (lookups); writes are
        not refused, only timed out."""
        pymongo = self._pymongo

        def start(remaining: float) -> Deferred:
            async def call() -> Any:
                try:
                    collection = self._collection()
                    # the budget left after queueing: the driver gives up by itself, nobody cancels it
                    with pymongo.timeout(remaining):
                        return await coroutine_fn(collection, *args)
                except Exception as exc:
                    raise self._error(operation, exc) from exc

            return deferred_from_coroutine(self._loop, call).addErrback(self._driver_failure, operation)

        return self._gate.submit(operation, timeout, start, bounded=bounded)

    def _error(self, operation: str, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        errors = self._pymongo.errors
        unavailable = isinstance(exc, (errors.ConnectionFailure, errors.WaitQueueTimeoutError, TimeoutError)) or bool(
            getattr(exc, "timeout", False))
        return StoreError(operation, exc, unavailable)

    @staticmethod
    def _driver_failure(failure: Any, operation: str) -> Any:
        """Whatever else escaped the coroutine (an asyncio ``CancelledError`` — a BaseException — when
        the loop shuts down) still reaches the caller as a StoreError."""
        if failure.check(StoreError):
            return failure
        raise StoreError(operation, failure.value, True)

    # -- records -------------------------------------------------------------------------------------
    def upsert_home(self, aor: str, sip_addr: str, now: float, ttl: float) -> "Deferred[None]":
        """Publish (or refresh) the record of ``aor`` on node ``sip_addr``: upsert by ``_id``, ``$set``
        of the other fields, as OpenSIPS does (idempotent)."""
        doc = home_record(aor, sip_addr, now, ttl)
        key = doc.pop("_id")

        async def op(coll: Any) -> None:
            await coll.update_one({"_id": key}, {"$set": doc}, upsert=True)

        return self._run("upsert_home", self.write_timeout, op, bounded=False)

    def delete_home(self, aor: str, sip_addr: str) -> "Deferred[None]":
        """Remove the record of ``aor`` on node ``sip_addr`` (no error if there is none)."""
        key = record_id(aor, sip_addr)

        async def op(coll: Any) -> None:
            await coll.delete_one({"_id": key})

        return self._run("delete_home", self.write_timeout, op, bounded=False)

    def sync_homes(self, present: Iterable[str], absent: Iterable[str], sip_addr: str, now: float,
                   ttl: float) -> "Deferred[int]":
        """In one unordered ``bulk_write``: upsert the records of the AoRs in ``present`` and delete
        those of ``absent``, for node ``sip_addr``. Fires with the number of operations sent; fails as
        a whole (any write error) — the caller retries everything, which is idempotent."""
        pymongo = self._pymongo
        ops: list[Any] = []
        for aor in absent:
            ops.append(pymongo.DeleteOne({"_id": record_id(aor, sip_addr)}))
        for aor in present:
            doc = home_record(aor, sip_addr, now, ttl)
            key = doc.pop("_id")
            ops.append(pymongo.UpdateOne({"_id": key}, {"$set": doc}, upsert=True))
        if not ops:
            from twisted.internet.defer import succeed

            return succeed(0)

        async def op(coll: Any) -> int:
            await coll.bulk_write(ops, ordered=False)
            return len(ops)

        return self._run("sync_homes", self.write_timeout, op, bounded=False)

    def upsert_homes(self, aors: Iterable[str], sip_addr: str, now: float, ttl: float) -> "Deferred[int]":
        """Publish or refresh the records of many AoRs in one bulk write (see :meth:`sync_homes`)."""
        return self.sync_homes(list(aors), (), sip_addr, now, ttl)

    def homes(self, aor: str, now: float | None = None) -> "Deferred[list[str]]":
        """The ``home_ip`` of every node holding ``aor`` (this one included), in one round-trip.

        Records whose ``expires_at`` has passed at ``now`` (epoch seconds, default: the wall clock) are
        ignored even before MongoDB's TTL sweep deletes them; records without ``expires_at`` (written
        by OpenSIPS) always count. Fails with an ``unavailable`` :class:`StoreError` within
        ``lookup_timeout`` when the store is down or slow (:class:`StoreTimeout`), at once when too many
        lookups already wait (:class:`StoreOverloaded`).

        Concurrent calls for the same ``aor`` (with the default ``now``) share one ``find``: a burst of
        calls to one user — a hunt group, a busy line retried — costs the store one round-trip.
        """
        # Filter on expiry here rather than in the query: an AoR has a record per node holding it (a
        # handful), and the plain {aor} query uses the aor index everywhere — SecantusDB, for one,
        # scans the whole collection for a top-level $or.
        when = time.time() if now is None else now
        query = {"aor": aor}

        async def op(coll: Any) -> list[str]:
            out: list[str] = []
            async for doc in coll.find(query, {"home_ip": 1, "expires_at": 1, "_id": 0}):
                home = doc.get("home_ip")
                expires = doc.get("expires_at")
                if isinstance(expires, _dt.datetime) and _epoch(expires) <= when:
                    continue  # expired, not yet swept by the TTL monitor
                if isinstance(home, str) and home and home not in out:
                    out.append(home)
            return out

        if now is not None:
            return self._run("homes", self.lookup_timeout, op)
        return self._gate.coalesce(("homes", aor), lambda: self._run("homes", self.lookup_timeout, op), list)

    def delete_node_records(self, sip_addr: str) -> "Deferred[int]":
        """Delete every record whose ``home_ip`` is ``sip_addr`` (a node's leftovers from before a crash
        or restart — its in-memory bindings are gone); fires with how many went."""

        async def op(coll: Any) -> int:
            result = await coll.delete_many({"home_ip": sip_addr})
            return int(result.deleted_count)

        return self._run("delete_node_records", self.write_timeout, op, bounded=False)

    # -- raw queries (OpenSIPS cache_raw_query) --------------------------------------------------------
    def raw_command(self, command: Mapping[str, Any] | str) -> "Deferred[list[dict[str, Any]]]":
        """Run a MongoDB database command on the store's database, like OpenSIPS's ``cache_raw_query``.

        ``command`` is a dict whose first key is the command name, or its JSON text (MongoDB Extended
        JSON, so ``{"$date": …}`` works), e.g. ``{"find": "userlocation", "filter": {"aor": aor}}``.
        Commands that return a cursor (``find``, ``aggregate``, ``listCollections``, ``listIndexes``)
        fire with all their documents (every batch); any other command fires with ``[reply]``, the
        reply document without the cluster-time bookkeeping. For the seed's OpenSIPS 3.0 spelling, a
        ``find`` with ``query`` and no ``filter`` has ``query`` renamed to ``filter``. Documents are
        plain dicts (datetimes stay ``datetime``; ``_id`` may be an ``ObjectId``). A route should put a
        ``limit`` in a query that may match many documents. Identical ``find``/``count``/``distinct``
        commands running at the same time share one round-trip. Failures, timeouts and overload are
        :class:`StoreError` as for :meth:`homes`.
        """
        try:
            cmd = self._command_dict(command)
        except Exception as exc:
            from twisted.internet.defer import fail

            return fail(StoreError("raw_command", exc, False))
        name = next(iter(cmd)).lower()

        async def op(coll: Any) -> list[dict[str, Any]]:
            db = coll.database
            if name in _CURSOR_COMMANDS:
                cursor = await db.cursor_command(cmd)
                return [dict(doc) for doc in await cursor.to_list()]
            reply = dict(await db.command(cmd))
            for key in _BOOKKEEPING:
                reply.pop(key, None)
            return [reply]

        if name not in _COALESCED_COMMANDS:
            return self._run("raw_command", self.lookup_timeout, op)
        # identical read commands in flight at the same time share one round-trip (the redirect route
        # asks the same find for every call to one user); each caller gets its own copies
        from bson import json_util

        try:
            key = ("raw_command", json_util.dumps(cmd))
        except Exception:  # not representable as Extended JSON: the driver will say what is wrong
            return self._run("raw_command", self.lookup_timeout, op)
        return self._gate.coalesce(key, lambda: self._run("raw_command", self.lookup_timeout, op),
                                   lambda docs: [dict(doc) for doc in docs])

    def _command_dict(self, command: Mapping[str, Any] | str) -> dict[str, Any]:
        if isinstance(command, (str, bytes)):
            from bson import json_util

            parsed = json_util.loads(command)
        else:
            parsed = command
        if not isinstance(parsed, Mapping) or not parsed:
            raise ValueError("a command is a non-empty document whose first key is the command name")
        cmd = dict(parsed)
        first = next(iter(cmd))
        if first.lower() == "find" and "query" in cmd and "filter" not in cmd:
            cmd = {("filter" if k == "query" else k): v for k, v in cmd.items()}
        return cmd

    # -- administration ------------------------------------------------------------------------------
    def ensure_indexes(self) -> "Deferred[list[str]]":
        """Create the indexes the federation relies on (idempotent); fires with their names.

        ``expires_at`` with ``expireAfterSeconds=0`` (TTL: MongoDB deletes a record once its
        ``expires_at`` has passed), ``aor`` (global lookups) and ``home_ip`` (start-up cleanup). An
        index on the same keys that already exists with other options (say, created by hand) is left
        alone with a warning rather than failing the start.
        """
        errors = self._pymongo.errors
        specs = [("expires_at", {"expireAfterSeconds": 0}), ("aor", {}), ("home_ip", {})]

        async def op(coll: Any) -> list[str]:
            names: list[str] = []
            for key, options in specs:
                try:
                    names.append(await coll.create_index([(key, 1)], **options))
                except errors.OperationFailure as exc:
                    if exc.code not in _INDEX_CONFLICTS:
                        raise
                    log.warn("federation store {url}: index on {key} exists with other options, kept: {err}",
                             url=str(self.url), key=key, err=str(exc))
            return names

        return self._run("ensure_indexes", self.write_timeout, op, bounded=False)

    def ping(self) -> "Deferred[None]":
        """Fire when the store answers a ``ping`` (fails fast like :meth:`homes` when it is down)."""

        async def op(coll: Any) -> None:
            await coll.database.command("ping")

        return self._run("ping", self.lookup_timeout, op)

    def close(self) -> "Deferred[None]":
        """Close the client (connections, monitors). Later operations fail."""
        client, self._client = self._client, None
        self._closed = True
        if client is None:
            from twisted.internet.defer import succeed

            return succeed(None)

        async def closing() -> None:
            await client.close()

        return deferred_from_coroutine(self._loop, closing)
