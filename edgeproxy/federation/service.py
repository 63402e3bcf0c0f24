"""One node's federation, and the twistd service that starts and stops it.

:class:`Federation` bundles what a node needs for the shared location store: the
:class:`~edgeproxy.federation.MongoStore`, the :class:`~edgeproxy.federation.FederationPublisher` that
keeps this node's records in it, global lookups (OpenSIPS ``lookup("location", "g")``) and raw queries
(OpenSIPS ``cache_raw_query``). Everything returns Deferreds; nothing asyncio leaks out.

Wiring into a node (what ``twistd edgeproxy`` does when the configuration has ``[federation]``):

1. in the plugin's ``Options.postOptions``, before any reactor import:
   :func:`~edgeproxy.federation.arrange_asyncio_reactor` — installs the asyncio reactor, or raises
   :class:`~edgeproxy.federation.FederationReactorError` (one line: use ``--reactor=asyncio``) when
   another reactor was chosen on the command line;
2. after building the node: ``fed = Federation(running_node.location, settings)`` and
   ``FederationService(fed).setServiceParent(top)``; routes reach ``fed.global_lookup`` and
   ``fed.raw_query`` through the node.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from .lookup import GlobalLookup, global_lookup
from .publisher import FederationPublisher
from .reactor import require_asyncio_reactor
from .settings import FederationSettings
from .store import MongoStore

__all__ = ["Federation", "FederationService"]

log = Logger(namespace="edgeproxy.federation")


class Federation:
    """The federation of one node: ``location`` is its location service, ``settings`` the checked
    ``[federation]`` table. ``reactor`` (default: the installed one) must be the asyncio reactor —
    checked here, so a wrongly started node fails at construction with the instruction. ``store``
    replaces the MongoDB store (tests)."""

    def __init__(self, location: Any, settings: FederationSettings, *, reactor: Any = None, store: Any = None) -> None:
        self.settings = settings
        self.location = location
        if store is None:
            reactor = require_asyncio_reactor(reactor)
            store = MongoStore(settings.url, reactor=reactor,
                               server_selection_timeout=settings.server_selection_timeout,
                               lookup_timeout=settings.lookup_timeout, write_timeout=settings.write_timeout,
                               max_in_flight=settings.max_in_flight, max_waiting=settings.max_waiting)
        elif reactor is None:
            from twisted.internet import reactor as installed

            reactor = installed
        self.reactor = reactor
        self.store = store
        self.sip_addr = settings.sip_addr
        self.publisher = FederationPublisher(
            location, store, settings.sip_addr, reactor,
            refresh_interval=settings.refresh_interval, record_ttl=settings.ttl,
            retry_interval=settings.retry_interval, max_retry_interval=settings.max_retry_interval,
            batch_size=settings.batch_size, cleanup_on_start=settings.cleanup_on_start,
            unpublish_on_stop=settings.unpublish_on_stop)

    def start(self) -> "Deferred[bool]":
        """Start publishing (see :meth:`FederationPublisher.start`); fires True when the store was
        reached, False when not (retries go on); never fails."""
        log.info("federation: publishing AoRs of {addr} to {url}", addr=self.sip_addr, url=str(self.settings.url))
        return self.publisher.start()

    def stop(self) -> "Deferred[None]":
        """Stop publishing, delete this node's records (``unpublish_on_stop``), close the client."""
        d = self.publisher.stop()
        close = getattr(self.store, "close", None)
        if close is not None:
            d.addCallback(lambda _: close())
            d.addErrback(lambda f: log.warn("federation: closing the store: {err}", err=f.getErrorMessage()))
        return d

    def global_lookup(self, aor: str, method: str | None = None) -> "Deferred[GlobalLookup]":
        """Local bindings plus the other nodes holding ``aor``; ``ERROR`` (-3) fast when the store is
        down and nothing is local (see :mod:`edgeproxy.federation.lookup`)."""
        return global_lookup(self.location, self.store, self.sip_addr, aor, method,
                             store_up=self.publisher.available)

    def homes(self, aor: str) -> "Deferred[list[str]]":
        """The ``home_ip`` of every node holding ``aor`` (this one included); fails with
        :class:`~edgeproxy.federation.StoreError`."""
        return self.store.homes(aor)

    def raw_query(self, command: Mapping[str, Any] | str) -> "Deferred[list[dict[str, Any]]]":
        """OpenSIPS ``cache_raw_query``: run a MongoDB command, get the documents as dicts (see
        :meth:`MongoStore.raw_command`)."""
        return self.store.raw_command(command)


class FederationService(service.Service):
    """Starts the federation with the application and stops it (records deleted) on shutdown. The
    start does not wait for the store: a node whose store is down still starts and serves."""

    name = "federation"

    def __init__(self, federation: Federation) -> None:
        self.federation = federation

    def startService(self) -> None:
        super().startService()
        self.federation.start()

    def stopService(self) -> "Deferred[None] | None":
        super().stopService()
        return self.federation.stop() if self.federation is not None else succeed(None)
