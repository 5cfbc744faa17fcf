"""A short locust run in the suite: `cbdc up` with two banks, a few hundred pre-signed payments
(loadtest/prepare.py), loadtest/locustfile.py headless as a subprocess with the payday shape for a
few seconds, then the CSV report shows requests and no failures, and `cbdc audit` passes."""
from __future__ import annotations

import asyncio
import importlib.util
import csv
import subprocess
import sys

import orjson
import pytest

from loadtest import prepare
from tests.system_processes import ROOT, RunningSystem, cbdc

# Never import locust here: it monkey-patches threading with gevent, and the test process would then
# hang at exit. It runs in its own process; only check that it is installed (a dev dependency).
assert importlib.util.find_spec("locust") is not None, "locust is in the dev extra: pip install -e '.[dev]'"

RUN_SECONDS = 8
USERS = 4


def _rows(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_locust_payday_run_on_a_running_system(tmp_path):
    system = RunningSystem(tmp_path, banks=2)
    try:
        options = prepare.Options(transactions=1_200, payers_per_bank=4, merchants_per_bank=2, seed=7)
        prepared = asyncio.run(prepare.prepare(tmp_path, options))
        presigned = prepare.write(prepared, tmp_path / "presigned.json")
        assert {p["kind"] for p in prepared.payments} == {"onus", "crossbank"}

        reports = tmp_path / "reports"
        reports.mkdir()
        command = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest/locustfile.py"), "--headless",
                   "-u", str(USERS), "-r", str(USERS), "-t", f"{RUN_SECONDS}s", "--load-shape", "payday",
                   "--spike-factor", "2", "--user-rate", "15", "--crossbank-share", "0.3",
                   "--presigned", str(presigned), "--csv", str(reports / "locust"),
                   "--html", str(reports / "locust.html"), "--only-summary"]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_SECONDS + 30)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

        rows = _rows(reports / "locust_stats.csv")
        total = rows["Aggregated"]
        assert int(total["Request Count"]) > 0, total
        assert int(total["Failure Count"]) == 0, (reports / "locust_failures.csv").read_text()
        for name in ("POST /v1/transfers (on-us)", "POST /v1/payments (cross-bank)"):
            assert int(rows[name]["Request Count"]) > 0, rows.keys()
        assert (reports / "locust.html").stat().st_size > 0

        audit = cbdc("audit", "--state-dir", str(tmp_path), "--json", timeout=60)
        assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-2000:]
        report = orjson.loads(audit.stdout.strip().splitlines()[-1])
        assert report["ok"] is True
    finally:
        assert system.stop() == 0, system.log()
