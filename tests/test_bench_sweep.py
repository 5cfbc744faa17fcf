"""`cbdc bench SCENARIO --sweep R1,R2,...|auto --plot FILE.png`: the plot function on given rows, the
option checks, and short sweeps as a user runs them (the CLI in a subprocess, its own system on the
test PostgreSQL server, tiny counts). Figures are not asserted: they are benchmark results
(docs/BENCHMARKS.md), not timed tests. Neither matplotlib's pyplot nor locust is imported here."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from loadtest.bench_http import fit_phases, phase_requests
from loadtest.plot import plot_sweep

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEYS = {"scenario", "transfers_per_second", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_max",
        "errors", "ceiling_per_second", "ratio_to_ceiling", "cpu_seconds", "peak_rss_mb", "audit", "setup", "sweep"}
ROW_KEYS = {"offered", "achieved", "p50", "p95", "p99", "max", "errors"}
RUN_TIMEOUT_SECONDS = 120
SMALL = ["--workers", "1", "--wallets", "4", "--seed-outputs", "500"]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("rates, duration, per_request, left", [
    ([690, 1380, 2070, 2760, 3450, 4141], 1.0, 1, 1000),   # a fast probe, few transfers left (a CI failure)
    ([20, 40, 60, 80, 100, 120], 5.0, 100, 7),
    ([1, 1, 1], 0.5, 1, 4),
    ([3.3, 7.7, 1e4], 2.0, 7, 57),
])
def test_shortened_phases_never_need_more_than_is_left(rates, duration, per_request, left):
    fitted = fit_phases(rates, duration, per_request, left)
    assert 0 < fitted <= duration
    assert sum(phase_requests(r, fitted, per_request) for r in rates) <= left


def test_phases_that_fit_keep_their_length_and_too_few_requests_are_refused():
    assert fit_phases([10, 20], 1.0, 1, 1000) == 1.0
    with pytest.raises(RuntimeError, match="too few for 3 phases"):
        fit_phases([100, 200, 300], 1.0, 1, 3)


def test_plot_sweep_writes_a_png(tmp_path):
    rows = [{"offered": r, "achieved": min(r, 1500) * 0.98, "p50": 10 + r / 100, "p95": 30 + r / 20,
             "p99": 40 + (r / 10 if r < 1500 else 4000), "max": 5000, "errors": 0 if r < 2000 else 3}
            for r in (400, 800, 1200, 1600, 2000, 2400)]
    path = plot_sweep(list(reversed(rows)), tmp_path / "out" / "sweep.png", scenario="onus", seed_outputs=100_000,
                      date="2026-11-22", peak=1550.0)
    data = path.read_bytes()
    width, height = _png_size(data)
    assert width >= 600 and height >= 400
    assert len(data) > 20_000          # axes, two curves, legend and title: far from an empty canvas


def test_plot_sweep_keeps_rows_without_latency(tmp_path):
    """A phase that completed nothing (p50/p99 0) cannot go on a log axis: it is left out, not fatal."""
    rows = [{"offered": 10, "achieved": 10, "p50": 5, "p99": 9}, {"offered": 20, "achieved": 0, "p50": 0, "p99": 0}]
    path = plot_sweep(rows, tmp_path / "gap.png", scenario="crossbank")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_sweep_refuses_no_rows(tmp_path):
    with pytest.raises(ValueError):
        plot_sweep([], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_the_cli_imports_neither_matplotlib_nor_locust():
    code = ("import sys, cbdc.cli, loadtest.bench_report, loadtest.bench_http, loadtest.plot; "
            "bad = [m for m in ('matplotlib', 'locust', 'gevent') if m in sys.modules]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("extra, message", [
    (["onus", "--plot", "x.png"], "--plot: needs --sweep"),
    (["onus", "--sweep", "10,20", "--rate", "5"], "--sweep and --rate"),
    (["ledger", "--sweep", "auto"], "only for the HTTP scenarios"),
    (["onus", "--sweep", "10,20", "--plot", "x.svg"], "must end in .png"),
    (["onus", "--sweep", "10,fast"], "comma-separated rates"),
    (["onus", "--sweep", "10,0"], "must be > 0"),
    (["onus", "--bank-setting", "no_such_setting=1"], "NAME a bank setting"),
    (["onus", "--bank-setting", "signing_seed=00"], "NAME a bank setting"),
    (["onus", "--bank-setting", "batch_wait_ms=5", "--use-running"], "not --use-running"),
])
def test_sweep_options_are_checked_before_anything_starts(extra, message):
    done = subprocess.run([sys.executable, "-m", "cbdc.cli", "bench", *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_bench_help_shows_the_sweep():
    done = subprocess.run([sys.executable, "-m", "cbdc.cli", "bench", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--sweep" in done.stdout and "--plot FILE.png" in done.stdout
    assert "--sweep auto --plot sweep.png" in done.stdout


def _bench(pg_server: str, tmp_path: Path, *args: str) -> tuple[dict, str]:
    env = {**os.environ, "CBDC_DATABASE_URL": pg_server}
    command = [sys.executable, "-m", "cbdc.cli", "bench", *args, "--json", *SMALL,
               "--state-dir", str(tmp_path / "state")]
    done = subprocess.run(command, env=env, capture_output=True, timeout=RUN_TIMEOUT_SECONDS, cwd=tmp_path)
    out = done.stdout.decode()
    assert done.returncode == 0, out[-3000:] + done.stderr.decode()[-3000:]
    return orjson.loads(out.strip().splitlines()[-1]), out


def test_sweep_two_rates_with_a_plot(pg_server, tmp_path):
    png = tmp_path / "plots" / "sweep.png"
    report, out = _bench(pg_server, tmp_path, "onus", "--sweep", "20,40", "--duration", "2",
                         "--ceiling-outputs", "4000", "--plot", str(png), "--bank-setting", "batch_wait_ms=3")
    assert KEYS <= set(report), sorted(KEYS - set(report))
    assert report["bank_settings"] == {"batch_wait_ms": "3"} and "bank settings: batch_wait_ms=3" in out
    assert report["scenario"] == "onus" and report["errors"] == {} and report["audit"]["ok"], report
    rows = report["sweep"]
    assert [r["offered"] for r in rows] == [20, 40]
    for row in rows:
        assert ROW_KEYS <= set(row), row
        assert row["achieved"] > 0 and row["errors"] == 0, row
        assert 0 < row["p50"] <= row["p95"] <= row["p99"] <= row["max"], row
    # one system, pre-signed once: every phase's transfers came out of the one pre-signed set
    assert sum(r["transfers"] for r in rows) <= report["setup"]["presigned_transfers"]
    assert report["transfers_per_second"] > 0 and report["ratio_to_ceiling"] > 0
    assert report["plot"] == str(png) and png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    assert "offered/s" in out and f"plot: {png}" in out


def test_sweep_auto_probes_then_offers_shares_of_the_peak(pg_server, tmp_path):
    """--sweep auto with too few pre-signed transfers for full phases: a closed-loop probe, then six
    open-loop phases at 20..120 % of its rate, shortened alike (and said so)."""
    report, _ = _bench(pg_server, tmp_path, "onus", "--sweep", "auto", "--duration", "1", "--transactions", "1500",
                       "--no-ceilings")
    assert report["errors"] == {} and report["audit"]["ok"], report
    probe = report["sweep_probe"]
    assert probe["achieved"] > 0 and probe["errors"] == 0
    rows = report["sweep"]
    assert len(rows) == len(report["sweep_shares_of_probe"]) == 6
    for row, share in zip(rows, report["sweep_shares_of_probe"]):
        assert row["offered"] == max(1, round(probe["achieved"] * share / 100))
        assert row["achieved"] > 0 and row["errors"] == 0, row
    assert report["sweep_phase_seconds"] <= 1
    if report["sweep_phase_seconds"] < 1:
        assert "shortened" in report["sweep_note"]
    assert report["ceiling_per_second"] is None and report["ratio_to_ceiling"] is None
