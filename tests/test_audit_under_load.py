"""The audit while payments are flowing (Jepsen's bank baseline, short): snapshot audits taken
every ~200 ms during concurrent on-us and cross-bank payments report no breach at all — the
in-flight accounting of shared.system_audit is exact, not papered over by re-checks — and the
final audit at quiescence passes."""
from __future__ import annotations

import asyncio
import secrets
import time

from cbdc.audit import ATTEMPTS_MAX
from shared.system_audit import audit_system
from shared.tx import Payee
from tests.system_harness import System

LOAD_SECONDS = 6.0
WALLETS_PER_BANK = 4


async def _payer(system: System, wallet, payees: list, stop: float, counts: dict) -> None:
    n = 0
    while time.monotonic() < stop and n < 200:   # bounded in time and count
        n += 1
        payee_bank, payee = payees[n % len(payees)]
        if payee_bank == wallet.client.bank_id:
            stx = await wallet.spend("transfer", 3, to=payee.public_key)
            await wallet.client.transfer(stx)
            counts["on-us"] += 1
        else:
            pid = f"{wallet.client.bank_id}:load-{secrets.token_hex(6)}"
            stx = await wallet.spend("outbound", 5, payee=Payee(payee_bank, payee.public_key, 5), reference=pid)
            await wallet.client.pay(stx)
            counts["cross-bank"] += 1


async def _audit_loop(system: System, stop: float) -> tuple[int, int, list]:
    """Audits every ~200 ms; a failure counts only if it persists over ATTEMPTS_MAX re-checks."""
    cb, banks = system.database_urls()
    taken, rechecked, persistent = 0, 0, []
    while time.monotonic() < stop:
        audit = await audit_system(cb, banks)
        taken += 1
        attempts = 1
        while not audit.ok and not audit.quiescent and attempts < ATTEMPTS_MAX:
            rechecked += 1
            await asyncio.sleep(0.2)
            audit = await audit_system(cb, banks)
            attempts += 1
        if not audit.ok:
            persistent.append(audit.all_breaches()[:5])
        await asyncio.sleep(0.2)
    return taken, rechecked, persistent


async def test_audits_during_load_find_no_breach(pg_server):
    system = System(pg_server)
    try:
        await system.start()
        wallets = []
        for bank_id in ("bank-a", "bank-b"):
            for _ in range(WALLETS_PER_BANK):
                w = await system.wallet(bank_id, deposit=100_000)
                assert (await w.client.fund(f"load-{secrets.token_hex(4)}", 100_000))["state"] == "minted"
                wallets.append((bank_id, w))
        counts = {"on-us": 0, "cross-bank": 0}
        stop = time.monotonic() + LOAD_SECONDS
        results = await asyncio.gather(
            *(_payer(system, w, [p for p in wallets if p[1] is not w], stop, counts) for _, w in wallets),
            _audit_loop(system, stop))
        taken, rechecked, persistent = results[-1]
        print(f"payments {counts}; audits {taken}, re-checks {rechecked}")
        assert counts["on-us"] > 20 and counts["cross-bank"] > 20
        assert taken >= 3
        assert persistent == []
        assert rechecked == 0, "an audit under load failed on its first look: wrong in-flight accounting"
        final = await system.wait_converged()
        assert final.ok
    finally:
        await system.stop()
