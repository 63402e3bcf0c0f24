"""The digest arithmetic (``edgeproxy.auth.digest``) against published vectors and real headers.

RFC 2617 §3.5 and RFC 7616 §3.9.1 give complete exchanges; the RFC 2069 (no qop), auth-int, -sess and
SHA-512-256 cases are recomputed here step by step with hashlib, independently of the module. Hostile
credentials are property-tested: the only error ``from_credentials`` may raise is DigestError.

In CI (``CI`` set) the examples are derandomised so a run is reproducible; locally they vary.
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy.auth import digest
from edgeproxy.auth.digest import (
    ALGORITHMS,
    DigestError,
    DigestResponse,
    base_algorithm,
    canonical_algorithm,
    challenge_value,
    compute_ha1,
    expected_response,
    hash_hex,
    response_matches,
    session_ha1,
)
from edgeproxy.sip import SipValueError
from edgeproxy.sip.values import Credentials, parse_credentials

ROOT = Path(__file__).resolve().parent.parent

PROPERTY = settings(
    max_examples=400,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def md5(text: str | bytes) -> str:
    return hashlib.md5(text if isinstance(text, bytes) else text.encode()).hexdigest()


def sha256(text: str | bytes) -> str:
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()


def creds_from(header: str) -> DigestResponse:
    return DigestResponse.from_credentials(parse_credentials(header))


# -- RFC 2617 §3.5 --------------------------------------------------------------------------------------

RFC2617_HEADER = (
    'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
    'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_example() -> None:
    creds = creds_from(RFC2617_HEADER)
    assert creds == DigestResponse(
        username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html", response="6629fae49393a05397450978507c4ef1", algorithm="MD5", qop="auth", nc=1,
        cnonce="0a4f113b", opaque="5ccc069c403ebaf9f0171e9517f40e41", nc_text="00000001",
    )
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert ha1 == md5("Mufasa:testrealm@host.com:Circle Of Life")
    assert expected_response(creds, ha1, "GET") == "6629fae49393a05397450978507c4ef1"
    assert response_matches(creds, ha1, "GET")
    assert response_matches(creds, ha1.upper(), "GET")  # a stored HA1 in upper-case hex still works
    assert not response_matches(creds, ha1, "POST")
    assert not response_matches(creds, compute_ha1("MD5", "Mufasa", "testrealm@host.com", "circle of life"), "GET")


def test_upper_case_response_matches() -> None:
    creds = creds_from(RFC2617_HEADER.replace("6629fae49393a05397450978507c4ef1", "6629FAE49393A05397450978507C4EF1"))
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert response_matches(creds, compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life"), "GET")


# -- RFC 7616 §3.9.1 (note: its password is "Circle of Life", lower-case "of") ---------------------------

RFC7616_PARAMS = (
    'username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
    'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    "algorithm, response",
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example(algorithm: str, response: str) -> None:
    creds = creds_from(f'Digest {RFC7616_PARAMS}, algorithm={algorithm}, response="{response}"')
    assert creds.algorithm == algorithm
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert expected_response(creds, ha1, "GET") == response
    assert response_matches(creds, ha1, "GET")
    assert not response_matches(creds, compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle Of Life"),
                                "GET")


def test_sha256_ha1_is_the_rfc7616_value() -> None:
    assert compute_ha1("SHA-256", "Mufasa", "http-auth@example.org", "Circle of Life") == sha256(
        "Mufasa:http-auth@example.org:Circle of Life"
    )
    assert compute_ha1("SHA-256-sess", "a", "b", "c") == compute_ha1("SHA-256", "a", "b", "c")


def test_sha512_256_is_fips_180_4_and_the_response_formula() -> None:
    # FIPS 180-4 / NIST example: SHA-512/256("abc")
    assert hash_hex("SHA-512-256", b"abc") == "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"

    def h(text: str) -> str:
        return hashlib.new("sha512_256", text.encode()).hexdigest()

    ha1 = h("alice:example.com:pw")
    want = h(f"{ha1}:n1:00000002:c1:auth:{h('INVITE:sip:bob@example.com')}")
    creds = creds_from(
        f'Digest username="alice", realm="example.com", nonce="n1", uri="sip:bob@example.com", '
        f'algorithm=SHA-512-256, qop=auth, nc=00000002, cnonce="c1", response="{want}"'
    )
    assert compute_ha1("SHA-512-256", "alice", "example.com", "pw") == ha1
    assert expected_response(creds, ha1, "INVITE") == want
    assert response_matches(creds, ha1, "INVITE")


# -- RFC 2069 (no qop), auth-int, -sess ----------------------------------------------------------------


def test_rfc2069_no_qop() -> None:
    ha1 = md5("bob:biloxi.com:zanzibar")
    ha2 = md5("REGISTER:sip:biloxi.com")
    want = md5(f"{ha1}:abc123:{ha2}")
    creds = creds_from(
        f'Digest username="bob", realm="biloxi.com", nonce="abc123", uri="sip:biloxi.com", response="{want}", '
        f'nc=00000001, cnonce="ignored"'
    )
    assert (creds.qop, creds.nc, creds.nc_text, creds.cnonce) == (None, None, None, None)
    assert expected_response(creds, ha1, "REGISTER") == want
    assert response_matches(creds, ha1, "REGISTER")
    assert not response_matches(creds, ha1, "INVITE")


def test_auth_int_hashes_the_body() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"
    ha1 = md5("alice:atlanta.com:secret")
    ha2 = md5(f"INVITE:sip:bob@biloxi.com:{md5(body)}")
    want = md5(f"{ha1}:nn:0000000a:cc:auth-int:{ha2}")
    creds = creds_from(
        f'Digest username="alice", realm="atlanta.com", nonce="nn", uri="sip:bob@biloxi.com", '
        f'qop=auth-int, nc=0000000a, cnonce="cc", response="{want}"'
    )
    assert creds.qop == "auth-int" and creds.nc == 10
    assert response_matches(creds, ha1, "INVITE", body)
    assert not response_matches(creds, ha1, "INVITE", body + b"a=evil\r\n")
    assert not response_matches(creds, ha1, "INVITE")


def test_auth_int_with_empty_body() -> None:
    ha1 = md5("alice:atlanta.com:secret")
    want = md5(f"{ha1}:nn:00000001:cc:auth-int:{md5('BYE:sip:bob@biloxi.com:' + md5(b''))}")
    creds = creds_from(
        f'Digest username="alice", realm="atlanta.com", nonce="nn", uri="sip:bob@biloxi.com", '
        f'qop=auth-int, nc=00000001, cnonce="cc", response="{want}"'
    )
    assert response_matches(creds, ha1, "BYE")


@pytest.mark.parametrize("algorithm, h", [("MD5-sess", md5), ("SHA-256-sess", sha256)])
def test_sess_applies_the_session_key(algorithm: str, h) -> None:  # type: ignore[no-untyped-def]
    base = h("alice:atlanta.com:secret")
    sess = h(f"{base}:nonce9:cn9")
    want = h(f"{sess}:nonce9:00000001:cn9:auth:{h('REGISTER:sip:atlanta.com')}")
    creds = creds_from(
        f'Digest username="alice", realm="atlanta.com", nonce="nonce9", uri="sip:atlanta.com", '
        f'algorithm={algorithm.lower()}, qop=auth, nc=00000001, cnonce="cn9", response="{want}"'
    )
    assert creds.algorithm == algorithm
    assert session_ha1(algorithm, base, "nonce9", "cn9") == sess
    assert session_ha1(base_algorithm(algorithm), base, "nonce9", "cn9") == base  # non-sess: unchanged
    assert response_matches(creds, base, "REGISTER")  # the base HA1 is given; -sess is applied inside
    assert not response_matches(creds, sess, "REGISTER")


def test_sess_without_qop_is_refused() -> None:
    with pytest.raises(DigestError, match="session"):
        creds_from(
            'Digest username="a", realm="r", nonce="n", uri="sip:r", algorithm=MD5-sess, '
            f'response="{"0" * 32}"'
        )


def test_nc_text_is_hashed_as_sent() -> None:
    """An upper-case nonce-count is hashed as the client wrote it, not re-formatted."""
    ha1 = md5("alice:example.com:pw")
    want = md5(f"{ha1}:n:0000000A:c:auth:{md5('REGISTER:sip:example.com')}")
    creds = creds_from(
        f'Digest username="alice", realm="example.com", nonce="n", uri="sip:example.com", qop=auth, '
        f'nc=0000000A, cnonce="c", response="{want}"'
    )
    assert (creds.nc, creds.nc_text) == (10, "0000000A")
    assert response_matches(creds, ha1, "REGISTER")


# -- real headers ---------------------------------------------------------------------------------------


def _client_response(user: str, realm: str, pw: str, method: str, uri: str, nonce: str, nc: str, cnonce: str) -> str:
    ha1 = md5(f"{user}:{realm}:{pw}")
    return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{md5(f'{method}:{uri}')}")


def test_sipp_style_header() -> None:
    nonce = "AAAAAZPm1xQAAAAAAAAAAV0eTsFDbx6Ci6vpO0JN8P1nJ7i2LgB9"
    resp = _client_response("alice", "example.com", "pw", "REGISTER", "sip:example.com", nonce, "00000001", "abc")
    header = (
        f'Digest username="alice",realm="example.com",nonce="{nonce}",uri="sip:example.com",'
        f'response="{resp}",algorithm=MD5,cnonce="abc",qop=auth,nc=00000001'
    )
    creds = creds_from(header)
    assert (creds.username, creds.realm, creds.uri, creds.qop, creds.nc, creds.cnonce) == (
        "alice", "example.com", "sip:example.com", "auth", 1, "abc",
    )
    assert response_matches(creds, compute_ha1("MD5", "alice", "example.com", "pw"), "REGISTER")


def test_jssip_style_header() -> None:
    nonce = "Y2hhbGxlbmdl"
    resp = _client_response("1001", "pbx.example.com", "s3cr3t", "INVITE", "sip:1002@pbx.example.com", nonce,
                            "00000003", "k1oa3fmn2ebg")
    header = (
        f'Digest algorithm=MD5, username="1001", realm="pbx.example.com", nonce="{nonce}", '
        f'uri="sip:1002@pbx.example.com", response="{resp}", qop=auth, cnonce="k1oa3fmn2ebg", nc=00000003, '
        f'opaque="op1"'
    )
    creds = creds_from(header)
    assert (creds.nc, creds.opaque) == (3, "op1")
    assert response_matches(creds, md5("1001:pbx.example.com:s3cr3t"), "INVITE")


def test_escaped_quoted_username() -> None:
    user = 'a"b\\c'
    ha1 = md5(f"{user}:r:pw")
    want = md5(f"{ha1}:n:{md5('MESSAGE:sip:r')}")
    creds = creds_from(f'Digest username="a\\"b\\\\c", realm="r", nonce="n", uri="sip:r", response="{want}"')
    assert creds.username == user
    assert response_matches(creds, ha1, "MESSAGE")


def test_latin1_username_hashes_the_wire_bytes() -> None:
    """The parser decodes with surrogateescape; the hash must see the original bytes again."""
    wire = b"J\xe4s\xf8n"  # Latin-1, not UTF-8
    user = wire.decode("utf-8", "surrogateescape")
    ha1 = hashlib.md5(wire + b":r:pw").hexdigest()
    want = md5(f"{ha1}:n:{md5('REGISTER:sip:r')}")
    creds = creds_from(f'Digest username="{user}", realm="r", nonce="n", uri="sip:r", response="{want}"')
    assert compute_ha1("MD5", user, "r", "pw") == ha1
    assert response_matches(creds, ha1, "REGISTER")


def test_utf8_username() -> None:
    user = "Jäsøn Doe"
    assert compute_ha1("MD5", user, "r", "pw") == hashlib.md5("Jäsøn Doe:r:pw".encode("utf-8")).hexdigest()


# -- shape errors ---------------------------------------------------------------------------------------

GOOD = {
    "username": "alice", "realm": "example.com", "nonce": "n", "uri": "sip:example.com", "response": "a" * 32,
    "qop": "auth", "nc": "00000001", "cnonce": "c",
}


def _from(params: dict[str, str], scheme: str = "Digest") -> DigestResponse:
    return DigestResponse.from_credentials(Credentials(scheme, dict(params)))


@pytest.mark.parametrize("name", ["username", "realm", "nonce", "uri", "response"])
def test_missing_required(name: str) -> None:
    params = dict(GOOD)
    del params[name]
    with pytest.raises(DigestError) as err:
        _from(params)
    assert err.value.status == 400
    assert err.value.reason == f"Missing digest parameter {name}"


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"nc": None}, "Missing digest parameter nc"),
        ({"cnonce": None}, "Missing digest parameter cnonce"),
        ({"nc": "1"}, "Malformed digest nc"),
        ({"nc": "000000001"}, "Malformed digest nc"),
        ({"nc": "0000000g"}, "Malformed digest nc"),
        ({"nc": "０００００００１"}, "Malformed digest nc"),  # fullwidth digits
        ({"qop": "auth,auth-int"}, "Unsupported digest qop"),
        ({"qop": "token"}, "Unsupported digest qop"),
        ({"response": "a" * 31}, "Malformed digest response"),
        ({"response": "a" * 64}, "Malformed digest response"),  # SHA-256 length for MD5
        ({"response": "g" * 32}, "Malformed digest response"),
        ({"response": "٣" * 32}, "Malformed digest response"),  # Arabic-Indic digit, str.isdigit() says yes
        ({"algorithm": "SHA-1"}, "Unsupported digest algorithm"),
        ({"algorithm": "AKAv1-MD5"}, "Unsupported digest algorithm"),
        ({"nonce": ""}, "Missing digest parameter nonce"),
        ({"uri": ""}, "Missing digest parameter uri"),
        ({"username": "u" * 257}, "Digest username too long"),
        ({"opaque": "o" * 1025}, "Oversized digest parameter"),
        ({"x" * 1025: "1"}, "Oversized digest parameter"),
    ],
)
def test_shape_errors(change: dict[str, str | None], reason: str) -> None:
    params = dict(GOOD)
    for k, v in change.items():
        if v is None:
            params.pop(k)
        else:
            params[k] = v
    with pytest.raises(DigestError) as err:
        _from(params)
    assert (err.value.status, err.value.reason) == (400, reason)


def test_limits_are_inclusive() -> None:
    creds = _from({**GOOD, "username": "u" * 256, "opaque": "o" * 1024})
    assert len(creds.username) == 256 and creds.opaque is not None and len(creds.opaque) == 1024


def test_qop_is_case_insensitive() -> None:
    assert _from({**GOOD, "qop": "AUTH"}).qop == "auth"
    assert _from({**GOOD, "qop": "Auth-Int"}).qop == "auth-int"


def test_sha256_response_length() -> None:
    assert _from({**GOOD, "algorithm": "sha-256", "response": "B" * 64}).response == "b" * 64
    with pytest.raises(DigestError, match="Malformed digest response"):
        _from({**GOOD, "algorithm": "SHA-512-256", "response": "b" * 32})


@pytest.mark.parametrize("scheme", ["Basic", "NTLM", "digestx", ""])
def test_scheme_must_be_digest(scheme: str) -> None:
    with pytest.raises(DigestError, match="scheme"):
        _from(GOOD, scheme)
    assert _from(GOOD, "DIGEST").username == "alice"


def test_digest_error_is_a_sip_value_error() -> None:
    assert issubclass(DigestError, SipValueError)


def test_reason_never_echoes_peer_text() -> None:
    with pytest.raises(DigestError) as err:
        _from({**GOOD, "x\r\nVia: evil" * 200: "1"})
    assert "\r" not in err.value.reason and "evil" not in err.value.reason


# -- algorithms -----------------------------------------------------------------------------------------


def test_canonical_algorithm() -> None:
    assert canonical_algorithm(None) == "MD5"
    assert canonical_algorithm("") == "MD5"
    for name in ALGORITHMS:
        assert canonical_algorithm(name.lower()) == name
        assert canonical_algorithm(name.upper()) == name
    with pytest.raises(DigestError) as err:
        canonical_algorithm("SHA-512")
    assert (err.value.status, err.value.reason) == (400, "Unsupported digest algorithm")


def test_base_algorithm() -> None:
    assert [base_algorithm(a) for a in ALGORITHMS] == ["MD5", "MD5", "SHA-256", "SHA-256", "SHA-512-256", "SHA-512-256"]


def test_hash_hex() -> None:
    assert hash_hex("MD5", "") == "d41d8cd98f00b204e9800998ecf8427e"
    assert hash_hex("md5-sess", b"") == "d41d8cd98f00b204e9800998ecf8427e"
    assert hash_hex("SHA-256", "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_missing_sha512_256_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some OpenSSL builds lack SHA-512/256: the client gets 400 (not supported), our own use a clear error."""
    monkeypatch.setitem(digest._HASHES, "SHA-512-256", None)
    with pytest.raises(DigestError) as err:
        hash_hex("SHA-512-256", "x")
    assert err.value.status == 500 and "sha512_256" in err.value.reason
    with pytest.raises(DigestError) as err:
        _from({**GOOD, "algorithm": "SHA-512-256", "response": "a" * 64})
    assert (err.value.status, err.value.reason) == (400, "Unsupported digest algorithm")
    with pytest.raises(ValueError, match="unavailable"):
        challenge_value("r", "n", algorithm="SHA-512-256")
    assert hash_hex("SHA-256", "abc").startswith("ba7816bf")  # the others still work


