"""Properties of the encoding and the validation core, checked on random transactions (hypothesis).

300 examples per property by default (the whole file runs in a few seconds); for a long run:

    CBDC_PROPERTY_EXAMPLES=10000 .venv/bin/python -m pytest tests/test_validation_properties.py
"""
from __future__ import annotations

import os
from dataclasses import replace

import orjson
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from shared.amounts import AMOUNT_MAX
from shared.crypto import PrivateKey
from shared.errors import ValidationFailed
from shared.tx import (KINDS, LEDGER_ID_RE, Input, Output, Payee, SignedTx, Tx, Witness, decode_body, encode_body,
                       signed_from_bytes, signed_from_json, signed_to_json)
from shared.validation import LedgerRules, sign, validate

EXAMPLES = int(os.environ.get("CBDC_PROPERTY_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LEDGER = "bank-p"
NOW = 1_700_000_000
MINT = PrivateKey(bytes([0x40]) * 32)
KEYS = [PrivateKey(bytes([0x41 + n]) * 32) for n in range(5)]
PUBLIC = [k.public_key for k in KEYS]
BY_PUBLIC = {k.public_key: k for k in KEYS}
RULES = LedgerRules(LEDGER, mint_authority=MINT.public_key)

# ---------------------------------------------------------------------------------------------
# strategies

_LOWER = "abcdefghijklmnopqrstuvwxyz"
# ledger ids built to match LEDGER_ID_RE (checked in test_ledger_id_strategy_matches_the_pattern)
bank_ledgers = st.builds(lambda a, b, c: a + b + c, st.sampled_from(_LOWER),
                         st.text(_LOWER + "0123456789-", max_size=29), st.sampled_from(_LOWER + "0123456789"))
ledger_ids = st.just("cb") | bank_ledgers
other_bank_ledgers = bank_ledgers.filter(lambda s: s not in ("cb", LEDGER))
references = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=64)  # <= 256 UTF-8 bytes
expiries = st.one_of(st.just(0), st.integers(NOW, 2**64 - 1))
outpoints = st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 65535))


@st.composite
def split(draw, total: int, n: int) -> list[int]:
    """``total`` as ``n`` positive parts (requires total >= n)."""
    if n == 1:
        return [total]
    if total - 1 < 1000 * n:
        cuts = draw(st.lists(st.integers(1, total - 1), min_size=n - 1, max_size=n - 1, unique=True))
    else:
        cuts = draw(st.lists(st.one_of(st.integers(1, 1000), st.integers(1, total - 1)),
                             min_size=n - 1, max_size=n - 1, unique=True))
    points = [0, *sorted(cuts), total]
    return [b - a for a, b in zip(points, points[1:])]


@st.composite
def signed_payments(draw, kinds=("transfer", "outbound")):
    """A valid signed transfer (or outbound): 1-5 inputs from 1-3 owners, 1-5 outputs, balanced."""
    kind = draw(st.sampled_from(kinds))
    owners = draw(st.lists(st.sampled_from(PUBLIC), min_size=1, max_size=3, unique=True))
    n_in = draw(st.integers(1, 5))
    input_owners = draw(st.lists(st.sampled_from(owners), min_size=n_in, max_size=n_in))
    n_out = draw(st.integers(0 if kind == "outbound" else 1, 5))
    n_parts = n_out + (kind == "outbound")
    total = draw(st.one_of(st.integers(max(n_in, n_parts), 10_000),
                           st.integers(max(n_in, n_parts), AMOUNT_MAX)))
    in_amounts = draw(split(total, n_in))
    out_amounts = draw(split(total, n_parts))
    points = draw(st.lists(outpoints, min_size=n_in, max_size=n_in, unique=True))
    inputs = tuple(Input(tx_id, index, owner, amount)
                   for (tx_id, index), owner, amount in zip(points, input_owners, in_amounts))
    outputs = tuple(Output(draw(st.sampled_from(PUBLIC)), amount) for amount in out_amounts[:n_out])
    payee = None
    if kind == "outbound":
        payee = Payee(draw(other_bank_ledgers), draw(st.sampled_from(PUBLIC)), out_amounts[-1])
    body = Tx(LEDGER, kind, inputs, outputs, payee, draw(references), draw(expiries))
    signers = [BY_PUBLIC[o] for o in dict.fromkeys(input_owners)]
    return sign(body, *draw(st.permutations(signers)))


