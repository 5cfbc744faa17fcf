"""Payments without a bank: build (pure) -> sign (keystore) -> journal; the retry decisions.

The HTTP submit itself is tested against real banks in the integration tests (no HTTP fakes):
here, the journal keeps the exact bytes, reserves inputs, and the answer classification and
re-send decision are pure functions.
"""
from __future__ import annotations

import re
import stat

import pytest

from shared.address import Address
from shared.tx import signed_from_bytes
from shared.validation import LedgerRules, validate
from wallet.coins import Coin
from wallet.errors import CoinSelectionError, JournalError, WalletError
from wallet.journal import ACCEPTED, PENDING, REJECTED, Journal, journal_path
from wallet.keystore import KDFParams, Keystore
from wallet.payments import (UNKNOWN, build_outbound, build_payment, build_transfer, journal_signed, next_step,
                             outcome, record_outcome, sign, wire_bytes)

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def keystore(tmp_path_factory):
    store = Keystore.create(tmp_path_factory.mktemp("pay") / "wallet.dat", "password1", bank="bank-a",
                            params=KDFParams(10, 8, 1))
    store.add_account("payee", "bank-a")
    store.add_account("abroad", "bank-b")
    return store


@pytest.fixture
def journal(tmp_path):
    with Journal(journal_path(tmp_path / "wallet.dat")) as j:
        yield j


def wallet_coins(*amounts):
    return [Coin(bytes([n + 1]) * 32, n, a) for n, a in enumerate(amounts)]


def payee(keystore, name):
    account = keystore.account(name)
    return Address(account.bank, account.public_key)


def test_on_us_transfer_is_balanced_signed_and_valid(keystore):
    payer = keystore.account()
    tx = build_transfer(payer, wallet_coins(300, 1000), payee(keystore, "payee"), 700, now=NOW)
    assert tx.kind == "transfer" and tx.ledger == "bank-a" and tx.expiry == NOW + 900
    assert [(o.owner, o.amount) for o in tx.outputs] == [(keystore.account("payee").public_key, 700),
                                                         (payer.public_key, 300)]
    valid = validate(sign(keystore, payer, tx), LedgerRules("bank-a"), now=NOW)
    assert valid.value_in == valid.value_out == 1000


def test_cross_bank_outbound_names_the_payee_and_returns_change(keystore):
    payer = keystore.account()
    tx = build_payment(payer, wallet_coins(500, 500), payee(keystore, "abroad"), 800, now=NOW, reference="inv-7")
    assert tx.kind == "outbound" and tx.payee.ledger == "bank-b" and tx.payee.amount == 800
    assert [o.amount for o in tx.outputs] == [200] and tx.reference == "bank-a:inv-7"  # the payment id
    validate(sign(keystore, payer, tx), LedgerRules("bank-a"), now=NOW)
    exact = build_outbound(payer, wallet_coins(800), payee(keystore, "abroad"), 800, now=NOW)
    assert exact.outputs == ()  # no change output
    assert re.fullmatch(r"bank-a:[0-9a-f]{32}", exact.reference)  # derived from the inputs: unique per spend
    again = build_outbound(payer, wallet_coins(800), payee(keystore, "abroad"), 800, now=NOW + 5)
    other = build_outbound(payer, [Coin(bytes([9]) * 32, 0, 800)], payee(keystore, "abroad"), 800, now=NOW)
    assert again.reference == exact.reference != other.reference
    validate(sign(keystore, payer, exact), LedgerRules("bank-a"), now=NOW)


def test_payment_ids_are_checked(keystore):
    with pytest.raises(WalletError) as caught:
        build_outbound(keystore.account(), wallet_coins(900), payee(keystore, "abroad"), 100, now=NOW,
                       reference="has space")
    assert caught.value.code == "payment_id_invalid"


def test_builders_refuse_the_wrong_kind_of_payee(keystore):
    with pytest.raises(WalletError) as caught:
        build_transfer(keystore.account(), wallet_coins(900), payee(keystore, "abroad"), 100, now=NOW)
    assert caught.value.code == "payee_other_bank"
    with pytest.raises(WalletError) as caught:
        build_outbound(keystore.account(), wallet_coins(900), payee(keystore, "payee"), 100, now=NOW)
    assert caught.value.code == "payee_same_bank"


def test_sign_refuses_coins_of_another_account(keystore):
    tx = build_transfer(keystore.account("payee"), wallet_coins(900), payee(keystore, "payee"), 100, now=NOW)
    with pytest.raises(WalletError) as caught:
        sign(keystore, keystore.account(), tx)
    assert caught.value.code in ("not_own_coins", "wrong_bank")


def test_building_is_deterministic_given_the_seed(keystore):
    args = (keystore.account(), wallet_coins(*[500] * 6), payee(keystore, "payee"), 500)
    assert build_transfer(*args, now=NOW, seed=3) == build_transfer(*args, now=NOW, seed=3)


