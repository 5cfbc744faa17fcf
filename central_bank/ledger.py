"""The central bank's domain steps: the bank register, maker-checker issuance, bank-signed tier-1
transactions and the queries. Settlement is in central_bank/settlement.py.

Tier-1 owners: a bank's holdings are owned by its registered public key; its escrow by
store.escrow_owner(bank_id), a non-key owner the ledger rules map to the bank's key, so only that
bank can fund or defund it. The central bank's key creates value (issue) and signs settlements.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
from typing import Any, Callable, Sequence

import asyncpg

from central_bank import store
from central_bank.auth import Principal, require_self_or_operator
from central_bank.metrics import CentralBankMetrics
from central_bank.settings import Settings
from shared import crypto
from shared.amounts import is_amount
from shared.batcher import MicroBatcher
from shared.engine import (CREATED, EXISTS, INPUT_ALREADY_SPENT, INPUT_CONTENDED, RETRYABLE, ApplyResult,
                           UTXOEngine)
from shared.errors import Conflict, Forbidden, NotFound, Unavailable, Unprocessable
from shared.failpoints import failpoint
from shared.fields import invalid
from shared.tx import (LEDGER_CB, LEDGER_ID_RE, Output, SignedTx, Tx, decode_body, decode_witnesses,
                       signed_to_json)
from shared.validation import LedgerRules, ValidTx, sign_valid, validate

log = logging.getLogger(__name__)
BANK_KINDS = ("redeem", "transfer", "fund", "defund")
NAME_RE = re.compile(r"[^\x00-\x1f]{1,100}")
URL_RE = re.compile(r"https?://[!-~]{1,2000}")
MEMO_BYTES_MAX = 200
PAGE_MAX = 500
FLUSH_RETRIES_MAX = 5


def history_entry(vtx: ValidTx, result: ApplyResult) -> tuple[bytes, int, list[bytes]]:
    """What store.record_history needs for a transaction created in the caller's transaction."""
    assert result.code == CREATED and result.seq is not None
    owners = {i.owner for i in vtx.body.inputs} | {o.owner for o in vtx.body.outputs}
    return vtx.tx_id, result.seq, sorted(owners)


