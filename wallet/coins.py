"""Coin selection: a pure function with seeded randomness (after Electrum's ``coinchooser.py``).

``select_coins(coins, amount, reserved=..., seed=..., inputs_max=...)`` picks unspent outputs
worth at least ``amount``. It never selects a reserved outpoint (an input of a payment still
pending in the journal) and prefers fewer inputs, in this order:

1. exact match: one coin worth exactly ``amount`` (no change output at all);
2. the smallest single coin worth more than ``amount``;
3. largest-first accumulation: the fewest coins that cover ``amount`` (at most ``inputs_max``),
   with the last one swapped for the smallest coin that still covers, to keep change small.

The seed only breaks ties between coins of equal value (which of two 5.00 coins is spent), so
equal inputs give equal results, whatever order the coins arrive in. Failures are distinct:

    insufficient_funds        the unspent coins, reserved or not, are worth less than ``amount``
    funds_reserved            enough coins, but some are held by pending payments: wait for them
    too_many_inputs_needed    covering ``amount`` takes more than ``inputs_max`` coins
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable

from shared.amounts import AMOUNT_MAX, format_major, is_amount
from wallet.errors import CoinSelectionError

INPUTS_MAX = 64  # the ledger's default LedgerRules.inputs_max

Outpoint = tuple[bytes, int]


@dataclass(frozen=True, slots=True)
class Coin:
    """An unspent output the wallet may spend: its outpoint and amount (minor units)."""
    tx_id: bytes
    index: int
    amount: int

    @property
    def outpoint(self) -> Outpoint:
        return (self.tx_id, self.index)


@dataclass(frozen=True, slots=True)
class Selection:
    coins: tuple[Coin, ...]
    amount: int

    @property
    def total(self) -> int:
        return sum(c.amount for c in self.coins)

    @property
    def change(self) -> int:
        return self.total - self.amount


def select_coins(coins: Iterable[Coin], amount: int, *, reserved: Iterable[Outpoint] = (), seed: int = 0,
                 inputs_max: int = INPUTS_MAX) -> Selection:
    """Choose coins for ``amount``; raise CoinSelectionError with a stable code if impossible."""
    if not is_amount(amount):
        raise CoinSelectionError(f"amount must be 1..{AMOUNT_MAX} minor units", code="amount_invalid")
    if inputs_max < 1:
        raise ValueError("inputs_max must be at least 1")
    every = _unique(coins)
    reserved = set(reserved)
    free = _ordered([c for c in every if c.outpoint not in reserved], seed)
    _check_funds(every, free, amount)
    chosen = _exact(free, amount) or _smallest_single(free, amount) or _largest_first(free, amount, inputs_max)
    return Selection(chosen, amount)


def _unique(coins: Iterable[Coin]) -> list[Coin]:
    by_outpoint: dict[Outpoint, Coin] = {}
    for coin in coins:
        if not is_amount(coin.amount):
            raise ValueError(f"a coin's amount must be 1..{AMOUNT_MAX}: {coin!r}")
        by_outpoint.setdefault(coin.outpoint, coin)
    return list(by_outpoint.values())


def _ordered(coins: list[Coin], seed: int) -> list[Coin]:
    """Largest first; equal amounts in an order fixed by the seed, not by the input order."""
    coins = sorted(coins, key=lambda c: c.outpoint)
    random.Random(seed).shuffle(coins)
    coins.sort(key=lambda c: -c.amount)  # stable: ties keep the seeded order
    return coins


def _check_funds(every: list[Coin], free: list[Coin], amount: int) -> None:
    free_total = sum(c.amount for c in free)
    if free_total >= amount:
        return
    total = sum(c.amount for c in every)
    if total >= amount:
        raise CoinSelectionError(
            f"{format_major(total - free_total)} is held by pending payments; {format_major(free_total)} is "
            f"free now, {format_major(amount)} is needed (wait for the pending payments to finish)",
            code="funds_reserved", extra={"available": free_total, "reserved": total - free_total})
    raise CoinSelectionError(f"insufficient funds: {format_major(total)} available, {format_major(amount)} needed",
                             code="insufficient_funds", extra={"available": free_total, "reserved": total - free_total})


def _exact(free: list[Coin], amount: int) -> tuple[Coin, ...]:
    return next(((c,) for c in free if c.amount == amount), ())


def _smallest_single(free: list[Coin], amount: int) -> tuple[Coin, ...]:
    covering = [c for c in free if c.amount >= amount]  # largest first, so the last is the smallest
    return (covering[-1],) if covering else ()


def _largest_first(free: list[Coin], amount: int, inputs_max: int) -> tuple[Coin, ...]:
    total = 0
    for n, coin in enumerate(free):
        total += coin.amount
        if total >= amount:
            break
    count = n + 1
    if count > inputs_max:
        best = sum(c.amount for c in free[:inputs_max])
        raise CoinSelectionError(
            f"paying {format_major(amount)} needs more than {inputs_max} coins (the largest {inputs_max} are worth "
            f"{format_major(best)}); pay in parts, or consolidate coins first", code="too_many_inputs_needed")
    head = free[:count - 1]
    need = amount - sum(c.amount for c in head)
    last = [c for c in free[count - 1:] if c.amount >= need][-1]  # the smallest that still covers
    return (*head, last)
