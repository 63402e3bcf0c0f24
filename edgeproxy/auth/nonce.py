"""Digest nonces that need no table to be checked, and a bounded table that stops their replay.

A nonce is signed data, as in OpenSIPS's ``auth`` module: its expiry, a per-issuer index and random
bytes, under an HMAC of the node's secret. :meth:`NonceIssuer.verify` therefore needs nothing but the
secret and the time, so challenges cost no memory, a flood of forged credentials costs one HMAC each,
and every node configured with the same secret accepts the others' nonces.

Replay protection (OpenSIPS's nonce-count check, off with ``disable_nonce_check``) is the part that
needs memory. It is spent only on nonces whose response already matched, bounded by ``max_tracked``,
and released as nonces expire. When the bound forces a record out before its nonce expires, the nonce
is refused from then on rather than accepted as never seen: the client gets a ``stale=true``
challenge and retries with a fresh nonce, without asking its user for anything.

Time is whatever number the caller passes (seconds, the reactor's ``seconds()``), so the whole module is
tested without a clock. Nodes sharing a secret must pass wall-clock time (``time.time()``), since a
nonce carries its expiry in that clock.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import math
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["NonceIssuer", "NonceState"]

_RANDOM_LENGTH = 8
_MAC_LENGTH = 16
_SIGNED = struct.Struct(">qQ8s")  # expiry in ms (signed: a test clock may start below zero), index, random
_PAYLOAD_LENGTH = _SIGNED.size + _MAC_LENGTH  # 40 bytes
NONCE_LENGTH = 54  # characters of 40 bytes in base64 without padding
_NONCE_RE = re.compile(rf"[A-Za-z0-9_-]{{{NONCE_LENGTH}}}")

# A record of a nonce used without qop: no later request may use it again.
_USED_WITHOUT_QOP = -1


class NonceState(enum.Enum):
    """What :meth:`NonceIssuer.verify` found; the route answers each differently."""

    VALID = "valid"
    STALE = "stale"  # ours, but expired (or its replay record was evicted): re-challenge with stale=true
    INVALID = "invalid"  # not ours (bad encoding / bad MAC): plain re-challenge


class NonceIssuer:
    """Issues nonces, verifies them, and remembers which were used (unless ``reuse``).

    ``secret`` signs the nonces; nodes that give each other's clients service share it. ``expire`` is
    how many seconds a nonce is good for (OpenSIPS ``nonce_expire``). ``reuse`` lets one nonce
    authenticate any number of requests (OpenSIPS ``disable_nonce_check``). ``max_tracked`` bounds the
    replay records. ``random_bytes`` is injectable so that tests can make nonces reproducible.

    The clock never runs backwards here: the issuer keeps the latest ``now`` it was given and uses it
    whenever an earlier one comes, so a stepped-back system clock cannot bring an expired nonce back.
    """

    def __init__(
        self,
        secret: bytes,
        expire: float = 30.0,
        *,
        reuse: bool = False,
        max_tracked: int = 100_000,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("the nonce secret must be non-empty bytes")
        if not (math.isfinite(expire) and expire > 0):
            raise ValueError("nonce expire must be a positive number of seconds")
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        self._secret = secret
        self._expire_ms = max(1, round(expire * 1000))
        self.reuse = reuse
        self.max_tracked = max_tracked
        self._random_bytes = random_bytes
        self._index = 0
        self._latest = -math.inf  # the latest now seen, in seconds
        # nonce -> [expiry ms, highest nc accepted or _USED_WITHOUT_QOP, proof of that use or None], in
        # the order first consumed (nearly the order of expiry: nonces are used soon after issue).
        self._records: OrderedDict[str, list[Any]] = OrderedDict()
        # The latest expiry (ms) among records evicted for room: a nonce expiring no later than this,
        # and without a record, may have been used already.
        self._evicted_until: int | None = None

    # -- time ---------------------------------------------------------------------------------------------
    def _now_ms(self, now: float) -> float:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number of seconds, not {now!r}")
        if now > self._latest:
            self._latest = now
        return self._latest * 1000.0

    # -- nonces -------------------------------------------------------------------------------------------
    def issue(self, now: float) -> str:
        """A fresh nonce, good until ``now + expire``: URL-safe base64 without padding, so it needs no
        escaping in a quoted-string and survives any transport."""
        expiry_ms = round(self._now_ms(now)) + self._expire_ms
        if not -(2**63) <= expiry_ms < 2**63:
            raise ValueError(f"now out of range for a nonce: {now!r}")
        rand = self._random_bytes(_RANDOM_LENGTH)
        if not isinstance(rand, bytes) or len(rand) != _RANDOM_LENGTH:
            raise ValueError(f"random_bytes({_RANDOM_LENGTH}) must return {_RANDOM_LENGTH} bytes")
        self._index = (self._index + 1) % 2**64
        signed = _SIGNED.pack(expiry_ms, self._index, rand)
        raw = signed + self._mac(signed)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def _mac(self, signed: bytes) -> bytes:
        return hmac.new(self._secret, signed, hashlib.sha256).digest()[:_MAC_LENGTH]

    def _expiry_ms(self, nonce: str) -> int | None:
        """The expiry signed into ``nonce``, or None when we did not sign it.

        The length and alphabet are checked before anything is decoded, so a hostile value (megabytes,
        non-ASCII, base64 padding or whitespace that a lenient decoder would skip) costs one comparison.
        The text must also be the canonical encoding of its bytes: base64's last character has spare
        bits, and without this check four spellings of one nonce would get four replay records.
        """
        if type(nonce) is not str or len(nonce) != NONCE_LENGTH or not _NONCE_RE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce + "==")
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != nonce.encode("ascii"):
            return None
        signed, mac = raw[: _SIGNED.size], raw[_SIGNED.size :]
        if not hmac.compare_digest(mac, self._mac(signed)):
            return None
        expiry_ms: int = _SIGNED.unpack(signed)[0]
        return expiry_ms

    def verify(self, nonce: str, now: float) -> NonceState:
        """Whether ``nonce`` is ours and unexpired: MAC and expiry only, no table.

        Meant to run before the subscriber store is asked, so that a forged or stale nonce costs nothing
        more. A nonce is good strictly before its expiry instant: issued at ``t``, it is VALID up to
        ``t + expire`` exclusive.
        """
        expiry_ms = self._expiry_ms(nonce)
        if expiry_ms is None:
            return NonceState.INVALID
        if self._now_ms(now) >= expiry_ms:
            return NonceState.STALE
        return NonceState.VALID

    def consume(self, nonce: str, nc: int | None, now: float, *, resend_proof: str | None = None) -> bool:
        """Record one use of ``nonce``; False when that use is a replay (answer with a stale challenge).

        Call it only after the response matched: a forger who cannot compute responses must not be able
        to use up nonces that real clients hold. Without qop (``nc`` None) a nonce is good for one
        request; with qop each request must count higher than any accepted before (RFC 2617 §3.2.2).
        A nonce that is not ours or has expired is refused here too, whatever ``verify`` said earlier:
        time may have passed while the store was asked.

        Retransmissions repeat the count. Those of requests with a server transaction never get here;
        a REGISTER is answered without one, so its caller passes ``resend_proof`` (what identifies the
        request: response, Call-ID, CSeq): the same nonce and count with the same proof as the last
        accepted use is that request again -- harmless, since the registrar answers a repeated Call-ID
        and CSeq with the stored bindings -- and is accepted; anything else reusing them is a replay.
        """
        if self.reuse:
            return True
        if nc is not None and nc < 0:
            return False
        expiry_ms = self._expiry_ms(nonce)
        if expiry_ms is None:
            return False
        now_ms = self._now_ms(now)
        if now_ms >= expiry_ms:
            return False
        self._prune(now_ms)
        record = self._records.get(nonce)
        if record is not None:
            if resend_proof is not None and resend_proof == record[2] and \
                    record[1] == (_USED_WITHOUT_QOP if nc is None else nc):
                return True  # the last accepted request, retransmitted
            if nc is None or record[1] == _USED_WITHOUT_QOP or nc <= record[1]:
                return False
            record[1] = nc
            record[2] = resend_proof
            return True
        if self._evicted_until is not None and expiry_ms <= self._evicted_until:
            return False  # its record may have been evicted: it may have been used
        if len(self._records) >= self.max_tracked:
            _, (evicted_expiry, _, _) = self._records.popitem(last=False)
            if self._evicted_until is None or evicted_expiry > self._evicted_until:
                self._evicted_until = evicted_expiry
        self._records[nonce] = [expiry_ms, _USED_WITHOUT_QOP if nc is None else nc, resend_proof]
        return True

    def _prune(self, now_ms: float) -> None:
        """Drop expired records from the front. A record behind an unexpired one waits its turn; the
        bound holds regardless, and the order is nearly that of expiry."""
        records = self._records
        while records:
            expiry_ms = next(iter(records.values()))[0]
            if now_ms < expiry_ms:
                break
            records.popitem(last=False)

    @property
    def tracked(self) -> int:
        """Replay records still held for unexpired nonces (as of the latest ``now`` seen)."""
        if self._latest != -math.inf:
            self._prune(self._latest * 1000.0)
        return len(self._records)
