"""Digest authentication (RFC 3261 §22; RFC 2617, RFC 7616, RFC 8760), as OpenSIPS's ``auth`` module
does it: the pure core (the response arithmetic in :mod:`.digest`, signed nonces and their replay
records in :mod:`.nonce`) that the route layer's authenticator builds on."""

from .digest import (
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
from .nonce import NonceIssuer, NonceState

__all__ = [
    "ALGORITHMS",
    "DigestError",
    "DigestResponse",
    "base_algorithm",
    "canonical_algorithm",
    "challenge_value",
    "compute_ha1",
    "expected_response",
    "hash_hex",
    "response_matches",
    "session_ha1",
    "NonceIssuer",
    "NonceState",
]