# -- challenges -----------------------------------------------------------------------------------------


def test_challenge_value_default() -> None:
    assert challenge_value("example.com", "abc") == 'Digest realm="example.com", nonce="abc", qop="auth", algorithm=MD5'


def test_challenge_value_everything() -> None:
    value = challenge_value('ex"am\\ple', "n-1", algorithm="sha-256-SESS", qop="auth, auth-int", stale=True,
                            opaque="op")
    assert value == (
        'Digest realm="ex\\"am\\\\ple", nonce="n-1", opaque="op", qop="auth,auth-int", '
        "algorithm=SHA-256-sess, stale=true"
    )
    creds = parse_credentials(value)
    assert creds.scheme == "Digest"
    assert creds.params == {"realm": 'ex"am\\ple', "nonce": "n-1", "opaque": "op", "qop": "auth,auth-int",
                            "algorithm": "SHA-256-sess", "stale": "true"}


def test_challenge_value_rfc2069() -> None:
    assert challenge_value("r", "n", qop="") == 'Digest realm="r", nonce="n", algorithm=MD5'


@pytest.mark.parametrize(
    "kwargs",
    [{"algorithm": "SHA-1"}, {"qop": "auth-conf"}, {"qop": "auth,"}, {"realm": "a\r\nVia: x"}, {"nonce": "a\nb"},
     {"opaque": "\0"}],
)
def test_challenge_value_refuses_bad_arguments(kwargs: dict[str, str]) -> None:
    args = {"realm": "r", "nonce": "n", **kwargs}
    with pytest.raises(ValueError):
        challenge_value(args.pop("realm"), args.pop("nonce"), **args)


