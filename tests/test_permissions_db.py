"""OpenSIPS's ``address`` table in MariaDB: loading, a malformed row, reloading while the node runs.

The table has OpenSIPS 3.x's exact schema (``scripts/mysql/permissions-create.sql``, version 5) under
a unique name per test (``support.mariadb.unique_name``). The end-to-end test runs ``twistd
edgeproxy`` with ``[permissions] db_url`` and ``[mi]``: the third-party ``opensips`` MI client asks
``address_dump`` / ``address_reload``, and SIPp callers from two loopback addresses find out who is
trusted before and after a row is added.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.logger import LogLevel, globalLogPublisher

from edgeproxy.permissions import AddressTableError, Permissions, PermissionsSettings, parse_row
from support.mariadb import DB_URL, connect_or_skip, unique_name
from support.ports import free_port
from support.sipp_harness import LOOPBACK, Sipp, edgeproxy_node, require_sipp

#: scripts/mysql/permissions-create.sql of OpenSIPS 3.x (table version 5)
ADDRESS_SCHEMA = """
CREATE TABLE `{table}` (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    grp SMALLINT(5) UNSIGNED DEFAULT 0 NOT NULL,
    ip CHAR(50) NOT NULL,
    mask TINYINT DEFAULT 32 NOT NULL,
    port SMALLINT(5) UNSIGNED DEFAULT 0 NOT NULL,
    proto CHAR(4) DEFAULT 'any' NOT NULL,
    pattern CHAR(64) DEFAULT NULL,
    context_info CHAR(32) DEFAULT NULL
) ENGINE=InnoDB
"""
INSERT = "INSERT INTO `{table}` (grp, ip, mask, port, proto, pattern, context_info) VALUES (%s, %s, %s, %s, %s, %s, %s)"


@pytest.fixture
def address_table() -> Iterator[tuple[Any, str]]:
    conn = connect_or_skip()
    name = unique_name("address")
    with conn.cursor() as cur:
        cur.execute(ADDRESS_SCHEMA.format(table=name))
    try:
        yield conn, name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")
        conn.close()


def insert(conn: Any, table: str, *rows: tuple[Any, ...]) -> None:
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(INSERT.format(table=table), row)


@pytest_twisted.ensureDeferred
async def test_load_skips_a_malformed_row_with_one_log_line_and_reload_sees_a_new_row(address_table) -> None:
    conn, table = address_table
    insert(conn, table,
           (1, "10.0.1.50", 32, 0, "any", None, "fs1"),
           (1, "fs2.example.com", 32, 0, "any", None, None),     # a name: skipped
           (2, "192.168.0.0", 16, 5060, "udp", "sip:*@example.com", "lan"),
           (3, "2001:db8::", 32, 0, "tls", None, "v6"),
           (1, "10.0.1.51", 40, 0, "any", None, None),            # mask 40 for IPv4: skipped
           (1, "10.0.1.52", 32, 0, "none", None, None))          # proto none: skipped
    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "edgeproxy.permissions" and event.get("log_level") == LogLevel.warn:
            lines.append(event["log_format"].format(**event))

    permissions = Permissions(PermissionsSettings(db_url=DB_URL, table=table,
                                                  address=(parse_row({"grp": 9, "ip": "127.0.0.9"}),)))
    globalLogPublisher.addObserver(observer)
    try:
        assert await permissions.reload() == 4
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(lines) == 3 and all(f"{table} row id" in line for line in lines)
    assert any("fs2.example.com" in line for line in lines) and any("mask 40" in line for line in lines)
    assert permissions.stats == {"reloads": 1, "reload_failures": 0, "skipped_rows": 3}
    assert permissions.check(1, "10.0.1.50", 5060, "udp").context_info == "fs1"
    assert permissions.check(2, "192.168.7.7", 5060, "udp", "sip:bob@example.com").context_info == "lan"
    assert permissions.check(3, "2001:db8:1::1", 5061, "tls").code == 1
    assert permissions.check(9, "127.0.0.9", 1, "udp").code == 1  # the file's row stays with the table's
    assert permissions.check(1, "10.0.1.60", 0, "any").code == -1

    insert(conn, table, (1, "10.0.1.60", 32, 0, "any", None, "fs3"))
    assert await permissions.reload() == 5
    assert permissions.check(1, "10.0.1.60", 0, "any").context_info == "fs3"


@pytest_twisted.ensureDeferred
async def test_a_table_that_cannot_be_read_keeps_the_old_one(address_table) -> None:
    conn, table = address_table
    insert(conn, table, (1, "10.0.1.50", 32, 0, "any", None, None))
    permissions = Permissions(PermissionsSettings(db_url=DB_URL, table=table))
    await permissions.reload()
    with conn.cursor() as cur:
        cur.execute(f"ALTER TABLE `{table}` DROP COLUMN context_info")
    with pytest.raises(AddressTableError, match=rf"db table '{table}': \(1054\)"):
        await permissions.reload()
    assert permissions.check(1, "10.0.1.50", 0, "any").code == 1
    assert permissions.stats["reload_failures"] == 1


# -- end to end: twistd, MariaDB, the opensips MI client, SIPp ---------------------------------------------

TRUSTED = "127.0.0.41"
STRANGER = "127.0.0.42"

ROUTE = '''
def request_route(msg):
    if msg.is_method("OPTIONS"):
        msg.sl_send_reply(200, "OK")
    elif msg.check_source_address(msg.params["group"]):
        msg.sl_send_reply(486, "Trusted " + msg.context_info)
    else:
        msg.sl_send_reply(403, "Forbidden")
'''


def test_node_reads_the_table_and_address_reload_picks_up_a_row(address_table, tmp_path: Path) -> None:
    require_sipp()
    try:
        from opensips.mi import OpenSIPSMI
    except ImportError:  # pragma: no cover - installed by .[test]
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("the opensips package is not installed")
    conn, table = address_table
    insert(conn, table, (5, TRUSTED, 32, 0, "udp", None, "media-1"))
    mi_port = free_port()
    route = tmp_path / "perm_route.py"
    route.write_text(ROUTE, encoding="utf-8")
    config = {"permissions": {"db_url": DB_URL, "table": table}, "mi": {"listen": f"{LOOPBACK}:{mi_port}"},
              "route_params": {"group": 5}}
    with edgeproxy_node(tmp_path / "node", config=config, transports=("udp",), route=str(route)) as node:
        mi = OpenSIPSMI(conn="http", url=f"http://{LOOPBACK}:{mi_port}/mi")
        deadline = time.monotonic() + 10
        while True:
            try:
                dump = mi.execute("address_dump")
                break
            except Exception:  # noqa: BLE001 - the MI listener comes up with the node
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert dump == {"Partitions": [{"name": "default", "Destinations": [
            {"grp": 5, "ip": TRUSTED, "mask": "32", "port": 0, "proto": "udp", "pattern": "",
             "context_info": "media-1"}]}]}

        def call(source: str, expect: int, name: str) -> Any:
            result = Sipp(tmp_path / name, "udp", local_ip=source).run(
                "uac_expect", node.address, user="bob", keys={"domain": LOOPBACK, "expect_code": expect})
            result.assert_ok()
            return result

        trusted = call(TRUSTED, 486, "trusted")
        assert any(m.first_line == "SIP/2.0 486 Trusted media-1" for m in trusted.received())
        call(STRANGER, 403, "stranger-before")

        insert(conn, table, (5, "127.0.0.0", 24, 0, "any", None, "loopback"))
        assert mi.execute("address_reload") == "OK"
        assert mi.execute("subnet_dump")["Partitions"][0]["Destinations"][0]["ip"] == "127.0.0.0"
        stranger = call(STRANGER, 486, "stranger-after")
        assert any(m.first_line == "SIP/2.0 486 Trusted loopback" for m in stranger.received())
        stats = mi.execute("get_statistics", {"statistics": ["permissions:"]})
        assert stats["permissions:reloads"] == 2 and stats["permissions:subnet_rows"] == 1
