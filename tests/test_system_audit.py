"""Negative controls for the system audit (shared/system_audit.py): a checker that catches nothing
proves nothing. Each test plants one bug directly in a bank's database and expects the audit to name it."""
from __future__ import annotations

import pytest

from shared import db
from shared.engine import UTXOEngine
from shared.system_audit import audit_system
from shared.tx import Output, Tx
from shared.validation import LedgerRules, sign, validate
from tests.bank_harness import assert_system_consistent, start_bank, stop_bank


@pytest.fixture
async def bank(central_bank):
    b = await start_bank(central_bank, "audit")
    yield b
    await stop_bank(b)


async def _audit(bank):
    return await audit_system(db.database_url(bank.cb.pg_server, bank.cb.database_name),
                              {bank.bank_id: bank.database_url})


async def test_an_unbacked_mint_breaks_i3_and_is_caught(bank):
    w = await bank.funded_wallet(1_000)
    await assert_system_consistent(bank.cb, [bank])
    rogue = Tx(bank.bank_id, "mint", outputs=(Output(w.public_key, 500),), reference="fund:nothing")
    vtx = validate(sign(rogue, bank.key), LedgerRules(bank.bank_id, mint_authority=bank.key.public_key), 0)
    await UTXOEngine(bank.pool).apply([vtx])
    audit = await _audit(bank)
    text = "\n".join(audit.all_breaches())
    assert not audit.ok and "I3" in text and "difference -500" in text and "fund:nothing" in text, text


async def test_a_second_credit_of_one_payment_is_caught(bank):
    w = await bank.funded_wallet(1_000)
    async with bank.pool.acquire() as conn:   # a deposit debited twice for one funding: drift
        await conn.execute("UPDATE bank_deposit_accounts SET balance = balance + 1")
    audit = await _audit(bank)
    assert any("sum of its entries" in b for b in audit.breaches), audit.breaches
    assert w
