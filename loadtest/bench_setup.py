"""Setup for the HTTP benchmarks (loadtest/bench_http.py), timed apart from the measurement.

1. Issue tier-1 money to every bank (maker-checker: op1 proposes, op2 approves).
2. Onboard ``wallets`` wallets per bank (KYC tier ``full``, so limits never interfere), credit their
   demo deposit accounts and fund them (deposit -> escrow at tier 1 -> minted coins).
3. Ballast: ``seed_outputs`` unspent outputs per bank ledger, so the hot table has a realistic size.
   A ballast wallet is funded through the real flow, then its coin is split down to 1-minor-unit
   outputs by a tree of real signed transfers to itself, applied straight to the bank's ledger with
   UTXOEngine (no bank_activity rows: they move nothing between wallets).
4. Split every wallet's coin into many outputs (a transfer to itself with up to 63 outputs, then
   each of those again), submitted through POST /v1/transfers/batch: later transfers spend disjoint
   inputs.
5. Pre-sign the measured transfers (on-us transfers, cross-bank outbounds) in worker processes.
"""
from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import aiohttp
import orjson

from cbdc import state
from central_bank.client import CentralBankClient
from commercial_bank.client import APIError, BankClient, coins_of
from loadtest.progress import Progress
from shared import crypto, db
from shared.engine import UTXOEngine
from shared.tx import Input, Output, Payee, Tx, encode_body, signed_to_json, tx_id_of
from shared.validation import LedgerRules, sign, validate

SPLIT_OUTPUTS = 63          # plus one change output: the ledger's 64-output bound
COIN = 100                  # minor units in each output the measured transfers spend
FUND = 2_000_000            # minor units funded to each wallet (20,000.00; full tier holds 500,000.00)
SETUP_CONCURRENCY = 16
BALLAST_BATCH = 200


def wallet_key(run: str, bank_id: str, n: int) -> crypto.PrivateKey:
    return crypto.PrivateKey(hashlib.sha256(f"cbdc/bench-http/{run}/{bank_id}/{n}".encode()).digest())


@dataclass
class BenchWallet:
    bank_id: str
    n: int
    key: crypto.PrivateKey
    coins: list[Input] = field(default_factory=list)   # disjoint outputs of COIN for the measured transfers


def split_tx(key: crypto.PrivateKey, bank_id: str, coins: list[Input], parts: int, each: int) -> Tx:
    total = sum(c.amount for c in coins)
    assert 1 <= parts <= SPLIT_OUTPUTS and total >= parts * each
    outputs = [Output(key.public_key, each)] * parts
    if total > parts * each:
        outputs.append(Output(key.public_key, total - parts * each))
    return Tx(bank_id, "transfer", tuple(coins), tuple(outputs))


def outputs_of(body: Tx) -> list[Input]:
    tx_id = tx_id_of(encode_body(body))
    return [Input(tx_id, n, o.owner, o.amount) for n, o in enumerate(body.outputs)]


async def _bounded(calls, limit: int = SETUP_CONCURRENCY, label: str = "", show: bool | None = None) -> list:
    slots = asyncio.Semaphore(limit)
    progress = Progress(label, len(calls), enabled=show)

    async def one(call):
        async with slots:
            result = await call
            progress.advance()
            return result
    try:
        return await asyncio.gather(*(one(c) for c in calls))
    finally:
        progress.close()


async def issue(system: state.System, state_dir, amount: int, run: str) -> None:
    async with CentralBankClient(system.central_bank.url, state.load_key(state_dir, "op1"), "operator:op1") as op1, \
            CentralBankClient(system.central_bank.url, state.load_key(state_dir, "op2"), "operator:op2") as op2:
        for bank in system.banks:
            proposal = await op1.propose_issuance(bank.name, amount, f"bench {run}")
            await op2.approve_issuance(proposal["proposal_id"])


