"""What the wallet does against its bank, shared by the CLI and the local page.

    register(ctx, ...)         onboard the account's key (KYC tier, optional deposit account)
    summary(ctx)               balance, limits and pending journal entries
    history(ctx, after, limit) one page of the bank's history for this wallet
    pay(ctx, payee, amount)    same bank -> transfer (over the payee's holding limit: an on-us outbound,
                               the excess to its deposit); other bank -> outbound. Journal first, then submit.
    wait_payment(ctx, id, s)   bounded wait until a cross-bank payment is completed or refunded
    status(ctx, id)            a payment id (bank-a:...) or a journaled tx id
    fund(ctx, amount)          deposit -> CBDC; the funding id is journaled first (a retry never double-funds)
    defund(ctx, amount)        CBDC -> deposit: a burn, journaled first like a payment

Retries are safe by construction. ``pay`` and ``defund`` first look for a pending journal entry that
pays the same payee the same amount (or burns the same amount); if there is one, they re-send its
saved bytes instead of building a new transaction, so running the same command again after a
timeout answers ``exists`` at the bank and moves the money once. ``fund`` likewise re-sends a
pending funding of the same amount under its saved funding id.

Every failure is a ``WalletError`` with a one-line message: ``BankRefused`` names the bank's reason in
plain words (wallet.refusals), ``OutcomeUnknown`` says the entry stays pending and how to retry.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

from commercial_bank.client import APIError
from shared.address import Address
from shared.amounts import format_major
from wallet.bank import WalletBank
from wallet.errors import WalletError
from wallet.journal import ACCEPTED, PENDING, REJECTED, Entry, Journal
from wallet.keystore import Account, Keystore
from wallet.payments import (UNKNOWN, Outcome, build_burn, build_outbound, build_payment, journal_signed, sign,
                             submit)
from wallet.refusals import explain
from wallet.requests import parse_payee

QUERY_GRACE_SECONDS = 60          # an expired pending entry is decided this long after its expiry
WAIT_POLL_SECONDS = 0.2
FINAL_PAYMENT_STATES = ("completed", "refunded")
RETRY_HTTP_STATUSES = frozenset({408, 425, 429})


class BankRefused(WalletError):
    code = "bank_refused"
    title = "The bank refused"


class OutcomeUnknown(WalletError):
    code = "outcome_unknown"
    title = "Outcome unknown"


class BankUnreachable(WalletError):
    code = "bank_unreachable"
    title = "The bank is not answering"


@dataclass
class Context:
    keystore: Keystore
    account: Account
    journal: Journal
    bank: WalletBank
    clock: Callable[[], float] = time.time

    def now(self) -> int:
        return int(self.clock())


@dataclass
class PayResult:
    kind: str                 # transfer (on-us) or outbound (cross-bank)
    tx_id: str
    amount: int
    payee: Address
    answer: dict[str, Any]
    retried: bool             # the journal already held this payment: its saved bytes were re-sent
    payment_id: str = ""      # outbound only
    through_bank: bool = False   # an on-us outbound: the excess over the payee's holding limit went to its deposit
    final: dict[str, Any] = field(default_factory=dict)   # the payment's state after wait_payment


def refused(exc: APIError, what: str = "the bank") -> BankRefused:
    problem = exc.problem or {}
    return BankRefused(f"{what} refused: {explain(exc.code, problem.get('detail'))}",
                       code="bank_refused", extra={"refusal": exc.code})


def unreachable(ctx: Context, exc: BaseException) -> BankUnreachable:
    reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
    return BankUnreachable(f"cannot reach {ctx.account.bank} at {ctx.bank.base_url} ({reason})")


async def ask(ctx: Context, call):
    """Await a bank call; its errors become one-line wallet errors."""
    try:
        return await call
    except APIError as exc:
        raise refused(exc, ctx.account.bank) from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise unreachable(ctx, exc) from None


# -- onboarding and reads ------------------------------------------------------------------------

async def register(ctx: Context, name: str, tier: str, *, deposit_account: bool,
                   demo_deposit: int = 0) -> tuple[dict, bool]:
    """Register the account's key unless it is already; then the optional demo deposit credit."""
    record = await ask(ctx, ctx.bank.registered())
    fresh = record is None
    if fresh:
        await ask(ctx, ctx.bank.register(name, tier, deposit_account=deposit_account))
        record = await ask(ctx, ctx.bank.wallet())
    if demo_deposit:
        credit = await ask(ctx, ctx.bank.credit_deposit(demo_deposit, "opening"))
        record = {**record, "deposit_balance": credit["balance"]}
    return record, fresh


