"""Crash points: the real central bank and two banks as processes; a named fail point
(shared/failpoints.py) turns a durable step of funding, defunding or a cross-bank payment into a
process crash (os._exit), in the payer bank or the payee bank; the service is restarted without it,
and the recovery loops must converge to all-or-nothing with I1-I5 holding across the three
databases (shared/system_audit.py). Every fail point is a case of the default run (about 25 s in
all: one shared system per module, only the crashed service restarts)."""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys

import pytest

from commercial_bank.settings import DEFAULT_TIERS
from shared import failpoints
from shared.tx import Payee
from tests.bank_harness import Wallet
from tests.system_harness import ROOT, System, attempt

def _cases(prefix: str) -> list:
    names = sorted(n for n in failpoints.NAMES if n.startswith(prefix) and n != "payment.after_refund")
    return [pytest.param(n, id=n) for n in names]


@pytest.fixture(scope="module")
async def system(pg_server):
    s = System(pg_server)
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


def _reconnect(system: System, w: Wallet) -> Wallet:
    """A fresh client after a restart (no pooled connection to the dead process)."""
    return Wallet(w.key, system.bank_client(w.client.bank_id, w.key))


async def _funded(system: System, bank_id: str, amount: int) -> Wallet:
    w = await system.wallet(bank_id, deposit=amount)
    assert (await w.client.fund(f"open-{secrets.token_hex(4)}", amount))["state"] == "minted"
    return w


def test_every_fail_point_is_covered():
    from tests.test_system_crash_central_bank import CENTRAL_BANK_POINTS
    covered = {p.values[0] for prefix in ("funding.", "defund.", "payment.", "inbound.") for p in _cases(prefix)}
    assert covered | {"payment.after_refund"} | CENTRAL_BANK_POINTS == failpoints.NAMES


@pytest.mark.parametrize("point", _cases("funding."))
async def test_funding_converges_after_a_crash(system, point):
    w = await system.wallet("bank-a", deposit=5_000)
    funding_id = f"crash-{secrets.token_hex(4)}"
    await system.restart("bank-a", (point,))
    w = _reconnect(system, w)
    await attempt(w.client.fund(funding_id, 3_000))
    await system.wait_exit("bank-a")
    await system.restart("bank-a")
    await system.wait_converged()
    w = _reconnect(system, w)
    assert (await w.client.fund(funding_id, 3_000))["state"] == "minted"   # the client's retry: same funding
    assert await w.client.balance() == 3_000
    assert (await w.client.credit_deposit(1, "probe"))["balance"] == 2_001   # debited exactly once
    await system.wait_converged()


@pytest.mark.parametrize("point", ["funding.after_store_fund", "funding.after_fund", "funding.after_mint"])
async def test_a_group_of_fundings_converges_after_a_crash(system, point):
    """Fundings sent together share one fund tx: a crash in the middle of the group's step leaves
    every one of them to the recovery loop, which takes them all to minted, each once."""
    wallets = [await system.wallet("bank-a", deposit=2_000) for _ in range(5)]
    await system.restart("bank-a", (point,))
    wallets = [_reconnect(system, w) for w in wallets]
    ids = [f"group-crash-{secrets.token_hex(4)}" for _ in wallets]
    await asyncio.gather(*(attempt(w.client.fund(i, 1_500)) for w, i in zip(wallets, ids)))
    await system.wait_exit("bank-a")
    await system.restart("bank-a")
    await system.wait_converged()
    wallets = [_reconnect(system, w) for w in wallets]
    assert [(await w.client.fund(i, 1_500))["state"] for w, i in zip(wallets, ids)] == ["minted"] * 5
    assert [await w.client.balance() for w in wallets] == [1_500] * 5
    assert [(await w.client.credit_deposit(1, "probe"))["balance"] for w in wallets] == [501] * 5
    await system.wait_converged()


@pytest.mark.parametrize("point", _cases("defund."))
async def test_defund_converges_after_a_crash(system, point):
    w = await _funded(system, "bank-a", 4_000)
    burn = await w.spend("burn", 1_500, reference=f"crash-{secrets.token_hex(4)}")
    await system.restart("bank-a", (point,))
    w = _reconnect(system, w)
    await attempt(w.client.defund(burn))
    await system.wait_exit("bank-a")
    await system.restart("bank-a")
    await system.wait_converged()
    w = _reconnect(system, w)
    assert (await w.client.defund(burn))["state"] == "credited"
    assert await w.client.balance() == 2_500
    assert (await w.client.credit_deposit(1, "probe"))["balance"] == 1_501   # credited exactly once
    await system.wait_converged()


