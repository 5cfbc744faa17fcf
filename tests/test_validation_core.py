"""The pure validation core: one valid baseline transaction, one mutation per test.

Every test starts from BASE (a valid 2-input/2-output transfer on the tier-2 ledger ``bank-t``,
signed by the single owner of its inputs), changes one thing, and checks the exact ``code``,
``index`` and ``field`` of the ValidationFailed that ``validate`` raises. Signature checks come
last in the core, so a structural defect is reported even with the baseline's (now stale)
witnesses; where a test must show that a tx *passes*, it is re-signed.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared import crypto, validation
from shared.amounts import AMOUNT_MAX
from shared.crypto import PrivateKey
from shared.errors import Unprocessable, ValidationFailed
from shared.tx import Input, Output, Payee, SignedTx, Tx, Witness, encode_body, tx_id_of
from shared.validation import LedgerRules, sign, validate

AUTH = PrivateKey(bytes([1]) * 32)     # the bank's mint authority
ALICE = PrivateKey(bytes([2]) * 32)
BOB = PrivateKey(bytes([3]) * 32)
CAROL = PrivateKey(bytes([4]) * 32)
MALLORY = PrivateKey(bytes([5]) * 32)
BANK = PrivateKey(bytes([6]) * 32)     # a commercial bank's key at tier 1
CB = PrivateKey(bytes([7]) * 32)       # the central bank's issuing key

NOW = 1_700_000_000
RULES = LedgerRules("bank-t", mint_authority=AUTH.public_key)

BASE_BODY = Tx(
    ledger="bank-t",
    kind="transfer",
    inputs=(Input(bytes([0xA1]) * 32, 0, ALICE.public_key, 700),
            Input(bytes([0xA2]) * 32, 3, ALICE.public_key, 300)),
    outputs=(Output(BOB.public_key, 600), Output(ALICE.public_key, 400)),
    reference="baseline",
    expiry=NOW + 3600,
)
BASE = sign(BASE_BODY, ALICE)

IDENTITY_KEY = bytes([1]) + bytes(31)           # the neutral element (0, 1)
TRIVIAL_SIGNATURE = bytes([1]) + bytes(63)      # R = identity, S = 0
NON_CANONICAL_KEY = bytes([0xED] + [0xFF] * 30 + [0x7F])  # y = p: not reduced mod p
# A point of order 8 (from the list of small-order points in "Taming the many EdDSAs", 2020).
ORDER_8_KEY = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
# y = -1: the point of order 2.
ORDER_2_KEY = bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")

ANY = object()


def body(**changes) -> Tx:
    return replace(BASE_BODY, **changes)


def stale(tx: Tx) -> SignedTx:
    """The mutated body with the baseline's witnesses (for defects found before signatures)."""
    return SignedTx(tx, BASE.witnesses)


def set_input(n: int, **changes) -> tuple[Input, ...]:
    items = list(BASE_BODY.inputs)
    items[n] = replace(items[n], **changes)
    return tuple(items)


def set_output(n: int, **changes) -> tuple[Output, ...]:
    items = list(BASE_BODY.outputs)
    items[n] = replace(items[n], **changes)
    return tuple(items)


def rejection(stx: SignedTx, rules: LedgerRules = RULES, now: int = NOW) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        validate(stx, rules, now)
    return info.value


def assert_rejected(stx: SignedTx, code: str, index=None, field=ANY, *, rules: LedgerRules = RULES,
                    now: int = NOW) -> ValidationFailed:
    err = rejection(stx, rules, now)
    assert err.code == code, repr(err)
    assert err.index == index, repr(err)
    if field is not ANY:
        assert err.extra.get("field") == field, repr(err)
    assert isinstance(err, Unprocessable) and err.status == 422
    return err


# ---------------------------------------------------------------------------------------------
# the baseline


def test_baseline_validates():
    valid = validate(BASE, RULES, NOW)
    assert valid.body == BASE_BODY
    assert valid.body_bytes == encode_body(BASE_BODY)
    assert valid.tx_id == crypto.sha256(encode_body(BASE_BODY))
    assert valid.witnesses == BASE.witnesses
    assert valid.value_in == valid.value_out == 1000


