"""POST /v1/transfers/batch (real create_app, real central bank, real PostgreSQL): one result per
item, in order; a refused item (bad signature, double spend, over a limit, undecodable) never fails
its batch-mates; the request's own limits (count, body size). Run twice: items verified inline, and
in the per-worker process pool (CBDC_BANK_VERIFY_PROCESSES=2, tiny chunks so the pool is used)."""
from __future__ import annotations

import orjson
import pytest

from commercial_bank.client import build_spend
from shared.crypto import PrivateKey
from shared.tx import Output, Payee, SignedTx, Tx, Witness, encode_body, signed_to_json, tx_id_of
from shared.validation import sign
from tests.bank_harness import assert_system_consistent, start_bank, stop_bank

MAJOR = 100
TRANSACTIONS_MAX = 50


@pytest.fixture(scope="module", params=["inline", "pool"])
async def bank(central_bank, request):
    pool = {"CBDC_BANK_VERIFY_PROCESSES": "2", "CBDC_BANK_VERIFY_CHUNK_ITEMS": "4"} if request.param == "pool" else {}
    b = await start_bank(central_bank, "tb", CBDC_BANK_BATCH_TRANSACTIONS_MAX=str(TRANSACTIONS_MAX),
                         CBDC_BANK_BATCH_REQUEST_BYTES_MAX="65536", **pool)
    yield b
    await stop_bank(b)


def signed_tx_id(stx: SignedTx) -> str:
    return tx_id_of(encode_body(stx.body)).hex()


def _split(w, coins, parts: int, each: int) -> SignedTx:
    """One transfer of the wallet to itself: ``parts`` outputs of ``each`` plus the change."""
    total = sum(c.amount for c in coins)
    outputs = [Output(w.public_key, each)] * parts + [Output(w.public_key, total - parts * each)]
    return sign(Tx(w.client.bank_id, "transfer", tuple(coins), tuple(outputs)), w.key)


async def test_mixed_batch_one_result_each(bank):
    alice = await bank.funded_wallet(10_000 * MAJOR)
    carol = await bank.funded_wallet(5_000 * MAJOR, tier="anonymous")
    bob = await bank.wallet("full")
    [split] = await alice.client.transfer_batch([_split(alice, await alice.coins(), 4, 100 * MAJOR)])
    assert split["status"] == "created", split
    coins = sorted(await alice.coins(), key=lambda c: c.amount)[:4]      # four coins of 100
    pay = [build_spend(alice.key, bank.bank_id, "transfer", [c], amount=10 * MAJOR, to=bob.public_key)
           for c in coins]
    double = build_spend(alice.key, bank.bank_id, "transfer", [coins[0]], amount=11 * MAJOR, to=bob.public_key)
    forged = SignedTx(pay[2].body, (Witness(alice.public_key, bytes(64)),))
    outbound = build_spend(alice.key, bank.bank_id, "outbound", [coins[3]], amount=5 * MAJOR,
                           payee=Payee("bank-x", bob.public_key, 5 * MAJOR), reference=f"{bank.bank_id}:p1")
    carol_coins = await carol.coins()
    over = build_spend(carol.key, bank.bank_id, "transfer", carol_coins, amount=2_001 * MAJOR, to=bob.public_key)
    stranger = build_spend(alice.key, bank.bank_id, "transfer", [coins[1]], amount=1,
                           to=PrivateKey.generate().public_key)
    items = [signed_to_json(t) for t in (pay[0], pay[0], double, forged, outbound, over, pay[1], stranger)]
    items.append({"version": 1, "nonsense": True})
    status, answer = await alice.client.raw("POST", "/v1/transfers/batch", orjson.dumps({"transactions": items}))
    assert status == 200, answer
    results = answer["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    got = [r["status"] if r["status"] != "refused" else r["problem"]["code"] for r in results]
    assert got == ["created", "exists", "input_already_spent", "signature_invalid", "kind_not_allowed",
                   "limit_per_payment", "created", "payee_unknown", "unknown_field"], results
    assert results[0]["tx_id"] == signed_tx_id(pay[0]) and results[1]["seq"] == results[0]["seq"]
    assert results[2]["problem"]["index"] == 0 and results[2]["problem"]["status"] == 409
    assert results[8]["tx_id"] is None
    # the over-limit item was refused alone: carol's coins are untouched and spendable at once
    assert await carol.client.balance() == 5_000 * MAJOR
    ok = build_spend(carol.key, bank.bank_id, "transfer", carol_coins, amount=2_000 * MAJOR, to=bob.public_key)
    again = await carol.client.transfer_batch([ok, over])
    assert [r["status"] for r in again] == ["created", "refused"] and again[1]["problem"]["code"] == "limit_per_payment"
    assert await bob.client.balance() == 2_020 * MAJOR
    # resubmitting the same batch answers exists for what was applied
    replay = await alice.client.transfer_batch([pay[0], pay[1]])
    assert [r["status"] for r in replay] == ["exists", "exists"]
    await assert_system_consistent(bank.cb, [bank])


async def test_many_transfers_from_many_wallets(bank):
    payers = [await bank.funded_wallet(1_000 * MAJOR) for _ in range(3)]
    payee = await bank.wallet("full")
    splits = [_split(w, await w.coins(), 12, 10 * MAJOR) for w in payers]
    assert [r["status"] for r in await payers[0].client.transfer_batch(splits)] == ["created"] * 3
    spends = []
    for w in payers:
        for coin in [c for c in await w.coins() if c.amount == 10 * MAJOR]:
            spends.append(build_spend(w.key, bank.bank_id, "transfer", [coin], amount=MAJOR, to=payee.public_key))
    assert len(spends) == 36
    results = await payers[0].client.transfer_batch(spends)
    assert [r["status"] for r in results] == ["created"] * 36
    assert await payee.client.balance() == 36 * MAJOR
    await assert_system_consistent(bank.cb, [bank])


@pytest.mark.parametrize("body, status, code", [
    ({"transactions": []}, 422, "batch_size_invalid"),
    ({"transactions": [{}] * (TRANSACTIONS_MAX + 1)}, 422, "batch_size_invalid"),
    ({"transactions": {}}, 422, "wrong_type"),
    ({"transfers": []}, 422, "unknown_field"),
    ({"transactions": ["x" * 70_000]}, 413, "request_too_large"),
])
async def test_the_request_itself_is_bounded(bank, body, status, code):
    client = bank.client(None)
    got, answer = await client.raw("POST", "/v1/transfers/batch", orjson.dumps(body))
    assert (got, answer["code"]) == (status, code), answer


async def test_openapi_documents_the_batch_route(bank):
    document = await bank.client(None).call("GET", "/openapi.json")
    assert "post" in document["paths"]["/v1/transfers/batch"]
    assert "BatchResults" in document["components"]["schemas"]