async def _onboard_one(session: aiohttp.ClientSession, url: str, w: BenchWallet, run: str, amount: int) -> None:
    client = BankClient(url, w.bank_id, w.key, session=session, timeout_seconds=30)
    try:
        await client.register(f"Bench {run} {w.n}", "full", deposit_account=True)
    except APIError as exc:
        if exc.code != "wallet_exists":
            raise
    await client.credit_deposit(amount, f"bench-{run}")
    answer = await client.fund(f"bench-{run}-{w.n}", amount)
    for _ in range(300):
        if answer["state"] == "minted":
            break
        if answer["state"] == "failed":
            raise RuntimeError(f"funding of bench wallet {w.n} at {w.bank_id} failed: {answer}")
        await asyncio.sleep(0.1)
        answer = await client.funding(f"bench-{run}-{w.n}")
    else:
        raise RuntimeError(f"funding of bench wallet {w.n} at {w.bank_id} did not finish")
    w.coins = coins_of(await client.unspent())


async def onboard(session, system: state.System, run: str, per_bank: int, show: bool | None,
                  amount: int = FUND) -> dict[str, list[BenchWallet]]:
    wallets = {b.name: [BenchWallet(b.name, n, wallet_key(run, b.name, n)) for n in range(per_bank)]
               for b in system.banks}
    calls = [_onboard_one(session, system.service(bank_id).url, w, run, amount)
             for bank_id, ws in wallets.items() for w in ws]
    await _bounded(calls, label="onboard + fund wallets", show=show)
    return wallets


async def post_batches(session, url: str, txs: list, batch_size: int = 100) -> None:
    """Submit signed transactions through POST /v1/transfers/batch; every one must be accepted."""
    for i in range(0, len(txs), batch_size):
        body = orjson.dumps({"transactions": [signed_to_json(t) for t in txs[i:i + batch_size]]})
        async with session.post(url + "/v1/transfers/batch", data=body,
                                headers={"Content-Type": "application/json"}) as response:
            answer = await response.json(loads=orjson.loads)
            if response.status != 200:
                raise RuntimeError(f"batch submission refused: {answer}")
        refused = [r for r in answer["results"] if r["status"] not in ("created", "exists")]
        if refused:
            raise RuntimeError(f"setup transfer refused: {refused[0]}")


