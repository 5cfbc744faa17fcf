"""create_app(settings) -> the central bank's web.Application.

Start-up (cleanup_ctx): create the service's database on the configured server if needed, open
the pool (``SELECT 1``), apply the migrations (shared ledger tables, then the central bank's),
check the schema version, start the micro-batcher and the nonce-expiry task. Shutdown reverses
it: stop the expiry task, flush the batcher, close the pool.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator, Callable

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry

from central_bank import store
from central_bank.auth import Authenticator
from central_bank.handlers import ROUTES, SERVICES, Services
from central_bank.ledger import CentralBank
from central_bank.metrics import CentralBankMetrics
from central_bank.settings import Settings
from central_bank.settlement import Settlement
from shared import db
from shared.signing import expire_nonces
from shared.web import BEFORE_SCRAPE_KEY, REGISTRY_KEY, create_base_app

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2
POOL = web.AppKey("pool", asyncpg.Pool)


async def _migrated_pool(settings: Settings) -> asyncpg.Pool:
    async def schema_check(pool: asyncpg.Pool) -> None:
        if not await db.schema_at(pool, "central_bank", SCHEMA_VERSION):
            raise RuntimeError(f"the central bank's schema is not at version {SCHEMA_VERSION}")

    return await db.migrated_pool(settings.database_url, settings.database_name, pool_max=settings.db_pool_max,
                                  components=[("central_bank", "central_bank")], schema_check=schema_check)


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time,
               registry: CollectorRegistry | None = None) -> web.Application:
    """The application; ``clock`` (unix seconds) is injectable so tests control time."""

    async def ready() -> None:
        await db.ping(app[POOL])

    async def refresh_gauges() -> None:
        await app[SERVICES].cb.refresh_gauges()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        pool = await _migrated_pool(settings)
        app[POOL] = pool
        cb = CentralBank(settings, pool, clock, metrics)
        nonces = store.nonce_store(pool)
        auth = Authenticator(pool, settings.operators(), nonces, clock, settings.request_window_seconds)
        app[SERVICES] = Services(cb, Settlement(cb, settings.settlement_payments_max), auth, settings.request_bytes_max)
        cb.batcher.start()
        expiry = asyncio.get_running_loop().create_task(expire_nonces(
            nonces, settings.request_window_seconds, settings.nonce_expiry_interval_seconds, clock))
        log.info("central bank ready: database %s, %d operators", settings.database_name,
                 len(settings.operators()))
        yield
        expiry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await expiry
        await cb.batcher.stop()
        await pool.close()

    rate_limit = (settings.rate_limit_per_second, settings.rate_limit_burst) if settings.rate_limit_per_second > 0 else None
    app = create_base_app(client_max_size=settings.request_bytes_max + 1, ready_check=ready, registry=registry,
                          rate_limit=rate_limit)
    metrics = CentralBankMetrics(app[REGISTRY_KEY])
    app[BEFORE_SCRAPE_KEY] = refresh_gauges
    app.cleanup_ctx.append(lifecycle)
    app.add_routes(ROUTES)
    return app
