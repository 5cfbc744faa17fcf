"""The wallet keystore: encryption, tamper detection, restore, derivation, file mode, no key leaks."""
from __future__ import annotations

import stat

import pytest

from shared.validation import LedgerRules, validate
from shared.tx import Input, Output, Tx
from wallet.errors import WalletError
from wallet.keystore import HEADER_BYTES, PURPOSE_PAYMENT_REQUEST, KDFParams, Keystore

FAST = KDFParams(log2_n=10, r=8, p=1)  # tests only: the default is 2**15
PASSWORD = "correct horse"
PHRASE = ("abandon " * 23 + "art").strip()  # the BIP-39 all-zero-entropy 24-word vector
# Pinned derivation (BIP-39 seed of PHRASE -> HKDF-SHA512 per account index): if this changes,
# existing backups no longer restore. Never update these to make a test pass.
PINNED_KEYS = {0: "6990c9fd4fc25560715cf9293075027bf0a501dc4dd4d71f0dbd6ae5a117188d",
               1: "181e77228c7d9588a4a431badeb1c80b1a28cba4f960ab89e143aac7f79e1483"}


@pytest.fixture
def wallet_file(tmp_path):
    path = tmp_path / "w" / "wallet.dat"
    Keystore.create(path, PASSWORD, bank="bank-a", phrase=PHRASE, params=FAST)
    return path


def test_open_with_the_right_password_gives_the_accounts(wallet_file):
    store = Keystore.open(wallet_file, PASSWORD)
    assert [(a.name, a.bank, a.index) for a in store.accounts] == [("main", "bank-a", 0)]
    assert store.account().public_key.hex() == PINNED_KEYS[0]


def test_wrong_password_is_refused_with_a_clear_code(wallet_file):
    with pytest.raises(WalletError) as caught:
        Keystore.open(wallet_file, "correct horsf")
    assert caught.value.code == "wallet_unlock_failed"
    assert "wrong password" in caught.value.detail


def test_every_byte_flip_is_detected(wallet_file):
    """Flip each byte of the file (all bits, and the lowest bit): every one fails to unlock."""
    data = wallet_file.read_bytes()
    assert len(data) > HEADER_BYTES
    codes = set()
    for position in range(len(data)):
        for mask in (0xFF, 0x01):
            damaged = bytearray(data)
            damaged[position] ^= mask
            wallet_file.write_bytes(bytes(damaged))
            with pytest.raises(WalletError) as caught:
                Keystore.open(wallet_file, PASSWORD)
            codes.add(caught.value.code)
    assert codes <= {"wallet_unlock_failed", "wallet_file_invalid"}
    wallet_file.write_bytes(data)
    assert Keystore.open(wallet_file, PASSWORD).account().public_key.hex() == PINNED_KEYS[0]


@pytest.mark.parametrize("cut", [0, 1, HEADER_BYTES, -1])
def test_truncated_or_extended_files_are_refused(wallet_file, cut):
    data = wallet_file.read_bytes()
    wallet_file.write_bytes(data[:cut] if cut else b"")
    with pytest.raises(WalletError):
        Keystore.open(wallet_file, PASSWORD)
    wallet_file.write_bytes(data + b"\x00")
    with pytest.raises(WalletError):
        Keystore.open(wallet_file, PASSWORD)


def test_restore_from_the_phrase_gives_the_same_keys(tmp_path):
    original = Keystore.create(tmp_path / "a.dat", PASSWORD, bank="bank-a", params=FAST)
    original.add_account("savings", "bank-b")
    restored = Keystore.create(tmp_path / "b.dat", "another password", bank="bank-a",
                               phrase=original.backup_phrase(), params=FAST)
    restored.add_account("savings", "bank-b")
    assert [a.public_key for a in restored.accounts] == [a.public_key for a in original.accounts]
    assert [a.address for a in restored.accounts] == [a.address for a in original.accounts]
    assert len(original.backup_phrase().split()) == 24


