"""The console scripts as a user runs them: help text, one-line errors, exit codes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.address import encode_address
from shared.crypto import PrivateKey

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cbdc_help_lists_bench_with_an_example():
    out = run("cbdc.cli", "bench", "--help")
    assert out.returncode == 0
    assert "cbdc bench ledger --json" in out.stdout and "--seed-outputs" in out.stdout


def test_cbdc_bench_refuses_an_unknown_scenario_in_one_line():
    out = run("cbdc.cli", "bench", "nonsense")
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr


def test_wallet_checks_addresses():
    address = encode_address("bank-a", PrivateKey(bytes([3]) * 32).public_key)
    ok = run("wallet.cli", "check-address", address)
    assert ok.returncode == 0 and "bank bank-a" in ok.stdout
    typo = address[:-3] + ("q" if address[-3] != "q" else "p") + address[-2:]
    bad = run("wallet.cli", "check-address", typo)
    assert bad.returncode == 1 and "typo" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_ledger_json_reports_the_figures(tmp_path):
    """A small `cbdc bench ledger --json` run: the last stdout line is the report, the audit passes."""
    import json
    import os
    env = dict(os.environ, CBDC_STATE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "cbdc.cli", "bench", "ledger", "--json", "--seed-outputs", "20000",
                          "--transactions", "2000", "--duration", "5"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("scenario", "transfers_per_second", "by_batch_size", "ceiling_verify_per_second",
                "ceiling_db_per_second", "ratio_to_ceiling", "latency_ms_p50", "latency_ms_p99", "errors"):
        assert key in report, key
    assert report["scenario"] == "ledger" and set(report["by_batch_size"]) == {"1", "100", "1000"}
    assert report["transfers_per_second"] > 0 and report["errors"] == {}
    assert report["audit"]["ok"] and report["unspent_outputs_at_start"] >= 20000
