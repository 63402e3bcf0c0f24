"""``twistd`` with the store configured: the plugin arranges the asyncio reactor from its options, or
refuses another reactor in one line — shown with a minimal probe plugin built from the federation API
exactly as ``twistd edgeproxy`` wires it (see :mod:`edgeproxy.federation.service`).

The probe runs a real ``twistd -n`` against the test MongoDB server: it starts a node's federation,
registers an AoR, checks the store sees it, stops — and the clean stop must delete the node's record.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from support import mongo_server  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

PLUGIN = """
from twisted.application.service import ServiceMaker

fedprobe = ServiceMaker("fedprobe", "fedprobe_tap", "federation probe", "fedprobe")
"""

TAP = """
import sys

from twisted.application import service
from twisted.python import usage

from edgeproxy.config import ConfigError
from edgeproxy.federation import FederationReactorError, arrange_asyncio_reactor, federation_settings


class Options(usage.Options):
    optParameters = [["url", None, None, "cachedb URL"], ["sip-addr", None, "10.9.9.9", "this node"]]

    def postOptions(self):
        try:
            self.settings = federation_settings({"cachedb_url": self["url"], "sip_addr": self["sip-addr"]})
            arrange_asyncio_reactor()  # before anything imports twisted.internet.reactor
        except (ConfigError, FederationReactorError) as exc:
            sys.stderr.write(f"{exc}\\n")
            raise SystemExit(1)


def makeService(options):
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    from edgeproxy.federation import Federation, FederationService
    from edgeproxy.location import Binding, InMemoryLocation
    from edgeproxy.sip import parse_uri

    location = InMemoryLocation(reactor)
    federation = Federation(location, options.settings)
    top = service.MultiService()
    FederationService(federation).setServiceParent(top)

    async def scenario():
        now = reactor.seconds()
        await federation.publisher.settled()
        location.replace("alice@example.com", [Binding(aor="alice@example.com", uri=parse_uri("sip:alice@192.0.2.9"),
                                                       expires_at=now + 600, call_id="c", cseq=1)])
        await federation.publisher.settled()
        homes = await federation.homes("alice@example.com")
        print("REACTOR", type(reactor).__name__)
        print("HOMES", ",".join(homes))
        docs = await federation.raw_query({"find": options.settings.url.collection, "filter": {}})
        print("DOCS", len(docs))

    def done(result):
        if hasattr(result, "getTraceback"):
            print("SCENARIO FAILED", result.getTraceback())
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(scenario()).addBoth(done))
    return top
"""


@pytest.fixture(scope="module")
def target() -> Any:
    with mongo_server.running_target() as t:
        yield t


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    plugins = tmp_path / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "fedprobe_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "fedprobe_tap.py").write_text(textwrap.dedent(TAP))
    return tmp_path


def twistd(probe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(probe), str(REPO)])}
    return subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *args],
                          cwd=probe, env=env, capture_output=True, text=True, timeout=120)


def test_twistd_arranges_the_asyncio_reactor_and_the_store_works(probe: Path, target: Any) -> None:
    url = target.url("userlocation_twistd")
    proc = twistd(probe, "-n", "--pidfile=", "fedprobe", "--url", url, "--sip-addr", "10.9.9.9")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "SCENARIO FAILED" not in out, out[-4000:]
    assert "REACTOR AsyncioSelectorReactor" in out
    assert "HOMES 10.9.9.9" in out and "DOCS 1" in out
    # the clean stop deleted the node's record
    from pymongo import MongoClient

    client: Any = MongoClient(target.base_uri, serverSelectionTimeoutMS=3000)
    try:
        assert client[target.database]["userlocation_twistd"].count_documents({"home_ip": "10.9.9.9"}) == 0
    finally:
        client.close()


def test_twistd_with_another_reactor_fails_with_one_line(probe: Path) -> None:
    proc = twistd(probe, "--reactor=epoll", "-n", "--pidfile=", "fedprobe", "--url", "mongodb://127.0.0.1:1/d.c")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "EPollReactor" in lines[0] and "twistd --reactor=asyncio" in lines[0]


def test_twistd_with_a_bad_url_fails_with_one_line(probe: Path) -> None:
    proc = twistd(probe, "-n", "--pidfile=", "fedprobe", "--url", "mongodb://10.0.1.244:27017/opensipsDB")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == ["config: federation.cachedb_url: path must be database.collection "
                     "(e.g. opensipsDB.userlocation), got 'opensipsDB'"]
