"""ALL of the commercial bank's SQL, as named constants beside small async functions.

Database errors are translated here and nowhere else. Callers own transactions: a function that
takes ``conn`` runs in the caller's transaction; one that takes ``db`` runs on a pool or inside
the caller's transaction. Timestamps are unix seconds from the service's clock.
"""
from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from shared.errors import Conflict
from shared.signing import SQLNonceStore

Executor = asyncpg.Pool | asyncpg.Connection

# ---------------------------------------------------------------------------------------------
# health

# ping and the schema-version check are shared.db.ping / shared.db.schema_at


# ---------------------------------------------------------------------------------------------
# wallets (the customer record) and deposit accounts

WALLET_COLUMNS = "public_key, customer_name, kyc_tier, deposit_account, registered_at"
INSERT_ACCOUNT_SQL = "INSERT INTO bank_deposit_accounts (account_id, balance, created_at) VALUES ($1, 0, $2)"
INSERT_WALLET_SQL = f"""INSERT INTO bank_wallets ({WALLET_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
                        ON CONFLICT (public_key) DO NOTHING RETURNING {WALLET_COLUMNS}"""
GET_WALLET_SQL = f"SELECT {WALLET_COLUMNS} FROM bank_wallets WHERE public_key = $1"
# outbounds' first look, one round trip for many: each payer's record (NULLs if not registered) and
# the tx id of the outbound already recorded under each payment id (NULL if none), in the given order
PAYERS_AND_PAYMENTS_SQL = f"""SELECT {', '.join('w.' + c for c in WALLET_COLUMNS.split(', '))},
                                     p.outbound_tx_id AS recorded_tx_id
                                FROM unnest($1::bytea[], $2::text[]) WITH ORDINALITY AS x(key, payment_id, n)
                                LEFT JOIN bank_wallets w ON w.public_key = x.key
                                LEFT JOIN bank_payments p ON p.payment_id = x.payment_id
                               ORDER BY x.n"""
# locks first, then reads the totals with a fresh snapshot (schema/007_locked_reads.sql)
LOCK_WALLETS_SQL = "SELECT * FROM bank_lock_wallets($1::bytea[], $2::bigint, $3::text[])"
ACCOUNT_BALANCE_SQL = "SELECT balance FROM bank_deposit_accounts WHERE account_id = $1"
DEPOSIT_ENTRY_SQL = """WITH e AS (
                           INSERT INTO bank_deposit_entries (entry_key, account_id, amount, created_at)
                           VALUES ($1, $2, $3, $4) ON CONFLICT (entry_key) DO NOTHING RETURNING amount)
                       UPDATE bank_deposit_accounts a SET balance = a.balance + e.amount FROM e
                        WHERE a.account_id = $2 RETURNING a.balance"""
ENTRY_EXISTS_SQL = "SELECT amount FROM bank_deposit_entries WHERE entry_key = $1"


async def insert_wallet(conn: asyncpg.Connection, public_key: bytes, name: str, tier: str,
                        account_id: str | None, now: int) -> asyncpg.Record | None:
    """The new wallet, or None if the key is already registered (the caller rolls back)."""
    if account_id is not None:
        await conn.execute(INSERT_ACCOUNT_SQL, account_id, now)
    return await conn.fetchrow(INSERT_WALLET_SQL, public_key, name, tier, account_id, now)


async def get_wallet(db: Executor, public_key: bytes) -> asyncpg.Record | None:
    return await db.fetchrow(GET_WALLET_SQL, public_key)


async def payers_and_payments(db: Executor, asked: list[tuple[bytes, str]]
                              ) -> list[tuple[asyncpg.Record | None, bytes | None]]:
    """For each (wallet key, payment id): (the wallet's record or None, the outbound tx id recorded
    under the payment id or None), in order."""
    keys, payment_ids = [k for k, _ in asked], [p for _, p in asked]
    rows = await db.fetch(PAYERS_AND_PAYMENTS_SQL, keys, payment_ids)
    return [((r if r["public_key"] is not None else None), r["recorded_tx_id"]) for r in rows]


