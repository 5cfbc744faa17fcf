"""Coin selection: a pure, seeded function. Examples for each rule, then hypothesis properties."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.coins import Coin, select_coins
from wallet.errors import CoinSelectionError


def coins(*amounts: int) -> list[Coin]:
    return [Coin(bytes([n]) * 32, n % 3, amount) for n, amount in enumerate(amounts)]


def amounts(selection) -> list[int]:
    return sorted(c.amount for c in selection.coins)


def test_exact_match_wins():
    selection = select_coins(coins(100, 700, 500, 2000), 500)
    assert amounts(selection) == [500] and selection.change == 0


def test_smallest_single_coin_that_covers():
    selection = select_coins(coins(100, 700, 900, 2000), 600)
    assert amounts(selection) == [700] and selection.change == 100


def test_largest_first_with_the_last_coin_swapped_for_the_smallest_that_covers():
    selection = select_coins(coins(100, 200, 300, 1000, 1000), 1150)
    assert amounts(selection) == [200, 1000] and selection.change == 50


def test_reserved_coins_are_never_selected():
    wallet = coins(500, 700)
    selection = select_coins(wallet, 500, reserved={wallet[0].outpoint})
    assert amounts(selection) == [700]


def test_insufficient_funds_and_reserved_funds_are_told_apart():
    wallet = coins(500, 700)
    with pytest.raises(CoinSelectionError) as caught:
        select_coins(wallet, 1201)
    assert caught.value.code == "insufficient_funds" and "12.00 available" in caught.value.detail
    with pytest.raises(CoinSelectionError) as caught:
        select_coins(wallet, 1000, reserved={wallet[1].outpoint})
    assert caught.value.code == "funds_reserved" and caught.value.extra["reserved"] == 700


def test_too_many_inputs_needed():
    with pytest.raises(CoinSelectionError) as caught:
        select_coins(coins(*[10] * 10), 50, inputs_max=4)
    assert caught.value.code == "too_many_inputs_needed"
    assert len(select_coins(coins(*[10] * 10), 40, inputs_max=4).coins) == 4


@pytest.mark.parametrize("amount", [0, -1, 10**15 + 1, True])
def test_amount_must_be_valid(amount):
    with pytest.raises(CoinSelectionError) as caught:
        select_coins(coins(100), amount)
    assert caught.value.code == "amount_invalid"


def test_the_seed_breaks_ties_only():
    wallet = coins(*[500] * 8)
    picks = {select_coins(wallet, 500, seed=seed).coins[0].outpoint for seed in range(40)}
    assert len(picks) > 1  # ties spread over equal coins
    assert select_coins(wallet, 500, seed=7) == select_coins(list(reversed(wallet)), 500, seed=7)


# --- properties ----------------------------------------------------------------------------------

coin_lists = st.lists(st.builds(Coin, st.binary(min_size=32, max_size=32).map(lambda b: b[:2] + bytes(30)),
                                st.integers(0, 3), st.integers(1, 5000)), max_size=25)


@st.composite
def cases(draw):
    wallet = draw(coin_lists)
    reserved = {c.outpoint for c in wallet if draw(st.booleans()) and draw(st.booleans())}
    amount = draw(st.integers(1, 1 + sum(c.amount for c in wallet)))
    return wallet, reserved, amount, draw(st.integers(0, 2**32)), draw(st.integers(1, 8))


def unique(wallet):
    return {c.outpoint: c for c in reversed(wallet)}  # first occurrence wins


@settings(max_examples=400, deadline=None)
@given(cases(), st.randoms(use_true_random=False))
def test_selection_properties(case, rnd):
    wallet, reserved, amount, seed, inputs_max = case
    free = [c for c in unique(wallet).values() if c.outpoint not in reserved]
    try:
        selection = select_coins(wallet, amount, reserved=reserved, seed=seed, inputs_max=inputs_max)
    except CoinSelectionError as exc:
        free_total = sum(c.amount for c in free)
        total = sum(c.amount for c in unique(wallet).values())
        if exc.code == "insufficient_funds":
            assert total < amount
        elif exc.code == "funds_reserved":
            assert free_total < amount <= total
        else:
            assert exc.code == "too_many_inputs_needed" and free_total >= amount
            assert sum(sorted((c.amount for c in free), reverse=True)[:inputs_max]) < amount
        return
    chosen = selection.coins
    # never reserved, no duplicates, only the wallet's coins, enough, bounded
    assert all(c.outpoint not in reserved for c in chosen)
    assert len({c.outpoint for c in chosen}) == len(chosen) and set(chosen) <= set(free)
    assert selection.total >= amount and selection.change == selection.total - amount
    assert 1 <= len(chosen) <= inputs_max
    # fewest inputs: no smaller number of free coins covers the amount
    largest = sorted((c.amount for c in free), reverse=True)
    assert sum(largest[:len(chosen) - 1]) < amount
    if any(c.amount == amount for c in free):
        assert selection.change == 0
    # deterministic, whatever the order the coins arrive in
    shuffled = list(wallet)
    rnd.shuffle(shuffled)
    if len(unique(shuffled)) == len(unique(wallet)) and all(
            unique(shuffled)[k] == v for k, v in unique(wallet).items()):
        assert select_coins(shuffled, amount, reserved=reserved, seed=seed, inputs_max=inputs_max) == selection


def test_single_coin_choice_is_the_smallest_that_covers_exhaustively():
    for values in itertools.product([100, 250, 400], repeat=3):
        wallet = coins(*values)
        for amount in (99, 100, 101, 250, 300, 400):
            if sum(values) < amount:
                continue
            selection = select_coins(wallet, amount)
            covering = [v for v in values if v >= amount]
            if covering:
                assert amounts(selection) == [min(covering)]
