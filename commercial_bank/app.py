"""create_app(settings) -> a commercial bank's web.Application.

Start-up (cleanup_ctx): create the bank's database on the configured server if needed, open the
pool (``SELECT 1``), apply the migrations (shared ledger tables, then the bank's), check the schema
version, open the HTTP session (explicit timeout) used for the central bank and the other banks,
start the micro-batcher, the recovery loop and the nonce-expiry task. Shutdown reverses it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator, Callable

import aiohttp
import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry

from central_bank.client import APIError, CentralBankClient
from commercial_bank import store
from commercial_bank.auth import WalletAuth
from commercial_bank.funding import Flows
from commercial_bank.handlers import ROUTES, SERVICES, Services
from commercial_bank.ledger import CommercialBank
from commercial_bank.metrics import BankMetrics
from commercial_bank.payments import Payments
from commercial_bank.recovery import Recovery
from commercial_bank.settings import Settings
from commercial_bank.verify import BatchVerifier
from shared import db
from shared.signing import expire_nonces
from shared.web import BEFORE_SCRAPE_KEY, REGISTRY_KEY, create_base_app

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2
POOL = web.AppKey("pool", asyncpg.Pool)
RECOVERY = web.AppKey("recovery", Recovery)


async def _migrated_pool(settings: Settings) -> asyncpg.Pool:
    async def schema_check(pool: asyncpg.Pool) -> None:
        if not await db.schema_at(pool, "commercial_bank", SCHEMA_VERSION):
            raise RuntimeError(f"the bank's schema is not at version {SCHEMA_VERSION}")

    return await db.migrated_pool(settings.database_url, settings.database, pool_max=settings.db_pool_max,
                                  components=[("commercial_bank", "commercial_bank")], schema_check=schema_check)


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time,
               registry: CollectorRegistry | None = None) -> web.Application:
    """The application; ``clock`` (unix seconds) is injectable so tests control time."""

    async def ready() -> None:
        await db.ping(app[POOL])

    async def refresh_gauges() -> None:
        services = app[SERVICES]
        await services.bank.refresh_gauges()
        try:
            balances = await services.flows.cb.balances(settings.id)
            metrics.escrow.set(balances["escrow"])
        except (APIError, aiohttp.ClientError, asyncio.TimeoutError):
            pass   # the gauge keeps its last value; the central bank is not answering

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        pool = await _migrated_pool(settings)
        app[POOL] = pool
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.http_timeout_seconds))
        bank = CommercialBank(settings, pool, clock, metrics)
        cb = CentralBankClient(settings.central_bank_url, bank.key, f"bank:{settings.id}", clock=clock,
                               session=session)
        flows, payments = Flows(bank, cb), Payments(bank, cb, session)
        nonces = store.nonce_store(pool)
        auth = WalletAuth(settings.id, nonces, clock, settings.request_window_seconds)
        verifier = BatchVerifier(settings.verify_processes, settings.verify_chunk_items)
        await verifier.start()
        app[SERVICES] = Services(bank, flows, payments, auth, settings.request_bytes_max, verifier,
                                 settings.batch_request_bytes_max, settings.batch_transactions_max)
        app[RECOVERY] = Recovery(flows, payments)
        bank.batcher.start()
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(app[RECOVERY].run(), name="recovery"),
                 loop.create_task(expire_nonces(
            nonces, settings.request_window_seconds, settings.nonce_expiry_interval_seconds, clock), name="nonce-expiry")]
        log.info("bank %s ready: database %s", settings.id, settings.database)
        yield
        for task in tasks:
            await _stop(task)
        await bank.batcher.stop()
        await payments.stop()
        await flows.stop()
        verifier.close()
        await session.close()
        await pool.close()

    body_max = max(settings.request_bytes_max, settings.batch_request_bytes_max)   # each route checks its own
    app = create_base_app(client_max_size=body_max + 1, ready_check=ready, registry=registry)
    metrics = BankMetrics(app[REGISTRY_KEY])
    app[BEFORE_SCRAPE_KEY] = refresh_gauges
    app.cleanup_ctx.append(lifecycle)
    app.add_routes(ROUTES)
    return app
