"""`cbdc`: the operator's command line."""
from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys

import orjson

from shared.errors import CBDCError, ConfigError
from shared.settings import LedgerSettings, load_settings

UP_EXAMPLE = """examples:
  cbdc up                       # central bank + bank-a + bank-b on an embedded PostgreSQL
  cbdc up --banks 3 --state-dir /tmp/cbdc
  CBDC_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres cbdc up
"""

BENCH_EXAMPLE = """examples:
  cbdc bench ledger                     # 1M unspent outputs, batch sizes 1/100/1000, ~2 minutes
  cbdc bench ledger --json              # the same; the last stdout line is one JSON object
  cbdc bench ledger --seed-outputs 200000 --transactions 20000 --duration 5   # a quick look
  cbdc bench onus                       # own system (2 banks, 2 workers each), closed loop, ~1-2 minutes
  cbdc bench onus-batch --batch-size 100 --concurrency 8
  cbdc bench crossbank --rate 500       # open loop: 500 payments/s on a fixed timetable
  cbdc bench mixed --json --duration 20 --seed-outputs 1000000
  cbdc bench onus --use-running --state-dir /tmp/cbdc   # against the system `cbdc up` runs there
  cbdc bench onus --sweep 400,800,1200,1600 --plot sweep.png   # open loop, one 10 s phase per rate, one PNG
  cbdc bench onus --sweep auto --plot sweep.png --json          # closed-loop probe, then 20..120 % of its rate
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 26:
        raise argparse.ArgumentTypeError("must be 0..26")
    return value


def _sweep(text: str) -> tuple[float, ...] | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        rates = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("'auto' or comma-separated rates, e.g. 200,400,800") from None
    if not rates or any(not r > 0 or r == float("inf") for r in rates):
        raise argparse.ArgumentTypeError("every rate must be > 0")
    return rates


def _bank_setting(text: str) -> tuple[str, str]:
    """NAME=VALUE of a commercial-bank setting (commercial_bank/settings.py), for `cbdc bench --bank-setting`."""
    import dataclasses

    from commercial_bank.settings import Settings
    name, sep, value = text.partition("=")
    names = {f.name for f in dataclasses.fields(Settings)}
    if not sep or name.lower() not in names or name.lower() in ("id", "signing_seed", "signing_key_file"):
        raise argparse.ArgumentTypeError(f"{text!r}: NAME=VALUE with NAME a bank setting, e.g. batch_wait_ms=5")
    return "CBDC_BANK_" + name.upper(), value


def _bench_conflict(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of `cbdc bench` options, or None."""
    if args.sweep is not None and args.scenario == "ledger":
        return "--sweep: only for the HTTP scenarios (onus, onus-batch, crossbank, mixed)"
    if args.sweep is not None and args.rate is not None:
        return "--sweep and --rate: give one (a sweep sets the rate of each phase)"
    if args.plot is not None and args.sweep is None:
        return "--plot: needs --sweep (it draws the sweep's phases)"
    if args.bank_setting and (args.scenario == "ledger" or args.use_running):
        return "--bank-setting: only for an HTTP scenario on the system the bench starts (not --use-running)"
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        return "--plot: the file name must end in .png"
    return None


