"""The pure validation core: no I/O, no clock, no database, no randomness.

``validate(stx, rules, now)`` runs the checks below in this fixed order and raises
``ValidationFailed`` for the first failure, with its stable ``code`` and, where one applies, the
``index`` of the offending item and the ``field`` it sits in. On success it returns a
``ValidTx``: the body, its canonical bytes and its tx id, ready for the ledger engine.

 1. version_unsupported       the body's format version is not 1
 2. wrong_ledger              the body names another ledger (a tx for bank A is void at bank B)
 3. kind_not_allowed          the kind does not exist on this tier, or this ledger cannot create value
 4. inputs_missing / inputs_not_allowed / too_many_inputs
 5. outputs_missing / too_many_outputs
 6. input_malformed, input_index_invalid, amount_not_positive, amount_too_large   (field=inputs, index)
 7. duplicate_input           the same outpoint twice (index of the second)
 8. amount_not_positive, amount_too_large, owner_key_invalid      (field=outputs, index)
 9. payee_missing / payee_not_allowed / payee_invalid / amount_*  (field=payee)
10. amount_overflow           a sum of amounts exceeds AMOUNT_MAX
11. amounts_must_balance      (balanced kinds) value in != value out (+ payee amount)
    must_destroy_value        (destroying kinds) value out >= value in
12. reference_too_long, reference_invalid, expiry_invalid, transaction_expired
13. too_many_witnesses, duplicate_witness, witness_unexpected    (field=witnesses, index)
    signature_missing         a required signer has no witness (field=inputs: its first input)
    signature_invalid         a witness's signature does not verify (field=witnesses, index)

Whether an input is still unspent is not checked here: the SQL that spends it decides, inside the
database transaction (shared.engine).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from shared import crypto
from shared.amounts import AMOUNT_MAX
from shared.errors import ValidationFailed
from shared.tx import (BALANCED, CREATE, DESTROY, KINDS, LEDGER_CB, LEDGER_ID_RE, REFERENCE_BYTES_MAX,
                       SignedTx, Tx, Witness, encode_body, tx_id_of, VERSION)

U16_MAX = 65535
U64_MAX = 2**64 - 1


@dataclass(frozen=True)
class LedgerRules:
    """What one ledger accepts. Picklable, so verifier processes can hold a copy."""
    ledger: str
    inputs_max: int = 64
    outputs_max: int = 64
    witnesses_max: int = 16
    # The key that must sign value-creating kinds (issue at tier 1; mint/inbound at tier 2).
    # None: this ledger creates no value.
    mint_authority: bytes | None = None
    # Owners that are not keys (e.g. a bank's escrow at tier 1), mapped to the key that signs for
    # them. Such owners may receive outputs although they are not curve points.
    owner_signers: Mapping[bytes, bytes] = field(default_factory=dict)

    @property
    def tier(self) -> int:
        return 1 if self.ledger == LEDGER_CB else 2


@dataclass(frozen=True, slots=True)
class ValidTx:
    """A transaction that passed the pure core: what the ledger engine applies."""
    body: Tx
    body_bytes: bytes
    tx_id: bytes
    witnesses: tuple[Witness, ...]

    @property
    def value_in(self) -> int:
        return sum(i.amount for i in self.body.inputs)

    @property
    def value_out(self) -> int:
        return sum(o.amount for o in self.body.outputs)


def _reject(code: str, detail: str, field: str | None = None, index: int | None = None) -> ValidationFailed:
    return ValidationFailed(detail, code=code, index=index, extra={"field": field} if field else None)


def _check_amount(amount: int, field: str, index: int | None) -> None:
    if type(amount) is not int or amount <= 0:
        raise _reject("amount_not_positive", "amounts must be positive integers (minor units)", field, index)
    if amount > AMOUNT_MAX:
        raise _reject("amount_too_large", f"amounts must not exceed {AMOUNT_MAX}", field, index)


def _check_shape(tx: Tx, rules: LedgerRules) -> None:
    if tx.version != VERSION:
        raise _reject("version_unsupported", f"body version must be {VERSION}", "version")
    if tx.ledger != rules.ledger:
        raise _reject("wrong_ledger", f"this is ledger {rules.ledger!r}, not {tx.ledger!r}", "ledger")
    kind = KINDS.get(tx.kind)
    if kind is None or kind.tier not in (0, rules.tier) or (
            kind.value_rule == CREATE and rules.mint_authority is None):
        raise _reject("kind_not_allowed", f"kind {tx.kind!r} is not allowed on this ledger", "kind")
    n_in, n_out = len(tx.inputs), len(tx.outputs)
    if kind.value_rule == CREATE and n_in:
        raise _reject("inputs_not_allowed", f"a {tx.kind} spends no inputs", "inputs", 0)
    if kind.value_rule != CREATE and not n_in:
        raise _reject("inputs_missing", f"a {tx.kind} must spend at least one input", "inputs")
    if n_in > rules.inputs_max:
        raise _reject("too_many_inputs", f"at most {rules.inputs_max} inputs", "inputs", rules.inputs_max)
    if n_out == 0 and not (kind.value_rule == DESTROY or kind.has_payee):
        raise _reject("outputs_missing", f"a {tx.kind} must create at least one output", "outputs")
    if n_out > rules.outputs_max:
        raise _reject("too_many_outputs", f"at most {rules.outputs_max} outputs", "outputs", rules.outputs_max)


def _check_items(tx: Tx, rules: LedgerRules) -> None:
    seen: set[tuple[bytes, int]] = set()
    for n, i in enumerate(tx.inputs):
        if type(i.tx_id) is not bytes or len(i.tx_id) != 32 or type(i.owner) is not bytes or len(i.owner) != 32:
            raise _reject("input_malformed", "an input names a 32-byte tx id and owner", "inputs", n)
        if type(i.index) is not int or not 0 <= i.index <= U16_MAX:
            raise _reject("input_index_invalid", "an input's index must be 0..65535", "inputs", n)
        _check_amount(i.amount, "inputs", n)
    for n, i in enumerate(tx.inputs):
        if i.outpoint in seen:
            raise _reject("duplicate_input", "the same output is spent twice", "inputs", n)
        seen.add(i.outpoint)
    for n, o in enumerate(tx.outputs):
        _check_amount(o.amount, "outputs", n)
        if o.owner not in rules.owner_signers and not crypto.is_valid_public_key(o.owner):
            raise _reject("owner_key_invalid", "an output's owner is not a valid Ed25519 public key",
                          "outputs", n)
    kind = KINDS[tx.kind]
    if kind.has_payee and tx.payee is None:
        raise _reject("payee_missing", f"a {tx.kind} must name its payee", "payee")
    if not kind.has_payee and tx.payee is not None:
        raise _reject("payee_not_allowed", f"a {tx.kind} has no payee", "payee")
    if tx.payee is not None:
        if type(tx.payee.ledger) is not str or not LEDGER_ID_RE.fullmatch(tx.payee.ledger) \
                or tx.payee.ledger == LEDGER_CB:
            raise _reject("payee_invalid", "the payee must name another bank's ledger", "payee")
        if not crypto.is_valid_public_key(tx.payee.owner):
            raise _reject("owner_key_invalid", "the payee is not a valid Ed25519 public key", "payee")
        _check_amount(tx.payee.amount, "payee", None)


def _check_value(tx: Tx) -> None:
    value_in = sum(i.amount for i in tx.inputs)
    value_out = sum(o.amount for o in tx.outputs) + (tx.payee.amount if tx.payee else 0)
    if value_in > AMOUNT_MAX or value_out > AMOUNT_MAX:
        raise _reject("amount_overflow", f"the amounts of a transaction must sum to at most {AMOUNT_MAX}")
    rule = KINDS[tx.kind].value_rule
    if rule == BALANCED and value_in != value_out:
        raise _reject("amounts_must_balance", f"value in ({value_in}) must equal value out ({value_out})")
    if rule == DESTROY and value_out >= value_in:
        raise _reject("must_destroy_value", f"a {tx.kind} must return less ({value_out}) than it spends "
                                            f"({value_in})")


def _check_envelope(tx: Tx, now: int) -> None:
    if type(tx.reference) is not str:
        raise _reject("reference_invalid", "the reference must be text", "reference")
    try:
        reference = tx.reference.encode("utf-8")
    except UnicodeEncodeError:
        raise _reject("reference_invalid", "the reference must be valid Unicode", "reference") from None
    if len(reference) > REFERENCE_BYTES_MAX:
        raise _reject("reference_too_long", f"the reference is at most {REFERENCE_BYTES_MAX} bytes", "reference")
    if "\x00" in tx.reference:
        raise _reject("reference_invalid", "the reference must not contain NUL", "reference")
    if type(tx.expiry) is not int or not 0 <= tx.expiry <= U64_MAX:
        raise _reject("expiry_invalid", "expiry is unix seconds, or 0 for none", "expiry")
    if tx.expiry and now > tx.expiry:
        raise _reject("transaction_expired", "the transaction expired", "expiry")


def required_signers(tx: Tx, rules: LedgerRules) -> dict[bytes, int]:
    """Each key that must sign, mapped to the index of the first input it signs for (-1: none)."""
    signers: dict[bytes, int] = {}
    if KINDS[tx.kind].value_rule == CREATE:
        assert rules.mint_authority is not None  # _check_shape refused the kind otherwise
        signers[rules.mint_authority] = -1
    for n, i in enumerate(tx.inputs):
        signers.setdefault(rules.owner_signers.get(i.owner, i.owner), n)
    return signers


def _check_witnesses(stx: SignedTx, rules: LedgerRules, tx_id: bytes) -> None:
    witnesses = stx.witnesses
    if len(witnesses) > rules.witnesses_max:
        raise _reject("too_many_witnesses", f"at most {rules.witnesses_max} witnesses", "witnesses",
                      rules.witnesses_max)
    required = required_signers(stx.body, rules)
    seen: set[bytes] = set()
    for n, w in enumerate(witnesses):
        if w.key in seen:
            raise _reject("duplicate_witness", "one witness per signer", "witnesses", n)
        seen.add(w.key)
        if w.key not in required:
            raise _reject("witness_unexpected", "a witness for a key that need not sign", "witnesses", n)
    for key, first_input in required.items():
        if key not in seen:
            index = first_input if first_input >= 0 else None
            raise _reject("signature_missing", "a required signature is missing", "inputs", index)
    for n, w in enumerate(witnesses):
        if not crypto.verify(w.key, w.signature, crypto.PURPOSE_TX, rules.ledger, tx_id):
            raise _reject("signature_invalid", "a signature does not verify", "witnesses", n)


def validate(stx: SignedTx, rules: LedgerRules, now: int) -> ValidTx:
    """Check ``stx`` against ``rules`` at unix time ``now``; raise ValidationFailed or return it valid."""
    tx = stx.body
    _check_shape(tx, rules)
    _check_items(tx, rules)
    _check_value(tx)
    _check_envelope(tx, now)
    body_bytes = encode_body(tx)
    tx_id = tx_id_of(body_bytes)
    _check_witnesses(stx, rules, tx_id)
    return ValidTx(tx, body_bytes, tx_id, stx.witnesses)


def sign_valid(tx: Tx, key: crypto.PrivateKey, rules: LedgerRules, now: int) -> ValidTx:
    """``tx`` signed here by ``key``, its one required signer, and checked like ``validate`` checks
    any transaction -- except that the signature just made is not verified again (Ed25519 signing is
    deterministic, and verifying our own fresh signature cost one verification per mint, inbound,
    refund, issue and settle). The result equals ``validate(sign(tx, key), rules, now)``; the same
    ValidationFailed codes refuse a bad body, and a key that is not the one required signer is
    refused as ``witness_unexpected`` (not required) or ``signature_missing`` (others must sign)."""
    _check_shape(tx, rules)
    _check_items(tx, rules)
    _check_value(tx)
    _check_envelope(tx, now)
    required = required_signers(tx, rules)
    if key.public_key not in required:
        raise _reject("witness_unexpected", "a witness for a key that need not sign", "witnesses", 0)
    for other, first_input in required.items():
        if other != key.public_key:
            raise _reject("signature_missing", "a required signature is missing", "inputs",
                          first_input if first_input >= 0 else None)
    body_bytes = encode_body(tx)
    tx_id = tx_id_of(body_bytes)
    return ValidTx(tx, body_bytes, tx_id, (Witness(key.public_key, key.sign(crypto.PURPOSE_TX, tx.ledger, tx_id)),))


def sign(tx: Tx, *keys: crypto.PrivateKey) -> SignedTx:
    """Sign a body with each key (one witness per key). Pure given the keys; used by wallets and tests."""
    tx_id = tx_id_of(encode_body(tx))
    return SignedTx(tx, tuple(Witness(k.public_key, k.sign(crypto.PURPOSE_TX, tx.ledger, tx_id)) for k in keys))


def validate_many(stxs, rules: LedgerRules, now: int) -> list[ValidTx | ValidationFailed]:
    """Validate each transaction independently: a ValidTx or the ValidationFailed it raised."""
    out: list[ValidTx | ValidationFailed] = []
    for stx in stxs:
        try:
            out.append(validate(stx, rules, now))
        except ValidationFailed as exc:
            out.append(exc)
    return out
