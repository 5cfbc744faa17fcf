"""`cbdc bench onus|onus-batch|crossbank|mixed`: the whole system over HTTP, end to end.

Starts its own system (cbdc.supervisor.Supervisor: the central bank and 2 banks with W worker
processes each, a fresh temporary state dir and embedded PostgreSQL, stopped afterwards) or, with
``use_running``, targets the system running from ``state_dir``. Setup (loadtest/bench_setup.py) is
timed and reported apart. Then it drives load with one light HTTP/1.1 client (loadtest/http_client.py, on uvloop):

* closed loop (no rate): ``concurrency`` requests in flight, each sent as the previous one answers;
* open loop (``rate`` transfers/s): requests start on a fixed timetable whatever the answers, and
  latency is measured from the *scheduled* time, so a stalled server cannot hide its queue
  (no coordinated omission).

Scenarios: ``onus`` one transfer per POST /v1/transfers; ``onus-batch`` ``batch_size`` transfers per
POST /v1/transfers/batch (transfers counted); ``crossbank`` one outbound per POST /v1/payments,
counted when the payee's bank has credited it (its bank_inbound table, polled every
CREDIT_POLL_SECONDS: latency to credit has that resolution); ``mixed`` 4 on-us : 1 cross-bank.
Every load loop is bounded by the pre-signed count and by time. The system audit (cbdc audit)
ends every run; the report holds it.

Sweep (``sweep``: a list of rates, or ``"auto"``): one system, one setup and one pre-signing for all
phases, then one open-loop phase of ``duration_seconds`` per offered rate (a pause of
SWEEP_PAUSE_SECONDS between phases), each phase sending its own slice of the pre-signed transfers.
``"auto"`` first runs a closed-loop probe of at most AUTO_PROBE_SECONDS (``concurrency`` in flight)
and offers AUTO_SHARES percent of the rate it reached. If fewer transfers are pre-signed than the
phases need, every phase is shortened alike and the report says so. The report's ``sweep`` rows hold
per offered rate the achieved rate, p50/p95/p99/max latency and errors; its top-level figures are
those of the phase with the highest achieved rate (loadtest/plot.py draws the rows).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import psutil

from cbdc import state
from cbdc.audit import run_audit
from loadtest import bench_setup as setup
from loadtest.bench_ledger import ProcessWatch, _percentile, _watch
from loadtest.bench_ceilings import measure_ceilings
from loadtest.http_client import ClientFailure, LoadClient
from loadtest.progress import Progress
from shared import db

SCENARIOS = ("onus", "onus-batch", "crossbank", "mixed")
CREDIT_POLL_SECONDS = 0.05
CREDIT_WAIT_SECONDS = 60.0        # after the last request: bound on waiting for cross-bank credits
REQUEST_TIMEOUT_SECONDS = 60.0
AUTO_PROBE_SECONDS = 5.0          # sweep "auto": the closed-loop probe's longest duration
AUTO_SHARES = (20, 40, 60, 80, 100, 120)   # sweep "auto": offered rates, percent of the probe's rate
AUTO_PROBE_SHARE = 3              # sweep "auto": the probe may send at most 1/3 of the pre-signed transfers
SWEEP_PAUSE_SECONDS = 1.0         # between sweep phases, so one phase's backlog does not start the next


@dataclass
class HTTPBenchConfig:
    scenario: str = "onus"
    duration_seconds: float = 10.0
    rate: float | None = None            # transfers per second (open loop); None: closed loop
    concurrency: int = 64
    workers: int = 2                     # per service
    wallets: int = 100                   # per bank
    transfers: int | None = None         # pre-signed; default per scenario
    batch_size: int = 100
    seed_outputs: int = 100_000          # ballast unspent outputs per bank ledger
    verify_processes: int = 0            # the banks' CBDC_BANK_VERIFY_PROCESSES
    bank_settings: dict[str, str] = field(default_factory=dict)   # more CBDC_BANK_* for the banks it starts
    use_running: bool = False
    state_dir: str | None = None
    ceilings: bool = True
    ceiling_outputs: int = 200_000       # the database ceiling's scratch ledger
    progress: bool | None = None
    sweep: tuple[float, ...] | str | None = None   # offered rates (open loop, one phase each), or "auto"

    def per_request(self) -> int:
        return self.batch_size if self.scenario == "onus-batch" else 1

    def presigned(self) -> int:
        if self.transfers:
            return self.transfers
        default = {"onus": 60_000, "onus-batch": 150_000, "crossbank": 20_000, "mixed": 40_000}[self.scenario]
        if self.sweep == "auto":
            return 2 * default
        if self.sweep:
            return sweep_transfers(self.sweep, self.duration_seconds, self.per_request())
        return default


def duration_note(all_sent: bool, presigned: int, seconds: float, duration: float) -> str | None:
    """Why a run was shorter than asked, if it was: the pre-signed transfers ran out first."""
    if not all_sent or seconds >= 0.95 * duration:
        return None
    return (f"all {presigned:,} pre-signed transfers were used in {seconds:.2f} s, before --duration {duration:g} s "
            f"ended: raise --transactions for a full-length run")


def phase_requests(rate: float, duration: float, per_request: int) -> int:
    """Requests one open-loop phase sends (as _open_loop schedules them)."""
    return int(duration / (per_request / rate)) + 1


def fit_phases(rates, duration: float, per_request: int, requests_left: int) -> float:
    """The phase length (``duration`` or shorter, the same for every phase) whose open-loop phases at
    ``rates`` send at most ``requests_left`` requests in all. Each phase rounds its count up by at
    most one request (phase_requests), hence the room of one per phase."""
    if sum(phase_requests(r, duration, per_request) for r in rates) <= requests_left:
        return duration
    room = requests_left - len(rates)
    if room <= 0:
        raise RuntimeError(f"{requests_left} pre-signed requests are too few for {len(rates)} phases "
                           f"(raise --transactions)")
    return min(duration, room * per_request / sum(rates))


def sweep_transfers(rates, duration: float, per_request: int) -> int:
    """Pre-signed transfers that open-loop phases at ``rates`` for ``duration`` s each need (with a
    margin of two requests per phase: onus-batch's last batch of each bank may be short)."""
    return sum((phase_requests(r, duration, per_request) + 2) * per_request for r in rates)


@dataclass
class Tally:
    started: float = 0.0
    finished: float = 0.0
    requests: int = 0
    transfers: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    pending_credit: dict[str, dict[str, float]] = field(default_factory=dict)   # payee bank -> id -> t0

    def error(self, code: str, n: int = 1) -> None:
        self.errors[code] = self.errors.get(code, 0) + n


@dataclass
class Job:
    url: str
    body: bytes
    transfers: int
    crossbank: tuple[str, str] | None = None   # (payee bank, payment id)
    origin: str = ""                           # host:port and the request's head, set by _clients
    head: bytes = b""


def _jobs(config: HTTPBenchConfig, urls: dict[str, str], plans: list[tuple], wires: list[bytes]) -> list[Job]:
    if config.scenario == "onus-batch":
        by_bank: dict[str, list[bytes]] = {}
        for plan, wire in zip(plans, wires):
            by_bank.setdefault(plan[2], []).append(wire)
        batches = []
        for bank_id, ws in by_bank.items():
            for i in range(0, len(ws), config.batch_size):
                part = ws[i:i + config.batch_size]
                body = b'{"transactions":[' + b",".join(part) + b"]}"
                batches.append(Job(urls[bank_id] + "/v1/transfers/batch", body, len(part)))
        per_bank = [[b for b in batches if b.url.startswith(u + "/")] for u in urls.values()]
        return [b for group in itertools.zip_longest(*per_bank) for b in group if b is not None]   # alternate
    out = []
    for plan, wire in zip(plans, wires):
        if plan[0] == "outbound":
            out.append(Job(urls[plan[2]] + "/v1/payments", wire, 1, (plan[4], plan[7])))
        else:
            out.append(Job(urls[plan[2]] + "/v1/transfers", wire, 1))
    return out


async def _send(clients: dict[str, LoadClient], job: Job, t0: float, tally: Tally) -> None:
    tally.requests += 1
    try:
        status, data = await clients[job.origin].post(job.head, job.body)
    except ClientFailure as exc:
        tally.error(f"client_{exc.reason}", job.transfers)
        return
    done = time.perf_counter()
    if status >= 400:
        try:
            tally.error(orjson.loads(data).get("code", f"http_{status}"), job.transfers)
        except orjson.JSONDecodeError:
            tally.error(f"http_{status}", job.transfers)
        return
    if job.crossbank is not None:
        bank, payment_id = job.crossbank
        tally.pending_credit.setdefault(bank, {})[payment_id] = t0
        return
    if job.transfers > 1:
        for r in orjson.loads(data)["results"]:
            if r["status"] == "refused":
                tally.error(r["problem"]["code"])
            else:
                tally.transfers += 1
    else:
        tally.transfers += 1
    tally.latencies_ms.append((done - t0) * 1000)


def _clients(jobs: list[Job]) -> dict[str, LoadClient]:
    """One load client per service the jobs target; each job's request head is built once (a job
    handed to several phases of a sweep keeps it)."""
    clients: dict[str, LoadClient] = {}
    for job in jobs:
        if not job.origin:
            parts = urlsplit(job.url)
            job.origin = f"{parts.hostname}:{parts.port}"
            job.head = LoadClient.request_head_for(job.origin, parts.path, len(job.body))
        if job.origin not in clients:
            host, _, port = job.origin.rpartition(":")
            clients[job.origin] = LoadClient(host, int(port), timeout_seconds=REQUEST_TIMEOUT_SECONDS)
    return clients


async def _closed_loop(clients, jobs: list[Job], config: HTTPBenchConfig, tally: Tally, progress: Progress) -> None:
    deadline = time.perf_counter() + config.duration_seconds
    queue = iter(jobs)

    async def runner() -> None:
        while time.perf_counter() < deadline:     # take a job only when it is sent: tally.requests counts
            job = next(queue, None)               # exactly the jobs used
            if job is None:
                return
            await _send(clients, job, time.perf_counter(), tally)
            progress.advance(job.transfers)
    await asyncio.gather(*(runner() for _ in range(config.concurrency)))


async def _open_loop(clients, jobs: list[Job], config: HTTPBenchConfig, tally: Tally, progress: Progress) -> None:
    assert config.rate
    per_request = jobs[0].transfers if jobs else 1
    interval = per_request / config.rate
    count = min(len(jobs), int(config.duration_seconds / interval) + 1)
    start = time.perf_counter()
    tasks: set[asyncio.Task] = set()
    crashed: list[BaseException] = []

    def finished(task: asyncio.Task) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            crashed.append(task.exception())

    async def one(job: Job, t0: float) -> None:
        await _send(clients, job, t0, tally)
        progress.advance(job.transfers)
    for n in range(count):
        scheduled = start + n * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(jobs[n], scheduled))
        tasks.add(task)
        task.add_done_callback(finished)
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_SECONDS)
    if crashed:   # a fault of the load generator itself must not pass for an idle phase
        raise crashed[0]


