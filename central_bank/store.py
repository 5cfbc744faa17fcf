"""ALL of the central bank's SQL, as named constants beside small async functions.

Database errors are translated here and nowhere else. Callers own transactions: a function that
takes ``conn`` runs in the caller's transaction; one that takes ``pool`` runs on its own.
Timestamps are unix seconds from the service's clock (injected, so tests control time).
"""
from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from shared.accounts import escrow_owner
from shared.errors import Conflict
from shared.signing import SQLNonceStore

Executor = asyncpg.Pool | asyncpg.Connection
KIND_ISSUE, KIND_REDEEM = 1, 2


# escrow_owner (imported above) is defined in shared.accounts; central_bank code imports it from here.


# ---------------------------------------------------------------------------------------------
# health

# ping and the schema-version check are shared.db.ping / shared.db.schema_at


# ---------------------------------------------------------------------------------------------
# banks

BANK_COLUMNS = "bank_id, name, public_key, escrow_owner, callback_url, status, registered_at, updated_at"
INSERT_BANK_SQL = f"""INSERT INTO cb_banks ({BANK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, 'active', $6, $6)
                      RETURNING {BANK_COLUMNS}"""
GET_BANK_SQL = f"SELECT {BANK_COLUMNS} FROM cb_banks WHERE bank_id = $1"
LOCK_BANK_SQL = f"SELECT {BANK_COLUMNS} FROM cb_banks WHERE bank_id = $1 FOR UPDATE"
LIST_BANKS_SQL = f"SELECT {BANK_COLUMNS} FROM cb_banks WHERE bank_id > $1 ORDER BY bank_id LIMIT $2"
SET_BANK_STATUS_SQL = f"""UPDATE cb_banks SET status = $2, updated_at = $3 WHERE bank_id = $1
                          RETURNING {BANK_COLUMNS}"""
BANKS_BY_KEYS_SQL = f"SELECT {BANK_COLUMNS} FROM cb_banks WHERE public_key = ANY($1::bytea[])"
BANKS_BY_IDS_SQL = f"SELECT {BANK_COLUMNS} FROM cb_banks WHERE bank_id = ANY($1::text[])"


@dataclass(frozen=True, slots=True)
class Bank:
    bank_id: str
    name: str
    public_key: bytes
    escrow_owner: bytes
    callback_url: str
    status: str
    registered_at: int
    updated_at: int

    @property
    def active(self) -> bool:
        return self.status == "active"


def _bank(row: asyncpg.Record | None) -> Bank | None:
    return None if row is None else Bank(**dict(row))


async def insert_bank(pool: asyncpg.Pool, bank_id: str, name: str, public_key: bytes, callback_url: str,
                      now: int) -> Bank:
    try:
        row = await pool.fetchrow(INSERT_BANK_SQL, bank_id, name, public_key, escrow_owner(bank_id),
                                  callback_url, now)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "cb_banks_public_key_key":
            raise Conflict("another bank is registered with this public key", code="public_key_in_use") from None
        raise Conflict(f"bank {bank_id!r} is already registered", code="bank_exists") from None
    return _bank(row)  # type: ignore[return-value]


async def get_bank(db: Executor, bank_id: str) -> Bank | None:
    return _bank(await db.fetchrow(GET_BANK_SQL, bank_id))


async def lock_bank(conn: asyncpg.Connection, bank_id: str) -> Bank | None:
    return _bank(await conn.fetchrow(LOCK_BANK_SQL, bank_id))


async def list_banks(pool: asyncpg.Pool, after: str, limit: int) -> list[Bank]:
    return [_bank(r) for r in await pool.fetch(LIST_BANKS_SQL, after, limit)]  # type: ignore[misc]


async def set_bank_status(pool: asyncpg.Pool, bank_id: str, status: str, now: int) -> Bank | None:
    return _bank(await pool.fetchrow(SET_BANK_STATUS_SQL, bank_id, status, now))


async def banks_by_keys(db: Executor, keys: list[bytes]) -> dict[bytes, Bank]:
    return {r["public_key"]: _bank(r) for r in await db.fetch(BANKS_BY_KEYS_SQL, keys)}  # type: ignore[misc]


async def banks_by_ids(db: Executor, bank_ids: list[str]) -> dict[str, Bank]:
    return {r["bank_id"]: _bank(r) for r in await db.fetch(BANKS_BY_IDS_SQL, bank_ids)}  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# request nonces

