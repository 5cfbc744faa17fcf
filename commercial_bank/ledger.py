"""The commercial bank's core domain steps: onboarding, KYC limits, wallet-signed spends (on-us
transfers and the outbound half of cross-bank payments) through the micro-batcher, the bank's own
value-creating transactions (mint, inbound), and the wallet queries.

Funding and defunding are in commercial_bank/funding.py, the cross-bank protocol in
commercial_bank/payments.py, the loop that finishes interrupted work in commercial_bank/recovery.py.

Limits are checked inside the database transaction that applies the batch, with the wallets'
rows locked (in key order), so two concurrent payments can never together break a limit, in this
process or in another. What a wallet holds and has paid out today are read from those same rows
(``held``, ``out_day``/``out_today``): running totals that triggers keep in the statement that
changes the unspent outputs or writes the activity rows (schema/004_wallet_totals.sql), so they
cannot drift, and the system audit recomputes them from the rows.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import asyncpg

from commercial_bank import store
from commercial_bank.metrics import BankMetrics
from commercial_bank.settings import Settings, Tier
from shared import crypto
from shared.amounts import format_major, is_amount
from shared.batcher import MicroBatcher
from shared.engine import CREATED, INPUT_ALREADY_SPENT, INPUT_CONTENDED, RETRYABLE, ApplyResult, UTXOEngine
from shared.errors import CBDCError, Conflict, NotFound, Unavailable, Unprocessable
from shared.fields import invalid
from shared.notice import PAYMENT_ID_RE
from shared.tx import Output, SignedTx, Tx, decode_body, decode_witnesses, signed_to_json
from shared.validation import LedgerRules, ValidTx, sign_valid, validate

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"[^\x00-\x1f]{1,100}")
REFERENCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
FLUSH_RETRIES_MAX = 5
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class Spend:
    """A wallet-signed spend waiting in the micro-batcher (a transfer or an outbound)."""
    vtx: ValidTx
    payer: bytes
    outgoing: int                                              # counts against the daily limit
    received: dict[bytes, int] = field(default_factory=dict)   # on-us payees -> amount
    payment: tuple | None = None                               # the outbox row of an outbound
    onus: bool = False                                         # an outbound whose payee banks here

    @property
    def onus_payee(self) -> bytes:
        assert self.onus and self.vtx.body.payee is not None
        return self.vtx.body.payee.owner


@dataclass(frozen=True)
class Refusal:
    """A spend refused by a limit or a conflict inside the batch (nothing of it was applied)."""
    error: Exception


class _OutboxRace(Exception):
    """A payment id was recorded concurrently with another outbound; retry the batch to refuse it."""


class CommercialBank:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, clock: Callable[[], float],
                 metrics: BankMetrics) -> None:
        self.settings = settings
        self.bank_id = settings.id
        self.pool = pool
        self.clock = clock
        self.metrics = metrics
        self.key = settings.signing_key()
        self.tiers = settings.tiers()
        self.rules = LedgerRules(self.bank_id, mint_authority=self.key.public_key)
        self.engine = UTXOEngine(pool)
        self.batcher: MicroBatcher[Spend, ApplyResult | Refusal] = MicroBatcher(
            self._flush, batch_max=settings.batch_max, wait_ms=settings.batch_wait_ms,
            queue_max=settings.batch_queue_max, flushers=settings.flushers, on_flush=metrics.observe_batch)

    def now(self) -> int:
        return int(self.clock())

    def tier(self, wallet: asyncpg.Record) -> Tier:
        # a tier removed from the configuration falls back to the most restrictive one
        return self.tiers.get(wallet["kyc_tier"]) or min(self.tiers.values(), key=lambda t: t.holding)

    # -- onboarding ---------------------------------------------------------------------------

    async def register(self, public_key: bytes, name: str, tier: str, deposit_account: bool) -> asyncpg.Record:
        if not crypto.is_valid_public_key(public_key):
            raise invalid("public_key", "not a valid Ed25519 public key", "public_key_invalid")
        if not NAME_RE.fullmatch(name):
            raise invalid("name", "a name is 1-100 printable characters")
        if tier not in self.tiers:
            raise invalid("kyc_tier", f"one of {', '.join(self.tiers)}", "kyc_tier_unknown")
        account = "dep-" + public_key.hex()[:32] if deposit_account else None
        async with self.pool.acquire() as conn, conn.transaction():
            if await store.get_wallet(conn, public_key) is not None:
                raise Conflict("this key is already registered", code="wallet_exists")
            try:
                row = await store.insert_wallet(conn, public_key, name, tier, account, self.now())
            except asyncpg.UniqueViolationError:
                row = None
            if row is None:
                raise Conflict("this key is already registered", code="wallet_exists")
        return row

    async def wallet(self, public_key: bytes) -> asyncpg.Record:
        row = await store.get_wallet(self.pool, public_key)
        if row is None:
            raise wallet_not_found()
        return row

    async def credit_deposit(self, wallet: asyncpg.Record, amount: int, reference: str) -> dict[str, Any]:
        """The demo stand-in for core banking: money arrives in the linked deposit account, once per reference."""
        if not self.settings.demo_deposit_credit:
            raise NotFound("demo deposit credits are disabled", code="not_found")
        account = self.account_of(wallet)
        if not is_amount(amount):
            raise invalid("amount", "a positive integer amount in minor units", "amount_invalid")
        if not REFERENCE_RE.fullmatch(reference):
            raise invalid("reference", "1-128 of A-Z a-z 0-9 . _ : -", "reference_invalid")
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await store.deposit_entry(conn, f"credit:{wallet['public_key'].hex()}:{reference}", account,
                                              amount, self.now())
            balance = await store.account_balance(conn, account)
        return {"account_id": account, "balance": balance, "credited": fresh}

    @staticmethod
    def account_of(wallet: asyncpg.Record) -> str:
        if wallet["deposit_account"] is None:
            raise Conflict("this wallet has no linked deposit account", code="no_deposit_account")
        return wallet["deposit_account"]

    # -- wallet-signed spends -------------------------------------------------------------------

    def validate(self, stx: SignedTx, kinds: tuple[str, ...]) -> ValidTx:
        if stx.body.kind not in kinds:
            raise invalid("kind", f"this endpoint takes {' or '.join(kinds)} transactions", "kind_not_allowed")
        return validate(stx, self.rules, self.now())

    def spend_of(self, vtx: ValidTx) -> Spend:
        """The payer and amounts of a transfer or outbound, with the checks that need no database."""
        body = vtx.body
        payers = {i.owner for i in body.inputs}
        if len(payers) != 1:
            raise Unprocessable("all inputs of a payment belong to one wallet", code="inputs_mixed_owners",
                                extra={"field": "inputs"})
        payer = payers.pop()
        received: dict[bytes, int] = {}
        for n, o in enumerate(body.outputs):
            if o.owner != payer:
                if body.kind == "outbound":
                    raise Unprocessable("an outbound's outputs are the payer's change", code="outputs_not_change",
                                        index=n, extra={"field": "outputs"})
                received[o.owner] = received.get(o.owner, 0) + o.amount
        payment = None
        if body.kind == "outbound":
            assert body.payee is not None
            outgoing = body.payee.amount
            if not PAYMENT_ID_RE.fullmatch(body.reference) or not body.reference.startswith(self.bank_id + ":"):
                raise Unprocessable(f"an outbound's reference is its payment id, '{self.bank_id}:<1-100 of "
                                    "A-Z a-z 0-9 . _ : ->'", code="payment_id_invalid", extra={"field": "reference"})
            payment = (body.reference, payer, body.payee.ledger, body.payee.owner, outgoing, vtx.tx_id)
        else:
            outgoing = sum(received.values())
        onus = payment is not None and payment[2] == self.bank_id
        return Spend(vtx, payer, outgoing, received, payment, onus)

    def check_per_payment(self, spend: Spend, payer: asyncpg.Record) -> None:
        tier = self.tier(payer)
        if spend.outgoing > tier.per_payment:
            self.metrics.limit_refusals.labels("limit_per_payment").inc()
            raise Unprocessable(f"a {tier.name} wallet pays at most {format_major(tier.per_payment)} per payment",
                                code="limit_per_payment")

    async def submit(self, spend: Spend, payer: asyncpg.Record | None, outbound_json: bytes | None = None
                     ) -> ApplyResult:
        """Apply through the batcher, where every limit is checked with the wallets locked. With the
        payer's record at hand, the per-payment limit is checked first, without waiting for a batch."""
        if payer is not None:
            self.check_per_payment(spend, payer)
        if spend.payment is not None:
            spend = Spend(spend.vtx, spend.payer, spend.outgoing, spend.received, spend.payment + (outbound_json,),
                          spend.onus)
        return self._outcome(spend, await self.batcher.submit(spend))

    def _outcome(self, spend: Spend, result: ApplyResult | Refusal) -> ApplyResult:
        """The accepted result, counted; raises the refusal otherwise."""
        kind = spend.vtx.body.kind
        if isinstance(result, Refusal):
            self.metrics.payments.labels(kind, result.error.code).inc()  # type: ignore[attr-defined]
            raise result.error
        self.metrics.payments.labels(kind, result.code).inc()
        if not result.accepted:
            raise apply_error(result)
        return result

    async def submit_transfers(self, verdicts: Sequence[ValidTx | dict]) -> list[ApplyResult | dict]:
        """A batch submission: every valid transfer through the same micro-batcher and checks as one
        sent alone (the limits with the wallets locked); one outcome each, in order (the accepted
        result, or a problem object)."""
        out: list[ApplyResult | dict | None] = [None] * len(verdicts)
        spends: dict[int, Spend] = {}
        for n, v in enumerate(verdicts):
            if isinstance(v, dict):
                out[n] = v
                continue
            try:
                spends[n] = self.spend_of(v)
            except CBDCError as exc:
                out[n] = exc.to_problem()
        results = await self.batcher.submit_many(list(spends.values()), return_exceptions=True)
        for (n, spend), result in zip(spends.items(), results):
            try:
                if isinstance(result, BaseException):
                    raise result
                out[n] = self._outcome(spend, result)
            except CBDCError as exc:
                out[n] = exc.to_problem()
        assert all(o is not None for o in out)
        return out  # type: ignore[return-value]

    async def _flush(self, batch: Sequence[Spend]) -> list[ApplyResult | Refusal]:
        for attempt in range(FLUSH_RETRIES_MAX + 1):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    return await self._apply_spends(conn, batch)
            except (*RETRYABLE, _OutboxRace) as exc:
                if attempt == FLUSH_RETRIES_MAX:
                    raise Unavailable("the ledger is busy; retry", code="ledger_busy") from exc
                log.info("batch of %d retried after %s", len(batch), type(exc).__name__)
                await asyncio.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
        raise AssertionError("unreachable")

    async def _apply_spends(self, conn: asyncpg.Connection, batch: Sequence[Spend]) -> list[ApplyResult | Refusal]:
        now = self.now()
        payers = sorted({s.payer for s in batch})
        payees = sorted({k for s in batch for k in s.received} | {s.onus_payee for s in batch if s.onus})
        state = await store.flush_state(conn, sorted(set(payers) | set(payees)), [s.vtx.tx_id for s in batch],
                                        payees, [s.payment[0] for s in batch if s.payment], now)
        wallets, already, known = state.wallets, state.logged, state.payments
        today = now - now % DAY_SECONDS
        used = {k: w["out_today"] for k, w in wallets.items() if w["out_day"] == today}
        held = {k: wallets[k]["held"] for k in payees if k in wallets}
        for key, amount in state.reserved.items():   # room promised to payments
            held[key] = held.get(key, 0) + amount
        verdicts: list[Exception | None] = []
        as_coins: dict[int, int] = {}       # on-us outbound -> the part the payee receives as coins
        for s in batch:
            error = None if s.vtx.tx_id in already else self._check(s, wallets, used, held, known, as_coins)
            verdicts.append(error)
            if error is None and s.vtx.tx_id not in already:
                used[s.payer] = used.get(s.payer, 0) + s.outgoing
                for key, amount in s.received.items():
                    held[key] = held.get(key, 0) + amount
                if s.onus:
                    held[s.onus_payee] = held.get(s.onus_payee, 0) + as_coins[id(s)]
        chosen = [s for s, v in zip(batch, verdicts) if v is None]
        applied = dict(zip((id(s) for s in chosen), await self.engine.apply([s.vtx for s in chosen], conn)))
        created = [s for s in chosen if applied[id(s)].code == CREATED]
        await self._record_spends(conn, created, applied, now)
        onus = [s for s in created if s.onus]
        if onus:
            await self._credit_onus(conn, onus, applied, as_coins, wallets, now)
        return [applied[id(s)] if v is None else Refusal(v) for s, v in zip(batch, verdicts)]

    def _check(self, s: Spend, wallets: dict, used: dict, held: dict, known: dict,
               as_coins: dict[int, int]) -> Exception | None:
        payer = wallets.get(s.payer)
        if payer is None:
            return NotFound("the payer's wallet is not registered here", code="payer_unknown")
        tier = self.tier(payer)
        if s.outgoing > tier.per_payment:
            self.metrics.limit_refusals.labels("limit_per_payment").inc()
            return Unprocessable(f"a {tier.name} wallet pays at most {format_major(tier.per_payment)} per payment",
                                 code="limit_per_payment")
        if used.get(s.payer, 0) + s.outgoing > tier.daily:
            self.metrics.limit_refusals.labels("limit_daily").inc()
            return Conflict(f"a {tier.name} wallet pays at most {format_major(tier.daily)} per day", code="limit_daily")
        for key, amount in s.received.items():
            payee = wallets.get(key)
            if payee is None:
                return Unprocessable("the payee is not a wallet of this bank", code="payee_unknown")
            if key != s.payer and held.get(key, 0) + amount > self.tier(payee).holding:
                self.metrics.limit_refusals.labels("payee_holding_limit").inc()
                return Conflict("the payee's wallet would exceed its holding limit", code="payee_holding_limit")
        if s.payment is not None and s.payment[0] in known and known[s.payment[0]] != s.vtx.tx_id:
            return Conflict("this payment id was used for another payment", code="payment_conflict")
        if s.onus:
            return self._split_onus(s, wallets, held, as_coins)
        return None

    def _split_onus(self, s: Spend, wallets: dict, held: dict, as_coins: dict[int, int]) -> Exception | None:
        """An on-us outbound: what the payee may still hold is paid as coins; the excess goes to its
        linked deposit account (reverse waterfall), or, with none, the payment is refused."""
        key = s.onus_payee
        payee = wallets.get(key)
        if payee is None:
            return Unprocessable("the payee is not a wallet of this bank", code="payee_unknown")
        if key == s.payer:
            return Unprocessable("a wallet does not pay itself", code="payee_is_payer")
        room = max(self.tier(payee).holding - held.get(key, 0), 0)
        if s.outgoing > room and payee["deposit_account"] is None:
            self.metrics.limit_refusals.labels("payee_holding_limit").inc()
            return Conflict("the payee's wallet would exceed its holding limit and has no linked deposit account",
                            code="payee_holding_limit")
        as_coins[id(s)] = min(s.outgoing, room)
        return None

    async def _record_spends(self, conn: asyncpg.Connection, created: list[Spend], applied: dict, now: int) -> None:
        rows, outbox = [], []
        for s in created:
            seq, tx_id, ref, kind = applied[id(s)].seq, s.vtx.tx_id, s.vtx.body.reference, s.vtx.body.kind
            if s.payment is not None:
                counterparty = f"{s.payment[2]}:{s.payment[3].hex()}"
                outbox.append(s.payment)
            else:
                counterparty = next(iter(s.received), s.payer).hex()
            rows.append(activity(s.payer, seq, tx_id, kind, -s.outgoing, s.outgoing, counterparty, ref, now))
            for key, amount in s.received.items():
                rows.append(activity(key, seq, tx_id, kind, amount, 0, s.payer.hex(), ref, now))
        await store.insert_activity(conn, rows)
        if outbox:
            inserted = await store.insert_payments(conn, outbox, now)
            if len(inserted) != len(outbox):
                raise _OutboxRace()

    async def _credit_onus(self, conn: asyncpg.Connection, onus: list[Spend], applied: dict,
                           as_coins: dict[int, int], wallets: dict, now: int) -> None:
        """Credit the payees of on-us outbounds in the transaction that applied them: an inbound tx for
        the coins, the inbound record, the excess bound for the deposit account (a waterfall defund
        that the recovery loop takes to tier 1), and the payment completed -- no tier-1 settlement."""
        inbound = {id(s): self.own_tx("inbound", s.onus_payee, as_coins[id(s)], f"in:{s.payment[0]}")
                   for s in onus if as_coins[id(s)]}
        results = dict(zip(inbound, await self.engine.apply(list(inbound.values()), conn)))
        rows = []
        for s in onus:
            pid, payee, coins = s.payment[0], s.onus_payee, as_coins[id(s)]
            vtx = inbound.get(id(s))
            if vtx is not None:
                result = results[id(s)]
                assert result.code == CREATED, f"the inbound of on-us payment {pid} was answered {result.code}"
                rows.append(activity(payee, result.seq, vtx.tx_id, "inbound", coins, 0,
                                     f"{self.bank_id}:{s.payer.hex()}", vtx.body.reference, now))
            await store.insert_inbound(conn, pid, self.bank_id, payee, s.outgoing, s.outgoing - coins, s.vtx.tx_id,
                                       None, vtx.tx_id if vtx else None, now)
            if coins < s.outgoing:
                await store.insert_defund(conn, f"waterfall:{pid}", payee, wallets[payee]["deposit_account"],
                                          s.outgoing - coins, None, now, kind="waterfall")
        await store.insert_activity(conn, rows)
        await store.onus_completed(conn, [s.payment[0] for s in onus], now)

    # -- the bank's own value-creating transactions (mint, inbound), in the caller's transaction --

    def own_tx(self, kind: str, owner: bytes, amount: int, reference: str) -> ValidTx:
        """A mint or inbound paying ``owner``, signed by the bank (deterministic: same tx id every time)."""
        body = Tx(self.bank_id, kind, outputs=(Output(owner, amount),), reference=reference)
        return sign_valid(body, self.key, self.rules, self.now())

    async def apply_own(self, conn: asyncpg.Connection, vtx: ValidTx, *, activity_kind: str, outgoing: int = 0,
                        counterparty: str = "") -> ApplyResult:
        """Apply one of own_tx's transactions in the caller's transaction (a retry answers exists)."""
        [result] = await self.engine.apply([vtx], conn)
        assert result.accepted, f"a {vtx.body.kind} paying a valid key was answered {result.code}"
        if result.code == CREATED:
            out = vtx.body.outputs[0]
            await store.insert_activity(conn, [activity(out.owner, result.seq, vtx.tx_id, activity_kind, out.amount,
                                                        outgoing, counterparty, vtx.body.reference, self.now())])
        return result

    async def apply_many_own(self, conn: asyncpg.Connection, txs: list[tuple[str, ValidTx]], *, activity_kind: str,
                             counterparty: dict[str, str]) -> None:
        """Apply own_tx's transactions (key, tx) in one engine call, in the caller's transaction; an
        activity row for each one created (``counterparty`` by key)."""
        if not txs:
            return
        results = await self.engine.apply([vtx for _, vtx in txs], conn)
        rows, now = [], self.now()
        for (key, vtx), result in zip(txs, results):
            assert result.accepted, f"a {vtx.body.kind} paying a valid key was answered {result.code}"
            if result.code == CREATED:
                out = vtx.body.outputs[0]
                rows.append(activity(out.owner, result.seq, vtx.tx_id, activity_kind, out.amount, 0,
                                     counterparty[key], vtx.body.reference, now))
        await store.insert_activity(conn, rows)

    async def create_value(self, conn: asyncpg.Connection, kind: str, owner: bytes, amount: int, reference: str,
                           *, activity_kind: str, outgoing: int = 0, counterparty: str = "") -> ValidTx:
        vtx = self.own_tx(kind, owner, amount, reference)
        await self.apply_own(conn, vtx, activity_kind=activity_kind, outgoing=outgoing, counterparty=counterparty)
        return vtx

    async def apply_burn(self, conn: asyncpg.Connection, vtx: ValidTx, wallet: bytes) -> ApplyResult:
        [result] = await self.engine.apply([vtx], conn)
        if result.code == CREATED:
            burned = vtx.value_in - vtx.value_out
            await store.insert_activity(conn, [activity(wallet, result.seq, vtx.tx_id, "burn", -burned, 0,
                                                        "deposit", vtx.body.reference, self.now())])
        return result

    # -- wallet queries -----------------------------------------------------------------------

    async def limits(self, wallet: asyncpg.Record) -> dict[str, Any]:
        key, now, tier = wallet["public_key"], self.now(), self.tier(wallet)
        totals = await store.wallet_totals(self.pool, key)
        balance = totals["held"]
        used = totals["out_today"] if totals["out_day"] == now - now % DAY_SECONDS else 0
        return {"kyc_tier": tier.name, "per_payment": tier.per_payment, "daily": tier.daily,
                "holding": tier.holding, "balance": balance, "used_today": used,
                "remaining_today": max(tier.daily - used, 0), "room_to_hold": max(tier.holding - balance, 0)}

    async def outputs(self, key: bytes, after: tuple[bytes, int], limit: int) -> list[dict[str, Any]]:
        rows = await self.engine.unspent(key, limit=min(limit, self.settings.page_max), after=after)
        return [{"tx_id": r["tx_id"].hex(), "index": r["idx"], "owner": r["owner"].hex(), "amount": r["amount"]}
                for r in rows]

    async def history(self, key: bytes, after_seq: int, limit: int) -> list[dict[str, Any]]:
        rows = await store.history(self.pool, key, after_seq, min(limit, self.settings.page_max))
        return [{"seq": r["seq"], "tx_id": r["tx_id"].hex(), "kind": r["kind"], "change": r["delta"],
                 "counterparty": r["counterparty"], "reference": r["reference"], "at": r["at"]} for r in rows]

    async def receipt(self, key: bytes, tx_id: bytes) -> dict[str, Any]:
        row = await store.receipt(self.pool, key, tx_id)
        if row is None:
            raise NotFound("no such transaction in this wallet's history", code="receipt_not_found")
        stx = SignedTx(decode_body(row["body"]), decode_witnesses(row["witnesses"]))
        return {"bank_id": self.bank_id, "tx_id": tx_id.hex(), "seq": row["seq"], "kind": row["kind"],
                "change": row["delta"], "counterparty": row["counterparty"], "reference": row["reference"],
                "accepted_at": row["accepted_at"].isoformat(), "transaction": signed_to_json(stx)}

    async def refresh_gauges(self) -> None:
        self.metrics.issued.set(await store.unspent_total(self.pool))
        now = self.now()
        depth = await store.outbox(self.pool)
        for state in ("pending", "settled"):
            count, oldest = depth.get(state, (0, 0))
            self.metrics.outbox_depth.labels(state).set(count)
            self.metrics.outbox_age.labels(state).set(max(now - oldest, 0) if count else 0)


def activity(wallet: bytes, seq: int | None, tx_id: bytes, kind: str, delta: int, outgoing: int,
             counterparty: str, reference: str, at: int) -> dict[str, Any]:
    return {"wallet": wallet, "seq": seq, "tx_id": tx_id, "kind": kind, "delta": delta, "outgoing": outgoing,
            "counterparty": counterparty, "reference": reference, "at": at}


def wallet_not_found() -> NotFound:
    return NotFound("no wallet with this key is registered here", code="wallet_not_found")


def apply_error(result: ApplyResult) -> Exception:
    extra = {"field": "inputs"}
    if result.code == INPUT_ALREADY_SPENT:
        return Conflict("an input was already spent", code=result.code, index=result.index, extra=extra)
    if result.code == INPUT_CONTENDED:
        return Unavailable("an input is contended; retry", code=result.code, index=result.index, extra=extra)
    return Unprocessable("an input does not match an unspent output", code=result.code, index=result.index,
                         extra=extra)
