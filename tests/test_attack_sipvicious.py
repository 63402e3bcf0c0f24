"""SIPVicious (svmap, svwar, svcrack: the ``sipvicious`` package of the ``test`` extra, the scanner
the internet runs against every SIP edge) against a node with ``[auth]`` and ``[pike] check_all``
on loopback, as issue 16 tried it: svmap finds the node, svwar learns no subscriber name, svcrack at
its default speed does not find a password from a list that contains it -- while, as a control, the
same svcrack finds a password that is second in its list, so "not found" is the node's doing, not a
tool that cannot answer our challenges (MD5, qop=auth).

Every run is bounded (``--maximumtime`` and a subprocess timeout), binds its own loopback address
and port (``-b``/``-P``), and never reports anywhere (``-R`` is off by default and not given).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from support.ports import free_port
from support.sipp_harness import EdgeproxyNode, edgeproxy_node

USERS = {"alice": "s3cret-pw", "bob": "builder", "101": "hunter22"}


def tool(name: str) -> str:
    """``sipvicious_<name>`` beside this interpreter; skip without it -- fail under ``CI=true``."""
    path = Path(sys.executable).with_name(f"sipvicious_{name}")
    if path.exists():
        return str(path)
    reason = f"{path.name} is not installed (pip install -e '.[test]' installs sipvicious)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    tool("svmap")
    config = {"auth": {"users": USERS}, "pike": {"check_all": True}}
    with edgeproxy_node(tmp_path_factory.mktemp("sipvicious-node"), config=config, transports=("udp",),
                        log_level="info") as n:
        yield n


def run(node: EdgeproxyNode, name: str, source: str, *args: str, seconds: int = 20) -> str:
    argv = [tool(name), "-b", source, "-P", str(free_port(source)), "-p", str(node.port), *args,
            node.host]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    return done.stdout + done.stderr


def table_rows(output: str) -> list[list[str]]:
    """The rows of SIPVicious's result table (``| a | b |``), header excluded."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in output.splitlines() if line.startswith("|")]
    return rows[1:]


def test_svmap_finds_the_node(node: EdgeproxyNode) -> None:
    out = run(node, "svmap", "127.0.0.71")
    assert [r[0] for r in table_rows(out)] == [node.address], out


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_learns_no_subscriber_name(node: EdgeproxyNode, tmp_path: Path, method: str) -> None:
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["admin", "carol", *USERS, "1000"]) + "\n")
    out = run(node, "svwar", "127.0.0.72", "--force", "-m", method, "-d", str(names), "--maximumtime", "15",
              seconds=15)
    # every name, existing or not, gets the same challenge: the node tells svwar nothing
    assert re.search(r"found nothing", out), out
    assert not any(row and row[0] in USERS for row in table_rows(out)), out
    assert node.running()


def test_svcrack_at_its_default_speed_does_not_find_the_password(node: EdgeproxyNode, tmp_path: Path) -> None:
    # the control: svcrack does answer our challenges, and finds a password second in its list
    control = tmp_path / "control.txt"
    control.write_text("wrong-one\nbuilder\n")
    out = run(node, "svcrack", "127.0.0.73", "-u", "bob", "-d", str(control), "--maximumtime", "15", seconds=15)
    assert ["bob", "builder"] in table_rows(out), out

    words = tmp_path / "words.txt"
    words.write_text("".join(f"guess{i}\n" for i in range(40)) + USERS["alice"] + "\n")
    out = run(node, "svcrack", "127.0.0.74", "-u", "alice", "-d", str(words), "--maximumtime", "20", seconds=20)
    assert "found nothing" in out and not table_rows(out), out
    # the per-user back-off stopped it (the right word came after max_failures wrong ones)
    assert "user alice backed off" in node.log()
    assert node.running()