REMEMBER_NONCE_SQL = """INSERT INTO cb_request_nonces (key_id, nonce, timestamp) VALUES ($1, $2, $3)
                        ON CONFLICT DO NOTHING RETURNING 1"""
EXPIRE_NONCES_SQL = "DELETE FROM cb_request_nonces WHERE timestamp < $1"


def nonce_store(pool: asyncpg.Pool) -> SQLNonceStore:
    """Signed-request nonces in this service's table (shared.signing.SQLNonceStore)."""
    return SQLNonceStore(pool, REMEMBER_NONCE_SQL, EXPIRE_NONCES_SQL)


# ---------------------------------------------------------------------------------------------
# issuance proposals and supply

PROPOSAL_COLUMNS = ("proposal_id, bank_id, amount, memo, proposed_by, proposed_at, expires_at, status, "
                    "decided_by, decided_at, tx_id")
INSERT_PROPOSAL_SQL = f"""INSERT INTO cb_proposals (proposal_id, bank_id, amount, memo, proposed_by,
                                                    proposed_at, expires_at, status)
                          VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') RETURNING {PROPOSAL_COLUMNS}"""
GET_PROPOSAL_SQL = f"SELECT {PROPOSAL_COLUMNS} FROM cb_proposals WHERE proposal_id = $1"
LOCK_PROPOSAL_SQL = GET_PROPOSAL_SQL + " FOR UPDATE"
DECIDE_PROPOSAL_SQL = f"""UPDATE cb_proposals SET status = $2, decided_by = $3, decided_at = $4, tx_id = $5
                          WHERE proposal_id = $1 AND status = 'pending' RETURNING {PROPOSAL_COLUMNS}"""
LIST_PROPOSALS_SQL = f"""SELECT {PROPOSAL_COLUMNS} FROM cb_proposals WHERE proposal_id > $1
                         ORDER BY proposal_id LIMIT $2"""
LOCK_SUPPLY_SQL = "SELECT id FROM cb_supply_lock FOR UPDATE"
SUPPLY_SQL = """SELECT coalesce(sum(value_out) FILTER (WHERE kind = 1), 0)::bigint AS issued,
                       coalesce(sum(value_in - value_out) FILTER (WHERE kind = 2), 0)::bigint AS redeemed
                  FROM ledger_tx WHERE kind IN (1, 2)"""
UNSPENT_TOTAL_SQL = "SELECT coalesce(sum(amount), 0)::bigint FROM ledger_utxo"


async def insert_proposal(pool: asyncpg.Pool, proposal_id: str, bank_id: str, amount: int, memo: str,
                          proposed_by: str, now: int, expires_at: int) -> asyncpg.Record:
    return await pool.fetchrow(INSERT_PROPOSAL_SQL, proposal_id, bank_id, amount, memo, proposed_by, now,
                               expires_at)


