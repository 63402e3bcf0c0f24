"""The Authenticator behind ``www_authorize`` / ``proxy_authorize`` / ``www_challenge``: OpenSIPS's return
codes for every way a request's credentials can be right or wrong, on a ``task.Clock``, with the
embedded store (``[auth.users]``); the shipped routes' authentication block through RouteHarness.
The subscriber table in MariaDB has its own tests (test_auth_subscribers.py, test_e2e_auth_db.py)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent

from edgeproxy.auth import (AuthResult, Authenticator, AuthSettings, DigestError, MemorySubscribers, Subscriber,
                            SubscriberStoreError, compute_ha1)
from edgeproxy.auth.subscribers import SubscriberTable
from edgeproxy.proxy.noise import NoiseLog
from edgeproxy.routing.testing import RouteHarness
from edgeproxy.sip.parser import parse_datagram
from edgeproxy.sip.message import Request
import edgeproxy_routes.default as default_route
import edgeproxy_routes.federated as federated_route
from support.ports import free_port

REALM = "example.com"
USERS = {"alice": "wonderland", "bob@example.com": "builder"}


def request(method: str = "REGISTER", *, user: str = "alice", auth: str | None = None, proxy: bool = False,
            body: str = "", from_user: str | None = None) -> Request:
    header = ("Proxy-Authorization" if proxy else "Authorization") if auth else None
    text = (f"{method} sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-a1\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{from_user or user}@{REALM}>;tag=f\r\nTo: <sip:{user}@{REALM}>\r\n"
            f"Call-ID: auth-1\r\nCSeq: 1 {method}\r\n" + (f"{header}: {auth}\r\n" if header else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}")
    parsed = parse_datagram(text.encode())
    assert isinstance(parsed, Request)
    return parsed


def result_of(d: Deferred) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred did not fire"
    return out[0]


def make(store: Any = None, clock: Clock | None = None, **settings: Any) -> Authenticator:
    s = AuthSettings(**settings)
    return Authenticator(s, store if store is not None else MemorySubscribers(USERS), clock or Clock())


def nonce_of(header_value: str) -> str:
    return re.search(r'nonce="([^"]+)"', header_value).group(1)


def digest(user: str, password: str, nonce: str, *, method: str = "REGISTER", uri: str = f"sip:{REALM}",
           nc: int = 1, realm: str = REALM, algorithm: str = "MD5", qop: str | None = "auth", body: str = "") -> str:
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]
    H = lambda s: h(s.encode()).hexdigest()  # noqa: E731
    ha1 = H(f"{user}:{realm}:{password}")
    ha2 = H(f"{method}:{uri}:{H(body)}") if qop == "auth-int" else H(f"{method}:{uri}")
    if qop:
        resp = H(f"{ha1}:{nonce}:{nc:08x}:cn0nce:{qop}:{ha2}")
        tail = f", qop={qop}, nc={nc:08x}, cnonce=\"cn0nce\""
    else:
        resp = H(f"{ha1}:{nonce}:{ha2}")
        tail = ""
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{resp}", '
            f"algorithm={algorithm}{tail}")


def fresh_nonce(auth: Authenticator, method: str = "REGISTER") -> str:
    [(name, value)] = auth.challenge(request(method), proxy=method != "REGISTER")
    return nonce_of(value)


# -- return codes ---------------------------------------------------------------------------------------

def test_no_credentials_is_minus_4_and_the_challenge_names_realm_md5_qop() -> None:
    auth = make()
    assert result_of(auth.authorize(request())).result is AuthResult.NO_CREDENTIALS
    [(name, value)] = auth.challenge(request())
    assert name == "WWW-Authenticate"
    assert value.startswith(f'Digest realm="{REALM}", nonce="') and 'qop="auth"' in value and "algorithm=MD5" in value
    assert "stale" not in value


def test_good_credentials_are_1_and_name_the_user() -> None:
    auth = make()
    out = result_of(auth.authorize(request(auth=digest("alice", "wonderland", fresh_nonce(auth)))))
    assert out.result is AuthResult.AUTHORIZED and (out.username, out.realm) == ("alice", REALM)


def test_wrong_password_is_minus_2_and_unknown_user_minus_1() -> None:
    auth = make()
    assert result_of(auth.authorize(request(auth=digest("alice", "guess", fresh_nonce(auth))))).result \
        is AuthResult.INVALID_PASSWORD
    assert result_of(auth.authorize(request(user="eve", auth=digest("eve", "x", fresh_nonce(auth))))).result \
        is AuthResult.INVALID_USER


def test_expired_nonce_is_minus_3_stale_and_the_store_is_not_asked() -> None:
    clock = Clock()
    asked: list[str] = []

    class Store(MemorySubscribers):
        def get(self, username: str, domain: str | None) -> Deferred:
            asked.append(username)
            return super().get(username, domain)

    auth = make(Store(USERS), clock, nonce_expire=30)
    creds = digest("alice", "wonderland", fresh_nonce(auth))
    clock.advance(30.5)
    out = result_of(auth.authorize(request(auth=creds)))
    assert out.result is AuthResult.STALE_NONCE and out.stale and asked == []
    [(_, value)] = auth.challenge(request(), stale=out.stale)
    assert value.endswith("stale=true")


def test_replay_is_stale_but_counting_on_is_fine() -> None:
    auth = make()
    nonce = fresh_nonce(auth)
    assert result_of(auth.authorize(request(auth=digest("alice", "wonderland", nonce)))).result is AuthResult.AUTHORIZED
    replay = request(auth=digest("alice", "wonderland", nonce))
    replay.headers.set("CSeq", "7 REGISTER")  # a new request carrying captured credentials
    assert result_of(auth.authorize(replay)).result is AuthResult.STALE_NONCE
    assert result_of(auth.authorize(request(auth=digest("alice", "wonderland", nonce, nc=2)))).result \
        is AuthResult.AUTHORIZED


def test_a_retransmitted_register_passes_but_the_same_credentials_on_another_request_do_not() -> None:
    """A REGISTER is answered without a server transaction: its UDP retransmission reaches the
    authenticator again and must not turn the 200 into a stale 401 (the registrar answers the
    repeated Call-ID/CSeq with the stored bindings). An INVITE's retransmissions never get here, so
    the same credentials on an INVITE again are a replay (a second call on a captured request)."""
    auth = make()
    creds = digest("alice", "wonderland", fresh_nonce(auth))
    register = request(auth=creds)
    assert [result_of(auth.authorize(register)).result for _ in range(2)] == [AuthResult.AUTHORIZED] * 2
    other = request(auth=creds)
    other.headers.set("CSeq", "2 REGISTER")
    assert result_of(auth.authorize(other)).result is AuthResult.STALE_NONCE
    nonce = fresh_nonce(auth, "INVITE")
    inv = request("INVITE", auth=digest("alice", "wonderland", nonce, method="INVITE"), proxy=True)
    assert result_of(auth.authorize(inv, proxy=True)).result is AuthResult.AUTHORIZED
    assert result_of(auth.authorize(inv, proxy=True)).result is AuthResult.STALE_NONCE


def test_a_wrong_password_does_not_burn_the_nonce() -> None:
    auth = make()
    nonce = fresh_nonce(auth)
    assert result_of(auth.authorize(request(auth=digest("alice", "bad", nonce)))).result is AuthResult.INVALID_PASSWORD
    assert result_of(auth.authorize(request(auth=digest("alice", "wonderland", nonce)))).result is AuthResult.AUTHORIZED


def test_nonce_reuse_lets_a_nonce_authenticate_twice() -> None:
    auth = make(nonce_reuse=True)
    creds = digest("alice", "wonderland", fresh_nonce(auth))
    assert [result_of(auth.authorize(request(auth=creds))).result for _ in range(2)] == [AuthResult.AUTHORIZED] * 2


def test_ack_and_cancel_reuse_the_invite_credentials_without_consuming_them() -> None:
    auth = make()
    nonce = fresh_nonce(auth, "INVITE")
    inv = digest("alice", "wonderland", nonce, method="INVITE", uri=f"sip:{REALM}")
    assert result_of(auth.authorize(request("INVITE", auth=inv, proxy=True), proxy=True)).result is AuthResult.AUTHORIZED
    cancel = digest("alice", "wonderland", nonce, method="CANCEL", uri=f"sip:{REALM}")
    for _ in range(2):
        assert result_of(auth.authorize(request("CANCEL", auth=cancel, proxy=True), proxy=True)).result \
            is AuthResult.AUTHORIZED


def test_a_nonce_of_another_node_with_the_same_secret_is_good_and_of_a_restarted_node_stale() -> None:
    a, b = make(secret="shared"), make(secret="shared")
    creds = digest("alice", "wonderland", fresh_nonce(a))
    assert result_of(b.authorize(request(auth=creds))).result is AuthResult.AUTHORIZED
    restarted = make()  # no secret: a random one per start
    out = result_of(restarted.authorize(request(auth=digest("alice", "wonderland", fresh_nonce(a)))))
    assert out.result is AuthResult.STALE_NONCE and out.stale  # the UA re-authenticates without asking its user


def test_store_failure_is_minus_5() -> None:
    class Down(MemorySubscribers):
        def get(self, username: str, domain: str | None) -> Deferred:
            return fail(SubscriberStoreError("db 127.0.0.1:3306/opensips: cannot connect"))

    auth = make(Down())
    out = result_of(auth.authorize(request(auth=digest("alice", "wonderland", fresh_nonce(auth)))))
    assert out.result is AuthResult.GENERIC_ERROR and auth.stats["generic_error"] == 1


@pytest_twisted.ensureDeferred
async def test_a_burst_while_the_subscriber_database_is_down_is_two_lines(logged: list[dict[str, Any]]) -> None:
    """Issue 16: with the database down every authenticated request failed with its own error line;
    through the node's NoiseLog the store is the source: its first failure said, the rest counted."""
    pytest.importorskip("pymysql")
    clock = Clock()
    noise = NoiseLog(clock, interval=10.0)
    store = SubscriberTable(f"mysql://root@127.0.0.1:{free_port()}/test", timeout=2.0)  # nothing listens there
    auth = Authenticator(AuthSettings(), store, clock, noise=noise)
    n = 40
    try:
        outcomes = await gatherResults([auth.authorize(request(auth=digest("alice", "wonderland", fresh_nonce(auth))))
                                        for _ in range(n)])
    finally:
        await store.close()
    assert [o.result for o in outcomes] == [AuthResult.GENERIC_ERROR] * n and auth.store_errors == n
    clock.advance(10.0)
    events = [e for e in logged if str(e.get("log_namespace", "")).startswith("edgeproxy")
              and "cannot connect" in formatEvent(e)]
    lines = [formatEvent(e) for e in events]
    assert len(lines) == 2, lines
    # our own outage, not hostile input: both lines stay at error level, bounded all the same
    assert [e["log_level"] for e in events] == [LogLevel.error, LogLevel.error]
    assert "subscriber store subscriber" in lines[0] and "alice@example.com: " in lines[0]
    assert f"{n - 1} credentials unavailable" in lines[1]