class CentralBank:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, clock: Callable[[], float],
                 metrics: CentralBankMetrics) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock
        self.metrics = metrics
        self.key = settings.signing_key()
        self.engine = UTXOEngine(pool)
        self.batcher: MicroBatcher[ValidTx, ApplyResult] = MicroBatcher(
            self._flush, batch_max=settings.batch_max, wait_ms=settings.batch_wait_ms,
            queue_max=settings.batch_queue_max, flushers=settings.flushers, on_flush=metrics.observe_batch)

    def now(self) -> int:
        return int(self.clock())

    async def _flush(self, batch: Sequence[ValidTx]) -> list[ApplyResult]:
        """Apply a micro-batch and record each bank's history in one database transaction."""
        for attempt in range(FLUSH_RETRIES_MAX + 1):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    results = await self.engine.apply(batch, conn)
                    await store.record_history(conn, [history_entry(v, r) for v, r in zip(batch, results)
                                                      if r.code == CREATED])
                return results
            except RETRYABLE as exc:
                if attempt == FLUSH_RETRIES_MAX:
                    raise Unavailable("the ledger is busy; retry", code="ledger_busy") from exc
                log.warning("batch of %d retried after %s", len(batch), type(exc).__name__)
                await asyncio.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
        raise AssertionError("unreachable")

    def rules(self, owner_signers: dict[bytes, bytes]) -> LedgerRules:
        return LedgerRules(LEDGER_CB, mint_authority=self.key.public_key, owner_signers=owner_signers)

    # -- the bank register (operators only; the handlers check) --------------------------------

    async def register_bank(self, bank_id: str, name: str, public_key: str, callback_url: str) -> store.Bank:
        if not LEDGER_ID_RE.fullmatch(bank_id) or bank_id == LEDGER_CB:
            raise invalid("bank_id", "a bank id is 2-31 of a-z, 0-9 and '-', and not 'cb'", "bank_id_invalid")
        if not NAME_RE.fullmatch(name):
            raise invalid("name", "a name is 1-100 printable characters")
        if not URL_RE.fullmatch(callback_url):
            raise invalid("callback_url", "an http(s) URL of printable ASCII")
        key = bytes.fromhex(public_key) if re.fullmatch(r"[0-9a-f]{64}", public_key) else b""
        if not crypto.is_valid_public_key(key):
            raise invalid("public_key", "not a valid Ed25519 public key (64 hex)", "public_key_invalid")
        return await store.insert_bank(self.pool, bank_id, name, key, callback_url, self.now())

    async def set_bank_status(self, bank_id: str, status: str) -> store.Bank:
        bank = await store.set_bank_status(self.pool, bank_id, status, self.now())
        if bank is None:
            raise NotFound(f"no bank {bank_id!r}", code="bank_not_found")
        return bank

    async def bank(self, principal: Principal, bank_id: str) -> store.Bank:
        require_self_or_operator(principal, bank_id)
        bank = await store.get_bank(self.pool, bank_id)
        if bank is None:
            raise NotFound(f"no bank {bank_id!r}", code="bank_not_found")
        return bank

    # -- maker-checker issuance -------------------------------------------------------------

    async def propose(self, operator: str, bank_id: str, amount: int, memo: str) -> dict[str, Any]:
        if not is_amount(amount):
            raise invalid("amount", "a positive integer amount in minor units", "amount_invalid")
        if len(memo.encode("utf-8")) > MEMO_BYTES_MAX or "\x00" in memo:
            raise invalid("memo", f"at most {MEMO_BYTES_MAX} bytes, no NUL")
        bank = await store.get_bank(self.pool, bank_id)
        if bank is None:
            raise NotFound(f"no bank {bank_id!r}", code="bank_not_found")
        now = self.now()
        row = await store.insert_proposal(self.pool, secrets.token_hex(16), bank_id, amount, memo, operator,
                                          now, now + self.settings.proposal_ttl_seconds)
        return self.proposal_json(row)

    async def approve(self, operator: str, proposal_id: str) -> dict[str, Any]:
        now = self.now()
        async with self.pool.acquire() as conn, conn.transaction():
            proposal = await self._pending(conn, proposal_id, now)
            if proposal["proposed_by"] == operator:
                raise Forbidden("the operator who proposed an issuance cannot approve it",
                                code="approver_is_proposer")
            bank = await store.get_bank(conn, proposal["bank_id"])
            assert bank is not None  # a foreign key
            if not bank.active:
                raise Conflict(f"bank {bank.bank_id!r} is suspended", code="bank_suspended")
            await store.lock_supply(conn)  # concurrent approvals check the cap one at a time
            issued, redeemed = await store.supply(conn)
            if issued - redeemed + proposal["amount"] > self.settings.supply_cap:
                raise Conflict("this issuance would exceed the supply cap", code="supply_cap_exceeded")
            body = Tx(LEDGER_CB, "issue", outputs=(Output(bank.public_key, proposal["amount"]),),
                      reference=f"issue:{proposal_id}")
            vtx = sign_valid(body, self.key, self.rules({}), now)
            [result] = await self.engine.apply([vtx], conn)
            assert result.code == CREATED, f"a fresh issue was answered {result.code}"
            await store.record_history(conn, [history_entry(vtx, result)])
            row = await store.decide_proposal(conn, proposal_id, "approved", operator, now, vtx.tx_id)
        self.metrics.transactions.labels("issue", result.code).inc()
        return self.proposal_json(row)

    async def reject(self, operator: str, proposal_id: str) -> dict[str, Any]:
        now = self.now()
        async with self.pool.acquire() as conn, conn.transaction():
            await self._pending(conn, proposal_id, now)
            row = await store.decide_proposal(conn, proposal_id, "rejected", operator, now, None)
        return self.proposal_json(row)

    async def _pending(self, conn: asyncpg.Connection, proposal_id: str, now: int) -> asyncpg.Record:
        proposal = await store.lock_proposal(conn, proposal_id)
        if proposal is None:
            raise NotFound(f"no proposal {proposal_id!r}", code="proposal_not_found")
        if proposal["status"] != "pending":
            raise Conflict(f"the proposal is already {proposal['status']}", code="proposal_not_pending")
        if now > proposal["expires_at"]:
            raise Conflict("the proposal expired", code="proposal_expired")
        return proposal

    async def proposal(self, proposal_id: str) -> dict[str, Any]:
        row = await store.get_proposal(self.pool, proposal_id)
        if row is None:
            raise NotFound(f"no proposal {proposal_id!r}", code="proposal_not_found")
        return self.proposal_json(row)

    def proposal_json(self, row: asyncpg.Record) -> dict[str, Any]:
        status = row["status"]
        if status == "pending" and self.now() > row["expires_at"]:
            status = "expired"
        out = dict(row)
        out["status"] = status
        out["tx_id"] = row["tx_id"].hex() if row["tx_id"] else None
        return out

    # -- bank-signed tier-1 transactions ------------------------------------------------------

    async def submit(self, bank: store.Bank, stx: SignedTx) -> tuple[ApplyResult, ValidTx]:
        """Check that ``bank`` moves only its own value, validate, apply through the batcher."""
        await self._check_permitted(bank, stx.body)
        vtx = validate(stx, self.rules({bank.escrow_owner: bank.public_key}), self.now())
        result = await self.batcher.submit(vtx)
        if result.code == "created":
            failpoint("tier1.after_apply")
        self.metrics.transactions.labels(stx.body.kind, result.code).inc()
        if not result.accepted:
            raise _apply_error(result)
        return result, vtx

    async def _check_permitted(self, bank: store.Bank, tx: Tx) -> None:
        if tx.kind not in BANK_KINDS:
            raise Forbidden(f"a bank may submit only {', '.join(BANK_KINDS)}", code="not_permitted",
                            extra={"field": "kind"})
        holdings, escrow = bank.public_key, bank.escrow_owner
        spends = {"defund": {escrow}}.get(tx.kind, {holdings})
        creates = {"redeem": {holdings}, "fund": {holdings, escrow}, "defund": {holdings, escrow}}.get(tx.kind)
        for n, i in enumerate(tx.inputs):
            if i.owner not in spends:
                raise Forbidden(f"a {tx.kind} by {bank.bank_id} may spend only its own "
                                f"{'escrow' if tx.kind == 'defund' else 'holdings'}",
                                code="not_permitted", index=n, extra={"field": "inputs"})
        if creates is None:  # a transfer: every output goes to a registered, active bank's holdings
            payees = await store.banks_by_keys(self.pool, [o.owner for o in tx.outputs])
            for n, o in enumerate(tx.outputs):
                payee = payees.get(o.owner)
                if payee is None:
                    raise Unprocessable("a transfer pays registered banks' holdings only",
                                        code="owner_not_a_bank", index=n, extra={"field": "outputs"})
                if not payee.active and payee.bank_id != bank.bank_id:
                    raise Conflict(f"bank {payee.bank_id!r} is suspended", code="bank_suspended", index=n)
            return
        for n, o in enumerate(tx.outputs):
            if o.owner not in creates:
                raise Forbidden(f"a {tx.kind} may pay only the bank's own holdings or escrow",
                                code="not_permitted", index=n, extra={"field": "outputs"})

    # -- queries ------------------------------------------------------------------------------

    async def supply(self) -> dict[str, int]:
        issued, redeemed = await store.supply(self.pool)
        return {"issued": issued, "redeemed": redeemed, "outstanding": issued - redeemed,
                "cap": self.settings.supply_cap}

    async def balances(self, principal: Principal, bank_id: str) -> dict[str, Any]:
        bank = await self.bank(principal, bank_id)
        found = await store.balances(self.pool, [bank.public_key, bank.escrow_owner])
        holdings, escrow = found.get(bank.public_key, (0, 0)), found.get(bank.escrow_owner, (0, 0))
        return {"bank_id": bank_id, "holdings": holdings[0], "holdings_outputs": holdings[1],
                "escrow": escrow[0], "escrow_outputs": escrow[1]}

    async def outputs(self, principal: Principal, bank_id: str, account: str, after: tuple[bytes, int],
                      limit: int) -> list[dict[str, Any]]:
        bank = await self.bank(principal, bank_id)
        owner = bank.escrow_owner if account == "escrow" else bank.public_key
        rows = await self.engine.unspent(owner, limit=min(max(limit, 1), PAGE_MAX), after=after)
        return [{"tx_id": r["tx_id"].hex(), "index": r["idx"], "owner": r["owner"].hex(), "amount": r["amount"]}
                for r in rows]

    async def transaction(self, principal: Principal, tx_id: bytes) -> dict[str, Any]:
        row = await self.engine.transaction(tx_id)
        body = decode_body(row["body"]) if row is not None else None
        if body is None or not (principal.is_operator or _involves(body, principal.bank)):
            raise NotFound("no such transaction (or not one of yours)", code="transaction_not_found")
        out = signed_to_json(SignedTx(body, decode_witnesses(row["witnesses"])))
        return {"tx_id": tx_id.hex(), "seq": row["seq"], "accepted_at": row["accepted_at"].isoformat(),
                "transaction": out}

    async def history(self, principal: Principal, bank_id: str, after_seq: int, limit: int) -> list[dict]:
        """The bank's tier-1 transactions in log order, with what each did to its two accounts."""
        bank = await self.bank(principal, bank_id)
        rows = await store.history(self.pool, bank_id, after_seq, min(max(limit, 1), PAGE_MAX))
        return [_history_json(bank, row) for row in rows]

    async def refresh_gauges(self) -> None:
        supply = await self.supply()
        self.metrics.issued.set(supply["issued"])
        self.metrics.redeemed.set(supply["redeemed"])
        self.metrics.outstanding.set(supply["outstanding"])
        self.metrics.cap.set(supply["cap"])
        for bank_id, total in (await store.escrow_totals(self.pool)).items():
            self.metrics.escrow.labels(bank_id).set(total)