def test_challenge_then_response_round_trip() -> None:
    """What a UA does with our challenge: answer it, and the answer checks out."""
    challenge = parse_credentials(challenge_value("example.com", "NONCE_x-1", algorithm="SHA-256", opaque="o"))
    p = challenge.params
    ha1 = sha256(f"bob:{p['realm']}:pw")
    resp = sha256(f"{ha1}:{p['nonce']}:00000001:cn:auth:{sha256('REGISTER:sip:example.com')}")
    header = (
        f'Digest username="bob", realm="{p["realm"]}", nonce="{p["nonce"]}", uri="sip:example.com", '
        f'response="{resp}", algorithm={p["algorithm"]}, qop={p["qop"]}, nc=00000001, cnonce="cn", '
        f'opaque="{p["opaque"]}"'
    )
    assert response_matches(creds_from(header), compute_ha1("SHA-256", "bob", "example.com", "pw"), "REGISTER")


# -- hostile input --------------------------------------------------------------------------------------

NAMES = ["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce", "opaque"]
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
VALUES = st.one_of(
    ANY_TEXT,
    st.sampled_from(["auth", "auth-int", "AUTH", "00000001", "ffffffff", "0000000G", "", "MD5", "sha-256-sess",
                     "SHA-512-256", "a" * 32, "F" * 64, "\udcff", "\ud800", "x" * 1025, "u" * 257]),
    st.text("0123456789abcdefABCDEFg", min_size=30, max_size=66),
)
PARAMS = st.fixed_dictionaries(
    {},
    optional={name: VALUES for name in NAMES},
).flatmap(lambda d: st.dictionaries(st.one_of(st.sampled_from(NAMES), ANY_TEXT), VALUES, max_size=3).map(
    lambda extra: {**d, **extra}))
