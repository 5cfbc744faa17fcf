"""Crash points in the central bank: just before and just after the commit of a settlement, and
just after applying a bank's tier-1 transaction (the fund of a customer's funding), before the
bank hears the answer. The central bank restarts without the fail point; the banks' recovery
loops retry (idempotent by payment id and by tx id) and everything converges, all or nothing,
with I1-I5 holding across the three databases."""
from __future__ import annotations

import secrets

import pytest

from shared.tx import Payee
from tests.bank_harness import Wallet
from tests.system_harness import System, attempt

CENTRAL_BANK_POINTS = frozenset({"settle.before_commit", "settle.after_commit", "tier1.after_apply"})


@pytest.fixture(scope="module")
async def system(pg_server):
    s = System(pg_server)
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


def _reconnect(system: System, w: Wallet) -> Wallet:
    return Wallet(w.key, system.bank_client(w.client.bank_id, w.key))


@pytest.mark.parametrize("point", ["settle.before_commit", "settle.after_commit"])
async def test_a_payment_converges_after_a_central_bank_crash(system, point):
    alice = await system.wallet("bank-a", deposit=5_000)
    assert (await alice.client.fund(f"open-{secrets.token_hex(4)}", 5_000))["state"] == "minted"
    bob = await system.wallet("bank-b", tier="basic")
    pid = f"bank-a:cb-crash-{secrets.token_hex(4)}"
    stx = await alice.spend("outbound", 1_300, payee=Payee("bank-b", bob.public_key, 1_300), reference=pid)
    await system.restart("cb", (point,))
    await attempt(alice.client.pay(stx))
    await system.wait_exit("cb")
    await system.restart("cb")
    audit = await system.wait_converged()
    assert audit.ok
    alice, bob = _reconnect(system, alice), _reconnect(system, bob)
    assert (await alice.client.payment(pid))["state"] == "completed"
    assert (await alice.client.balance(), await bob.client.balance()) == (3_700, 1_300)
    settled = await system.operator().call("GET", f"/v1/payments/{pid}")
    assert settled["status"] == "settled"   # once: the audit's I5 checks there is no second movement


async def test_a_funding_converges_after_a_central_bank_crash(system):
    w = await system.wallet("bank-a", deposit=4_000)
    funding_id = f"cb-crash-{secrets.token_hex(4)}"
    await system.restart("cb", ("tier1.after_apply",))
    await attempt(w.client.fund(funding_id, 2_500))
    await system.wait_exit("cb")
    await system.restart("cb")
    await system.wait_converged()
    w = _reconnect(system, w)
    assert (await w.client.fund(funding_id, 2_500))["state"] == "minted"
    assert await w.client.balance() == 2_500
    assert (await w.client.credit_deposit(1, "probe"))["balance"] == 1_501   # debited exactly once
    assert (await system.audit()).ok
