"""Signed nonces and their replay records (``edgeproxy.auth.nonce``), with time as plain numbers.

In CI (``CI`` set) the property examples are derandomised so a run is reproducible; locally they vary.
"""

from __future__ import annotations

import base64
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy.auth.nonce import NONCE_LENGTH, NonceIssuer, NonceState

SECRET = b"0123456789abcdef0123456789abcdef"
ALPHABET = string.ascii_letters + string.digits + "-_"

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)


def fixed_random(n: int) -> bytes:
    return b"\x07" * n


def issuer(**kwargs) -> NonceIssuer:  # type: ignore[no-untyped-def]
    return NonceIssuer(SECRET, **kwargs)


def nonce_at(t: float, expire: float = 100.0) -> str:
    """A nonce issued at ``t`` by a peer sharing the secret: an issuer's own clock never runs backwards, so
    tests that need nonces from the past get them from a fresh issuer."""
    return NonceIssuer(SECRET, expire).issue(t)


# -- issue / verify -------------------------------------------------------------------------------------


def test_round_trip() -> None:
    nonces = issuer()
    nonce = nonces.issue(1000.0)
    assert len(nonce) == NONCE_LENGTH == 54
    assert set(nonce) <= set(ALPHABET)
    assert nonces.verify(nonce, 1000.0) is NonceState.VALID


def test_nonces_are_unique_even_with_constant_randomness() -> None:
    """The per-issuer index makes two nonces of one millisecond differ even if the random bytes do not."""
    nonces = issuer(random_bytes=fixed_random)
    batch = {nonces.issue(5.0) for _ in range(1000)}
    assert len(batch) == 1000
    assert all(nonces.verify(n, 5.0) is NonceState.VALID for n in batch)


def test_random_bytes_is_used_and_checked() -> None:
    asked: list[int] = []

    def rand(n: int) -> bytes:
        asked.append(n)
        return os.urandom(n)

    issuer(random_bytes=rand).issue(0.0)
    assert asked == [8]
    with pytest.raises(ValueError):
        issuer(random_bytes=lambda n: b"short").issue(0.0)


def test_payload_layout() -> None:
    """expiry ms (8 bytes BE) + index (8) + random (8) + HMAC-SHA256 truncated to 16."""
    import hashlib
    import hmac

    nonce = issuer(random_bytes=fixed_random).issue(12.5)
    raw = base64.urlsafe_b64decode(nonce + "==")
    assert len(raw) == 40
    assert int.from_bytes(raw[:8], "big") == 42_500
    assert int.from_bytes(raw[8:16], "big") == 1
    assert raw[16:24] == b"\x07" * 8
    assert raw[24:] == hmac.new(SECRET, raw[:24], hashlib.sha256).digest()[:16]


@pytest.mark.parametrize("position", range(NONCE_LENGTH))
def test_tampering_any_character_is_invalid(position: int) -> None:
    nonces = issuer()
    nonce = nonces.issue(100.0)
    for ch in ALPHABET:
        if ch != nonce[position]:
            forged = nonce[:position] + ch + nonce[position + 1 :]
            assert nonces.verify(forged, 100.0) is NonceState.INVALID, (position, ch)


def test_tampering_any_bit_is_invalid() -> None:
    nonces = issuer()
    raw = bytearray(base64.urlsafe_b64decode(nonces.issue(100.0) + "=="))
    for i in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[i // 8] ^= 1 << (i % 8)
        forged = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        assert nonces.verify(forged, 100.0) is NonceState.INVALID, i


def test_extending_the_expiry_needs_the_secret() -> None:
    nonces = issuer()
    raw = bytearray(base64.urlsafe_b64decode(nonces.issue(100.0) + "=="))
    raw[:8] = (10**12).to_bytes(8, "big")
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert nonces.verify(forged, 200.0) is NonceState.INVALID
    assert not nonces.consume(forged, None, 200.0)


def test_non_canonical_spelling_is_invalid() -> None:
    """The last character carries 2 data bits and 4 spare ones: only the canonical one is ours."""
    nonces = issuer()
    nonce = nonces.issue(1.0)
    b64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    value = b64.index(nonce[-1])
    assert value & 0x0F == 0
    for spare in range(1, 16):
        assert nonces.verify(nonce[:-1] + b64[value | spare], 1.0) is NonceState.INVALID


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "A" * (NONCE_LENGTH - 1),
        "A" * (NONCE_LENGTH + 1),
        "A" * NONCE_LENGTH,
        "é" * NONCE_LENGTH,
        "\udcff" * NONCE_LENGTH,
        "+" * NONCE_LENGTH,
        "/" * NONCE_LENGTH,
        " " * NONCE_LENGTH,
        "\n" * NONCE_LENGTH,
        "=" * NONCE_LENGTH,
    ],
)
def test_garbage_is_invalid(bad: str) -> None:
    nonces = issuer()
    assert nonces.verify(bad, 0.0) is NonceState.INVALID
    assert nonces.consume(bad, None, 0.0) is False
    assert nonces.consume(bad, 1, 0.0) is False


