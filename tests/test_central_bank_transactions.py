"""Bank-signed tier-1 transactions (redeem, transfer, fund, defund) through the real service: each
kind moves what it should, a bank moves only its own value, and resubmission is idempotent."""
from __future__ import annotations

import pytest

from central_bank.client import APIError
from central_bank.store import escrow_owner
from tests.cb_harness import assert_supply_invariant, bank_tx, inputs_of, pay_from


async def _funded_bank(central_bank, amount: int):
    bank = await central_bank.new_bank()
    await central_bank.issue(bank.bank_id, amount)
    return bank


async def test_fund_and_defund_move_value_between_holdings_and_escrow(central_bank):
    bank = await _funded_bank(central_bank, 1_000)
    escrow = escrow_owner(bank.bank_id)
    answer = await pay_from(bank, "holdings", "fund", 700, escrow, bank.key.public_key)
    assert answer["result"] == "created"
    assert await bank.client.balances(bank.bank_id) == {
        "bank_id": bank.bank_id, "holdings": 300, "holdings_outputs": 1, "escrow": 700, "escrow_outputs": 1}
    await pay_from(bank, "escrow", "defund", 200, bank.key.public_key, escrow)
    balances = await bank.client.balances(bank.bank_id)
    assert (balances["holdings"], balances["escrow"]) == (500, 500)
    await assert_supply_invariant(central_bank.pool)


async def test_redeem_destroys_value_and_lowers_outstanding_supply(central_bank):
    bank = await _funded_bank(central_bank, 1_000)
    before = await central_bank.operator().supply()
    ins = inputs_of(await bank.client.outputs(bank.bank_id), 1_000)
    await bank.client.submit(bank_tx(bank, "redeem", ins, [(bank.key.public_key, 600)]))
    after = await central_bank.operator().supply()
    assert after["redeemed"] - before["redeemed"] == 400
    assert after["outstanding"] == before["outstanding"] - 400
    assert (await bank.client.balances(bank.bank_id))["holdings"] == 600
    await assert_supply_invariant(central_bank.pool)


async def test_transfer_pays_another_banks_holdings(central_bank):
    a = await _funded_bank(central_bank, 1_000)
    b = await central_bank.new_bank()
    await pay_from(a, "holdings", "transfer", 250, b.key.public_key, a.key.public_key)
    assert (await b.client.balances(b.bank_id))["holdings"] == 250
    assert (await a.client.balances(a.bank_id))["holdings"] == 750
    await assert_supply_invariant(central_bank.pool)


async def test_resubmission_answers_the_original_result_and_a_double_spend_is_refused(central_bank):
    a = await _funded_bank(central_bank, 100)
    b = await central_bank.new_bank()
    ins = inputs_of(await a.client.outputs(a.bank_id), 100)
    stx = bank_tx(a, "transfer", ins, [(b.key.public_key, 100)])
    first = await a.client.submit(stx)
    again = await a.client.submit(stx)
    assert first["result"] == "created" and again["result"] == "exists"
    assert (again["tx_id"], again["seq"]) == (first["tx_id"], first["seq"])
    other = bank_tx(a, "transfer", ins, [(b.key.public_key, 100)], reference="another")
    with pytest.raises(APIError) as exc:
        await a.client.submit(other)
    assert (exc.value.status, exc.value.code, exc.value.problem["index"]) == (409, "input_already_spent", 0)
    assert (await b.client.balances(b.bank_id))["holdings"] == 100
    await assert_supply_invariant(central_bank.pool)


async def test_a_bank_moves_only_its_own_holdings_and_escrow(central_bank):
    a = await _funded_bank(central_bank, 1_000)
    b = await _funded_bank(central_bank, 1_000)
    await pay_from(b, "holdings", "fund", 500, escrow_owner(b.bank_id), b.key.public_key)
    b_escrow = inputs_of(await b.client.outputs(b.bank_id, "escrow"), 500)
    b_holdings = inputs_of(await b.client.outputs(b.bank_id), 500)
    cases = [
        bank_tx(a, "defund", b_escrow, [(a.key.public_key, 500)]),                  # B's escrow
        bank_tx(a, "transfer", b_holdings, [(a.key.public_key, 500)]),              # B's holdings
        bank_tx(a, "settle", b_escrow, [(escrow_owner(a.bank_id), 500)]),           # settle is the CB's
        bank_tx(a, "issue", [], [(a.key.public_key, 500)]),                         # banks cannot issue
    ]
    for stx in cases:
        with pytest.raises(APIError) as exc:
            await a.client.submit(stx)
        assert (exc.value.status, exc.value.code) == (403, "not_permitted"), stx.body.kind
    a_holdings = inputs_of(await a.client.outputs(a.bank_id), 1_000)
    with pytest.raises(APIError) as exc:  # funding someone else's escrow
        await a.client.submit(bank_tx(a, "fund", a_holdings, [(escrow_owner(b.bank_id), 1_000)]))
    assert (exc.value.status, exc.value.code, exc.value.problem["field"]) == (403, "not_permitted", "outputs")
    with pytest.raises(APIError) as exc:  # a transfer to a key that is no registered bank
        stranger = central_bank.operator().key.public_key
        await a.client.submit(bank_tx(a, "transfer", a_holdings, [(stranger, 1_000)]))
    assert (exc.value.status, exc.value.code) == (422, "owner_not_a_bank")
    with pytest.raises(APIError) as exc:  # signed by B although A sends it: the tx signature fails
        await a.client.submit(bank_tx(b, "transfer", a_holdings, [(b.key.public_key, 1_000)]))
    assert (exc.value.status, exc.value.code) == (422, "witness_unexpected")
    assert (await b.client.balances(b.bank_id))["escrow"] == 500
    assert (await a.client.balances(a.bank_id))["holdings"] == 1_000
    await assert_supply_invariant(central_bank.pool)


async def test_a_bank_reads_only_transactions_that_involve_it(central_bank):
    a = await _funded_bank(central_bank, 10)
    b = await central_bank.new_bank()
    answer = await pay_from(a, "holdings", "fund", 10, escrow_owner(a.bank_id), a.key.public_key)
    tx_id = bytes.fromhex(answer["tx_id"])
    assert (await a.client.transaction(tx_id))["transaction"]["kind"] == "fund"
    with pytest.raises(APIError) as exc:
        await b.client.transaction(tx_id)
    assert (exc.value.status, exc.value.code) == (404, "transaction_not_found")


async def test_history_pages_through_a_banks_own_movements(central_bank):
    a = await _funded_bank(central_bank, 1_000)
    b = await central_bank.new_bank()
    await pay_from(a, "holdings", "fund", 600, escrow_owner(a.bank_id), a.key.public_key)
    await pay_from(a, "holdings", "transfer", 100, b.key.public_key, a.key.public_key)
    await a.client.settle(f"{a.bank_id}:hist", a.bank_id, b.bank_id, 50)
    seen, after = [], 0
    for _ in range(10):  # bounded: 2 per page
        page = await a.client.history(a.bank_id, after_seq=after, limit=2)
        if not page:
            break
        seen += page
        after = page[-1]["seq"]
    assert [(t["kind"], t["holdings_change"], t["escrow_change"]) for t in seen] == [
        ("issue", 1_000, 0), ("fund", -600, 600), ("transfer", -100, 0), ("settle", 0, -50)]
    assert [(t["kind"], t["holdings_change"], t["escrow_change"]) for t in await b.client.history(b.bank_id)] == [
        ("transfer", 100, 0), ("settle", 0, 50)]
    await assert_supply_invariant(central_bank.pool)
