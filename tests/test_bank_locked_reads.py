"""Limits are checked on what a wallet holds, has paid today and has been promised, read with its
row locked. A batch that had to wait for another batch's lock must read what that batch committed:
a statement's snapshot is taken before its lock wait, so the store locks first and reads after."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from commercial_bank import store
from tests.bank_harness import assert_system_consistent, start_bank, stop_bank


@pytest.fixture(scope="module")
async def bank(central_bank):
    bank = await start_bank(central_bank, "lr", holdings=0)
    yield bank
    await stop_bank(bank)


async def _second_reader_after_first_commits(bank, key: bytes, change, read):
    """T1 locks the wallet and changes what the limits read; T2 reads under the lock (waiting); T1
    commits; what T2 read."""
    first, second = await asyncpg.connect(bank.database_url), await asyncpg.connect(bank.database_url)
    try:
        async with first.transaction():
            await store.lock_wallets(first, [key], 0)
            await change(first)
            t2 = second.transaction()
            await t2.start()
            waiting = asyncio.ensure_future(read(second))
            await asyncio.sleep(0.3)
            assert not waiting.done(), "the second reader did not wait for the lock"
        seen = await waiting
        await t2.rollback()
        return seen
    finally:
        await first.close()
        await second.close()


async def test_a_reader_that_waited_for_the_lock_sees_the_committed_totals(bank):
    wallet = await bank.wallet("full")
    key = wallet.public_key

    async def change(conn):
        await conn.execute("UPDATE bank_wallet_totals SET held = held + 7, out_day = 86400, out_today = 3"
                           " WHERE wallet = $1", key)

    async def locked(conn):
        return (await store.lock_wallets(conn, [key], 0))[key]

    async def flush(conn):
        return (await store.flush_state(conn, [key], [], [key], [], 0)).wallets[key]

    try:
        for read in (locked, flush):
            seen = await _second_reader_after_first_commits(bank, key, change, read)
            held = await bank.pool.fetchval("SELECT held FROM bank_wallet_totals WHERE wallet = $1", key)
            assert (seen["held"], seen["out_day"], seen["out_today"]) == (held, 86400, 3), read.__name__
    finally:
        await bank.pool.execute("UPDATE bank_wallet_totals SET held = 0, out_day = 0, out_today = 0"
                                " WHERE wallet = $1", key)
    await assert_system_consistent(bank.cb, [bank])   # the totals are back to what the rows say


async def test_a_batch_that_waited_for_the_lock_sees_the_reservations_made_meanwhile(bank):
    wallet = await bank.wallet("full")
    key = wallet.public_key

    async def reserve(conn):
        await store.insert_reservations(conn, [("elsewhere:r1", "elsewhere", key, 900, 800)], 0, 10**9)

    async def flush(conn):
        return (await store.flush_state(conn, [key], [], [key], [], 0)).reserved[key]

    async def locked(conn):
        return (await store.lock_wallets(conn, [key], 0))[key]["reserved"]

    try:
        assert await _second_reader_after_first_commits(bank, key, reserve, flush) == 800
        await bank.pool.execute("DELETE FROM bank_reservations WHERE payee_key = $1", key)
        assert await _second_reader_after_first_commits(bank, key, reserve, locked) == 800
    finally:
        await bank.pool.execute("DELETE FROM bank_reservations WHERE payee_key = $1", key)
    await assert_system_consistent(bank.cb, [bank])
