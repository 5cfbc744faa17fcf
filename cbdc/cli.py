"""`cbdc`: the operator's command line."""
from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from shared.errors import CBDCError, ConfigError
from shared.settings import LedgerSettings, load_settings

BENCH_EXAMPLE = """examples:
  cbdc bench ledger                     # 1M unspent outputs, batch sizes 1/100/1000, ~2 minutes
  cbdc bench ledger --json              # the same; the last stdout line is one JSON object
  cbdc bench ledger --seed-outputs 200000 --transactions 20000 --duration 5   # a quick look
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cbdc", description="Operate the two-tier CBDC ledger.",
        epilog="Configuration comes from CBDC_* environment variables (see README.md). "
               "With no CBDC_DATABASE_URL an embedded PostgreSQL is started under CBDC_STATE_DIR.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser(
        "bench", help="measure throughput and latency", description="Benchmark a scenario and report "
        "transfers/s, latency, errors, CPU and memory, with the ceilings of this machine measured in the "
        "same run.", epilog=BENCH_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("scenario", choices=["ledger"], help="ledger: the engine alone, no HTTP")
    bench.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    bench.add_argument("--duration", type=float, default=15.0, metavar="S",
                       help="maximum seconds per measured phase (default 15)")
    bench.add_argument("--seed-outputs", type=_positive_int, default=1_000_000, metavar="N",
                       help="unspent outputs in the ledger before measuring (default 1,000,000)")
    bench.add_argument("--transactions", type=_positive_int, default=60_000, metavar="N",
                       help="pre-signed transfers per phase (default 60,000; batch size 1 uses a tenth)")
    bench.add_argument("--batch-sizes", default="1,100,1000", metavar="LIST",
                       help="comma-separated batch sizes (default 1,100,1000)")
    bench.add_argument("--verifiers", type=_positive_int, default=None, metavar="P",
                       help="verification processes (default: one per core)")
    bench.add_argument("--no-audit", action="store_true", help="skip the ledger audit at the end")
    return parser


def _print_ledger_report(report: dict) -> None:
    print(f"\nledger engine benchmark  ({report['unspent_outputs_at_start']:,} unspent outputs at start, "
          f"PostgreSQL {report['postgresql']})")
    print(f"  seeded in {report['seed_seconds']} s; {report['presigned_transfers']:,} transfers pre-signed "
          f"in {report['presign_seconds']} s (not counted)")
    for size, rate in report["by_batch_size"].items():
        print(f"  batch size {size:>5}: {rate:>8,} transfers/s (2 in / 2 out, signatures verified)")
    print(f"  best: {report['transfers_per_second']:,}/s at batch size {report['best_batch_size']}; "
          f"batch latency p50 {report['latency_ms_p50']} ms, p99 {report['latency_ms_p99']} ms")
    print(f"  ceilings: verify {report['ceiling_verify_per_second']:,}/s on {report['machine']['cpus']} cores; "
          f"database {report['ceiling_db_per_second']:,}/s (same SQL, no verify)")
    print(f"  ratio to ceiling: {report['ratio_to_ceiling']}")
    one = report["verify_per_second_one_core"]
    print(f"  Ed25519 verify, one core: PyNaCl {one['pynacl']:,}/s, cryptography {one['cryptography']:,}/s")
    print("  CPU seconds: " + ", ".join(f"{k} {v}" for k, v in report["cpu_seconds"].items()))
    print("  peak RSS MB: " + ", ".join(f"{k} {v}" for k, v in report["peak_rss_mb"].items()))
    if report["errors"]:
        print(f"  errors: {report['errors']}")
    if "audit" in report:
        a = report["audit"]
        print(f"  audit: {'ok' if a['ok'] else 'FAILED'} ({a['transactions']:,} transactions, {a['seconds']} s)")


async def _bench(args: argparse.Namespace) -> int:
    from loadtest.bench_ledger import LedgerBenchConfig, run_ledger_bench
    from shared import db

    settings = load_settings(LedgerSettings, "CBDC_")
    sizes = tuple(int(s) for s in args.batch_sizes.split(","))
    config = LedgerBenchConfig(seed_outputs=args.seed_outputs, transactions=args.transactions,
                               batch_sizes=sizes, duration_seconds=args.duration,
                               audit=not args.no_audit)
    if args.verifiers:
        config.verifiers = args.verifiers
    server, pid = settings.database_url, None
    if server is None:
        embedded = db.start_embedded(settings.state_dir)
        server, pid = embedded.get_uri(), embedded.get_pid()
    report = await run_ledger_bench(server, config, embedded_pid=pid)
    _print_ledger_report(report)
    if args.json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0 if report.get("audit", {"ok": True})["ok"] and not report["errors"] else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bench":
            import uvloop
            return uvloop.run(_bench(args))
    except (CBDCError, ConfigError, ValueError) as exc:
        print(f"cbdc: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cbdc: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
