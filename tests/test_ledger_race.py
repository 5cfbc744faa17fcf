"""Double-spend races: concurrent spends of one output, each on its own connection.

The guard is the database's (a spend deletes the output's row; concurrent deletes serialise on its
row lock). The same test run against a check-then-act store that lacks that guard shows the test
can tell the difference.
"""
from __future__ import annotations

import asyncio

import pytest

from shared.tx import encode_witnesses
from tests.ledger_fixtures import coins, keys, mint, transfer
from tests.ledger_invariants import assert_ledger_consistent

RACERS = 50


class CheckThenActStore:
    """A deliberately broken store: checks that the inputs exist, then writes, with no guard."""

    def __init__(self, pool, barrier: asyncio.Barrier) -> None:
        self.pool = pool
        self.barrier = barrier

    async def apply_one(self, conn, vtx) -> str:
        async with conn.transaction():
            found = 0
            for i in vtx.body.inputs:
                found += await conn.fetchval("SELECT count(*) FROM ledger_utxo WHERE tx_id = $1 AND idx = $2",
                                             i.tx_id, i.index)
            await self.barrier.wait()  # every racer has checked before any writes
            if found != len(vtx.body.inputs):
                return "input_already_spent"
            await conn.execute("INSERT INTO ledger_tx (tx_id, kind, body, witnesses, n_outputs, value_in, "
                               "value_out) VALUES ($1, 3, $2, $3, $4, $5, $6)", vtx.tx_id, vtx.body_bytes,
                               encode_witnesses(vtx.witnesses), len(vtx.body.outputs), vtx.value_in,
                               vtx.value_out)
            for i in vtx.body.inputs:
                await conn.execute("DELETE FROM ledger_utxo WHERE tx_id = $1 AND idx = $2", i.tx_id, i.index)
            for n, o in enumerate(vtx.body.outputs):
                await conn.execute("INSERT INTO ledger_utxo VALUES ($1, $2, $3, $4)", vtx.tx_id, n, o.owner,
                                   o.amount)
            return "created"


async def race(pool, engine, store: str):
    """50 transactions, each spending the shared output plus one output of its own."""
    owner, payee = keys(2)
    shared_coin = mint(owner, [1000])
    own_coins = mint(owner, [5] * RACERS)
    await engine.apply([shared_coin, own_coins])
    txs = [transfer(owner, [coins(shared_coin)[0], coins(own_coins)[n]], payee.public_key, 1005)
           for n in range(RACERS)]
    if store == "engine":
        results = await asyncio.gather(*(engine.apply([t]) for t in txs))  # each on a pool connection
        return owner, payee, own_coins, txs, [r[0].code for r in results]
    conns = [await pool.acquire() for _ in range(RACERS)]
    try:
        broken = CheckThenActStore(pool, asyncio.Barrier(RACERS))
        codes = await asyncio.gather(*(broken.apply_one(c, t) for c, t in zip(conns, txs)))
    finally:
        for c in conns:
            await pool.release(c)
    return owner, payee, own_coins, txs, codes


async def test_exactly_one_of_50_concurrent_spends_wins(pool, engine):
    owner, payee, own_coins, txs, codes = await race(pool, engine, "engine")
    assert codes.count("created") == 1, codes
    assert codes.count("input_already_spent") == RACERS - 1, codes
    assert await engine.balance(payee.public_key) == 1005
    # the losers' other inputs stay spendable
    winner = codes.index("created")
    losers_coins = [c for n, c in enumerate(coins(own_coins)) if n != winner]
    [r] = await engine.apply([transfer(owner, losers_coins, payee.public_key, 5 * (RACERS - 1))])
    assert r.code == "created"
    await assert_ledger_consistent(pool)


async def test_race_on_own_connections_has_one_winner(pool, engine):
    """The same race with each submission holding its own open transaction on its own connection."""
    owner, payee = keys(2)
    shared_coin = mint(owner, [10])
    own_coins = mint(owner, [1] * RACERS)
    await engine.apply([shared_coin, own_coins])
    txs = [transfer(owner, [coins(shared_coin)[0], coins(own_coins)[n]], payee.public_key, 11)
           for n in range(RACERS)]

    async def submit(t):
        async with pool.acquire() as conn, conn.transaction():
            return (await engine.apply([t], conn=conn))[0].code

    codes = await asyncio.gather(*(submit(t) for t in txs))
    assert sorted(codes) == ["created"] + ["input_already_spent"] * (RACERS - 1)
    await assert_ledger_consistent(pool)


async def test_race_catches_a_store_without_the_database_guard(fresh_ledger):
    """Negative control: the check-then-act store lets every racer 'win', and the checks see it."""
    pool, engine = fresh_ledger
    owner, payee, own_coins, txs, codes = await race(pool, engine, "check_then_act")
    assert codes.count("created") > 1  # the race test's assertion would fail here
    async with pool.acquire() as conn:
        from shared.audit import audit_ledger
        audit = await audit_ledger(conn)
    assert not audit.ok
    assert any("spent twice" in b for b in audit.breaches)
