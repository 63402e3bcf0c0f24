"""Digest authentication against OpenSIPS's ``subscriber`` table, end to end: ``twistd edgeproxy`` with
``[auth] db_url`` pointing at a real MariaDB, SIPp registering with its password.

Needs MariaDB/MySQL at 127.0.0.1:3306 (root, empty password, database ``test``; override with
EDGEPROXY_TEST_DB_URL): skipped with the reason when unreachable, a failure under ``CI=true``.
The table is created with OpenSIPS 3.x's columns, uniquely named, and dropped afterwards.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.mariadb import DB_URL, SUBSCRIBER_INSERT, SUBSCRIBER_SCHEMA, connect_or_skip, subscriber_row, unique_name
from support.ports import free_port
from support.raw_sip import RawUA, challenge_of, digest_answer, register_text
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
    with RawUA(node, timeout) as ua:
        def send(cseq: int, auth: str = "") -> str:
            return ua.request(register_text(user, ua.port, call_id=f"db-{ua.port}", cseq=cseq,
                                            branch=f"z9hG4bK-db{cseq}", contact=f"<sip:{user}@{LOOPBACK}:{ua.port}>",
                                            expires=None, from_tag="d", headers=auth))

        challenge = challenge_of(send(1))
        header = f"Authorization: {digest_answer(user, password, challenge, cnonce='ab')}\r\n"
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