def test_derivation_is_pinned_and_accounts_differ(wallet_file):
    store = Keystore.open(wallet_file, PASSWORD)
    store.add_account("second", "bank-b")
    assert {a.index: a.public_key.hex() for a in Keystore.open(wallet_file, PASSWORD).accounts} == PINNED_KEYS


def test_a_bad_phrase_is_refused(tmp_path):
    words = PHRASE.split()
    for phrase in (" ".join(words[:-1] + ["abandon"]), " ".join(words[:-1]), "not a phrase at all"):
        with pytest.raises(WalletError) as caught:
            Keystore.create(tmp_path / "x.dat", PASSWORD, bank="bank-a", phrase=phrase, params=FAST)
        assert caught.value.code == "phrase_invalid"
    assert not (tmp_path / "x.dat").exists()


def test_file_mode_is_0600_and_no_temp_files_remain(wallet_file):
    Keystore.open(wallet_file, PASSWORD).add_account("more", "bank-b")
    assert stat.S_IMODE(wallet_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(wallet_file.parent.stat().st_mode) == 0o700
    assert [p.name for p in wallet_file.parent.iterdir()] == ["wallet.dat"]


def test_create_refuses_to_overwrite_and_short_passwords(wallet_file, tmp_path):
    before = wallet_file.read_bytes()
    with pytest.raises(WalletError) as caught:
        Keystore.create(wallet_file, PASSWORD, bank="bank-a", params=FAST)
    assert caught.value.code == "wallet_exists" and wallet_file.read_bytes() == before
    with pytest.raises(WalletError) as caught:
        Keystore.create(tmp_path / "n.dat", "short", bank="bank-a", params=FAST)
    assert caught.value.code == "password_too_short"


def test_accounts_names_and_banks_are_checked(wallet_file):
    store = Keystore.open(wallet_file, PASSWORD)
    for name, bank, code in (("main", "bank-b", "account_exists"), ("x", "cb", "bank_id_invalid"),
                             ("x", "Bank-A", "bank_id_invalid"), ("", "bank-a", "account_name_invalid"),
                             ("a\nb", "bank-a", "account_name_invalid")):
        with pytest.raises(WalletError) as caught:
            store.add_account(name, bank)
        assert caught.value.code == code
    with pytest.raises(WalletError) as caught:
        store.account("nope")
    assert caught.value.code == "account_not_found"


def test_default_kdf_unlocks_in_under_a_third_of_a_second(tmp_path):
    import time
    Keystore.create(tmp_path / "d.dat", PASSWORD, bank="bank-a")
    start = time.perf_counter()
    Keystore.open(tmp_path / "d.dat", PASSWORD)
    assert time.perf_counter() - start < 0.6  # ~0.13 s on the 2-core reference box; slack for load


def test_no_key_material_in_reprs_or_errors(wallet_file):
    store = Keystore.open(wallet_file, PASSWORD)
    text = repr(store) + repr(store.accounts) + str(vars(store) if hasattr(store, "__dict__") else "")
    for secret in [store.backup_phrase(), store._entropy.hex(), store._master_seed.hex(),
                   store._private_key(0).seed.hex()]:
        assert secret not in text
    for word in set(store.backup_phrase().split()) - {"abandon"}:
        assert word not in text


def test_signatures_are_valid_for_the_account_and_its_bank_only(wallet_file):
    store = Keystore.open(wallet_file, PASSWORD)
    account = store.account()
    tx = Tx("bank-a", "transfer", (Input(bytes(32), 0, account.public_key, 500),),
            (Output(account.public_key, 500),))
    validate(store.sign_tx(tx, account), LedgerRules("bank-a"), now=0)
    with pytest.raises(WalletError) as caught:
        store.sign_tx(Tx("bank-b", "transfer", tx.inputs, tx.outputs), account)
    assert caught.value.code == "wrong_bank"
    with pytest.raises(ValueError):
        store.sign_message(account, b"tx", b"x" * 32)  # never a spend signature through the side door
    assert len(store.sign_message(account, PURPOSE_PAYMENT_REQUEST, b"hello")) == 64