def test_journal_saves_the_exact_bytes_and_a_retry_resends_them(keystore, journal, tmp_path):
    payer = keystore.account()
    stx = sign(keystore, payer, build_transfer(payer, wallet_coins(1000), payee(keystore, "payee"), 250, now=NOW))
    wire = wire_bytes(stx)
    entry = journal_signed(journal, payer, stx, NOW)
    assert entry.state == PENDING and entry.wire == wire and entry.signed == stx
    journal.close()
    with Journal(journal_path(tmp_path / "wallet.dat")) as reopened:  # e.g. after a crash and restart
        again = reopened.get(entry.tx_id)
        assert again.wire == wire and signed_from_bytes(again.wire) == stx
        assert next_step(again, NOW + 60) == "send"
        assert reopened.record_signed(payer.name, wire, NOW + 5) == again  # journaling twice: one entry
        assert len(reopened.entries()) == 1
    assert stat.S_IMODE(journal_path(tmp_path / "wallet.dat").stat().st_mode) == 0o600


def test_a_resigning_of_the_same_body_cannot_replace_the_journaled_bytes(keystore, journal):
    payer = keystore.account()
    stx = sign(keystore, payer, build_transfer(payer, wallet_coins(1000), payee(keystore, "payee"), 250, now=NOW))
    journal_signed(journal, payer, stx, NOW)
    other = wire_bytes(stx).replace(b'"witnesses":[', b'"witnesses":[ ', 1)  # same body, other bytes
    with pytest.raises(JournalError) as caught:
        journal.record_signed(payer.name, other, NOW)
    assert caught.value.code == "journal_conflict"


def test_pending_payments_reserve_their_inputs(keystore, journal):
    payer = keystore.account()
    coins = wallet_coins(1000, 400)
    to = payee(keystore, "payee")
    first = sign(keystore, payer, build_transfer(payer, coins, to, 900, now=NOW))
    entry = journal_signed(journal, payer, first, NOW)
    reserved = journal.reserved(payer.name)
    assert reserved == {(coins[0].tx_id, coins[0].index)}
    second = build_transfer(payer, coins, to, 300, now=NOW, reserved=reserved)
    assert [i.amount for i in second.inputs] == [400]
    with pytest.raises(CoinSelectionError) as caught:
        build_transfer(payer, coins, to, 900, now=NOW, reserved=reserved)
    assert caught.value.code == "funds_reserved"
    journal.settle(entry.tx_id, REJECTED, {"code": "payee_limit"})  # refused: inputs free again
    assert journal.reserved(payer.name) == frozenset()


class _Refusal(Exception):
    def __init__(self, status, code):
        super().__init__(code)
        self.status, self.code = status, code


@pytest.mark.parametrize("answer, error, state", [
    ({"status": "created", "seq": 1}, None, ACCEPTED),
    ({"status": "exists", "seq": 1}, None, ACCEPTED),       # an earlier attempt got through
    ({"status": "weird"}, None, UNKNOWN),
    (None, TimeoutError(), UNKNOWN),
    (None, ConnectionResetError(), UNKNOWN),
    (None, _Refusal(503, "overloaded"), UNKNOWN),
    (None, _Refusal(500, "internal_error"), UNKNOWN),
    (None, _Refusal(429, "rate_limited"), UNKNOWN),
    (None, _Refusal(422, "transaction_expired"), UNKNOWN),  # may have been applied before it expired
    (None, _Refusal(409, "input_already_spent"), REJECTED),
    (None, _Refusal(422, "signature_invalid"), REJECTED),
    (None, _Refusal(403, "payee_limit_exceeded"), REJECTED),
])
def test_answers_are_classified(answer, error, state):
    assert outcome(answer=answer, error=error).state == state


def test_outcomes_are_recorded_once(keystore, journal):
    payer = keystore.account()
    stx = sign(keystore, payer, build_transfer(payer, wallet_coins(1000), payee(keystore, "payee"), 250, now=NOW))
    entry = journal_signed(journal, payer, stx, NOW)
    assert record_outcome(journal, entry, outcome(error=TimeoutError())).state == PENDING
    done = record_outcome(journal, entry, outcome(answer={"status": "exists", "seq": 4}))
    assert done.state == ACCEPTED and done.result == {"status": "exists", "seq": 4}
    assert next_step(done, NOW) == "done"
    assert record_outcome(journal, done, outcome(answer={"status": "exists", "seq": 4})).state == ACCEPTED
    with pytest.raises(JournalError):
        record_outcome(journal, done, outcome(error=_Refusal(409, "input_already_spent")))


def test_after_expiry_an_unknown_outcome_is_queried_not_resent(keystore, journal):
    payer = keystore.account()
    tx = build_transfer(payer, wallet_coins(1000), payee(keystore, "payee"), 250, now=NOW, expiry_seconds=60)
    entry = journal_signed(journal, payer, sign(keystore, payer, tx), NOW)
    assert next_step(entry, NOW + 60) == "send"
    assert next_step(entry, NOW + 61) == "query"