@st.composite
def any_bodies(draw):
    """Bodies whose fields fit the encoding (not necessarily valid ones)."""
    u64 = st.integers(0, 2**64 - 1)
    inputs = draw(st.lists(st.builds(Input, st.binary(min_size=32, max_size=32), st.integers(0, 65535),
                                     st.binary(min_size=32, max_size=32), u64), max_size=4))
    outputs = draw(st.lists(st.builds(Output, st.binary(min_size=32, max_size=32), u64), max_size=4))
    payee = draw(st.none() | st.builds(Payee, ledger_ids, st.binary(min_size=32, max_size=32), u64))
    reference = draw(st.text(max_size=80))
    return Tx(draw(ledger_ids), draw(st.sampled_from(sorted(KINDS))), tuple(inputs), tuple(outputs), payee,
              reference, draw(st.integers(0, 2**64 - 1)))


# ---------------------------------------------------------------------------------------------
# (a) round trips


@SETTINGS
@given(ledger_ids)
def test_ledger_id_strategy_matches_the_pattern(ledger):
    assert LEDGER_ID_RE.fullmatch(ledger)


@SETTINGS
@given(any_bodies())
def test_encode_decode_round_trip(body):
    data = encode_body(body)
    assert decode_body(data) == body
    assert encode_body(decode_body(data)) == data


@SETTINGS
@given(any_bodies(), st.lists(st.tuples(st.binary(min_size=32, max_size=32),
                                        st.binary(min_size=64, max_size=64)), max_size=3))
def test_json_round_trip(body, witnesses):
    stx = SignedTx(body, tuple(Witness(k, s) for k, s in witnesses))
    obj = signed_to_json(stx)
    assert signed_from_json(obj) == stx
    assert signed_from_bytes(orjson.dumps(obj)) == stx
    assert signed_to_json(signed_from_json(obj)) == obj


@SETTINGS
@given(signed_payments())
def test_random_payments_are_valid(stx):
    valid = validate(stx, RULES, NOW)
    assert valid.body_bytes == encode_body(stx.body)
    assert decode_body(valid.body_bytes) == stx.body
    assert signed_from_bytes(orjson.dumps(signed_to_json(stx))) == stx


# ---------------------------------------------------------------------------------------------
# (b) no change to a signed field leaves the transaction valid


def _pick(data, items):
    return data.draw(st.integers(0, len(items) - 1))


def _set(items, n, **changes):
    items = list(items)
    items[n] = replace(items[n], **changes)
    return tuple(items)


def _different(data, strategy, old):
    return data.draw(strategy.filter(lambda v: v != old))


def m_ledger(data, tx):
    return replace(tx, ledger=_different(data, ledger_ids, tx.ledger))


def m_kind(data, tx):
    return replace(tx, kind=_different(data, st.sampled_from(sorted(KINDS)), tx.kind))


def m_version(data, tx):
    return replace(tx, version=_different(data, st.integers(0, 255), tx.version))


def m_input_tx_id(data, tx):
    n = _pick(data, tx.inputs)
    tx_id = bytearray(tx.inputs[n].tx_id)
    tx_id[data.draw(st.integers(0, 31))] ^= data.draw(st.integers(1, 255))
    return replace(tx, inputs=_set(tx.inputs, n, tx_id=bytes(tx_id)))


def m_input_index(data, tx):
    n = _pick(data, tx.inputs)
    return replace(tx, inputs=_set(tx.inputs, n, index=_different(data, st.integers(0, 65535),
                                                                 tx.inputs[n].index)))


def m_input_owner(data, tx):
    n = _pick(data, tx.inputs)
    owner = _different(data, st.sampled_from(PUBLIC + [MINT.public_key]) | st.binary(min_size=32, max_size=32),
                       tx.inputs[n].owner)
    return replace(tx, inputs=_set(tx.inputs, n, owner=owner))


def m_input_amount(data, tx):
    n = _pick(data, tx.inputs)
    return replace(tx, inputs=_set(tx.inputs, n, amount=_different(data, st.integers(1, AMOUNT_MAX),
                                                                   tx.inputs[n].amount)))


