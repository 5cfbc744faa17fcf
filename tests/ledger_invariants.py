"""The check every money-moving ledger test ends with: the audit of the whole ledger passes."""
from __future__ import annotations

from shared.audit import LedgerAudit, audit_ledger


async def assert_ledger_consistent(pool) -> LedgerAudit:
    async with pool.acquire() as conn:
        audit = await audit_ledger(conn)
    assert audit.ok, "ledger audit failed:\n" + "\n".join(audit.breaches)
    return audit