def _involves(body: Tx, bank: store.Bank | None) -> bool:
    if bank is None:
        return False
    mine = {bank.public_key, bank.escrow_owner}
    return any(i.owner in mine for i in body.inputs) or any(o.owner in mine for o in body.outputs)


def _history_json(bank: store.Bank, row: asyncpg.Record) -> dict[str, Any]:
    body = decode_body(row["body"])
    delta = {bank.public_key: 0, bank.escrow_owner: 0}
    for i in body.inputs:
        if i.owner in delta:
            delta[i.owner] -= i.amount
    for o in body.outputs:
        if o.owner in delta:
            delta[o.owner] += o.amount
    return {"seq": row["seq"], "tx_id": row["tx_id"].hex(), "kind": body.kind, "reference": body.reference,
            "accepted_at": row["accepted_at"].isoformat(), "holdings_change": delta[bank.public_key],
            "escrow_change": delta[bank.escrow_owner]}


def _apply_error(result: ApplyResult) -> Exception:
    extra = {"field": "inputs"}
    if result.code == INPUT_ALREADY_SPENT:
        return Conflict("an input was already spent", code=result.code, index=result.index, extra=extra)
    if result.code == INPUT_CONTENDED:
        return Unavailable("an input is contended; retry", code=result.code, index=result.index, extra=extra)
    assert result.code != EXISTS
    return Unprocessable("an input does not match an unspent output", code=result.code, index=result.index,
                         extra=extra)