def test_baseline_witness_is_a_domain_separated_signature_of_the_tx_id():
    (w,) = BASE.witnesses
    assert w.key == ALICE.public_key
    msg = b"cbdc/v1/tx\x00bank-t\x00" + crypto.sha256(encode_body(BASE_BODY))
    Ed25519PublicKey.from_public_bytes(w.key).verify(w.signature, msg)  # raises if not


# ---------------------------------------------------------------------------------------------
# 1-3: version, ledger, kind


def test_version_2():
    tx = body(version=2)
    assert_rejected(sign(tx, ALICE), "version_unsupported", None, "version")


def test_other_ledger():
    tx = body(ledger="bank-u")
    assert_rejected(sign(tx, ALICE), "wrong_ledger", None, "ledger")


def test_unknown_kind():
    assert_rejected(stale(body(kind="gift")), "kind_not_allowed", None, "kind")


@pytest.mark.parametrize("kind", ["issue", "redeem", "fund", "defund", "settle"])
def test_tier1_kind_on_a_bank_ledger(kind):
    assert_rejected(sign(body(kind=kind), ALICE), "kind_not_allowed", None, "kind")


@pytest.mark.parametrize("kind", ["mint", "burn", "outbound", "inbound"])
def test_tier2_kind_on_the_central_bank_ledger(kind):
    tx = body(ledger="cb", kind=kind)
    rules = LedgerRules("cb", mint_authority=CB.public_key)
    assert_rejected(sign(tx, ALICE), "kind_not_allowed", None, "kind", rules=rules)


@pytest.mark.parametrize("kind", ["mint", "inbound"])
def test_value_creating_kind_on_a_ledger_without_mint_authority(kind):
    tx = body(kind=kind, inputs=())
    rules = LedgerRules("bank-t")
    assert_rejected(sign(tx, AUTH), "kind_not_allowed", None, "kind", rules=rules)
    validate(sign(tx, AUTH), RULES, NOW)  # the same tx on a ledger that may create value


def test_issue_on_cb_without_mint_authority():
    tx = Tx("cb", "issue", (), (Output(BANK.public_key, 5),))
    assert_rejected(sign(tx, CB), "kind_not_allowed", None, "kind", rules=LedgerRules("cb"))
    validate(sign(tx, CB), LedgerRules("cb", mint_authority=CB.public_key), NOW)


# ---------------------------------------------------------------------------------------------
# 4-5: counts


def test_mint_with_inputs():
    tx = body(kind="mint")
    assert_rejected(sign(tx, AUTH, ALICE), "inputs_not_allowed", 0, "inputs")


def test_transfer_without_inputs():
    assert_rejected(sign(body(inputs=()), ALICE), "inputs_missing", None, "inputs")


def test_too_many_inputs():
    rules = replace(RULES, inputs_max=1)
    # index: the first input beyond the limit
    assert_rejected(BASE, "too_many_inputs", 1, "inputs", rules=rules)
    validate(BASE, replace(RULES, inputs_max=2), NOW)


def test_too_many_outputs():
    rules = replace(RULES, outputs_max=1)
    assert_rejected(BASE, "too_many_outputs", 1, "outputs", rules=rules)
    validate(BASE, replace(RULES, outputs_max=2), NOW)


def test_transfer_without_outputs():
    assert_rejected(sign(body(outputs=()), ALICE), "outputs_missing", None, "outputs")


# ---------------------------------------------------------------------------------------------
# 6-7: inputs


def test_input_tx_id_of_the_wrong_length():
    assert_rejected(stale(body(inputs=set_input(1, tx_id=bytes(31)))), "input_malformed", 1, "inputs")


@pytest.mark.parametrize("n, index", [(0, -1), (1, 65536), (0, True)])
def test_input_index_invalid(n, index):
    assert_rejected(stale(body(inputs=set_input(n, index=index))), "input_index_invalid", n, "inputs")


def test_input_index_65535_is_valid():
    validate(sign(body(inputs=set_input(1, index=65535)), ALICE), RULES, NOW)


