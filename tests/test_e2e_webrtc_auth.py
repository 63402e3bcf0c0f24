"""Digest authentication end to end with the stock SIP-over-WebSocket libraries: JsSIP 3.13 and SIP.js
0.21 in Node (see ``tests/test_e2e_webrtc.py`` and ``tests/support/webrtc_harness.py``) connect over WSS to
``twistd edgeproxy`` with an ``[auth]`` section and the shipped default route, and answer its
challenges themselves with the password they were given.

Proven here: each library's REGISTER is challenged with 401 (``realm`` = the To domain, MD5,
``qop="auth"``) and its second REGISTER carries an ``Authorization`` the test recomputes from the
password; a call from one of our users is challenged with 407, the library answers it, and the call
is established and hung up (ACK and BYE both ways, BYE answered) with the callee never seeing the
caller's credentials (``consume_credentials``); un-REGISTERs are authenticated too and leave 404
behind. SIP.js sends its un-REGISTER with the credentials of its last REGISTER (same nonce, nc and
cnonce): to the node that is a replay, answered 401 ``stale=true``, and SIP.js authenticates afresh.
A wrong password is refused (the library reports it, no binding is created, the next client
registers), and valid credentials of another user are 403 "Forbidden auth ID" (``db_check_to``).
``tests/test_e2e_auth.py`` covers what these libraries never send (forged nonces, malformed
credentials, other algorithms).
"""

from __future__ import annotations

import re
from typing import Iterator

import pytest

from support.raw_sip import digest_params, md5_hex, status
from support.webrtc_harness import WebClient, WebNode, header, require_node, sip_messages, wss_node

DOMAIN = "example.test"
LIBS = ("jssip", "sipjs")
USERS = {"alice": "wonderland", "bob": "builder",
         **{f"carol-{lib}": f"carol's {lib} secret" for lib in LIBS},
         **{f"dave-{lib}": f"dave's {lib} secret" for lib in LIBS}}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    require_node()
    with wss_node(tmp_path_factory.mktemp("webrtc-auth"), DOMAIN, {"auth": {"users": USERS}}) as web:
        yield web


# -- reading the wire ----------------------------------------------------------------------------------

def cseq_method(message: str) -> str:
    return header(message, "CSeq")[0].split()[-1]


def requests(client: WebClient, method: str, call_id: str | None = None) -> list[str]:
    """The ``method`` requests ``client`` sent (of the dialog ``call_id`` if given), in order."""
    return [m for m in sip_messages(client.wire("out"), method + " ")
            if call_id is None or header(m, "Call-ID") == [call_id]]


def responses(client: WebClient, method: str, call_id: str | None = None) -> list[str]:
    """The responses to ``method`` that ``client`` received, in order."""
    return [m for m in sip_messages(client.wire("in"), "SIP/2.0 ")
            if cseq_method(m) == method and (call_id is None or header(m, "Call-ID") == [call_id])]


def check_challenge(response: str, name: str, stale: bool = False) -> dict[str, str]:
    """The one challenge in ``name`` (WWW-/Proxy-Authenticate): our realm, MD5, qop=auth, and
    ``stale=true`` exactly when ``stale``."""
    values = header(response, name)
    assert len(values) == 1, response
    c = digest_params(values[0])
    assert c["realm"] == DOMAIN and c["algorithm"] == "MD5" and c["qop"] == "auth" and c["nonce"], c
    assert c.get("stale") == ("true" if stale else None), c
    return c


def check_credentials(request: str, name: str, challenge: dict[str, str], user: str, password: str) -> dict[str, str]:
    """The credentials in ``name`` (Authorization / Proxy-Authorization) of ``request``: they answer
    ``challenge`` for ``user`` with MD5, qop=auth, and the response is the one ``password`` gives."""
    values = header(request, name)
    assert len(values) == 1, request
    c = digest_params(values[0])
    method, ruri = request.split(" ", 2)[:2]
    assert c["username"] == user and c["realm"] == DOMAIN and c["nonce"] == challenge["nonce"], c
    assert c["uri"] == ruri and c["algorithm"] == "MD5" and c["qop"] == "auth" and c["cnonce"], c
    assert c["nc"] == "00000001", c  # both libraries authenticate each request afresh
    ha1, ha2 = md5_hex(f"{user}:{DOMAIN}:{password}"), md5_hex(f"{method}:{c['uri']}")
    assert c["response"] == md5_hex(f"{ha1}:{c['nonce']}:{c['nc']}:{c['cnonce']}:auth:{ha2}"), c
    return c


