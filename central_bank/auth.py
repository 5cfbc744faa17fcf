"""Who is calling: every request except health, metrics and the OpenAPI document is signed
(shared.signing) by an operator key from configuration or by a registered bank's key.

Order: headers -> key -> timestamp window -> signature -> nonce (PostgreSQL) -> bank status. A
suspended bank is refused (403 bank_suspended) only after it proved who it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import asyncpg
from aiohttp import web

from central_bank import store
from shared.errors import Forbidden
from shared.signing import NonceStore, RequestSignature, check_nonce, parse_signature, verify_request

OPERATOR, BANK = "operator", "bank"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str                      # OPERATOR or BANK
    id: str                        # operator id or bank id
    signature: RequestSignature
    bank: store.Bank | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind == OPERATOR


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, operators: dict[str, bytes], nonces: NonceStore,
                 clock: Callable[[], float], window_seconds: int) -> None:
        self.pool = pool
        self.operators = operators
        self.nonces = nonces
        self.clock = clock
        self.window_seconds = window_seconds

    async def authenticate(self, request: web.Request, body: bytes) -> Principal:
        sig = parse_signature(request.headers)
        kind, _, ident = sig.key_id.partition(":")
        bank = None
        if kind == OPERATOR:
            key = self.operators.get(ident)
        else:
            bank = await store.get_bank(self.pool, ident)
            key = bank.public_key if bank is not None else None
        verify_request(sig, request.method, request.raw_path, body, key_for=lambda _: key,
                       now=int(self.clock()), window_seconds=self.window_seconds)
        await check_nonce(self.nonces, sig)
        if bank is not None and not bank.active:
            raise Forbidden(f"bank {bank.bank_id!r} is suspended", code="bank_suspended")
        return Principal(kind, ident, sig, bank)


def require_operator(principal: Principal) -> str:
    if not principal.is_operator:
        raise Forbidden("only central-bank operators may do this", code="not_permitted")
    return principal.id


def require_bank(principal: Principal) -> store.Bank:
    if principal.bank is None:
        raise Forbidden("only registered banks may do this", code="not_permitted")
    return principal.bank


def require_self_or_operator(principal: Principal, bank_id: str) -> None:
    if not principal.is_operator and principal.id != bank_id:
        raise Forbidden("a bank may read only its own accounts", code="not_permitted")
