"""Wallet-signed requests: reads of private data (balance, history, limits, payment status) and
the wallet's own instructions (register, fund, demo credit) are signed by the wallet's key with
shared.signing, key id ``wallet:<hex public key>``, in the bank's signing domain (ledger = bank id),
so a request signed for one bank is void at another. The key id names the key itself: no lookup
is needed to verify, and registration proves possession of the key being registered.

Order: headers -> key -> timestamp window -> signature -> nonce (PostgreSQL, so a replay is refused
by every worker process and after a restart).
"""
from __future__ import annotations

from typing import Callable

from aiohttp import web

from shared import crypto
from shared.errors import Forbidden, Unauthorized
from shared.signing import NonceStore, check_nonce, parse_signature, verify_request

WALLET = "wallet"


class WalletAuth:
    def __init__(self, bank_id: str, nonces: NonceStore, clock: Callable[[], float], window_seconds: int) -> None:
        self.bank_id = bank_id
        self.nonces = nonces
        self.clock = clock
        self.window_seconds = window_seconds

    async def authenticate(self, request: web.Request, body: bytes) -> bytes:
        """The signing wallet's public key."""
        sig = parse_signature(request.headers)
        kind, _, ident = sig.key_id.partition(":")
        key = bytes.fromhex(ident) if kind == WALLET else b""
        if not crypto.is_valid_public_key(key):
            raise Unauthorized("a bank's routes are signed by wallet keys (wallet:<hex key>)", code="unknown_key")
        verify_request(sig, request.method, request.raw_path, body, key_for=lambda _: key,
                       now=int(self.clock()), window_seconds=self.window_seconds, ledger=self.bank_id)
        await check_nonce(self.nonces, sig)
        return key


def require_self(signer: bytes, path_key: str) -> bytes:
    if signer.hex() != path_key:
        raise Forbidden("a wallet may read and instruct only for itself", code="not_permitted")
    return signer
