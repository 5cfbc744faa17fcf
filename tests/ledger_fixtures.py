"""Builders for ledger tests: keys, a minting authority, and signed transfers (real signatures)."""
from __future__ import annotations

import itertools

from shared.crypto import PrivateKey
from shared.tx import Input, Output, Tx
from shared.validation import LedgerRules, ValidTx, sign, validate

LEDGER = "bank-t"
NOW = 1_800_000_000
AUTHORITY = PrivateKey(bytes([7]) * 32)
RULES = LedgerRules(LEDGER, mint_authority=AUTHORITY.public_key, outputs_max=256)
_counter = itertools.count()


def keys(n: int) -> list[PrivateKey]:
    return [PrivateKey.generate() for _ in range(n)]


def mint(owner: PrivateKey, amounts: list[int]) -> ValidTx:
    """A mint of ``amounts`` to ``owner`` (unique reference, so every call is a new tx)."""
    body = Tx(LEDGER, "mint", outputs=tuple(Output(owner.public_key, a) for a in amounts),
              reference=f"mint-{next(_counter)}")
    return validate(sign(body, AUTHORITY), RULES, NOW)


def coins(vtx: ValidTx) -> list[Input]:
    """The outputs of ``vtx`` as inputs to spend."""
    return [Input(vtx.tx_id, n, o.owner, o.amount) for n, o in enumerate(vtx.body.outputs)]


def transfer(owner: PrivateKey, inputs: list[Input], to: bytes, amount: int, reference: str = "") -> ValidTx:
    """Spend ``inputs`` (owned by ``owner``): ``amount`` to ``to``, the rest back as change."""
    total = sum(i.amount for i in inputs)
    outputs = [Output(to, amount)]
    if total > amount:
        outputs.append(Output(owner.public_key, total - amount))
    body = Tx(LEDGER, "transfer", tuple(inputs), tuple(outputs), reference=reference)
    return validate(sign(body, owner), RULES, NOW)
