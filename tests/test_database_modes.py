"""Both database modes: the embedded PostgreSQL (start, migrate, stop cleanly) and a server URL."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import pytest

from shared import db
from shared.settings import LedgerSettings, load_settings
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_postgres_starts_migrates_and_stops(tmp_path):
    """In a child process (as a service would): start, create a database, migrate twice, exit.
    Afterwards no server process is left and the data directory is reusable."""
    script = textwrap.dedent(f"""
        import asyncio, asyncpg, os
        from shared import db
        server = db.start_embedded({str(tmp_path)!r})
        async def main():
            url = await db.ensure_database(server.get_uri(), "cbdc_embedded")
            conn = await asyncpg.connect(url)
            first = await db.migrate(conn, db.load_migrations("ledger", "shared"))
            again = await db.migrate(conn, db.load_migrations("ledger", "shared"))
            print("applied", len(first), len(again))
            print("pid", server.get_pid())
            await conn.close()
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["applied"] == "1 0"
    pid = int(lines["pid"])
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()


async def test_server_url_mode_creates_a_database_and_migrates(pg_server):
    """The URL mode: whatever server the suite runs on, by URL (CBDC_DATABASE_URL in CI's 2nd run)."""
    url = await db.ensure_database(pg_server, "cbdc_url_mode_check")
    try:
        conn = await asyncpg.connect(url)
        try:
            await db.migrate(conn, db.load_migrations("ledger", "shared"))
            tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables "
                                                                "WHERE schemaname = 'public'")}
            assert {"ledger_tx", "ledger_utxo", "cbdc_schema"} <= tables
        finally:
            await conn.close()
    finally:
        await db.drop_database(pg_server, "cbdc_url_mode_check")


async def test_a_changed_migration_is_refused(ledger_db):
    conn = await asyncpg.connect(ledger_db)
    try:
        [m] = db.load_migrations("ledger", "shared")
        tampered = db.Migration(m.component, m.version, m.name, m.sql + "\n-- edited")
        with pytest.raises(RuntimeError, match="changed after it was applied"):
            await db.migrate(conn, [tampered])
    finally:
        await conn.close()


def test_database_url_keeps_socket_and_tcp_forms():
    assert db.database_url("postgresql://postgres:@/postgres?host=/tmp/x", "bank_a") == \
        "postgresql://postgres:@/bank_a?host=/tmp/x"
    assert db.database_url("postgresql://postgres@127.0.0.1:5432/postgres", "cb") == \
        "postgresql://postgres@127.0.0.1:5432/cb"
    with pytest.raises(ValueError):
        db.database_url("postgresql://x/y", "bad name; drop")


def test_settings_are_typed_and_fail_loudly():
    s = load_settings(LedgerSettings, "CBDC_", {"CBDC_BATCH_MAX": "250", "CBDC_BATCH_WAIT_MS": "1.5",
                                                "CBDC_DATABASE_URL": "postgresql://u:secret@h/d"})
    assert (s.batch_max, s.batch_wait_ms) == (250, 1.5)
    assert "secret" not in repr(s)
    with pytest.raises(ConfigError, match="CBDC_BATCH_MAX"):
        load_settings(LedgerSettings, "CBDC_", {"CBDC_BATCH_MAX": "many"})
    with pytest.raises(ConfigError, match="CBDC_BATCH_MAX"):
        load_settings(LedgerSettings, "CBDC_", {"CBDC_BATCH_MAX": "0"})
    assert load_settings(LedgerSettings, "CBDC_", {}).database_url is None
    assert os.environ.get("CBDC_DATABASE_URL") is None or load_settings(LedgerSettings, "CBDC_").database_url