async def summary(ctx: Context) -> dict[str, Any]:
    await settle_expired(ctx)
    record = await ask(ctx, ctx.bank.wallet())
    pending = ctx.journal.entries(PENDING, ctx.account.name)
    fundings = ctx.journal.fundings(PENDING, ctx.account.name)
    return {**record, "pending_payments": len(pending), "pending_fundings": len(fundings)}


async def history(ctx: Context, after_seq: int = 0, limit: int = 20) -> list[dict]:
    return await ask(ctx, ctx.bank.history_page(after_seq, limit))


# -- payments ----------------------------------------------------------------------------------

async def pay(ctx: Context, payee_text: str, amount: int | None, memo: str = "") -> PayResult:
    now = ctx.now()
    address, request = parse_payee(payee_text, now)
    if request is not None:
        if amount is not None and amount != request.amount:
            raise WalletError(f"the payment request is for {format_major(request.amount)}, not {format_major(amount)}",
                              code="amount_mismatch")
        amount, memo = request.amount, memo or request.memo
    if amount is None:
        raise WalletError("name the amount (e.g. 12.50), or pay a payment request", code="amount_missing")
    await settle_expired(ctx)
    entry = matching_pending(ctx.journal, ctx.account, lambda body: _pays(body, ctx.account, address, amount))
    retried = entry is not None
    if entry is None:
        coins = await ask(ctx, ctx.bank.coins())
        tx = build_payment(ctx.account, coins, address, amount, now=now, seed=secrets.randbits(32),
                           reserved=ctx.journal.reserved(ctx.account.name),
                           reference=memo if address.ledger == ctx.account.bank else "")
        entry = journal_signed(ctx.journal, ctx.account, sign(ctx.keystore, ctx.account, tx), now)
    try:
        entry, result = await _send(ctx, entry)
    except BankRefused as exc:
        if entry.signed.body.kind != "transfer" or exc.extra.get("refusal") != "payee_holding_limit":
            raise
        # the payee may not hold that much: pay through the bank, which sends the excess to the payee's
        # linked deposit account (reverse waterfall) or, if it has none, refuses this too
        tx = build_outbound(ctx.account, await ask(ctx, ctx.bank.coins()), address, amount, now=now,
                            seed=secrets.randbits(32), reserved=ctx.journal.reserved(ctx.account.name),
                            through_bank=True)
        entry = journal_signed(ctx.journal, ctx.account, sign(ctx.keystore, ctx.account, tx), now)
        entry, result = await _send(ctx, entry)
    body = entry.signed.body
    outbound = body.kind == "outbound"
    return PayResult(body.kind, entry.tx_id, amount, address, result.result, retried,
                     body.reference if outbound else "", outbound and address.ledger == ctx.account.bank)


async def wait_payment(ctx: Context, payment_id: str, timeout_seconds: float) -> dict:
    """Poll the payer bank (bounded) until the cross-bank payment is completed or refunded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout_seconds)
    while True:
        state = await ask(ctx, ctx.bank.payment(payment_id))
        if state["state"] in FINAL_PAYMENT_STATES or loop.time() >= deadline:
            return state
        await asyncio.sleep(WAIT_POLL_SECONDS)


def describe_payment(state: dict[str, Any]) -> str:
    name = state.get("state")
    words = {"pending": "accepted by your bank, waiting for settlement",
             "settled": "settled at the central bank, waiting for the payee's bank to credit it",
             "completed": "completed: the payee has been credited",
             "refunded": "refunded to you"}.get(name, str(name))
    line = f"payment {state.get('payment_id')}: {words}"
    if name == "refunded" and state.get("refusal_code"):
        line += f" ({explain(state['refusal_code'])})"
    return line


async def status(ctx: Context, ident: str) -> dict[str, Any]:
    """A cross-bank payment's state at the bank, or what the journal and the bank know of a tx id."""
    ident = ident.strip()
    if ":" in ident:
        return {"payment": await ask(ctx, ctx.bank.payment(ident))}
    await settle_expired(ctx)
    entry = ctx.journal.get(ident.lower())
    answer: dict[str, Any] = {"journal": {"tx_id": entry.tx_id, "state": entry.state, "kind": entry.signed.body.kind,
                                          "attempts": entry.attempts, "result": entry.result}}
    if entry.state == ACCEPTED:
        answer["receipt"] = await ask(ctx, ctx.bank.receipt(entry.tx_id))
        if entry.signed.body.kind == "outbound":
            answer["payment"] = await ask(ctx, ctx.bank.payment(entry.signed.body.reference))
    return answer


# -- funding and defunding ---------------------------------------------------------------------

