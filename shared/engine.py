"""The UTXO ledger engine on PostgreSQL, used by both tiers.

``UTXOEngine.apply(batch)`` applies many validated transactions (shared.validation.ValidTx) in
one database transaction with set-based SQL (the ``ledger_apply`` function of
shared/schema/001_ledger.sql) and returns one ``ApplyResult`` per transaction, in order. One bad
transaction never fails its batch-mates. Double spends are refused by the database itself (a
spend deletes the output's row; concurrent spends serialise on its row lock), not by any lock in
this process, so any number of processes may apply batches to one ledger at once.

A batch may hold transactions that conflict (two spends of one output) or chain (one spends an
output of another). ``plan_batch`` splits it into waves in which no two transactions touch the
same outpoint; the waves run in batch order inside the same database transaction, so the result
is the same as applying the transactions one by one in order.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

import asyncpg

from shared.errors import Unavailable
from shared.tx import KINDS
from shared.validation import ValidTx

log = logging.getLogger(__name__)

CREATED = "created"
EXISTS = "exists"
INPUT_NOT_FOUND = "input_not_found"
INPUT_ALREADY_SPENT = "input_already_spent"
INPUT_MISMATCH = "input_mismatch"
INPUT_CONTENDED = "input_contended"
ACCEPTED = frozenset({CREATED, EXISTS})
CONTENDED_RETRIES_MAX = 3

# the plpgsql function takes 18 arrays; asyncpg prepares and caches the statement
APPLY_SQL = "SELECT tx_no, code, bad_input, seq, accepted_at FROM ledger_apply(" + ", ".join(
    f"${n}" for n in range(1, 19)) + ")"
BALANCE_SQL = "SELECT coalesce(sum(amount), 0)::bigint FROM ledger_utxo WHERE owner = $1"
UNSPENT_SQL = """SELECT tx_id, idx, owner, amount FROM ledger_utxo
                  WHERE owner = $1 AND (tx_id, idx) > ($2, $3)
                  ORDER BY tx_id, idx LIMIT $4"""
OUTPUT_SQL = "SELECT tx_id, idx, owner, amount FROM ledger_utxo WHERE tx_id = $1 AND idx = $2"
TX_SQL = """SELECT tx_id, seq, kind, body, witnesses, n_outputs, value_in, value_out, reference, accepted_at
              FROM ledger_tx WHERE tx_id = $1"""
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    tx_id: bytes
    code: str
    index: int | None = None            # the offending input, for input_* codes
    seq: int | None = None              # position in the ledger's log (created / exists)
    accepted_at: datetime | None = None

    @property
    def accepted(self) -> bool:
        return self.code in ACCEPTED


@dataclass(frozen=True)
class BatchPlan:
    unique: list[int]            # batch positions of first occurrences
    duplicate_of: dict[int, int]  # later copy -> first occurrence
    waves: list[list[int]]       # positions (into the batch), each wave free of shared outpoints


def plan_batch(batch: Sequence[ValidTx]) -> BatchPlan:
    """Deduplicate by tx id and split into conflict-free waves, keeping batch order (pure)."""
    first: dict[bytes, int] = {}
    duplicate_of: dict[int, int] = {}
    wave_of_outpoint: dict[tuple[bytes, int], int] = {}
    wave_of_tx: dict[bytes, int] = {}
    waves: list[list[int]] = []
    for pos, vtx in enumerate(batch):
        if vtx.tx_id in first:
            duplicate_of[pos] = first[vtx.tx_id]
            continue
        first[vtx.tx_id] = pos
        wave = 0
        for i in vtx.body.inputs:
            outpoint = (i.tx_id, i.index)
            if outpoint in wave_of_outpoint:   # a conflicting spend earlier in the batch
                wave = max(wave, wave_of_outpoint[outpoint] + 1)
            if i.tx_id in wave_of_tx:          # spends an output created earlier in the batch
                wave = max(wave, wave_of_tx[i.tx_id] + 1)
        for i in vtx.body.inputs:
            wave_of_outpoint[(i.tx_id, i.index)] = wave
        wave_of_tx[vtx.tx_id] = wave
        if wave == len(waves):
            waves.append([])
        waves[wave].append(pos)
    return BatchPlan(list(first.values()), duplicate_of, waves)


def _arguments(txs: Sequence[ValidTx]) -> tuple:
    tx_ids, kinds, bodies, witnesses, n_in, n_out, v_in, v_out, refs = ([] for _ in range(9))
    in_tx, in_prev, in_idx, in_owner, in_amount = ([] for _ in range(5))
    out_tx, out_idx, out_owner, out_amount = ([] for _ in range(4))
    for no, vtx in enumerate(txs, start=1):
        body = vtx.body
        tx_ids.append(vtx.tx_id)
        kinds.append(KINDS[body.kind].code)
        bodies.append(vtx.body_bytes)
        witnesses.append(b"".join(w.key + w.signature for w in vtx.witnesses))
        n_in.append(len(body.inputs))
        n_out.append(len(body.outputs))
        value_in = 0
        for i in body.inputs:
            in_tx.append(no)
            in_prev.append(i.tx_id)
            in_idx.append(i.index)
            in_owner.append(i.owner)
            in_amount.append(i.amount)
            value_in += i.amount
        value_out = 0
        for idx, o in enumerate(body.outputs):
            out_tx.append(no)
            out_idx.append(idx)
            out_owner.append(o.owner)
            out_amount.append(o.amount)
            value_out += o.amount
        v_in.append(value_in)
        v_out.append(value_out)
        refs.append(body.reference)
    return (tx_ids, kinds, bodies, witnesses, n_in, n_out, v_in, v_out, refs,
            in_tx, in_prev, in_idx, in_owner, in_amount, out_tx, out_idx, out_owner, out_amount)


def _subset(args: tuple, keep: list[int]) -> tuple:
    """The arguments of transactions ``keep`` (1-based numbers in ``args``), renumbered from 1."""
    renumber = {old: new for new, old in enumerate(keep, start=1)}
    per_tx = tuple([column[old - 1] for old in keep] for column in args[:9])
    inputs = [n for n, tx_no in enumerate(args[9]) if tx_no in renumber]
    outputs = [n for n, tx_no in enumerate(args[14]) if tx_no in renumber]
    per_input = ([renumber[args[9][n]] for n in inputs],) + tuple([c[n] for n in inputs] for c in args[10:14])
    per_output = ([renumber[args[14][n]] for n in outputs],) + tuple([c[n] for n in outputs] for c in args[15:18])
    return per_tx + per_input + per_output


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch reduced to what the database needs: per wave, the arrays ``ledger_apply`` takes.

    Built by ``prepare`` (pure, e.g. in the process that verified the signatures); pickles as a
    few flat lists, so handing a batch between processes costs little.
    """
    tx_ids: list[bytes]
    duplicate_of: dict[int, int]
    waves: list[tuple[list[int], tuple]]   # (batch positions, ledger_apply arguments)

    def __len__(self) -> int:
        return len(self.tx_ids)


