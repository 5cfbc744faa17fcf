"""Payments in three separate steps: build (pure), sign (the keystore), submit (the bank).

    build_payment(...)   -> Tx          pure: coin selection + the body; no keys, no I/O
    build_burn(...)      -> Tx          pure: a defund's burn (its reference is the defund id)
    sign(keystore, ...)  -> SignedTx    the only step that uses a private key (inside the keystore)
    journal_signed(...)  -> Entry       the exact wire bytes saved as pending BEFORE anything is sent
    submit(journal, bank, tx_id)        sends the journaled bytes; any retry sends the same bytes

On the bank's answer (``outcome``, pure):

    2xx created / exists                         accepted   (exists: an earlier attempt got through)
    4xx with a code, except 408, 425, 429        rejected   (definite: the bank did not apply it)
    timeout, reset, 408, 425, 429, 5xx           unknown    (stays pending; retry the same bytes)
    transaction_expired                          unknown    (an earlier attempt may have been applied)

Expiry makes "unknown" decidable: a wallet transaction carries an expiry (default 15 minutes).
Before it, a retry resends the same bytes. After it, the bank refuses the bytes as expired whether
or not it applied them earlier (expiry is checked before the idempotency lookup), so
``next_step`` says ``query``: ask the bank for the tx id, and settle the entry from that answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import orjson

from shared.address import Address
from shared.amounts import is_amount
from shared.crypto import sha256
from shared.notice import PAYMENT_ID_RE
from shared.tx import Input, Output, Payee, SignedTx, Tx, signed_to_json
from wallet.coins import INPUTS_MAX, Coin, Outpoint, select_coins
from wallet.errors import WalletError
from wallet.journal import ACCEPTED, PENDING, REJECTED, Entry, Journal
from wallet.keystore import Account, Keystore

EXPIRY_SECONDS = 15 * 60
ACCEPTED_STATUSES = ("created", "exists")
UNKNOWN = "unknown"
RETRY_STATUS_CODES = frozenset({408, 425, 429})
# Refusals that do not prove the bank never applied the bytes: an earlier attempt may have.
UNDECIDED_CODES = frozenset({"transaction_expired"})


class BankAPI(Protocol):
    """What ``submit`` needs from a bank client (the HTTP client implements it; issue 4).

    ``submit`` posts the signed transaction's JSON bytes unchanged and returns the bank's JSON
    answer (``{"status": "created" | "exists", ...}``). An error answer raises an exception with
    ``.status`` (HTTP status) and ``.code`` (the problem's stable code); a transport failure
    raises OSError, asyncio.TimeoutError or the client library's connection error.
    """

    async def submit(self, stx_json: bytes) -> dict: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str          # accepted, rejected or unknown
    result: dict


# ---------------------------------------------------------------------------------------------
# build (pure)

def build_payment(account: Account, coins: Iterable[Coin], payee: Address, amount: int, *, now: int,
                  reserved: Iterable[Outpoint] = (), seed: int = 0, reference: str = "",
                  expiry_seconds: int = EXPIRY_SECONDS, inputs_max: int = INPUTS_MAX) -> Tx:
    """A transfer when the payee banks where the account does, else an outbound (cross-bank)."""
    build = build_transfer if payee.ledger == account.bank else build_outbound
    return build(account, coins, payee, amount, now=now, reserved=reserved, seed=seed, reference=reference,
                 expiry_seconds=expiry_seconds, inputs_max=inputs_max)


def build_transfer(account: Account, coins: Iterable[Coin], payee: Address, amount: int, *, now: int,
                   reserved: Iterable[Outpoint] = (), seed: int = 0, reference: str = "",
                   expiry_seconds: int = EXPIRY_SECONDS, inputs_max: int = INPUTS_MAX) -> Tx:
    """An on-us payment: the payee's output, then change (if any) back to the account's key."""
    if payee.ledger != account.bank:
        raise WalletError(f"the payee banks at {payee.ledger}: that is a cross-bank (outbound) payment",
                          code="payee_other_bank")
    inputs, change = _spend(account, coins, amount, reserved, seed, inputs_max)
    outputs = (Output(payee.key, amount),) + _change(account, change)
    return Tx(account.bank, "transfer", inputs, outputs, None, reference, _expiry(now, expiry_seconds))


def build_outbound(account: Account, coins: Iterable[Coin], payee: Address, amount: int, *, now: int,
                   reserved: Iterable[Outpoint] = (), seed: int = 0, reference: str = "",
                   expiry_seconds: int = EXPIRY_SECONDS, inputs_max: int = INPUTS_MAX,
                   through_bank: bool = False) -> Tx:
    """A cross-bank payment: names the payee's bank, key and amount; change (if any) comes back.
    With ``through_bank``, the payee may bank here: an on-us payment through the bank, which pays
    the payee what it may hold as coins and the excess into its linked deposit account.

    Its reference is the payment id, ``<payer bank>:<id>`` (the bank requires it). ``reference``
    given: ``<id>``, or the whole payment id; else the id is derived from the inputs (unique,
    since an output is spent once; and the same if the same coins are rebuilt into a payment).
    """
    if payee.ledger == account.bank and not through_bank:
        raise WalletError("the payee banks here: that is an on-us transfer", code="payee_same_bank")
    inputs, change = _spend(account, coins, amount, reserved, seed, inputs_max)
    return Tx(account.bank, "outbound", inputs, _change(account, change), Payee(payee.ledger, payee.key, amount),
              payment_id(account.bank, inputs, reference), _expiry(now, expiry_seconds))


def build_burn(account: Account, coins: Iterable[Coin], amount: int, *, now: int,
               reserved: Iterable[Outpoint] = (), seed: int = 0, reference: str = "",
               expiry_seconds: int = EXPIRY_SECONDS, inputs_max: int = INPUTS_MAX) -> Tx:
    """A defund: destroy ``amount`` of the account's coins (change comes back) against a credit to its
    linked deposit account. The reference is the defund id (the bank's idempotency key for the defund):
    ``reference`` if given, else ``defund-<hash of the inputs>`` (unique, as an output is spent once)."""
    inputs, change = _spend(account, coins, amount, reserved, seed, inputs_max)
    return Tx(account.bank, "burn", inputs, _change(account, change), None, defund_id(inputs, reference),
              _expiry(now, expiry_seconds))


def defund_id(inputs: tuple[Input, ...], reference: str = "") -> str:
    if not reference:
        reference = "defund-" + sha256(b"".join(i.tx_id + i.index.to_bytes(2, "big") for i in inputs))[:16].hex()
    if not PAYMENT_ID_RE.fullmatch(reference) or reference.startswith("waterfall:"):
        raise WalletError("a defund id is 1..128 characters A-Z a-z 0-9 . _ : - (no spaces)",
                          code="defund_id_invalid")
    return reference


def payment_id(bank: str, inputs: tuple[Input, ...], reference: str = "") -> str:
    """The outbound's payment id: ``<bank>:<reference>``, or ``<bank>:<hash of the inputs>``."""
    if not reference:
        digest = sha256(b"".join(i.tx_id + i.index.to_bytes(2, "big") for i in inputs))
        reference = digest[:16].hex()
    text = reference if reference.startswith(bank + ":") else f"{bank}:{reference}"
    if not PAYMENT_ID_RE.fullmatch(text):
        raise WalletError("a payment id is 1..128 characters A-Z a-z 0-9 . _ : - (no spaces)",
                          code="payment_id_invalid")
    return text


def _spend(account: Account, coins: Iterable[Coin], amount: int, reserved: Iterable[Outpoint], seed: int,
           inputs_max: int) -> tuple[tuple[Input, ...], int]:
    if not is_amount(amount):
        raise WalletError("the amount must be positive and at most the supply cap", code="amount_invalid")
    selection = select_coins(coins, amount, reserved=reserved, seed=seed, inputs_max=inputs_max)
    inputs = tuple(Input(c.tx_id, c.index, account.public_key, c.amount)
                   for c in sorted(selection.coins, key=lambda c: c.outpoint))
    return inputs, selection.change


def _change(account: Account, change: int) -> tuple[Output, ...]:
    return (Output(account.public_key, change),) if change else ()


def _expiry(now: int, expiry_seconds: int) -> int:
    return now + expiry_seconds if expiry_seconds else 0


# ---------------------------------------------------------------------------------------------
# sign and journal

def sign(keystore: Keystore, account: Account, tx: Tx) -> SignedTx:
    """Sign a built body with the account's key: the keystore holds the key, this never sees it."""
    if any(i.owner != account.public_key for i in tx.inputs):
        raise WalletError("the transaction spends coins this account does not own", code="not_own_coins")
    return keystore.sign_tx(tx, account)


def wire_bytes(stx: SignedTx) -> bytes:
    """The exact bytes sent to the bank (and saved in the journal)."""
    return orjson.dumps(signed_to_json(stx))


def journal_signed(journal: Journal, account: Account, stx: SignedTx, now: int) -> Entry:
    """Save before sending: after this, the payment is pending and its inputs reserved."""
    return journal.record_signed(account.name, wire_bytes(stx), now)


# ---------------------------------------------------------------------------------------------
# submit: decisions are pure; the send itself is the bank client's

def outcome(answer: dict | None = None, error: BaseException | None = None) -> Outcome:
    """Classify the bank's answer to one submission (exactly one of answer / error)."""
    if error is None:
        status = (answer or {}).get("status")
        if status in ACCEPTED_STATUSES:
            return Outcome(ACCEPTED, dict(answer or {}))
        return Outcome(UNKNOWN, {"detail": f"unexpected answer status {status!r}"})
    http_status, code = getattr(error, "status", None), getattr(error, "code", None)
    if isinstance(http_status, int) and 400 <= http_status < 500 and http_status not in RETRY_STATUS_CODES \
            and code and code not in UNDECIDED_CODES:
        return Outcome(REJECTED, {"status": http_status, "code": code, "detail": str(error)})
    return Outcome(UNKNOWN, {"status": http_status, "code": code, "detail": type(error).__name__})


def next_step(entry: Entry, now: int) -> str:
    """What to do with a journal entry: ``done``, ``send`` (the same bytes) or ``query`` (by tx id)."""
    if entry.state != PENDING:
        return "done"
    if entry.expiry and now > entry.expiry:
        return "query"
    return "send"


def record_outcome(journal: Journal, entry: Entry, result: Outcome) -> Entry:
    """Apply an outcome to the journal: accepted/rejected are final; unknown leaves it pending."""
    if result.state == UNKNOWN:
        return journal.get(entry.tx_id)
    return journal.settle(entry.tx_id, result.state, result.result)


async def submit(journal: Journal, bank: BankAPI, tx_id: str, now: int) -> tuple[Entry, Outcome]:
    """Send a journaled payment's saved bytes once and record what the bank said."""
    entry = journal.get(tx_id)
    step = next_step(entry, now)
    if step == "done":
        return entry, Outcome(entry.state, entry.result or {})
    if step == "query":
        raise WalletError(f"payment {tx_id} expired while its outcome was unknown: ask the bank for its status",
                          code="payment_status_unknown")
    journal.mark_attempt(tx_id)
    try:
        result = outcome(answer=await bank.submit(entry.wire))
    except Exception as exc:  # noqa: BLE001 -- whatever went wrong, the entry stays pending unless definite
        result = outcome(error=exc)
    return record_outcome(journal, entry, result), result


__all__ = ["BankAPI", "Outcome", "build_payment", "build_transfer", "build_outbound", "build_burn", "payment_id", "sign", "wire_bytes",
           "journal_signed", "outcome", "next_step", "record_outcome", "submit",
           "ACCEPTED", "REJECTED", "PENDING", "UNKNOWN"]