# What a batch of spends needs before its limits are checked, in one round trip: the wallets' rows
# locked (key order) with their running totals, which of the batch's tx ids are logged already, the
# room promised to open reservations per payee, and the tx ids of the batch's payment ids.
FLUSH_STATE_SQL = ("SELECT * FROM bank_flush_state($1::bytea[], $2::bytea[], $3::bytea[], $4::text[], "
                   "$5::bigint)")   # the batch's wallets locked, then read (schema/007_locked_reads.sql)


@dataclass
class FlushState:
    wallets: dict[bytes, dict]          # key -> kyc_tier, deposit_account, held, out_day, out_today
    logged: set[bytes]
    reserved: dict[bytes, int]
    payments: dict[str, bytes]          # payment id -> its outbound tx id


async def flush_state(conn: asyncpg.Connection, wallets: list[bytes], tx_ids: list[bytes], payees: list[bytes],
                      payment_ids: list[str], now: int) -> FlushState:
    state = FlushState({}, set(), {}, {})
    for r in await conn.fetch(FLUSH_STATE_SQL, wallets, tx_ids, payees, payment_ids, now):
        what, key = r["what"], r["key"]
        if what == "w":
            state.wallets[key] = {"public_key": key, "kyc_tier": r["text1"], "deposit_account": r["text2"],
                                  "held": r["n1"], "out_day": r["n2"], "out_today": r["n3"]}
        elif what == "l":
            state.logged.add(key)
        elif what == "r":
            state.reserved[key] = r["n1"]
        else:
            state.payments[r["text1"]] = key
    return state


async def lock_wallets(conn: asyncpg.Connection, keys: list[bytes], now: int,
                       excluding: list[str] = ()) -> dict[bytes, asyncpg.Record]:
    """Lock the registered wallets among ``keys`` (in key order: no deadlock between batches); their
    records with the running totals and, as ``reserved``, the room open reservations hold at ``now``
    (not counting the payment ids ``excluding``), all read after the locks are granted."""
    return {r["public_key"]: r for r in await conn.fetch(LOCK_WALLETS_SQL, keys, now, list(excluding))}


async def account_balance(db: Executor, account_id: str) -> int:
    return await db.fetchval(ACCOUNT_BALANCE_SQL, account_id)


async def deposit_entry(conn: asyncpg.Connection, entry_key: str, account_id: str, amount: int,
                        now: int) -> bool:
    """Change a deposit balance by ``amount`` once per ``entry_key``; False if already done.

    A debit below zero raises Conflict(deposit_insufficient) (the caller's transaction is void)."""
    try:
        balance = await conn.fetchval(DEPOSIT_ENTRY_SQL, entry_key, account_id, amount, now)
    except asyncpg.CheckViolationError:
        raise Conflict("the deposit account's balance is too low", code="deposit_insufficient") from None
    return balance is not None


async def entry_exists(db: Executor, entry_key: str) -> bool:
    return await db.fetchval(ENTRY_EXISTS_SQL, entry_key) is not None


# ---------------------------------------------------------------------------------------------
# request nonces

REMEMBER_NONCE_SQL = """INSERT INTO bank_request_nonces (key_id, nonce, timestamp) VALUES ($1, $2, $3)
                        ON CONFLICT DO NOTHING RETURNING 1"""
EXPIRE_NONCES_SQL = "DELETE FROM bank_request_nonces WHERE timestamp < $1"


def nonce_store(pool: asyncpg.Pool) -> SQLNonceStore:
    """Signed-request nonces in this service's table (shared.signing.SQLNonceStore)."""
    return SQLNonceStore(pool, REMEMBER_NONCE_SQL, EXPIRE_NONCES_SQL)


# ---------------------------------------------------------------------------------------------
# balances, limits, activity (history and receipts)