@pytest.mark.parametrize("amount", [0, -5])
@pytest.mark.parametrize("field, n", [("inputs", 0), ("inputs", 1), ("outputs", 0), ("outputs", 1)])
def test_amount_not_positive(field, n, amount):
    setter = set_input if field == "inputs" else set_output
    tx = body(**{field: setter(n, amount=amount)})
    assert_rejected(stale(tx), "amount_not_positive", n, field)


@pytest.mark.parametrize("field, n", [("inputs", 1), ("outputs", 0)])
def test_amount_too_large(field, n):
    setter = set_input if field == "inputs" else set_output
    tx = body(**{field: setter(n, amount=AMOUNT_MAX + 1)})
    assert_rejected(sign(tx, ALICE), "amount_too_large", n, field)


def test_amount_max_is_a_valid_amount():
    tx = body(inputs=(replace(BASE_BODY.inputs[0], amount=AMOUNT_MAX),),
              outputs=(Output(BOB.public_key, AMOUNT_MAX),))
    assert validate(sign(tx, ALICE), RULES, NOW).value_out == AMOUNT_MAX


@pytest.mark.parametrize("field, n", [("inputs", 1), ("outputs", 1)])
def test_bool_amount(field, n):
    setter = set_input if field == "inputs" else set_output
    tx = body(**{field: setter(n, amount=True)})
    assert_rejected(stale(tx), "amount_not_positive", n, field)


def test_duplicate_input():
    first = BASE_BODY.inputs[0]
    tx = body(inputs=BASE_BODY.inputs + (replace(first, amount=1),),
              outputs=set_output(1, amount=401))
    assert_rejected(sign(tx, ALICE), "duplicate_input", 2, "inputs")


def test_same_tx_id_other_index_is_not_a_duplicate():
    first = BASE_BODY.inputs[0]
    tx = body(inputs=(first, replace(first, index=1, amount=300)))
    validate(sign(tx, ALICE), RULES, NOW)


# ---------------------------------------------------------------------------------------------
# 8: outputs


@pytest.mark.parametrize("owner", [bytes(32), IDENTITY_KEY, NON_CANONICAL_KEY, ORDER_8_KEY, ORDER_2_KEY,
                                   bytes(31), ALICE.public_key + b"\x00"],
                         ids=["zero", "identity", "non-canonical", "order-8", "order-2", "short", "long"])
def test_output_owner_not_a_valid_key(owner):
    assert not crypto.is_valid_public_key(owner)
    assert_rejected(stale(body(outputs=set_output(1, owner=owner))), "owner_key_invalid", 1, "outputs")


# ---------------------------------------------------------------------------------------------
# 9: payee

OUTBOUND = body(kind="outbound", outputs=(Output(ALICE.public_key, 250),),
                payee=Payee("bank-u", CAROL.public_key, 750))


def test_outbound_balanced_with_payee_passes():
    valid = validate(sign(OUTBOUND, ALICE), RULES, NOW)
    assert valid.value_in == valid.value_out + OUTBOUND.payee.amount


@pytest.mark.parametrize("delta", [-1, 1])
def test_outbound_payee_amount_off_by_one(delta):
    tx = replace(OUTBOUND, payee=replace(OUTBOUND.payee, amount=750 + delta))
    assert_rejected(sign(tx, ALICE), "amounts_must_balance", None)


def test_outbound_with_no_change_output_passes():
    tx = replace(OUTBOUND, outputs=(), payee=replace(OUTBOUND.payee, amount=1000))
    validate(sign(tx, ALICE), RULES, NOW)


def test_outbound_without_payee():
    tx = replace(OUTBOUND, payee=None, outputs=set_output(1, amount=400))
    assert_rejected(sign(tx, ALICE), "payee_missing", None, "payee")


def test_transfer_with_payee():
    tx = body(payee=Payee("bank-u", CAROL.public_key, 1))
    assert_rejected(sign(tx, ALICE), "payee_not_allowed", None, "payee")


def test_outbound_payee_on_the_same_ledger_is_an_on_us_payment_through_the_bank():
    tx = replace(OUTBOUND, payee=replace(OUTBOUND.payee, ledger="bank-t"))
    assert tx.ledger == "bank-t"
    assert validate(sign(tx, ALICE), RULES, NOW).body.payee.ledger == tx.ledger