def check_authenticated_request(client: WebClient, method: str, user: str, final: int,
                                call_id: str | None = None, replay: bool = False) -> None:
    """``client``'s last ``method`` (of ``call_id``) was: sent without credentials -- or, with
    ``replay``, with the credentials of the ``method`` before it (SIP.js's Registerer keeps them),
    which are a replay to the node: ``stale=true`` --, challenged (401 for REGISTER, else 407), sent
    again with credentials that are right, and answered with ``final``."""
    challenge_code, challenge_name, credentials_name = (
        (401, "WWW-Authenticate", "Authorization") if method == "REGISTER"
        else (407, "Proxy-Authenticate", "Proxy-Authorization"))
    sent = requests(client, method, call_id)
    assert len(sent) >= 2, client.describe()
    first, second = sent[-2], sent[-1]
    assert header(first, "Call-ID") == header(second, "Call-ID")
    if replay:
        assert len(sent) >= 3 and header(first, credentials_name) == header(sent[-3], credentials_name) != []
    else:
        assert header(first, credentials_name) == [], first

    def final_to(request: str) -> str:
        finals = [m for m in responses(client, method, call_id)
                  if status(m) >= 200 and header(m, "CSeq") == header(request, "CSeq")]
        assert finals, f"no final response to {request.splitlines()[0]} CSeq {header(request, 'CSeq')}\n" + \
            client.describe()
        return finals[0]
    challenged, answered = final_to(first), final_to(second)
    assert status(challenged) == challenge_code, challenged
    challenge = check_challenge(challenged, challenge_name, stale=replay)
    check_credentials(second, credentials_name, challenge, user, USERS[user])
    assert status(answered) == final, answered


# -- the libraries register, call each other and un-register with their passwords ----------------------

def test_jssip_and_sipjs_register_call_each_other_and_unregister_with_their_passwords(web: WebNode) -> None:
    with web.client("jssip", "alice", password=USERS["alice"]) as alice, \
            web.client("sipjs", "bob", password=USERS["bob"]) as bob:
        assert alice.wait("registered", 15)["status"] == 200
        bob.wait("registered", 15)
        for client, user in ((alice, "alice"), (bob, "bob")):
            check_authenticated_request(client, "REGISTER", user, 200)
            assert len(requests(client, "REGISTER")) == 2  # one challenge, one answer

        # JsSIP calls SIP.js: 407, JsSIP answers it, SIP.js rings and answers; the callee hangs up
        alice.command("call", target=f"sip:bob@{DOMAIN}")
        call1 = alice.wait("calling", 5)["call_id"]
        incoming = bob.wait("incoming", 10)
        assert incoming["call_id"] == call1 and incoming["from"] == f"sip:alice@{DOMAIN}"
        alice.wait("confirmed", 10)
        bob.wait("ack_received", 10)
        bob.command("hangup")
        alice.wait("ended", 10, where=lambda e: e.get("originator") == "remote")
        bob.wait("ended", 10)

        # SIP.js calls JsSIP the same way; the callee hangs up
        bob.command("call", target=f"sip:alice@{DOMAIN}")
        call2 = bob.wait("calling", 5)["call_id"]
        assert alice.wait("incoming", 10)["call_id"] == call2
        bob.wait("confirmed", 10)
        alice.wait("confirmed", 10)
        alice.command("hangup")
        bob.wait("bye_received", 10)
        alice.wait("ended", 10, where=lambda e: e.get("originator") == "local")

        def bye_ok(e: dict) -> bool:
            m = e.get("text", "")
            return e.get("dir") == "in" and m.startswith("SIP/2.0 200 ") and cseq_method(m) == "BYE"
        alice.wait("wire", 5, where=bye_ok, after=0)  # each BYE answered, the 200 back over the right WS
        bob.wait("wire", 5, where=bye_ok, after=0)

        for caller, callee, user, call_id in ((alice, bob, "alice", call1), (bob, alice, "bob", call2)):
            # the caller's INVITE: 407, ACKed, answered with its credentials, then 180 and 200
            check_authenticated_request(caller, "INVITE", user, 200, call_id)
            invite_answers = [status(m) for m in responses(caller, "INVITE", call_id)]
            assert 180 in invite_answers and invite_answers.index(407) < invite_answers.index(180), invite_answers
            acks = requests(caller, "ACK", call_id)
            assert len(acks) == 2, caller.describe()  # the 407's (hop by hop) and the 200's (end to end)
            assert header(acks[0], "Proxy-Authorization") == []
            # the callee got the authenticated INVITE only, without the caller's credentials, and the ACK
            got = sip_messages(callee.wire("in"), "INVITE ")
            got = [m for m in got if header(m, "Call-ID") == [call_id]]
            assert len(got) == 1 and header(got[0], "CSeq") == header(requests(caller, "INVITE", call_id)[-1], "CSeq")
            assert header(got[0], "Proxy-Authorization") == [] and header(got[0], "Authorization") == []
            assert [m for m in sip_messages(callee.wire("in"), "ACK ") if header(m, "Call-ID") == [call_id]]
        # in-dialog requests are not challenged: every BYE got its 200 at once
        for client, call_id in ((bob, call1), (alice, call2)):
            byes = requests(client, "BYE", call_id)
            assert len(byes) == 1 and [status(m) for m in responses(client, "BYE", call_id)] == [200]

        # un-register, challenged and answered too; then calls to the user find nobody (after 407)
        bob.command("unregister")
        bob.wait("unregistered", 10)
        check_authenticated_request(bob, "REGISTER", "bob", 200, replay=True)  # SIP.js: stale=true first
        assert re.search(r"expires=0|^Expires: 0", requests(bob, "REGISTER")[-1], re.M | re.I)
        alice.command("call", target=f"sip:bob@{DOMAIN}")
        call3 = alice.wait("calling", 5)["call_id"]
        failed = alice.wait("failed", 10)
        assert failed["status"] == 404 and failed["cause"] == "Not Found", failed
        check_authenticated_request(alice, "INVITE", "alice", 404, call3)

        alice.command("unregister")
        assert alice.wait("unregistered", 10)["status"] == 200
        check_authenticated_request(alice, "REGISTER", "alice", 200)
        bob.command("call", target=f"sip:alice@{DOMAIN}")
        call4 = bob.wait("calling", 5)["call_id"]
        assert bob.wait("failed", 10)["status"] == 404
        check_authenticated_request(bob, "INVITE", "bob", 404, call4)
        assert web.node.running()


