"""Audit of one ledger database, read in one REPEATABLE READ snapshot.

Checks what one ledger can prove on its own (the cross-ledger invariants I2, I3 and I5 build on
these figures in the audit of the whole system):

* I1 conservation: every logged transaction obeys its kind's value rule, and the value columns
  of the log agree with its canonical body; every body hashes to its tx id.
* I4 no double spend: every input of every logged transaction names an output created earlier in
  the log, with the same owner and amount, and no output is spent twice.
* unspent set: ``ledger_utxo`` holds exactly the outputs created and not spent, with their owners
  and amounts (a row changed, added or removed by hand is caught).
* the ledger's own equation: value created − value destroyed − value sent out = unspent value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from shared.tx import BALANCED, CREATE, DESTROY, KINDS_BY_CODE, decode_body, tx_id_of

STREAM_ROWS = 5000


@dataclass
class LedgerAudit:
    transactions: int = 0
    created: int = 0          # value created by create kinds (issue, mint, inbound)
    destroyed: int = 0        # value destroyed by destroy kinds (redeem, burn)
    sent_out: int = 0         # value sent to other ledgers by outbound payments
    unspent: int = 0          # sum of ledger_utxo
    unspent_outputs: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)   # transactions per kind
    breaches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaches

    def breach(self, text: str) -> None:
        if len(self.breaches) < 100:
            self.breaches.append(text)


def _check_tx(audit: LedgerAudit, row: asyncpg.Record, created: dict, spent: set) -> None:
    tx_id = row["tx_id"]
    label = tx_id.hex()[:16]
    try:
        body = decode_body(row["body"])
    except Exception as exc:  # a corrupt body is a finding, not a crash
        audit.breach(f"I1 tx {label}: body does not decode ({exc})")
        return
    if tx_id_of(row["body"]) != tx_id:
        audit.breach(f"I1 tx {label}: body does not hash to its tx id")
    kind = KINDS_BY_CODE.get(row["kind"])
    if kind is None or kind.name != body.kind:
        audit.breach(f"I1 tx {label}: kind column disagrees with the body")
        return
    audit.by_kind[kind.name] = audit.by_kind.get(kind.name, 0) + 1
    value_in = sum(i.amount for i in body.inputs)
    value_out = sum(o.amount for o in body.outputs)
    payee = body.payee.amount if body.payee else 0
    if (value_in, value_out, len(body.outputs)) != (row["value_in"], row["value_out"], row["n_outputs"]):
        audit.breach(f"I1 tx {label}: value columns disagree with the body")
    if kind.value_rule == BALANCED and value_in != value_out + payee:
        audit.breach(f"I1 tx {label} ({kind.name}): {value_in} in != {value_out + payee} out")
    elif kind.value_rule == CREATE and value_in:
        audit.breach(f"I1 tx {label} ({kind.name}): a creating kind spent inputs")
    elif kind.value_rule == DESTROY and value_out >= value_in:
        audit.breach(f"I1 tx {label} ({kind.name}): destroys nothing")
    if kind.value_rule == CREATE:
        audit.created += value_out
    elif kind.value_rule == DESTROY:
        audit.destroyed += value_in - value_out
    audit.sent_out += payee
    for n, i in enumerate(body.inputs):
        key = (i.tx_id, i.index)
        if key in spent:
            audit.breach(f"I4 tx {label} input {n}: output {i.tx_id.hex()[:16]}:{i.index} spent twice")
            continue
        origin = created.pop(key, None)
        if origin is None:
            audit.breach(f"I4 tx {label} input {n}: spends {i.tx_id.hex()[:16]}:{i.index}, "
                         "which no earlier transaction created")
        elif origin != (i.owner, i.amount):
            audit.breach(f"I4 tx {label} input {n}: owner or amount differ from the output it spends")
        spent.add(key)
    for n, o in enumerate(body.outputs):
        created[(tx_id, n)] = (o.owner, o.amount)


async def audit_ledger(conn: asyncpg.Connection) -> LedgerAudit:
    """Audit the ledger tables reachable through ``conn`` in one consistent snapshot."""
    audit = LedgerAudit()
    unspent_expected: dict[tuple[bytes, int], tuple[bytes, int]] = {}
    spent: set[tuple[bytes, int]] = set()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor("SELECT tx_id, kind, body, n_outputs, value_in, value_out "
                                     "FROM ledger_tx ORDER BY seq", prefetch=STREAM_ROWS):
            audit.transactions += 1
            _check_tx(audit, row, unspent_expected, spent)
        async for row in conn.cursor("SELECT tx_id, idx, owner, amount FROM ledger_utxo",
                                     prefetch=STREAM_ROWS):
            audit.unspent += row["amount"]
            audit.unspent_outputs += 1
            key = (row["tx_id"], row["idx"])
            expected = unspent_expected.pop(key, None)
            if expected is None:
                audit.breach(f"I4 unspent output {key[0].hex()[:16]}:{key[1]} was never created or was spent")
            elif expected != (row["owner"], row["amount"]):
                audit.breach(f"I4 unspent output {key[0].hex()[:16]}:{key[1]}: owner or amount changed "
                             f"(amount {row['amount']}, created with {expected[1]})")
    for (tx_id, idx) in list(unspent_expected)[:10]:
        audit.breach(f"I4 output {tx_id.hex()[:16]}:{idx} is neither spent nor in the unspent set")
    if audit.created - audit.destroyed - audit.sent_out != audit.unspent:
        audit.breach(f"I1 ledger: created {audit.created} - destroyed {audit.destroyed} - sent out "
                     f"{audit.sent_out} != unspent {audit.unspent}")
    return audit