async def _pay_across(system: System, crash_bank: str, point: str) -> tuple[Wallet, Wallet, str]:
    alice = await _funded(system, "bank-a", 5_000)
    bob = await system.wallet("bank-b", tier="basic")
    pid = f"bank-a:crash-{secrets.token_hex(4)}"
    stx = await alice.spend("outbound", 1_200, payee=Payee("bank-b", bob.public_key, 1_200), reference=pid)
    await system.restart(crash_bank, (point,))
    alice = _reconnect(system, alice)
    await attempt(alice.client.pay(stx))
    await system.wait_exit(crash_bank)
    await system.restart(crash_bank)
    return _reconnect(system, alice), _reconnect(system, bob), pid


@pytest.mark.parametrize("point", _cases("payment."))
async def test_payment_converges_after_a_payer_bank_crash(system, point):
    alice, bob, pid = await _pay_across(system, "bank-a", point)
    await system.wait_converged()
    assert (await alice.client.payment(pid))["state"] == "completed"
    assert (await alice.client.balance(), await bob.client.balance()) == (3_800, 1_200)


@pytest.mark.parametrize("point", _cases("inbound."))
async def test_payment_converges_after_a_payee_bank_crash(system, point):
    alice, bob, pid = await _pay_across(system, "bank-b", point)
    await system.wait_converged()
    assert (await alice.client.payment(pid))["state"] == "completed"
    assert (await alice.client.balance(), await bob.client.balance()) == (3_800, 1_200)


ONUS_WATERFALL_POINTS = ("payment.after_outbound", "defund.after_store_defund", "defund.after_defund",
                         "defund.after_credit")


@pytest.mark.parametrize("point", ONUS_WATERFALL_POINTS)
async def test_on_us_waterfall_converges_after_a_crash(system, point):
    """An on-us payment through the bank over the payee's limit: one commit applies it and credits
    the payee; the excess then goes through the waterfall's defund steps. A crash after any of them
    converges: the payee holds its limit, the deposit account gets the excess once."""
    service = system.services["bank-a"]
    service.env["CBDC_BANK_KYC_TIERS"] = DEFAULT_TIERS + ",tiny:10/20/10"    # holds at most 10.00
    alice = await _funded(system, "bank-a", 5_000)
    await system.restart("bank-a", (point,))
    alice = _reconnect(system, alice)
    saver = await system.wallet("bank-a", tier="tiny")
    pid = f"bank-a:onus-crash-{secrets.token_hex(4)}"
    stx = await alice.spend("outbound", 1_300, payee=Payee("bank-a", saver.public_key, 1_300), reference=pid)
    await attempt(alice.client.pay(stx))
    await system.wait_exit("bank-a")
    await system.restart("bank-a")
    await system.wait_converged()
    alice, saver = _reconnect(system, alice), _reconnect(system, saver)
    assert (await alice.client.pay(stx))["state"] == "completed"            # the client's retry: the same payment
    assert (await alice.client.balance(), await saver.client.balance()) == (3_700, 1_000)
    assert (await saver.client.defund_status(f"waterfall:{pid}"))["state"] == "credited"
    assert (await saver.client.credit_deposit(1, "probe"))["balance"] == 301   # the excess, credited once
    await system.wait_converged()


async def test_refused_payment_refunds_once_across_two_crashes(system):
    """Crash before settling; the payee bank is suspended meanwhile; on restart settlement is refused
    and the payer refunded -- crash right after the refund; restart: exactly one refund."""
    alice = await _funded(system, "bank-a", 2_000)
    bob = await system.wallet("bank-b", tier="basic")
    pid = f"bank-a:refund-{secrets.token_hex(4)}"
    stx = await alice.spend("outbound", 700, payee=Payee("bank-b", bob.public_key, 700), reference=pid)
    await system.restart("bank-a", ("payment.before_settle",))
    alice = _reconnect(system, alice)
    await attempt(alice.client.pay(stx))
    await system.wait_exit("bank-a")
    await system.operator().suspend_bank("bank-b")
    try:
        await system.restart("bank-a", ("payment.after_refund",), ready=False)   # it may crash while starting
        await system.wait_exit("bank-a")
        await system.restart("bank-a")
        await system.wait_converged()
    finally:
        await system.operator().resume_bank("bank-b")
    alice = _reconnect(system, alice)
    answer = await alice.client.payment(pid)
    assert (answer["state"], answer["refusal_code"]) == ("refunded", "payee_bank_suspended")
    assert await alice.client.balance() == 2_000
    assert [e["kind"] for e in await alice.client.history()].count("refund") == 1
    await system.wait_converged()


async def test_a_bank_stops_cleanly_on_sigterm_and_resumes(system):
    service = system.services["bank-b"]
    os.kill(service.process.pid, signal.SIGTERM)
    assert service.process.wait(timeout=30) == 0, service.stderr_tail()
    await system.start_service("bank-b")
    await system.wait_converged()


def test_a_missing_bank_setting_fails_loudly_with_its_name():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBDC_")}
    out = subprocess.run([sys.executable, "-m", "commercial_bank"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "CBDC_BANK_ID" in out.stderr
