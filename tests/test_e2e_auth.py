"""Digest authentication end to end: ``twistd edgeproxy`` with an ``[auth]`` section and the shipped
default route, SIPp as the phones (it answers 401/407 challenges itself: MD5, qop=auth), raw sockets
for what SIPp will not send (replays, forged and malformed credentials).

The node's users come from ``[auth.users]`` here; ``tests/test_e2e_auth_db.py`` runs the same
registration against OpenSIPS's ``subscriber`` table in MariaDB.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest

from support.raw_sip import RawUA, challenge_of, digest_answer, register_text, status
from support.sipp_harness import LOOPBACK, EdgeproxyNode, Sipp, edgeproxy_node, require_sipp

USERS = {"alice": "wonderland", "bob": "builder"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeproxyNode]:
    require_sipp()
    config = {"auth": {"users": USERS, "nonce_expire": 30}}
    with edgeproxy_node(tmp_path_factory.mktemp("auth-node"), config=config) as n:
        yield n


def auth_args(user: str, password: str) -> list[str]:
    return ["-au", user, "-ap", password]


# -- with SIPp as the phone --------------------------------------------------------------------------

def test_sipp_registers_with_its_password_and_receives_an_authenticated_call(node: EdgeproxyNode,
                                                                             tmp_path: Path) -> None:
    sipp = Sipp(tmp_path, "udp")
    with sipp.start("register_auth", node.address, user="bob", ooc="uas_answer", duration_ms=60_000, timeout=70,
                    extra=auth_args("bob", USERS["bob"])) as bob:
        bob.wait_for_message(r"^SIP/2.0 200 OK", timeout=10)
        caller = sipp.run("uac_call_auth", node.address, user="bob", keys={"caller": "alice"},
                          extra=auth_args("alice", USERS["alice"]), duration_ms=200)
    caller.assert_ok()
    invites = [m.text for m in caller.sent() if m.method == "INVITE"]
    # the first INVITE was challenged with 407, the second carried Proxy-Authorization
    assert len(invites) == 2 and "Proxy-Authorization:" not in invites[0]
    assert re.search(r'^Proxy-Authorization: Digest .*username="alice"', invites[1], re.M)
    assert any(m.status == 407 and m.header("Proxy-Authenticate") for m in caller.received())
    callee_side = [m for m in bob.result().received() if m.method == "INVITE"]
    # consume_credentials(): the callee never sees the caller's credentials for our realm
    assert callee_side and all(not m.header("Proxy-Authorization") for m in callee_side)


def test_sipp_with_a_wrong_password_is_challenged_again_and_never_registered(node: EdgeproxyNode,
                                                                             tmp_path: Path) -> None:
    sipp = Sipp(tmp_path, "udp")
    result = sipp.run("register_auth", node.address, user="alice", extra=auth_args("alice", "not-her-password"),
                      timeout=10)
    assert not result.ok
    statuses = [m.status for m in result.received()]
    assert statuses.count(401) == 2 and 200 not in statuses


# -- raw sockets: what SIPp will not do ----------------------------------------------------------------

class Phone(RawUA):
    """A UDP phone that answers challenges by hand (MD5, qop=auth) and can misbehave."""

    def __init__(self, node: EdgeproxyNode) -> None:
        super().__init__(node)
        self.cseq = 0

    def register(self, user: str, authorization: str | None = None, call_id: str = "raw-reg") -> str:
        self.cseq += 1
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        return self.request(register_text(user, self.port, call_id=call_id, cseq=self.cseq,
                                          contact=f"<sip:{user}@{LOOPBACK}:{self.port}>", from_tag="r1",
                                          headers=auth))


@pytest.fixture
def phone(node: EdgeproxyNode) -> Iterator[Phone]:
    p = Phone(node)
    yield p
    p.close()


def test_challenge_names_the_realm_md5_and_qop(phone: Phone) -> None:
    reply = phone.register("alice")
    assert status(reply) == 401
    c = challenge_of(reply)
    assert c["realm"] == LOOPBACK and c["algorithm"] == "MD5" and c["qop"] == "auth" and "stale" not in c


def test_a_replayed_register_is_refused_with_a_stale_challenge(phone: Phone) -> None:
    c = challenge_of(phone.register("alice", call_id="replay"))
    creds = digest_answer("alice", USERS["alice"], c, nc=1)
    assert status(phone.register("alice", creds, call_id="replay")) == 200
    again = phone.register("alice", creds, call_id="replay")  # same nonce and nc: a captured request
    assert status(again) == 401 and challenge_of(again).get("stale") == "true"
    # the UA counting on (nc 2) with the same nonce is fine
    assert status(phone.register("alice", digest_answer("alice", USERS["alice"], c, nc=2), call_id="replay")) == 200


def test_a_retransmitted_authenticated_register_gets_its_200_again(node: EdgeproxyNode, phone: Phone) -> None:
    """UDP: the 200 was lost, the phone sends the very same REGISTER (same branch, CSeq, credentials)."""
    c = challenge_of(phone.register("bob", call_id="retrans"))
    creds = digest_answer("bob", USERS["bob"], c)
    first = phone.register("bob", creds, call_id="retrans")
    phone.cseq -= 1  # the same request, byte for byte
    again = phone.register("bob", creds, call_id="retrans")
    assert status(first) == 200 and status(again) == 200, again


def test_a_forged_nonce_is_stale_and_a_wrong_user_is_challenged(phone: Phone) -> None:
    c = challenge_of(phone.register("alice", call_id="forge"))
    forged = dict(c, nonce="A" * len(c["nonce"]))
    reply = phone.register("alice", digest_answer("alice", USERS["alice"], forged), call_id="forge")
    assert status(reply) == 401 and challenge_of(reply).get("stale") == "true"
    reply = phone.register("mallory", digest_answer("mallory", "guess", c), call_id="forge")
    assert status(reply) == 401 and "stale" not in challenge_of(reply)


def test_credentials_of_one_user_cannot_register_another(phone: Phone) -> None:
    """db_check_to(): bob's valid credentials on a REGISTER for alice's AoR are 403."""
    c = challenge_of(phone.register("alice", call_id="check-to"))
    creds = digest_answer("bob", USERS["bob"], c)
    assert phone.register("alice", creds, call_id="check-to").startswith("SIP/2.0 403 Forbidden auth ID")


@pytest.mark.parametrize("header", [
    'Digest username="alice", realm="127.0.0.1", nonce="x", uri="sip:127.0.0.1"',  # no response
    'Digest username="alice", realm="127.0.0.1", nonce="x", uri="sip:127.0.0.1", response="zz", qop=auth',
    'Digest username="alice", realm="127.0.0.1", nonce="x", uri="sip:127.0.0.1", response="' + "0" * 32
    + '", algorithm=ROT13',
    'Digest username="' + "a" * 5000 + '", realm="127.0.0.1", nonce="x", uri="sip:x", response="' + "0" * 32 + '"',
    'Digest ,,,realm',
])
def test_malformed_credentials_for_our_realm_are_400_and_the_node_goes_on(phone: Phone, header: str) -> None:
    reply = phone.register("alice", header, call_id="bad-creds")
    assert status(reply) == 400, reply
    assert status(phone.register("alice", call_id="after-bad")) == 401  # still serving
