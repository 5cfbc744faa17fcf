"""Gross settlement: escrow(payer) -> escrow(payee) once per payment id, with a notice the payee
bank verifies offline."""
from __future__ import annotations

import asyncio
import dataclasses
import secrets

import pytest

from central_bank.client import APIError
from central_bank.store import escrow_owner
from shared.notice import notice_from_json, verify_notice
from tests.cb_harness import CB_KEY, assert_supply_invariant, bank_tx, inputs_of, pay_from


async def _bank_with_escrow(central_bank, amount: int, parts: int = 1):
    bank = await central_bank.new_bank()
    await central_bank.issue(bank.bank_id, amount)
    for _ in range(parts):  # several escrow outputs, so settlements pick and change them
        await pay_from(bank, "holdings", "fund", amount // parts, escrow_owner(bank.bank_id), bank.key.public_key)
    return bank


async def _settle_count(pool, payment_id: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM ledger_tx WHERE kind = 6 AND reference = $1",
                               f"settle:{payment_id}")


async def test_settlement_moves_escrow_and_returns_a_verifiable_notice(central_bank):
    a = await _bank_with_escrow(central_bank, 1_200, parts=3)
    b = await central_bank.new_bank()
    notice_json = await a.client.settle(f"{a.bank_id}:pay-1", a.bank_id, b.bank_id, 400)
    notice, signature = notice_from_json(notice_json)
    assert verify_notice(CB_KEY.public_key, notice, signature)
    assert (notice.payer_bank, notice.payee_bank, notice.amount) == (a.bank_id, b.bank_id, 400)
    assert not verify_notice(CB_KEY.public_key, dataclasses.replace(notice, amount=401), signature)
    assert (await a.client.balances(a.bank_id))["escrow"] == 800
    assert (await b.client.balances(b.bank_id))["escrow"] == 400
    settle_tx = await b.client.transaction(notice.tx_id)  # the payee may read the movement
    assert settle_tx["transaction"]["kind"] == "settle"
    assert (await b.client.payment(f"{a.bank_id}:pay-1"))["notice"] == notice_json
    await assert_supply_invariant(central_bank.pool)


async def test_fifty_concurrent_retries_settle_exactly_once(central_bank):
    a = await _bank_with_escrow(central_bank, 1_000, parts=2)
    b = await central_bank.new_bank()
    payment_id = f"{a.bank_id}:storm-{secrets.token_hex(4)}"
    answers = await asyncio.gather(*(a.client.settle(payment_id, a.bank_id, b.bank_id, 300) for _ in range(50)))
    assert len({a_["tx_id"] for a_ in answers}) == 1 and len({a_["signature"] for a_ in answers}) == 1
    assert await _settle_count(central_bank.pool, payment_id) == 1
    assert (await b.client.balances(b.bank_id))["escrow"] == 300
    assert (await a.client.balances(a.bank_id))["escrow"] == 700
    await assert_supply_invariant(central_bank.pool)


async def test_many_payments_of_one_payer_settle_concurrently_and_conserve(central_bank):
    a = await _bank_with_escrow(central_bank, 1_000, parts=4)
    b, c = await central_bank.new_bank(), await central_bank.new_bank()
    payees = [b, c] * 10
    await asyncio.gather(*(a.client.settle(f"{a.bank_id}:many-{n}", a.bank_id, p.bank_id, 7)
                           for n, p in enumerate(payees)))
    assert (await a.client.balances(a.bank_id))["escrow"] == 1_000 - 140
    assert (await b.client.balances(b.bank_id))["escrow"] == 70
    await assert_supply_invariant(central_bank.pool)


async def test_same_payment_id_with_other_contents_is_a_conflict(central_bank):
    a = await _bank_with_escrow(central_bank, 1_000)
    b, c = await central_bank.new_bank(), await central_bank.new_bank()
    await a.client.settle(f"{a.bank_id}:dup-1", a.bank_id, b.bank_id, 100)
    for payee, amount in ((b, 101), (c, 100)):
        with pytest.raises(APIError) as exc:
            await a.client.settle(f"{a.bank_id}:dup-1", a.bank_id, payee.bank_id, amount)
        assert (exc.value.status, exc.value.code) == (409, "payment_conflict")
    with pytest.raises(APIError) as exc:  # another payer cannot take (or probe) A's ids at all
        await c.client.settle(f"{a.bank_id}:dup-1", c.bank_id, b.bank_id, 100)
    assert (exc.value.status, exc.value.code) == (422, "payment_id_invalid")
    assert await _settle_count(central_bank.pool, f"{a.bank_id}:dup-1") == 1
    assert (await b.client.balances(b.bank_id))["escrow"] == 100
    await assert_supply_invariant(central_bank.pool)


async def test_refusals_are_final_and_move_nothing(central_bank):
    a = await _bank_with_escrow(central_bank, 100)
    b = await central_bank.new_bank()
    with pytest.raises(APIError) as exc:
        await a.client.settle(f"{a.bank_id}:too-much", a.bank_id, b.bank_id, 101)
    assert (exc.value.status, exc.value.code) == (409, "escrow_insufficient")
    await central_bank.issue(a.bank_id, 50)
    await pay_from(a, "holdings", "fund", 50, escrow_owner(a.bank_id), a.key.public_key)
    with pytest.raises(APIError) as exc:  # a retry gets the recorded refusal, whatever changed since
        await a.client.settle(f"{a.bank_id}:too-much", a.bank_id, b.bank_id, 101)
    assert (exc.value.status, exc.value.code) == (409, "escrow_insufficient")
    with pytest.raises(APIError) as exc:
        await a.client.settle(f"{a.bank_id}:to-nobody", a.bank_id, "bank-nobody", 1)
    assert (exc.value.status, exc.value.code) == (409, "payee_bank_unknown")
    assert (await a.client.payment(f"{a.bank_id}:to-nobody"))["status"] == "refused"
    for body_change, code in (({"payer_bank": b.bank_id}, "not_permitted"), ({"payee_bank": a.bank_id},
                                                                            "payee_bank_invalid"),
                              ({"amount": 0}, "amount_invalid"), ({"payment_id": "bad id"}, "payment_id_invalid"),
                              ({"payment_id": f"{b.bank_id}:squat"}, "payment_id_invalid")):
        body = {"payment_id": f"{a.bank_id}:fine", "payer_bank": a.bank_id, "payee_bank": b.bank_id, "amount": 1, **body_change}
        with pytest.raises(APIError) as exc:
            await a.client.call("POST", "/v1/settlements", body)
        assert exc.value.code == code
    assert (await a.client.balances(a.bank_id))["escrow"] == 150
    assert (await b.client.balances(b.bank_id))["escrow"] == 0
    await assert_supply_invariant(central_bank.pool)


async def test_fragmented_escrow_is_a_retryable_refusal_and_settlements_consolidate(central_bank):
    a = await central_bank.new_bank()
    b = await central_bank.new_bank()
    await central_bank.issue(a.bank_id, 300)
    escrow = escrow_owner(a.bank_id)
    for _ in range(5):  # 300 escrow outputs of 1
        ins = inputs_of(await a.client.outputs(a.bank_id), 60)
        change = sum(i.amount for i in ins) - 60
        outs = [(escrow, 1)] * 60 + ([(a.key.public_key, change)] if change else [])
        await a.client.submit(bank_tx(a, "fund", ins, outs))
    assert (await a.client.balances(a.bank_id))["escrow_outputs"] == 300
    with pytest.raises(APIError) as exc:
        await a.client.settle(f"{a.bank_id}:frag-1", a.bank_id, b.bank_id, 290)
    assert (exc.value.status, exc.value.code) == (503, "escrow_fragmented")
    ins = inputs_of(await a.client.outputs(a.bank_id, "escrow", limit=64), 64)
    await a.client.submit(bank_tx(a, "defund", ins, [(escrow, 64)]))  # consolidate 64 -> 1
    notice = await a.client.settle(f"{a.bank_id}:frag-1", a.bank_id, b.bank_id, 290)  # not recorded as refused
    assert notice["amount"] == 290
    assert (await a.client.balances(a.bank_id))["escrow_outputs"] == 10   # 237 outputs, 227 spent
    await a.client.settle(f"{a.bank_id}:frag-2", a.bank_id, b.bank_id, 1)              # spends 8 of them, change 7
    balances = await a.client.balances(a.bank_id)
    assert (balances["escrow"], balances["escrow_outputs"]) == (9, 3)
    await assert_supply_invariant(central_bank.pool)


async def test_the_payers_reference_is_recorded_signed_and_bound(central_bank):
    """The opaque reference (the payer's outbound tx id at tier 2) is signed into the notice; the same
    payment id with another reference is a conflict; an invalid one is refused."""
    a = await _bank_with_escrow(central_bank, 500)
    b = await central_bank.new_bank()
    reference = bytes(range(32))
    notice_json = await a.client.settle(f"{a.bank_id}:ref-1", a.bank_id, b.bank_id, 50, reference=reference)
    notice, signature = notice_from_json(notice_json)
    assert notice.reference == reference and verify_notice(CB_KEY.public_key, notice, signature)
    assert not verify_notice(CB_KEY.public_key, dataclasses.replace(notice, reference=bytes(32)), signature)
    assert await a.client.settle(f"{a.bank_id}:ref-1", a.bank_id, b.bank_id, 50, reference=reference) == notice_json
    with pytest.raises(APIError) as exc:
        await a.client.settle(f"{a.bank_id}:ref-1", a.bank_id, b.bank_id, 50, reference=bytes(32))
    assert (exc.value.status, exc.value.code) == (409, "payment_conflict")
    with pytest.raises(APIError) as exc:
        await a.client.call("POST", "/v1/settlements", {"payment_id": f"{a.bank_id}:ref-2", "payer_bank": a.bank_id,
                                                        "payee_bank": b.bank_id, "amount": 1, "reference": "ab"})
    assert (exc.value.status, exc.value.code) == (422, "reference_invalid")
    await assert_supply_invariant(central_bank.pool)