SCHEMES = st.one_of(st.sampled_from(["Digest", "digest", "DIGEST", "Basic", ""]), ANY_TEXT)


@PROPERTY
@given(SCHEMES, PARAMS)
def test_from_credentials_only_raises_digest_error(scheme: str, params: dict[str, str]) -> None:
    try:
        creds = DigestResponse.from_credentials(Credentials(scheme, params))
    except DigestError as exc:
        assert exc.status == 400 and exc.reason.isascii() and "\n" not in exc.reason
        return
    # What it accepted can be checked without error.
    assert isinstance(response_matches(creds, "0" * 32, "REGISTER", b"body"), bool)
    assert creds.algorithm in ALGORITHMS and creds.response == creds.response.lower()
    assert (creds.qop is None) == (creds.nc is None) == (creds.cnonce is None) == (creds.nc_text is None)


@PROPERTY
@given(st.sampled_from(NAMES), VALUES)
def test_one_bad_value_in_good_credentials(name: str, value: str) -> None:
    """Good credentials with one parameter replaced: the closest hostile input to real traffic."""
    try:
        creds = _from({**GOOD, name: value})
    except DigestError:
        return
    assert isinstance(response_matches(creds, "0" * 32, "INVITE"), bool)


@PROPERTY
@given(st.text(max_size=300))
def test_header_text_only_raises_sip_value_error(text: str) -> None:
    try:
        creds = parse_credentials("Digest " + text)
    except SipValueError:
        return
    try:
        DigestResponse.from_credentials(creds)
    except DigestError:
        pass


# -- purity ---------------------------------------------------------------------------------------------

PURE = ["edgeproxy/auth/digest.py", "edgeproxy/auth/nonce.py"]


def _imported_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text("utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                names.append(".".join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module or "")
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_imports(module: str) -> None:
    """The core imports no Twisted and, of edgeproxy, only the SIP core."""
    names = _imported_names(ROOT / module)
    assert names
    bad = [n for n in names if n.split(".")[0] == "twisted"
           or (n.split(".")[0] == "edgeproxy" and n.split(".")[1:2] != ["sip"])]
    assert not bad, f"{module} imports {bad}"


def test_pure_modules_load_no_twisted() -> None:
    """Imported in a fresh interpreter, bypassing the package ``__init__`` (which may grow Twisted-based
    exports), the two modules load no Twisted."""
    code = (
        "import sys, types, importlib\n"
        "pkg = types.ModuleType('edgeproxy.auth'); pkg.__path__ = ['edgeproxy/auth']\n"
        "sys.modules['edgeproxy.auth'] = pkg\n"
        "importlib.import_module('edgeproxy.auth.digest'); importlib.import_module('edgeproxy.auth.nonce')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