def test_stored_ha1_is_used_and_a_row_with_neither_is_minus_5() -> None:
    ha1 = compute_ha1("MD5", "carol", REALM, "s3cret")
    store = MemorySubscribers([Subscriber("carol", REALM, None, {"MD5": ha1}), Subscriber("dave", REALM)])
    auth = make(store)
    assert result_of(auth.authorize(request(user="carol", auth=digest("carol", "s3cret", fresh_nonce(auth))))).result \
        is AuthResult.AUTHORIZED
    assert result_of(auth.authorize(request(user="dave", auth=digest("dave", "x", fresh_nonce(auth))))).result \
        is AuthResult.GENERIC_ERROR


def test_use_domain_matches_the_realm_against_the_users_domain() -> None:
    auth = make(MemorySubscribers(USERS, use_domain=True), use_domain=True)
    bob = digest("bob", "builder", fresh_nonce(auth))
    assert result_of(auth.authorize(request(user="bob", auth=bob))).result is AuthResult.AUTHORIZED
    alice = digest("alice", "wonderland", fresh_nonce(auth))  # "alice" has no domain: not in example.com
    assert result_of(auth.authorize(request(auth=alice))).result is AuthResult.INVALID_USER


def test_sha256_challenges_first_and_answers_in_sha256_or_md5() -> None:
    auth = make(algorithms=("SHA-256", "MD5"))
    challenges = auth.challenge(request())
    assert [re.search(r"algorithm=([\w-]+)", v).group(1) for _, v in challenges] == ["SHA-256", "MD5"]
    for (_, value), alg in zip(challenges, ("SHA-256", "MD5")):
        creds = digest("alice", "wonderland", nonce_of(value), algorithm=alg)
        assert result_of(auth.authorize(request(auth=creds))).result is AuthResult.AUTHORIZED


