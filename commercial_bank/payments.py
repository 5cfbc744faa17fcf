"""Cross-bank payments (docs/ARCHITECTURE.md, "Cross-bank payments"): both halves.

Payer bank A, one payment id = the outbound's reference "<A>:<wallet's id>":
  1. the wallet's signed ``outbound`` is applied through the micro-batcher; the outbox row
     (state ``pending``, with the signed tx) is written in the same DB transaction;
  2. the recovery loop settles pending payments at the central bank, sending the outbound's tx id
     as the opaque ``reference`` (idempotent there by payment id);
     - settled: the signed notice is stored (state ``settled``);
     - refused (payee bank unknown or suspended, escrow insufficient; final at tier 1): the payer
       is refunded by a ``mint`` (reference ``refund:<payment id>``, deterministic) in the same DB
       transaction as the state change to ``refunded``;
  3. the loop pushes notice + signed outbound to B's callback URL (from the central bank's
     directory); when B acknowledges, state ``completed``.

Payee bank B (POST /v1/inbound): verify the notice's signature with the central bank's key, that
it names B, that the outbound hashes to the notice's reference, pays B's ledger the notice's amount
under the notice's payment id, and is signed by its payer for ledger A; then, in one DB
transaction, insert the ``bank_inbound`` row (unique payment id) and apply the ``inbound`` tx
(reference ``in:<payment id>``, deterministic). A duplicate answers with the recorded credit.
The central bank never learns the payee's key; A cannot make B credit anyone the payer did not sign.

An outbound naming A itself as the payee's bank is an on-us payment through the bank (how a wallet
pays a payee over its holding limit): step 1 also credits the payee, in the same DB transaction --
coins up to the payee's room, the excess to its linked deposit account by a ``waterfall`` defund --
and the payment is ``completed`` at once, with no tier-1 settlement (commercial_bank/ledger.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import asyncpg
import orjson

from central_bank.client import APIError, CentralBankClient
from commercial_bank import store
from commercial_bank.ledger import CommercialBank, wallet_not_found
from urllib.parse import urlsplit

from shared import crypto
from shared.amounts import is_amount
from shared.batcher import MicroBatcher
from shared.engine import CREATED
from shared.errors import CBDCError, Conflict, Forbidden, NotFound, Unavailable, Unprocessable
from shared.failpoints import failpoint
from shared.fields import invalid, strict_object
from shared.notice import PAYMENT_ID_RE, notice_from_json, verify_notice
from shared.signing import check_nonce, parse_signature, sign_request, verify_request
from shared.tx import SignedTx, signed_from_json, signed_to_json
from shared.validation import LedgerRules, validate

log = logging.getLogger(__name__)
FINAL_REFUSALS = frozenset({"payee_bank_unknown", "payee_bank_suspended", "escrow_insufficient"})
DIRECTORY_TTL_SECONDS = 60.0
RESERVATION_TTL_SECONDS = 600
RESERVATION_REFUSALS = {409: Conflict, 422: Unprocessable}
INBOUND_BATCH_MAX = 1_000       # items per POST /v1/inbound/batch
RESERVATION_BATCH_MAX = 1_000   # items per POST /v1/reservations/batch


class Payments:
    def __init__(self, bank: CommercialBank, cb: CentralBankClient, session: aiohttp.ClientSession) -> None:
        self.bank = bank
        self.cb = cb
        self.session = session
        self.pool = bank.pool
        self.cb_key = bank.settings.central_bank_public_key()
        self.wakeup = asyncio.Event()       # set when there is new work for the recovery loop
        self._directory: dict[str, tuple[dict, float]] = {}
        self._slots = asyncio.Semaphore(bank.settings.settlement_concurrency)
        self._reservers: dict[str, MicroBatcher] = {}   # payee bank -> its reservations, batched
        s = bank.settings
        # the payer's record and any payment already recorded under the id: one query per batch of outbounds
        self._lookups: MicroBatcher[tuple[bytes, str], tuple] = MicroBatcher(
            lambda asked: store.payers_and_payments(self.pool, asked), batch_max=s.batch_max,
            wait_ms=s.batch_wait_ms, queue_max=s.batch_queue_max, flushers=s.flushers)
        self.nonces = store.nonce_store(bank.pool)

    # -- payer side: accept -------------------------------------------------------------------

    async def pay(self, stx: SignedTx) -> tuple[dict[str, Any], bool]:
        vtx = self.bank.validate(stx, ("outbound",))
        spend = self.bank.spend_of(vtx)
        payer, recorded_tx_id = await self._lookups.submit((spend.payer, vtx.body.reference))
        if payer is None:
            raise wallet_not_found()
        if recorded_tx_id == vtx.tx_id:                # a resubmission: its status, nothing else
            known = await store.get_payment(self.pool, vtx.body.reference)
            return payment_json(known), False
        assert vtx.body.payee is not None
        self.bank.check_per_payment(spend, payer)      # before asking the payee bank for anything
        if not spend.onus:   # on-us: the payee's limit is checked with its wallet locked, in the batch
            entry = await self._check_payee_bank(vtx.body.payee.ledger)
            await self._reserve(entry, vtx)
        result = await self.bank.submit(spend, payer, orjson.dumps(signed_to_json(stx)))
        if result.code == CREATED:
            failpoint("payment.after_outbound")
            self.wakeup.set()   # settle it or, on-us, take any excess to the deposit account
            payee = vtx.body.payee
            return {"payment_id": vtx.body.reference, "state": "completed" if spend.onus else "pending",
                    "amount": payee.amount, "payer": spend.payer.hex(), "payee_bank": payee.ledger,
                    "payee_key": payee.owner.hex(), "outbound_tx_id": vtx.tx_id.hex(), "settle_tx_id": None,
                    "refusal_code": None, "refund_tx_id": None, "attempts": 0, "last_error": None}, True
        row = await store.get_payment(self.pool, vtx.body.reference)
        assert row is not None, "an accepted outbound has its outbox row"
        return payment_json(row), result.code == CREATED

    async def _check_payee_bank(self, bank_id: str) -> dict:
        """The payee bank's directory entry; refuse before any value moves if it cannot be paid."""
        entry = await self._directory_entry(bank_id)
        if entry is None:
            raise Unavailable("the central bank's directory is not answering; retry", code="upstream_unavailable")
        if entry.get("status") == "unknown":
            raise Unprocessable(f"no bank {bank_id!r} is registered", code="payee_bank_unknown")
        if entry.get("status") != "active":
            raise Conflict(f"bank {bank_id!r} is suspended", code="payee_bank_suspended")
        return entry

    async def _reserve(self, entry: dict, vtx) -> None:
        """Ask the payee bank to reserve room in the payee's holding limit (refusals pass through).
        Reservations for one payee bank are sent together: a micro-batcher per bank, one signed
        POST /v1/reservations/batch per flush."""
        payee = vtx.body.payee
        batcher = self._reservers.get(payee.ledger)
        if batcher is None:
            s = self.bank.settings
            batcher = self._reservers[payee.ledger] = MicroBatcher(
                lambda items, bank=payee.ledger: self._reserve_batch(bank, items), batch_max=RESERVATION_BATCH_MAX,
                wait_ms=s.batch_wait_ms, queue_max=s.batch_queue_max, flushers=s.flushers)
        outcome = await batcher.submit((entry["callback_url"], vtx.body.reference, payee.owner, payee.amount))
        if isinstance(outcome, Exception):
            raise outcome

    async def _reserve_batch(self, payee_bank: str, items: list[tuple]) -> list[dict | Exception]:
        url = items[0][0].rstrip("/") + "/v1/reservations/batch"
        body = orjson.dumps({"reservations": [{"payment_id": pid, "payee_key": key.hex(), "amount": amount}
                                              for _, pid, key, amount in items]})
        headers = sign_request(self.bank.key, f"bank:{self.bank.bank_id}", "POST", urlsplit(url).path, body,
                               now=self.bank.now(), ledger=payee_bank)
        try:
            async with self.session.post(url, data=body, headers={**headers, "Content-Type": "application/json"}) as r:
                status, answer = r.status, await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status, answer = 0, b""
        if status != 200:
            log.warning("reservations at %s answered %s", payee_bank, status or "nothing")
            error = Unavailable("the payee bank is not answering; retry", code="payee_bank_unavailable")
            return [error] * len(items)
        return [self._reservation_outcome(result) for result in orjson.loads(answer)["results"]]

    def _reservation_outcome(self, result: dict) -> dict | Exception:
        """A reservation, or the payee bank's refusal as the error the payer's request answers."""
        if "code" not in result:
            return result
        refusal = RESERVATION_REFUSALS.get(result.get("status"))
        if refusal is None or not isinstance(result["code"], str):
            return Unavailable("the payee bank could not reserve; retry", code="payee_bank_unavailable")
        if result["code"] == "payee_holding_limit":
            self.bank.metrics.limit_refusals.labels("payee_holding_limit").inc()
        return refusal(f"the payee bank refused: {result.get('detail')}", code=result["code"])

    async def stop(self) -> None:
        for batcher in (self._lookups, *self._reservers.values()):
            await batcher.stop()

    async def _directory_entry(self, bank_id: str) -> dict | None:
        cached = self._directory.get(bank_id)
        if cached is not None and time.monotonic() - cached[1] < DIRECTORY_TTL_SECONDS:
            return cached[0]
        try:
            entry = await self.cb.directory_entry(bank_id)
        except APIError as exc:
            if exc.code != "bank_not_found":
                return None
            entry = {"bank_id": bank_id, "status": "unknown"}
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None
        self._directory[bank_id] = (entry, time.monotonic())
        return entry

    async def status(self, wallet: asyncpg.Record, payment_id: str) -> dict[str, Any]:
        row = await store.get_payment(self.pool, payment_id)
        if row is None or row["payer"] != wallet["public_key"]:
            raise NotFound("no such payment (or not yours)", code="payment_not_found")
        return payment_json(row)

    # -- payer side: settle, refund, push (driven by the recovery loop) -----------------------

    async def settle_pending(self) -> int:
        """Settle the pending payments: netted (one request and one tier-1 settle tx per chunk) when there
        are several and netting is on, else gross (one request per payment). How many moved on."""
        rows = await store.open_payments(self.pool, "pending", self.bank.settings.recovery_rows_max)
        chunk = self.bank.settings.settlement_batch_max
        if self.bank.settings.settlement_netting and len(rows) > 1:
            chunks = [rows[start:start + chunk] for start in range(0, len(rows), chunk)]
            return sum(await asyncio.gather(*(self._settle_netted(c) for c in chunks)))
        return sum(await asyncio.gather(*(self._bounded(self._settle, row) for row in rows)))

    async def _settle_netted(self, rows: list[asyncpg.Record]) -> int:
        failpoint("payment.before_settle")
        requests = [{"payment_id": r["payment_id"], "payer_bank": self.bank.bank_id, "payee_bank": r["payee_bank"],
                     "amount": r["amount"], "reference": r["outbound_tx_id"].hex()} for r in rows]
        try:
            outcomes = await self.cb.settle_batch(requests)
        except APIError as exc:   # e.g. one conflicting id refuses the whole request: settle one by one
            log.warning("netted settlement of %d refused (%s); settling gross", len(rows), exc.code)
            return sum(await asyncio.gather(*(self._bounded(self._settle, row) for row in rows)))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            await store.payments_error(self.pool, [r["payment_id"] for r in rows], f"central bank: {exc!r}",
                                       self.bank.now())
            return 0
        failpoint("payment.after_settle")
        notices, refused = [], 0
        for row, outcome in zip(rows, outcomes):
            if outcome["status"] == "settled":
                self.bank.metrics.settlements.labels("settled").inc()
                notices.append((row["payment_id"], orjson.dumps(outcome["notice"])))
            elif outcome.get("refusal_code") in FINAL_REFUSALS:
                self.bank.metrics.settlements.labels(outcome["refusal_code"]).inc()
                await self._refund(row, outcome["refusal_code"])
                refused += 1
        settled = await store.payments_settled(self.pool, notices, self.bank.now())
        failpoint("payment.after_record_notice")
        await self.push(settled)
        return len(settled) + refused

    async def push_settled(self) -> int:
        """Push the settled payments' notices to their payee banks; how many completed."""
        return await self.push(await store.open_payments(self.pool, "settled", self.bank.settings.recovery_rows_max))

    async def _bounded(self, step, row: asyncpg.Record) -> int:
        async with self._slots:
            try:
                return await step(row)
            except (aiohttp.ClientError, asyncio.TimeoutError, CBDCError) as exc:
                await store.payment_error(self.pool, row["payment_id"], f"{type(exc).__name__}: {exc}",
                                          self.bank.now())
                return 0

    async def _settle(self, row: asyncpg.Record) -> int:
        payment_id = row["payment_id"]
        failpoint("payment.before_settle")
        try:
            notice = await self.cb.settle(payment_id, self.bank.bank_id, row["payee_bank"], row["amount"],
                                          reference=row["outbound_tx_id"])
        except APIError as exc:
            if exc.code in FINAL_REFUSALS:
                failpoint("payment.after_settle")
                self.bank.metrics.settlements.labels(exc.code).inc()
                await self._refund(row, exc.code)
                return 1
            self.bank.metrics.settlements.labels("error").inc()
            await store.payment_error(self.pool, payment_id, f"central bank: {exc}", self.bank.now())
            return 0
        failpoint("payment.after_settle")
        self.bank.metrics.settlements.labels("settled").inc()
        settled = await store.payments_settled(self.pool, [(payment_id, orjson.dumps(notice))], self.bank.now())
        failpoint("payment.after_record_notice")
        await self.push(settled)
        return 1

    async def _refund(self, row: asyncpg.Record, code: str) -> None:
        vtx = self.bank.own_tx("mint", row["payer"], row["amount"], f"refund:{row['payment_id']}")
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await store.payment_refunded(conn, row["payment_id"], code, vtx.tx_id, self.bank.now())
            if moved is not None:
                await self.bank.apply_own(conn, vtx, activity_kind="refund", outgoing=-row["amount"],
                                          counterparty=row["payee_bank"])
        failpoint("payment.after_refund")
        if moved is not None:
            log.info("payment %s refused (%s): payer refunded", row["payment_id"], code)

    async def push(self, rows: list[asyncpg.Record]) -> int:
        """Hand settled payments to their payee banks, in batches (POST /v1/inbound/batch: one request
        and one DB transaction there per chunk); how many are now completed."""
        by_bank: dict[str, list[asyncpg.Record]] = {}
        for row in rows:
            by_bank.setdefault(row["payee_bank"], []).append(row)
        chunk = self.bank.settings.settlement_batch_max
        jobs = [(bank, group[n:n + chunk]) for bank, group in by_bank.items() for n in range(0, len(group), chunk)]
        return sum(await asyncio.gather(*(self._push_chunk(bank, group) for bank, group in jobs)))

    async def _push_chunk(self, payee_bank: str, rows: list[asyncpg.Record]) -> int:
        now = self.bank.now()
        ids = [r["payment_id"] for r in rows]
        entry = await self._directory_entry(payee_bank)
        if entry is None or "callback_url" not in entry:
            await store.payments_error(self.pool, ids, "payee bank's URL unknown", now)
            return 0
        body = b'{"items":[' + b",".join(b'{"notice":' + r["notice"] + b',"outbound":' + r["outbound_tx"] + b"}"
                                          for r in rows) + b"]}"
        url = entry["callback_url"].rstrip("/") + "/v1/inbound/batch"
        try:
            async with self._slots:
                async with self.session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    status, answer = r.status, await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            await store.payments_error(self.pool, ids, f"payee bank: {type(exc).__name__}: {exc}", now)
            return 0
        if status != 200:
            await store.payments_error(self.pool, ids, f"payee bank answered {status}: "
                                       f"{answer[:200].decode('utf-8', 'replace')}", now)
            return 0
        results = orjson.loads(answer)["results"]
        credited = [pid for pid, result in zip(ids, results) if result.get("status") == "credited"]
        failpoint("payment.after_push")
        done = await store.payments_completed(self.pool, credited, self.bank.now())
        for pid, result in zip(ids, results):
            if result.get("status") != "credited":
                await store.payment_error(self.pool, pid, f"payee bank refused: {result.get('code')}", now)
        return done

    # -- payee side ---------------------------------------------------------------------------

    async def authenticate_bank(self, request, body: bytes) -> str:
        """The registered, active bank that signed this request (key from the central bank's directory)."""
        sig = parse_signature(request.headers)
        kind, _, bank_id = sig.key_id.partition(":")
        entry = await self._directory_entry(bank_id) if kind == "bank" and bank_id != self.bank.bank_id else None
        key = bytes.fromhex(entry["public_key"]) if entry is not None and "public_key" in entry else None
        verify_request(sig, request.method, request.raw_path, body, key_for=lambda _: key, now=self.bank.now(),
                       window_seconds=self.bank.settings.request_window_seconds, ledger=self.bank.bank_id)
        await check_nonce(self.nonces, sig)
        if entry.get("status") != "active":
            raise Forbidden(f"bank {bank_id!r} is suspended", code="bank_suspended")
        return bank_id

    async def reserve(self, payer_bank: str, payment_id: str, payee_key: str, amount: int) -> tuple[dict, bool]:
        """Reserve room in a payee's holding limit for a payment, once per payment id."""
        [result] = await self.reserve_many(payer_bank, [{"payment_id": payment_id, "payee_key": payee_key,
                                                         "amount": amount}])
        if isinstance(result, Exception):
            raise result
        return result

    async def reserve_many(self, payer_bank: str, items: list[Any]) -> list[tuple[dict, bool] | Exception]:
        """Reserve room for each payment (once per payment id), in one DB transaction with the payees'
        rows locked (key order); each item's (reservation, fresh), or its refusal, in order."""
        out: list[Any] = [None] * len(items)
        asked: dict[int, tuple[str, bytes, int]] = {}
        for n, item in enumerate(items):
            try:
                asked[n] = self._reservation_request(payer_bank, item)
            except CBDCError as exc:
                out[n] = exc
        now = self.bank.now()
        keys = sorted({key for _, key, _ in asked.values()})
        async with self.pool.acquire() as conn, conn.transaction():
            wallets = await store.lock_wallets(conn, keys, now)
            known, credited = await store.known_reservations(conn, [pid for pid, _, _ in asked.values()])
            room = {k: self.bank.tier(w).holding - w["held"] - w["reserved"] for k, w in wallets.items()}
            rows = {}
            for n, (pid, key, amount) in asked.items():
                wallet = wallets.get(key)
                if pid in credited:   # its reservation was released when it was credited
                    out[n] = Conflict("this payment was already credited", code="payment_credited")
                elif pid in known or pid in rows:
                    continue
                elif wallet is None:
                    out[n] = Unprocessable("the payee is not a wallet of this bank", code="payee_unknown")
                elif amount > max(room[key], 0) and wallet["deposit_account"] is None:
                    self.bank.metrics.limit_refusals.labels("payee_holding_limit").inc()
                    out[n] = Conflict("the payee's wallet would exceed its holding limit", code="payee_holding_limit")
                else:
                    rows[pid] = (pid, payer_bank, key, amount, min(amount, max(room[key], 0)))
                    room[key] -= rows[pid][4]
            inserted = await store.insert_reservations(conn, list(rows.values()), now, now + RESERVATION_TTL_SECONDS)
            known.update(inserted)
            raced = [pid for pid in rows if pid not in inserted]   # reserved meanwhile by another process
            if raced:
                known.update(await store.get_reservations(conn, raced))
        fresh = set(inserted)
        for n, (pid, key, amount) in asked.items():
            if out[n] is not None:
                continue
            row = known[pid]
            if (row["payer_bank"], row["payee_key"], row["amount"]) != (payer_bank, key, amount):
                out[n] = Conflict("this payment id was reserved for another payment", code="payment_conflict")
            else:
                out[n] = (_reservation_json(row), pid in fresh)
                fresh.discard(pid)   # a repeat of the id in the same batch is not fresh
        return out

    @staticmethod
    def _reservation_request(payer_bank: str, item: Any) -> tuple[str, bytes, int]:
        data = strict_object(item, {"payment_id": str, "payee_key": str, "amount": int})
        payment_id, payee_key, amount = data["payment_id"], data["payee_key"], data["amount"]
        if not PAYMENT_ID_RE.fullmatch(payment_id) or not payment_id.startswith(payer_bank + ":"):
            raise invalid("payment_id", f"a payment id of {payer_bank}: '{payer_bank}:<id>'", "payment_id_invalid")
        key = bytes.fromhex(payee_key) if len(payee_key) == 64 and payee_key == payee_key.lower() else b""
        if not crypto.is_valid_public_key(key) or not is_amount(amount):
            raise invalid("payee_key", "a valid payee key and a positive amount", "reservation_invalid")
        return payment_id, key, amount

    async def credit(self, body: Any) -> tuple[dict[str, Any], bool]:
        """Credit the payee of a settled payment, once per payment id."""
        notice, vtx = self._verified(body)
        [(answer, fresh)] = await self._credit_many([(notice, vtx)])
        return answer, fresh

    async def credit_batch(self, body: Any) -> list[dict[str, Any]]:
        """Credit many settled payments (POST /v1/inbound/batch): each item checked alone, the fresh
        ones credited in one DB transaction; one result each, in order: the credit (with ``fresh``)
        or a problem object."""
        items = strict_object(body, {"items": list})["items"]
        if not 1 <= len(items) <= INBOUND_BATCH_MAX:
            raise invalid("items", f"1-{INBOUND_BATCH_MAX} items", "batch_size_invalid")
        verdicts: list[tuple | dict] = []
        for item in items:
            try:
                verdicts.append(self._verified(item))
            except CBDCError as exc:
                verdicts.append(exc.to_problem())
        good = [v for v in verdicts if isinstance(v, tuple)]
        credited = iter(await self._credit_many(good))
        results = []
        for v in verdicts:
            if isinstance(v, dict):
                results.append(v)
            else:
                answer, fresh = next(credited)
                results.append({**answer, "fresh": fresh})
        return results

    def _verified(self, item: Any) -> tuple[Any, Any]:
        """The notice (signed by the central bank, for this bank) and the payer-signed outbound it binds."""
        data = strict_object(item, {"notice": dict, "outbound": dict})
        notice, signature = notice_from_json(data["notice"])
        if not verify_notice(self.cb_key, notice, signature):
            self.bank.metrics.inbound.labels("notice_signature_invalid").inc()
            raise Unprocessable("the notice is not signed by the central bank", code="notice_signature_invalid")
        if notice.payee_bank != self.bank.bank_id:
            raise Unprocessable("the notice is for another bank", code="notice_wrong_bank")
        return notice, self._bound_outbound(data["outbound"], notice)

    async def _credit_many(self, verified: list[tuple[Any, Any]]) -> list[tuple[dict[str, Any], bool]]:
        """Credit each (notice, outbound) once per payment id; (the recorded credit, fresh) each, in order."""
        if not verified:
            return []
        ids = [notice.payment_id for notice, _ in verified]
        recorded = await store.get_inbounds(self.pool, ids)
        todo = {n.payment_id: (n, vtx) for n, vtx in verified if n.payment_id not in recorded}
        fresh: set[str] = set()
        if todo:
            failpoint("inbound.before_credit")
            fresh = await self._credit_once(list(todo.values()))
            failpoint("inbound.after_credit")
            recorded = await store.get_inbounds(self.pool, ids)
            if any(recorded[pid]["deposit_amount"] for pid in fresh):
                self.wakeup.set()   # the recovery loop defunds the excess at tier 1 and credits the deposit
        out, answered = [], set()
        for pid in ids:
            new = pid in fresh and pid not in answered
            answered.add(pid)
            self.bank.metrics.inbound.labels("credited" if new else "duplicate").inc()
            out.append((inbound_json(recorded[pid]), new))
        return out

    async def _credit_once(self, todo: list[tuple[Any, Any]]) -> set[str]:
        """One DB transaction: the inbound rows (unique payment ids), an inbound tx for what each payee
        may hold, and -- reverse waterfall -- a defund row for the excess, bound for its deposit
        account. The payees' rows are locked (key order); the payment ids recorded here are returned."""
        now = self.bank.now()
        async with self.pool.acquire() as conn, conn.transaction():
            payees = sorted({vtx.body.payee.owner for _, vtx in todo})
            ids = [n.payment_id for n, _ in todo]
            wallets = await store.lock_wallets(conn, payees, now, excluding=ids)
            room = {key: self.bank.tier(w).holding - w["held"] - w["reserved"] for key, w in wallets.items()}
            rows, inbound = [], {}
            for notice, vtx in todo:
                payee = vtx.body.payee.owner
                wallet = wallets.get(payee)
                coins = notice.amount
                if wallet is not None and wallet["deposit_account"] is not None:
                    coins = min(notice.amount, max(room[payee], 0))
                if wallet is not None:
                    room[payee] -= coins
                if coins:
                    inbound[notice.payment_id] = self.bank.own_tx("inbound", payee, coins, f"in:{notice.payment_id}")
                rows.append((notice.payment_id, notice.payer_bank, payee, notice.amount, notice.amount - coins,
                             vtx.tx_id, notice.tx_id, inbound[notice.payment_id].tx_id if coins else None))
            fresh = await store.insert_inbounds(conn, rows, now)
            applied = [(pid, vtx) for pid, vtx in inbound.items() if pid in fresh]
            counterparty = {n.payment_id: f"{n.payer_bank}:{vtx.body.inputs[0].owner.hex()}" for n, vtx in todo}
            await self.bank.apply_many_own(conn, applied, activity_kind="inbound", counterparty=counterparty)
            for notice, vtx in todo:
                pid = notice.payment_id
                excess = notice.amount - (inbound[pid].body.outputs[0].amount if pid in inbound else 0)
                if pid in fresh and excess:
                    payee = vtx.body.payee.owner
                    await store.insert_defund(conn, f"waterfall:{pid}", payee, wallets[payee]["deposit_account"],
                                              excess, None, now, kind="waterfall")
        return fresh

    def _bound_outbound(self, outbound: Any, notice) -> Any:
        """The payer-signed outbound, checked against the notice (Unprocessable outbound_mismatch)."""
        stx = signed_from_json(outbound)
        try:   # expiry was the payer bank's to check when it accepted the outbound: now=0
            vtx = validate(stx, LedgerRules(notice.payer_bank), 0)
        except CBDCError as exc:
            raise Unprocessable(f"the outbound is not valid for {notice.payer_bank}: {exc.code}",
                                code="outbound_invalid") from None
        body = vtx.body
        if not (body.kind == "outbound" and vtx.tx_id == notice.reference and body.payee is not None
                and body.payee.ledger == self.bank.bank_id and body.payee.amount == notice.amount
                and body.reference == notice.payment_id):
            self.bank.metrics.inbound.labels("outbound_mismatch").inc()
            raise Unprocessable("the outbound does not match the notice", code="outbound_mismatch")
        return vtx