async def _credit_watch(bank_urls: dict[str, str], tally: Tally, stop: asyncio.Event, progress: Progress) -> None:
    """Count cross-bank payments as their payee bank credits them (bank_inbound rows)."""
    conns = {b: await asyncpg.connect(url) for b, url in bank_urls.items()}
    try:
        while True:
            for bank, conn in conns.items():
                waiting = tally.pending_credit.get(bank)
                if not waiting:
                    continue
                ids = list(waiting)
                rows = await conn.fetch("SELECT payment_id FROM bank_inbound WHERE payment_id = ANY($1::text[])", ids)
                now = time.perf_counter()
                for r in rows:
                    t0 = waiting.pop(r["payment_id"])
                    tally.transfers += 1
                    tally.latencies_ms.append((now - t0) * 1000)
                    tally.finished = now
                progress.advance(len(rows))
            if stop.is_set() and not any(tally.pending_credit.values()):
                return
            await asyncio.sleep(CREDIT_POLL_SECONDS)
    finally:
        for conn in conns.values():
            await conn.close()


async def _drive(config: HTTPBenchConfig, system: state.System, jobs: list[Job], bank_db_urls: dict[str, str]
                 ) -> Tally:
    tally = Tally()
    total = sum(j.transfers for j in jobs)
    progress = Progress(f"{config.scenario} " + (f"@{config.rate:,.0f}/s" if config.rate else
                                                 f"c={config.concurrency}"), total, enabled=config.progress)
    clients = _clients(jobs)   # closed loop: as many connections as runners; open loop: as many as needed
    stop = asyncio.Event()
    crossbank = any(j.crossbank for j in jobs)
    try:
        watcher = asyncio.ensure_future(_credit_watch(bank_db_urls, tally, stop, progress)) if crossbank else None
        tally.started = time.perf_counter()
        if config.rate:
            await _open_loop(clients, jobs, config, tally, progress)
        else:
            await _closed_loop(clients, jobs, config, tally, progress)
        tally.finished = time.perf_counter()
        if watcher is not None:
            stop.set()
            try:
                await asyncio.wait_for(watcher, CREDIT_WAIT_SECONDS)
            except asyncio.TimeoutError:
                tally.error("not_credited_in_time", sum(len(v) for v in tally.pending_credit.values()))
    finally:
        for client in clients.values():
            client.close()
    progress.close()
    return tally


