"""The payment journal: every signed transaction is saved here BEFORE it is sent.

A SQLite file beside the keystore (``wallet.dat`` -> ``wallet.journal``, mode 0600). One row per
signed transaction, keyed by its tx id, holding the exact bytes that go on the wire. A retry
(after a timeout, a crash, a reset) re-sends those bytes, never a rebuilt transaction: same bytes,
same tx id, and the bank answers ``exists`` instead of paying twice.

States::

    pending   signed and saved; maybe sent, outcome unknown. Its inputs are reserved: coin
              selection will not spend them in another payment.
    accepted  the bank answered created or exists (final)
    rejected  the bank refused it with a definite error (final); its inputs are free again

Fundings (deposit -> CBDC) are journaled the same way in a second table: the funding id (the bank's
idempotency key) is saved as pending BEFORE the request is sent, and a retry re-sends that id, so
the bank answers with the first funding instead of debiting the deposit account again.

Nothing here talks to a bank: ``wallet.payments`` decides what to do with an answer.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from shared.tx import SignedTx, encode_body, signed_from_bytes, tx_id_of
from wallet.errors import JournalError

PENDING = "pending"
ACCEPTED = "accepted"
REJECTED = "rejected"
STATES = (PENDING, ACCEPTED, REJECTED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payment (
    tx_id       TEXT PRIMARY KEY,
    account     TEXT NOT NULL,
    wire        BLOB NOT NULL,                       -- the exact JSON bytes sent to the bank
    inputs      TEXT NOT NULL,                       -- JSON [[tx_id hex, index], ...]
    state       TEXT NOT NULL CHECK (state IN ('pending', 'accepted', 'rejected')),
    created_at  INTEGER NOT NULL,
    expiry      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    result      TEXT                                 -- JSON: the bank's answer or refusal
);
CREATE INDEX IF NOT EXISTS payment_state ON payment (state);
CREATE TABLE IF NOT EXISTS funding (
    funding_id  TEXT PRIMARY KEY,                    -- the bank's idempotency key for this funding
    account     TEXT NOT NULL,
    amount      INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'accepted', 'rejected')),
    created_at  INTEGER NOT NULL,
    result      TEXT
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    tx_id: str
    account: str
    wire: bytes
    inputs: tuple[tuple[bytes, int], ...]
    state: str
    created_at: int
    expiry: int
    attempts: int
    result: dict | None

    @property
    def signed(self) -> SignedTx:
        return signed_from_bytes(self.wire)


@dataclass(frozen=True, slots=True)
class Funding:
    funding_id: str
    account: str
    amount: int
    state: str
    created_at: int
    result: dict | None


def journal_path(wallet_path: Path) -> Path:
    return Path(wallet_path).with_suffix(".journal")


class Journal:
    """The journal file. Every write is its own committed SQLite transaction (synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"cannot open the payment journal {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record_signed(self, account: str, wire: bytes, now: int) -> Entry:
        """Save a signed transaction's wire bytes as pending; returns the entry (existing if saved before)."""
        stx = signed_from_bytes(wire)
        tx_id = tx_id_of(encode_body(stx.body)).hex()
        inputs = json.dumps([[i.tx_id.hex(), i.index] for i in stx.body.inputs])
        self._db.execute("INSERT OR IGNORE INTO payment (tx_id, account, wire, inputs, state, created_at, expiry)"
                         " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                         (tx_id, account, wire, inputs, now, stx.body.expiry))
        entry = self.get(tx_id)
        if entry.wire != wire:  # same body, other witnesses: keep the first, the bytes already sent
            raise JournalError("a different signing of this transaction is already journaled",
                               code="journal_conflict")
        return entry

    def mark_attempt(self, tx_id: str) -> None:
        self._db.execute("UPDATE payment SET attempts = attempts + 1 WHERE tx_id = ?", (tx_id,))

    def settle(self, tx_id: str, state: str, result: dict) -> Entry:
        """Record a final outcome once; a later different outcome for a final entry is refused."""
        if state not in (ACCEPTED, REJECTED):
            raise ValueError(f"not a final state: {state}")
        entry = self.get(tx_id)
        if entry.state == PENDING:
            self._db.execute("UPDATE payment SET state = ?, result = ? WHERE tx_id = ? AND state = 'pending'",
                             (state, json.dumps(result), tx_id))
            return self.get(tx_id)
        if entry.state != state:
            raise JournalError(f"payment {tx_id} is already {entry.state}", code="journal_conflict")
        return entry

    def get(self, tx_id: str) -> Entry:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM payment WHERE tx_id = ?", (tx_id,)).fetchone()
        if row is None:
            raise JournalError(f"no payment {tx_id} in the journal", code="journal_entry_not_found")
        return _entry(row)

    def entries(self, state: str | None = None, account: str | None = None) -> list[Entry]:
        sql = f"SELECT {_COLUMNS} FROM payment WHERE (? IS NULL OR state = ?) AND (? IS NULL OR account = ?)" \
              " ORDER BY created_at, tx_id"
        return [_entry(row) for row in self._db.execute(sql, (state, state, account, account))]

    # -- fundings -----------------------------------------------------------------------------

    def record_funding(self, account: str, funding_id: str, amount: int, now: int) -> Funding:
        self._db.execute("INSERT OR IGNORE INTO funding (funding_id, account, amount, state, created_at)"
                         " VALUES (?, ?, ?, 'pending', ?)", (funding_id, account, amount, now))
        funding = self.funding(funding_id)
        if (funding.account, funding.amount) != (account, amount):
            raise JournalError("this funding id is journaled for another funding", code="journal_conflict")
        return funding

    def settle_funding(self, funding_id: str, state: str, result: dict) -> Funding:
        if state not in (ACCEPTED, REJECTED):
            raise ValueError(f"not a final state: {state}")
        self._db.execute("UPDATE funding SET state = ?, result = ? WHERE funding_id = ? AND state = 'pending'",
                         (state, json.dumps(result), funding_id))
        return self.funding(funding_id)

    def funding(self, funding_id: str) -> "Funding":
        row = self._db.execute(f"SELECT {_FUNDING_COLUMNS} FROM funding WHERE funding_id = ?", (funding_id,)).fetchone()
        if row is None:
            raise JournalError(f"no funding {funding_id} in the journal", code="journal_entry_not_found")
        return _funding(row)

    def fundings(self, state: str | None = None, account: str | None = None) -> list["Funding"]:
        sql = f"SELECT {_FUNDING_COLUMNS} FROM funding WHERE (? IS NULL OR state = ?) AND (? IS NULL OR account = ?)" \
              " ORDER BY created_at, funding_id"
        return [_funding(row) for row in self._db.execute(sql, (state, state, account, account))]

    def reserved(self, account: str | None = None) -> frozenset[tuple[bytes, int]]:
        """Outpoints spent by pending payments: coin selection must not use them again."""
        return frozenset(op for e in self.entries(PENDING, account) for op in e.inputs)


_COLUMNS = "tx_id, account, wire, inputs, state, created_at, expiry, attempts, result"


def _entry(row: tuple) -> Entry:
    tx_id, account, wire, inputs, state, created_at, expiry, attempts, result = row
    return Entry(tx_id, account, bytes(wire), tuple((bytes.fromhex(t), i) for t, i in json.loads(inputs)),
                 state, created_at, expiry, attempts, json.loads(result) if result else None)


_FUNDING_COLUMNS = "funding_id, account, amount, state, created_at, result"


def _funding(row: tuple) -> Funding:
    funding_id, account, amount, state, created_at, result = row
    return Funding(funding_id, account, amount, state, created_at, json.loads(result) if result else None)