# -- refusals ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lib", LIBS)
def test_a_wrong_password_never_registers_and_the_next_client_does(web: WebNode, lib: str) -> None:
    user = f"carol-{lib}"
    # the legitimate client connects first, without registering, to look up the AoR meanwhile
    with web.client(lib, user, password=USERS[user], register=False) as right:
        right.wait("connected", 10)
        with web.client(lib, user, password="not " + USERS[user]) as wrong:
            failed = wrong.wait("registration_failed", 10)
            assert failed["status"] == 401, failed
            if lib == "jssip":
                assert failed["cause"] == "Authentication Error", failed
            else:  # SIP.js's Registerer goes from Initial to Unregistered on the rejection
                wrong.wait("unregistered", 5, after=0)
            # it answered the challenge once, was challenged again (not stale: the nonce was fine) and gave up
            sent = requests(wrong, "REGISTER")
            assert len(sent) == 2 and header(sent[0], "Authorization") == [], wrong.describe()
            answers = responses(wrong, "REGISTER")
            assert [status(m) for m in answers] == [401, 401], wrong.describe()
            c = digest_params(header(sent[1], "Authorization")[0])
            assert c["username"] == user and c["nonce"] == check_challenge(answers[0], "WWW-Authenticate")["nonce"]
            check_challenge(answers[1], "WWW-Authenticate")
            # while the refused client is still connected, a call to the AoR finds nobody
            right.command("call", target=f"sip:{user}@{DOMAIN}")
            call_id = right.wait("calling", 5)["call_id"]
            assert right.wait("failed", 10)["status"] == 404
            check_authenticated_request(right, "INVITE", user, 404, call_id)
            # and the refused library neither retried nor claimed to be registered
            assert len(requests(wrong, "REGISTER")) == 2
            assert not [e for e in wrong.events if e.get("event") in ("registered", "incoming")]
        # the next legitimate client registers
        right.command("register")
        right.wait("registered", 15)
        check_authenticated_request(right, "REGISTER", user, 200)
        right.command("unregister")
        right.wait("unregistered", 10)
        check_authenticated_request(right, "REGISTER", user, 200, replay=lib == "sipjs")
    assert web.node.running()


@pytest.mark.parametrize("lib", LIBS)
def test_valid_credentials_of_another_user_are_forbidden(web: WebNode, lib: str) -> None:
    """db_check_to(): dave's AoR with carol's (valid) username and password is 403 Forbidden auth ID."""
    user, other = f"dave-{lib}", f"carol-{lib}"
    with web.client(lib, user, password=USERS[other], auth_user=other) as client:
        failed = client.wait("registration_failed", 10)
        assert failed["status"] == 403 and failed["reason"] == "Forbidden auth ID", failed
        if lib == "jssip":
            assert failed["cause"] == "Rejected", failed
        sent = requests(client, "REGISTER")
        answers = responses(client, "REGISTER")
        assert [status(m) for m in answers] == [401, 403] and len(sent) == 2, client.describe()
        check_credentials(sent[1], "Authorization", check_challenge(answers[0], "WWW-Authenticate"), other,
                          USERS[other])
        assert header(sent[1], "To")[0].startswith(f"<sip:{user}@{DOMAIN}>")
    assert web.node.running()
