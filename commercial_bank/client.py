"""A typed client for a commercial bank, used by the wallet, other services, tests and locust.

Wallet-signed requests carry shared.signing headers with key id ``wallet:<hex key>`` in the bank's
signing domain (ledger = bank id). Spends are signed transactions and need no request signature::

    async with BankClient("http://127.0.0.1:8480", "bank-a", wallet_key) as bank:
        await bank.register("Alice", "basic", deposit_account=True)
        await bank.credit_deposit(10_000, "salary-1")
        await bank.fund("fund-1", 5_000)
        await bank.transfer(build_spend(wallet_key, "bank-a", "transfer", coins, to=bob, amount=100))

An error answer raises ``APIError`` (central_bank.client) with the problem's status and ``code``.
"""
from __future__ import annotations

import time
from typing import Callable

import aiohttp
import orjson

from central_bank.client import APIError, CentralBankClient
from shared.crypto import PrivateKey
from shared.signing import sign_request
from shared.tx import Input, Output, Payee, SignedTx, Tx, signed_to_json
from shared.validation import sign

__all__ = ["APIError", "BankClient", "build_spend", "coins_of"]


class BankClient(CentralBankClient):
    def __init__(self, base_url: str, bank_id: str, key: PrivateKey | None, *, timeout_seconds: float = 10.0,
                 clock: Callable[[], float] = time.time, session: aiohttp.ClientSession | None = None) -> None:
        key_id = f"wallet:{key.public_key.hex()}" if key is not None else None
        super().__init__(base_url, key, key_id, timeout_seconds=timeout_seconds, clock=clock, session=session)
        self.bank_id = bank_id

    def signed_headers(self, method: str, path_qs: str, body: bytes, *, nonce: str | None = None,
                       now: int | None = None) -> dict[str, str]:
        if self.key is None or self.key_id is None:
            return {}
        now = int(self.clock()) if now is None else now
        return sign_request(self.key, self.key_id, method, path_qs, body, now=now, nonce=nonce, ledger=self.bank_id)

    @property
    def me(self) -> str:
        assert self.key is not None
        return self.key.public_key.hex()

    # -- the wallet's own record ----------------------------------------------------------------

    async def register(self, name: str, kyc_tier: str, *, deposit_account: bool = False) -> dict:
        return await self.call("POST", "/v1/wallets", {"name": name, "kyc_tier": kyc_tier,
                                                       "deposit_account": deposit_account})

    async def wallet(self) -> dict:
        return await self.call("GET", f"/v1/wallets/{self.me}")

    async def balance(self) -> int:
        return (await self.wallet())["balance"]

    async def unspent(self, limit: int = 500) -> list[dict]:
        return (await self.call("GET", f"/v1/wallets/{self.me}/outputs?limit={limit}"))["outputs"]

    async def history(self, after_seq: int = 0, limit: int = 100) -> list[dict]:
        return (await self.call("GET", f"/v1/wallets/{self.me}/history?after_seq={after_seq}&limit={limit}"))["entries"]

    async def receipt(self, tx_id: str) -> dict:
        return await self.call("GET", f"/v1/wallets/{self.me}/receipts/{tx_id}")

    async def credit_deposit(self, amount: int, reference: str) -> dict:
        return await self.call("POST", f"/v1/wallets/{self.me}/deposit/credit",
                               {"amount": amount, "reference": reference})

    # -- funding and defunding ----------------------------------------------------------------------

    async def fund(self, funding_id: str, amount: int) -> dict:
        return await self.call("POST", "/v1/fundings", {"funding_id": funding_id, "amount": amount})

    async def funding(self, funding_id: str) -> dict:
        return await self.call("GET", f"/v1/fundings/{funding_id}")

    async def defund(self, burn: SignedTx) -> dict:
        return await self.call("POST", "/v1/defunds", signed_to_json(burn))

    async def defund_status(self, defund_id: str) -> dict:
        return await self.call("GET", f"/v1/defunds/{defund_id}")

    # -- spends ---------------------------------------------------------------------------------

    async def transfer(self, stx: SignedTx) -> dict:
        return await self.call("POST", "/v1/transfers", signed_to_json(stx))

    async def transfer_batch(self, stxs: list[SignedTx]) -> list[dict]:
        """POST /v1/transfers/batch: one result per transaction, in order (status created, exists or refused)."""
        answer = await self.call("POST", "/v1/transfers/batch", {"transactions": [signed_to_json(t) for t in stxs]})
        return answer["results"]

    async def pay(self, stx: SignedTx) -> dict:
        return await self.call("POST", "/v1/payments", signed_to_json(stx))

    async def submit(self, stx_json: bytes) -> dict:
        """wallet.payments.BankAPI: post a signed transfer or outbound's exact JSON bytes (a retry re-sends
        the same bytes, so the bank answers ``exists``); the answer's ``status`` is created or exists."""
        kind = orjson.loads(stx_json).get("kind")
        path = {"transfer": "/v1/transfers", "outbound": "/v1/payments", "burn": "/v1/defunds"}.get(kind)
        if path is None:
            raise ValueError(f"a wallet submits transfer, outbound or burn transactions, not {kind!r}")
        status, data = await self.raw("POST", path, stx_json)
        if status >= 400:
            raise APIError(status, data if isinstance(data, dict) else {"detail": str(data)})
        if "status" not in data:   # a defund answers its state
            data = {**data, "status": "created" if status == 201 else "exists"}
        return data

    async def payment(self, payment_id: str) -> dict:
        return await self.call("GET", f"/v1/payments/{payment_id}")

    async def inbound(self, notice: dict, outbound: dict) -> dict:
        return await self.call("POST", "/v1/inbound", {"notice": notice, "outbound": outbound})


# -- building wallet-signed spends (pure) ---------------------------------------------------------

def coins_of(outputs: list[dict]) -> list[Input]:
    """The bank's /outputs answer as inputs to spend."""
    return [Input(bytes.fromhex(o["tx_id"]), o["index"], bytes.fromhex(o["owner"]), o["amount"]) for o in outputs]


def build_spend(key: PrivateKey, bank_id: str, kind: str, coins: list[Input], *, amount: int,
                to: bytes | None = None, payee: Payee | None = None, reference: str = "") -> SignedTx:
    """Spend the largest of ``coins`` (owned by ``key``) to cover ``amount``: a transfer to ``to``,
    an outbound to ``payee`` (whose amount is ``amount``) or a burn of ``amount``; change comes back."""
    chosen, total = [], 0
    for coin in sorted(coins, key=lambda c: -c.amount):
        if total >= amount:
            break
        chosen.append(coin)
        total += coin.amount
    if total < amount:
        raise ValueError(f"only {total} available for {amount}")
    outputs = [Output(to, amount)] if kind == "transfer" and to is not None else []
    if total > amount:
        outputs.append(Output(key.public_key, total - amount))
    body = Tx(bank_id, kind, tuple(chosen), tuple(outputs), payee=payee, reference=reference)
    return sign(body, key)