def test_an_algorithm_we_did_not_offer_is_minus_4() -> None:
    auth = make(algorithms=("SHA-256",))
    creds = digest("alice", "wonderland", nonce_of(auth.challenge(request())[0][1]), algorithm="MD5")
    assert result_of(auth.authorize(request(auth=creds))).result is AuthResult.NO_CREDENTIALS


def test_auth_int_covers_the_body_and_rfc2069_without_qop_works() -> None:
    auth = make(qop="auth-int")
    body = "v=0\r\n"
    good = digest("alice", "wonderland", fresh_nonce(auth, "INVITE"), method="INVITE", qop="auth-int", body=body)
    assert result_of(auth.authorize(request("INVITE", auth=good, proxy=True, body=body), proxy=True)).result \
        is AuthResult.AUTHORIZED
    tampered = digest("alice", "wonderland", fresh_nonce(auth, "INVITE"), method="INVITE", qop="auth-int", body=body)
    assert result_of(auth.authorize(request("INVITE", auth=tampered, proxy=True, body="v=1\r\n"), proxy=True)).result \
        is AuthResult.INVALID_PASSWORD
    plain = digest("alice", "wonderland", fresh_nonce(auth), qop=None)
    assert result_of(auth.authorize(request(auth=plain))).result is AuthResult.AUTHORIZED