def _state_dir(parser: argparse.ArgumentParser) -> None:
    import os
    parser.add_argument("--state-dir", default=os.environ.get("CBDC_STATE_DIR", ".state"), metavar="DIR",
                        help="where keys, logs, system.json and the embedded PostgreSQL live "
                             "(default $CBDC_STATE_DIR or .state)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cbdc", description="Operate the two-tier CBDC ledger.",
        epilog="Configuration comes from CBDC_* environment variables (see README.md). "
               "With no CBDC_DATABASE_URL an embedded PostgreSQL is started under CBDC_STATE_DIR.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="start the central bank and the banks, and keep them running",
                             description="Start PostgreSQL (embedded unless CBDC_DATABASE_URL is set), the "
                             "central bank and N banks as separate processes; register the banks; wait until "
                             "all are ready. Runs in the foreground: Ctrl-C or `cbdc down` stops everything.",
                             epilog=UP_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _state_dir(up)
    up.add_argument("--banks", type=_count, default=2, metavar="N", help="number of banks, 0-26 (default 2)")
    up.add_argument("--base-port", type=_positive_int, default=8470, metavar="PORT",
                    help="the central bank's port; banks take the next ones (default 8470)")
    up.add_argument("--workers", type=_positive_int, default=1, metavar="W",
                    help="worker processes per service, sharing its port (default 1)")
    up.add_argument("--db-prefix", default="cbdc_", metavar="PREFIX",
                    help="database names start with this (default cbdc_: cbdc_central_bank, cbdc_bank_a, ...)")
    down = commands.add_parser("down", help="stop the system `cbdc up` started",
                               epilog="example:\n  cbdc down --state-dir /tmp/cbdc",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    _state_dir(down)
    from cbdc import admin
    admin.add_commands(commands, _state_dir)
    demo = commands.add_parser("demo", help="tell the whole two-tier story end to end, then audit it",
                               description="Issuance with maker-checker, wallets at two banks, funding, on-us "
                               "and cross-bank payments, a limit refusal, a double spend, a reverse waterfall, "
                               "defunding and a redemption; then balances and the audit. Uses the system running "
                               "in --state-dir, or starts a fresh one of its own (and stops it afterwards). "
                               "Exit status 0 only if every step behaved as expected and the audit passed.",
                               epilog="examples:\n  cbdc demo\n  make demo",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    _state_dir(demo)
    audit = commands.add_parser("audit", help="check invariants I1-I5 across every ledger of the running system",
                                description="Read the central bank's and every bank's database, each in one "
                                "consistent snapshot, and check conservation, supply, 100 %% backing, no double "
                                "spend and exactly-once payments. Exit status 1 on any breach.",
                                epilog="examples:\n  cbdc audit\n  cbdc audit --json | tail -n 1",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _state_dir(audit)
    audit.add_argument("--json", action="store_true", help="end with one JSON line: {\"ok\": ..., \"checks\": [...]}")
    bench = commands.add_parser(
        "bench", help="measure throughput and latency", description="Benchmark a scenario and report "
        "transfers/s, latency, errors, CPU and memory, with the ceilings of this machine measured in the "
        "same run.", epilog=BENCH_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("scenario", choices=["ledger", "onus", "onus-batch", "crossbank", "mixed"],
                       help="ledger: the engine alone, no HTTP; onus: one transfer per request; onus-batch: "
                       "batches per request; crossbank: payments counted when the payee is credited; mixed: "
                       "4 on-us : 1 cross-bank")
    bench.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    bench.add_argument("--duration", type=float, default=None, metavar="S",
                       help="maximum seconds per measured phase (default 15 for ledger, 10 otherwise)")
    bench.add_argument("--seed-outputs", type=int, default=None, metavar="N",
                       help="unspent outputs in the (each bank's) ledger before measuring "
                       "(default 1,000,000 for ledger, 100,000 per bank otherwise)")
    bench.add_argument("--transactions", type=_positive_int, default=None, metavar="N",
                       help="pre-signed transfers (ledger: per phase, default 60,000; onus 60,000, onus-batch "
                       "150,000, crossbank 20,000, mixed 40,000; a run that uses them all before --duration "
                       "ends says so)")
    bench.add_argument("--rate", type=float, default=None, metavar="R",
                       help="open loop: R transfers/s on a fixed timetable (default: closed loop)")
    bench.add_argument("--sweep", type=_sweep, default=None, metavar="R1,R2,...|auto",
                       help="open-loop rate sweep on one system, set up and pre-signed once: one phase of "
                       "--duration s per offered rate; 'auto' first runs a closed-loop probe (at most 5 s, "
                       "--concurrency in flight) and offers 20,40,60,80,100,120 %% of its rate. The report "
                       "(and the JSON's \"sweep\" list) gives per rate: achieved/s, p50, p95, p99, max, errors. "
                       "--transactions then counts all phases (default: what the rates need; 2x the "
                       "scenario's default for auto; too few shortens every phase alike)")
    bench.add_argument("--plot", default=None, metavar="FILE.png",
                       help="with --sweep: write a PNG (matplotlib) of achieved throughput and p50/p99 latency "
                       "against offered rate")
    bench.add_argument("--concurrency", type=_positive_int, default=None, metavar="C",
                       help="closed loop: requests in flight (default 64; 8 for onus-batch)")
    bench.add_argument("--workers", type=_positive_int, default=2, metavar="W",
                       help="worker processes per service of the system it starts (default 2)")
    bench.add_argument("--wallets", type=_positive_int, default=100, metavar="N",
                       help="wallets per bank (default 100)")
    bench.add_argument("--batch-size", type=_positive_int, default=100, metavar="N",
                       help="onus-batch: transfers per request (default 100)")
    bench.add_argument("--verify-processes", type=int, default=0, metavar="P",
                       help="the banks' CBDC_BANK_VERIFY_PROCESSES (default 0: batches verified inline)")
    bench.add_argument("--bank-setting", action="append", type=_bank_setting, default=[], metavar="NAME=VALUE",
                       help="a CBDC_BANK_<NAME> setting for every bank of the system it starts, e.g. "
                       "batch_wait_ms=5 (repeatable; how the batcher defaults were chosen, docs/BENCHMARKS.md)")
    bench.add_argument("--state-dir", default=None, metavar="DIR",
                       help="with --use-running: the running system's state dir; else where the bench's own "
                       "system keeps its state (default: a fresh temporary directory)")
    bench.add_argument("--use-running", action="store_true", help="target the system running in --state-dir")
    bench.add_argument("--no-ceilings", action="store_true", help="skip measuring the machine's ceilings")
    bench.add_argument("--ceiling-outputs", type=_positive_int, default=200_000, metavar="N",
                       help="outputs in the scratch ledger of the database ceiling (default 200,000)")
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
    if args.scenario != "ledger":
        from loadtest.bench_report import bench_http_main
        return await bench_http_main(args)
    from loadtest.bench_ledger import LedgerBenchConfig, run_ledger_bench
    from shared import db

    settings = load_settings(LedgerSettings, "CBDC_")
    sizes = tuple(int(s) for s in args.batch_sizes.split(","))
    config = LedgerBenchConfig(seed_outputs=args.seed_outputs or 1_000_000, transactions=args.transactions or 60_000,
                               batch_sizes=sizes, duration_seconds=args.duration or 15.0,
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


async def _up(args: argparse.Namespace) -> int:
    import signal
    from cbdc import state
    from cbdc.supervisor import Supervisor

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,30}", args.db_prefix):
        raise ValueError("--db-prefix: lower-case letters, digits and _ only")
    supervisor = Supervisor(state.state_path(args.state_dir), banks=args.banks, base_port=args.base_port,
                            db_prefix=args.db_prefix, workers=args.workers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        system = await supervisor.start()
        print("\nthe system is up:")
        for s in system.services:
            print(f"  {s.name:<14} {s.url:<24} metrics {s.metrics_url}   pid {s.pid}")
        print(f"  PostgreSQL     {'embedded, ' if system.embedded_postgres else ''}{system.database_server}")
        from cbdc.supervisor import prometheus_command
        print(f"\nPrometheus (scrape config deploy/prometheus/, targets written to "
              f"{supervisor.state_dir / 'prometheus'}):\n  {prometheus_command(supervisor.state_dir)}")
        print(f"\nstate in {supervisor.state_dir}; stop with Ctrl-C or `cbdc down --state-dir {args.state_dir}`")
        sys.stdout.flush()
        status = await supervisor.watch(stop)
    finally:
        supervisor.stop()
    print("stopped" if status == 0 else "stopped after a failure")
    return status


async def _admin(args: argparse.Namespace) -> int:
    from cbdc import admin
    return await getattr(admin, args.command)(args)


async def _stopped_by_sigterm(work) -> int:
    """Run a command that starts its own system so that SIGTERM stops it like Ctrl-C: the command's
    task is cancelled and its cleanup (stopping the services and PostgreSQL it started) runs."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await work
    except asyncio.CancelledError:
        print("cbdc: terminated; what it started is stopped", file=sys.stderr)
        return 143
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench" and (conflict := _bench_conflict(args)):
        print(f"cbdc bench: error: {conflict}", file=sys.stderr)
        return 2
    from central_bank.client import APIError
    try:
        import uvloop
        if args.command == "bench":
            return uvloop.run(_stopped_by_sigterm(_bench(args)))
        if args.command == "up":
            return uvloop.run(_up(args))
        if args.command == "down":
            from cbdc import state, supervisor
            return supervisor.down(state.state_path(args.state_dir))
        if args.command in ("bank", "issue", "supply"):
            return uvloop.run(_admin(args))
        if args.command == "demo":
            from cbdc import demo
            return uvloop.run(_stopped_by_sigterm(demo.main(args)))
        if args.command == "audit":
            from cbdc import audit
            return uvloop.run(audit.main(args))
    except APIError as exc:
        print(f"cbdc: refused: {exc.problem.get('detail', '')} ({exc.code})", file=sys.stderr)
        return 1
    except (CBDCError, ConfigError, ValueError) as exc:
        print(f"cbdc: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cbdc: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cbdc: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