def m_output_owner(data, tx):
    assume(tx.outputs)
    n = _pick(data, tx.outputs)
    owner = _different(data, st.sampled_from(PUBLIC + [MINT.public_key]), tx.outputs[n].owner)
    return replace(tx, outputs=_set(tx.outputs, n, owner=owner))


def m_output_amount(data, tx):
    assume(tx.outputs)
    n = _pick(data, tx.outputs)
    return replace(tx, outputs=_set(tx.outputs, n, amount=_different(data, st.integers(1, AMOUNT_MAX),
                                                                     tx.outputs[n].amount)))


def m_drop_input(data, tx):
    n = _pick(data, tx.inputs)
    return replace(tx, inputs=tx.inputs[:n] + tx.inputs[n + 1:])


def m_drop_output(data, tx):
    assume(tx.outputs)
    n = _pick(data, tx.outputs)
    return replace(tx, outputs=tx.outputs[:n] + tx.outputs[n + 1:])


def m_add_output(data, tx):
    return replace(tx, outputs=tx.outputs + (Output(data.draw(st.sampled_from(PUBLIC)),
                                                    data.draw(st.integers(1, AMOUNT_MAX))),))


def m_swap_outputs(data, tx):
    assume(len(set(tx.outputs)) > 1)
    n = _pick(data, tx.outputs)
    m = data.draw(st.integers(0, len(tx.outputs) - 1).filter(lambda m: tx.outputs[m] != tx.outputs[n]))
    outputs = list(tx.outputs)
    outputs[n], outputs[m] = outputs[m], outputs[n]
    return replace(tx, outputs=tuple(outputs))


def m_payee_ledger(data, tx):
    if tx.payee is None:
        return replace(tx, payee=Payee(data.draw(other_bank_ledgers), PUBLIC[0], 1))
    return replace(tx, payee=replace(tx.payee, ledger=_different(data, ledger_ids, tx.payee.ledger)))


def m_payee_owner(data, tx):
    if tx.payee is None:
        return replace(tx, payee=Payee("bank-x", data.draw(st.sampled_from(PUBLIC)), 1))
    owner = _different(data, st.sampled_from(PUBLIC + [MINT.public_key]), tx.payee.owner)
    return replace(tx, payee=replace(tx.payee, owner=owner))


def m_payee_amount(data, tx):
    if tx.payee is None:
        return replace(tx, payee=Payee("bank-x", PUBLIC[0], data.draw(st.integers(1, AMOUNT_MAX))))
    return replace(tx, payee=replace(tx.payee, amount=_different(data, st.integers(1, AMOUNT_MAX),
                                                                 tx.payee.amount)))


def m_payee_removed(data, tx):
    assume(tx.payee is not None)
    return replace(tx, payee=None)


def m_reference(data, tx):
    return replace(tx, reference=_different(data, references, tx.reference))


def m_expiry(data, tx):
    return replace(tx, expiry=_different(data, st.one_of(expiries, st.integers(0, NOW)), tx.expiry))


MUTATIONS = [m_input_tx_id, m_input_index, m_input_owner, m_input_amount, m_output_owner, m_output_amount,
             m_reference, m_expiry, m_payee_ledger, m_payee_owner, m_payee_amount, m_payee_removed,
             m_drop_input, m_drop_output, m_add_output, m_swap_outputs, m_ledger, m_kind, m_version]


@SETTINGS
@given(signed_payments(), st.sampled_from(MUTATIONS), st.data())
def test_no_mutation_of_a_signed_field_validates(stx, mutate, data):
    validate(stx, RULES, NOW)
    mutated = mutate(data, stx.body)
    assert mutated != stx.body
    # the canonical encoding is injective: the change reaches the signed bytes
    assert encode_body(mutated) != encode_body(stx.body)
    with pytest.raises(ValidationFailed) as info:
        validate(SignedTx(mutated, stx.witnesses), RULES, NOW)
    event(f"{mutate.__name__}: {info.value.code}")


@SETTINGS
@given(signed_payments())
def test_witnesses_are_bound_to_their_transaction(stx):
    # the same witnesses for the same body on another ledger id, or re-ordered, or short of one
    other = replace(stx.body, ledger="bank-q")
    with pytest.raises(ValidationFailed):
        validate(SignedTx(other, stx.witnesses), replace(RULES, ledger="bank-q"), NOW)
    with pytest.raises(ValidationFailed):
        validate(SignedTx(stx.body, stx.witnesses[1:]), RULES, NOW)
    validate(SignedTx(stx.body, stx.witnesses[::-1]), RULES, NOW)  # order of witnesses is free