@pytest.mark.parametrize("ledger", ["cb", "Bank-U", "b", "bank-", "x" * 33])
def test_outbound_payee_ledger_invalid(ledger):
    tx = replace(OUTBOUND, payee=replace(OUTBOUND.payee, ledger=ledger))
    assert_rejected(stale(tx), "payee_invalid", None, "payee")


def test_outbound_payee_owner_invalid():
    tx = replace(OUTBOUND, payee=replace(OUTBOUND.payee, owner=ORDER_8_KEY))
    assert_rejected(stale(tx), "owner_key_invalid", None, "payee")


@pytest.mark.parametrize("amount, code", [(0, "amount_not_positive"), (-1, "amount_not_positive"),
                                          (AMOUNT_MAX + 1, "amount_too_large")])
def test_outbound_payee_amount_out_of_range(amount, code):
    tx = replace(OUTBOUND, payee=replace(OUTBOUND.payee, amount=amount))
    assert_rejected(stale(tx), code, None, "payee")


# ---------------------------------------------------------------------------------------------
# 10-11: value


def test_sum_of_outputs_above_amount_max():
    tx = body(inputs=set_input(0, amount=AMOUNT_MAX - 300),
              outputs=(Output(BOB.public_key, AMOUNT_MAX), Output(ALICE.public_key, 1)))
    assert sum(o.amount for o in tx.outputs) == AMOUNT_MAX + 1
    assert_rejected(sign(tx, ALICE), "amount_overflow", None, None)


def test_sums_of_inputs_and_outputs_above_amount_max_even_if_balanced():
    a = AMOUNT_MAX // 2 + 1
    tx = body(inputs=tuple(replace(i, amount=a) for i in BASE_BODY.inputs),
              outputs=(Output(BOB.public_key, a), Output(ALICE.public_key, a)))
    assert_rejected(sign(tx, ALICE), "amount_overflow", None, None)


