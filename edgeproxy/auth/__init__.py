"""Digest authentication (RFC 3261 §22; RFC 2617, RFC 7616, RFC 8760), as OpenSIPS's ``auth`` module
does it: the pure core (the response arithmetic in :mod:`.digest`, signed nonces and their replay
records in :mod:`.nonce`), where credentials come from (:mod:`.subscribers`: ``[auth.users]`` or the
``subscriber`` table), and the :class:`Authenticator` behind the routes' ``www_authorize`` /
``proxy_authorize`` / ``www_challenge`` (:mod:`.authenticator`), configured by ``[auth]``
(:mod:`.settings`)."""

from .authenticator import Authenticator, AuthOutcome, AuthResult, default_realm, subscriber_store
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
from .settings import AuthSettings
from .subscribers import MemorySubscribers, Subscriber, SubscriberStore, SubscriberStoreError, SubscriberTable

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
    "AuthSettings",
    "MemorySubscribers",
    "Subscriber",
    "SubscriberStore",
    "SubscriberStoreError",
    "SubscriberTable",
    "AuthOutcome",
    "AuthResult",
    "Authenticator",
    "default_realm",
    "subscriber_store",
]
