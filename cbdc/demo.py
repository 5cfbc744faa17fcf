"""`cbdc demo`: the whole two-tier story, end to end, on a running system, ending with the audit.

Every step says what it does and checks that the system behaved as expected (a refusal that
should happen is a success); the exit status is 0 only if every step did and the audit passed.
Wallet names and ids carry a fresh suffix, so the demo can run on any system, any number of times.
"""
from __future__ import annotations

import asyncio
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from cbdc import state
from cbdc.audit import print_report, run_audit
from central_bank.client import APIError, CentralBankClient
from commercial_bank.client import BankClient, build_spend, coins_of
from shared.amounts import format_major, parse_major
from shared.crypto import PrivateKey
from shared.tx import LEDGER_CB, Input, Output, Payee, Tx
from shared.validation import sign

WAIT_SECONDS = 30.0


class StepFailed(Exception):
    pass


@dataclass
class Wallet:
    name: str
    bank_id: str
    key: PrivateKey
    client: BankClient


@dataclass
class Story:
    system: state.System
    state_dir: object
    run: str = field(default_factory=lambda: secrets.token_hex(3))
    wallets: dict[str, Wallet] = field(default_factory=dict)
    clients: list = field(default_factory=list)

    def cb(self, key_name: str, key_id: str) -> CentralBankClient:
        client = CentralBankClient(self.system.central_bank.url, state.load_key(self.state_dir, key_name), key_id)
        self.clients.append(client)
        return client

    def wallet(self, name: str, bank_id: str) -> Wallet:
        key = PrivateKey.generate()
        client = BankClient(self.system.service(bank_id).url, bank_id, key)
        self.clients.append(client)
        self.wallets[name] = Wallet(name, bank_id, key, client)
        return self.wallets[name]

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


def money(text: str) -> int:
    return parse_major(text)


async def _until(check: Callable[[], Awaitable[object]], what: str) -> object:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise StepFailed(f"{what} did not happen within {WAIT_SECONDS:.0f} s")


async def _refused(call: Awaitable, code: str) -> str:
    try:
        await call
    except APIError as exc:
        if exc.code == code:
            return exc.problem.get("detail", code)
        raise StepFailed(f"refused with {exc.code}, expected {code}") from None
    raise StepFailed(f"accepted, but it should have been refused with {code}")


def _expect(actual: int, expected: int, what: str) -> None:
    if actual != expected:
        raise StepFailed(f"{what} is {format_major(actual)}, expected {format_major(expected)}")


# -- the steps ------------------------------------------------------------------------------------

ISSUE = money("1000000.00")


async def issue_money(s: Story) -> str:
    op1, op2 = s.cb("op1", "operator:op1"), s.cb("op2", "operator:op2")
    lines = []
    for bank in s.system.banks:
        proposal = await op1.propose_issuance(bank.name, ISSUE, f"demo {s.run}")
        if bank is s.system.banks[0]:
            await _refused(op1.approve_issuance(proposal["proposal_id"]), "approver_is_proposer")
            lines.append("op1 may not approve its own proposal (refused: approver_is_proposer)")
        done = await op2.approve_issuance(proposal["proposal_id"])
        lines.append(f"op1 proposed and op2 approved {format_major(ISSUE)} for {bank.name} (tier-1 tx "
                     f"{done['tx_id'][:16]}…)")
    return "\n".join(lines)


async def onboard(s: Story) -> str:
    a, b = (bank.name for bank in s.system.banks[:2])
    plan = [("alice", a, "full", True), ("bob", a, "anonymous", False),
            ("carol", b, "basic", True), ("dave", b, "anonymous", True)]
    lines = []
    for name, bank_id, tier, deposit in plan:
        w = s.wallet(name, bank_id)
        await w.client.register(f"{name.title()} {s.run}", tier, deposit_account=deposit)
        lines.append(f"{name:<6} at {bank_id}: KYC tier {tier:<9} "
                     f"{'with a linked deposit account' if deposit else 'no deposit account'}")
    return "\n".join(lines)