async def split_wallets(session, system: state.System, wallets: dict[str, list[BenchWallet]], coins_each: int,
                        show: bool | None) -> None:
    """Give every wallet ``coins_each`` disjoint outputs of COIN (two levels of self-transfers)."""
    assert coins_each <= SPLIT_OUTPUTS * SPLIT_OUTPUTS
    level1 = -(-coins_each // SPLIT_OUTPUTS)
    progress = Progress("split wallets' coins", sum(len(ws) for ws in wallets.values()), enabled=show)
    for bank_id, ws in wallets.items():
        url = system.service(bank_id).url
        first, second = [], []
        for w in ws:
            body = split_tx(w.key, bank_id, w.coins, level1, SPLIT_OUTPUTS * COIN)
            first.append(sign(body, w.key))
            parents, w.coins = outputs_of(body)[:level1], []
            left = coins_each
            for parent in parents:
                parts = min(SPLIT_OUTPUTS, left)
                left -= parts
                child = split_tx(w.key, bank_id, [parent], parts, COIN)
                second.append(sign(child, w.key))
                w.coins += outputs_of(child)[:parts]
        await post_batches(session, url, first)
        await post_batches(session, url, second)
        progress.advance(len(ws))
    progress.close()


# -- ballast: a realistic ledger size ---------------------------------------------------------------

def _ballast_txs(key: crypto.PrivateKey, bank_id: str, coin: Input, leaves: int) -> list[list]:
    """Levels of self-transfers splitting ``coin`` until ``leaves`` outputs of 1 exist (plus change)."""
    levels, frontier = [], [Input(coin.tx_id, coin.index, coin.owner, leaves)]
    change = coin.amount - leaves
    first = True
    while any(c.amount > 1 for c in frontier):
        level, nxt = [], []
        for c in frontier:
            if c.amount == 1:
                nxt.append(c)
                continue
            parts = min(SPLIT_OUTPUTS, c.amount)
            each = c.amount // parts
            last = Output(key.public_key, c.amount - each * (parts - 1))
            outputs = [Output(key.public_key, each)] * (parts - 1) + [last]
            coins = [coin] if first else [c]
            if first and change:
                outputs.append(Output(key.public_key, change))
            body = Tx(bank_id, "transfer", tuple(coins), tuple(outputs))
            level.append(sign(body, key))
            nxt += outputs_of(body)[:parts]
            first = False
        levels.append(level)
        frontier = nxt
    return levels


async def seed_ballast(session, system: state.System, run: str, outputs: int, show: bool | None) -> None:
    server = system.database_server
    for bank in system.banks:
        [w] = (await onboard(session, state.System(0, "", False, [bank]), run + "-ballast", 1, False,
                             amount=outputs + 1)).get(bank.name, [])
        levels = _ballast_txs(w.key, bank.name, max(w.coins, key=lambda c: c.amount), outputs)
        rules = LedgerRules(bank.name)
        pool = await db.create_pool(db.database_url(server, bank.database), max_size=2)
        progress = Progress(f"ballast {bank.name}", sum(len(level) for level in levels), enabled=show)
        try:
            engine = UTXOEngine(pool)
            for level in levels:
                for i in range(0, len(level), BALLAST_BATCH):
                    part = [validate(t, rules, 0) for t in level[i:i + BALLAST_BATCH]]
                    results = await engine.apply(part)
                    assert all(r.accepted for r in results), [r.code for r in results if not r.accepted][:3]
                    progress.advance(len(part))
            async with pool.acquire() as conn:
                await conn.execute("ANALYZE ledger_utxo; ANALYZE ledger_tx")
        finally:
            progress.close()
            await pool.close()


# -- pre-signing the measured transfers (in worker processes) ---------------------------------------

def presign_chunk(jobs: list[tuple]) -> list[bytes]:
    """Each job: (kind, seed, bank id, coin (tx_id, idx, owner, amount), payee bank, payee key, amount,
    reference) -> the signed transaction's JSON bytes."""
    out = []
    for kind, seed, bank_id, coin, payee_bank, payee_key, amount, reference in jobs:
        key = crypto.PrivateKey(seed)
        inputs = (Input(*coin),)
        change = coin[3] - amount
        if kind == "transfer":
            outputs = (Output(payee_key, amount),) + ((Output(key.public_key, change),) if change else ())
            body = Tx(bank_id, "transfer", inputs, outputs)
        else:
            body = Tx(bank_id, "outbound", inputs, (Output(key.public_key, change),) if change else (),
                      payee=Payee(payee_bank, payee_key, amount), reference=reference)
        out.append(orjson.dumps(signed_to_json(sign(body, key))))
    return out


def plan_jobs(wallets: dict[str, list[BenchWallet]], count: int, crossbank_every: int, run: str,
              seed: int = 7) -> list[tuple]:
    """``count`` spends, round-robin over the wallets; every ``crossbank_every``-th one (0: none) is an
    outbound to a wallet of another bank, the rest on-us transfers. Each spends its own coin."""
    rng = random.Random(seed)
    everyone = [w for ws in wallets.values() for w in ws]
    banks = list(wallets)
    jobs, cursor = [], {id(w): 0 for w in everyone}
    for n in range(count):
        w = everyone[n % len(everyone)]
        k = cursor[id(w)]
        if k >= len(w.coins):
            break
        cursor[id(w)] = k + 1
        c = w.coins[k]
        coin = (c.tx_id, c.index, c.owner, c.amount)
        amount = rng.randrange(1, COIN)
        if crossbank_every and n % crossbank_every == crossbank_every - 1 and len(banks) > 1:
            other = banks[(banks.index(w.bank_id) + 1) % len(banks)]
            payee = rng.choice(wallets[other])
            jobs.append(("outbound", w.key.seed, w.bank_id, coin, other, payee.key.public_key, amount,
                         f"{w.bank_id}:b{run}-{n}"))
        else:
            mates = wallets[w.bank_id]
            payee = mates[(w.n + 1 + rng.randrange(len(mates) - 1)) % len(mates)] if len(mates) > 1 else w
            jobs.append(("transfer", w.key.seed, w.bank_id, coin, None, payee.key.public_key, amount, ""))
    return jobs


async def presign(executor: ProcessPoolExecutor, jobs: list[tuple], show: bool | None) -> list[bytes]:
    loop = asyncio.get_running_loop()
    step = 1000
    progress = Progress("pre-sign transfers", len(jobs), enabled=show)

    async def part(i: int) -> list[bytes]:
        wires = await loop.run_in_executor(executor, presign_chunk, jobs[i:i + step])
        progress.advance(len(wires))
        return wires
    parts = await asyncio.gather(*(part(i) for i in range(0, len(jobs), step)))
    progress.close()
    return [w for p in parts for w in p]


def new_run_id() -> str:
    return secrets.token_hex(3)