def test_truncated_extended_padded_variants_are_invalid() -> None:
    nonces = issuer()
    nonce = nonces.issue(0.0)
    for bad in (nonce[:-1], nonce[1:], nonce + "A", "A" + nonce, nonce + "==", nonce[:-2] + "==", nonce + "\n",
                nonce.upper(), nonce.lower(), nonce.replace("-", "+").replace("_", "/"), nonce * 2, f'"{nonce}"'):
        if bad != nonce:
            assert nonces.verify(bad, 0.0) is NonceState.INVALID, bad


def test_standard_base64_alphabet_is_not_accepted() -> None:
    nonces = issuer()
    for _ in range(200):
        nonce = nonces.issue(0.0)
        if "-" in nonce or "_" in nonce:
            assert nonces.verify(nonce.replace("-", "+").replace("_", "/"), 0.0) is NonceState.INVALID
            return
    pytest.fail("no nonce with - or _ in 200 tries")


def test_ten_megabytes_is_refused_and_not_tracked() -> None:
    """Refused on its length before any decoding (no timing asserted here: speed is the bench's)."""
    nonces = issuer()
    huge = "A" * 10_000_000
    assert nonces.verify(huge, 0.0) is NonceState.INVALID
    assert nonces.consume(huge, 1, 0.0) is False
    assert nonces.tracked == 0


def test_non_string_is_invalid() -> None:
    nonces = issuer()
    nonce = nonces.issue(0.0)
    assert nonces.verify(nonce.encode(), 0.0) is NonceState.INVALID  # type: ignore[arg-type]
    assert nonces.verify(None, 0.0) is NonceState.INVALID  # type: ignore[arg-type]


@PROPERTY
@given(st.text(max_size=120))
def test_arbitrary_text_never_raises(text: str) -> None:
    nonces = issuer()
    assert nonces.verify(text, 0.0) is NonceState.INVALID
    assert nonces.consume(text, 1, 0.0) is False


@PROPERTY
@given(st.text(ALPHABET, min_size=NONCE_LENGTH, max_size=NONCE_LENGTH))
def test_right_shape_random_text_is_invalid(text: str) -> None:
    assert issuer().verify(text, 0.0) is NonceState.INVALID


# -- secrets --------------------------------------------------------------------------------------------


def test_shared_secret_issuers_accept_each_other() -> None:
    """Cluster nodes configured with one secret: a nonce from either is good on both."""
    a, b = NonceIssuer(SECRET), NonceIssuer(SECRET)
    na, nb = a.issue(10.0), b.issue(10.0)
    assert b.verify(na, 11.0) is NonceState.VALID
    assert a.verify(nb, 11.0) is NonceState.VALID
    assert b.consume(na, None, 11.0)
    assert a.consume(nb, 1, 11.0)


def test_shared_secret_issuers_same_index_are_distinct_records() -> None:
    """Both nodes issue index 1: the replay records must not confuse their nonces."""
    a, b = NonceIssuer(SECRET), NonceIssuer(SECRET)
    na, nb = a.issue(10.0), b.issue(10.0)
    assert na != nb
    assert a.consume(na, None, 11.0)
    assert a.consume(nb, None, 11.0)  # b's nonce, same index, never used here
    assert not a.consume(na, None, 11.0)
    assert not a.consume(nb, None, 11.0)


def test_different_secrets_do_not_accept_each_other() -> None:
    a, b = NonceIssuer(SECRET), NonceIssuer(SECRET[:-1] + b"!")
    nonce = a.issue(10.0)
    assert b.verify(nonce, 10.0) is NonceState.INVALID
    assert not b.consume(nonce, None, 10.0)


@pytest.mark.parametrize("secret", [b"", "text"])
def test_secret_must_be_non_empty_bytes(secret) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        NonceIssuer(secret)