WALLET_TOTALS_SQL = "SELECT held, out_day, out_today FROM bank_wallet_totals WHERE wallet = $1"
INSERT_ACTIVITY_SQL = """INSERT INTO bank_activity (wallet, seq, tx_id, kind, delta, outgoing, counterparty,
                                                    reference, at)
                         SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::text[], $5::bigint[],
                                              $6::bigint[], $7::text[], $8::text[], $9::bigint[])
                         ON CONFLICT DO NOTHING"""
HISTORY_SQL = """SELECT seq, tx_id, kind, delta, outgoing, counterparty, reference, at FROM bank_activity
                  WHERE wallet = $1 AND seq > $2 ORDER BY seq LIMIT $3"""
RECEIPT_SQL = """SELECT a.seq, a.kind, a.delta, a.counterparty, a.reference, a.at, l.body, l.witnesses,
                        l.accepted_at
                   FROM bank_activity a JOIN ledger_tx l ON l.tx_id = a.tx_id
                  WHERE a.wallet = $1 AND a.tx_id = $2"""
UNSPENT_TOTAL_SQL = "SELECT coalesce(sum(amount), 0)::bigint FROM ledger_utxo"

ACTIVITY_FIELDS = ("wallet", "seq", "tx_id", "kind", "delta", "outgoing", "counterparty", "reference", "at")


async def wallet_totals(db: Executor, key: bytes) -> asyncpg.Record:
    """The wallet's running totals: held, out_day, out_today (schema/004_wallet_totals.sql)."""
    return await db.fetchrow(WALLET_TOTALS_SQL, key)


async def insert_activity(conn: asyncpg.Connection, rows: list[dict]) -> None:
    if rows:
        await conn.execute(INSERT_ACTIVITY_SQL, *([row[f] for row in rows] for f in ACTIVITY_FIELDS))


