"""Fail points: named places just before or after a durable step where a test can crash the process.

    CBDC_FAILPOINTS="funding.after_debit,payment.after_settle"   (read once, at import)

``failpoint(name)`` calls ``os._exit(97)`` when ``name`` is listed: no cleanup, no flush, no
``finally`` — the closest a Python process gets to losing power. Every name a service uses is in
``NAMES`` (a test iterates over them; an unknown name in the variable fails at start-up), so a
renamed point cannot silently stop being tested.

Naming: ``<flow>.<before|after>_<step>``; the step is one database commit or one call whose
effect is durable elsewhere (the central bank, the payee bank).
"""
from __future__ import annotations

import logging
import os
import sys

from shared.errors import ConfigError

ENV = "CBDC_FAILPOINTS"
EXIT_CODE = 97

NAMES = frozenset({
    # funding: debit deposit + record -> store fund tx -> fund at tier 1 -> mint + mark minted
    "funding.after_debit", "funding.after_store_fund", "funding.after_fund", "funding.after_mint",
    # defunding: burn + record -> store defund tx -> defund at tier 1 -> credit deposit + mark done
    "defund.after_burn", "defund.after_store_defund", "defund.after_defund", "defund.after_credit",
    # cross-bank payment at the payer bank: outbound + outbox -> settle -> record notice ->
    # push to the payee bank -> mark completed; or refund
    "payment.after_outbound", "payment.before_settle", "payment.after_settle", "payment.after_record_notice",
    "payment.after_push", "payment.after_refund",
    # cross-bank payment at the payee bank: inbound credit committed, before answering
    "inbound.before_credit", "inbound.after_credit",
    # the central bank: a settlement's payment rows and settle tx (one commit), and a bank's tier-1
    # transaction (fund, defund, ...) through the batcher; crash just before the commit or just
    # after it, before the answer reaches the bank
    "settle.before_commit", "settle.after_commit", "tier1.after_apply",
})

log = logging.getLogger(__name__)


def parse(raw: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in raw.split(",") if n.strip())
    unknown = names - NAMES
    if unknown:
        raise ConfigError(f"{ENV}: unknown fail point(s) {', '.join(sorted(unknown))}")
    return names


_active: frozenset[str] = parse(os.environ.get(ENV, ""))


def active() -> frozenset[str]:
    return _active


def set_active(names: frozenset[str] | set[str]) -> None:
    """For in-process tests only (processes take theirs from the environment)."""
    global _active
    _active = parse(",".join(names))


def failpoint(name: str) -> None:
    assert name in NAMES, f"undeclared fail point {name}"
    if name in _active:
        print(f"fail point {name}: exiting {EXIT_CODE}", file=sys.stderr, flush=True)
        os._exit(EXIT_CODE)