def test_credentials_for_another_realm_are_not_ours_and_malformed_ours_raise_400() -> None:
    auth = make()
    other = digest("alice", "wonderland", fresh_nonce(auth), realm="carrier.example")
    assert result_of(auth.authorize(request(auth=other))).result is AuthResult.NO_CREDENTIALS
    with pytest.raises(DigestError) as err:
        auth.authorize(request(auth=f'Digest username="alice", realm="{REALM}", nonce="x"'))
    assert err.value.status == 400


def test_proxy_authorize_reads_proxy_authorization_and_challenges_with_407_headers() -> None:
    auth = make()
    [(name, value)] = auth.challenge(request("INVITE"), proxy=True)
    assert name == "Proxy-Authenticate"
    creds = digest("alice", "wonderland", nonce_of(value), method="INVITE")
    assert result_of(auth.authorize(request("INVITE", auth=creds), proxy=True)).result is AuthResult.NO_CREDENTIALS
    assert result_of(auth.authorize(request("INVITE", auth=creds, proxy=True), proxy=True)).result \
        is AuthResult.AUTHORIZED


def test_a_table_other_than_the_configured_one_is_a_route_bug() -> None:
    with pytest.raises(ValueError, match="table 'users'"):
        make().authorize(request(), table="users")


# -- the shipped routes' authentication block ---------------------------------------------------------------

def harness() -> RouteHarness:
    return RouteHarness(domains=[REALM], auth=AuthSettings(users=USERS))