# ---------------------------------------------------------------------------------------------
# (c) conservation

amounts_any = st.one_of(st.integers(1, 1000), st.integers(1, AMOUNT_MAX), st.integers(-3, 0),
                        st.integers(AMOUNT_MAX - 3, AMOUNT_MAX + 3))


@st.composite
def amount_lists(draw):
    """(input amounts, output amounts): balanced, nearly balanced, or independent."""
    mode = draw(st.sampled_from(["balanced", "perturbed", "independent"]))
    if mode == "independent":
        return (draw(st.lists(amounts_any, min_size=1, max_size=5)),
                draw(st.lists(amounts_any, min_size=1, max_size=5)))
    n_in, n_out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    total = draw(st.integers(max(n_in, n_out), AMOUNT_MAX))
    ins, outs = draw(split(total, n_in)), draw(split(total, n_out))
    if mode == "perturbed":
        n = draw(st.integers(0, n_out - 1))
        outs[n] += draw(st.integers(-3, 3))
    return ins, outs


def _transfer(ins, outs) -> SignedTx:
    inputs = tuple(Input(bytes([n]) * 32, n, PUBLIC[n % 2], a) for n, a in enumerate(ins))
    outputs = tuple(Output(PUBLIC[2], a) for a in outs)
    body = Tx(LEDGER, "transfer", inputs, outputs)
    if all(0 <= a < 2**64 for a in (*ins, *outs)):
        return sign(body, *(KEYS[:min(2, len(ins))]))
    return SignedTx(body)  # not encodable: some amount is negative, so it must fail anyway


@SETTINGS
@given(amount_lists())
def test_conservation(amounts):
    ins, outs = amounts
    in_range = all(type(a) is int and 1 <= a <= AMOUNT_MAX for a in (*ins, *outs))
    expected = in_range and sum(ins) == sum(outs) and sum(ins) <= AMOUNT_MAX
    stx = _transfer(ins, outs)
    try:
        valid = validate(stx, RULES, NOW)
    except ValidationFailed as err:
        assert not expected, f"refused a balanced transfer: {err!r}"
        event(err.code)
        assert err.code in {"amount_not_positive", "amount_too_large", "amount_overflow",
                            "amounts_must_balance"}, repr(err)
    else:
        assert expected, "accepted a transfer that does not conserve value"
        event("valid")
        assert valid.value_in == valid.value_out == sum(ins)


# ---------------------------------------------------------------------------------------------
# (d) overflow

near_max = st.integers(AMOUNT_MAX - 10**9, AMOUNT_MAX + 10)


@st.composite
def overflowing(draw):
    """Amounts near AMOUNT_MAX on both sides, at least one side with a sum above it."""
    big_side = draw(st.lists(near_max, min_size=2, max_size=5))
    mode = draw(st.sampled_from(["mirror", "inputs", "outputs"]))
    if mode == "mirror":
        return big_side, list(big_side), None
    other = draw(st.lists(near_max, min_size=1, max_size=5))
    payee = draw(st.none() | near_max)
    return (big_side, other, payee) if mode == "inputs" else (other, big_side, payee)


@SETTINGS
@given(overflowing())
def test_overflow_is_never_accepted(amounts):
    ins, outs, payee_amount = amounts
    assert sum(ins) > AMOUNT_MAX or sum(outs) > AMOUNT_MAX
    inputs = tuple(Input(bytes([n]) * 32, 0, PUBLIC[0], a) for n, a in enumerate(ins))
    outputs = tuple(Output(PUBLIC[1], a) for a in outs)
    payee = None if payee_amount is None else Payee("bank-x", PUBLIC[2], payee_amount)
    body = Tx(LEDGER, "transfer" if payee is None else "outbound", inputs, outputs, payee)
    with pytest.raises(ValidationFailed) as info:
        validate(sign(body, KEYS[0]), RULES, NOW)
    assert info.value.code in {"amount_overflow", "amount_too_large"}, repr(info.value)
    event(info.value.code)
    if all(a <= AMOUNT_MAX for a in (*ins, *outs, payee_amount or 0)):
        assert info.value.code == "amount_overflow"
