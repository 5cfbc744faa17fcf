"""Decoding and validating the items of a batch submission (signatures included), off the event loop.

``validate_items`` is pure: each item (one signed transaction, parsed or as JSON bytes) becomes a
``ValidTx`` or the RFC 9457 problem it was refused with. ``BatchVerifier`` runs it inline, or — with
``verify_processes`` > 0 — in a per-worker ProcessPoolExecutor fed in chunks of
``verify_chunk_items`` (DESIGN section 9: one task per signature costs more in IPC than the
verification itself). Ed25519 verification holds the GIL, so only processes take it off the loop.
Single transfers stay inline: one signature is cheaper to verify than to ship to another process.
"""
from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

import orjson

from shared.errors import CBDCError
from shared.fields import invalid
from shared.tx import signed_from_bytes, signed_from_json
from shared.validation import LedgerRules, ValidTx, validate

INLINE_ITEMS_MAX = 16           # fewer items than this are verified inline
Verdict = ValidTx | dict[str, Any]   # the valid transaction, or the problem that refused it


def validate_items(items: Sequence[Any], rules: LedgerRules, now: int, kinds: tuple[str, ...]) -> list[Verdict]:
    """Each item is one signed transaction: its JSON bytes (as handed to a pool process), or the
    value already parsed from the request body (inline: no second encode and parse)."""
    out: list[Verdict] = []
    for item in items:
        try:
            stx = signed_from_bytes(item) if isinstance(item, bytes) else signed_from_json(item)
            if stx.body.kind not in kinds:
                raise invalid("kind", f"this endpoint takes {' or '.join(kinds)} transactions", "kind_not_allowed")
            out.append(validate(stx, rules, now))
        except CBDCError as exc:
            out.append(exc.to_problem())
    return out


def _warm() -> int:
    return 0


class BatchVerifier:
    def __init__(self, processes: int, chunk_items: int) -> None:
        assert processes >= 0 and chunk_items >= 1
        self.chunk_items = chunk_items
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None
        if processes:
            # spawn: never fork a process that holds an event loop and database connections
            self._executor = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))

    async def start(self) -> None:
        """Start the pool's processes now (not on the first request)."""
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(self._executor, _warm) for _ in range(self.processes)))

    async def validate(self, items: Sequence[Any], rules: LedgerRules, now: int,
                       kinds: tuple[str, ...]) -> list[Verdict]:
        """``items``: the batch's transactions as parsed from the body."""
        if self._executor is None or len(items) < INLINE_ITEMS_MAX:
            return validate_items(items, rules, now, kinds)
        items = [orjson.dumps(item) for item in items]   # bytes pickle far cheaper than nested dicts
        loop = asyncio.get_running_loop()
        parts_count = max(self.processes, -(-len(items) // self.chunk_items))   # spread over every process
        size = -(-len(items) // parts_count)
        parts = await asyncio.gather(*(
            loop.run_in_executor(self._executor, validate_items, items[i:i + size], rules, now, kinds)
            for i in range(0, len(items), size)))
        return [v for part in parts for v in part]

    def close(self) -> None:
        """Stop the pool without blocking the event loop on joins (its processes exit on their own
        once told; a blocking join also hangs where gevent has patched threading, e.g. locust)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
