"""Federation pieces that need no MongoDB: the URL, the settings, the reactor rule, global-lookup result
codes (with fake location/store), the skip-when-no-server rule of the store tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import fail, succeed

from edgeproxy.config import ConfigError
from edgeproxy.federation import (
    FederationReactorError,
    MongoStore,
    MongoURLError,
    StoreError,
    federation_settings,
    global_lookup,
    home_record,
    parse_mongo_url,
    require_asyncio_reactor,
)
from edgeproxy.location import LookupResult

sys.path.insert(0, str(Path(__file__).parent))
from support import mongo_server  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# -- parse_mongo_url -----------------------------------------------------------------------------------

def test_url_of_the_seed() -> None:
    u = parse_mongo_url("mongodb://10.0.1.244:27017/opensipsDB.userlocation")
    assert (u.database, u.collection, u.instance, u.hosts) == ("opensipsDB", "userlocation", None, "10.0.1.244:27017")
    assert u.client_uri == "mongodb://10.0.1.244:27017/"


def test_url_opensips_instance_form() -> None:
    u = parse_mongo_url("mongodb:instance1://10.0.1.244:27017/opensipsDB.userlocation")
    assert u.instance == "instance1" and u.collection == "userlocation"
    assert u.client_uri == "mongodb://10.0.1.244:27017/"
    assert str(u) == "mongodb:instance1://10.0.1.244:27017/opensipsDB.userlocation"


def test_url_options_pass_through_and_credentials_default_auth_source() -> None:
    u = parse_mongo_url("mongodb://h1:27017,h2:27018/db.loc?replicaSet=secantus&serverSelectionTimeoutMS=500")
    assert u.options == {"replicaSet": "secantus", "serverSelectionTimeoutMS": "500"}
    assert u.option("serverselectiontimeoutms") == "500"
    assert u.client_uri == "mongodb://h1:27017,h2:27018/?replicaSet=secantus&serverSelectionTimeoutMS=500"
    c = parse_mongo_url("mongodb://user:p%40ss@h:27017/opensipsDB.userlocation")
    assert c.client_uri == "mongodb://user:p%40ss@h:27017/?authSource=opensipsDB"
    assert "p%40ss" not in str(c) and "user:" not in str(c) and "@" not in str(c)
    c = parse_mongo_url("mongodb://user:pw@h/db.c?authSource=admin")
    assert c.client_uri == "mongodb://user:pw@h/?authSource=admin"


def test_url_collection_may_contain_dots() -> None:
    assert parse_mongo_url("mongodb://h/db.a.b").collection == "a.b"


@pytest.mark.parametrize("bad", [
    "", "http://h/db.c", "mongodb://h", "mongodb://h/", "mongodb://h/db", "mongodb://h/db.", "mongodb:///db.c",
    "mongodb://h/.c", "mongodb://h/d$b.c", "mongodb://h/db.system.users", "mongodb://h,/db.c",
])
def test_url_errors_are_one_line(bad: str) -> None:
    with pytest.raises(MongoURLError) as err:
        parse_mongo_url(bad)
    assert "\n" not in str(err.value)


def test_home_record_shape() -> None:
    doc = home_record("alice@example.com", "10.0.1.100", 1_800_000_000.0, 360)
    assert doc["_id"] == "alice@example.com10.0.1.100"
    assert (doc["aor"], doc["home_ip"]) == ("alice@example.com", "10.0.1.100")
    assert (doc["expires_at"] - doc["refreshed_at"]).total_seconds() == 360
    assert doc["refreshed_at"].tzinfo is not None


# -- settings ------------------------------------------------------------------------------------------

def test_settings_defaults_and_ttl() -> None:
    s = federation_settings({"cachedb_url": "mongodb://10.0.1.244:27017/opensipsDB.userlocation", "sip_addr": "10.0.1.100"})
    assert s.refresh_interval == 120 and s.ttl == 360 and s.lookup_timeout == 1.0
    assert s.url.collection == "userlocation"
    s = federation_settings({"cachedb_url": "mongodb://h/d.c", "sip_addr": "[2001:db8::1]:5060", "record_ttl": 900})
    assert s.ttl == 900


@pytest.mark.parametrize("table, key", [
    ({"sip_addr": "10.0.0.1"}, "federation.cachedb_url"),
    ({"cachedb_url": "mongodb://h/d.c"}, "federation.sip_addr"),
    ({"cachedb_url": "mongodb://h/d", "sip_addr": "10.0.0.1"}, "federation.cachedb_url"),
    ({"cachedb_url": "mongodb://h/d.c", "sip_addr": "sip:10.0.0.1"}, "federation.sip_addr"),
    ({"cachedb_url": "mongodb://h/d.c", "sip_addr": "10.0.0.300"}, "federation.sip_addr"),
    ({"cachedb_url": "mongodb://h/d.c", "sip_addr": "10.0.0.1:70000"}, "federation.sip_addr"),
    ({"cachedb_url": "mongodb://h/d.c", "sip_addr": "10.0.0.1", "refresh_interval": 0}, "federation.refresh_interval"),
    ({"cachedb_url": "mongodb://h/d.c", "sip_addr": "10.0.0.1", "record_ttl": 60}, "federation.record_ttl"),
    ({"cachedb_url": "mongodb://h/d.c", "sip_addr": "10.0.0.1", "batch_size": True}, "federation.batch_size"),
    ({"cachedb_url": "mongodb://h/d.c", "sip_addr": "10.0.0.1", "refresh_intervall": 5}, "federation.refresh_intervall"),
])
def test_settings_errors_name_the_key(table: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        federation_settings(table)
    assert err.value.key == key and "\n" not in str(err.value)


def test_settings_unknown_key_suggests() -> None:
    with pytest.raises(ConfigError, match='did you mean "refresh_interval"'):
        federation_settings({"cachedb_url": "mongodb://h/d.c", "sip_addr": "x", "refresh_intervall": 5})


# -- the reactor rule ------------------------------------------------------------------------------------

class NotAsyncio:
    pass


def test_store_refuses_a_non_asyncio_reactor_with_the_instruction() -> None:
    with pytest.raises(FederationReactorError) as err:
        MongoStore("mongodb://127.0.0.1:1/d.c", reactor=NotAsyncio())
    text = str(err.value)
    assert "twistd --reactor=asyncio" in text and "NotAsyncio" in text and "\n" not in text


def test_require_asyncio_reactor_on_the_test_reactor() -> None:
    from twisted.internet import reactor

    if type(reactor).__name__ == "AsyncioSelectorReactor":
        assert require_asyncio_reactor() is reactor
    else:
        with pytest.raises(FederationReactorError, match="--reactor=asyncio"):
            require_asyncio_reactor()


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_arrange_installs_the_asyncio_reactor_when_none_is_installed() -> None:
    proc = _python("""
        import sys
        from edgeproxy.federation import arrange_asyncio_reactor
        assert "twisted.internet.reactor" not in sys.modules
        r = arrange_asyncio_reactor()
        from twisted.internet import reactor
        assert r is reactor
        print(type(reactor).__name__)
        print(type(arrange_asyncio_reactor()).__name__)  # again: accepted
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["AsyncioSelectorReactor", "AsyncioSelectorReactor"]