def payment_json(row: asyncpg.Record) -> dict[str, Any]:
    notice = orjson.loads(row["notice"]) if row["notice"] else None
    return {"payment_id": row["payment_id"], "state": row["state"], "amount": row["amount"],
            "payer": row["payer"].hex(), "payee_bank": row["payee_bank"], "payee_key": row["payee_key"].hex(),
            "outbound_tx_id": row["outbound_tx_id"].hex(), "settle_tx_id": notice["tx_id"] if notice else None,
            "refusal_code": row["refusal_code"],
            "refund_tx_id": row["refund_tx_id"].hex() if row["refund_tx_id"] else None,
            "attempts": row["attempts"], "last_error": row["last_error"]}


def inbound_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"payment_id": row["payment_id"], "status": "credited", "payer_bank": row["payer_bank"],
            "payee_key": row["payee_key"].hex(), "amount": row["amount"], "deposit_amount": row["deposit_amount"],
            "inbound_tx_id": row["inbound_tx_id"].hex() if row["inbound_tx_id"] else None,
            "settle_tx_id": row["settle_tx_id"].hex() if row["settle_tx_id"] else None}


def _reservation_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"payment_id": row["payment_id"], "status": "reserved", "payee_key": row["payee_key"].hex(),
            "amount": row["amount"], "as_coins": row["room"], "to_deposit": row["amount"] - row["room"],
            "expires_at": row["expires_at"]}