async def fund_wallets(s: Story) -> str:
    lines = []
    for name, deposit, amount in (("alice", "30000.00", "20000.00"), ("carol", "10000.00", "6000.00")):
        w = s.wallets[name]
        await w.client.credit_deposit(money(deposit), f"salary-{s.run}")
        answer = await w.client.fund(f"fund-{name}-{s.run}", money(amount))
        if answer["state"] != "minted":
            answer = await _until(lambda: _funding_done(w, f"fund-{name}-{s.run}"), "the funding")
        _expect(await w.client.balance(), money(amount), f"{name}'s balance")
        lines.append(f"{name} converts {amount} of deposit money into CBDC: {w.bank_id} moves it into its escrow "
                     f"at the central bank and mints it to {name}'s key")
    return "\n".join(lines)


async def _funding_done(w: Wallet, funding_id: str):
    answer = await w.client.funding(funding_id)
    if answer["state"] == "failed":
        raise StepFailed(f"funding {funding_id} failed: {answer}")
    return answer if answer["state"] == "minted" else None


async def _spend(w: Wallet, kind: str, amount: int, **kwargs):
    coins = coins_of(await w.client.unspent())
    return build_spend(w.key, w.bank_id, kind, coins, amount=amount, **kwargs)


async def pay_on_us(s: Story) -> str:
    alice, bob = s.wallets["alice"], s.wallets["bob"]
    answer = await alice.client.transfer(await _spend(alice, "transfer", money("1500.00"), to=bob.key.public_key))
    _expect(await bob.client.balance(), money("1500.00"), "bob's balance")
    return f"alice pays bob 1500.00 at {alice.bank_id} (one signed transfer, tx {answer['tx_id'][:16]}…)"


async def _cross_bank(s: Story, payer: Wallet, payee: Wallet, amount: int, label: str) -> dict:
    payment_id = f"{payer.bank_id}:{label}-{s.run}"
    stx = await _spend(payer, "outbound", amount, payee=Payee(payee.bank_id, payee.key.public_key, amount),
                       reference=payment_id)
    await payer.client.pay(stx)

    async def completed():
        answer = await payer.client.payment(payment_id)
        if answer["state"] == "refunded":
            raise StepFailed(f"payment {payment_id} was refunded: {answer}")
        return answer if answer["state"] == "completed" else None
    return await _until(completed, f"payment {payment_id}")


async def pay_cross_bank(s: Story) -> str:
    alice, carol = s.wallets["alice"], s.wallets["carol"]
    await _cross_bank(s, alice, carol, money("2500.00"), "rent")
    _expect(await carol.client.balance(), money("8500.00"), "carol's balance")
    return (f"alice ({alice.bank_id}) pays carol ({carol.bank_id}) 2500.00: {alice.bank_id} spends alice's coins "
            f"and records the payment; the central bank settles escrow({alice.bank_id}) -> escrow({carol.bank_id}) "
            f"and signs a notice; {carol.bank_id} verifies it and credits carol once")


async def refuse_over_limit(s: Story) -> str:
    carol, dave = s.wallets["carol"], s.wallets["dave"]
    stx = await _spend(carol, "transfer", money("5500.00"), to=dave.key.public_key)
    detail = await _refused(carol.client.transfer(stx), "limit_per_payment")
    return f"carol (KYC basic, 5000.00 per payment) tries to pay dave 5500.00: refused ({detail})"


async def refuse_double_spend(s: Story) -> str:
    alice, bob = s.wallets["alice"], s.wallets["bob"]
    coins = coins_of(await alice.client.unspent())
    coin = max(coins, key=lambda c: c.amount)
    first = sign(Tx(alice.bank_id, "transfer", (coin,), (Output(bob.key.public_key, money("100.00")),
                                                          Output(alice.key.public_key, coin.amount - money("100.00")))),
                 alice.key)
    second = sign(Tx(alice.bank_id, "transfer", (coin,), (Output(bob.key.public_key, money("200.00")),
                                                           Output(alice.key.public_key, coin.amount - money("200.00")))),
                  alice.key)
    await alice.client.transfer(first)
    await _refused(alice.client.transfer(second), "input_already_spent")
    _expect(await bob.client.balance(), money("1600.00"), "bob's balance")
    return "alice signs two transfers spending the same coin: the first pays bob 100.00, the second is refused " \
           "(input_already_spent) and nothing moves"


