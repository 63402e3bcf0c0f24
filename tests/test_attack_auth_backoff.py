"""Issue 16, finding 7: no per-user lockout or back-off after repeated authentication failures --
svcrack at 10 guesses/s, under pike's rate, found a password from a list. OpenSIPS users build this
with ``ratelimit``/``htable``; here it is ``[auth] max_failures`` / ``failure_window`` /
``backoff``: after ``max_failures`` wrong credentials within the window for one user (or
``max_failures_per_source`` from one source address), credentials are not checked for ``backoff``
seconds (doubling for each repeat, up to 16 times): every attempt is -2 (the route challenges
again), the right password included, so a guesser learns nothing. Sans-IO on a ``task.Clock``.
"""

from __future__ import annotations

from test_auth_authenticator import digest, fresh_nonce, make, request, result_of
from twisted.internet.task import Clock

from edgeproxy.auth import AuthResult
from edgeproxy.auth.backoff import FailureBackoff

WORDS = [f"guess{i}" for i in range(30)] + ["wonderland"]


def attempt(auth, user: str, password: str, source: str) -> AuthResult:  # noqa: ANN001
    nonce = fresh_nonce(auth)
    req = request(user=user, auth=digest(user, password, nonce))
    return result_of(auth.authorize(req, source=source)).result


def test_a_password_list_at_ten_guesses_a_second_finds_nothing() -> None:
    clock = Clock()
    auth = make(clock=clock)
    results = []
    for word in WORDS:  # svcrack's pace: 10 a second, the right word last
        results.append(attempt(auth, "alice", word, "192.0.2.66"))
        clock.advance(0.1)
    assert results[-1] == AuthResult.INVALID_PASSWORD  # on main: 1, the password found
    assert results[:5] == [AuthResult.INVALID_PASSWORD] * 5
    assert auth.stats["backoff"] >= 25


def test_per_source_another_source_is_not_affected() -> None:
    clock = Clock()
    auth = make(clock=clock)
    for i in range(20):  # one source tries many users (max_failures_per_source = 20)
        attempt(auth, f"user{i}", f"nope{i}", "192.0.2.66")
    assert attempt(auth, "bob", "builder", "192.0.2.66") == AuthResult.INVALID_PASSWORD
    assert attempt(auth, "bob", "builder", "192.0.2.77") == AuthResult.AUTHORIZED


def test_per_user_rotating_sources_do_not_help() -> None:
    clock = Clock()
    auth = make(clock=clock)
    for i in range(10):
        attempt(auth, "alice", f"nope{i}", f"10.0.0.{i}")
    assert attempt(auth, "alice", "wonderland", "10.0.1.1") == AuthResult.INVALID_PASSWORD


def test_the_back_off_ends_and_doubles_when_it_starts_again() -> None:
    clock = Clock()
    auth = make(clock=clock, max_failures=3, max_failures_per_source=3, failure_window=60.0, backoff=10.0)
    for i in range(3):
        attempt(auth, "alice", f"nope{i}", "192.0.2.66")
    assert attempt(auth, "alice", "wonderland", "192.0.2.66") == AuthResult.INVALID_PASSWORD
    clock.advance(10.1)
    assert attempt(auth, "alice", "wonderland", "192.0.2.66") == AuthResult.AUTHORIZED  # the user is back
    for i in range(3):
        attempt(auth, "alice", f"again{i}", "192.0.2.66")
    clock.advance(10.1)  # the second episode lasts 20 s
    assert attempt(auth, "alice", "wonderland", "192.0.2.66") == AuthResult.INVALID_PASSWORD
    clock.advance(10.0)
    assert attempt(auth, "alice", "wonderland", "192.0.2.66") == AuthResult.AUTHORIZED


def test_zero_max_failures_switches_it_off() -> None:
    auth = make(clock=Clock(), max_failures=0, max_failures_per_source=0)
    for word in WORDS[:-1]:
        assert attempt(auth, "alice", word, "192.0.2.66") == AuthResult.INVALID_PASSWORD
    assert attempt(auth, "alice", "wonderland", "192.0.2.66") == AuthResult.AUTHORIZED


def test_the_table_is_bounded() -> None:
    backoff = FailureBackoff(max_failures=5, window=60.0, backoff=30.0, max_tracked=100)
    for i in range(10_000):
        backoff.failed(f"10.{i // 256 % 256}.{i % 256}.1", float(i) * 0.001)
    assert len(backoff) <= 100
