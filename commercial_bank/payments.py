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
from commercial_bank.ledger import CommercialBank
from urllib.parse import urlsplit

from shared import crypto
from shared.amounts import is_amount
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
        self.nonces = store.nonce_store(bank.pool)

    # -- payer side: accept -------------------------------------------------------------------

    async def pay(self, stx: SignedTx) -> tuple[dict[str, Any], bool]:
        vtx = self.bank.validate(stx, ("outbound",))
        spend = self.bank.spend_of(vtx)
        payer = await self.bank.wallet(spend.payer)
        known = await store.get_payment(self.pool, vtx.body.reference)
        if known is not None and known["outbound_tx_id"] == vtx.tx_id:
            return payment_json(known), False          # a resubmission: its status, nothing else
        assert vtx.body.payee is not None
        self.bank.check_per_payment(spend, payer)      # before asking the payee bank for anything
        if not spend.onus:   # on-us: the payee's limit is checked with its wallet locked, in the batch
            entry = await self._check_payee_bank(vtx.body.payee.ledger)
            await self._reserve(entry, vtx)
        result = await self.bank.submit(spend, payer, orjson.dumps(signed_to_json(stx)))
        if result.code == CREATED:
            failpoint("payment.after_outbound")
            self.wakeup.set()   # settle it or, on-us, take any excess to the deposit account
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
        """Ask the payee bank to reserve room in the payee's holding limit (refusals pass through)."""
        payee = vtx.body.payee
        url = entry["callback_url"].rstrip("/") + "/v1/reservations"
        body = orjson.dumps({"payment_id": vtx.body.reference, "payee_key": payee.owner.hex(), "amount": payee.amount})
        headers = sign_request(self.bank.key, f"bank:{self.bank.bank_id}", "POST", urlsplit(url).path, body,
                               now=self.bank.now(), ledger=payee.ledger)
        try:
            async with self.session.post(url, data=body, headers={**headers, "Content-Type": "application/json"}) as r:
                status, answer = r.status, await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Unavailable("the payee bank is not answering; retry", code="payee_bank_unavailable") from exc
        if status in (200, 201):
            return
        problem = orjson.loads(answer) if answer.startswith(b"{") else {}
        refusal = RESERVATION_REFUSALS.get(status)
        if refusal is not None and isinstance(problem.get("code"), str):
            if problem["code"] == "payee_holding_limit":
                self.bank.metrics.limit_refusals.labels("payee_holding_limit").inc()
            raise refusal(f"the payee bank refused: {problem.get('detail')}", code=problem["code"])
        log.warning("reservation at %s answered %s", payee.ledger, status)
        raise Unavailable("the payee bank could not reserve; retry", code="payee_bank_unavailable")

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
        are several and netting is on, else gross (one request per payment)."""
        rows = await store.open_payments(self.pool, "pending", self.bank.settings.recovery_rows_max)
        chunk = self.bank.settings.settlement_batch_max
        if self.bank.settings.settlement_netting and len(rows) > 1:
            for start in range(0, len(rows), chunk):
                await self._settle_netted(rows[start:start + chunk])
        else:
            await asyncio.gather(*(self._bounded(self._settle, row) for row in rows))
        return len(rows)

    async def _settle_netted(self, rows: list[asyncpg.Record]) -> None:
        failpoint("payment.before_settle")
        requests = [{"payment_id": r["payment_id"], "payer_bank": self.bank.bank_id, "payee_bank": r["payee_bank"],
                     "amount": r["amount"], "reference": r["outbound_tx_id"].hex()} for r in rows]
        try:
            outcomes = await self.cb.settle_batch(requests)
        except APIError as exc:   # e.g. one conflicting id refuses the whole request: settle one by one
            log.warning("netted settlement of %d refused (%s); settling gross", len(rows), exc.code)
            await asyncio.gather(*(self._bounded(self._settle, row) for row in rows))
            return
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            for row in rows:
                await store.payment_error(self.pool, row["payment_id"], f"central bank: {exc!r}", self.bank.now())
            return
        failpoint("payment.after_settle")
        settled = []
        for row, outcome in zip(rows, outcomes):
            if outcome["status"] == "settled":
                self.bank.metrics.settlements.labels("settled").inc()
                moved = await store.payment_settled(self.pool, row["payment_id"], orjson.dumps(outcome["notice"]),
                                                    self.bank.now())
                settled += [moved] if moved is not None else []
            elif outcome.get("refusal_code") in FINAL_REFUSALS:
                self.bank.metrics.settlements.labels(outcome["refusal_code"]).inc()
                await self._refund(row, outcome["refusal_code"])
        failpoint("payment.after_record_notice")
        await asyncio.gather(*(self._bounded(self._push, row) for row in settled))

    async def push_settled(self) -> int:
        rows = await store.open_payments(self.pool, "settled", self.bank.settings.recovery_rows_max)
        await asyncio.gather(*(self._bounded(self._push, row) for row in rows))
        return len(rows)

    async def _bounded(self, step, row: asyncpg.Record) -> None:
        async with self._slots:
            try:
                await step(row)
            except (aiohttp.ClientError, asyncio.TimeoutError, CBDCError) as exc:
                await store.payment_error(self.pool, row["payment_id"], f"{type(exc).__name__}: {exc}",
                                          self.bank.now())

    async def _settle(self, row: asyncpg.Record) -> None:
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
                return
            self.bank.metrics.settlements.labels("error").inc()
            await store.payment_error(self.pool, payment_id, f"central bank: {exc}", self.bank.now())
            return
        failpoint("payment.after_settle")
        self.bank.metrics.settlements.labels("settled").inc()
        settled = await store.payment_settled(self.pool, payment_id, orjson.dumps(notice), self.bank.now())
        failpoint("payment.after_record_notice")
        if settled is not None:
            await self._push(settled)

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

    async def _push(self, row: asyncpg.Record) -> None:
        entry = await self._directory_entry(row["payee_bank"])
        if entry is None or "callback_url" not in entry:
            await store.payment_error(self.pool, row["payment_id"], "payee bank's URL unknown", self.bank.now())
            return
        body = b'{"notice":' + row["notice"] + b',"outbound":' + row["outbound_tx"] + b"}"
        url = entry["callback_url"].rstrip("/") + "/v1/inbound"
        async with self.session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            answer = await response.read()
        if response.status in (200, 201):
            failpoint("payment.after_push")
            await store.payment_completed(self.pool, row["payment_id"], self.bank.now())
            return
        await store.payment_error(self.pool, row["payment_id"], f"payee bank answered {response.status}: "
                                  f"{answer[:200].decode('utf-8', 'replace')}", self.bank.now())

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
        if not PAYMENT_ID_RE.fullmatch(payment_id) or not payment_id.startswith(payer_bank + ":"):
            raise invalid("payment_id", f"a payment id of {payer_bank}: '{payer_bank}:<id>'", "payment_id_invalid")
        key = bytes.fromhex(payee_key) if len(payee_key) == 64 and payee_key == payee_key.lower() else b""
        if not crypto.is_valid_public_key(key) or not is_amount(amount):
            raise invalid("payee_key", "a valid payee key and a positive amount", "reservation_invalid")
        now = self.bank.now()
        async with self.pool.acquire() as conn, conn.transaction():
            wallet = (await store.lock_wallets(conn, [key])).get(key)
            if wallet is None:
                raise Unprocessable("the payee is not a wallet of this bank", code="payee_unknown")
            row = await store.get_reservation(conn, payment_id)
            if row is None:
                room = await self._room(conn, wallet, payment_id, now)
                if amount > room and wallet["deposit_account"] is None:
                    self.bank.metrics.limit_refusals.labels("payee_holding_limit").inc()
                    raise Conflict("the payee's wallet would exceed its holding limit", code="payee_holding_limit")
                fresh = await store.insert_reservation(conn, payment_id, payer_bank, key, amount, min(amount, room),
                                                       now, now + RESERVATION_TTL_SECONDS)
                if fresh is not None:
                    return _reservation_json(fresh), True
                row = await store.get_reservation(conn, payment_id)
        if (row["payer_bank"], row["payee_key"], row["amount"]) != (payer_bank, key, amount):
            raise Conflict("this payment id was reserved for another payment", code="payment_conflict")
        return _reservation_json(row), False

    async def _room(self, conn: asyncpg.Connection, wallet: asyncpg.Record, payment_id: str, now: int) -> int:
        """What the (locked) wallet may still receive as coins, net of other payments' reservations."""
        key = wallet["public_key"]
        held = (await store.balances(conn, [key])).get(key, 0)
        held += (await store.reserved(conn, [key], now, excluding=payment_id)).get(key, 0)
        return max(self.bank.tier(wallet).holding - held, 0)

    async def credit(self, body: Any) -> tuple[dict[str, Any], bool]:
        """Credit the payee of a settled payment, once per payment id."""
        data = strict_object(body, {"notice": dict, "outbound": dict})
        notice, signature = notice_from_json(data["notice"])
        if not verify_notice(self.cb_key, notice, signature):
            self.bank.metrics.inbound.labels("notice_signature_invalid").inc()
            raise Unprocessable("the notice is not signed by the central bank", code="notice_signature_invalid")
        if notice.payee_bank != self.bank.bank_id:
            raise Unprocessable("the notice is for another bank", code="notice_wrong_bank")
        vtx = self._bound_outbound(data["outbound"], notice)
        payee = vtx.body.payee
        assert payee is not None
        recorded = await store.get_inbound(self.pool, notice.payment_id)
        fresh = False
        if recorded is None:
            failpoint("inbound.before_credit")
            fresh = await self._credit_once(notice, vtx)
            failpoint("inbound.after_credit")
            recorded = await store.get_inbound(self.pool, notice.payment_id)
        self.bank.metrics.inbound.labels("credited" if fresh else "duplicate").inc()
        return inbound_json(recorded), fresh

    async def _credit_once(self, notice, vtx) -> bool:
        """One DB transaction: the inbound row (unique payment id), the inbound tx for what the payee may
        hold, and -- reverse waterfall -- a defund row for the excess, bound for its deposit account."""
        payee, pid, now = vtx.body.payee.owner, notice.payment_id, self.bank.now()
        async with self.pool.acquire() as conn, conn.transaction():
            wallet = (await store.lock_wallets(conn, [payee])).get(payee)
            coins = notice.amount
            if wallet is not None and wallet["deposit_account"] is not None:
                coins = min(notice.amount, await self._room(conn, wallet, pid, now))
            inbound = self.bank.own_tx("inbound", payee, coins, f"in:{pid}") if coins else None
            fresh = await store.insert_inbound(conn, pid, notice.payer_bank, payee, notice.amount,
                                               notice.amount - coins, vtx.tx_id, notice.tx_id,
                                               inbound.tx_id if inbound else None, now)
            if fresh and inbound is not None:
                await self.bank.apply_own(conn, inbound, activity_kind="inbound",
                                          counterparty=f"{notice.payer_bank}:{vtx.body.inputs[0].owner.hex()}")
            if fresh and coins < notice.amount:
                await store.insert_defund(conn, f"waterfall:{pid}", payee, wallet["deposit_account"],
                                          notice.amount - coins, None, now, kind="waterfall")
        if fresh and coins < notice.amount:
            self.wakeup.set()   # the recovery loop defunds the excess at tier 1 and credits the deposit
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