def test_many_outputs_each_in_range_overflow():
    tx = body(inputs=set_input(0, amount=AMOUNT_MAX - 300),
              outputs=tuple(Output(BOB.public_key, AMOUNT_MAX // 3 + 1) for _ in range(3)))
    assert_rejected(sign(tx, ALICE), "amount_overflow", None, None)


def test_payee_amount_counts_towards_overflow():
    tx = replace(OUTBOUND, inputs=set_input(0, amount=AMOUNT_MAX - 300),
                 outputs=(Output(ALICE.public_key, AMOUNT_MAX),), payee=replace(OUTBOUND.payee, amount=1))
    assert_rejected(sign(tx, ALICE), "amount_overflow", None, None)


@pytest.mark.parametrize("delta", [-1, 1])
def test_unbalanced_transfer(delta):
    tx = body(outputs=set_output(0, amount=600 + delta))
    assert_rejected(sign(tx, ALICE), "amounts_must_balance", None, None)


@pytest.mark.parametrize("kind", ["transfer", "outbound", "fund", "defund", "settle"])
def test_every_balanced_kind_checks_balance(kind):
    # On the tier-1 ledger for the tier-1 kinds, on bank-t for the others.
    ledger = "bank-t" if kind in ("transfer", "outbound") else "cb"
    rules = RULES if ledger == "bank-t" else LedgerRules("cb", mint_authority=CB.public_key)
    tx = body(ledger=ledger, kind=kind, outputs=set_output(0, amount=601),
              payee=Payee("bank-u", CAROL.public_key, 1) if kind == "outbound" else None)
    assert_rejected(sign(tx, ALICE), "amounts_must_balance", None, rules=rules)


@pytest.mark.parametrize("returned", [1000, 1001])
def test_burn_must_destroy_value(returned):
    tx = body(kind="burn", outputs=(Output(ALICE.public_key, returned),))
    assert_rejected(sign(tx, ALICE), "must_destroy_value", None)


@pytest.mark.parametrize("outputs", [(Output(ALICE.public_key, 999),), ()])
def test_burn_returning_less_passes(outputs):
    valid = validate(sign(body(kind="burn", outputs=outputs), ALICE), RULES, NOW)
    assert valid.value_in - valid.value_out == 1000 - sum(o.amount for o in outputs)


# ---------------------------------------------------------------------------------------------
# 12: reference and expiry


def test_reference_of_257_bytes():
    reference = "é" * 128 + "a"
    assert len(reference.encode("utf-8")) == 257 and len(reference) == 129
    assert_rejected(sign(body(reference=reference), ALICE), "reference_too_long", None, "reference")


def test_reference_of_256_bytes_passes():
    reference = "é" * 128
    assert len(reference.encode("utf-8")) == 256
    validate(sign(body(reference=reference), ALICE), RULES, NOW)


@pytest.mark.parametrize("reference", ["\x00", "pay\x00ment"])
def test_reference_with_nul(reference):
    assert_rejected(sign(body(reference=reference), ALICE), "reference_invalid", None, "reference")


def test_reference_with_a_lone_surrogate():
    assert_rejected(stale(body(reference="a\ud800")), "reference_invalid", None, "reference")


def test_reference_not_a_string():
    assert_rejected(stale(body(reference=b"bytes")), "reference_invalid", None, "reference")


def test_expired():
    tx = body(expiry=NOW - 1)
    assert_rejected(sign(tx, ALICE), "transaction_expired", None, "expiry")


def test_expiry_equal_to_now_passes():
    validate(sign(body(expiry=NOW), ALICE), RULES, NOW)
    assert_rejected(sign(body(expiry=NOW), ALICE), "transaction_expired", None, "expiry", now=NOW + 1)


def test_expiry_zero_never_expires():
    validate(sign(body(expiry=0), ALICE), RULES, 2**63)


@pytest.mark.parametrize("expiry", [-1, 2**64, True])
def test_expiry_invalid(expiry):
    assert_rejected(stale(body(expiry=expiry)), "expiry_invalid", None, "expiry")


def test_expiry_u64_max_passes():
    validate(sign(body(expiry=2**64 - 1), ALICE), RULES, NOW)


# ---------------------------------------------------------------------------------------------
# 13: witnesses and signatures

TX_ID = tx_id_of(encode_body(BASE_BODY))


def test_no_witnesses():
    assert_rejected(SignedTx(BASE_BODY), "signature_missing", 0, "inputs")


def test_missing_signature_names_the_first_input_of_that_owner():
    tx = body(inputs=(Input(bytes([0xB0]) * 32, 0, ALICE.public_key, 100),
                      Input(bytes([0xB1]) * 32, 0, CAROL.public_key, 100),
                      Input(bytes([0xB2]) * 32, 0, BOB.public_key, 400),
                      Input(bytes([0xB3]) * 32, 0, BOB.public_key, 400)))
    validate(sign(tx, ALICE, CAROL, BOB), RULES, NOW)
    assert_rejected(sign(tx, ALICE, CAROL), "signature_missing", 2, "inputs")
    assert_rejected(sign(tx, BOB, ALICE), "signature_missing", 1, "inputs")


def test_mint_without_the_authority_signature():
    tx = body(kind="mint", inputs=())
    validate(sign(tx, AUTH), RULES, NOW)
    assert_rejected(sign(tx), "signature_missing", None, "inputs")
    assert_rejected(sign(tx, ALICE), "witness_unexpected", 0, "witnesses")


def test_signature_by_a_non_owner():
    assert_rejected(sign(BASE_BODY, MALLORY), "witness_unexpected", 0, "witnesses")
    assert_rejected(sign(BASE_BODY, ALICE, MALLORY), "witness_unexpected", 1, "witnesses")


def test_duplicate_witness():
    (w,) = BASE.witnesses
    assert_rejected(SignedTx(BASE_BODY, (w, w)), "duplicate_witness", 1, "witnesses")


@pytest.mark.parametrize("byte, bit", [(0, 0), (31, 7), (32, 0), (63, 6)])
def test_flipped_bit_in_signature(byte, bit):
    (w,) = BASE.witnesses
    sig = bytearray(w.signature)
    sig[byte] ^= 1 << bit
    assert_rejected(SignedTx(BASE_BODY, (Witness(w.key, bytes(sig)),)), "signature_invalid", 0, "witnesses")


def test_flipped_bit_in_the_second_signature():
    tx = body(inputs=set_input(1, owner=BOB.public_key))
    stx = sign(tx, ALICE, BOB)
    validate(stx, RULES, NOW)
    w = stx.witnesses[1]
    bad = Witness(w.key, w.signature[:10] + bytes([w.signature[10] ^ 0x20]) + w.signature[11:])
    assert_rejected(SignedTx(tx, (stx.witnesses[0], bad)), "signature_invalid", 1, "witnesses")


def test_signature_of_the_wrong_length():
    (w,) = BASE.witnesses
    assert_rejected(SignedTx(BASE_BODY, (Witness(w.key, w.signature[:63]),)), "signature_invalid", 0,
                    "witnesses")


def test_signature_made_for_another_ledger():
    sig = ALICE.sign(crypto.PURPOSE_TX, "bank-u", TX_ID)
    assert crypto.verify(ALICE.public_key, sig, crypto.PURPOSE_TX, "bank-u", TX_ID)
    assert_rejected(SignedTx(BASE_BODY, (Witness(ALICE.public_key, sig),)), "signature_invalid", 0,
                    "witnesses")


@pytest.mark.parametrize("purpose", [crypto.PURPOSE_REQUEST, crypto.PURPOSE_NOTICE])
def test_signature_made_for_another_purpose(purpose):
    sig = ALICE.sign(purpose, "bank-t", TX_ID)
    assert crypto.verify(ALICE.public_key, sig, purpose, "bank-t", TX_ID)
    assert_rejected(SignedTx(BASE_BODY, (Witness(ALICE.public_key, sig),)), "signature_invalid", 0,
                    "witnesses")


def test_signature_with_the_right_purpose_and_ledger_is_what_sign_makes():
    sig = ALICE.sign(crypto.PURPOSE_TX, "bank-t", TX_ID)
    assert SignedTx(BASE_BODY, (Witness(ALICE.public_key, sig),)) == BASE


def test_signature_over_another_tx():
    other = sign(body(reference="other"), ALICE)
    assert_rejected(SignedTx(BASE_BODY, other.witnesses), "signature_invalid", 0, "witnesses")


def test_too_many_witnesses():
    rules = replace(RULES, witnesses_max=1)
    tx = body(inputs=set_input(1, owner=BOB.public_key))
    assert_rejected(sign(tx, ALICE, BOB), "too_many_witnesses", 1, "witnesses", rules=rules)
    validate(sign(tx, ALICE, BOB), replace(RULES, witnesses_max=2), NOW)


class TestTrivialSignatureUnderTheIdentityKey:
    """R = identity, S = 0 satisfies [S]B = R + [k]A for A = identity and any message."""

    MSG = crypto.signing_message(crypto.PURPOSE_TX, "bank-t", TX_ID)

    def test_cryptography_accepts_it(self):
        # Documents why the system does not use `cryptography` for verification.
        Ed25519PublicKey.from_public_bytes(IDENTITY_KEY).verify(TRIVIAL_SIGNATURE, self.MSG)
        Ed25519PublicKey.from_public_bytes(IDENTITY_KEY).verify(TRIVIAL_SIGNATURE, b"any message at all")

    def test_shared_crypto_refuses_it(self):
        assert not crypto.is_valid_public_key(IDENTITY_KEY)
        assert not crypto.verify(IDENTITY_KEY, TRIVIAL_SIGNATURE, crypto.PURPOSE_TX, "bank-t", TX_ID)
        assert not crypto.verify(IDENTITY_KEY, TRIVIAL_SIGNATURE, crypto.PURPOSE_REQUEST, "bank-t", b"")

    def test_a_tx_spending_an_identity_owned_input_is_refused(self):
        tx = body(inputs=tuple(replace(i, owner=IDENTITY_KEY) for i in BASE_BODY.inputs))
        stx = SignedTx(tx, (Witness(IDENTITY_KEY, TRIVIAL_SIGNATURE),))
        msg = crypto.signing_message(crypto.PURPOSE_TX, "bank-t", tx_id_of(encode_body(tx)))
        Ed25519PublicKey.from_public_bytes(IDENTITY_KEY).verify(TRIVIAL_SIGNATURE, msg)
        assert_rejected(stx, "signature_invalid", 0, "witnesses")


# ---------------------------------------------------------------------------------------------
# tier 1: escrow owners that are not keys

ESCROW = b"escrow:bank-t".ljust(32, b"\x00")
CB_RULES = LedgerRules("cb", mint_authority=CB.public_key, owner_signers={ESCROW: BANK.public_key})


def test_escrow_id_is_not_a_key():
    assert len(ESCROW) == 32 and not crypto.is_valid_public_key(ESCROW)


def test_output_to_an_escrow_is_allowed_at_tier1():
    tx = Tx("cb", "fund", (Input(bytes([0xC0]) * 32, 0, BANK.public_key, 500),),
            (Output(ESCROW, 200), Output(BANK.public_key, 300)))
    validate(sign(tx, BANK), CB_RULES, NOW)
    # the same output on a ledger that does not know the escrow
    assert_rejected(sign(tx, BANK), "owner_key_invalid", 0, "outputs",
                    rules=LedgerRules("cb", mint_authority=CB.public_key))


def test_issue_to_an_escrow_signed_by_the_central_bank():
    tx = Tx("cb", "issue", (), (Output(ESCROW, 10_000),))
    validate(sign(tx, CB), CB_RULES, NOW)
    assert_rejected(sign(tx, BANK), "witness_unexpected", 0, "witnesses", rules=CB_RULES)


SETTLE = Tx("cb", "settle", (Input(bytes([0xC1]) * 32, 0, BOB.public_key, 50),
                             Input(bytes([0xC2]) * 32, 1, ESCROW, 100)),
            (Output(CAROL.public_key, 150),))


def test_spending_an_escrow_input_signed_by_the_bank_key():
    validate(sign(SETTLE, BOB, BANK), CB_RULES, NOW)


def test_spending_an_escrow_input_without_the_bank_key():
    assert_rejected(sign(SETTLE, BOB), "signature_missing", 1, "inputs", rules=CB_RULES)


def test_spending_an_escrow_input_signed_by_another_key():
    assert_rejected(sign(SETTLE, BOB, MALLORY), "witness_unexpected", 1, "witnesses", rules=CB_RULES)


def test_the_escrow_itself_is_not_a_signer():
    # A "witness" under the escrow id (not a key) is unexpected: the bank key signs for it.
    fake = Witness(ESCROW, bytes(64))
    stx = SignedTx(SETTLE, sign(SETTLE, BOB).witnesses + (fake,))
    assert_rejected(stx, "witness_unexpected", 1, "witnesses", rules=CB_RULES)


# ---------------------------------------------------------------------------------------------
# ordering: the earlier check in the docstring's list wins


def _doc_position(code: str) -> int:
    match = re.search(rf"\b{code}\b", validation.__doc__)
    assert match, f"{code} is not in shared.validation's docstring"
    return match.start()


def _m_version(tx):
    return replace(tx, version=2)


def _m_ledger(tx):
    return replace(tx, ledger="bank-u")


def _m_kind(tx):
    return replace(tx, kind="settle")


def _m_input_index(tx):
    inputs = list(tx.inputs)
    inputs[1] = replace(inputs[1], index=-1)
    return replace(tx, inputs=tuple(inputs))


def _m_duplicate(tx):
    return replace(tx, inputs=tx.inputs + (replace(tx.inputs[0], amount=5),))


def _m_owner(tx):
    outputs = list(tx.outputs)
    outputs[1] = replace(outputs[1], owner=bytes(32))
    return replace(tx, outputs=tuple(outputs))


def _m_payee(tx):
    return replace(tx, payee=Payee("bank-u", CAROL.public_key, 1))


def _m_overflow(tx):
    outputs = list(tx.outputs)
    outputs[0] = replace(outputs[0], amount=AMOUNT_MAX)
    return replace(tx, outputs=tuple(outputs))


def _m_balance(tx):
    outputs = list(tx.outputs)
    outputs[1] = replace(outputs[1], amount=outputs[1].amount + 1)
    return replace(tx, outputs=tuple(outputs))


def _m_expired(tx):
    return replace(tx, expiry=NOW - 1)


def _m_reference(tx):
    return replace(tx, reference="x" * 257)


ORDERED_MUTATIONS = {
    "version_unsupported": _m_version,
    "wrong_ledger": _m_ledger,
    "kind_not_allowed": _m_kind,
    "input_index_invalid": _m_input_index,
    "duplicate_input": _m_duplicate,
    "owner_key_invalid": _m_owner,
    "payee_not_allowed": _m_payee,
    "amount_overflow": _m_overflow,
    "amounts_must_balance": _m_balance,
    "reference_too_long": _m_reference,
    "transaction_expired": _m_expired,
}


@pytest.mark.parametrize("code", list(ORDERED_MUTATIONS))
def test_each_ordering_mutation_alone(code):
    assert rejection(stale(ORDERED_MUTATIONS[code](BASE_BODY))).code == code


@pytest.mark.parametrize("first, second", list(itertools.combinations(ORDERED_MUTATIONS, 2)))
def test_two_defects_report_the_earlier_one(first, second):
    expected = min(first, second, key=_doc_position)
    tx = ORDERED_MUTATIONS[second](ORDERED_MUTATIONS[first](BASE_BODY))
    assert rejection(stale(tx)).code == expected
    tx = ORDERED_MUTATIONS[first](ORDERED_MUTATIONS[second](BASE_BODY))
    assert rejection(stale(tx)).code == expected


def test_duplicate_input_is_reported_after_the_per_input_checks_of_all_inputs():
    # Docstring: 6 (per-input index/amount checks) comes before 7 (duplicate_input). Here the
    # duplicate is input 1 and input 2 has a zero amount: the earlier check (6) must win.
    first = BASE_BODY.inputs[0]
    tx = body(inputs=(first, first, Input(bytes([0xA3]) * 32, 0, ALICE.public_key, 0)))
    expected = min("duplicate_input", "amount_not_positive", key=_doc_position)
    assert_rejected(stale(tx), expected, 2, "inputs")


def test_any_body_defect_comes_before_a_signature_defect():
    # no witnesses at all, and an unbalanced body: the body defect is reported
    assert rejection(SignedTx(_m_balance(BASE_BODY))).code == "amounts_must_balance"


def test_count_checks_come_before_item_checks():
    tx = body(inputs=set_input(0, amount=0))
    assert_rejected(stale(tx), "too_many_outputs", 1, "outputs", rules=replace(RULES, outputs_max=1))
    assert_rejected(stale(tx), "too_many_inputs", 1, "inputs", rules=replace(RULES, inputs_max=1))


# -- sign_valid: a transaction signed here, checked like any other, without re-verifying -----------

MINT = Tx("bank-t", "mint", (), (Output(BOB.public_key, 250),), reference="fund:f1")


@pytest.mark.parametrize("tx, key, rules", [
    (MINT, AUTH, RULES),
    (replace(MINT, kind="inbound", reference="in:bank-u:p1"), AUTH, RULES),
    (BASE_BODY, ALICE, RULES),
    (Tx("cb", "issue", (), (Output(BANK.public_key, 5),)), CB, LedgerRules("cb", mint_authority=CB.public_key)),
])
def test_sign_valid_equals_validate_of_sign(tx, key, rules):
    assert validation.sign_valid(tx, key, rules, NOW) == validate(sign(tx, key), rules, NOW)


@pytest.mark.parametrize("tx, key, code, field", [
    (replace(MINT, outputs=(Output(BOB.public_key, 0),)), AUTH, "amount_not_positive", "outputs"),
    (replace(MINT, ledger="bank-u"), AUTH, "wrong_ledger", "ledger"),
    (replace(MINT, expiry=NOW - 1), AUTH, "transaction_expired", "expiry"),
    (MINT, MALLORY, "witness_unexpected", "witnesses"),                 # not the mint authority
    (replace(BASE_BODY, inputs=BASE_BODY.inputs + (Input(bytes([0xA3]) * 32, 0, BOB.public_key, 1),),
             outputs=(Output(BOB.public_key, 601), Output(ALICE.public_key, 400))),
     ALICE, "signature_missing", "inputs"),                             # Bob must sign too
])
def test_sign_valid_refuses_what_validate_refuses(tx, key, code, field):
    with pytest.raises(ValidationFailed) as exc:
        validation.sign_valid(tx, key, RULES, NOW)
    assert exc.value.code == code and exc.value.extra.get("field") == field
