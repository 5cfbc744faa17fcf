"""The operator's main job, as a user runs it: `cbdc demo` end to end, and `cbdc audit` on a
running system, including a negative control: one corrupted row is reported, exactly, and the
audit exits non-zero."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg

from tests.system_processes import RunningSystem, cbdc, pid_alive


def test_demo_tells_the_story_and_passes_the_audit(tmp_path):
    out = cbdc("demo", "--state-dir", str(tmp_path / "no-system-here"), timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for step in ("maker-checker", "on-us payment", "cross-bank payment", "refused", "reverse waterfall",
                 "pays through the bank",
                 "Defunding", "redeems", "Balances", "audit passed", "demo passed"):
        assert step in out.stdout, step
    assert "FAIL" not in out.stdout and "Traceback" not in out.stderr


def test_audit_reports_a_corrupted_output_and_exits_non_zero(tmp_path):
    system = RunningSystem(tmp_path, banks=2)
    try:
        s = ["--state-dir", str(tmp_path)]
        demo = cbdc("demo", *s, timeout=180)
        assert demo.returncode == 0, demo.stdout[-3000:]
        clean = cbdc("audit", "--json", *s)
        assert clean.returncode == 0, clean.stdout
        report = json.loads(clean.stdout.strip().splitlines()[-1])
        assert report["ok"] and {c["check"] for c in report["checks"]} >= {
            "I2 supply", "I3 backing bank-a", "I3 backing bank-b", "I5 exactly once", "I1+I4 ledger bank-b"}

        async def corrupt() -> str:
            conn = await asyncpg.connect(system.database_url(f"{system.prefix}bank_b"))
            try:
                row = await conn.fetchrow("SELECT tx_id, idx FROM ledger_utxo ORDER BY amount DESC LIMIT 1")
                await conn.execute("UPDATE ledger_utxo SET amount = amount + 1 WHERE tx_id = $1 AND idx = $2",
                                   row["tx_id"], row["idx"])
                return f"{row['tx_id'].hex()[:16]}:{row['idx']}"
            finally:
                await conn.close()

        outpoint = asyncio.run(corrupt())
        broken = cbdc("audit", "--json", *s)
        assert broken.returncode == 1, broken.stdout
        report = json.loads(broken.stdout.strip().splitlines()[-1])
        failed = {c["check"]: c for c in report["checks"] if not c["ok"]}
        assert not report["ok"]
        # the changed output is named, in bank-b's ledger check; bank-b's backing is off by exactly 1
        assert any(outpoint in b and "owner or amount changed" in b for b in failed["I1+I4 ledger bank-b"]["breaches"])
        assert "I3 backing bank-b" in failed and "difference -1" in failed["I3 backing bank-b"]["breaches"][0]
        # the UPDATE went around the triggers that keep the wallet's running total: that is reported too
        assert "held" in failed["wallet totals bank-b"]["breaches"][0]
        assert set(failed) == {"I1+I4 ledger bank-b", "I3 backing bank-b", "wallet totals bank-b"}
        pids = [s["pid"] for s in system.system["services"]]
    finally:
        assert system.stop() == 0, system.log()
    assert not any(pid_alive(p) for p in pids)
    assert not (Path(tmp_path) / "pgdata" / "postmaster.pid").exists()