async def reverse_waterfall(s: Story) -> str:
    alice, dave = s.wallets["alice"], s.wallets["dave"]
    payment = await _cross_bank(s, alice, dave, money("12000.00"), "waterfall")
    _expect(await dave.client.balance(), money("10000.00"), "dave's CBDC balance")
    waterfall = await _until(lambda: _defund_credited(dave, f"waterfall:{payment['payment_id']}"),
                             "the waterfall to dave's deposit account")
    _expect(waterfall["amount"], money("2000.00"), "the amount sent to dave's deposit account")
    return ("alice pays dave 12000.00, but dave (KYC anonymous) may hold 10000.00: dave receives 10000.00 in CBDC "
            "and the excess 2000.00 goes to his linked deposit account (reverse waterfall)")


async def onus_waterfall(s: Story) -> str:
    carol, dave = s.wallets["carol"], s.wallets["dave"]
    amount = money("1500.00")
    transfer = await _spend(carol, "transfer", amount, to=dave.key.public_key)
    await _refused(carol.client.transfer(transfer), "payee_holding_limit")
    payment_id = f"{carol.bank_id}:onus-waterfall-{s.run}"
    stx = await _spend(carol, "outbound", amount, payee=Payee(dave.bank_id, dave.key.public_key, amount),
                       reference=payment_id)
    answer = await carol.client.pay(stx)
    if answer["state"] != "completed":
        raise StepFailed(f"the on-us payment {payment_id} is {answer['state']}, not completed at once")
    _expect(await dave.client.balance(), money("10000.00"), "dave's CBDC balance")
    waterfall = await _until(lambda: _defund_credited(dave, f"waterfall:{payment_id}"),
                             "the on-us waterfall to dave's deposit account")
    _expect(waterfall["amount"], amount, "the amount sent to dave's deposit account")
    return (f"carol pays dave 1500.00 at {carol.bank_id}, but dave already holds his limit: the transfer is refused, "
            f"so carol pays through the bank (an outbound naming {carol.bank_id}), which credits dave what he may "
            "hold (nothing) and sends the 1500.00 to his deposit account, in one step")


async def _defund_credited(w: Wallet, defund_id: str):
    answer = await w.client.defund_status(defund_id)
    return answer if answer["state"] == "credited" else None


async def defund(s: Story) -> str:
    carol = s.wallets["carol"]
    before = await carol.client.balance()
    defund_id = f"defund-{s.run}"
    burn = await _spend(carol, "burn", money("1000.00"), reference=defund_id)
    await carol.client.defund(burn)
    await _until(lambda: _defund_credited(carol, defund_id), "the defund")
    _expect(await carol.client.balance(), before - money("1000.00"), "carol's balance")
    return f"carol burns 1000.00 of CBDC; {carol.bank_id} defunds its escrow at tier 1 and credits her deposit account"


async def redeem(s: Story) -> str:
    bank = s.system.banks[-1].name
    client = s.cb(bank, f"bank:{bank}")
    key = state.load_key(s.state_dir, bank)
    amount = money("100000.00")
    outputs = await client.outputs(bank, "holdings")
    chosen, total = [], 0
    for o in sorted(outputs, key=lambda o: -o["amount"]):
        if total >= amount:
            break
        chosen.append(Input(bytes.fromhex(o["tx_id"]), o["index"], bytes.fromhex(o["owner"]), o["amount"]))
        total += o["amount"]
    if total < amount:
        raise StepFailed(f"{bank} holds only {format_major(total)}")
    change = (Output(key.public_key, total - amount),) if total > amount else ()
    answer = await client.submit(sign(Tx(LEDGER_CB, "redeem", tuple(chosen), change, reference=f"redeem-{s.run}"),
                                      key))
    return f"{bank} returns 100000.00 of its tier-1 holdings to the central bank (redeem, tx {answer['tx_id'][:16]}…)"