async def history(db: Executor, wallet: bytes, after_seq: int, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(HISTORY_SQL, wallet, after_seq, limit)


async def receipt(db: Executor, wallet: bytes, tx_id: bytes) -> asyncpg.Record | None:
    return await db.fetchrow(RECEIPT_SQL, wallet, tx_id)


async def unspent_total(db: Executor) -> int:
    return await db.fetchval(UNSPENT_TOTAL_SQL)


# ---------------------------------------------------------------------------------------------
# fundings and defunds

FUNDING_COLUMNS = ("funding_id, wallet, account_id, amount, state, fund_tx, fund_tx_id, mint_tx_id, failure, "
                   "created_at, updated_at")
GET_FUNDING_SQL = f"SELECT {FUNDING_COLUMNS} FROM bank_fundings WHERE funding_id = $1"
FUNDING_FAILED_SQL = f"""UPDATE bank_fundings SET state = 'failed', failure = $2, updated_at = $3
                          WHERE funding_id = $1 AND state = 'debited' AND fund_tx_id IS NOT DISTINCT FROM $4
                          RETURNING {FUNDING_COLUMNS}"""
# batched funding (commercial_bank/funding.py): the records and debits of many fundings in one DB
# transaction, one tier-1 fund tx for a group of them, their mints in one DB transaction
GET_FUNDINGS_SQL = f"SELECT {FUNDING_COLUMNS} FROM bank_fundings WHERE funding_id = ANY($1::text[])"
OPEN_FUNDING_TOTALS_SQL = """SELECT wallet, sum(amount)::bigint AS total FROM bank_fundings
                              WHERE wallet = ANY($1::bytea[]) AND state IN ('debited', 'funded') GROUP BY wallet"""
LOCK_ACCOUNTS_SQL = """SELECT account_id, balance FROM bank_deposit_accounts WHERE account_id = ANY($1::text[])
                        ORDER BY account_id FOR UPDATE"""
INSERT_FUNDINGS_SQL = f"""INSERT INTO bank_fundings (funding_id, wallet, account_id, amount, state, created_at,
                                                     updated_at)
                          SELECT f, w, a, x, 'debited', $5, $5
                            FROM unnest($1::text[], $2::bytea[], $3::text[], $4::bigint[]) AS u(f, w, a, x)
                          ON CONFLICT (funding_id) DO NOTHING RETURNING {FUNDING_COLUMNS}"""
DEPOSIT_ENTRIES_SQL = """WITH e AS (
                             INSERT INTO bank_deposit_entries (entry_key, account_id, amount, created_at)
                             SELECT k, a, x, $4 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(k, a, x)
                             ON CONFLICT (entry_key) DO NOTHING RETURNING account_id, amount)
                         UPDATE bank_deposit_accounts d SET balance = d.balance + s.total
                           FROM (SELECT account_id, sum(amount) AS total FROM e GROUP BY account_id) s
                          WHERE d.account_id = s.account_id"""
# the debited fundings a new fund tx may cover: funding $2 first, then the oldest; one builder at a
# time per bank (a transaction-level advisory lock: the workers' groups never overlap)
BUILD_LOCK_SQL = "SELECT pg_advisory_xact_lock($1)"
LOCK_UNBUILT_FUNDINGS_SQL = f"""SELECT {FUNDING_COLUMNS} FROM bank_fundings WHERE state = 'debited' AND fund_tx IS NULL
                                 ORDER BY funding_id = $2 DESC, created_at, funding_id LIMIT $1 FOR UPDATE"""
STORE_GROUP_FUND_TX_SQL = """UPDATE bank_fundings SET fund_tx = $2, fund_tx_id = $3, updated_at = $4
                              WHERE funding_id = ANY($1::text[]) AND state = 'debited' AND fund_tx IS NULL"""
GROUP_FUNDED_SQL = """UPDATE bank_fundings SET state = 'funded', updated_at = $2
                       WHERE fund_tx_id = $1 AND state = 'debited'"""
# a fund tx known never to apply (its inputs were taken): its fundings wait for a new one
GROUP_FUND_TX_DEAD_SQL = """UPDATE bank_fundings SET fund_tx = NULL, fund_tx_id = NULL, updated_at = $2
                             WHERE fund_tx_id = $1 AND state = 'debited'"""
LOCK_FUNDED_GROUP_SQL = f"""SELECT {FUNDING_COLUMNS} FROM bank_fundings WHERE fund_tx_id = $1 AND state = 'funded'
                             ORDER BY funding_id FOR UPDATE"""
GROUP_MINTED_SQL = """UPDATE bank_fundings f SET state = 'minted', mint_tx_id = u.m, updated_at = $3
                        FROM unnest($1::text[], $2::bytea[]) AS u(f, m)
                       WHERE f.funding_id = u.f AND f.state = 'funded'"""
OPEN_FUNDINGS_SQL = f"""SELECT {FUNDING_COLUMNS} FROM bank_fundings WHERE state IN ('debited', 'funded')
                        ORDER BY created_at LIMIT $1"""

DEFUND_COLUMNS = ("defund_id, kind, wallet, account_id, amount, burn_tx_id, state, defund_tx, defund_tx_id, "
                  "created_at, updated_at")
INSERT_DEFUND_SQL = f"""INSERT INTO bank_defunds (defund_id, kind, wallet, account_id, amount, burn_tx_id, state,
                                                  created_at, updated_at)
                        VALUES ($1, $7, $2, $3, $4, $5, 'burned', $6, $6) ON CONFLICT DO NOTHING
                        RETURNING {DEFUND_COLUMNS}"""
GET_DEFUND_SQL = f"SELECT {DEFUND_COLUMNS} FROM bank_defunds WHERE defund_id = $1"
STORE_DEFUND_TX_SQL = f"""UPDATE bank_defunds SET defund_tx = $2, defund_tx_id = $3, updated_at = $4
                          WHERE defund_id = $1 AND state = 'burned' AND defund_tx_id IS NOT DISTINCT FROM $5
                          RETURNING {DEFUND_COLUMNS}"""
DEFUND_STATE_SQL = f"""UPDATE bank_defunds SET state = $3, updated_at = $4 WHERE defund_id = $1 AND state = $2
                       RETURNING {DEFUND_COLUMNS}"""
OPEN_DEFUNDS_SQL = f"""SELECT {DEFUND_COLUMNS} FROM bank_defunds WHERE state IN ('burned', 'defunded')
                       ORDER BY created_at LIMIT $1"""


async def get_fundings(db: Executor, funding_ids: list[str]) -> dict[str, asyncpg.Record]:
    return {r["funding_id"]: r for r in await db.fetch(GET_FUNDINGS_SQL, funding_ids)}


async def open_funding_totals(db: Executor, wallets: list[bytes]) -> dict[bytes, int]:
    """What each wallet has coming from fundings not yet minted."""
    return {r["wallet"]: r["total"] for r in await db.fetch(OPEN_FUNDING_TOTALS_SQL, wallets)}


async def lock_accounts(conn: asyncpg.Connection, account_ids: list[str]) -> dict[str, int]:
    """Lock deposit accounts (id order); their balances."""
    return {r["account_id"]: r["balance"] for r in await conn.fetch(LOCK_ACCOUNTS_SQL, account_ids)}


async def insert_fundings(conn: asyncpg.Connection, rows: list[tuple], now: int) -> dict[str, asyncpg.Record]:
    """New funding rows (funding id, wallet, account, amount), state debited; the ones inserted now."""
    if not rows:
        return {}
    columns = [list(c) for c in zip(*rows)]
    return {r["funding_id"]: r for r in await conn.fetch(INSERT_FUNDINGS_SQL, *columns, now)}


async def deposit_entries(conn: asyncpg.Connection, entries: list[tuple[str, str, int]], now: int) -> None:
    """Change deposit balances by (entry key, account, amount), each once per entry key. The caller
    holds the accounts locked and has checked that no balance goes below zero."""
    if entries:
        await conn.execute(DEPOSIT_ENTRIES_SQL, *([e[i] for e in entries] for i in range(3)), now)


FUNDING_BUILD_LOCK = 0x43424443_0002   # pg advisory lock key: building a group's fund tx (one per database)


async def lock_unbuilt_fundings(conn: asyncpg.Connection, funding_id: str, limit: int) -> list[asyncpg.Record]:
    """Up to ``limit`` debited fundings without a fund tx (``funding_id`` first, if it is one), locked,
    with the bank's build lock held until the caller's transaction ends."""
    await conn.execute(BUILD_LOCK_SQL, FUNDING_BUILD_LOCK)
    return await conn.fetch(LOCK_UNBUILT_FUNDINGS_SQL, limit, funding_id)


async def store_group_fund_tx(conn: asyncpg.Connection, funding_ids: list[str], tx_json: bytes, tx_id: bytes,
                              now: int) -> None:
    await conn.execute(STORE_GROUP_FUND_TX_SQL, funding_ids, tx_json, tx_id, now)


async def group_funded(db: Executor, fund_tx_id: bytes, now: int) -> None:
    await db.execute(GROUP_FUNDED_SQL, fund_tx_id, now)


async def group_fund_tx_dead(db: Executor, fund_tx_id: bytes, now: int) -> None:
    await db.execute(GROUP_FUND_TX_DEAD_SQL, fund_tx_id, now)


async def lock_funded_group(conn: asyncpg.Connection, fund_tx_id: bytes) -> list[asyncpg.Record]:
    return await conn.fetch(LOCK_FUNDED_GROUP_SQL, fund_tx_id)


async def group_minted(conn: asyncpg.Connection, minted: list[tuple[str, bytes]], now: int) -> None:
    if minted:
        await conn.execute(GROUP_MINTED_SQL, [f for f, _ in minted], [m for _, m in minted], now)


async def get_funding(db: Executor, funding_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(GET_FUNDING_SQL, funding_id)


async def funding_failed(conn: asyncpg.Connection, funding_id: str, failure: str, now: int,
                         dead_tx_id: bytes | None) -> asyncpg.Record | None:
    """Mark a funding failed if its stored fund tx is still ``dead_tx_id`` (known never to apply)."""
    return await conn.fetchrow(FUNDING_FAILED_SQL, funding_id, failure, now, dead_tx_id)


async def open_fundings(db: Executor, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(OPEN_FUNDINGS_SQL, limit)


async def insert_defund(conn: asyncpg.Connection, defund_id: str, wallet: bytes, account_id: str, amount: int,
                        burn_tx_id: bytes | None, now: int, kind: str = "burn") -> asyncpg.Record | None:
    """A defund row (state burned); kind 'waterfall' has no burn. None if the id exists."""
    return await conn.fetchrow(INSERT_DEFUND_SQL, defund_id, wallet, account_id, amount, burn_tx_id, now, kind)


async def get_defund(db: Executor, defund_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(GET_DEFUND_SQL, defund_id)


async def store_defund_tx(db: Executor, defund_id: str, tx_json: bytes, tx_id: bytes, now: int,
                          replaces: bytes | None) -> asyncpg.Record | None:
    return await db.fetchrow(STORE_DEFUND_TX_SQL, defund_id, tx_json, tx_id, now, replaces)


async def set_defund_state(db: Executor, defund_id: str, old: str, new: str, now: int) -> asyncpg.Record | None:
    return await db.fetchrow(DEFUND_STATE_SQL, defund_id, old, new, now)


async def open_defunds(db: Executor, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(OPEN_DEFUNDS_SQL, limit)


# ---------------------------------------------------------------------------------------------
# cross-bank payments: the outbox (payer side) and the inbound record (payee side)

PAYMENT_COLUMNS = ("payment_id, payer, payee_bank, payee_key, amount, outbound_tx_id, outbound_tx, state, notice, "
                   "refusal_code, refund_tx_id, attempts, last_error, created_at, updated_at")
INSERT_PAYMENTS_SQL = """INSERT INTO bank_payments (payment_id, payer, payee_bank, payee_key, amount,
                                                    outbound_tx_id, outbound_tx, state, created_at, updated_at)
                         SELECT p, w, b, k, a, t, j, 'pending', n, n
                           FROM unnest($1::text[], $2::bytea[], $3::text[], $4::bytea[], $5::bigint[],
                                       $6::bytea[], $7::bytea[]) AS x(p, w, b, k, a, t, j), (SELECT $8::bigint) AS c(n)
                         ON CONFLICT DO NOTHING RETURNING payment_id"""
GET_PAYMENT_SQL = f"SELECT {PAYMENT_COLUMNS} FROM bank_payments WHERE payment_id = $1"
OPEN_PAYMENTS_SQL = f"""SELECT {PAYMENT_COLUMNS} FROM bank_payments WHERE state = $1
                        ORDER BY created_at, payment_id LIMIT $2"""
ONUS_COMPLETED_SQL = """UPDATE bank_payments SET state = 'completed', updated_at = $2
                       WHERE payment_id = ANY($1::text[]) AND state = 'pending'"""
PAYMENT_REFUNDED_SQL = f"""UPDATE bank_payments SET state = 'refunded', refusal_code = $2, refund_tx_id = $3,
                                  updated_at = $4
                            WHERE payment_id = $1 AND state = 'pending' RETURNING {PAYMENT_COLUMNS}"""
PAYMENTS_SETTLED_SQL = f"""UPDATE bank_payments p SET state = 'settled', notice = x.notice, updated_at = $3
                            FROM unnest($1::text[], $2::bytea[]) AS x(payment_id, notice)
                           WHERE p.payment_id = x.payment_id AND p.state = 'pending'
                       RETURNING {', '.join('p.' + c for c in PAYMENT_COLUMNS.split(', '))}"""
PAYMENTS_COMPLETED_SQL = """UPDATE bank_payments SET state = 'completed', updated_at = $2, last_error = NULL
                             WHERE payment_id = ANY($1::text[]) AND state = 'settled'"""
PAYMENTS_ERROR_SQL = """UPDATE bank_payments SET attempts = attempts + 1, last_error = $2, updated_at = $3
                         WHERE payment_id = ANY($1::text[])"""
PAYMENT_ERROR_SQL = """UPDATE bank_payments SET attempts = attempts + 1, last_error = $2, updated_at = $3
                        WHERE payment_id = $1"""
OUTBOX_SQL = """SELECT state, count(*) AS n, coalesce(min(created_at), 0)::bigint AS oldest FROM bank_payments
                 WHERE state IN ('pending', 'settled') GROUP BY state"""

INBOUND_COLUMNS = ("payment_id, payer_bank, payee_key, amount, deposit_amount, outbound_tx_id, settle_tx_id, "
                   "inbound_tx_id, credited_at")
INSERT_INBOUND_SQL = f"""INSERT INTO bank_inbound ({INBOUND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                         ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id"""
GET_INBOUNDS_SQL = f"SELECT {INBOUND_COLUMNS} FROM bank_inbound WHERE payment_id = ANY($1::text[])"
# the credits recorded now release their payments' reservations, in the same statement
INSERT_INBOUNDS_SQL = f"""WITH i AS (
                              INSERT INTO bank_inbound ({INBOUND_COLUMNS})
                              SELECT *, $9::bigint FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[],
                                                               $5::bigint[], $6::bytea[], $7::bytea[], $8::bytea[])
                              ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id),
                          r AS (DELETE FROM bank_reservations WHERE payment_id IN (SELECT payment_id FROM i))
                          SELECT payment_id FROM i"""


async def insert_payments(conn: asyncpg.Connection, rows: list[tuple], now: int) -> set[str]:
    """Outbox rows (payment id, payer, payee bank, payee key, amount, tx id, tx json); ids inserted."""
    columns = [list(c) for c in zip(*rows)]
    return {r["payment_id"] for r in await conn.fetch(INSERT_PAYMENTS_SQL, *columns, now)}


async def get_payment(db: Executor, payment_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(GET_PAYMENT_SQL, payment_id)


async def open_payments(db: Executor, state: str, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(OPEN_PAYMENTS_SQL, state, limit)


async def onus_completed(conn: asyncpg.Connection, payment_ids: list[str], now: int) -> None:
    """On-us payments are completed in the transaction that records them: no tier-1 settlement."""
    await conn.execute(ONUS_COMPLETED_SQL, payment_ids, now)


async def payment_refunded(conn: asyncpg.Connection, payment_id: str, code: str, refund_tx_id: bytes,
                           now: int) -> asyncpg.Record | None:
    return await conn.fetchrow(PAYMENT_REFUNDED_SQL, payment_id, code, refund_tx_id, now)


async def payments_settled(db: Executor, notices: list[tuple[str, bytes]], now: int) -> list[asyncpg.Record]:
    """pending -> settled with the central bank's notice, for each (payment id, notice JSON); the moved rows."""
    if not notices:
        return []
    ids, bodies = zip(*notices)
    return await db.fetch(PAYMENTS_SETTLED_SQL, list(ids), list(bodies), now)


async def payments_completed(db: Executor, payment_ids: list[str], now: int) -> int:
    """settled -> completed (the payee bank credited them); how many moved."""
    if not payment_ids:
        return 0
    return int((await db.execute(PAYMENTS_COMPLETED_SQL, payment_ids, now)).split()[-1])


async def payments_error(db: Executor, payment_ids: list[str], error: str, now: int) -> None:
    await db.execute(PAYMENTS_ERROR_SQL, payment_ids, error, now)


async def payment_error(db: Executor, payment_id: str, error: str, now: int) -> None:
    await db.execute(PAYMENT_ERROR_SQL, payment_id, error[:500], now)


async def outbox(db: Executor) -> dict[str, tuple[int, int]]:
    """Open payments by state: (count, created_at of the oldest)."""
    return {r["state"]: (r["n"], r["oldest"]) for r in await db.fetch(OUTBOX_SQL)}


async def insert_inbound(conn: asyncpg.Connection, payment_id: str, payer_bank: str, payee_key: bytes,
                         amount: int, deposit_amount: int, outbound_tx_id: bytes, settle_tx_id: bytes | None,
                         inbound_tx_id: bytes | None, now: int) -> bool:
    """Record the credit of a payment; False if it was already recorded (nothing written)."""
    return await conn.fetchval(INSERT_INBOUND_SQL, payment_id, payer_bank, payee_key, amount, deposit_amount,
                               outbound_tx_id, settle_tx_id, inbound_tx_id, now) is not None


async def get_inbounds(db: Executor, payment_ids: list[str]) -> dict[str, asyncpg.Record]:
    return {r["payment_id"]: r for r in await db.fetch(GET_INBOUNDS_SQL, payment_ids)}


async def insert_inbounds(conn: asyncpg.Connection, rows: list[tuple], now: int) -> set[str]:
    """Record credits (payment id, payer bank, payee key, amount, deposit amount, outbound tx id,
    settle tx id, inbound tx id); the payment ids recorded now (the others were already). Their
    reservations are released in the same statement."""
    columns = [list(c) for c in zip(*rows)]
    return {r["payment_id"] for r in await conn.fetch(INSERT_INBOUNDS_SQL, *columns, now)}


# ---------------------------------------------------------------------------------------------
# reservations of room in a payee's holding limit (payee side of a cross-bank payment)

RESERVATION_COLUMNS = "payment_id, payer_bank, payee_key, amount, room, created_at, expires_at"
GET_RESERVATIONS_SQL = f"SELECT {RESERVATION_COLUMNS} FROM bank_reservations WHERE payment_id = ANY($1::text[])"
# the reservations under these ids, and (as credited = true) the ids whose payment was credited
KNOWN_RESERVATIONS_SQL = f"""SELECT {RESERVATION_COLUMNS}, false AS credited FROM bank_reservations
                              WHERE payment_id = ANY($1::text[])
                             UNION ALL
                             SELECT payment_id, payer_bank, payee_key, amount, 0, credited_at, 0, true FROM bank_inbound
                              WHERE payment_id = ANY($1::text[])"""
INSERT_RESERVATIONS_SQL = f"""INSERT INTO bank_reservations ({RESERVATION_COLUMNS})
                              SELECT *, $6::bigint, $7::bigint FROM unnest($1::text[], $2::text[], $3::bytea[],
                                                                           $4::bigint[], $5::bigint[])
                              ON CONFLICT (payment_id) DO NOTHING RETURNING {RESERVATION_COLUMNS}"""
# expired reservations, a bounded chunk at a time (a credited payment's is released as it is credited)
SWEEP_RESERVATIONS_SQL = """DELETE FROM bank_reservations WHERE payment_id IN (
                                SELECT payment_id FROM bank_reservations WHERE expires_at < $1 LIMIT $2)"""


async def get_reservations(db: Executor, payment_ids: list[str]) -> dict[str, asyncpg.Record]:
    return {r["payment_id"]: r for r in await db.fetch(GET_RESERVATIONS_SQL, payment_ids)}


async def known_reservations(db: Executor, payment_ids: list[str]) -> tuple[dict[str, asyncpg.Record], set[str]]:
    """The open reservations under these payment ids, and the ids whose payment is already credited."""
    rows = await db.fetch(KNOWN_RESERVATIONS_SQL, payment_ids)
    return {r["payment_id"]: r for r in rows if not r["credited"]}, {r["payment_id"] for r in rows if r["credited"]}


async def insert_reservations(conn: asyncpg.Connection, rows: list[tuple], now: int, expires_at: int
                              ) -> dict[str, asyncpg.Record]:
    """Reservations (payment id, payer bank, payee key, amount, room); the rows inserted now."""
    if not rows:
        return {}
    columns = [list(c) for c in zip(*rows)]
    return {r["payment_id"]: r for r in await conn.fetch(INSERT_RESERVATIONS_SQL, *columns, now, expires_at)}


async def sweep_reservations(db: Executor, now: int, limit: int) -> int:
    """Delete up to ``limit`` expired reservations; how many."""
    return int((await db.execute(SWEEP_RESERVATIONS_SQL, now, limit)).split()[-1])
