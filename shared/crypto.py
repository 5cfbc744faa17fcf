"""Ed25519 keys and signatures: the one verifier the whole system uses.

Verification is libsodium's (PyNaCl): measured about twice as fast as the ``cryptography`` package
on this hardware (docs/BENCHMARKS.md), and it refuses what must be refused — non-canonical point
encodings and small-order public keys, for which ``cryptography`` accepts a trivial signature (the
identity key with R = identity, S = 0 verifies any message there).

Every signature is domain-separated: the signed message is ``DOMAIN || purpose || 0 || ledger || 0
|| payload``, so a signature made for one ledger or one purpose is never valid for another.
"""
from __future__ import annotations

import functools
import hashlib
import os

from nacl.bindings import (
    crypto_core_ed25519_is_valid_point,
    crypto_sign,
    crypto_sign_open,
    crypto_sign_seed_keypair,
)
from nacl.exceptions import BadSignatureError, CryptoError

KEY_BYTES = 32
SIGNATURE_BYTES = 64
DOMAIN = b"cbdc/v1/"

PURPOSE_TX = b"tx"            # a spend: signed by the owners of the inputs
PURPOSE_REQUEST = b"request"  # an authenticated HTTP request (bank -> central bank, wallet -> bank)
PURPOSE_NOTICE = b"notice"    # a settlement notice signed by the central bank


def signing_message(purpose: bytes, ledger: str, payload: bytes) -> bytes:
    return DOMAIN + purpose + b"\x00" + ledger.encode("ascii") + b"\x00" + payload


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class PrivateKey:
    """An Ed25519 signing key. Only keystores and services' own key files hold one."""

    __slots__ = ("_seed", "_secret", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != KEY_BYTES:
            raise ValueError("an Ed25519 seed is 32 bytes")
        public, secret = crypto_sign_seed_keypair(seed)
        self._seed = seed
        self._secret = secret
        self.public_key: bytes = public

    @classmethod
    def generate(cls) -> "PrivateKey":
        return cls(os.urandom(KEY_BYTES))

    @property
    def seed(self) -> bytes:
        return self._seed

    def sign(self, purpose: bytes, ledger: str, payload: bytes) -> bytes:
        return crypto_sign(signing_message(purpose, ledger, payload), self._secret)[:SIGNATURE_BYTES]

    def __repr__(self) -> str:  # never print key material
        return f"PrivateKey(public={self.public_key.hex()[:16]}…)"


def verify(public_key: bytes, signature: bytes, purpose: bytes, ledger: str, payload: bytes) -> bool:
    """True if ``signature`` is valid for the message; False for any defect, never raises."""
    if len(public_key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(signature + signing_message(purpose, ledger, payload), public_key)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


def is_valid_public_key(public_key: bytes) -> bool:
    """A canonical encoding of a point on the curve, in the prime-order subgroup, not of small order."""
    if type(public_key) is not bytes or len(public_key) != KEY_BYTES:
        return False
    return _is_valid_point(public_key)


@functools.lru_cache(maxsize=200_000)
def _is_valid_point(public_key: bytes) -> bool:
    # cached: the check costs a scalar multiplication, and the keys a ledger sees repeat
    return bool(crypto_core_ed25519_is_valid_point(public_key))