async def get_proposal(db: Executor, proposal_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(GET_PROPOSAL_SQL, proposal_id)


async def lock_proposal(conn: asyncpg.Connection, proposal_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(LOCK_PROPOSAL_SQL, proposal_id)


async def decide_proposal(conn: asyncpg.Connection, proposal_id: str, status: str, operator: str, now: int,
                          tx_id: bytes | None) -> asyncpg.Record:
    row = await conn.fetchrow(DECIDE_PROPOSAL_SQL, proposal_id, status, operator, now, tx_id)
    assert row is not None, "the caller holds the proposal's row lock and saw it pending"
    return row


async def list_proposals(pool: asyncpg.Pool, after: str, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(LIST_PROPOSALS_SQL, after, limit)


async def lock_supply(conn: asyncpg.Connection) -> None:
    await conn.fetchval(LOCK_SUPPLY_SQL)


async def supply(db: Executor) -> tuple[int, int]:
    """(issued, redeemed) from the ledger log."""
    row = await db.fetchrow(SUPPLY_SQL)
    return row["issued"], row["redeemed"]


async def unspent_total(db: Executor) -> int:
    return await db.fetchval(UNSPENT_TOTAL_SQL)


# ---------------------------------------------------------------------------------------------
# balances and outputs

BALANCES_SQL = """SELECT owner, coalesce(sum(amount), 0)::bigint AS total, count(*) AS outputs
                    FROM ledger_utxo WHERE owner = ANY($1::bytea[]) GROUP BY owner"""
ESCROW_TOTALS_SQL = """SELECT b.bank_id, coalesce(sum(u.amount), 0)::bigint AS total
                         FROM cb_banks b LEFT JOIN ledger_utxo u ON u.owner = b.escrow_owner
                        GROUP BY b.bank_id"""
LOCK_OUTPUTS_SQL = """SELECT tx_id, idx, owner, amount FROM ledger_utxo WHERE owner = $1
                       ORDER BY amount DESC, tx_id, idx LIMIT $2 FOR UPDATE"""


async def balances(db: Executor, owners: list[bytes]) -> dict[bytes, tuple[int, int]]:
    """owner -> (total, number of outputs), for the owners that have any."""
    return {r["owner"]: (r["total"], r["outputs"]) for r in await db.fetch(BALANCES_SQL, owners)}


async def escrow_totals(pool: asyncpg.Pool) -> dict[str, int]:
    return {r["bank_id"]: r["total"] for r in await pool.fetch(ESCROW_TOTALS_SQL)}


async def lock_largest_outputs(conn: asyncpg.Connection, owner: bytes, limit: int) -> list[asyncpg.Record]:
    """The ``limit`` largest unspent outputs of ``owner``, locked until the caller's commit."""
    return await conn.fetch(LOCK_OUTPUTS_SQL, owner, limit)


# ---------------------------------------------------------------------------------------------
# per-bank history

RECORD_HISTORY_SQL = """INSERT INTO cb_bank_history (bank_id, seq, tx_id)
                        SELECT DISTINCT b.bank_id, t.seq, t.tx_id
                          FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) AS t(tx_id, seq, owner)
                          JOIN cb_banks b ON t.owner IN (b.public_key, b.escrow_owner)
                        ON CONFLICT DO NOTHING"""
HISTORY_SQL = """SELECT h.seq, h.tx_id, l.body, l.accepted_at
                   FROM cb_bank_history h JOIN ledger_tx l ON l.tx_id = h.tx_id
                  WHERE h.bank_id = $1 AND h.seq > $2 ORDER BY h.seq LIMIT $3"""


async def record_history(conn: asyncpg.Connection, entries: list[tuple[bytes, int, list[bytes]]]) -> None:
    """(tx id, seq, owners it touches) for transactions created in the caller's transaction."""
    tx_ids, seqs, owners = [], [], []
    for tx_id, seq, touched in entries:
        for owner in touched:
            tx_ids.append(tx_id)
            seqs.append(seq)
            owners.append(owner)
    if tx_ids:
        await conn.execute(RECORD_HISTORY_SQL, tx_ids, seqs, owners)


async def history(pool: asyncpg.Pool, bank_id: str, after_seq: int, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(HISTORY_SQL, bank_id, after_seq, limit)


# ---------------------------------------------------------------------------------------------
# payments

PAYMENT_COLUMNS = ("payment_id, payer_bank, payee_bank, amount, status, refusal_code, tx_id, settled_at, "
                   "signature, request_key, request_signature, reference")
GET_PAYMENT_SQL = f"SELECT {PAYMENT_COLUMNS} FROM cb_payments WHERE payment_id = $1"
GET_PAYMENTS_SQL = f"SELECT {PAYMENT_COLUMNS} FROM cb_payments WHERE payment_id = ANY($1::text[])"
INSERT_PAYMENT_SQL = f"""INSERT INTO cb_payments ({PAYMENT_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"""
_PAYMENT_FIELDS = [c.strip() for c in PAYMENT_COLUMNS.split(",")]


class PaymentExists(Exception):
    """A payment id was recorded concurrently by another request; re-read it."""


async def get_payment(db: Executor, payment_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(GET_PAYMENT_SQL, payment_id)


async def get_payments(db: Executor, payment_ids: list[str]) -> dict[str, asyncpg.Record]:
    return {r["payment_id"]: r for r in await db.fetch(GET_PAYMENTS_SQL, payment_ids)}


async def insert_payments(conn: asyncpg.Connection, rows: list[dict]) -> None:
    """Record payments (dicts keyed by column); PaymentExists if a concurrent request recorded one
    of these ids first (the caller's transaction is then aborted and must be rolled back)."""
    try:
        await conn.executemany(INSERT_PAYMENT_SQL, [[row[f] for f in _PAYMENT_FIELDS] for row in rows])
    except asyncpg.UniqueViolationError:
        raise PaymentExists() from None
