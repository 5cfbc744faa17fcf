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

Every step is batched: concurrent fundings are recorded and debited through a micro-batcher (one
DB transaction for many, each checked alone), one tier-1 fund tx pays the escrow for a group of
debited fundings (stored in all of their rows before it is sent; they move on together), and a
group's mints are applied in one DB transaction.

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
from shared.batcher import MicroBatcher
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
FUNDING_GROUP_MAX = 500   # fundings paid for by one tier-1 fund tx


class Flows:
    def __init__(self, bank: CommercialBank, cb: CentralBankClient) -> None:
        self.bank = bank
        self.cb = cb
        self.pool = bank.pool
        self.holdings = bank.key.public_key
        self.escrow = escrow_owner(bank.bank_id)
        self.tier1_lock = asyncio.Lock()   # one tier-1 tx built and sent at a time in this process
        s = bank.settings
        self._recorder: MicroBatcher[tuple, tuple | Exception] = MicroBatcher(
            self._record_fundings, batch_max=s.batch_max, wait_ms=s.batch_wait_ms, queue_max=s.batch_queue_max,
            flushers=s.flushers)

    async def stop(self) -> None:
        await self._recorder.stop()

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

    async def _record_funding(self, wallet: asyncpg.Record, funding_id: str, amount: int
                              ) -> tuple[asyncpg.Record, bool]:
        outcome = await self._recorder.submit((wallet, funding_id, amount))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _record_fundings(self, items: list[tuple]) -> list[tuple | Exception]:
        """Record and debit many fundings in one DB transaction, each checked alone with its wallet
        and deposit account locked: (row, fresh) each, or its refusal (nothing of it written)."""
        now = self.bank.now()
        keys = sorted({w["public_key"] for w, _, _ in items})
        accounts = sorted({w["deposit_account"] for w, _, _ in items if w["deposit_account"] is not None})
        out: list[tuple | Exception | None] = [None] * len(items)
        async with self.pool.acquire() as conn, conn.transaction():
            wallets = await store.lock_wallets(conn, keys, now)
            balances = await store.lock_accounts(conn, accounts)
            known = await store.get_fundings(conn, [f for _, f, _ in items])
            held = {k: w["held"] + w["reserved"] for k, w in wallets.items()}   # and what is promised to payments
            for key, total in (await store.open_funding_totals(conn, keys)).items():
                held[key] += total
            new: dict[str, tuple] = {}
            for n, (wallet, funding_id, amount) in enumerate(items):
                key = wallet["public_key"]
                if funding_id in known or funding_id in new:
                    continue
                if key not in wallets:
                    out[n] = NotFound("no wallet with this key is registered here", code="wallet_not_found")
                    continue
                try:
                    account = self.bank.account_of(wallets[key])
                except Conflict as exc:
                    out[n] = exc
                    continue
                tier = self.bank.tier(wallets[key])
                if held[key] + amount > tier.holding:
                    self.bank.metrics.limit_refusals.labels("limit_holding").inc()
                    out[n] = Conflict(f"a {tier.name} wallet holds at most {tier.holding}", code="limit_holding")
                elif balances.get(account, 0) < amount:
                    out[n] = Conflict("the deposit account's balance is too low", code="deposit_insufficient")
                else:
                    new[funding_id] = (funding_id, key, account, amount)
                    held[key] += amount
                    balances[account] -= amount
            inserted = await store.insert_fundings(conn, list(new.values()), now)
            await store.deposit_entries(conn, [(f"fund:{f}", a, -x) for f, _, a, x in new.values()
                                               if f in inserted], now)
            missing = [f for f in new if f not in inserted]   # recorded meanwhile by another process
            if missing:
                known.update(await store.get_fundings(conn, missing))
        recorded = {**known, **inserted}
        answered: set[str] = set()
        for n, (wallet, funding_id, amount) in enumerate(items):
            if out[n] is not None:
                continue
            row = recorded[funding_id]
            if (row["wallet"], row["amount"]) != (wallet["public_key"], amount):
                out[n] = Conflict("this funding id was used for another funding", code="funding_conflict")
            else:
                out[n] = (row, funding_id in inserted and funding_id not in answered)
                answered.add(funding_id)
        return out  # type: ignore[return-value]

    async def drive_funding(self, row: asyncpg.Record) -> asyncpg.Record:
        """Take a funding as far as it can go now (every step idempotent)."""
        if row["state"] == "debited":
            row = await self._fund_at_tier1(row)
        if row["state"] == "funded":
            row = await self._mint(row)
        return row

    async def _fund_at_tier1(self, row: asyncpg.Record) -> asyncpg.Record:
        """Get the funding's fund tx accepted at tier 1: its stored one, or a new one built for the group
        of debited fundings that have none (this one among them); the group moves to funded together."""
        funding_id = row["funding_id"]
        async with self.tier1_lock:
            for _ in range(self.bank.settings.tier1_rebuilds_max + 1):
                row = await store.get_funding(self.pool, funding_id)
                if row["state"] != "debited":
                    return row
                if row["fund_tx"] is None:
                    failed = await self._build_group(funding_id)
                    if failed is not None:
                        return failed
                    row = await store.get_funding(self.pool, funding_id)
                    if row["state"] != "debited" or row["fund_tx"] is None:
                        continue   # another process took it into its group
                    failpoint("funding.after_store_fund")
                tx_id = row["fund_tx_id"]
                if await self._submit(row["fund_tx"]):
                    failpoint("funding.after_fund")
                    self.bank.metrics.flows.labels("funding", "funded").inc()
                    await store.group_funded(self.pool, tx_id, self.bank.now())
                    return await store.get_funding(self.pool, funding_id)
                await store.group_fund_tx_dead(self.pool, tx_id, self.bank.now())   # its inputs were taken
        raise Unavailable("the bank's tier-1 holdings are contended; the funding will be retried",
                          code="tier1_contended")

    async def _build_group(self, funding_id: str) -> asyncpg.Record | None:
        """Build one fund tx for the oldest debited fundings without one (as many as the holdings
        cover) and store it in all of their rows, in one DB transaction with the rows locked. If the
        holdings cannot cover even this funding alone, it fails (the failed row is returned)."""
        async with self.pool.acquire() as conn, conn.transaction():
            group = await store.lock_unbuilt_fundings(conn, funding_id, FUNDING_GROUP_MAX)
            if not group or group[0]["funding_id"] != funding_id:
                return None   # in another group already (or not debited any more): the caller re-reads
            mine = group[0]   # halving keeps it first
            outputs = await self._outputs("holdings")
            while group:
                built = self._build_tx("fund", outputs, sum(r["amount"] for r in group), self.escrow,
                                       self.holdings, f"fund:{self.bank.bank_id}:{funding_id}"
                                       + (f"+{len(group) - 1}" if len(group) > 1 else ""))
                if built is not None:
                    tx_json, tx_id = built
                    await store.store_group_fund_tx(conn, [r["funding_id"] for r in group], tx_json, tx_id,
                                                    self.bank.now())
                    return None
                group = group[:len(group) // 2]   # the holdings cover fewer: halve the group
        return await self._fail_funding(mine, "bank_holdings_insufficient", None)

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
        """Mint the coins of every funded funding of this one's fund tx, in one DB transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            group = await store.lock_funded_group(conn, row["fund_tx_id"])
            mints = [(r["funding_id"], self.bank.own_tx("mint", r["wallet"], r["amount"], f"fund:{r['funding_id']}"))
                     for r in group]
            await self.bank.apply_many_own(conn, mints, activity_kind="mint",
                                           counterparty={r["funding_id"]: r["account_id"] for r in group})
            await store.group_minted(conn, [(f, vtx.tx_id) for f, vtx in mints], self.bank.now())
        if group:
            failpoint("funding.after_mint")
            self.bank.metrics.flows.labels("funding", "minted").inc(len(group))
        return await store.get_funding(self.pool, row["funding_id"])

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

    async def _outputs(self, account: str) -> list[dict]:
        try:
            return await self.cb.outputs(self.bank.bank_id, account, limit=500)
        except (APIError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Unavailable("the central bank is not answering; this will be retried",
                              code="upstream_unavailable") from exc

    async def _build(self, kind: str, account: str, amount: int, to: bytes, change_to: bytes,
                     reference: str) -> tuple[bytes, bytes] | None:
        """A signed tier-1 tx paying ``amount`` from the bank's ``account`` (JSON bytes, tx id); None if short."""
        return self._build_tx(kind, await self._outputs(account), amount, to, change_to, reference)

    def _build_tx(self, kind: str, outputs: list[dict], amount: int, to: bytes, change_to: bytes,
                  reference: str) -> tuple[bytes, bytes] | None:
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
