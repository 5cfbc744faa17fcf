"""The micro-batcher: callers await their own result; flushes happen at N items or after the wait."""
from __future__ import annotations

import asyncio

import pytest

from shared.batcher import MicroBatcher
from shared.errors import Unavailable
from tests.ledger_fixtures import coins, keys, mint, transfer
from tests.ledger_invariants import assert_ledger_consistent


async def test_each_caller_gets_its_own_result_and_items_are_batched():
    sizes = []

    async def flush(items):
        sizes.append(len(items))
        await asyncio.sleep(0.001)
        return [x * 2 for x in items]

    b = MicroBatcher(flush, batch_max=100, wait_ms=5, flushers=1)
    results = await asyncio.gather(*(b.submit(n) for n in range(1000)))
    await b.stop()
    assert results == [n * 2 for n in range(1000)]
    assert sum(sizes) == 1000 and max(sizes) == 100 and len(sizes) <= 15


async def test_a_lone_item_is_flushed_after_the_wait():
    async def flush(items):
        return items

    b = MicroBatcher(flush, batch_max=1000, wait_ms=20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await b.submit("x") == "x"
    elapsed = loop.time() - started
    await b.stop()
    assert 0.015 <= elapsed < 0.5


async def test_a_failed_flush_fails_only_its_own_batch():
    calls = 0

    async def flush(items):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("database down", code="upstream_unavailable")
        return items

    b = MicroBatcher(flush, batch_max=10, wait_ms=1, flushers=1)
    first = await asyncio.gather(*(b.submit(n) for n in range(10)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in first)
    assert await b.submit(42) == 42
    await b.stop()


async def test_the_queue_is_bounded():
    release = asyncio.Event()

    async def flush(items):
        await release.wait()
        return items

    b = MicroBatcher(flush, batch_max=2, wait_ms=0, queue_max=4, flushers=1)
    waiting = [asyncio.ensure_future(b.submit(n)) for n in range(2)]
    await asyncio.sleep(0.05)  # 2 in flight
    waiting += [asyncio.ensure_future(b.submit(n)) for n in range(2, 6)]
    await asyncio.sleep(0.05)  # 4 queued behind them
    assert b.queued == 4
    with pytest.raises(Unavailable) as info:
        await b.submit(99)
    assert info.value.code == "overloaded" and info.value.status == 503
    release.set()
    assert await asyncio.gather(*waiting) == list(range(6))
    await b.stop()


async def test_stop_drains_what_is_queued():
    async def flush(items):
        await asyncio.sleep(0.01)
        return items

    b = MicroBatcher(flush, batch_max=5, wait_ms=50)
    futures = [asyncio.ensure_future(b.submit(n)) for n in range(12)]
    await asyncio.sleep(0)
    await b.stop()
    assert [f.result() for f in futures] == list(range(12))
    with pytest.raises(Unavailable):
        await b.submit(1)


async def test_batcher_feeding_the_engine(engine, pool):
    """Concurrent single submissions through the batcher land in few database transactions."""
    owner, payee = keys(2)
    m = mint(owner, [3] * 200)
    await engine.apply([m])
    flushes = []
    b = MicroBatcher(engine.apply, batch_max=64, wait_ms=2, flushers=2,
                     on_flush=lambda n, seconds: flushes.append(n))
    txs = [transfer(owner, [c], payee.public_key, 3) for c in coins(m)]
    results = await asyncio.gather(*(b.submit(t) for t in txs + txs[:10]))
    await b.stop()
    assert [r.code for r in results] == ["created"] * 200 + ["exists"] * 10
    assert len(flushes) < 50
    assert await engine.balance(payee.public_key) == 600
    await assert_ledger_consistent(pool)
