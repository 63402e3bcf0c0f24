"""End to end: the destination sets in OpenSIPS's own ``dispatcher`` table (MariaDB), read by ``twistd
edgeproxy`` at start-up and again on the MI's ``ds_reload``, asked through the ``opensips`` MI client.

The table has OpenSIPS 3.x's schema (``scripts/mysql/dispatcher-create.sql``, version 9), under a name
of this run's own. A malformed row (a destination that is no SIP URI) is one log line and the other
rows load; a row inserted while the node runs appears after ``ds_reload`` -- with the state the
others had (``inherit_state``) kept -- and a call placed with SIPp then reaches it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.mariadb import DB_URL, connect_or_skip, unique_name
from support.ports import free_port
from support.sipp_harness import LOOPBACK, Sipp, edgeproxy_node, require_sipp

try:
    from opensips.mi import OpenSIPSMI, OpenSIPSMIException
except ImportError:  # pragma: no cover - installed by .[test]; under CI a missing client fails
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("the opensips package is not installed (pip install '.[test]')", allow_module_level=True)

#: OpenSIPS 3.x scripts/mysql/dispatcher-create.sql (table version 9), with the table's name.
SCHEMA = """CREATE TABLE `{table}` (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    setid INT DEFAULT 0 NOT NULL,
    destination CHAR(192) DEFAULT '' NOT NULL,
    socket CHAR(128) DEFAULT NULL,
    state INT DEFAULT 0 NOT NULL,
    probe_mode INT UNSIGNED DEFAULT 0 NOT NULL,
    weight CHAR(64) DEFAULT 1 NOT NULL,
    priority INT DEFAULT 0 NOT NULL,
    attrs CHAR(128) DEFAULT '' NOT NULL,
    description CHAR(64) DEFAULT '' NOT NULL
) ENGINE=InnoDB"""

INSERT = ("INSERT INTO `{table}` (setid, destination, state, weight, priority, attrs, description) "
          "VALUES (%s, %s, %s, %s, %s, %s, %s)")


def cli(url: str, cwd: Path, *args: str) -> object:
    """``opensips-cli -x mi ...`` (beside this Python, installed by .[test]) over the node's MI; its JSON."""
    import json
    import subprocess
    import sys

    tool = Path(sys.executable).parent / "opensips-cli"
    if not tool.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true and opensips-cli is not installed beside this Python")
        pytest.skip("opensips-cli is not installed beside this Python (pip install '.[test]')")
    done = subprocess.run([str(tool), "-o", "communication_type=http", "-o", f"url={url}", "-x", "mi", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=cwd)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return json.loads(done.stdout)


def destinations(mi: OpenSIPSMI) -> dict[str, dict]:
    listed = mi.execute("ds_list", {"full": 1})
    return {d["URI"]: d for s in listed["PARTITIONS"][0].get("SETS", []) for d in s["Destinations"]}


def test_dispatcher_table_is_read_and_reloaded(tmp_path: Path) -> None:
    require_sipp()
    conn = connect_or_skip()
    table = unique_name("dispatcher")
    fs = ["127.0.0.21", "127.0.0.22"]
    ports = [free_port(h) for h in fs]
    with conn.cursor() as c:
        c.execute(SCHEMA.format(table=table))
    try:
        with conn.cursor() as c:
            c.execute(INSERT.format(table=table), (1, f"sip:{fs[0]}:{ports[0]}", 0, "1", 0, "fs=one", "first"))
            c.execute(INSERT.format(table=table), (1, "http://not-sip.example/", 0, "1", 0, "", "broken"))
            c.execute(INSERT.format(table=table), (2, f"sip:{fs[0]}:{ports[0]}", 1, "5", 0, "", "switched off"))
        mi_port = free_port()
        config = {"dispatcher": {"db_url": DB_URL, "table_name": table},
                  "route_params": {"freeswitch_algorithm": 8},
                  "mi": {"listen": f"{LOOPBACK}:{mi_port}"}}
        with edgeproxy_node(tmp_path / "node", config=config, transports=("udp",), route="edgeproxy_routes.failover",
                            log_level="info") as node:
            mi = OpenSIPSMI(conn="http", url=f"http://{LOOPBACK}:{mi_port}/mi")
            listed = mi.execute("ds_list", {"full": 1})["PARTITIONS"][0]["SETS"]
            assert [s["id"] for s in listed] == [1, 2]
            one = listed[0]["Destinations"]
            assert one == [{"URI": f"sip:{fs[0]}:{ports[0]}", "state": "Active", "first_hit_counter": 0,
                            "attr": "fs=one", "weight": 1, "priority": 0, "description": "first"}]
            assert listed[1]["Destinations"][0]["state"] == "Inactive"  # the state column (persistent_state)
            assert listed[1]["Destinations"][0]["weight"] == 5
            log = node.log()
            broken = [line for line in log.splitlines() if "http://not-sip.example/" in line]
            assert len(broken) == 1 and "skipping" in broken[0] and "not a sip: or sips: URI" in broken[0]

            # an operator switches the first one off, adds a second server (higher priority), reloads
            assert mi.execute("ds_set_state", ["i", "1", f"sip:{fs[0]}:{ports[0]}"]) == "OK"
            with pytest.raises(OpenSIPSMIException, match="404"):
                mi.execute("ds_set_state", ["a", "1", "sip:nobody.example"])
            with conn.cursor() as c:
                c.execute(INSERT.format(table=table), (1, f"sip:{fs[1]}:{ports[1]}", 0, "1", 10, "", "added"))
            assert mi.execute("ds_reload", []) == "OK"
            found = destinations(mi)
            assert found[f"sip:{fs[1]}:{ports[1]}"]["state"] == "Active"
            assert found[f"sip:{fs[0]}:{ports[0]}"]["state"] == "Inactive"  # kept across the reload
            assert mi.execute("get_statistics", ["dispatcher:reloads"])["dispatcher:reloads"] == 2
            # opensips-cli, the OpenSIPS project's own tool, prints the same and changes the same
            url = f"http://{LOOPBACK}:{mi_port}/mi"
            assert cli(url, tmp_path, "ds_list", "1") == mi.execute("ds_list", {"full": 1})
            assert cli(url, tmp_path, "ds_set_state", "a", "2", f"sip:{fs[0]}:{ports[0]}") == "OK"
            assert mi.execute("ds_list", [])["PARTITIONS"][0]["SETS"][1]["Destinations"][0]["state"] == "Active"

            # a call goes to the new server (the first is switched off)
            with Sipp(tmp_path / "fs", "udp", local_ip=fs[1]).start("uas_answer", port=ports[1], extra=["-aa"]) as uas:
                caller = Sipp(tmp_path / "caller", "udp").run("uac_call", node.address, user="bob",
                                                             keys={"domain": LOOPBACK})
                caller.assert_ok()
                uas.wait_for_message(r"^BYE ", timeout=5)
            assert destinations(mi)[f"sip:{fs[1]}:{ports[1]}"]["first_hit_counter"] == 1
    finally:
        with conn.cursor() as c:
            c.execute(f"DROP TABLE IF EXISTS `{table}`")
        conn.close()


def test_node_does_not_start_without_its_table(tmp_path: Path) -> None:
    """The table is where the sets are: a node that cannot read it says so and stops (exit status 1)."""
    connect_or_skip()
    import subprocess
    import sys

    from support.sipp_harness import REPO, toml_text

    missing = unique_name("dispatcher")
    path = tmp_path / "node.toml"
    path.write_text(toml_text({"node": {"listen": [f"udp:{LOOPBACK}:{free_port()}"]},
                               "dispatcher": {"db_url": DB_URL, "table_name": missing}}), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    done = subprocess.run(twistd + ["-n", "--pidfile=", "edgeproxy", "--config", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, timeout=60)
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 1, output
    assert missing in output and "doesn't exist" in output
