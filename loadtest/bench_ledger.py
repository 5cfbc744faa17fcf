"""`cbdc bench ledger`: the ledger engine alone (no HTTP), signatures verified, on a large ledger.

1. Seed: a fresh database with ``--seed-outputs`` unspent outputs (default 1,000,000), written as
   real signed mint transactions with COPY, so the ledger audit holds over the whole table.
2. Pre-sign: 2-input/2-output transfers with disjoint inputs, in worker processes (timed apart).
3. For each batch size (1, 100, 1000): JSON wire bytes -> decode + validate (signatures) in a
   process pool fed in chunks -> ``UTXOEngine.apply`` with batches of that size. Closed loop.
4. Ceilings, measured in the same run: raw Ed25519 verification over every core, and the raw
   batched PostgreSQL rate of the same SQL (pre-validated transactions, batches of 1,000).
5. The ledger audit over the whole table.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import random
import secrets
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import orjson
import psutil

from loadtest.progress import Progress
from shared import crypto, db
from shared.audit import audit_ledger
from shared.engine import PreparedBatch, UTXOEngine, prepare
from shared.errors import ValidationFailed
from shared.tx import Input, Output, Tx, encode_body, encode_witnesses, signed_from_bytes, signed_to_json, tx_id_of
from shared.validation import LedgerRules, sign, validate

LEDGER = "bench"
NOW = 1_800_000_000
MINT_OUTPUTS = 250
COIN = 1_000


@dataclass
class LedgerBenchConfig:
    seed_outputs: int = 1_000_000
    wallets: int = 2_000
    transactions: int = 60_000          # per batch-size phase (batch size 1 uses a tenth)
    batch_sizes: tuple[int, ...] = (1, 100, 1000)
    duration_seconds: float = 15.0      # each phase stops at this time or when out of transactions
    verifiers: int = field(default_factory=lambda: os.cpu_count() or 2)
    flushers: int = 2                   # DB transactions in flight for batched phases
    single_concurrency: int = 16        # DB transactions in flight for batch size 1
    audit: bool = True
    progress: bool | None = None


def _wallet(n: int) -> crypto.PrivateKey:
    return crypto.PrivateKey(hashlib.sha256(b"cbdc/bench/wallet/%d" % n).digest())


AUTHORITY = crypto.PrivateKey(hashlib.sha256(b"cbdc/bench/authority").digest())
RULES = LedgerRules(LEDGER, mint_authority=AUTHORITY.public_key, outputs_max=MINT_OUTPUTS)


def _mint(m: int, wallets: int) -> tuple[Tx, bytes]:
    outputs = tuple(Output(_wallet_public(((m * MINT_OUTPUTS) + j) % wallets), COIN) for j in range(MINT_OUTPUTS))
    body = Tx(LEDGER, "mint", outputs=outputs, reference=f"seed-{m}")
    return body, tx_id_of(encode_body(body))


_PUBLIC_CACHE: dict[int, bytes] = {}


def _wallet_public(n: int) -> bytes:
    key = _PUBLIC_CACHE.get(n)
    if key is None:
        key = _PUBLIC_CACHE[n] = _wallet(n).public_key
    return key


# ---------------------------------------------------------------------------------------------
# worker-process functions (module level, so the pool can pickle them)

def _seed_chunk(args: tuple[int, int, int]) -> tuple[list[tuple], list[tuple]]:
    first, last, wallets = args
    log_rows, utxo_rows = [], []
    for m in range(first, last):
        body, tx_id = _mint(m, wallets)
        stx = sign(body, AUTHORITY)
        log_rows.append((tx_id, 7, encode_body(body), encode_witnesses(stx.witnesses), MINT_OUTPUTS, 0,
                         MINT_OUTPUTS * COIN, body.reference))
        utxo_rows += [(tx_id, j, o.owner, o.amount) for j, o in enumerate(body.outputs)]
    return log_rows, utxo_rows


def _presign_chunk(args: tuple[int, int, int, int]) -> list[bytes]:
    """Transfers numbered first..last: each spends two seed outputs of one wallet."""
    first, last, wallets, seed = args
    rng = random.Random(seed)
    per_wallet = MINT_OUTPUTS  # outputs j and j + wallets of a mint go to the same wallet
    out = []
    for t in range(first, last):
        # seed output g (= mint m, index j: g = m * MINT_OUTPUTS + j) belongs to wallet g % wallets;
        # transfer t spends the (2k)th and (2k+1)th outputs of wallet w: disjoint across transfers
        w = t % wallets
        k = t // wallets              # the k-th transfer of wallet w
        g1 = w + (2 * k) * wallets    # global output numbers owned by wallet w
        g2 = w + (2 * k + 1) * wallets
        inputs = []
        for g in (g1, g2):
            m, j = divmod(g, per_wallet)
            inputs.append(Input(_mint_id(m, wallets), j, _wallet_public(w), COIN))
        payee = _wallet_public((w + 1 + rng.randrange(wallets - 1)) % wallets)
        amount = rng.randrange(1, 2 * COIN)
        body = Tx(LEDGER, "transfer", tuple(inputs),
                  (Output(payee, amount), Output(_wallet_public(w), 2 * COIN - amount)))
        out.append(orjson.dumps(signed_to_json(sign(body, _wallet(w)))))
    return out


_MINT_IDS: dict[int, bytes] = {}


def _mint_id(m: int, wallets: int) -> bytes:
    tx_id = _MINT_IDS.get(m)
    if tx_id is None:
        tx_id = _MINT_IDS[m] = _mint(m, wallets)[1]
    return tx_id


def _verify_chunk(wires: list[bytes], batch_size: int) -> tuple[list[PreparedBatch], dict[str, int]]:
    """Decode and validate (signatures included) a chunk; the valid ones prepared in batches of
    ``batch_size`` (cheap to hand back to the parent process), the failures counted by code."""
    good, errors = [], {}
    for wire in wires:
        try:
            good.append(validate(signed_from_bytes(wire), RULES, NOW))
        except ValidationFailed as exc:
            errors[exc.code] = errors.get(exc.code, 0) + 1
    return [prepare(good[i:i + batch_size]) for i in range(0, len(good), batch_size)], errors


def _verify_rate(seconds: float) -> int:
    key = _wallet(0)
    payload = secrets.token_bytes(32)
    sig = key.sign(crypto.PURPOSE_TX, LEDGER, payload)
    n, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(200):
            crypto.verify(key.public_key, sig, crypto.PURPOSE_TX, LEDGER, payload)
        n += 200
    return n


def _cryptography_verify_rate(seconds: float) -> float:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    message = secrets.token_bytes(64)
    sig = key.sign(message)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(200):
            public.verify(sig, message)
        n += 200
    return n / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------

class ProcessWatch:
    """CPU seconds and peak RSS of this process, the pool workers and the PostgreSQL server."""

    def __init__(self) -> None:
        self.groups: dict[str, list[psutil.Process]] = {"bench (load generator)": [psutil.Process()]}
        self.cpu_start: dict[str, float] = {}
        self.peak_rss: dict[str, int] = {}

    def add(self, group: str, pids: list[int]) -> None:
        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        self.groups[group] = procs

    def _cpu(self, group: str) -> float:
        total = 0.0
        for p in self.groups[group]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def start(self) -> None:
        self.cpu_start = {g: self._cpu(g) for g in self.groups}

    def sample(self) -> None:
        for g, procs in self.groups.items():
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                self.peak_rss[g] = max(self.peak_rss.get(g, 0), rss)

    def cpu_seconds(self) -> dict[str, float]:
        return {g: round(self._cpu(g) - self.cpu_start.get(g, 0.0), 2) for g in self.groups}


async def _watch(watch: ProcessWatch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        watch.sample()
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclass
class PhaseResult:
    batch_size: int
    transfers: int
    seconds: float
    errors: dict[str, int]
    batch_latency_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds else 0.0


async def _run_phase(engine: UTXOEngine, executor: ProcessPoolExecutor, wires: list[bytes], batch_size: int,
                     in_flight: int, verifiers: int, duration: float, label: str,
                     show: bool | None) -> PhaseResult:
    """Closed loop: verify chunks in the pool while earlier chunks are applied."""
    loop = asyncio.get_running_loop()
    chunk = max(batch_size, 200)
    chunks = [wires[i:i + chunk] for i in range(0, len(wires), chunk)]
    batches: asyncio.Queue = asyncio.Queue(maxsize=in_flight * 4)
    verify_slots = asyncio.Semaphore(verifiers * 2)
    errors: dict[str, int] = {}
    latencies: list[float] = []
    created = 0
    progress = Progress(label, len(wires), enabled=show)
    started = time.perf_counter()
    deadline = started + duration

    async def verify(c: list[bytes]):
        async with verify_slots:
            return await loop.run_in_executor(executor, _verify_chunk, c, batch_size)

    async def produce() -> None:
        pending = [asyncio.ensure_future(verify(c)) for c in chunks[:verifiers * 2]]
        next_chunk = len(pending)
        while pending:
            prepared, failed = await pending.pop(0)
            if next_chunk < len(chunks) and time.perf_counter() < deadline:
                pending.append(asyncio.ensure_future(verify(chunks[next_chunk])))
                next_chunk += 1
            for code, n in failed.items():
                errors[code] = errors.get(code, 0) + n
            for batch in prepared:
                await batches.put(batch)
        for _ in range(in_flight):
            await batches.put(None)

    async def consume() -> None:
        nonlocal created
        while (batch := await batches.get()) is not None:
            t0 = time.perf_counter()
            for r in await engine.apply(batch):
                if r.code == "created":
                    created += 1
                else:
                    errors[r.code] = errors.get(r.code, 0) + 1
            latencies.append((time.perf_counter() - t0) * 1000)
            progress.advance(len(batch))

    await asyncio.gather(produce(), *(consume() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    progress.close()
    return PhaseResult(batch_size, created, elapsed, errors, latencies)


async def _db_ceiling(engine: UTXOEngine, executor: ProcessPoolExecutor, wires: list[bytes],
                      in_flight: int, show: bool | None) -> PhaseResult:
    """The same SQL without verification: validate first (untimed), then apply in batches of 1,000."""
    loop = asyncio.get_running_loop()
    chunks = [wires[i:i + 1000] for i in range(0, len(wires), 1000)]
    validated = await asyncio.gather(*(loop.run_in_executor(executor, _verify_chunk, c, 1000) for c in chunks))
    batches = [b for prepared, _ in validated for b in prepared]
    progress = Progress("db ceiling (no verify)", sum(map(len, batches)), enabled=show)
    queue: asyncio.Queue = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    created, latencies = 0, []

    async def consume() -> None:
        nonlocal created
        while not queue.empty():
            batch = queue.get_nowait()
            t0 = time.perf_counter()
            created += sum(r.code == "created" for r in await engine.apply(batch))
            latencies.append((time.perf_counter() - t0) * 1000)
            progress.advance(len(batch))

    started = time.perf_counter()
    await asyncio.gather(*(consume() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    progress.close()
    return PhaseResult(1000, created, elapsed, {}, latencies)


async def _seed(pool, executor: ProcessPoolExecutor, config: LedgerBenchConfig, show: bool | None) -> int:
    mints = -(-config.seed_outputs // MINT_OUTPUTS)
    loop = asyncio.get_running_loop()
    step = 200
    progress = Progress("seed outputs (COPY)", mints * MINT_OUTPUTS, enabled=show)
    futures = [loop.run_in_executor(executor, _seed_chunk, (m, min(m + step, mints), config.wallets))
               for m in range(0, mints, step)]
    async with pool.acquire() as conn:
        for future in futures:
            log_rows, utxo_rows = await future
            await conn.copy_records_to_table("ledger_tx", records=log_rows, columns=[
                "tx_id", "kind", "body", "witnesses", "n_outputs", "value_in", "value_out", "reference"])
            await conn.copy_records_to_table("ledger_utxo", records=utxo_rows,
                                             columns=["tx_id", "idx", "owner", "amount"])
            progress.advance(len(utxo_rows))
        await conn.execute("ANALYZE ledger_tx; ANALYZE ledger_utxo")
        count = await conn.fetchval("SELECT count(*) FROM ledger_utxo")
    progress.close()
    return count


async def _presign(executor: ProcessPoolExecutor, first: int, count: int, wallets: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    step = 2000
    parts = await asyncio.gather(*(loop.run_in_executor(
        executor, _presign_chunk, (t, min(t + step, first + count), wallets, t)) for t in range(first, first + count, step)))
    return [w for part in parts for w in part]


async def run_ledger_bench(server_url: str, config: LedgerBenchConfig, embedded_pid: int | None = None) -> dict:
    """Run the whole benchmark against the PostgreSQL server at ``server_url``; return the report."""
    show = config.progress
    name = f"cbdc_bench_{secrets.token_hex(4)}"
    url = await db.ensure_database(server_url, name)
    watch = ProcessWatch()
    report: dict = {"scenario": "ledger"}
    pool_size = max(config.single_concurrency, config.flushers) + 2
    pool = await db.create_pool(url, max_size=pool_size, min_size=pool_size)
    if embedded_pid:  # the server and its backends (the pool's connections are open by now)
        server = psutil.Process(embedded_pid)
        watch.add("postgresql", [embedded_pid] + [c.pid for c in server.children(recursive=True)])
    executor = ProcessPoolExecutor(max_workers=config.verifiers)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn, db.load_migrations("ledger", "shared"))
        t0 = time.perf_counter()
        report["unspent_outputs_at_start"] = await _seed(pool, executor, config, show)
        report["seed_seconds"] = round(time.perf_counter() - t0, 1)

        sizes = list(config.batch_sizes)
        counts = [max(config.transactions // 10, 1000) if b == 1 else config.transactions for b in sizes]
        needed = sum(counts) + config.transactions
        if 2 * needed > report["unspent_outputs_at_start"]:
            raise ValueError(f"{needed} transfers need {2 * needed} seed outputs; raise --seed-outputs")
        t0 = time.perf_counter()
        wires = await _presign(executor, 0, needed, config.wallets)
        report["presign_seconds"] = round(time.perf_counter() - t0, 1)
        report["presigned_transfers"] = len(wires)

        engine = UTXOEngine(pool)
        # warm the pool's workers and the engine's prepared statement outside the timed runs
        await asyncio.get_running_loop().run_in_executor(executor, _verify_chunk, wires[:1], 1)
        watch.add("verifier processes", [p.pid for p in executor._processes.values()])  # noqa: SLF001
        watch.start()
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(_watch(watch, stop))
        phases, offset = {}, 0
        for size, count in zip(sizes, counts):
            phase_wires = wires[offset:offset + count]
            offset += count
            in_flight = config.single_concurrency if size == 1 else config.flushers
            phases[size] = await _run_phase(engine, executor, phase_wires, size, in_flight, config.verifiers,
                                            config.duration_seconds, f"batch size {size}", show)
        ceiling_db = await _db_ceiling(engine, executor, wires[offset:offset + config.transactions],
                                       config.flushers, show)
        stop.set()
        await watcher
        cpu = watch.cpu_seconds()

        # verification ceiling: every core verifying, nothing else running
        per_core = await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(executor, _verify_rate, 3.0)
                                          for _ in range(config.verifiers)))
        ceiling_verify = sum(per_core) / 3.0
        cryptography_rate = _cryptography_verify_rate(1.0)
        nacl_rate = _verify_rate(1.0) / 1.0

        best = max(phases.values(), key=lambda p: p.per_second)
        ceiling = min(ceiling_verify, ceiling_db.per_second)  # one signature per transfer here
        report.update({
            "transfers_per_second": round(best.per_second),
            "best_batch_size": best.batch_size,
            "by_batch_size": {str(s): round(p.per_second) for s, p in phases.items()},
            "latency_ms_p50": round(_percentile(best.batch_latency_ms, 0.50), 2),
            "latency_ms_p99": round(_percentile(best.batch_latency_ms, 0.99), 2),
            "latency_note": "per database transaction (one batch) of the best batch size",
            "errors": {k: v for p in phases.values() for k, v in p.errors.items()},
            "ceiling_verify_per_second": round(ceiling_verify),
            "ceiling_db_per_second": round(ceiling_db.per_second),
            "ceiling_per_second": round(ceiling),
            "ratio_to_ceiling": round(best.per_second / ceiling, 3) if ceiling else None,
            "verify_per_second_one_core": {"pynacl": round(nacl_rate), "cryptography": round(cryptography_rate)},
            "cpu_seconds": cpu,
            "peak_rss_mb": {g: round(v / 2**20) for g, v in watch.peak_rss.items()},
            "phase_seconds": {str(s): round(p.seconds, 2) for s, p in phases.items()},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
        })
        async with pool.acquire() as conn:
            report["unspent_outputs_at_end"] = await conn.fetchval("SELECT count(*) FROM ledger_utxo")
            report["postgresql"] = await conn.fetchval("SHOW server_version")
            if config.audit:
                t0 = time.perf_counter()
                audit = await audit_ledger(conn)
                report["audit"] = {"ok": audit.ok, "transactions": audit.transactions,
                                   "seconds": round(time.perf_counter() - t0, 1), "breaches": audit.breaches[:5]}
        return report
    finally:
        executor.shutdown(cancel_futures=True)
        await pool.close()
        await db.drop_database(server_url, name)
