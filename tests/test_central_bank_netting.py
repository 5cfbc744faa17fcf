"""Netted settlement: many payments of one payer in one request, one settle transaction paying
each payee bank its total, every payment id recorded exactly once."""
from __future__ import annotations

import random

import pytest

from central_bank.client import APIError
from central_bank.store import escrow_owner
from shared.notice import notice_from_json, verify_notice
from tests.cb_harness import CB_KEY, assert_supply_invariant, pay_from

SEED = 20_260_101


async def _payer(central_bank, escrow: int):
    bank = await central_bank.new_bank()
    await central_bank.issue(bank.bank_id, escrow)
    for _ in range(3):
        await pay_from(bank, "holdings", "fund", escrow // 3, escrow_owner(bank.bank_id), bank.key.public_key)
    return bank


def _payments(payer, payees, amounts, tag):
    return [{"payment_id": f"{payer.bank_id}:{tag}-{n}", "payer_bank": payer.bank_id,
             "payee_bank": payees[label].bank_id, "amount": amount} for n, (label, amount) in enumerate(amounts)]


async def _settle_txs(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM ledger_tx WHERE kind = 6")


async def test_netted_settlement_equals_the_sum_of_its_gross_payments(central_bank):
    rng = random.Random(SEED)
    print("seed", SEED)
    amounts = [(rng.choice("xyz"), rng.randint(1, 200)) for _ in range(30)]
    gross, net = await _payer(central_bank, 9_000), await _payer(central_bank, 9_000)
    gross_payees = {label: await central_bank.new_bank() for label in "xyz"}
    net_payees = {label: await central_bank.new_bank() for label in "xyz"}

    for p in _payments(gross, gross_payees, amounts, "g"):
        await gross.client.settle(**p)
    before = await _settle_txs(central_bank.pool)
    batch = _payments(net, net_payees, amounts, "n")
    outcomes = (await net.client.call("POST", "/v1/settlements/batch", {"payments": batch}))["payments"]
    assert await _settle_txs(central_bank.pool) == before + 1  # one tier-1 movement for 30 payments

    assert [o["payment_id"] for o in outcomes] == [p["payment_id"] for p in batch]
    assert {o["status"] for o in outcomes} == {"settled"}
    assert len({o["notice"]["tx_id"] for o in outcomes}) == 1
    for o, p in zip(outcomes, batch):
        notice, signature = notice_from_json(o["notice"])
        assert verify_notice(CB_KEY.public_key, notice, signature) and notice.amount == p["amount"]
    for label in "xyz":
        g = (await central_bank.operator().balances(gross_payees[label].bank_id))["escrow"]
        n = (await central_bank.operator().balances(net_payees[label].bank_id))["escrow"]
        assert g == n == sum(a for lab, a in amounts if lab == label)
    assert (await gross.client.balances(gross.bank_id))["escrow"] == \
        (await net.client.balances(net.bank_id))["escrow"] == 9_000 - sum(a for _, a in amounts)

    again = (await net.client.call("POST", "/v1/settlements/batch", {"payments": batch}))["payments"]
    assert again == outcomes and await _settle_txs(central_bank.pool) == before + 1
    await assert_supply_invariant(central_bank.pool)


async def test_a_batch_mixing_recorded_new_and_refused_payments(central_bank):
    payer = await _payer(central_bank, 900)
    b = await central_bank.new_bank()
    first = await payer.client.settle(f"{payer.bank_id}:mix-0", payer.bank_id, b.bank_id, 10)
    batch = [{"payment_id": f"{payer.bank_id}:mix-{n}", "payer_bank": payer.bank_id, "payee_bank": b.bank_id,
              "amount": 10} for n in range(3)]
    batch.append({"payment_id": f"{payer.bank_id}:mix-nobody", "payer_bank": payer.bank_id,
                  "payee_bank": "bank-nobody", "amount": 5})
    outcomes = (await payer.client.call("POST", "/v1/settlements/batch", {"payments": batch}))["payments"]
    assert outcomes[0]["notice"] == first
    assert [o["status"] for o in outcomes] == ["settled", "settled", "settled", "refused"]
    assert outcomes[3]["refusal_code"] == "payee_bank_unknown"
    assert (await b.client.balances(b.bank_id))["escrow"] == 30

    conflicting = [dict(batch[1]), {**batch[2], "amount": 11}]
    with pytest.raises(APIError) as exc:
        await payer.client.call("POST", "/v1/settlements/batch", {"payments": conflicting})
    assert (exc.value.status, exc.value.code, exc.value.problem["index"]) == (409, "payment_conflict", 1)

    too_much = [{"payment_id": f"{payer.bank_id}:big-{n}", "payer_bank": payer.bank_id,
                 "payee_bank": b.bank_id, "amount": 500} for n in range(2)]
    outcomes = (await payer.client.call("POST", "/v1/settlements/batch", {"payments": too_much}))["payments"]
    assert [o["refusal_code"] for o in outcomes] == ["escrow_insufficient"] * 2
    assert (await b.client.balances(b.bank_id))["escrow"] == 30
    await assert_supply_invariant(central_bank.pool)


@pytest.mark.parametrize("payments, status, code", [
    ([], 422, "batch_size_invalid"),
    ([{"payment_id": "d1", "payee_bank": "bank-x", "amount": 1}] * 2, 422, "duplicate_payment_id"),
    ([{"payment_id": "o1", "payee_bank": "bank-x", "amount": 10**15},
      {"payment_id": "o2", "payee_bank": "bank-x", "amount": 1}], 422, "amount_overflow"),
    ([{"payment_id": "w1", "payee_bank": "bank-x", "amount": 1, "memo": "x"}], 422, "unknown_field"),
])
async def test_bad_batches_are_refused_whole(central_bank, payments, status, code):
    payer = await central_bank.new_bank()
    body = {"payments": [{"payer_bank": payer.bank_id, **p, "payment_id": f"{payer.bank_id}:{p['payment_id']}"}
                         for p in payments]}
    with pytest.raises(APIError) as exc:
        await payer.client.call("POST", "/v1/settlements/batch", body)
    assert (exc.value.status, exc.value.code) == (status, code)