@pytest.mark.parametrize("kwargs", [{"expire": 0}, {"expire": -1}, {"expire": float("nan")}, {"max_tracked": 0}])
def test_bad_settings(kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        issuer(**kwargs)


# -- expiry ---------------------------------------------------------------------------------------------


def test_expiry_at_exactly_expire() -> None:
    """Issued at 100 with expire 30: good up to 130 exclusive."""
    nonce = issuer(expire=30.0).issue(100.0)
    assert issuer(expire=30.0).verify(nonce, 129.999) is NonceState.VALID
    assert issuer(expire=30.0).verify(nonce, 130.0) is NonceState.STALE
    assert issuer(expire=30.0).verify(nonce, 130.001) is NonceState.STALE
    assert issuer().verify(nonce, 10**9) is NonceState.STALE


def test_expiry_one_ms_either_side_for_consume() -> None:
    nonce = issuer(expire=30.0).issue(100.0)
    assert issuer().consume(nonce, None, 129.999)
    assert not issuer().consume(nonce, None, 130.0)


def test_fractional_expire_and_now() -> None:
    nonces = issuer(expire=0.25)
    nonce = nonces.issue(7.125)
    assert nonces.verify(nonce, 7.374) is NonceState.VALID
    assert nonces.verify(nonce, 7.375) is NonceState.STALE


def test_expiry_is_the_signer_s() -> None:
    """A node with a longer expire still honours the expiry the issuing node signed."""
    short, long = NonceIssuer(SECRET, 5.0), NonceIssuer(SECRET, 300.0)
    nonce = short.issue(0.0)
    assert long.verify(nonce, 4.999) is NonceState.VALID
    assert long.verify(nonce, 5.0) is NonceState.STALE


def test_clock_going_backwards_does_not_revive_an_expired_nonce() -> None:
    nonces = issuer(expire=30.0)
    nonce = nonces.issue(100.0)
    assert nonces.verify(nonce, 131.0) is NonceState.STALE
    assert nonces.verify(nonce, 120.0) is NonceState.STALE  # the clock stepped back 11 s
    assert nonces.verify(nonce, 0.0) is NonceState.STALE
    assert not nonces.consume(nonce, None, 110.0)
    fresh = nonces.issue(110.0)  # issued on the stepped-back clock: good for 30 s from the latest time seen
    assert nonces.verify(fresh, 110.0) is NonceState.VALID
    assert nonces.consume(fresh, None, 110.0)


def test_clock_going_backwards_with_records() -> None:
    nonces = issuer(expire=30.0)
    nonce = nonces.issue(100.0)
    assert nonces.consume(nonce, 1, 101.0)
    assert nonces.consume(nonce, 2, 50.0)  # clock stepped back: still within the nonce's life
    assert not nonces.consume(nonce, 2, 60.0)
    assert nonces.tracked == 1
    assert not nonces.consume(nonce, 3, 131.0)
    assert not nonces.consume(nonce, 4, 100.0)
    assert nonces.tracked == 0


def test_negative_and_zero_clock() -> None:
    nonces = issuer(expire=1.0)
    nonce = nonces.issue(-5.0)
    assert nonces.verify(nonce, -4.5) is NonceState.VALID
    assert nonces.verify(nonce, -4.0) is NonceState.STALE


@pytest.mark.parametrize("now", [float("nan"), float("inf"), float("-inf"), 1e300])
def test_non_finite_clock_is_a_caller_error(now: float) -> None:
    nonces = issuer()
    with pytest.raises(ValueError):
        nonces.issue(now)


# -- replay ---------------------------------------------------------------------------------------------


def test_without_qop_a_nonce_is_good_once() -> None:
    nonces = issuer()
    nonce = nonces.issue(0.0)
    assert nonces.consume(nonce, None, 1.0)
    assert not nonces.consume(nonce, None, 1.0)
    assert not nonces.consume(nonce, None, 2.0)
    assert not nonces.consume(nonce, 1, 2.0)  # nor can it switch to qop
    assert nonces.verify(nonce, 2.0) is NonceState.VALID  # verify is stateless


def test_with_qop_nc_must_increase() -> None:
    nonces = issuer()
    nonce = nonces.issue(0.0)
    assert nonces.consume(nonce, 1, 1.0)
    assert not nonces.consume(nonce, 1, 1.0)
    assert nonces.consume(nonce, 3, 1.0)
    assert not nonces.consume(nonce, 2, 1.0)
    assert not nonces.consume(nonce, 3, 1.0)
    assert not nonces.consume(nonce, None, 1.0)  # nor drop qop
    assert nonces.consume(nonce, 0xFFFFFFFF, 1.0)
    assert not nonces.consume(nonce, 0xFFFFFFFF, 1.0)
    assert nonces.tracked == 1


def test_first_nc_need_not_be_one() -> None:
    nonces = issuer()
    nonce = nonces.issue(0.0)
    assert nonces.consume(nonce, 5, 1.0)
    assert not nonces.consume(nonce, 4, 1.0)
    assert nonces.consume(nonce, 6, 1.0)
    assert not nonces.consume(nonces.issue(0.0), -1, 1.0)


def test_reuse_allows_everything_and_tracks_nothing() -> None:
    nonces = issuer(reuse=True)
    nonce = nonces.issue(0.0)
    for _ in range(3):
        assert nonces.consume(nonce, None, 1.0)
        assert nonces.consume(nonce, 1, 1.0)
    assert nonces.tracked == 0
    assert nonces.verify(nonce, 30.0) is NonceState.STALE  # expiry still holds


def test_consume_refuses_expired_and_foreign() -> None:
    nonces = issuer(expire=10.0)
    nonce = nonces.issue(0.0)
    assert not nonces.consume(nonce, 1, 10.0)
    assert not NonceIssuer(b"other secret").consume(issuer().issue(10.0), 1, 10.0)
    assert nonces.tracked == 0


def test_records_expire_with_their_nonce() -> None:
    nonces = issuer(expire=10.0)
    first = [nonces.issue(0.0) for _ in range(3)]
    for n in first:
        assert nonces.consume(n, None, 1.0)
    assert nonces.tracked == 3
    later = nonces.issue(5.0)
    assert nonces.consume(later, 1, 9.999)
    assert nonces.tracked == 4
    assert nonces.consume(nonces.issue(10.0), None, 10.0)  # the first three expire at 10.0 exactly
    assert nonces.tracked == 2
    assert nonces.verify(nonces.issue(15.0), 15.0) is NonceState.VALID
    assert nonces.tracked == 1  # `later` (expiry 15.0) has gone too


# -- bounded tracking -----------------------------------------------------------------------------------


def test_tracking_is_bounded() -> None:
    nonces = issuer(expire=1000.0, max_tracked=4)
    for i in range(100):
        assert nonces.consume(nonces.issue(float(i)), None, float(i))
        assert nonces.tracked <= 4
    assert nonces.tracked == 4


def test_evicted_nonce_is_not_fresh_again() -> None:
    """A nonce whose record was evicted while still good must not be accepted as never seen; a nonce
    issued after the eviction point still is."""
    nonces = issuer(expire=100.0, max_tracked=4)
    used = [nonces.issue(float(t)) for t in range(5)]  # expire at 100, 101, 102, 103, 104
    for n in used[:4]:
        assert nonces.consume(n, 1, 10.0)
    assert nonces.tracked == 4
    assert nonces.consume(used[4], 1, 11.0)  # evicts used[0]'s record (expiry 100)
    assert nonces.tracked == 4
    assert nonces.verify(used[0], 12.0) is NonceState.VALID  # verify alone cannot tell
    assert not nonces.consume(used[0], 2, 12.0)  # a higher nc, but its history is gone: stale
    assert not nonces.consume(used[0], None, 12.0)
    for n in used[1:]:  # still tracked, nc history intact
        assert not nonces.consume(n, 1, 12.0)
        assert nonces.consume(n, 2, 12.0)
    fresh = nonces.issue(12.0)  # expires at 112, after the evicted 100
    assert nonces.consume(fresh, 1, 12.0)
    assert nonces.consume(fresh, 2, 12.0)


def test_never_seen_nonce_from_before_the_eviction_point_is_refused() -> None:
    """The price of bounded memory: an unused nonce that expires no later than an evicted one cannot be
    told from an evicted one, so it is refused (the client is re-challenged with stale=true)."""
    nonces = issuer(expire=100.0, max_tracked=2)
    old_unused = nonces.issue(0.0)  # expiry 100
    same_ms = nonces.issue(1.0)  # expiry 101
    a, b, c = nonces.issue(1.0), nonces.issue(2.0), nonces.issue(3.0)  # expiry 101, 102, 103
    assert nonces.consume(a, None, 5.0)
    assert nonces.consume(b, None, 5.0)
    assert nonces.consume(c, None, 5.0)  # evicts a: evicted until 101
    assert not nonces.consume(old_unused, None, 5.0)
    assert not nonces.consume(same_ms, None, 5.0)  # "at or before" the eviction point
    after = nonce_at(1.001)  # expiry 101.001: just after the evicted one's, never seen
    assert nonces.consume(after, None, 5.0)


def test_eviction_point_only_moves_forward() -> None:
    """Records consumed out of expiry order: the eviction point is the latest evicted expiry."""
    nonces = issuer(expire=100.0, max_tracked=2)
    late, early = nonce_at(50.0), nonce_at(0.0)  # expiry 150 and 100
    x, y = nonce_at(60.0), nonce_at(61.0)  # 160, 161
    assert nonces.consume(late, 1, 70.0)  # consumed first: front of the table
    assert nonces.consume(early, 1, 70.0)
    assert nonces.consume(x, 1, 70.0)  # evicts late (150)
    assert nonces.consume(y, 1, 70.0)  # evicts early (100): the point stays at 150
    assert not nonces.consume(late, 2, 71.0)
    assert not nonces.consume(early, 2, 71.0)
    assert not nonces.consume(nonce_at(49.0), 1, 71.0)  # never seen, but expires at 149 <= 150
    assert not nonces.consume(nonce_at(50.0), 1, 71.0)  # at the point itself
    assert nonces.consume(nonce_at(50.001), 1, 71.0)  # just after it


def test_expiry_frees_room_before_eviction() -> None:
    """Expired records are dropped first, so they never push the eviction point forward."""
    nonces = issuer(expire=10.0, max_tracked=2)
    for n in (nonces.issue(0.0), nonces.issue(0.0)):
        assert nonces.consume(n, None, 1.0)
    later = [nonces.issue(20.0), nonces.issue(20.0)]
    for n in later:
        assert nonces.consume(n, None, 20.0)  # the first two expired at 10: no eviction
    assert nonces.tracked == 2
    unused = nonces.issue(20.0)
    assert nonces.consume(unused, None, 20.5)  # evicts later[0] (expiry 30) ...
    assert not nonces.consume(nonce_at(20.0, 10.0), None, 20.5)  # ... so one expiring at 30 is refused
    assert nonces.consume(nonce_at(20.001, 10.0), None, 20.5)


def test_max_tracked_one() -> None:
    nonces = issuer(expire=100.0, max_tracked=1)
    a = nonces.issue(0.0)
    b = nonces.issue(1.0)
    assert nonces.consume(a, 1, 2.0)
    assert nonces.consume(b, 1, 2.0)
    assert not nonces.consume(a, 2, 2.0)
    assert nonces.consume(b, 2, 2.0)
    assert nonces.tracked == 1


def test_many_nonces_stay_within_bounds_over_time() -> None:
    nonces = issuer(expire=5.0, max_tracked=50)
    now = 0.0
    for i in range(5000):
        now += 0.01
        nonce = nonces.issue(now)
        assert nonces.consume(nonce, 1, now + 0.005)
        assert nonces.tracked <= 50
    # 5 s of nonces at 100/s would be 500 records: the bound held, and the newest are still usable
    assert nonces.consume(nonces.issue(now), None, now)


def test_the_last_accepted_use_resent_with_its_proof_is_accepted_anything_else_is_not() -> None:
    """A REGISTER's UDP retransmission (no transaction absorbs it) repeats nonce, count and proof."""
    nonces = issuer()
    nonce = nonces.issue(0.0)
    assert nonces.consume(nonce, 1, 1.0, resend_proof="resp|call|1")
    assert nonces.consume(nonce, 1, 1.5, resend_proof="resp|call|1")  # the same request again
    assert not nonces.consume(nonce, 1, 1.5, resend_proof="resp|call|2")  # same count, other request
    assert not nonces.consume(nonce, 1, 1.5)  # no proof: a replay
    assert nonces.consume(nonce, 2, 2.0, resend_proof="resp2|call|2")
    assert not nonces.consume(nonce, 1, 2.0, resend_proof="resp|call|1")  # no longer the last one
    plain = nonces.issue(0.0)  # without qop
    assert nonces.consume(plain, None, 1.0, resend_proof="p")
    assert nonces.consume(plain, None, 1.0, resend_proof="p") and not nonces.consume(plain, None, 1.0)
