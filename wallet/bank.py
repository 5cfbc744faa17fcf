"""The wallet's HTTP layer: commercial_bank.client.BankClient's routes, signed through the keystore.

``WalletBank`` is a ``BankClient`` constructed without a key: it overrides ``signed_headers`` to ask
the keystore (``Keystore.sign_request_headers``) for the four shared.signing headers, so the private
key never leaves wallet/keystore.py. Spends (transfers, outbounds, burns) are signed transactions
and go through ``submit`` (wallet.payments.BankAPI) with their journaled bytes.

    bank = WalletBank(url, keystore, account)
    await bank.balance(); await bank.coins(); await bank.submit(entry.wire)

Errors: an error answer raises ``APIError`` (``.status``, ``.code``); a transport failure raises
``aiohttp.ClientError`` or ``asyncio.TimeoutError``.
"""
from __future__ import annotations

import time
from typing import Callable

import aiohttp

from commercial_bank.client import APIError, BankClient
from wallet.coins import Coin
from wallet.keystore import Account, Keystore

__all__ = ["APIError", "WalletBank", "TIMEOUT_SECONDS", "OUTPUT_PAGES_MAX"]

TIMEOUT_SECONDS = 10.0
OUTPUT_PAGE_SIZE = 500
OUTPUT_PAGES_MAX = 20          # at most 10,000 coins read per call
HISTORY_PAGE_SIZE_MAX = 500


class WalletBank(BankClient):
    """A bank client for one wallet account, signing requests through the keystore."""

    def __init__(self, base_url: str, keystore: Keystore, account: Account, *,
                 timeout_seconds: float = TIMEOUT_SECONDS, clock: Callable[[], float] = time.time,
                 session: aiohttp.ClientSession | None = None) -> None:
        super().__init__(base_url, account.bank, None, timeout_seconds=timeout_seconds, clock=clock, session=session)
        self.keystore = keystore
        self.account = account
        self.key_id = f"wallet:{account.public_key.hex()}"

    def signed_headers(self, method: str, path_qs: str, body: bytes, *, nonce: str | None = None,
                       now: int | None = None) -> dict[str, str]:
        now = int(self.clock()) if now is None else now
        return self.keystore.sign_request_headers(self.account, method, path_qs, body, now=now, nonce=nonce)

    @property
    def me(self) -> str:
        return self.account.public_key.hex()

    async def coins(self) -> list[Coin]:
        """Every unspent output of this account at the bank (paged, bounded)."""
        coins: list[Coin] = []
        after = ""
        for _ in range(OUTPUT_PAGES_MAX):
            query = f"?limit={OUTPUT_PAGE_SIZE}" + (f"&after={after}" if after else "")
            page = (await self.call("GET", f"/v1/wallets/{self.me}/outputs{query}"))["outputs"]
            coins.extend(Coin(bytes.fromhex(o["tx_id"]), o["index"], o["amount"]) for o in page
                         if o["owner"] == self.me)
            if len(page) < OUTPUT_PAGE_SIZE:
                return coins
            after = f"{page[-1]['tx_id']}:{page[-1]['index']}"
        return coins

    async def history_page(self, after_seq: int = 0, limit: int = 20) -> list[dict]:
        return await self.history(after_seq, max(1, min(limit, HISTORY_PAGE_SIZE_MAX)))

    async def registered(self) -> dict | None:
        """The bank's record of this wallet, or None if the key is not registered there."""
        try:
            return await self.wallet()
        except APIError as exc:
            if exc.code == "wallet_not_found":
                return None
            raise
