"""Signed HTTP requests: every bank -> central-bank call (and every operator call) carries

    CBDC-Key-Id     who signs: "operator:<id>", "bank:<bank id>" or "wallet:<hex public key>"
    CBDC-Timestamp  unix seconds, decimal
    CBDC-Nonce      32..64 lower-case hex characters, random per request
    CBDC-Signature  hex Ed25519 signature (crypto.PURPOSE_REQUEST, ledger "cb" for requests to the
                    central bank, the bank's id for a wallet's requests to its bank) over

        method + "\\n" + path_qs + "\\n" + sha256(body).hex() + "\\n" + timestamp + "\\n" + nonce

``verify_request`` is pure (clock passed in): it checks, in order, that the headers are present
and well-formed (signature_missing / signature_invalid), that the key id is known (unknown_key),
that the timestamp is within ``window_seconds`` of now (timestamp_stale) and that the signature
verifies (signature_invalid). Only then does the caller record the nonce in a ``NonceStore``
(nonce_reused if seen before), so a forger cannot burn another party's nonces. A nonce need only
be remembered for the window: an older timestamp is refused anyway.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

from shared import crypto
from shared.errors import Unauthorized
from shared.tx import LEDGER_CB

KEY_ID = "CBDC-Key-Id"
TIMESTAMP = "CBDC-Timestamp"
NONCE = "CBDC-Nonce"
SIGNATURE = "CBDC-Signature"
HEADERS = (KEY_ID, TIMESTAMP, NONCE, SIGNATURE)
KEY_ID_RE = re.compile(r"(operator|bank):[a-z0-9][a-z0-9-]{0,62}|wallet:[0-9a-f]{64}")
NONCE_RE = re.compile(r"[0-9a-f]{32,64}")
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
SIGNATURE_RE = re.compile(r"[0-9a-f]{128}")


@dataclass(frozen=True, slots=True)
class RequestSignature:
    key_id: str
    timestamp: int
    nonce: str
    signature: bytes


def request_payload(method: str, path_qs: str, body: bytes, timestamp: int, nonce: str) -> bytes:
    digest = crypto.sha256(body).hex()
    return f"{method.upper()}\n{path_qs}\n{digest}\n{timestamp}\n{nonce}".encode("utf-8")


def sign_request(key: crypto.PrivateKey, key_id: str, method: str, path_qs: str, body: bytes, *,
                 now: int, nonce: str | None = None, ledger: str = LEDGER_CB) -> dict[str, str]:
    """The four headers that authenticate one request to ``ledger``'s service."""
    nonce = nonce or secrets.token_hex(16)
    signature = key.sign(crypto.PURPOSE_REQUEST, ledger, request_payload(method, path_qs, body, now, nonce))
    return {KEY_ID: key_id, TIMESTAMP: str(now), NONCE: nonce, SIGNATURE: signature.hex()}


def parse_signature(headers: Mapping[str, str]) -> RequestSignature:
    """The signature headers, or Unauthorized(signature_missing / signature_invalid)."""
    values = [headers.get(name) for name in HEADERS]
    if any(v is None for v in values):
        raise Unauthorized("this request must be signed (CBDC-Key-Id, CBDC-Timestamp, CBDC-Nonce, "
                           "CBDC-Signature)", code="signature_missing")
    key_id, timestamp, nonce, signature = values
    for value, pattern in ((key_id, KEY_ID_RE), (timestamp, TIMESTAMP_RE), (nonce, NONCE_RE),
                           (signature, SIGNATURE_RE)):
        if not pattern.fullmatch(value):  # type: ignore[arg-type]
            raise Unauthorized("malformed signature headers", code="signature_invalid")
    return RequestSignature(key_id, int(timestamp), nonce, bytes.fromhex(signature))  # type: ignore[arg-type]


def verify_request(sig: RequestSignature, method: str, path_qs: str, body: bytes, *,
                   key_for: Callable[[str], bytes | None], now: int, window_seconds: int,
                   ledger: str = LEDGER_CB) -> bytes:
    """Check one request's signature (pure); return the signer's public key."""
    public_key = key_for(sig.key_id)
    if public_key is None:
        raise Unauthorized("unknown signing key", code="unknown_key")
    if abs(now - sig.timestamp) > window_seconds:
        raise Unauthorized(f"the timestamp is more than {window_seconds} s from the server's clock",
                           code="timestamp_stale")
    payload = request_payload(method, path_qs, body, sig.timestamp, sig.nonce)
    if not crypto.verify(public_key, sig.signature, crypto.PURPOSE_REQUEST, ledger, payload):
        raise Unauthorized("the request signature does not verify", code="signature_invalid")
    return public_key


class NonceStore(Protocol):
    async def remember(self, key_id: str, nonce: str, timestamp: int) -> bool:
        """Record the nonce; False if this key id used it before (a replay)."""


class SQLNonceStore:
    """A NonceStore on PostgreSQL, given its service's two statements (the table is the service's):
    a replay is refused across worker processes and restarts."""

    def __init__(self, pool, remember_sql: str, expire_sql: str) -> None:
        self.pool = pool
        self.remember_sql = remember_sql
        self.expire_sql = expire_sql

    async def remember(self, key_id: str, nonce: str, timestamp: int) -> bool:
        return await self.pool.fetchval(self.remember_sql, key_id, nonce, timestamp) is not None

    async def expire(self, before: int) -> int:
        return int((await self.pool.execute(self.expire_sql, before)).split()[-1])


async def expire_nonces(nonces: SQLNonceStore, window_seconds: int, interval_seconds: float, clock) -> None:
    """Forget nonces older than the replay window, every ``interval_seconds``, until cancelled."""
    import asyncio
    import logging

    import asyncpg
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await nonces.expire(int(clock()) - window_seconds - 1)
        except (asyncpg.PostgresError, OSError) as exc:
            logging.getLogger(__name__).warning("nonce expiry failed: %s", type(exc).__name__)


class MemoryNonceStore:
    """A nonce store for one process (a bank's wallets, tests); bounded, forgets past the window."""

    def __init__(self, window_seconds: int, entries_max: int = 1_000_000) -> None:
        self.window_seconds = window_seconds
        self.entries_max = entries_max
        self._seen: dict[tuple[str, str], int] = {}

    async def remember(self, key_id: str, nonce: str, timestamp: int) -> bool:
        if len(self._seen) >= self.entries_max:
            newest = max(self._seen.values())
            self._seen = {k: t for k, t in self._seen.items() if t >= newest - 2 * self.window_seconds}
            if len(self._seen) >= self.entries_max:
                return False  # refuse rather than forget a nonce still inside the window
        if (key_id, nonce) in self._seen:
            return False
        self._seen[(key_id, nonce)] = timestamp
        return True


async def check_nonce(store: NonceStore, sig: RequestSignature) -> None:
    if not await store.remember(sig.key_id, sig.nonce, sig.timestamp):
        raise Unauthorized("this nonce was already used", code="nonce_reused")
