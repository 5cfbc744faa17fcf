"""A spend that finds its input briefly taken by a concurrent loser is retried, not refused.

W spends S and stays uncommitted. L spends A and S: it removes A, then waits for S. X spends A:
it waits for L. W commits: L loses (S is gone) and puts A back; X, woken, finds its row version
gone, and without the engine's retry would be refused although A is unspent again.
"""
from __future__ import annotations

import asyncio

from shared.engine import _arguments, _subset
from tests.ledger_fixtures import coins, keys, mint, transfer
from tests.ledger_invariants import assert_ledger_consistent


async def _wait_until_blocked(pool, count: int) -> None:
    for _ in range(200):  # bounded: 10 s
        waiting = await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND wait_event_type = 'Lock'")
        if waiting >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} sessions waiting on a lock")


async def test_a_spend_contended_by_a_loser_is_retried_and_wins(engine, pool):
    owner, payee = keys(2)
    m = mint(owner, [40, 2])
    await engine.apply([m])
    shared_coin, own_coin = coins(m)
    w = transfer(owner, [shared_coin], payee.public_key, 40, reference="w")
    lose = transfer(owner, [own_coin, shared_coin], payee.public_key, 42, reference="l")
    x = transfer(owner, [own_coin], payee.public_key, 2, reference="x")

    async with pool.acquire() as conn_w:
        tr = conn_w.transaction()
        await tr.start()
        assert (await engine.apply([w], conn=conn_w))[0].code == "created"
        loser = asyncio.ensure_future(engine.apply([lose]))
        await _wait_until_blocked(pool, 1)
        contender = asyncio.ensure_future(engine.apply([x]))
        await _wait_until_blocked(pool, 2)
        await tr.commit()
    [l_result], [x_result] = await asyncio.gather(loser, contender)
    assert (l_result.code, l_result.index) == ("input_already_spent", 1)
    assert x_result.code == "created"
    assert await engine.balance(payee.public_key) == 42
    await assert_ledger_consistent(pool)


def test_subset_keeps_and_renumbers_the_chosen_transactions():
    owner, payee = keys(2)
    m = mint(owner, [1, 2, 3])
    txs = [transfer(owner, [c], payee.public_key, c.amount) for c in coins(m)]
    args = _arguments(txs)
    assert _subset(args, [2, 3]) == _arguments(txs[1:])
    assert _subset(args, [1, 3]) == _arguments([txs[0], txs[2]])
