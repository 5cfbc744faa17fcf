"""Prepare a load run on a running system: fund wallets, split their coins, pre-sign payments.

    python -m loadtest.prepare --state-dir .state --transactions 20000 --out reports/presigned.json

The system is found through STATE_DIR/system.json and the operators' keys in STATE_DIR/keys
(a system started by `cbdc up`). Every run creates fresh wallets, so it can be repeated:

1. plan (pure, seeded): each payment's kind (on-us or cross-bank, ``crossbank_share``), payer
   (uniform over the payers of every bank), payee (a hot merchant with probability ``hot_share``,
   the merchants weighted 1, 1/2, 1/3, …; otherwise another payer) and amount;
2. issue at tier 1 what the banks will fund (op1 proposes, op2 approves);
3. register the payers and the merchants (KYC tier ``full``, with a deposit account);
4. fund each payer from its deposit account with exactly the coins its payments need;
5. split each payer's minted coin into one coin per payment (two levels of self-transfers of at
   most 64 outputs; the transaction ids are computed locally, so level 2 needs no lookup);
6. sign every payment, each spending its own coin (disjoint inputs: any order, any concurrency,
   no conflicts), and write them with the merchants' keys to ``--out`` (mode 0600: it holds
   test keys).

The file is what loadtest/locustfile.py replays; tests use :func:`prepare` directly.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from cbdc import state
from central_bank.client import APIError, CentralBankClient
from commercial_bank.client import BankClient, coins_of
from shared.crypto import PrivateKey
from shared.tx import Input, Output, Payee, SignedTx, Tx, encode_body, signed_to_json, tx_id_of
from shared.validation import sign

FORMAT_VERSION = 1
OUTPUTS_MAX = 64                 # the ledgers' outputs_max (shared.validation.LedgerRules)
SETUP_CONCURRENCY = 16           # setup requests in flight
FUNDING_WAIT_SECONDS = 30.0
HOLDING_MAX = 50_000_000         # the `full` tier's holding limit (500,000.00) by default


@dataclass(frozen=True)
class Options:
    transactions: int = 2_000
    crossbank_share: float = 0.2
    payers_per_bank: int = 20
    merchants_per_bank: int = 3
    hot_share: float = 0.8          # share of payments paid to a hot merchant
    amount_min: int = 100           # 1.00
    amount_max: int = 1_500         # 15.00
    coin_amount: int = 2_000        # each pre-signed payment spends one coin of 20.00
    seed: int = 1

    def check(self, banks: int) -> None:
        if self.transactions < 1 or banks < 1:
            raise ValueError("at least one transaction and one bank")
        if not 0.0 <= self.crossbank_share <= 1.0 or not 0.0 <= self.hot_share <= 1.0:
            raise ValueError("shares are between 0 and 1")
        if self.crossbank_share > 0 and banks < 2:
            raise ValueError("cross-bank payments need at least two banks")
        if not 0 < self.amount_min <= self.amount_max < self.coin_amount:
            raise ValueError("need 0 < amount_min <= amount_max < coin_amount (every payment has change)")
        if self.payers_per_bank < 2 or self.merchants_per_bank < 1:
            raise ValueError("at least two payers and one merchant per bank")


@dataclass(frozen=True)
class Party:
    bank: str
    key: PrivateKey
    merchant: bool = False


@dataclass(frozen=True)
class Planned:
    kind: str               # "onus" or "crossbank"
    payer: int              # index into the payers
    payee: Party
    amount: int


@dataclass
class Prepared:
    run: str
    banks: dict[str, str]                       # bank id -> URL
    merchants: list[Party]
    payments: list[dict] = field(default_factory=list)   # {"kind", "bank", "url", "body"}
    setup_seconds: float = 0.0
    sign_seconds: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps({
            "version": FORMAT_VERSION, "run": self.run, "created_at": int(time.time()), "banks": self.banks,
            "merchants": [{"bank": m.bank, "seed": m.key.seed.hex(), "public_key": m.key.public_key.hex()}
                          for m in self.merchants],
            "setup_seconds": round(self.setup_seconds, 3), "sign_seconds": round(self.sign_seconds, 3),
            "payments": self.payments})


# -- the plan (pure, seeded) ----------------------------------------------------------------------

def plan_payments(options: Options, payers: list[Party], merchants: list[Party]) -> list[Planned]:
    """Kind, payer, payee and amount of each payment; the same seed gives the same plan."""
    rng = random.Random(options.seed)
    banks = sorted({p.bank for p in payers})
    by_bank = {b: [i for i, p in enumerate(payers) if p.bank == b] for b in banks}
    hot = {b: [m for m in merchants if m.bank == b] for b in banks}
    weights = {b: [1.0 / (rank + 1) for rank in range(len(hot[b]))] for b in banks}
    out = []
    for _ in range(options.transactions):
        payer = rng.randrange(len(payers))
        home = payers[payer].bank
        crossbank = len(banks) > 1 and rng.random() < options.crossbank_share
        bank = rng.choice([b for b in banks if b != home]) if crossbank else home
        if rng.random() < options.hot_share:
            payee = rng.choices(hot[bank], weights[bank])[0]
        else:
            payee = payers[rng.choice([i for i in by_bank[bank] if i != payer])]
        out.append(Planned("crossbank" if crossbank else "onus", payer, payee,
                           rng.randint(options.amount_min, options.amount_max)))
    return out


def split_tree(key: PrivateKey, bank: str, coin: Input, count: int, coin_amount: int) -> tuple[list[SignedTx], list[SignedTx], list[Input]]:
    """Self-transfers that turn ``coin`` into ``count`` coins of ``coin_amount`` (the rest stays as
    change in level 1): (level 1, level 2, the coins). Pure; tx ids are computed, not asked for."""
    groups = [min(OUTPUTS_MAX, count - start) for start in range(0, count, OUTPUTS_MAX)]
    assert len(groups) < OUTPUTS_MAX, "at most 63 * 64 coins per payer"
    me = key.public_key
    outputs = [Output(me, g * coin_amount) for g in groups]
    rest = coin.amount - sum(o.amount for o in outputs)
    assert rest >= 0, "the funded coin covers every payment"
    if rest:
        outputs.append(Output(me, rest))
    level1 = sign(Tx(bank, "transfer", (coin,), tuple(outputs)), key)
    level1_id = tx_id_of(encode_body(level1.body))
    level2, coins = [], []
    for n, g in enumerate(groups):
        parent = Input(level1_id, n, me, g * coin_amount)
        if g == 1:
            coins.append(parent)
            continue
        stx = sign(Tx(bank, "transfer", (parent,), tuple(Output(me, coin_amount) for _ in range(g))), key)
        stx_id = tx_id_of(encode_body(stx.body))
        level2.append(stx)
        coins.extend(Input(stx_id, i, me, coin_amount) for i in range(g))
    return [level1], level2, coins


def sign_payment(payer: Party, coin: Input, planned: Planned, reference: str) -> SignedTx:
    """One payment spending exactly ``coin``, the change back to the payer. Pure."""
    change = (Output(payer.key.public_key, coin.amount - planned.amount),)
    if planned.kind == "onus":
        body = Tx(payer.bank, "transfer", (coin,), (Output(planned.payee.key.public_key, planned.amount),) + change)
    else:
        body = Tx(payer.bank, "outbound", (coin,), change,
                  payee=Payee(planned.payee.bank, planned.payee.key.public_key, planned.amount), reference=reference)
    return sign(body, payer.key)


# -- the setup on a running system -----------------------------------------------------------------

async def _bounded(calls, limit: int = SETUP_CONCURRENCY) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(call):
        async with gate:
            return await call
    return await asyncio.gather(*(one(c) for c in calls))


async def _issue(system: state.System, state_dir: Path, amounts: dict[str, int], run: str,
                 session: aiohttp.ClientSession) -> None:
    op1 = CentralBankClient(system.central_bank.url, state.load_key(state_dir, "op1"), "operator:op1", session=session)
    op2 = CentralBankClient(system.central_bank.url, state.load_key(state_dir, "op2"), "operator:op2", session=session)
    for bank, amount in amounts.items():
        if amount:
            proposal = await op1.propose_issuance(bank, amount, f"load test {run}")
            await op2.approve_issuance(proposal["proposal_id"])


async def _fund(client: BankClient, funding_id: str, amount: int) -> Input:
    await client.credit_deposit(amount, f"load-{funding_id}")
    answer = await client.fund(funding_id, amount)
    deadline = time.monotonic() + FUNDING_WAIT_SECONDS
    while answer["state"] != "minted":
        if answer["state"] == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"funding {funding_id} did not mint: {answer}")
        await asyncio.sleep(0.05)
        answer = await client.funding(funding_id)
    coins = coins_of(await client.unspent())
    assert len(coins) == 1 and coins[0].amount == amount, coins
    return coins[0]


async def _submit_all(clients: dict[str, BankClient], stxs: list[SignedTx]) -> None:
    async def one(stx: SignedTx):
        await clients[stx.body.ledger].transfer(stx)
    await _bounded([one(s) for s in stxs])


async def prepare(state_dir: str | Path, options: Options, *, say=lambda text: None) -> Prepared:
    """Fund fresh wallets on the system running from ``state_dir`` and pre-sign ``options.transactions``
    payments (see the module docstring)."""
    started = time.monotonic()
    state_dir = state.state_path(state_dir)
    system = state.read_system(state_dir)
    banks = {b.name: b.url for b in system.banks}
    options.check(len(banks))
    run = secrets.token_hex(4)
    payers = [Party(b, PrivateKey.generate()) for b in banks for _ in range(options.payers_per_bank)]
    merchants = [Party(b, PrivateKey.generate(), merchant=True) for b in banks for _ in range(options.merchants_per_bank)]
    plan = plan_payments(options, payers, merchants)
    needed = [0] * len(payers)
    for p in plan:
        needed[p.payer] += 1
    if max(needed) * options.coin_amount > HOLDING_MAX or max(needed) > (OUTPUTS_MAX - 1) * OUTPUTS_MAX:
        raise ValueError(f"{max(needed)} payments for one payer is too many: add payers (--payers-per-bank)")
    say(f"run {run}: {len(payers)} payers and {len(merchants)} merchants at {len(banks)} banks, "
        f"{len(plan)} payments ({sum(p.kind == 'crossbank' for p in plan)} cross-bank)")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        issue = {b: sum(needed[i] for i, p in enumerate(payers) if p.bank == b) * options.coin_amount for b in banks}
        await _issue(system, state_dir, issue, run, session)
        clients = [BankClient(banks[p.bank], p.bank, p.key, session=session) for p in payers + merchants]
        await _bounded([c.register(f"load {run} {n}", "full", deposit_account=True) for n, c in enumerate(clients)])
        say("registered; funding the payers")
        funded = [i for i in range(len(payers)) if needed[i]]
        minted = await _bounded([_fund(clients[i], f"load-{run}-{i}", needed[i] * options.coin_amount) for i in funded])
        trees = [split_tree(payers[i].key, payers[i].bank, coin, needed[i], options.coin_amount)
                 for i, coin in zip(funded, minted)]
        bank_clients = {b: BankClient(url, b, None, session=session) for b, url in banks.items()}
        await _submit_all(bank_clients, [s for level1, _, _ in trees for s in level1])
        await _submit_all(bank_clients, [s for _, level2, _ in trees for s in level2])
        say(f"split into {sum(needed)} coins")
    coins = {i: list(tree[2]) for i, tree in zip(funded, trees)}
    setup_done = time.monotonic()
    prepared = Prepared(run, banks, merchants, setup_seconds=setup_done - started)
    for n, p in enumerate(plan):
        payer = payers[p.payer]
        stx = sign_payment(payer, coins[p.payer].pop(), p, f"{payer.bank}:lt-{run}-{n}")
        path = "/v1/transfers" if p.kind == "onus" else "/v1/payments"
        prepared.payments.append({"kind": p.kind, "bank": payer.bank, "url": banks[payer.bank] + path,
                                  "body": orjson.dumps(signed_to_json(stx)).decode()})
    prepared.sign_seconds = time.monotonic() - setup_done
    return prepared


def write(prepared: Prepared, path: Path) -> Path:
    """Write the file (0600: it holds the merchants' test keys) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(prepared.to_json())
    tmp.replace(path)
    return path


def read(path: str | Path) -> dict:
    data = orjson.loads(Path(path).read_bytes())
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a version-{FORMAT_VERSION} pre-signed payments file")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=os.environ.get("CBDC_STATE_DIR", ".state"), metavar="DIR")
    parser.add_argument("--out", default="reports/presigned.json", type=Path, metavar="FILE")
    defaults = Options()
    parser.add_argument("--transactions", type=int, default=defaults.transactions, metavar="N")
    parser.add_argument("--crossbank-share", type=float, default=defaults.crossbank_share, metavar="S")
    parser.add_argument("--payers-per-bank", type=int, default=defaults.payers_per_bank, metavar="N")
    parser.add_argument("--merchants-per-bank", type=int, default=defaults.merchants_per_bank, metavar="N")
    parser.add_argument("--hot-share", type=float, default=defaults.hot_share, metavar="S",
                        help="share of payments paid to a hot merchant (default 0.8)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    options = Options(transactions=args.transactions, crossbank_share=args.crossbank_share,
                      payers_per_bank=args.payers_per_bank, merchants_per_bank=args.merchants_per_bank,
                      hot_share=args.hot_share, seed=args.seed)
    try:
        prepared = asyncio.run(prepare(args.state_dir, options, say=lambda text: print(text, flush=True)))
    except (state.StateError, APIError, ValueError, RuntimeError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    write(prepared, args.out)
    print(f"wrote {len(prepared.payments)} pre-signed payments to {args.out} "
          f"(setup {prepared.setup_seconds:.1f} s, signing {prepared.sign_seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
