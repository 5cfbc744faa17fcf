"""Funding (deposit money -> CBDC) and defunding (CBDC -> deposit money), exactly once whatever crashes.

Funding, keyed by the client's funding id:
  1. one DB transaction: record the funding (state ``debited``) and debit the deposit account
     (entry ``fund:<id>``; the wallet's holding limit is checked with its row locked);
  2. build the tier-1 ``fund`` tx (holdings -> escrow) ONCE and store it in the row before sending,
     so every retry re-sends the same bytes and the central bank answers ``exists``;
  3. submit it; when accepted, state ``funded``;
  4. one DB transaction: apply the ``mint`` (reference ``fund:<id>``, deterministic) and mark ``minted``.
  If the stored tx's inputs were taken by another tx (it can then never apply), a new one is built
  and stored in its place (conditionally on the old id). If the holdings cannot cover a new one, the
  funding ``failed`` and the deposit is returned (entry ``fund-return:<id>``) in the same transaction.

Defunding, keyed by the burn's reference (the wallet's defund id):
  1. one DB transaction: apply the wallet-signed ``burn`` and record the defund (``burned``);
  2. build and store the tier-1 ``defund`` tx (escrow -> holdings); 3. submit it -> ``defunded``;
  4. one DB transaction: credit the deposit account (entry ``defund:<id>``) and mark ``credited``.

Every step is idempotent, so the recovery loop (commercial_bank/recovery.py) simply drives every
open row again after a crash. Fail points (shared/failpoints.py) sit after each durable step.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import asyncpg
import orjson

from central_bank.client import APIError, CentralBankClient
from commercial_bank import store
from commercial_bank.ledger import CommercialBank, apply_error
from shared.accounts import escrow_owner
from shared.amounts import is_amount
from shared.engine import EXISTS
from shared.errors import Conflict, NotFound, Unavailable, Unprocessable
from shared.failpoints import failpoint
from shared.fields import invalid
from shared.notice import PAYMENT_ID_RE
from shared.tx import LEDGER_CB, Input, Output, SignedTx, Tx, encode_body, signed_to_json, tx_id_of
from shared.validation import sign

log = logging.getLogger(__name__)
INPUTS_GONE = frozenset({"input_already_spent", "input_not_found", "input_mismatch"})
TIER1_INPUTS_MAX = 64


class Flows:
    def __init__(self, bank: CommercialBank, cb: CentralBankClient) -> None:
        self.bank = bank
        self.cb = cb
        self.pool = bank.pool
        self.holdings = bank.key.public_key
        self.escrow = escrow_owner(bank.bank_id)
        self.tier1_lock = asyncio.Lock()   # one tier-1 tx built and sent at a time in this process

    # -- funding ------------------------------------------------------------------------------

    async def fund(self, wallet: asyncpg.Record, funding_id: str, amount: int) -> tuple[dict[str, Any], bool]:
        if not PAYMENT_ID_RE.fullmatch(funding_id):
            raise invalid("funding_id", "1-128 of A-Z a-z 0-9 . _ : -", "funding_id_invalid")
        if not is_amount(amount):
            raise invalid("amount", "a positive integer amount in minor units", "amount_invalid")
        row, fresh = await self._record_funding(wallet, funding_id, amount)
        if fresh:
            failpoint("funding.after_debit")
        try:
            row = await self.drive_funding(row)
        except Unavailable as exc:   # recorded and debited: the recovery loop finishes it
            log.info("funding %s waits for the recovery loop: %s", funding_id, exc.code)
            row = await store.get_funding(self.pool, funding_id)
        return funding_json(row), fresh

    async def _record_funding(self, wallet: asyncpg.Record, funding_id: str, amount: int) -> tuple[asyncpg.Record, bool]:
        key, account, now = wallet["public_key"], self.bank.account_of(wallet), self.bank.now()
        async with self.pool.acquire() as conn, conn.transaction():
            await store.lock_wallets(conn, [key])
            row = await store.get_funding(conn, funding_id)
            if row is None:
                held = (await store.balances(conn, [key])).get(key, 0) + await store.open_funding_total(conn, key)
                held += (await store.reserved(conn, [key], now)).get(key, 0)   # promised to inbound payments
                tier = self.bank.tier(wallet)
                if held + amount > tier.holding:
                    self.bank.metrics.limit_refusals.labels("limit_holding").inc()
                    raise Conflict(f"a {tier.name} wallet holds at most {tier.holding}", code="limit_holding")
                row = await store.insert_funding(conn, funding_id, key, account, amount, now)
                if row is not None:
                    await store.deposit_entry(conn, f"fund:{funding_id}", account, -amount, now)
                    return row, True
                row = await store.get_funding(conn, funding_id)
        if (row["wallet"], row["amount"]) != (key, amount):
            raise Conflict("this funding id was used for another funding", code="funding_conflict")
        return row, False

    async def drive_funding(self, row: asyncpg.Record) -> asyncpg.Record:
        """Take a funding as far as it can go now (every step idempotent)."""
        if row["state"] == "debited":
            row = await self._fund_at_tier1(row)
        if row["state"] == "funded":
            row = await self._mint(row)
        return row

    async def _fund_at_tier1(self, row: asyncpg.Record) -> asyncpg.Record:
        funding_id = row["funding_id"]
        async with self.tier1_lock:
            row = await store.get_funding(self.pool, funding_id)
            replaces, tx_json = row["fund_tx_id"], row["fund_tx"]
            for _ in range(self.bank.settings.tier1_rebuilds_max + 1):
                if row["state"] != "debited":
                    return row
                if tx_json is None:
                    built = await self._build("fund", "holdings", row["amount"], self.escrow, self.holdings,
                                              f"fund:{self.bank.bank_id}:{funding_id}")
                    if built is None:
                        return await self._fail_funding(row, "bank_holdings_insufficient", replaces)
                    tx_json, tx_id = built
                    stored = await store.store_fund_tx(self.pool, funding_id, tx_json, tx_id, self.bank.now(), replaces)
                    if stored is None:  # another process moved this funding on
                        return await store.get_funding(self.pool, funding_id)
                    row = stored
                    failpoint("funding.after_store_fund")
                if await self._submit(tx_json):
                    failpoint("funding.after_fund")
                    self.bank.metrics.flows.labels("funding", "funded").inc()
                    moved = await store.set_funding_state(self.pool, funding_id, "debited", "funded", self.bank.now())
                    return moved or await store.get_funding(self.pool, funding_id)
                replaces, tx_json = row["fund_tx_id"], None   # its inputs were taken: it can never apply
        raise Unavailable("the bank's tier-1 holdings are contended; the funding will be retried",
                          code="tier1_contended")

    async def _fail_funding(self, row: asyncpg.Record, failure: str, dead_tx_id: bytes | None) -> asyncpg.Record:
        now = self.bank.now()
        async with self.pool.acquire() as conn, conn.transaction():
            failed = await store.funding_failed(conn, row["funding_id"], failure, now, dead_tx_id)
            if failed is not None:
                await store.deposit_entry(conn, f"fund-return:{row['funding_id']}", row["account_id"],
                                          row["amount"], now)
        log.warning("funding %s failed: %s", row["funding_id"], failure)
        self.bank.metrics.flows.labels("funding", "failed").inc()
        return failed or await store.get_funding(self.pool, row["funding_id"])

    async def _mint(self, row: asyncpg.Record) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            vtx = await self.bank.create_value(conn, "mint", row["wallet"], row["amount"], f"fund:{row['funding_id']}",
                                               activity_kind="mint", counterparty=row["account_id"])
            moved = await store.set_funding_state(conn, row["funding_id"], "funded", "minted", self.bank.now(),
                                                  mint_tx_id=vtx.tx_id)
        failpoint("funding.after_mint")
        self.bank.metrics.flows.labels("funding", "minted").inc()
        return moved or await store.get_funding(self.pool, row["funding_id"])

    async def funding(self, wallet: asyncpg.Record, funding_id: str) -> dict[str, Any]:
        row = await store.get_funding(self.pool, funding_id)
        if row is None or row["wallet"] != wallet["public_key"]:
            raise _not_found("funding")
        return funding_json(row)

    # -- defunding ----------------------------------------------------------------------------

    async def defund(self, stx: SignedTx) -> tuple[dict[str, Any], bool]:
        vtx = self.bank.validate(stx, ("burn",))
        owners = {i.owner for i in vtx.body.inputs}
        if len(owners) != 1 or any(o.owner not in owners for o in vtx.body.outputs):
            raise Unprocessable("a burn spends one wallet's coins and returns change to it",
                                code="outputs_not_change")
        if not PAYMENT_ID_RE.fullmatch(vtx.body.reference) or vtx.body.reference.startswith("waterfall:"):
            raise invalid("reference", "a burn's reference is its defund id: 1-128 of A-Z a-z 0-9 . _ : -",
                          "defund_id_invalid")
        key = owners.pop()
        wallet = await self.bank.wallet(key)
        account = self.bank.account_of(wallet)
        defund_id, amount = vtx.body.reference, vtx.value_in - vtx.value_out
        async with self.pool.acquire() as conn, conn.transaction():
            row = await store.get_defund(conn, defund_id)
            fresh = False
            if row is None:
                result = await self.bank.apply_burn(conn, vtx, key)
                if not result.accepted:
                    raise apply_error(result)
                row = await store.insert_defund(conn, defund_id, key, account, amount, vtx.tx_id, self.bank.now())
                fresh = row is not None and result.code != EXISTS
                row = row or await store.get_defund(conn, defund_id)
        if row is None or row["burn_tx_id"] != vtx.tx_id:
            raise Conflict("this defund id was used for another burn", code="defund_conflict")
        if fresh:
            failpoint("defund.after_burn")
        try:
            row = await self.drive_defund(row)
        except Unavailable as exc:   # burned and recorded: the recovery loop finishes it
            log.info("defund %s waits for the recovery loop: %s", defund_id, exc.code)
            row = await store.get_defund(self.pool, defund_id)
        return defund_json(row), fresh

    async def drive_defund(self, row: asyncpg.Record) -> asyncpg.Record:
        if row["state"] == "burned":
            row = await self._defund_at_tier1(row)
        if row["state"] == "defunded":
            row = await self._credit_deposit(row)
        return row

    async def _defund_at_tier1(self, row: asyncpg.Record) -> asyncpg.Record:
        defund_id = row["defund_id"]
        async with self.tier1_lock:
            row = await store.get_defund(self.pool, defund_id)
            replaces, tx_json = row["defund_tx_id"], row["defund_tx"]
            for _ in range(self.bank.settings.tier1_rebuilds_max + 1):
                if row["state"] != "burned":
                    return row
                if tx_json is None:
                    built = await self._build("defund", "escrow", row["amount"], self.holdings, self.escrow,
                                              f"defund:{self.bank.bank_id}:{defund_id}")
                    if built is None:
                        raise Unavailable("the escrow does not cover this defund now; it will be retried",
                                          code="escrow_insufficient")
                    tx_json, tx_id = built
                    stored = await store.store_defund_tx(self.pool, defund_id, tx_json, tx_id, self.bank.now(), replaces)
                    if stored is None:
                        return await store.get_defund(self.pool, defund_id)
                    row = stored
                    failpoint("defund.after_store_defund")
                if await self._submit(tx_json):
                    failpoint("defund.after_defund")
                    self.bank.metrics.flows.labels("defund", "defunded").inc()
                    moved = await store.set_defund_state(self.pool, defund_id, "burned", "defunded", self.bank.now())
                    return moved or await store.get_defund(self.pool, defund_id)
                replaces, tx_json = row["defund_tx_id"], None
        raise Unavailable("the bank's escrow is contended; the defund will be retried", code="tier1_contended")

    async def _credit_deposit(self, row: asyncpg.Record) -> asyncpg.Record:
        now = self.bank.now()
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await store.set_defund_state(conn, row["defund_id"], "defunded", "credited", now)
            if moved is not None:
                await store.deposit_entry(conn, f"defund:{row['defund_id']}", row["account_id"], row["amount"], now)
        failpoint("defund.after_credit")
        self.bank.metrics.flows.labels("defund", "credited").inc()
        return moved or await store.get_defund(self.pool, row["defund_id"])

    async def defund_status(self, wallet: asyncpg.Record, defund_id: str) -> dict[str, Any]:
        row = await store.get_defund(self.pool, defund_id)
        if row is None or row["wallet"] != wallet["public_key"]:
            raise _not_found("defund")
        return defund_json(row)

    # -- tier-1 transactions ------------------------------------------------------------------

    async def _build(self, kind: str, account: str, amount: int, to: bytes, change_to: bytes,
                     reference: str) -> tuple[bytes, bytes] | None:
        """A signed tier-1 tx paying ``amount`` from the bank's ``account`` (JSON bytes, tx id); None if short."""
        try:
            outputs = await self.cb.outputs(self.bank.bank_id, account, limit=500)
        except (APIError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Unavailable("the central bank is not answering; this will be retried",
                              code="upstream_unavailable") from exc
        chosen, total = [], 0
        for o in sorted(outputs, key=lambda o: (-o["amount"], o["tx_id"], o["index"]))[:TIER1_INPUTS_MAX]:
            if total >= amount:
                break
            chosen.append(Input(bytes.fromhex(o["tx_id"]), o["index"], bytes.fromhex(o["owner"]), o["amount"]))
            total += o["amount"]
        if total < amount:
            return None
        outs = [Output(to, amount)] + ([Output(change_to, total - amount)] if total > amount else [])
        body = Tx(LEDGER_CB, kind, tuple(chosen), tuple(outs), reference=reference)
        return orjson.dumps(signed_to_json(sign(body, self.bank.key))), tx_id_of(encode_body(body))

    async def _submit(self, tx_json: bytes) -> bool:
        """Send the stored bytes; True if the central bank holds the tx, False if it can never apply."""
        try:
            status, answer = await self.cb.raw("POST", "/v1/transactions", tx_json)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Unavailable("the central bank is not answering; this will be retried",
                              code="upstream_unavailable") from exc
        if status in (200, 201):
            return True
        code = answer.get("code") if isinstance(answer, dict) else None
        if code in INPUTS_GONE:
            return False
        log.warning("the central bank refused a tier-1 tx: %s %s", status, code)
        raise Unavailable(f"the central bank answered {status} {code}; this will be retried",
                          code="upstream_refused")


def _not_found(what: str) -> Exception:
    return NotFound(f"no such {what} (or not yours)", code=f"{what}_not_found")


def funding_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"funding_id": row["funding_id"], "wallet": row["wallet"].hex(), "amount": row["amount"],
            "state": row["state"], "failure": row["failure"],
            "fund_tx_id": row["fund_tx_id"].hex() if row["fund_tx_id"] else None,
            "mint_tx_id": row["mint_tx_id"].hex() if row["mint_tx_id"] else None}


def defund_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"defund_id": row["defund_id"], "kind": row["kind"], "wallet": row["wallet"].hex(),
            "amount": row["amount"], "state": row["state"],
            "burn_tx_id": row["burn_tx_id"].hex() if row["burn_tx_id"] else None,
            "defund_tx_id": row["defund_tx_id"].hex() if row["defund_tx_id"] else None}