async def fund(ctx: Context, amount: int) -> tuple[dict, bool]:
    """Deposit -> CBDC. A pending funding of the same amount is re-sent under its saved id."""
    pending = [f for f in ctx.journal.fundings(PENDING, ctx.account.name) if f.amount == amount]
    resumed = bool(pending)
    funding = pending[0] if pending else ctx.journal.record_funding(
        ctx.account.name, f"fund-{secrets.token_hex(12)}", amount, ctx.now())
    try:
        answer = await ctx.bank.fund(funding.funding_id, amount)
    except APIError as exc:
        if 400 <= exc.status < 500 and exc.status not in RETRY_HTTP_STATUSES and exc.code:
            ctx.journal.settle_funding(funding.funding_id, REJECTED, {"code": exc.code})
            raise refused(exc, ctx.account.bank) from None
        raise OutcomeUnknown(f"{ctx.account.bank} answered {exc.status} {exc.code}: funding {funding.funding_id} is "
                             "saved as pending; run the same command again to finish it (it will not fund twice)") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise OutcomeUnknown(f"{unreachable(ctx, exc).detail}: funding {funding.funding_id} is saved as pending; "
                             "run the same command again to finish it (it will not fund twice)") from None
    if answer["state"] == "minted":
        ctx.journal.settle_funding(funding.funding_id, ACCEPTED, answer)
    elif answer["state"] == "failed":
        ctx.journal.settle_funding(funding.funding_id, REJECTED, answer)
        raise BankRefused(f"{ctx.account.bank} could not fund: {explain(answer.get('failure'))}")
    return answer, resumed


async def defund(ctx: Context, amount: int) -> tuple[dict, bool]:
    """CBDC -> deposit: burn ``amount`` (journaled first); a pending burn of the same amount is re-sent."""
    await settle_expired(ctx)
    entry = matching_pending(ctx.journal, ctx.account,
                             lambda body: body.kind == "burn" and _burned(body) == amount)
    retried = entry is not None
    if entry is None:
        now = ctx.now()
        coins = await ask(ctx, ctx.bank.coins())
        tx = build_burn(ctx.account, coins, amount, now=now, seed=secrets.randbits(32),
                        reserved=ctx.journal.reserved(ctx.account.name))
        entry = journal_signed(ctx.journal, ctx.account, sign(ctx.keystore, ctx.account, tx), now)
    entry, result = await _send(ctx, entry)
    return result.result, retried


# -- the journal against the bank --------------------------------------------------------------

def matching_pending(journal: Journal, account: Account, matches) -> Entry | None:
    for entry in journal.entries(PENDING, account.name):
        if matches(entry.signed.body):
            return entry
    return None


def _pays(body, account: Account, payee: Address, amount: int) -> bool:
    if body.kind == "transfer":
        return payee.ledger == account.bank and bool(body.outputs) and \
            (body.outputs[0].owner, body.outputs[0].amount) == (payee.key, amount)
    if body.kind == "outbound" and body.payee is not None:
        return (body.payee.ledger, body.payee.owner, body.payee.amount) == (payee.ledger, payee.key, amount)
    return False


def _burned(body) -> int:
    return sum(i.amount for i in body.inputs) - sum(o.amount for o in body.outputs)


async def _send(ctx: Context, entry: Entry) -> tuple[Entry, Outcome]:
    """Submit the journaled bytes once; a definite refusal or an unknown outcome is an error."""
    entry, result = await submit(ctx.journal, ctx.bank, entry.tx_id, ctx.now())
    if result.state == REJECTED:
        code = result.result.get("code")
        raise BankRefused(f"{ctx.account.bank} refused: {explain(code, result.result.get('detail'))}",
                          extra={"refusal": code})
    if result.state == UNKNOWN:
        why = result.result.get("code") or result.result.get("detail") or "no answer"
        raise OutcomeUnknown(f"no answer from {ctx.account.bank} ({why}): transaction {entry.tx_id[:16]}... is saved "
                             "as pending; run the same command again to retry it safely (the same bytes, paid once)")
    return entry, result


async def settle_expired(ctx: Context) -> None:
    """Decide pending entries past their expiry (plus a grace): in the bank's receipts -> accepted,
    else -> rejected (the bank refuses expired bytes, so they can never apply any more)."""
    now = ctx.now()
    for entry in ctx.journal.entries(PENDING, ctx.account.name):
        if not entry.expiry or now <= entry.expiry + QUERY_GRACE_SECONDS:
            continue
        try:
            receipt = await ctx.bank.receipt(entry.tx_id)
        except APIError as exc:
            if exc.code == "receipt_not_found":
                ctx.journal.settle(entry.tx_id, REJECTED, {"code": "transaction_expired"})
                continue
            raise refused(exc, ctx.account.bank) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise unreachable(ctx, exc) from None
        ctx.journal.settle(entry.tx_id, ACCEPTED, {"status": "exists", "seq": receipt.get("seq")})