def _row(offered: float | None, tally: Tally) -> dict:
    seconds = max(tally.finished - tally.started, 1e-9)
    return {"offered": offered, "achieved": round(tally.transfers / seconds, 1),
            "p50": round(_percentile(tally.latencies_ms, 0.50), 1),
            "p95": round(_percentile(tally.latencies_ms, 0.95), 1),
            "p99": round(_percentile(tally.latencies_ms, 0.99), 1),
            "max": round(max(tally.latencies_ms, default=0.0), 1),
            "errors": sum(tally.errors.values()), "error_codes": dict(tally.errors),
            "transfers": tally.transfers, "requests": tally.requests, "seconds": round(seconds, 2)}


async def _sweep(config: HTTPBenchConfig, system: state.System, jobs: list[Job], bank_db_urls: dict[str, str]
                 ) -> tuple[Tally, dict]:
    """The open-loop phases of a sweep (after a closed-loop probe for "auto"), each on its own slice of
    ``jobs``. Returns the tally of the phase with the highest achieved rate and the report's sweep keys
    (``errors`` summed over every phase, the probe's included)."""
    per_request = config.per_request()
    duration = config.duration_seconds
    cursor, probe, errors = 0, None, {}
    out: dict = {}
    if config.sweep == "auto":
        probe_seconds = min(duration, AUTO_PROBE_SECONDS)
        budget = jobs[:max(1, len(jobs) // AUTO_PROBE_SHARE)]
        tally = await _drive(replace(config, rate=None, sweep=None, duration_seconds=probe_seconds), system,
                             budget, bank_db_urls)
        cursor = tally.requests
        probe = _row(None, tally)
        probe["concurrency"] = config.concurrency
        for code, n in tally.errors.items():
            errors[code] = errors.get(code, 0) + n
        if probe["achieved"] <= 0:
            raise RuntimeError(f"the closed-loop probe completed no transfers: {tally.errors}")
        rates = [max(1.0, float(round(probe["achieved"] * share / 100))) for share in AUTO_SHARES]
        out["sweep_probe"] = probe
        out["sweep_shares_of_probe"] = list(AUTO_SHARES)
        await asyncio.sleep(SWEEP_PAUSE_SECONDS)
    else:
        rates = [float(r) for r in config.sweep]
    fitted = fit_phases(rates, duration, per_request, len(jobs) - cursor)
    if fitted < duration:
        left = sum(j.transfers for j in jobs[cursor:])
        needed = sweep_transfers(rates, duration, per_request)
        out["sweep_note"] = (f"every phase shortened to {fitted:.2f} s: {left:,} pre-signed transfers were left "
                             f"for phases needing {needed:,} (raise --transactions)")
        duration = fitted
    rows, tallies = [], []
    for n, rate in enumerate(rates):
        if n:
            await asyncio.sleep(SWEEP_PAUSE_SECONDS)
        count = phase_requests(rate, duration, per_request)
        part = jobs[cursor:cursor + count]
        cursor += len(part)
        if not part:
            raise RuntimeError(f"no pre-signed transfers left for the phase at {rate:g}/s")
        tally = await _drive(replace(config, rate=rate, sweep=None, duration_seconds=duration), system, part,
                             bank_db_urls)
        rows.append(_row(rate, tally))
        tallies.append(tally)
        for code, k in tally.errors.items():
            errors[code] = errors.get(code, 0) + k
    best = max(range(len(rows)), key=lambda i: rows[i]["achieved"])
    out.update({"mode": "open-loop sweep at " + ", ".join(f"{r:g}" for r in rates) + f" transfers/s, {round(duration, 2):g} s "
                        "each" + (f" (shares of a {probe['achieved']:g}/s closed-loop probe at c={config.concurrency})"
                                  if probe else ""),
                "sweep": rows, "sweep_phase_seconds": round(duration, 2), "sweep_best_offered": rows[best]["offered"],
                "sweep_transfers": sum(r["transfers"] for r in rows), "errors": errors})
    return tallies[best], out


def _watch_system(watch: ProcessWatch, supervisor, system: state.System) -> None:
    for s in system.services:
        try:
            proc = psutil.Process(s.pid)
            watch.add(s.name, [s.pid] + [c.pid for c in proc.children(recursive=True)])
        except psutil.Error:
            pass
    embedded = getattr(supervisor, "embedded", None) if supervisor else None
    if embedded is not None:
        pid = embedded.get_pid()
        watch.add("postgresql", [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)])


async def _start(config: HTTPBenchConfig):
    from cbdc.supervisor import Supervisor, alive, free_port_block
    if config.use_running:
        state_dir = state.state_path(config.state_dir or ".state")
        system = state.read_system(state_dir)
        if not alive(system.supervisor_pid) or len(system.banks) < 2:
            raise state.StateError(f"no running system with 2 banks in {state_dir}")
        return None, system, state_dir
    state_dir = state.state_path(config.state_dir or tempfile.mkdtemp(prefix="cbdc-bench-"))
    env = {"CBDC_BANK_VERIFY_PROCESSES": str(config.verify_processes), **config.bank_settings}
    supervisor = Supervisor(state_dir, banks=2, base_port=free_port_block(3), workers=config.workers,
                            db_prefix=f"bench_{setup.new_run_id()}_", say=lambda text: None, bank_env=env)
    try:
        system = await supervisor.start()
    except BaseException:
        supervisor.stop()
        raise
    return supervisor, system, state_dir


async def run_http_bench(config: HTTPBenchConfig) -> dict:
    assert config.scenario in SCENARIOS
    show = config.progress
    report: dict = {"scenario": config.scenario, "mode": f"open loop at {config.rate:g}/s" if config.rate
                    else f"closed loop, {config.concurrency} in flight", "workers_per_service": config.workers,
                    "bank_settings": {k.removeprefix("CBDC_BANK_").lower(): v for k, v in config.bank_settings.items()}}
    supervisor, system, state_dir = await _start(config)
    executor = ProcessPoolExecutor(max_workers=os.cpu_count() or 2)
    watch = ProcessWatch()
    run = setup.new_run_id()
    try:
        server = system.database_server
        bank_db_urls = {b.name: db.database_url(server, b.database) for b in system.banks}
        urls = {b.name: b.url for b in system.banks}
        count = config.presigned()
        per_wallet = -(-count // (config.wallets * len(system.banks)))
        timings = {}
        t0 = time.perf_counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            await setup.issue(system, state_dir, config.wallets * setup.FUND + config.seed_outputs + 10**6, run)
            wallets = await setup.onboard(session, system, run, config.wallets, show)
            timings["onboard_fund_seconds"] = round(time.perf_counter() - t0, 1)
            t1 = time.perf_counter()
            if config.seed_outputs:
                await setup.seed_ballast(session, system, run, config.seed_outputs, show)
            timings["ballast_seconds"] = round(time.perf_counter() - t1, 1)
            t1 = time.perf_counter()
            await setup.split_wallets(session, system, wallets, per_wallet, show)
            timings["split_seconds"] = round(time.perf_counter() - t1, 1)
        t1 = time.perf_counter()
        every = {"crossbank": 1, "mixed": 5}.get(config.scenario, 0)
        plans = setup.plan_jobs(wallets, count, every, run)
        wires = await setup.presign(executor, plans, show)
        timings["presign_seconds"] = round(time.perf_counter() - t1, 1)
        timings["setup_seconds"] = round(time.perf_counter() - t0, 1)
        jobs = _jobs(config, urls, plans, wires)
        report["setup"] = {**timings, "wallets_per_bank": config.wallets, "kyc_tier": "full",
                           "ballast_outputs_per_bank": config.seed_outputs, "coins_per_wallet": per_wallet,
                           "presigned_transfers": len(wires)}
        report["unspent_outputs_at_start"] = await _unspent(bank_db_urls)

        _watch_system(watch, supervisor, system)
        watch.start()
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(_watch(watch, stop))
        try:
            if config.sweep:
                tally, sweep_report = await _sweep(config, system, jobs, bank_db_urls)
            else:
                tally, sweep_report = await _drive(config, system, jobs, bank_db_urls), {}
        finally:
            stop.set()
            await sampler
        seconds = max(tally.finished - tally.started, 1e-9)
        tps = tally.transfers / seconds
        report.update({
            "transfers": tally.transfers, "seconds": round(seconds, 2), "transfers_per_second": round(tps),
            "latency_ms_p50": round(_percentile(tally.latencies_ms, 0.50), 1),
            "latency_ms_p95": round(_percentile(tally.latencies_ms, 0.95), 1),
            "latency_ms_p99": round(_percentile(tally.latencies_ms, 0.99), 1),
            "latency_ms_max": round(max(tally.latencies_ms, default=0.0), 1),
            "latency_note": {"crossbank": "request sent (or scheduled) to payee credited",
                             "mixed": "on-us: to the answer; cross-bank: to the payee's credit",
                             "onus-batch": "per request (one batch)"}.get(config.scenario, "per request")
                            + ("; from the scheduled time (open loop)" if config.rate or config.sweep else ""),
            "errors": tally.errors,
            **sweep_report,
            "cpu_seconds": watch.cpu_seconds(),
            "peak_rss_mb": {g: round(v / 2**20) for g, v in watch.peak_rss.items()},
        })
        note = None if config.sweep else duration_note(tally.requests == len(jobs), len(wires), seconds,
                                                       config.duration_seconds)
        if note:
            report["duration_note"] = note
        if config.ceilings:
            ceilings = await measure_ceilings(server, executor, show, config.ceiling_outputs)
            report.update(ceilings)
            ceiling = report["ceiling_per_second"]
            report["ratio_to_ceiling"] = round(tps / ceiling, 3) if ceiling else None
        else:
            report.update({"ceiling_per_second": None, "ratio_to_ceiling": None})
        t1 = time.perf_counter()
        audit, attempts = await run_audit(system)
        report["audit"] = {"ok": audit.ok, "attempts": attempts, "seconds": round(time.perf_counter() - t1, 1),
                           "breaches": audit.all_breaches()[:5]}
        report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()}
        return report
    finally:
        executor.shutdown(cancel_futures=True)
        if supervisor is not None:
            supervisor.stop()
            await supervisor.drop_databases()
            if not config.state_dir:
                shutil.rmtree(Path(supervisor.state_dir), ignore_errors=True)


async def _unspent(bank_db_urls: dict[str, str]) -> dict[str, int]:
    out = {}
    for bank, url in bank_db_urls.items():
        conn = await asyncpg.connect(url)
        try:
            out[bank] = await conn.fetchval("SELECT count(*) FROM ledger_utxo")
        finally:
            await conn.close()
    return out
