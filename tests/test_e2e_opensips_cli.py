"""End to end: the operators' CLIs against ``twistd edgeproxy``'s MI.

``opensips-cli`` (PyPI ``opensipscli``, the OpenSIPS project's own tool) with ``-o
communication_type=http -o url=http://HOST:PORT/mi -x mi CMD ARGS``, as an operator would run it, must
print for every MI command the node has the same data as the node's JSON-RPC answer (asked directly
over HTTP from this process). A SIPp phone is registered, the node runs a cluster (its peer down) and
``[pike]``, so that ``ul_dump``, ``clusterer_list`` and ``pike_list`` have something to show.
``edgeproxy-ctl`` (our console script) prints the same data, as tables and with ``--json``.

opensips-cli is found beside ``sys.executable`` (``.[test]`` installs it): without it the test is
skipped with the reason, except under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.mi import rpc
from support.phones import register_phone
from support.polling import wait_listening
from support.ports import free_port
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, SippProcess, edgeproxy_node, require_sipp

BIN = Path(sys.executable).parent


def opensips_cli() -> str:
    path = BIN / "opensips-cli"
    if not path.exists():
        reason = "opensips-cli is not installed beside this Python (pip install '.[test]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return str(path)


def ctl_argv() -> list[str]:
    """The console script when this environment has it installed, else the same module with -m."""
    script = BIN / "edgeproxy-ctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgeproxy.ctl"]


class Node:
    def __init__(self, node: EdgeproxyNode, url: str, phone: SippProcess) -> None:
        self.node = node
        self.url = url
        self.phone = phone

    def mi(self, method: str, params: Any = None) -> Any:
        answer = rpc(self.url, {"jsonrpc": "2.0", "method": method, "params": params or [], "id": 1})
        assert "result" in answer, answer
        return answer["result"]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [opensips_cli(), "-o", "communication_type=http", "-o", f"url={self.url}", "-x", "mi", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                              cwd=self.node.config_path.parent)
        if check:
            assert done.returncode == 0, (argv, done.stdout, done.stderr)
        return done

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, EDGEPROXY_MI_URL=self.url)
        return subprocess.run([*ctl_argv(), *args], capture_output=True, text=True, timeout=60, env=env,
                              stdin=subprocess.DEVNULL, cwd=self.node.config_path.parent)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    require_sipp()
    opensips_cli()
    port = free_port()
    workdir = tmp_path_factory.mktemp("cli-node")
    sip_port = free_port()
    # this node's sip_addr must be its own listener; node 2 (never started) is elsewhere on loopback
    rows = [{"cluster_id": 1, "node_id": n, "url": f"bin:{LOOPBACK}:{free_port()}",
             "sip_addr": f"{LOOPBACK}:{sip_port}" if n == 1 else "127.0.0.62"} for n in (1, 2)]
    config = {"registrar": {"min_expires": 30}, "mi": {"listen": f"{LOOPBACK}:{port}"},
              "cluster": {"my_node_id": 1, "cluster_id": 1, "nodes": rows}, "pike": {"reqs_density_per_unit": 1000},
              # a destination set nobody probes (no ds_ping_interval): ds_list has something to list
              "dispatcher": {"destinations": [{"setid": 1, "destination": f"sip:127.0.0.{n}:5060"} for n in (63, 64)]}}
    with edgeproxy_node(workdir / "node", config=config, log_level="info", port=sip_port) as n:
        wait_listening(port)
        phone = register_phone(Sipp(workdir / "phone"), n.address, "alice")
        try:
            yield Node(n, f"http://{LOOPBACK}:{port}/mi", phone)
        finally:
            phone.stop()


def without(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def test_opensips_cli_prints_what_the_mi_answers_for_every_read_command(node: Node) -> None:
    commands = node.mi("which")
    assert {"ul_dump", "get_statistics", "clusterer_list", "pike_list", "uptime"} <= set(commands)
    assert node.cli_json("which") == commands

    dump = node.cli_json("ul_dump")
    direct = node.mi("ul_dump")
    # Expires counts down by the second: the rest is the same, and the seconds at most 1 apart
    strip = [[without(c, "Expires") for c in a["Contacts"]] for a in direct["Domains"][0]["AORs"]]
    assert [[without(c, "Expires") for c in a["Contacts"]] for a in dump["Domains"][0]["AORs"]] == strip
    assert [a["AOR"] for a in dump["Domains"][0]["AORs"]] == ["alice"]
    assert abs(dump["Domains"][0]["AORs"][0]["Contacts"][0]["Expires"]
               - direct["Domains"][0]["AORs"][0]["Contacts"][0]["Expires"]) <= 1
    assert node.cli_json("ul_dump", "brief") == node.mi("ul_dump", ["brief"])
    shown = node.cli_json("ul_show_contact", "location", "alice")
    assert shown["AOR"] == "alice" and without(shown["Contacts"][0], "Expires") == strip[0][0]

    stats = node.cli_json("get_statistics", "all")
    assert without(stats, "core:timestamp") == without(node.mi("get_statistics", {"statistics": ["all"]}),
                                                       "core:timestamp")
    assert stats["usrloc:registered_users"] == 1 and stats["core:rcv_requests_register"] >= 1
    groups = node.cli_json("get_statistics", "usrloc:", "tm:")
    assert groups == node.mi("get_statistics", {"statistics": ["usrloc:", "tm:"]})
    assert node.cli_json("list_statistics") == node.mi("list_statistics")

    for command in ("pike_list", "version", "ps", "log_level"):
        assert node.cli_json(command) == node.mi(command), command
    # node 2 never starts: its link goes Probe <-> Down between two asks, the rest is the same
    clusters = [[[without(n, "link_state") for n in c["Nodes"]] for c in answer["Clusters"]]
                for answer in (node.cli_json("clusterer_list"), node.mi("clusterer_list"))]
    assert clusters[0] == clusters[1] and [n["node_id"] for n in clusters[0][0]] == [2]
    assert node.cli_json("clusterer_list")["Clusters"][0]["Nodes"][0]["link_state"] in ("Probe", "Down")
    assert node.cli_json("help", "ul_dump") == node.mi("help", ["ul_dump"])
    assert node.cli_json("which", "ul_rm") == node.mi("which", ["ul_rm"])
    up = node.cli_json("uptime")
    assert set(up) == {"Now", "Up since", "Up time"} and up["Up since"] == node.mi("uptime")["Up since"]

    # errors: opensips-cli reports the MI's code and message, and fails
    missing = node.cli("ul_show_contact", "location", "nobody", check=False)
    assert missing.returncode != 0 and "404: AOR not found" in missing.stdout + missing.stderr
    every = set(commands) - {"ul_rm", "ul_rm_contact", "usrloc:rm", "usrloc:rm_contact", "reset_statistics"}
    tried = {"which", "ul_dump", "ul_show_contact", "get_statistics", "list_statistics", "clusterer_list",
             "pike_list", "version", "ps", "log_level", "help", "uptime",
             # in test_opensips_cli_lists_dialogs_and_destination_sets
             "dlg_list", "dlg_end_dlg", "profile_get_size", "profile_list_dlgs", "ds_list", "ds_set_state",
             "ds_reload"}
    assert every - tried <= {"usrloc:dump", "usrloc:show_contact"}, every - tried  # the OpenSIPS 4 aliases
    assert node.cli_json("usrloc:dump", "brief") == node.mi("usrloc:dump", ["brief"])


def test_opensips_cli_lists_dialogs_and_destination_sets(node: Node, tmp_path: Path) -> None:
    assert node.cli_json("ds_list") == node.mi("ds_list")
    assert node.cli_json("ds_list", "1") == node.mi("ds_list", ["1"])  # full
    sets = node.mi("ds_list")["PARTITIONS"][0]["SETS"]
    assert [d["URI"] for d in sets[0]["Destinations"]] == ["sip:127.0.0.63:5060", "sip:127.0.0.64:5060"]
    assert node.cli_json("ds_set_state", "i", "1", "sip:127.0.0.64:5060") == "OK"
    assert node.mi("ds_list")["PARTITIONS"][0]["SETS"][0]["Destinations"][1]["state"] == "Inactive"
    assert node.cli_json("ds_set_state", "a", "1", "sip:127.0.0.64:5060") == "OK"
    assert node.cli_json("ds_reload") == "OK"

    # a call in progress: its dialog, as both print it; then ended from the CLI (BYE to both sides)
    caller = Sipp(tmp_path / "caller").start("uac_call", node.node.address, user="alice", duration_ms=30_000,
                                             timeout=40)
    try:
        deadline = time.monotonic() + 10
        while not node.mi("dlg_list")["Dialogs"] and time.monotonic() < deadline:
            time.sleep(0.1)
        (dialog,) = node.mi("dlg_list")["Dialogs"]
        assert dialog["state"] == 4
        assert node.cli_json("dlg_list") == node.mi("dlg_list")
        assert node.cli_json("dlg_list", dialog["callid"]) == node.mi("dlg_list", [dialog["callid"]])
        for args in (["caller"], ["caller", "alice"]):
            by_cli = node.cli("profile_get_size", *args, check=False)
            direct = rpc(node.url, {"jsonrpc": "2.0", "method": "profile_get_size", "params": args, "id": 1})
            if "result" in direct:
                assert json.loads(by_cli.stdout) == direct["result"]
            else:  # the same error, as opensips-cli prints one
                assert f"{direct['error']['code']}: {direct['error']['message']}" in by_cli.stdout + by_cli.stderr
        assert node.cli_json("dlg_end_dlg", dialog["ID"]) == "OK"
        deadline = time.monotonic() + 10
        while node.mi("dlg_list")["Dialogs"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.mi("dlg_list")["Dialogs"] == []
        caller.wait_for_message(r"^BYE ", timeout=10)
    finally:
        caller.stop()


def test_opensips_cli_changes_what_the_mi_changes(node: Node, tmp_path: Path) -> None:
    assert node.cli_json("reset_statistics", "rcv_requests") == "OK"
    assert node.mi("get_statistics", ["rcv_requests"])["core:rcv_requests"] <= 1
    assert node.cli_json("log_level", "4") == {"New global log level": 4, "Log level name": "debug"}
    assert node.mi("log_level")["Processes"][0]["Log level"] == 4
    node.cli_json("log_level", "3")
    phone = register_phone(Sipp(tmp_path / "bob"), node.node.address, "bob")
    try:
        contact = node.mi("ul_show_contact", ["location", "bob"])["Contacts"][0]["Contact"]
        assert node.cli_json("ul_rm_contact", "location", "bob", contact) == "OK"
        assert node.cli("ul_show_contact", "location", "bob", check=False).returncode != 0
        node.mi("ul_rm", ["location", "carol"])  # no such AoR: OK, as in OpenSIPS
        assert node.cli_json("ul_rm", "location", "bob") == "OK"
    finally:
        phone.stop()


def test_edgeproxy_ctl_prints_tables_and_the_same_json(node: Node) -> None:
    dump = node.ctl("ul_dump")
    assert dump.returncode == 0, dump.stderr
    header, rule, *rows = dump.stdout.splitlines()
    assert header.split()[:4] == ["AOR", "Contact", "Expires", "Q"] and set(rule.replace(" ", "")) == {"-"}
    contact = node.mi("ul_dump")["Domains"][0]["AORs"][0]["Contacts"][0]
    assert any(r.split()[0] == "alice" and contact["Contact"] in r and contact["Socket"] in r for r in rows)

    raw = node.ctl("--json", "get_statistics", "usrloc:")
    assert json.loads(raw.stdout) == node.mi("get_statistics", {"statistics": ["usrloc:"]})
    stats = node.ctl("get_statistics", "usrloc:").stdout.splitlines()
    assert stats[0].split() == ["statistic", "value"]
    assert "usrloc:registered_users" in stats[2] and stats[2].split()[1] == "1"

    nodes = node.ctl("clusterer_list").stdout.splitlines()
    assert nodes[0].split()[:3] == ["cluster_id", "node_id", "url"] and nodes[2].split()[:2] == ["1", "2"]
    assert "Up since" in node.ctl("uptime").stdout
    assert "ul_dump" in node.ctl("which").stdout.splitlines()
    assert json.loads(node.ctl("--json", "ps").stdout) == node.mi("ps")

    missing = node.ctl("ul_show_contact", "location", "nobody")
    assert missing.returncode == 1 and missing.stderr.strip() == "error 404: AOR not found"
    down = node.ctl("--url", f"http://{LOOPBACK}:{free_port()}/mi", "uptime")
    assert down.returncode == 2 and "refused" in down.stderr.lower()
