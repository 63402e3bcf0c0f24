"""OpenSIPS's ``server_signature`` / ``server_header`` / ``user_agent_header`` on the wire.

A node puts ``Server: edgeproxy (<version>)`` on the replies it makes itself -- the registrar's 200,
the 100 Trying, a route's 404 -- and not on the replies it relays (the callee's 180 and 200 arrive as
the callee sent them, RFC 3261 §16.7); ``[proxy] server_signature = false`` (topology hiding) leaves
it off, ``server_header`` changes it. SIPp plays the phones; what they received is read from SIPp's
own message log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeproxy import __version__
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, SippProcess, edgeproxy_node, require_sipp

OURS = f"edgeproxy ({__version__})"


def register(tmp_path: Path, node: EdgeproxyNode, user: str, name: str = "phone") -> SippProcess:
    return Sipp(tmp_path / name, "udp").start("register", node.address, user=user, ooc="uas_answer",
                                              duration_ms=60_000, timeout=70, keys={"expires": 300})


def test_own_replies_carry_server_relayed_ones_do_not(tmp_path: Path) -> None:
    require_sipp()
    with edgeproxy_node(tmp_path / "node") as node:
        phone = register(tmp_path, node, "bob")
        try:
            ok = phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
            assert ok.header("Server") == [OURS]
            caller = Sipp(tmp_path / "caller", "udp").run("uac_call", node.address, user="bob", duration_ms=100,
                                                          keys={"domain": LOOPBACK}).assert_ok()
            nobody = Sipp(tmp_path / "caller", "udp").run("uac_expect", node.address, user="nobody",
                                                          keys={"domain": LOOPBACK, "expect_code": 404})
        finally:
            phone.stop()
    by_status = {m.status: m for m in caller.received()}
    assert by_status[100].header("Server") == [OURS]  # the proxy's own 100 Trying
    assert by_status[180].header("Server") == [] and by_status[200].header("Server") == []  # the callee's, relayed
    assert [m.header("Server") for m in nobody.received() if m.status == 404] == [[OURS]]


def test_server_signature_off_and_a_header_of_ones_own(tmp_path: Path) -> None:
    require_sipp()
    with edgeproxy_node(tmp_path / "hidden", config={"proxy": {"server_signature": False}}) as node:
        phone = register(tmp_path, node, "carol")
        try:
            ok = phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
        finally:
            phone.stop()
    assert ok.header("Server") == []
    with edgeproxy_node(tmp_path / "named", config={"proxy": {"server_header": "Server: edge-7"}}) as node:
        phone = register(tmp_path, node, "dave", "phone2")
        try:
            ok = phone.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
        finally:
            phone.stop()
    assert ok.header("Server") == ["edge-7"]


@pytest.mark.parametrize("key, value, message", [
    ("server_header", "edgeproxy", 'must be one header line "Server: <text>", got "edgeproxy"'),
    ("server_header", "", 'must be one header line "Server: <text>", got ""'),
    ("server_header", "Server: a\r\nX-Evil: 1", 'must be one header line "Server: <text>"'),
    ("user_agent_header", "Server: x", 'must be one header line "User-Agent: <text>" or "" for none'),
])
def test_bad_header_settings_are_refused(tmp_path: Path, key: str, value: str, message: str) -> None:
    from edgeproxy.config import ConfigError, load_config

    with pytest.raises(ConfigError) as caught:
        load_config(None, {f"proxy.{key}": value})
    assert str(caught.value).startswith(f"config: proxy.{key} (command line): {message}"), str(caught.value)
