"""The store URL: OpenSIPS's ``cachedb_url`` for MongoDB, split into what PyMongo needs.

OpenSIPS writes ``mongodb://10.0.1.244:27017/opensipsDB.userlocation`` (usrloc) or, with a named
connection for ``cache_raw_query``, ``mongodb:instance1://10.0.1.244:27017/opensipsDB.userlocation``
(cachedb_mongodb). The path is ``database.collection``; that is not a MongoDB connection string (whose
path is only a database), so :func:`parse_mongo_url` takes it apart: the database, the collection
(everything after the first dot — database names cannot contain dots, collection names can), the
OpenSIPS instance name, and a plain connection string for PyMongo. Query options
(``?replicaSet=rs0&serverSelectionTimeoutMS=500&authSource=admin``) are passed through untouched.

No PyMongo import here: a configuration can be checked on a node without the ``mongo`` extra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping
from urllib.parse import parse_qsl, quote, unquote

__all__ = ["MongoURL", "MongoURLError", "parse_mongo_url"]

_SCHEME = re.compile(r"^(?P<scheme>mongodb(?:\+srv)?)(?::(?P<instance>[A-Za-z0-9_.-]+))?://(?P<rest>.*)$", re.S)
# MongoDB forbids these in database names (and '.', which separates the collection here).
_BAD_DB_CHARS = set('/\\. "$*<>:|?\0')


class MongoURLError(ValueError):
    """The URL cannot be used; ``str()`` is one line saying why."""


@dataclass(frozen=True)
class MongoURL:
    """A parsed ``mongodb[:instance]://[user:pass@]hosts/database.collection[?options]``.

    * ``client_uri`` — the connection string for ``AsyncMongoClient``: scheme, credentials, hosts and
      options, without the ``database.collection`` path (when there are credentials and no
      ``authSource`` option, ``authSource=<database>`` is added, which is what MongoDB would have
      inferred from a plain ``/database`` path).
    * ``database`` / ``collection`` — where the location records live.
    * ``instance`` — the OpenSIPS connection name (``instance1`` in ``mongodb:instance1://``), or None.
    * ``hosts`` — the host list as written (``h1:27017,h2:27017``), for logs; credentials are never in it.
    * ``options`` — the query options as given (names as written, values as strings).
    """

    client_uri: str
    database: str
    collection: str
    instance: str | None = None
    hosts: str = ""
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def option(self, name: str) -> str | None:
        """The value of a query option, looked up case-insensitively as MongoDB does."""
        low = name.lower()
        for key, value in self.options.items():
            if key.lower() == low:
                return value
        return None

    def __str__(self) -> str:  # never show the password
        inst = f":{self.instance}" if self.instance else ""
        return f"mongodb{inst}://{self.hosts}/{self.database}.{self.collection}"


def parse_mongo_url(url: str) -> MongoURL:
    """Parse an OpenSIPS-style MongoDB cachedb URL. Raises :class:`MongoURLError` (one line)."""
    if not isinstance(url, str) or not url.strip():
        raise MongoURLError("must be a mongodb://host[:port]/database.collection URL")
    m = _SCHEME.match(url.strip())
    if m is None:
        raise MongoURLError(f"must start with mongodb:// or mongodb:NAME:// (OpenSIPS instance form), got {url!r}"
                            if "://" in url else "must be a mongodb://host[:port]/database.collection URL")
    scheme, instance, rest = m["scheme"], m["instance"], m["rest"]
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    if not slash or not path:
        raise MongoURLError("must name the database and collection: mongodb://host[:port]/database.collection")
    credentials, at, hosts = authority.rpartition("@")
    if not at:
        hosts, credentials = authority, ""
    if not hosts or any(not h for h in hosts.split(",")):
        raise MongoURLError("must name at least one host: mongodb://host[:port]/database.collection")
    database, dot, collection = unquote(path).partition(".")
    if not dot or not database or not collection:
        raise MongoURLError(f"path must be database.collection (e.g. opensipsDB.userlocation), got {path!r}")
    if _BAD_DB_CHARS & set(database) or len(database) > 63:
        raise MongoURLError(f"invalid database name {database!r}")
    if collection.startswith("system.") or "$" in collection or "\0" in collection or collection.endswith("."):
        raise MongoURLError(f"invalid collection name {collection!r}")
    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise MongoURLError(f"malformed options {query!r}") from None
        for key, value in pairs:
            options[key] = value
    client_query = query
    if credentials and not any(k.lower() == "authsource" for k in options):
        extra = f"authSource={quote(database, safe='')}"
        client_query = f"{query}&{extra}" if query else extra
    client_uri = f"{scheme}://{authority}/" + (f"?{client_query}" if client_query else "")
    return MongoURL(client_uri=client_uri, database=database, collection=collection, instance=instance,
                    hosts=hosts, options=MappingProxyType(options))
