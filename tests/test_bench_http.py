"""`cbdc bench onus|onus-batch|crossbank|mixed`: a short smoke run of each scenario, as a user runs it
(the CLI in a subprocess, its own system on the test PostgreSQL server, tiny counts), checking the
final JSON line's keys, zero errors and a passing audit. Figures are not asserted: they are
benchmark results (docs/BENCHMARKS.md), not timed tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from loadtest.bench_http import duration_note

KEYS = {"scenario", "transfers_per_second", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_max",
        "errors", "ceiling_per_second", "ratio_to_ceiling", "cpu_seconds", "peak_rss_mb", "audit", "setup"}
RUN_TIMEOUT_SECONDS = 120


@pytest.mark.parametrize("scenario, extra", [
    ("onus", []),
    ("onus-batch", ["--batch-size", "20", "--concurrency", "2", "--verify-processes", "1"]),
    ("crossbank", ["--rate", "100"]),
    ("mixed", []),
])
def test_bench_scenario_smoke(pg_server, tmp_path, scenario, extra):
    env = {**os.environ, "CBDC_DATABASE_URL": pg_server}
    command = [sys.executable, "-m", "cbdc.cli", "bench", scenario, "--json", "--duration", "1", "--workers", "1",
               "--wallets", "4", "--transactions", "200", "--seed-outputs", "500", "--ceiling-outputs", "4000",
               "--state-dir", str(tmp_path / "state"), *extra]
    done = subprocess.run(command, env=env, capture_output=True, timeout=RUN_TIMEOUT_SECONDS, cwd=tmp_path)
    assert done.returncode == 0, done.stdout.decode()[-3000:] + done.stderr.decode()[-3000:]
    report = orjson.loads(done.stdout.decode().strip().splitlines()[-1])
    assert KEYS <= set(report), sorted(KEYS - set(report))
    assert report["scenario"] == scenario
    assert report["errors"] == {} and report["audit"]["ok"], report
    assert report["transfers"] > 0 and report["transfers_per_second"] > 0
    assert report["ceiling_per_second"] > 0 and report["ratio_to_ceiling"] > 0
    assert {"bench (load generator)", "bank-a", "bank-b", "central-bank"} <= set(report["cpu_seconds"])
    if scenario == "onus":     # 200 transfers run out long before the second is over: the report says so
        assert "all 200 pre-signed transfers were used" in report["duration_note"], report
        human = "\n".join(done.stdout.decode().strip().splitlines()[:-1])
        assert "note: all 200 pre-signed transfers were used" in human, human
    if scenario == "crossbank":   # open loop at 100/s for 1 s sends 101 of its 200: a full-length run
        assert "duration_note" not in report, report


@pytest.mark.parametrize("all_sent, seconds, expected", [
    (True, 0.4, "all 1,000 pre-signed transfers were used in 0.40 s, before --duration 10 s ended"),
    (True, 9.6, None),      # within 5 % of the duration: a full-length run
    (False, 0.4, None),     # stopped by its clock or by an error, not by running out
])
def test_duration_note_says_when_the_transfers_ran_out_first(all_sent, seconds, expected):
    note = duration_note(all_sent, 1000, seconds, 10.0)
    assert note == expected if expected is None else note.startswith(expected)


def test_a_terminated_bench_stops_the_system_it_started(pg_server, tmp_path):
    """SIGTERM (a CI timeout, `kill`) stops a bench like Ctrl-C does: its services are stopped, none
    is left running."""
    state_dir = tmp_path / "state"
    env = {**os.environ, "CBDC_DATABASE_URL": pg_server}
    bench = subprocess.Popen([sys.executable, "-m", "cbdc.cli", "bench", "onus", "--duration", "60", "--workers", "1",
                              "--wallets", "4", "--transactions", "400", "--rate", "20", "--seed-outputs", "500", "--no-ceilings",
                              "--state-dir", str(state_dir)], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        pids, deadline = [], time.monotonic() + RUN_TIMEOUT_SECONDS
        while not pids and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.2)
            try:
                system = orjson.loads((state_dir / "system.json").read_bytes())
                pids = [s["pid"] for s in system["services"]]
            except (OSError, ValueError, KeyError):
                pass
        assert pids and bench.poll() is None, "the bench's system did not come up"
        time.sleep(1)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=RUN_TIMEOUT_SECONDS) == 143, bench.stderr.read().decode()[-2000:]
        alive = [pid for pid in pids if _alive(pid)]
        assert alive == [], f"still running after the bench was terminated: {alive}"
    finally:
        if bench.poll() is None:
            bench.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