def register(auth: str | None = None, user: str = "alice") -> str:
    return (f"REGISTER sip:{REALM} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-r\nMax-Forwards: 70\n"
            f"From: <sip:{user}@{REALM}>;tag=r\nTo: <sip:{user}@{REALM}>\nCall-ID: reg\nCSeq: 1 REGISTER\n"
            f"Contact: <sip:{user}@192.0.2.10:5062>\n" + (f"Authorization: {auth}\n" if auth else "")
            + "Content-Length: 0\n\n")


def test_default_route_challenges_a_register_then_saves_it_without_its_credentials() -> None:
    h = harness()
    first = h.run(default_route.request_route, register())
    assert first.replies == [(401, "Unauthorized", False)]
    [(name, value)] = first.reply_headers
    ok = h.run(default_route.request_route, register(digest("alice", "wonderland", nonce_of(value))))
    assert ok.replies[0][0] == 200 and ok.request.au == "alice"
    assert "Authorization" not in ok.request.request.headers  # consume_credentials()
    assert [str(b.uri) for b in h.location.get("alice")] == ["sip:alice@192.0.2.10:5062"]


def test_default_route_refuses_bobs_credentials_for_alices_aor() -> None:
    h = RouteHarness(domains=[REALM], auth=AuthSettings(users={"alice": "wonderland", "bob": "builder"}))
    value = h.run(default_route.request_route, register()).reply_headers[0][1]
    result = h.run(default_route.request_route, register(digest("bob", "builder", nonce_of(value)), user="alice"))
    assert result.replies == [(403, "Forbidden auth ID", False)] and not h.location.get("alice")


def test_default_route_asks_our_callers_to_authenticate_but_not_callers_from_elsewhere() -> None:
    h = harness()
    h.register(f"sip:bob@{REALM}", "sip:bob@192.0.2.11:5062")
    invite = (f"INVITE sip:bob@{REALM} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-i\nMax-Forwards: 70\n"
              f"From: <sip:alice@{REALM}>;tag=i\nTo: <sip:bob@{REALM}>\nCall-ID: call\nCSeq: 1 INVITE\n"
              "Content-Length: 0\n\n")
    challenged = h.run(default_route.request_route, invite)
    assert challenged.replies == [(407, "Proxy Authentication Required", False)] and not challenged.relayed
    value = challenged.reply_headers[0][1]
    creds = digest("alice", "wonderland", nonce_of(value), method="INVITE", uri=f"sip:bob@{REALM}")
    relayed = h.run(default_route.request_route, invite.replace("Content-Length", f"Proxy-Authorization: {creds}\n"
                                                                                 "Content-Length"))
    assert relayed.relayed and "Proxy-Authorization" not in relayed.request.request.headers
    carrier = invite.replace(f"From: <sip:alice@{REALM}>", "From: <sip:+15550100@carrier.example>")
    assert h.run(default_route.request_route, carrier).relayed  # not one of ours: nothing to prove


def test_seed_route_store_down_is_503_not_another_challenge() -> None:
    class Down(MemorySubscribers):
        def get(self, username: str, domain: str | None) -> Deferred:
            return fail(SubscriberStoreError("down"))

    h = RouteHarness(domains=[REALM], auth=AuthSettings(users=USERS), params={"freeswitch": ["10.0.1.50"]})
    h.auth.store = Down()
    value = h.run(federated_route.request_route, register()).reply_headers[0][1]
    result = h.run(federated_route.request_route, register(digest("alice", "wonderland", nonce_of(value))))
    assert result.replies == [(503, "Service Unavailable", False)] and ("Retry-After", "5") in result.reply_headers


def test_routes_without_auth_settings_are_unchanged() -> None:
    h = RouteHarness(domains=[REALM])  # no [auth]: auth_enabled is False and nothing is challenged
    result = h.run(default_route.request_route, register())
    assert not result.request.auth_enabled and result.replies[0][0] == 200