def prepare(batch: Sequence[ValidTx]) -> PreparedBatch:
    plan = plan_batch(batch)
    waves = [(wave, _arguments([batch[p] for p in wave])) for wave in plan.waves]
    return PreparedBatch([v.tx_id for v in batch], plan.duplicate_of, waves)


class UTXOEngine:
    """Apply batches and read unspent outputs of one ledger database."""

    def __init__(self, pool: asyncpg.Pool, *, retries_max: int = 5) -> None:
        self.pool = pool
        self.retries_max = retries_max

    async def apply(self, batch: Sequence[ValidTx] | PreparedBatch,
                    conn: asyncpg.Connection | None = None) -> list[ApplyResult]:
        """Apply ``batch`` (validated transactions, or a PreparedBatch of them); one result each, in order.

        With ``conn``, runs inside the caller's open transaction (the caller adds its own rows,
        e.g. an outbox, and owns commit and retry). Without, opens its own transaction and
        retries it on deadlock or serialization failure (bounded).
        """
        if not len(batch):
            return []
        prepared = batch if isinstance(batch, PreparedBatch) else prepare(batch)
        if conn is not None:
            return await self._apply_prepared(conn, prepared)
        for attempt in range(self.retries_max + 1):
            try:
                async with self.pool.acquire() as own, own.transaction():
                    return await self._apply_prepared(own, prepared)
            except RETRYABLE as exc:
                if attempt == self.retries_max:
                    raise Unavailable("the ledger is busy; retry", code="ledger_busy") from exc
                log.warning("batch of %d retried after %s", len(prepared), type(exc).__name__)
                await asyncio.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
        raise AssertionError("unreachable")

    async def _apply_prepared(self, conn: asyncpg.Connection, batch: PreparedBatch) -> list[ApplyResult]:
        results: list[ApplyResult | None] = [None] * len(batch)
        for positions, args in batch.waves:
            numbers = list(range(1, len(positions) + 1))   # 1-based numbers within this wave's args
            for _ in range(CONTENDED_RETRIES_MAX + 1):
                rows = await conn.fetch(APPLY_SQL, *args)
                assert len(rows) == len(numbers), f"ledger_apply answered {len(rows)} rows for {len(numbers)}"
                contended = []
                for row in rows:
                    n = row["tx_no"] - 1
                    pos = positions[numbers[n] - 1]
                    results[pos] = ApplyResult(batch.tx_ids[pos], row["code"], row["bad_input"], row["seq"],
                                               row["accepted_at"])
                    if row["code"] == INPUT_CONTENDED:
                        contended.append(row["tx_no"])
                if not contended:
                    break
                contended.sort()
                args = _subset(args, contended)
                numbers = [numbers[n - 1] for n in contended]
        for pos, first in batch.duplicate_of.items():
            original = results[first]
            assert original is not None
            code = EXISTS if original.accepted else original.code
            results[pos] = ApplyResult(original.tx_id, code, original.index, original.seq, original.accepted_at)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    async def balance(self, owner: bytes) -> int:
        return await self.pool.fetchval(BALANCE_SQL, owner)

    async def unspent(self, owner: bytes, *, limit: int = 100,
                      after: tuple[bytes, int] = (b"", -1)) -> list[asyncpg.Record]:
        """Unspent outputs of ``owner`` in (tx_id, idx) order, ``limit`` at a time after ``after``."""
        return await self.pool.fetch(UNSPENT_SQL, owner, after[0], after[1], limit)

    async def output(self, tx_id: bytes, idx: int) -> asyncpg.Record | None:
        return await self.pool.fetchrow(OUTPUT_SQL, tx_id, idx)

    async def transaction(self, tx_id: bytes) -> asyncpg.Record | None:
        return await self.pool.fetchrow(TX_SQL, tx_id)
