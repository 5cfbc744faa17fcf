"""A typed client for the central bank: every call is a signed request (shared.signing).

Used by tests, and later by the commercial banks and the operator CLI::

    async with CentralBankClient("http://127.0.0.1:8470", key, "bank:bank-a") as cb:
        notice = await cb.settle("bank-a:42", "bank-a", "bank-b", 2500)

An error answer raises ``APIError`` with the problem's status and stable ``code``.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import aiohttp
import orjson

from shared.crypto import PrivateKey
from shared.signing import sign_request
from shared.tx import SignedTx, signed_to_json


class APIError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('code')}: {problem.get('detail')}")
        self.status = status
        self.code = problem.get("code")
        self.problem = problem


class CentralBankClient:
    def __init__(self, base_url: str, key: PrivateKey | None, key_id: str | None, *,
                 timeout_seconds: float = 10.0, clock: Callable[[], float] = time.time,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.key_id = key_id
        self.clock = clock
        self._own_session = session is None
        self.session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds))

    async def __aenter__(self) -> "CentralBankClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session:
            await self.session.close()

    def signed_headers(self, method: str, path_qs: str, body: bytes, *, nonce: str | None = None,
                       now: int | None = None) -> dict[str, str]:
        if self.key is None or self.key_id is None:
            return {}
        now = int(self.clock()) if now is None else now
        return sign_request(self.key, self.key_id, method, path_qs, body, now=now, nonce=nonce)

    async def raw(self, method: str, path_qs: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Send exactly these bytes with these headers (signed ones if ``headers`` is None)."""
        if headers is None:
            headers = self.signed_headers(method, path_qs, body)
        if body:
            headers = {**headers, "Content-Type": "application/json"}
        async with self.session.request(method, self.base_url + path_qs, data=body or None,
                                        headers=headers) as response:
            data = await response.read()
            try:
                return response.status, orjson.loads(data) if data else None
            except orjson.JSONDecodeError:
                return response.status, data.decode("utf-8", "replace")

    async def call(self, method: str, path_qs: str, payload: Any = None) -> Any:
        body = b"" if payload is None else orjson.dumps(payload)
        status, data = await self.raw(method, path_qs, body)
        if status >= 400:
            raise APIError(status, data if isinstance(data, dict) else {"detail": str(data)})
        return data

    # -- the bank register (operators) -----------------------------------------------------------

    async def register_bank(self, bank_id: str, name: str, public_key: bytes, callback_url: str) -> dict:
        return await self.call("POST", "/v1/banks", {"bank_id": bank_id, "name": name,
                                                     "public_key": public_key.hex(), "callback_url": callback_url})

    async def list_banks(self, after: str = "", limit: int = 100) -> list[dict]:
        return (await self.call("GET", f"/v1/banks?after={after}&limit={limit}"))["banks"]

    async def bank(self, bank_id: str) -> dict:
        return await self.call("GET", f"/v1/banks/{bank_id}")

    async def suspend_bank(self, bank_id: str) -> dict:
        return await self.call("POST", f"/v1/banks/{bank_id}/suspend")

    async def resume_bank(self, bank_id: str) -> dict:
        return await self.call("POST", f"/v1/banks/{bank_id}/resume")

    async def balances(self, bank_id: str) -> dict:
        return await self.call("GET", f"/v1/banks/{bank_id}/balances")

    async def outputs(self, bank_id: str, account: str = "holdings", limit: int = 100) -> list[dict]:
        return (await self.call("GET", f"/v1/banks/{bank_id}/outputs?account={account}&limit={limit}"))["outputs"]

    async def history(self, bank_id: str, after_seq: int = 0, limit: int = 100) -> list[dict]:
        path = f"/v1/banks/{bank_id}/history?after_seq={after_seq}&limit={limit}"
        return (await self.call("GET", path))["transactions"]

    # -- issuance (operators) --------------------------------------------------------------------

    async def propose_issuance(self, bank_id: str, amount: int, memo: str = "") -> dict:
        return await self.call("POST", "/v1/issuance", {"bank_id": bank_id, "amount": amount, "memo": memo})

    async def proposal(self, proposal_id: str) -> dict:
        return await self.call("GET", f"/v1/issuance/{proposal_id}")

    async def approve_issuance(self, proposal_id: str) -> dict:
        return await self.call("POST", f"/v1/issuance/{proposal_id}/approve")

    async def reject_issuance(self, proposal_id: str) -> dict:
        return await self.call("POST", f"/v1/issuance/{proposal_id}/reject")

    # -- transactions, settlement, queries -------------------------------------------------------

    async def submit(self, stx: SignedTx) -> dict:
        return await self.call("POST", "/v1/transactions", signed_to_json(stx))

    async def transaction(self, tx_id: bytes) -> dict:
        return await self.call("GET", f"/v1/transactions/{tx_id.hex()}")

    async def settle(self, payment_id: str, payer_bank: str, payee_bank: str, amount: int,
                     reference: bytes | None = None) -> dict:
        body = {"payment_id": payment_id, "payer_bank": payer_bank, "payee_bank": payee_bank, "amount": amount}
        if reference is not None:
            body["reference"] = reference.hex()
        return await self.call("POST", "/v1/settlements", body)

    async def settle_batch(self, payments: list[dict]) -> list[dict]:
        """Netted: ``payments`` as the request bodies of settle(); one outcome each, in order."""
        return (await self.call("POST", "/v1/settlements/batch", {"payments": payments}))["payments"]

    async def directory_entry(self, bank_id: str) -> dict:
        """Another bank's callback URL and status (any registered bank may ask)."""
        return await self.call("GET", f"/v1/directory/{bank_id}")

    async def payment(self, payment_id: str) -> dict:
        return await self.call("GET", f"/v1/payments/{payment_id}")

    async def supply(self) -> dict:
        return await self.call("GET", "/v1/supply")
