"""Digest authentication against OpenSIPS's ``subscriber`` table, end to end: ``twistd edgeproxy`` with
``[auth] db_url`` pointing at a real MariaDB, SIPp registering with its password.

Needs MariaDB/MySQL at 127.0.0.1:3306 (root, empty password, database ``test``; override with
EDGEPROXY_TEST_DB_URL): skipped with the reason when unreachable, a failure under ``CI=true``.
The table is created with OpenSIPS 3.x's columns, uniquely named, and dropped afterwards.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.mariadb import DB_URL, SUBSCRIBER_INSERT, SUBSCRIBER_SCHEMA, connect_or_skip, subscriber_row, unique_name
from support.ports import free_port
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, edgeproxy_node, require_sipp

@pytest.fixture(scope="module")
def table() -> Iterator[str]:
    conn = connect_or_skip()
    name = unique_name("subscriber_e2e")
    with conn.cursor() as cur:
        cur.execute(SUBSCRIBER_SCHEMA.format(table=name))
        for user, password in (("alice", "wonderland"), ("bob", "builder")):
            cur.execute(SUBSCRIBER_INSERT.format(table=name), subscriber_row(user, LOOPBACK, password))
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(scope="module")
def node(table: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    require_sipp()
    config = {"auth": {"db_url": DB_URL, "table": table, "use_domain": True}}
    with edgeproxy_node(tmp_path_factory.mktemp("auth-db-node"), config=config) as n:
        yield n


def test_sipp_registers_with_the_ha1_stored_in_the_subscriber_table(node: EdgeproxyNode, tmp_path: Path) -> None:
    result = Sipp(tmp_path, "udp").run("register_auth", node.address, user="alice",
                                       extra=["-au", "alice", "-ap", "wonderland"], timeout=10)
    # register_auth pauses after the 200 until its -d; the call is counted once the pause ends
    result.assert_ok()
    assert [m.status for m in result.received() if m.status and m.status >= 200] == [401, 200]


def test_a_wrong_password_against_the_table_is_challenged_again(node: EdgeproxyNode, tmp_path: Path) -> None:
    result = Sipp(tmp_path, "udp").run("register_auth", node.address, user="bob",
                                       extra=["-au", "bob", "-ap", "wrong"], timeout=10)
    assert not result.ok and [m.status for m in result.received()].count(401) == 2


def _register_with_credentials(node: EdgeproxyNode, user: str, password: str, timeout: float) -> tuple[str, float]:
    """401 round trip by hand; returns the final reply to the authenticated REGISTER and its delay."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout)
        port = s.getsockname()[1]

        def send(cseq: int, auth: str = "") -> str:
            s.sendto((f"REGISTER sip:{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-db{cseq};rport\r\n"
                      f"Max-Forwards: 70\r\nFrom: <sip:{user}@{LOOPBACK}>;tag=d\r\nTo: <sip:{user}@{LOOPBACK}>\r\n"
                      f"Call-ID: db-{port}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{LOOPBACK}:{port}>\r\n"
                      f"{auth}Content-Length: 0\r\n\r\n").encode(), (node.host, node.port))
            while True:
                reply = s.recv(65535).decode()
                if not reply.startswith("SIP/2.0 100 "):
                    return reply

        challenge = dict(re.findall(r'(\w+)="?([^",\r]*)"?', send(1).split("WWW-Authenticate: Digest ", 1)[1]
                                    .split("\r\n", 1)[0]))
        md5 = lambda t: hashlib.md5(t.encode()).hexdigest()  # noqa: E731
        ha2 = md5(f"REGISTER:sip:{LOOPBACK}")
        response = md5(f"{md5(f'{user}:{LOOPBACK}:{password}')}:{challenge['nonce']}:00000001:ab:auth:{ha2}")
        header = (f'Authorization: Digest username="{user}", realm="{LOOPBACK}", nonce="{challenge["nonce"]}", '
                  f'uri="sip:{LOOPBACK}", response="{response}", qop=auth, nc=00000001, cnonce="ab"\r\n')
        started = time.monotonic()
        reply = send(2, header)
        return reply, time.monotonic() - started


def test_subscriber_table_unreachable_is_503_with_retry_after_within_the_timeout(tmp_path: Path) -> None:
    """-5 (the store did not answer) is 503 + Retry-After, never another challenge: a phone that is
    challenged again tells its user the password is wrong."""
    require_sipp()
    dead = f"mysql://root@127.0.0.1:{free_port()}/test"  # nothing listens there
    with edgeproxy_node(tmp_path / "node", config={"auth": {"db_url": dead, "timeout": 1.0}}) as node:
        reply, delay = _register_with_credentials(node, "alice", "wonderland", timeout=5.0)
        assert reply.startswith("SIP/2.0 503 "), reply
        assert re.search(r"^Retry-After: 5\r$", reply, re.M)
        assert delay < 3.0  # refused connection: well within the 1 s query deadline plus slack
        assert node.running()
