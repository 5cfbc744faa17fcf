"""Settlement of cross-bank retail payments: escrow(payer) -> escrow(payee), once per payment id.

A payer bank settles one payment (gross) or many at once (netted): the central bank then applies
ONE settle transaction that pays each payee bank the sum of its payments in the batch, while
recording every payment id once, each with its own signed notice naming that transaction.

Choice: the central bank builds and signs the settle transaction itself, on the payer bank's
signed request (the request's key id and signature are stored with each payment as evidence of
the instruction). The payer bank therefore need not track its escrow outputs, and concurrent
settlements of one bank never race for the same outputs. Escrow is spent under the central bank's
key only for ``settle`` (its rules map the escrows to that key); for ``defund`` only the bank's
own key can spend it.

Steps, in one database transaction:
 1. lock the payer's bank row (one settlement per payer at a time; re-checks it is active);
 2. payment ids already recorded answer with their recorded outcome if the request names the
    same parties and amount; any difference refuses the whole request (409 payment_conflict);
 3. for the new ones: refuse those whose payee is unknown or suspended, then pick the payer's
    largest escrow outputs (locked); if they cannot cover the total, refuse all new ones
    (escrow_insufficient). A refusal is recorded as the payment's final outcome, so a retry can
    never settle a payment the payer was told was refused;
 4. apply the settle transaction through the engine and record the payments with their notices;
    both commit together (I5: a payment id is settled at most once).
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from central_bank import store
from central_bank.auth import Principal
from central_bank.ledger import CentralBank, history_entry
from shared.amounts import checked_sum, is_amount
from shared.crypto import sha256
from shared.errors import Conflict, Forbidden, NotFound, Unavailable, Unprocessable
from shared.fields import invalid
from shared.failpoints import failpoint
from shared.notice import PAYMENT_ID_RE, REFERENCE_BYTES, UNBOUND, SettlementNotice, notice_to_json, sign_notice
from shared.tx import LEDGER_CB, LEDGER_ID_RE, Input, Output, Tx
from shared.validation import sign_valid

RETRIES_MAX = 3
SETTLE_INPUTS_MAX = 256   # escrow outputs one settle transaction may spend
CONSOLIDATE_INPUTS = 8    # ... and at least this many when there are, so escrow stays compact
SETTLED, REFUSED = "settled", "refused"


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    payment_id: str
    payer_bank: str
    payee_bank: str
    amount: int
    reference: str = UNBOUND.hex()   # opaque 32 bytes (hex) the payer binds the payment to; signed in the notice

    @property
    def reference_bytes(self) -> bytes:
        return bytes.fromhex(self.reference)


_HEX32_RE = re.compile(r"[0-9a-f]{%d}" % (2 * REFERENCE_BYTES))


def check_request(bank: store.Bank, request: PaymentRequest, index: int | None = None) -> None:
    where = {} if index is None else {"index": index}
    if not PAYMENT_ID_RE.fullmatch(request.payment_id):
        raise Unprocessable("a payment id is 1-128 of A-Z a-z 0-9 . _ : - (starting with a letter or digit)",
                            code="payment_id_invalid", extra={"field": "payment_id"}, **where)
    if request.payer_bank != bank.bank_id:
        raise Forbidden("a bank may settle only its own payments", code="not_permitted",
                        extra={"field": "payer_bank"}, **where)
    if not request.payment_id.startswith(request.payer_bank + ":"):
        # payment ids are namespaced by the payer, so no bank can take (squat) another bank's id
        raise Unprocessable(f"a payment id starts with the payer bank's id, e.g. {request.payer_bank}:42",
                            code="payment_id_invalid", extra={"field": "payment_id"}, **where)
    if not LEDGER_ID_RE.fullmatch(request.payee_bank) or request.payee_bank == request.payer_bank:
        raise Unprocessable("the payee is another registered bank's id", code="payee_bank_invalid",
                            extra={"field": "payee_bank"}, **where)
    if not is_amount(request.amount):
        raise Unprocessable("a positive integer amount in minor units", code="amount_invalid",
                            extra={"field": "amount"}, **where)
    if not _HEX32_RE.fullmatch(request.reference):
        raise Unprocessable("the reference is 32 bytes as 64 lower-case hex characters",
                            code="reference_invalid", extra={"field": "reference"}, **where)


def check_batch(bank: store.Bank, requests: list[PaymentRequest], payments_max: int) -> None:
    if not 1 <= len(requests) <= payments_max:
        raise invalid("payments", f"1..{payments_max} payments per request", "batch_size_invalid")
    seen: set[str] = set()
    for n, request in enumerate(requests):
        check_request(bank, request, n)
        if request.payment_id in seen:
            raise Unprocessable("a payment id appears twice", code="duplicate_payment_id", index=n)
        seen.add(request.payment_id)
    if checked_sum(r.amount for r in requests) is None:
        raise invalid("payments", "the amounts of one request must sum to a valid amount", "amount_overflow")


class Settlement:
    def __init__(self, cb: CentralBank, payments_max: int) -> None:
        self.cb = cb
        self.payments_max = payments_max

    async def settle(self, principal: Principal, request: PaymentRequest) -> tuple[dict[str, Any], bool]:
        """Gross: the payment's notice, and True if this call settled it (False: a retry)."""
        assert principal.bank is not None
        check_request(principal.bank, request)
        [(row, fresh)] = await self._settle(principal, [request])
        if row["status"] == REFUSED:
            raise Conflict("the central bank refused this payment", code=row["refusal_code"])
        return _notice_json(row), fresh

    async def settle_batch(self, principal: Principal, requests: list[PaymentRequest]) -> list[dict[str, Any]]:
        """Netted: one outcome per payment, in request order; one settle tx for the new ones."""
        assert principal.bank is not None
        check_batch(principal.bank, requests, self.payments_max)
        return [_outcome_json(row) for row, _ in await self._settle(principal, requests)]

    async def _settle(self, principal: Principal, requests: list[PaymentRequest]) -> list[tuple[dict, bool]]:
        started = time.perf_counter()
        for _ in range(RETRIES_MAX):
            try:
                outcomes = await self._settle_once(principal, requests)
                break
            except store.PaymentExists:
                continue  # another payer recorded one of these ids meanwhile: re-read them
        else:
            raise AssertionError("payment ids kept changing under us")
        fresh = [row for row, new in outcomes if new]
        for row in fresh:
            self.cb.metrics.payments.labels(row["status"]).inc()
        self.cb.metrics.payments.labels("replayed").inc(len(outcomes) - len(fresh))
        if any(row["status"] == SETTLED for row in fresh):
            self.cb.metrics.settlement_seconds.observe(time.perf_counter() - started)
            self.cb.metrics.transactions.labels("settle", "created").inc()
        return outcomes

    async def _settle_once(self, principal: Principal, requests: list[PaymentRequest]) -> list[tuple[dict, bool]]:
        ids = [r.payment_id for r in requests]
        recorded = await store.get_payments(self.cb.pool, ids)
        if len(recorded) == len(requests):
            replayed = _replay(requests, recorded)
            return [replayed[i] for i in ids]
        async with self.cb.pool.acquire() as conn, conn.transaction():
            payer = await store.lock_bank(conn, requests[0].payer_bank)
            if payer is None or not payer.active:
                raise Forbidden(f"bank {requests[0].payer_bank!r} is suspended", code="bank_suspended")
            recorded = await store.get_payments(conn, ids)
            replayed = _replay(requests, recorded)  # raises on a conflict
            new = [r for r in requests if r.payment_id not in recorded]
            rows = await self._record(conn, payer, principal, new) if new else {}
            if new:
                failpoint("settle.before_commit")
        if new:
            failpoint("settle.after_commit")
        return [replayed[r.payment_id] if r.payment_id in recorded else (rows[r.payment_id], True)
                for r in requests]

    async def _record(self, conn: asyncpg.Connection, payer: store.Bank, principal: Principal,
                      new: list[PaymentRequest]) -> dict[str, dict]:
        now = self.cb.now()
        payees = await store.banks_by_ids(conn, sorted({r.payee_bank for r in new}))
        refusals = {r.payment_id: _payee_refusal(payees.get(r.payee_bank)) for r in new}
        accepted = [r for r in new if refusals[r.payment_id] is None]
        tx_id = await self._move(conn, payer, payees, accepted, now) if accepted else None
        if accepted and tx_id is None:
            refusals.update({r.payment_id: "escrow_insufficient" for r in accepted})
        rows = {}
        for r in new:
            code = refusals[r.payment_id]
            row = {"payment_id": r.payment_id, "payer_bank": r.payer_bank, "payee_bank": r.payee_bank,
                   "amount": r.amount, "status": REFUSED if code else SETTLED, "refusal_code": code,
                   "tx_id": None if code else tx_id, "settled_at": now, "signature": None,
                   "request_key": principal.signature.key_id, "request_signature": principal.signature.signature,
                   "reference": r.reference_bytes}
            if not code:
                row["signature"] = sign_notice(self.cb.key, _notice(row))
            rows[r.payment_id] = row
        await store.insert_payments(conn, list(rows.values()))
        return rows

    async def _move(self, conn: asyncpg.Connection, payer: store.Bank, payees: dict[str, store.Bank],
                    accepted: list[PaymentRequest], now: int) -> bytes | None:
        """Apply one settle tx paying each payee its total; its tx id, or None if escrow is short."""
        per_payee: dict[str, int] = {}
        for r in accepted:
            per_payee[r.payee_bank] = per_payee.get(r.payee_bank, 0) + r.amount
        amount = sum(per_payee.values())
        signers = {payer.escrow_owner: self.cb.key.public_key}
        signers.update({payees[p].escrow_owner: self.cb.key.public_key for p in per_payee})
        rules = dataclasses.replace(self.cb.rules(signers), inputs_max=SETTLE_INPUTS_MAX)
        if len(per_payee) >= rules.outputs_max:
            raise invalid("payments", f"at most {rules.outputs_max - 1} payee banks per request",
                          "too_many_payees")
        chosen = await self._choose_inputs(conn, payer, amount)
        if chosen is None:
            return None
        total = sum(i.amount for i in chosen)
        outputs = [Output(payees[p].escrow_owner, v) for p, v in per_payee.items()]
        if total > amount:
            outputs.append(Output(payer.escrow_owner, total - amount))
        body = Tx(LEDGER_CB, "settle", tuple(chosen), tuple(outputs), reference=_reference(accepted))
        vtx = sign_valid(body, self.cb.key, rules, now)
        [result] = await self.cb.engine.apply([vtx], conn)
        assert result.code == "created", f"a settle of locked outputs was answered {result.code}"
        await store.record_history(conn, [history_entry(vtx, result)])
        return vtx.tx_id

    async def _choose_inputs(self, conn: asyncpg.Connection, payer: store.Bank, amount: int) -> list[Input] | None:
        """The payer's largest escrow outputs covering ``amount`` (at least CONSOLIDATE_INPUTS of them
        when it has that many, so escrow does not fragment), locked; None if its escrow is short."""
        chosen, total = [], 0
        for out in await store.lock_largest_outputs(conn, payer.escrow_owner, SETTLE_INPUTS_MAX):
            if total >= amount and len(chosen) >= CONSOLIDATE_INPUTS:
                break
            chosen.append(Input(out["tx_id"], out["idx"], out["owner"], out["amount"]))
            total += out["amount"]
        if total >= amount:
            return chosen
        balance, _ = (await store.balances(conn, [payer.escrow_owner])).get(payer.escrow_owner, (0, 0))
        if balance < amount:
            return None
        raise Unavailable("the escrow is spread over too many outputs; consolidate it (a defund paying "
                          "the escrow) and retry", code="escrow_fragmented")

    async def payment(self, principal: Principal, payment_id: str) -> dict[str, Any]:
        row = await store.get_payment(self.cb.pool, payment_id)
        if row is None or not (principal.is_operator or principal.id in (row["payer_bank"], row["payee_bank"])):
            raise NotFound("no such payment (or not one of yours)", code="payment_not_found")
        return _outcome_json(dict(row))