def test_arrange_refuses_another_installed_reactor_in_one_line() -> None:
    proc = _python("""
        from twisted.internet import epollreactor
        epollreactor.install()
        from edgeproxy.federation import arrange_asyncio_reactor, FederationReactorError
        try:
            arrange_asyncio_reactor()
        except FederationReactorError as exc:
            print(exc)
    """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "EPollReactor" in lines[0] and "twistd --reactor=asyncio" in lines[0]


def test_importing_the_package_installs_no_reactor_and_no_pymongo() -> None:
    proc = _python("""
        import sys
        import edgeproxy.federation
        print("twisted.internet.reactor" in sys.modules, "pymongo" in sys.modules)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


# -- global lookup result codes ----------------------------------------------------------------------------

class FakeLocation:
    def __init__(self, result: tuple[LookupResult, list[Any]] | Exception) -> None:
        self.result = result

    def lookup(self, aor: str, method: str | None = None) -> Any:
        return fail(self.result) if isinstance(self.result, Exception) else succeed(self.result)


class FakeHomes:
    def __init__(self, result: list[str] | Exception) -> None:
        self.result = result

    def homes(self, aor: str) -> Any:
        return fail(self.result) if isinstance(self.result, Exception) else succeed(list(self.result))


DOWN = StoreError("homes", ConnectionError("no server"), True)
LOCAL = (LookupResult.FOUND, ["binding"])


@pytest.mark.parametrize("local, homes, code, bindings, remote, error", [
    (LOCAL, ["10.0.1.100"], LookupResult.FOUND, ["binding"], [], False),  # only this node
    (LOCAL, ["10.0.1.100", "10.0.2.100"], LookupResult.FOUND, ["binding"], ["10.0.2.100"], False),
    ((LookupResult.NOT_FOUND, []), ["10.0.2.100"], LookupResult.FOUND, [], ["10.0.2.100"], False),
    ((LookupResult.NOT_FOUND, []), [], LookupResult.NOT_FOUND, [], [], False),
    ((LookupResult.METHOD_NOT_ALLOWED, []), [], LookupResult.METHOD_NOT_ALLOWED, [], [], False),
    ((LookupResult.METHOD_NOT_ALLOWED, []), ["10.0.2.100"], LookupResult.FOUND, [], ["10.0.2.100"], False),
    ((LookupResult.NOT_FOUND, []), DOWN, LookupResult.ERROR, [], [], True),  # store down: -3
    (LOCAL, DOWN, LookupResult.FOUND, ["binding"], [], True),  # store down, local users still reachable
    (RuntimeError("boom"), ["10.0.2.100"], LookupResult.ERROR, [], [], False),
])
def test_global_lookup_codes(local, homes, code, bindings, remote, error) -> None:
    results: list[Any] = []
    global_lookup(FakeLocation(local), FakeHomes(homes), "10.0.1.100", "alice@example.com", "INVITE").addCallback(
        results.append)
    [r] = results
    assert (r.code, r.bindings, r.homes, r.error is not None) == (code, bindings, remote, error)
    assert int(LookupResult.ERROR) == -3


def test_global_lookup_remote_targets_are_opensips_extra_hops() -> None:
    results: list[Any] = []
    global_lookup(FakeLocation((LookupResult.NOT_FOUND, [])), FakeHomes(["10.0.2.100", "10.0.3.100:5070"]),
                  "10.0.1.100", "bob@example.com").addCallback(results.append)
    assert results[0].remote_targets() == [("sip:bob@example.com", "sip:10.0.2.100"),
                                           ("sip:bob@example.com", "sip:10.0.3.100:5070")]


# -- the skip-when-no-server rule of the store tests ------------------------------------------------------

def test_no_server_skips_with_a_reason_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONGO_URI", raising=False)
    monkeypatch.setattr(mongo_server, "secantus_executable", lambda: None)
    reason = mongo_server.no_server_reason()
    assert reason is not None and "secantusd-py is not installed" in reason and "MONGO_URI" in reason
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="secantusd-py"):
        mongo_server.server_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        mongo_server.server_or_skip()
    monkeypatch.setenv("MONGO_URI", "mongodb://db.example:27017/")
    assert mongo_server.no_server_reason() is None
    mongo_server.server_or_skip()


def test_store_url_from_a_connection_string() -> None:
    assert mongo_server.store_url("mongodb://127.0.0.1:5/?replicaSet=secantus", "d", "c") == \
        "mongodb://127.0.0.1:5/d.c?replicaSet=secantus"
    assert mongo_server.store_url("mongodb://u:p@h1,h2", "d", "c") == "mongodb://u:p@h1,h2/d.c"
    assert mongo_server.store_url("mongodb://h/admin?tls=true", "d", "c") == "mongodb://h/d.c?tls=true"
