"""End to end: the management interface of ``twistd edgeproxy`` driven by an OpenSIPS MI client.

A real node with ``[mi] listen`` on a loopback port, a SIPp phone registered to it, and the
third-party ``opensips`` package (``opensips.mi.OpenSIPSMI(conn="http", url=...)``, what OpenSIPS's
own tools are built on) asking ``ul_dump``, ``ul_show_contact``, ``get_statistics`` and ``ul_rm`` as
it would ask OpenSIPS's ``mi_http``. After ``ul_rm`` a call to the user gets 404 (SIPp). The
HTTP-level answers (405, 413, 401, parse and request errors, notifications) are checked with
``urllib`` from this process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.mi import post, rpc
from support.phones import register_phone
from support.polling import wait_listening
from support.ports import free_port
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, edgeproxy_node, require_sipp

try:
    from opensips.mi import OpenSIPSMI, OpenSIPSMIException
except ImportError:  # pragma: no cover - installed by .[test]; under CI a missing client fails
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("the opensips package is not installed (pip install '.[test]')", allow_module_level=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    require_sipp()
    port = free_port()
    config = {"registrar": {"min_expires": 30}, "mi": {"listen": f"{LOOPBACK}:{port}"}}
    with edgeproxy_node(tmp_path_factory.mktemp("mi-node"), config=config) as n:
        wait_listening(port)
        n.mi_url = f"http://{LOOPBACK}:{port}/mi"  # type: ignore[attr-defined]
        yield n


@pytest.fixture
def mi(node: EdgeproxyNode) -> Any:
    return OpenSIPSMI(conn="http", url=node.mi_url)  # type: ignore[attr-defined]


def test_opensips_client_sees_the_registration_and_ul_rm_ends_it(node: EdgeproxyNode, mi: Any,
                                                                  tmp_path: Path) -> None:
    phone = register_phone(Sipp(tmp_path / "phone"), node.address, "alice")
    try:
        contact = f"sip:alice@{LOOPBACK}:{phone.port};transport=UDP"
        dump = mi.execute("ul_dump")
        aors = {a["AOR"]: a for a in dump["Domains"][0]["AORs"]}
        assert dump["Domains"][0]["name"] == "location"
        (found,) = aors["alice"]["Contacts"]
        assert found["Contact"].lower() == contact.lower()
        assert 0 < found["Expires"] <= 300 and found["User-agent"] == "edgeproxy-tests"
        assert found["Received"] == f"sip:{LOOPBACK}:{phone.port}"
        assert found["Socket"] == f"udp:{node.address}"

        shown = mi.execute("ul_show_contact", {"table_name": "location", "aor": "alice"})
        assert shown["AOR"] == "alice" and shown["Contacts"][0]["Contact"] == found["Contact"]
        assert mi.execute("ul_show_contact", ["location", f"alice@{LOOPBACK}"])["AOR"] == "alice"
        with pytest.raises(OpenSIPSMIException, match="404: AOR not found"):
            mi.execute("ul_show_contact", {"table_name": "location", "aor": "nobody"})

        stats = mi.execute("get_statistics", {"statistics": ["usrloc:", "core:", "tm:", "sl:"]})
        assert stats["usrloc:registered_users"] >= 1 and stats["usrloc:location-contacts"] >= 1
        assert stats["core:rcv_requests"] >= 1 and "tm:UAS_transactions" in stats and "sl:sent_replies" in stats

        assert mi.execute("ul_rm", {"table_name": "location", "aor": "alice"}) == "OK"
        with pytest.raises(OpenSIPSMIException, match="AOR not found"):
            mi.execute("ul_show_contact", ["location", "alice"])
        assert "alice" not in {a["AOR"] for a in mi.execute("ul_dump", ["brief"])["Domains"][0]["AORs"]}
        # after ul_rm the node no longer knows the phone: a call to it is 404 at once
        Sipp(tmp_path / "caller").run("uac_expect", node.address, user="alice",
                                      keys={"domain": LOOPBACK, "expect_code": 404}).assert_ok()
    finally:
        phone.stop()
    assert "MI ul_rm" in node.log()  # a command that changes something leaves a log line


def test_core_commands_through_the_client(node: EdgeproxyNode, mi: Any) -> None:
    assert {"ul_dump", "ul_rm", "get_statistics", "uptime", "log_level"} <= set(mi.execute("which"))
    assert mi.execute("uptime")["Up time"].endswith("[sec]")
    assert mi.execute("version")["Server"].startswith("edgeproxy ")
    (proc,) = mi.execute("ps")["Processes"]
    assert proc["PID"] == node.pid
    # the level twistd filters with (tap.py): debug in the test harness, moved and moved back
    assert mi.execute("log_level")["Processes"][0]["Log level"] == 4
    assert mi.execute("log_level", {"level": 1})["New global log level"] == 1
    assert mi.execute("log_level")["Processes"][0]["Log level"] == 1
    assert mi.execute("log_level", ["debug"])["New global log level"] == 4
    with pytest.raises(OpenSIPSMIException, match="-32601: Method not found"):
        mi.execute("clusterer_list")  # no cluster runs
    with pytest.raises(OpenSIPSMIException, match="-32602"):
        mi.execute("ul_rm", {"aor": "alice"})


def test_http_answers(node: EdgeproxyNode) -> None:
    url = node.mi_url  # type: ignore[attr-defined]
    status, _, headers = post(url, b"", method="GET")
    assert status == 405 and headers["Allow"] == "POST"
    big = b'{"jsonrpc": "2.0", "method": "uptime", "params": ["' + b"x" * 100_000 + b'"], "id": 1}'
    status, body, _ = post(url, big)
    assert status == 413 and json.loads(body)["error"]["code"] == -32600
    assert rpc(url, None)["error"]["code"] == -32600  # JSON null: not a request
    status, body, _ = post(url, b"{nope")
    assert status == 200 and json.loads(body) == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"},
                                                   "id": None}
    assert rpc(url, {"jsonrpc": "2.0", "method": 5, "id": 1})["error"]["code"] == -32600
    assert rpc(url, {"jsonrpc": "2.0", "method": "ul_flush", "id": 2}) == {
        "jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 2}
    batch = rpc(url, [{"jsonrpc": "2.0", "method": "uptime", "id": "a"},
                      {"jsonrpc": "2.0", "method": "uptime"},
                      {"jsonrpc": "2.0", "method": "nope", "id": "b"}])
    assert [a["id"] for a in batch] == ["a", "b"] and "result" in batch[0] and "error" in batch[1]
    status, body, _ = post(url, json.dumps({"jsonrpc": "2.0", "method": "uptime"}).encode())
    assert status == 204 and body == b""
    status, _, _ = post(url.replace("/mi", "/other"), b"{}")
    assert status == 404


def test_token_is_required_when_set(tmp_path: Path) -> None:
    port = free_port()
    config = {"mi": {"listen": f"{LOOPBACK}:{port}", "token": "s3cret"}}
    with edgeproxy_node(tmp_path / "secured", config=config, transports=("udp",)) as n:
        wait_listening(port)
        url = f"http://{LOOPBACK}:{port}/mi"
        body = json.dumps({"jsonrpc": "2.0", "method": "uptime", "id": 1}).encode()
        status, _, headers = post(url, body)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert post(url, body, {"Authorization": "Bearer nope"})[0] == 401
        status, reply, _ = post(url, body, {"Authorization": "Bearer s3cret"})
        assert status == 200 and "Up time" in json.loads(reply)["result"]
        with pytest.raises(OpenSIPSMIException, match="401"):
            OpenSIPSMI(conn="http", url=url).execute("uptime")  # the package sends no credentials
        assert n.running()
