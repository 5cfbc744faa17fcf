"""`cbdc bench onus|onus-batch|crossbank|mixed`: arguments -> HTTPBenchConfig, the printed report and
the final JSON line (loadtest/bench_http.py does the work); with ``--plot`` the sweep's PNG
(loadtest/plot.py, matplotlib imported only then)."""
from __future__ import annotations

import argparse
import datetime
import sys

import orjson

from loadtest.bench_http import HTTPBenchConfig, run_http_bench


def config_of(args: argparse.Namespace) -> HTTPBenchConfig:
    return HTTPBenchConfig(
        scenario=args.scenario, duration_seconds=args.duration or 10.0, rate=args.rate,
        concurrency=args.concurrency or (8 if args.scenario == "onus-batch" else 64), workers=args.workers,
        wallets=args.wallets, transfers=args.transactions, batch_size=args.batch_size,
        seed_outputs=100_000 if args.seed_outputs is None else args.seed_outputs,
        verify_processes=args.verify_processes, use_running=args.use_running, state_dir=args.state_dir,
        ceilings=not args.no_ceilings, ceiling_outputs=args.ceiling_outputs,
        sweep=getattr(args, "sweep", None), bank_settings=dict(getattr(args, "bank_setting", None) or []))


def print_report(r: dict, out=sys.stdout) -> None:
    s = r["setup"]
    w = lambda text: out.write(text + "\n")  # noqa: E731
    w(f"\n{r['scenario']} benchmark: {r['mode']}, {r['workers_per_service']} worker processes per service")
    if r.get("bank_settings"):
        w("  bank settings: " + ", ".join(f"{k}={v}" for k, v in r["bank_settings"].items()))
    w(f"  setup {s['setup_seconds']} s (not measured): {s['wallets_per_bank']} wallets per bank "
      f"(KYC {s['kyc_tier']}) "
      f"onboarded and funded in {s['onboard_fund_seconds']} s; ballast {s['ballast_outputs_per_bank']:,} outputs "
      f"per bank in {s['ballast_seconds']} s; {s['coins_per_wallet']} coins per wallet split in {s['split_seconds']} s; "
      f"{s['presigned_transfers']:,} transfers pre-signed in {s['presign_seconds']} s")
    w("  unspent outputs at start: " + ", ".join(f"{b} {n:,}" for b, n in r["unspent_outputs_at_start"].items()))
    if r.get("sweep"):
        write_sweep_table(r, out)
        w(f"  best phase (offered {r['sweep_best_offered']:g}/s):")
    w(f"  {r['transfers']:,} transfers in {r['seconds']} s: {r['transfers_per_second']:,} transfers/s")
    if r.get("duration_note"):
        w(f"  note: {r['duration_note']}")
    w(f"  latency ms ({r['latency_note']}): p50 {r['latency_ms_p50']}, p95 {r['latency_ms_p95']}, "
      f"p99 {r['latency_ms_p99']}, max {r['latency_ms_max']}")
    w(f"  errors: {r['errors'] or 'none'}")
    if r.get("ceiling_per_second"):
        w(f"  ceilings: verify {r['ceiling_verify_per_second']:,}/s, database {r['ceiling_db_per_second']:,}/s "
          f"({r['ceiling_note']}); ratio to ceiling {r['ratio_to_ceiling']}")
    w("  CPU seconds: " + ", ".join(f"{k} {v}" for k, v in r["cpu_seconds"].items()))
    w("  peak RSS MB: " + ", ".join(f"{k} {v}" for k, v in r["peak_rss_mb"].items()))
    a = r["audit"]
    w(f"  audit: {'passed' if a['ok'] else 'FAILED'} ({a['seconds']} s)"
      + (f": {a['breaches']}" if not a["ok"] else ""))


def write_sweep_table(r: dict, out=sys.stdout) -> None:
    w = lambda text: out.write(text + "\n")  # noqa: E731
    probe = r.get("sweep_probe")
    if probe:
        w(f"  closed-loop probe (c={probe['concurrency']}, {probe['seconds']} s): {probe['achieved']:,} transfers/s, "
          f"p50 {probe['p50']} ms, p99 {probe['p99']} ms, errors {probe['errors']}")
    w(f"  open-loop sweep, {r['sweep_phase_seconds']} s per phase; latency ms, {r['latency_note']}:")
    if r.get("sweep_note"):
        w(f"  note: {r['sweep_note']}")
    w(f"    {'offered/s':>10} {'achieved/s':>11} {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9} {'errors':>7}")
    for row in r["sweep"]:
        w(f"    {row['offered']:>10,g} {row['achieved']:>11,.1f} {row['p50']:>9,.1f} {row['p95']:>9,.1f} "
          f"{row['p99']:>9,.1f} {row['max']:>9,.1f} {row['errors']:>7,}")


async def bench_http_main(args: argparse.Namespace) -> int:
    config = config_of(args)
    if args.use_running and not args.state_dir:
        import os
        config.state_dir = os.environ.get("CBDC_STATE_DIR", ".state")
    report = await run_http_bench(config)
    plot = getattr(args, "plot", None)
    if plot and report.get("sweep"):
        from loadtest.plot import plot_sweep
        path = plot_sweep(report["sweep"], plot, scenario=report["scenario"],
                          seed_outputs=report["setup"]["ballast_outputs_per_bank"],
                          date=datetime.date.today().isoformat(),
                          peak=(report.get("sweep_probe") or {}).get("achieved"))
        report["plot"] = str(path)
    print_report(report)
    if report.get("plot"):
        print(f"  plot: {report['plot']}")
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0 if report["audit"]["ok"] and not report["errors"] else 1
