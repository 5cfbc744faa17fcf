"""`cbdc audit`: check I1–I5 across the central bank and every bank of the running system.

Each ledger is read in one REPEATABLE READ snapshot, banks first and the central bank last, and
flows caught between two reads are counted as in flight (shared.system_audit), so the audit holds
while payments are flowing. As a last guard against a race the accounting does not know, a
failure seen while items were in flight is re-checked (bounded) before it is reported.
"""
from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import orjson

from cbdc import state
from shared import db
from shared.amounts import format_major
from shared.system_audit import SystemAudit, audit_system

ATTEMPTS_MAX = 10
ATTEMPT_INTERVAL_SECONDS = 0.5


def _server_url(system: state.System) -> str:
    if "***" in system.database_server:
        url = os.environ.get("CBDC_DATABASE_URL")
        if not url:
            raise state.StateError("the database password is not stored: set CBDC_DATABASE_URL to audit")
        return url
    return system.database_server


def database_urls(system: state.System) -> tuple[str, dict[str, str]]:
    server = _server_url(system)
    cb = db.database_url(server, system.central_bank.database)
    return cb, {b.name: db.database_url(server, b.database) for b in system.banks}


def checks_of(audit: SystemAudit) -> list[dict[str, Any]]:
    """One entry per invariant and ledger, with the figures on both sides."""
    breaches = audit.all_breaches()

    def about(prefix: str, subject: str = "") -> list[str]:
        return [b for b in breaches if prefix in b and subject in b]

    out = []
    for name, ledger in audit.ledgers.items():
        out.append({"check": f"I1+I4 ledger {name}", "ok": ledger.ok,
                    "figures": {"transactions": ledger.transactions, "created": ledger.created,
                                "destroyed": ledger.destroyed, "sent_out": ledger.sent_out,
                                "unspent": ledger.unspent},
                    "text": f"created {format_major(ledger.created)} - destroyed {format_major(ledger.destroyed)} - "
                            f"sent out {format_major(ledger.sent_out)} = unspent {format_major(ledger.unspent)} "
                            f"({ledger.transactions:,} transactions)", "breaches": ledger.breaches[:10]})
    cb = audit.ledgers.get("cb")
    if cb is not None:
        supply = about("I2")
        out.append({"check": "I2 supply", "ok": not supply,
                    "figures": {"issued": cb.created, "redeemed": cb.destroyed, "unspent_tier1": cb.unspent},
                    "text": f"issued {format_major(cb.created)} - redeemed {format_major(cb.destroyed)} = "
                            f"unspent tier-1 {format_major(cb.unspent)}", "breaches": supply})
    for bank_id, f in audit.banks.items():
        backing = about("I3", bank_id)
        out.append({"check": f"I3 backing {bank_id}", "ok": not backing,
                    "figures": {"escrow": f.escrow, "unspent_tier2": f.unspent, "unsettled_out": f.unsettled_out,
                                "settled_not_credited": f.settled_not_credited,
                                "funded_not_minted": f.funded_not_minted,
                                "burned_not_defunded": f.burned_not_defunded,
                                "tier1_after_snapshot": f.tier1_after_snapshot},
                    "text": f"escrow {format_major(f.escrow)} = tier-2 coins {format_major(f.unspent)} + in flight "
                            f"{format_major(f.in_flight)}", "breaches": backing})
    for bank_id in audit.banks:
        totals = [b for b in breaches if "running totals" in b and f" at {bank_id}:" in b]
        out.append({"check": f"wallet totals {bank_id}", "ok": not totals, "figures": {},
                    "text": "each wallet's running totals (held, paid out today) = the rows they sum",
                    "breaches": totals[:10]})
    once = about("I5")
    out.append({"check": "I5 exactly once", "ok": not once, "figures": {"open_items": len(audit.open_items)},
                "text": "every payment settled at most once at tier 1 and credited at most once at tier 2",
                "breaches": once})
    other = [b for b in audit.breaches if not any(b.startswith(p) for p in ("I1", "I2", "I3", "I4", "I5"))
             and "running totals" not in b]
    if other:
        out.append({"check": "other", "ok": False, "figures": {}, "text": "other findings", "breaches": other})
    return out


async def run_audit(system: state.System) -> tuple[SystemAudit, int]:
    cb_url, bank_urls = database_urls(system)
    for attempt in range(1, ATTEMPTS_MAX + 1):
        audit = await audit_system(cb_url, bank_urls)
        if audit.ok or audit.quiescent or attempt == ATTEMPTS_MAX:
            return audit, attempt
        await asyncio.sleep(ATTEMPT_INTERVAL_SECONDS)
    raise AssertionError("unreachable")


def print_report(audit: SystemAudit, attempts: int, *, as_json: bool, out=sys.stdout) -> None:
    checks = checks_of(audit)
    for c in checks:
        out.write(f"  {'ok  ' if c['ok'] else 'FAIL'}  {c['check']:<24} {c['text']}\n")
        for b in c["breaches"][:10]:
            out.write(f"          {b}\n")
    if audit.open_items:
        out.write(f"  ({len(audit.open_items)} item(s) still in flight, accounted for)\n")
    ok = audit.ok and all(c["ok"] for c in checks)
    out.write(f"audit {'passed' if ok else 'FAILED'}" + (f" (after {attempts} attempts)" if attempts > 1 else "") + "\n")
    if as_json:
        out.write(orjson.dumps({"ok": ok, "checks": checks}).decode() + "\n")


async def main(args) -> int:
    system = state.read_system(args.state_dir)
    audit, attempts = await run_audit(system)
    print_report(audit, attempts, as_json=args.json)
    return 0 if audit.ok else 1