STEPS: list[tuple[str, Callable[[Story], Awaitable[str]]]] = [
    ("The central bank issues money (maker-checker)", issue_money),
    ("Customers open wallets at two banks", onboard),
    ("Funding: deposit money becomes CBDC", fund_wallets),
    ("An on-us payment", pay_on_us),
    ("A cross-bank payment", pay_cross_bank),
    ("A payment over the payer's limit", refuse_over_limit),
    ("A double spend", refuse_double_spend),
    ("A payment over the payee's holding limit", reverse_waterfall),
    ("An on-us payment over the payee's holding limit", onus_waterfall),
    ("Defunding: CBDC back to the deposit account", defund),
    ("A bank redeems tier-1 money", redeem),
]


async def print_balances(s: Story, audit) -> None:
    print("\nBalances")
    for name, w in s.wallets.items():
        print(f"  wallet {name:<6} at {w.bank_id:<8} {format_major(await w.client.balance()):>14}")
    op1 = s.cb("op1", "operator:op1")
    for bank in s.system.banks:
        b = await op1.balances(bank.name)
        tier2 = audit.banks[bank.name].unspent if bank.name in audit.banks else 0
        print(f"  {bank.name:<8} tier 1: holdings {format_major(b['holdings']):>14}, escrow "
              f"{format_major(b['escrow']):>14}   tier 2: coins issued to customers {format_major(tier2):>14}")
    supply = await op1.supply()
    print(f"  supply: issued {format_major(supply['issued'])}, redeemed {format_major(supply['redeemed'])}, "
          f"outstanding {format_major(supply['outstanding'])} (cap {format_major(supply['cap'])})")


async def tell(s: Story) -> bool:
    print(f"CBDC demo: a central bank and {len(s.system.banks)} commercial banks "
          f"({', '.join(b.name for b in s.system.banks)})\n")
    for n, (title, step) in enumerate(STEPS, start=1):
        started = time.monotonic()
        print(f"[{n:>2}/{len(STEPS)}] {title}", flush=True)
        try:
            text = await step(s)
        except (StepFailed, APIError, ValueError) as exc:
            print(f"        FAILED: {exc}")
            return False
        for line in text.splitlines():
            print(f"        {line}")
        print(f"        ok ({time.monotonic() - started:.1f} s)", flush=True)
    audit, attempts = await run_audit(s.system)
    await print_balances(s, audit)
    print("\nAudit")
    print_report(audit, attempts, as_json=False)
    return audit.ok


async def main(args) -> int:
    from cbdc.supervisor import Supervisor, alive, free_port_block
    state_dir = state.state_path(args.state_dir)
    try:
        system = state.read_system(state_dir)
        if not alive(system.supervisor_pid):
            system = None
    except state.StateError:
        system = None
    supervisor = None
    if system is None or len(system.banks) < 2:
        import tempfile
        state_dir = state.state_path(tempfile.mkdtemp(prefix="cbdc-demo-"))
        print(f"starting a fresh system for the demo in {state_dir} ...", flush=True)
        supervisor = Supervisor(state_dir, banks=2, base_port=free_port_block(3),
                                db_prefix=f"demo_{secrets.token_hex(3)}_", say=lambda text: None)
        system = await supervisor.start()
    story = Story(system, state_dir)
    try:
        ok = await tell(story)
    finally:
        await story.close()
        if supervisor is not None:
            supervisor.stop()
            await supervisor.drop_databases()
            import shutil
            shutil.rmtree(state_dir, ignore_errors=True)
    print("\ndemo " + ("passed: every step behaved as expected and the audit passed" if ok else "FAILED"))
    return 0 if ok else 1
