"""The audit of the whole system: the central bank's ledger and every bank's, read from their
databases (given by URL), checking DESIGN.md's I1-I5 across services. ``cbdc audit`` and every
money-moving multi-service test use it, and it holds while payments are flowing.

It reads the services' own tables by name (cb_payments at tier 1; bank_payments, bank_inbound,
bank_fundings, bank_defunds, bank_deposit_* at tier 2): the schemas are part of the contract it
audits. Each database is read in one REPEATABLE READ snapshot; the snapshots of different
databases are not simultaneous, so run it at quiescence (``quiescent`` says whether anything was
still in flight: if so, in-flight terms are accounted for, but a step completing between two
snapshots can show as a breach; callers wait for quiescence first).

Per bank X (I3, 100 % backing), in minor units:

    escrow(X) at tier 1 = unspent tier-2 value at X
                        + X's outbound payments not settled at tier 1 and not refunded
                        + payments settled to X not yet credited at X
                        + fundings of X funded at tier 1 but not yet minted
                        + defunds of X burned at tier 2 (or, reverse waterfall, the part of a
                          credited payment bound for the deposit account) not yet defunded at tier 1
                        + the net escrow movement at tier 1 of flows X's snapshot did not show yet

At quiescence the last five terms are zero. (DESIGN.md writes the settled-not-credited term with
a minus; a settlement raises escrow(X) before X credits the payee, so it is a plus.) Also: I1 and I4 on every ledger (shared.audit), I2 on
the central bank's, and I5: a payment id settles at most once (cb_payments' key), is credited at
most once and only as settled (bank_inbound against cb_payments, one inbound tx per credit), is
refunded only if tier 1 refused it, and every mint / refund / inbound reference occurs once.
An on-us payment through the bank (an outbound naming the payer's own bank) is never at tier 1:
it must be completed and credited in the same snapshot, and its excess over the payee's holding
limit is a waterfall defund like a cross-bank one's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from shared.accounts import escrow_owner
from shared.audit import LedgerAudit, audit_ledger
from shared.tx import decode_body

KIND_ISSUE, KIND_REDEEM, KIND_MINT, KIND_INBOUND = 1, 2, 7, 10


@dataclass
class BankFigures:
    bank_id: str
    escrow: int = 0
    unspent: int = 0
    unsettled_out: int = 0
    settled_not_credited: int = 0
    funded_not_minted: int = 0
    burned_not_defunded: int = 0
    tier1_after_snapshot: int = 0   # net escrow movement at tier 1 of flows X had not recorded yet

    @property
    def in_flight(self) -> int:
        return (self.unsettled_out + self.settled_not_credited + self.funded_not_minted
                + self.burned_not_defunded + self.tier1_after_snapshot)

    @property
    def backing_difference(self) -> int:
        """escrow − what it must back; 0 when I3 holds."""
        return self.escrow - (self.unspent + self.in_flight)


@dataclass
class SystemAudit:
    ledgers: dict[str, LedgerAudit] = field(default_factory=dict)
    banks: dict[str, BankFigures] = field(default_factory=dict)
    open_items: list[str] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaches and all(a.ok for a in self.ledgers.values())

    @property
    def quiescent(self) -> bool:
        return not self.open_items

    def all_breaches(self) -> list[str]:
        out = list(self.breaches)
        for name, ledger in self.ledgers.items():
            out += [f"[{name}] {b}" for b in ledger.breaches]
        return out

    def breach(self, text: str) -> None:
        if len(self.breaches) < 200:
            self.breaches.append(text)


async def _ledger(url: str) -> LedgerAudit:
    conn = await asyncpg.connect(url)
    try:
        return await audit_ledger(conn)
    finally:
        await conn.close()


async def _snapshot(url: str, queries: dict[str, tuple]) -> dict[str, list[asyncpg.Record]]:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return {name: await conn.fetch(sql, *args) for name, (sql, *args) in queries.items()}
    finally:
        await conn.close()


def _cb_queries(bank_ids: list[str]) -> dict[str, tuple]:
    owners = [escrow_owner(b) for b in bank_ids]
    return {
        "supply": ("""SELECT coalesce(sum(value_out) FILTER (WHERE kind = 1), 0)::bigint AS issued,
                             coalesce(sum(value_in - value_out) FILTER (WHERE kind = 2), 0)::bigint AS redeemed,
                             (SELECT coalesce(sum(amount), 0)::bigint FROM ledger_utxo) AS unspent
                        FROM ledger_tx WHERE kind IN (1, 2)""",),
        "escrow": ("""SELECT owner, coalesce(sum(amount), 0)::bigint AS total FROM ledger_utxo
                       WHERE owner = ANY($1::bytea[]) GROUP BY owner""", owners),
        "payments": ("SELECT payment_id, payer_bank, payee_bank, amount, status, reference FROM cb_payments",),
        "tx_ids": ("SELECT tx_id FROM ledger_tx WHERE kind IN (4, 5)",),
        "escrow_moves": ("""SELECT h.bank_id, l.tx_id, l.body FROM ledger_tx l
                             JOIN cb_bank_history h ON h.tx_id = l.tx_id
                            WHERE l.kind IN (4, 5) AND h.bank_id = ANY($1::text[])""", bank_ids),
    }


BANK_QUERIES: dict[str, tuple] = {
    "unspent": ("SELECT coalesce(sum(amount), 0)::bigint AS total FROM ledger_utxo",),
    "payments": ("""SELECT payment_id, payee_bank, amount, state, outbound_tx_id, refund_tx_id
                      FROM bank_payments""",),
    "inbound": ("SELECT payment_id, payer_bank, amount, deposit_amount, inbound_tx_id FROM bank_inbound",),
    "fundings": ("SELECT funding_id, amount, state, fund_tx_id, mint_tx_id FROM bank_fundings",),
    "defunds": ("SELECT defund_id, kind, amount, state, defund_tx_id FROM bank_defunds",),
    "created": ("""SELECT kind, reference, count(*) AS n, sum(value_out)::bigint AS value FROM ledger_tx
                    WHERE kind IN (7, 10) GROUP BY kind, reference""",),
    # the wallets' running totals (commercial_bank/schema/004_wallet_totals.sql, 006_...) against the
    # rows they summarise
    "totals": ("""SELECT w.wallet AS public_key, w.held, coalesce(u.total, 0)::bigint AS unspent, w.out_day,
                         w.out_today,
                         (SELECT coalesce(sum(a.outgoing), 0) FROM bank_activity a WHERE a.wallet = w.wallet
                             AND a.at >= w.out_day AND a.at < w.out_day + 86400)::bigint AS outgoing
                    FROM bank_wallet_totals w
                    LEFT JOIN (SELECT owner, sum(amount) AS total FROM ledger_utxo GROUP BY owner) u
                           ON u.owner = w.wallet""",),
    "deposits": ("""SELECT a.account_id, a.balance, coalesce(sum(e.amount), 0)::bigint AS entries
                      FROM bank_deposit_accounts a LEFT JOIN bank_deposit_entries e USING (account_id)
                     GROUP BY a.account_id, a.balance""",),
}


async def audit_system(cb_url: str, bank_urls: dict[str, str]) -> SystemAudit:
    """Audit the central bank at ``cb_url`` and the banks at ``bank_urls`` (bank id -> database URL)."""
    audit = SystemAudit()
    audit.ledgers["cb"] = await _ledger(cb_url)
    for bank_id, url in bank_urls.items():
        audit.ledgers[bank_id] = await _ledger(url)
    # banks first, the central bank last: see the module docstring
    banks = {bank_id: await _snapshot(url, BANK_QUERIES) for bank_id, url in bank_urls.items()}
    cb = await _snapshot(cb_url, _cb_queries(list(bank_urls)))
    order = {bank_id: n for n, bank_id in enumerate(banks)}
    _check_supply(audit, cb)
    cb_payments = {r["payment_id"]: r for r in cb["payments"]}
    tier1_tx_ids = {r["tx_id"] for r in cb["tx_ids"]}
    escrow = {r["owner"]: r["total"] for r in cb["escrow"]}
    for bank_id, rows in banks.items():
        figures = BankFigures(bank_id, escrow=escrow.get(escrow_owner(bank_id), 0),
                              unspent=rows["unspent"][0]["total"])
        _check_payer_side(audit, figures, rows, cb_payments, banks, order)
        _count_tier1_after_snapshot(figures, rows, cb_payments, cb["escrow_moves"])
        _check_payee_side(audit, figures, rows, cb_payments)
        _check_flows(audit, figures, rows, tier1_tx_ids)
        _check_created(audit, bank_id, rows)
        if figures.backing_difference != 0:
            audit.breach(f"I3 {bank_id}: escrow {figures.escrow} != unspent {figures.unspent} + unsettled out "
                         f"{figures.unsettled_out} + settled not credited {figures.settled_not_credited} + funded "
                         f"not minted {figures.funded_not_minted} + burned not defunded "
                         f"{figures.burned_not_defunded} + tier-1 moves after the bank's snapshot "
                         f"{figures.tier1_after_snapshot} (difference {figures.backing_difference})")
        audit.banks[bank_id] = figures
    return audit


def _check_supply(audit: SystemAudit, cb: dict) -> None:
    s = cb["supply"][0]
    if s["issued"] - s["redeemed"] != s["unspent"]:
        audit.breach(f"I2: issued {s['issued']} - redeemed {s['redeemed']} != unspent tier-1 value {s['unspent']}")


def _check_payer_side(audit: SystemAudit, f: BankFigures, rows: dict, cb_payments: dict, banks: dict,
                      order: dict[str, int]) -> None:
    own_inbound = {r["payment_id"]: r for r in rows["inbound"]}
    for p in rows["payments"]:
        pid, at_cb = p["payment_id"], cb_payments.get(p["payment_id"])
        if p["payee_bank"] == f.bank_id:
            _check_onus_payment(audit, f, p, at_cb, own_inbound.get(pid))
            continue
        settled = at_cb is not None and at_cb["status"] == "settled"
        if at_cb is not None and (at_cb["payer_bank"], at_cb["payee_bank"], at_cb["amount"]) != \
                (f.bank_id, p["payee_bank"], p["amount"]):
            audit.breach(f"I5 payment {pid}: the central bank's record differs from {f.bank_id}'s outbox")
        if settled and bytes(at_cb["reference"]) != p["outbound_tx_id"]:
            audit.breach(f"I5 payment {pid}: settled with a reference other than its outbound tx id")
        if p["state"] == "refunded" and (at_cb is None or at_cb["status"] != "refused"):
            audit.breach(f"I5 payment {pid}: refunded at {f.bank_id} but not refused at tier 1")
        if p["state"] in ("settled", "completed") and not settled:
            audit.breach(f"I5 payment {pid}: {p['state']} at {f.bank_id} but not settled at tier 1")
        if not settled and p["state"] != "refunded":
            f.unsettled_out += p["amount"]
        if p["state"] in ("pending", "settled"):
            audit.open_items.append(f"payment {pid} {p['state']} at {f.bank_id}")
        payee = banks.get(p["payee_bank"])
        if p["state"] == "completed" and payee is not None and pid not in {r["payment_id"] for r in payee["inbound"]}:
            if order[p["payee_bank"]] > order[f.bank_id]:   # the payee was read later: it must show the credit
                audit.breach(f"I5 payment {pid}: completed at {f.bank_id} but not credited at {p['payee_bank']}")
            else:
                audit.open_items.append(f"payment {pid} completed at {f.bank_id}, credit read earlier")


def _check_onus_payment(audit: SystemAudit, f: BankFigures, p, at_cb, credit) -> None:
    """An on-us payment through the bank: completed and credited in the one DB transaction that
    applied it (so in the same snapshot), never at tier 1."""
    pid = p["payment_id"]
    if at_cb is not None:
        audit.breach(f"I5 payment {pid}: on-us at {f.bank_id}, but the central bank has a record of it")
    if p["state"] != "completed" or credit is None or credit["amount"] != p["amount"] \
            or credit["payer_bank"] != f.bank_id:
        audit.breach(f"I5 payment {pid}: on-us at {f.bank_id}, but not completed and credited as one step")


def _count_tier1_after_snapshot(f: BankFigures, rows: dict, cb_payments: dict, moves: list) -> None:
    """Tier-1 movements of X's escrow for flows X's (earlier) snapshot had not recorded yet."""
    known_payments = {p["payment_id"] for p in rows["payments"]}
    for pid, p in cb_payments.items():
        if p["payer_bank"] == f.bank_id and p["status"] == "settled" and pid not in known_payments:
            f.tier1_after_snapshot -= p["amount"]
    known_txs = {r["fund_tx_id"] for r in rows["fundings"]} | {r["defund_tx_id"] for r in rows["defunds"]}
    escrow = escrow_owner(f.bank_id)
    for m in moves:
        if m["bank_id"] == f.bank_id and m["tx_id"] not in known_txs:
            body = decode_body(m["body"])
            f.tier1_after_snapshot += sum(o.amount for o in body.outputs if o.owner == escrow) \
                - sum(i.amount for i in body.inputs if i.owner == escrow)


def _check_payee_side(audit: SystemAudit, f: BankFigures, rows: dict, cb_payments: dict) -> None:
    credited = {r["payment_id"]: r for r in rows["inbound"]}
    waterfalls = {r["defund_id"]: r["amount"] for r in rows["defunds"] if r["kind"] == "waterfall"}
    for pid, r in credited.items():
        if waterfalls.get(f"waterfall:{pid}", 0) != r["deposit_amount"]:
            audit.breach(f"I5 payment {pid} at {f.bank_id}: {r['deposit_amount']} to the deposit account, but "
                         f"its waterfall row says {waterfalls.get(f'waterfall:{pid}', 0)}")
    onus = {p["payment_id"] for p in rows["payments"] if p["payee_bank"] == f.bank_id}
    for pid, r in credited.items():
        if r["payer_bank"] == f.bank_id:
            if pid not in onus:
                audit.breach(f"I5 payment {pid}: credited at {f.bank_id} as on-us without its on-us payment")
            continue
        at_cb = cb_payments.get(pid)
        if at_cb is None or at_cb["status"] != "settled" or at_cb["payee_bank"] != f.bank_id \
                or at_cb["amount"] != r["amount"] or at_cb["payer_bank"] != r["payer_bank"]:
            audit.breach(f"I5 payment {pid}: credited at {f.bank_id} without a matching settlement at tier 1")
    for pid, p in cb_payments.items():
        if p["status"] == "settled" and p["payee_bank"] == f.bank_id and pid not in credited:
            f.settled_not_credited += p["amount"]
            audit.open_items.append(f"payment {pid} settled to {f.bank_id}, not yet credited")


def _check_flows(audit: SystemAudit, f: BankFigures, rows: dict, tier1_tx_ids: set) -> None:
    for r in rows["fundings"]:
        at_tier1 = r["fund_tx_id"] is not None and r["fund_tx_id"] in tier1_tx_ids
        if r["state"] in ("debited", "funded"):
            audit.open_items.append(f"funding {r['funding_id']} {r['state']} at {f.bank_id}")
            if at_tier1:
                f.funded_not_minted += r["amount"]
        elif r["state"] == "failed" and at_tier1:
            audit.breach(f"I3 funding {r['funding_id']} at {f.bank_id}: failed, but its fund tx is at tier 1")
        elif r["state"] == "minted" and not at_tier1:
            audit.breach(f"I3 funding {r['funding_id']} at {f.bank_id}: minted without its fund tx at tier 1")
    for r in rows["defunds"]:
        at_tier1 = r["defund_tx_id"] is not None and r["defund_tx_id"] in tier1_tx_ids
        if r["state"] != "credited":
            audit.open_items.append(f"defund {r['defund_id']} {r['state']} at {f.bank_id}")
        if r["state"] == "burned" and not at_tier1:
            f.burned_not_defunded += r["amount"]
        elif r["state"] != "burned" and not at_tier1:
            audit.breach(f"I3 defund {r['defund_id']} at {f.bank_id}: {r['state']} without its defund tx at tier 1")
    for r in rows["totals"]:
        if r["held"] != r["unspent"] or (r["out_day"] and r["out_today"] != r["outgoing"]):
            audit.breach(f"wallet {bytes(r['public_key']).hex()[:16]}… at {f.bank_id}: running totals held "
                         f"{r['held']} / out today {r['out_today']} != its unspent outputs {r['unspent']} / "
                         f"its activity that day {r['outgoing']}")
    for r in rows["deposits"]:
        if r["balance"] != r["entries"]:
            audit.breach(f"deposit account {r['account_id']} at {f.bank_id}: balance {r['balance']} != "
                         f"sum of its entries {r['entries']}")


def _check_created(audit: SystemAudit, bank_id: str, rows: dict) -> None:
    """Every value-creating tx at a bank is matched, once, by a minted funding, a refund or a credit."""
    expected: dict[tuple[int, str], int] = {}
    for r in rows["fundings"]:
        if r["state"] == "minted":
            expected[(KIND_MINT, f"fund:{r['funding_id']}")] = r["amount"]
    for r in rows["payments"]:
        if r["state"] == "refunded":
            expected[(KIND_MINT, f"refund:{r['payment_id']}")] = r["amount"]
    for r in rows["inbound"]:   # cross-bank credits and on-us payments through the bank
        if r["amount"] > r["deposit_amount"]:   # the rest went to the payee's deposit (reverse waterfall)
            expected[(KIND_INBOUND, f"in:{r['payment_id']}")] = r["amount"] - r["deposit_amount"]
    found = {(r["kind"], r["reference"]): r for r in rows["created"]}
    for key, r in found.items():
        if r["n"] != 1:
            audit.breach(f"I5 {bank_id}: {r['n']} value-creating transactions with reference {key[1]!r}")
        if expected.get(key) != r["value"]:
            audit.breach(f"I1 {bank_id}: value created by {key[1]!r} ({r['value']}) has no matching record")
    for key, amount in expected.items():
        if key not in found:
            audit.breach(f"I1 {bank_id}: {key[1]!r} recorded as done ({amount}) but no transaction created it")