def _reference(accepted: list[PaymentRequest]) -> str:
    if len(accepted) == 1:
        return f"settle:{accepted[0].payment_id}"
    return "net:" + sha256("\n".join(r.payment_id for r in accepted).encode()).hex()


def _payee_refusal(payee: store.Bank | None) -> str | None:
    if payee is None:
        return "payee_bank_unknown"
    return None if payee.active else "payee_bank_suspended"


def _replay(requests: list[PaymentRequest], recorded: dict[str, Any]) -> dict[str, tuple[dict, bool]]:
    """The recorded outcomes of these requests; 409 payment_conflict if any differs from its record."""
    out = {}
    for n, r in enumerate(requests):
        row = recorded.get(r.payment_id)
        if row is None:
            continue
        if (row["payer_bank"], row["payee_bank"], row["amount"], bytes(row["reference"])) != \
                (r.payer_bank, r.payee_bank, r.amount, r.reference_bytes):
            raise Conflict(f"payment id {r.payment_id!r} was used for a different payment",
                           code="payment_conflict", index=n if len(requests) > 1 else None)
        out[r.payment_id] = (dict(row), False)
    return out


def _notice(row: Any) -> SettlementNotice:
    return SettlementNotice(row["payment_id"], row["payer_bank"], row["payee_bank"], row["amount"],
                            row["tx_id"], row["settled_at"], bytes(row["reference"]))


def _notice_json(row: Any) -> dict[str, Any]:
    return notice_to_json(_notice(row), row["signature"])


def _outcome_json(row: dict) -> dict[str, Any]:
    if row["status"] == REFUSED:
        return {"payment_id": row["payment_id"], "status": REFUSED, "refusal_code": row["refusal_code"],
                "payer_bank": row["payer_bank"], "payee_bank": row["payee_bank"], "amount": row["amount"],
                "reference": bytes(row["reference"]).hex()}
    return {"payment_id": row["payment_id"], "status": SETTLED, "notice": _notice_json(row)}
