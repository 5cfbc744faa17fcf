"""The ledger engine's per-transaction results on a real PostgreSQL."""
from __future__ import annotations

import asyncpg
import pytest

from shared.engine import ApplyResult, plan_batch
from shared.tx import Input
from tests.ledger_fixtures import coins, keys, mint, transfer
from tests.ledger_invariants import assert_ledger_consistent


async def test_mint_then_spend_creates_and_moves_value(engine, pool):
    alice, bob = keys(2)
    m = mint(alice, [500, 300])
    [r] = await engine.apply([m])
    assert r.code == "created" and r.seq is not None
    t = transfer(alice, coins(m), bob.public_key, 700)
    [r] = await engine.apply([t])
    assert r.code == "created"
    assert await engine.balance(alice.public_key) == 100
    assert await engine.balance(bob.public_key) == 700
    await assert_ledger_consistent(pool)


async def test_resubmission_returns_original_result(engine, pool):
    alice, bob = keys(2)
    m = mint(alice, [50])
    await engine.apply([m])
    t = transfer(alice, coins(m), bob.public_key, 50)
    [first] = await engine.apply([t])
    [again] = await engine.apply([t])
    assert first.code == "created" and again.code == "exists"
    assert (again.seq, again.accepted_at) == (first.seq, first.accepted_at)
    assert await engine.balance(bob.public_key) == 50
    await assert_ledger_consistent(pool)


async def test_unknown_spent_and_mismatched_inputs_have_their_own_codes(engine, pool):
    alice, bob = keys(2)
    m = mint(alice, [10, 20, 30])
    await engine.apply([m])
    c = coins(m)
    await engine.apply([transfer(alice, [c[0]], bob.public_key, 10)])
    missing = Input(b"\x01" * 32, 0, alice.public_key, 5)
    beyond = Input(m.tx_id, 9, alice.public_key, 5)
    wrong_amount = Input(m.tx_id, 1, alice.public_key, 21)
    results = await engine.apply([
        transfer(alice, [c[2], c[0]], bob.public_key, 40),   # second input already spent
        transfer(alice, [missing], bob.public_key, 5),
        transfer(alice, [c[2], beyond], bob.public_key, 35),
        transfer(alice, [wrong_amount], bob.public_key, 21),
    ])
    assert [(r.code, r.index) for r in results] == [
        ("input_already_spent", 1), ("input_not_found", 0), ("input_not_found", 1), ("input_mismatch", 0)]
    # nothing moved: the losers' good inputs are still there
    assert await engine.balance(alice.public_key) == 50
    await assert_ledger_consistent(pool)


async def test_chain_and_conflict_inside_one_batch_behave_as_if_sequential(engine, pool):
    alice, bob, carol = keys(3)
    m = mint(alice, [100])
    await engine.apply([m])
    t1 = transfer(alice, coins(m), bob.public_key, 60)          # alice -> bob 60, change 40
    t2 = transfer(bob, coins(t1)[:1], carol.public_key, 60)     # spends t1's output, same batch
    t3 = transfer(alice, coins(m), carol.public_key, 100)       # double spend of m, after t1
    plan = plan_batch([t1, t2, t3])
    assert plan.waves == [[0], [1, 2]]
    results = await engine.apply([t1, t2, t3, t1])
    assert [r.code for r in results] == ["created", "created", "input_already_spent", "exists"]
    assert await engine.balance(carol.public_key) == 60
    await assert_ledger_consistent(pool)


async def test_the_log_is_append_only(pool, engine):
    alice, = keys(1)
    await engine.apply([mint(alice, [1])])
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("UPDATE ledger_tx SET value_out = value_out + 1")
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("DELETE FROM ledger_tx")


async def test_apply_inside_callers_transaction_rolls_back_with_it(engine, pool):
    alice, = keys(1)
    m = mint(alice, [77])
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        [r] = await engine.apply([m], conn=conn)
        assert r.code == "created"
        await tr.rollback()
    assert await engine.transaction(m.tx_id) is None
    assert await engine.balance(alice.public_key) == 0


async def test_unspent_pages_through_outputs(engine):
    alice, = keys(1)
    m = mint(alice, list(range(1, 8)))
    await engine.apply([m])
    seen, after = [], (b"", -1)
    while page := await engine.unspent(alice.public_key, limit=3, after=after):
        seen += [row["amount"] for row in page]
        after = (page[-1]["tx_id"], page[-1]["idx"])
    assert sorted(seen) == list(range(1, 8))


def test_apply_result_accepted():
    assert ApplyResult(b"", "created").accepted and ApplyResult(b"", "exists").accepted
    assert not ApplyResult(b"", "input_already_spent").accepted
