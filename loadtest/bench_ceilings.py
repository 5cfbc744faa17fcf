"""The machine's ceilings, measured in the same run as an HTTP benchmark (loadtest/bench_http.py),
with bench_ledger's own functions:

* verification: Ed25519 verifications per second with every core verifying and nothing else;
* database: the engine's batched rate for the same SQL (``ledger_apply``, pre-validated 2-in/2-out
  transfers in batches of 1,000, 2 in flight) on a scratch database of ``seed_outputs`` outputs
  on the same PostgreSQL server, dropped afterwards.

The ceiling is the lower of the two (one signature per transfer). The bank's own SQL per batch
(wallet locks, limits, activity rows) and HTTP are not in it: the ratio says what they cost.
"""
from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ProcessPoolExecutor

from loadtest import bench_ledger as ledger
from shared import db

VERIFY_SECONDS = 1.0


async def measure_ceilings(server_url: str, executor: ProcessPoolExecutor, show: bool | None,
                           seed_outputs: int = 200_000) -> dict:
    transfers = min(20_000, seed_outputs // 4)
    loop = asyncio.get_running_loop()
    cores = executor._max_workers  # noqa: SLF001
    per_core = await asyncio.gather(*(loop.run_in_executor(executor, ledger._verify_rate, VERIFY_SECONDS)
                                      for _ in range(cores)))
    verify = sum(per_core) / VERIFY_SECONDS
    name = f"cbdc_ceiling_{secrets.token_hex(4)}"
    url = await db.ensure_database(server_url, name)
    pool = await db.create_pool(url, max_size=4, min_size=2)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn, db.load_migrations("ledger", "shared"))
        config = ledger.LedgerBenchConfig(seed_outputs=seed_outputs, wallets=min(2_000, seed_outputs // 100))
        await ledger._seed(pool, executor, config, show)
        wires = await ledger._presign(executor, 0, transfers, config.wallets)
        phase = await ledger._db_ceiling(ledger.UTXOEngine(pool), executor, wires, 2, show)
    finally:
        await pool.close()
        await db.drop_database(server_url, name)
    database = phase.per_second
    return {"ceiling_verify_per_second": round(verify), "ceiling_db_per_second": round(database),
            "ceiling_per_second": round(min(verify, database)),
            "ceiling_note": f"verify on {cores} cores; ledger_apply in batches of 1,000 on {seed_outputs:,} outputs"}
