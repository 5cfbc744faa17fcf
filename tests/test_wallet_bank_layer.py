"""The wallet's bank-facing layer without a bank: request signing inside the keystore, the HTTP layer
holding no key, stored bank URLs, the burn builder, the funding journal, refusals in plain words, and
the new commands' --help. (Against real banks: test_wallet_system_cli.py and test_wallet_page.py.)"""
from __future__ import annotations

import subprocess
import sys

import pytest

from shared.signing import parse_signature, verify_request
from shared.tx import Output
from shared.validation import LedgerRules, validate
from wallet.bank import WalletBank
from wallet.coins import Coin
from wallet.errors import JournalError, WalletError
from wallet.journal import ACCEPTED, PENDING, Journal, journal_path
from wallet.keystore import KDFParams, Keystore
from wallet.payments import build_burn, sign
from wallet.refusals import SENTENCES, explain
from tests.system_harness import ROOT

NOW = 1_800_000_000
BANK_COMMANDS = ["register", "balance", "history", "pay", "status", "fund", "defund", "serve", "accounts set-url"]


@pytest.fixture(scope="module")
def keystore(tmp_path_factory):
    store = Keystore.create(tmp_path_factory.mktemp("bank") / "wallet.dat", "password1", bank="bank-a",
                            params=KDFParams(10, 8, 1), bank_url="http://127.0.0.1:8480")
    store.add_account("abroad", "bank-b", "http://127.0.0.1:8481/")
    return store


def _verify(headers: dict, account, ledger: str, body: bytes = b"{}") -> bytes:
    return verify_request(parse_signature(headers), "POST", "/v1/fundings", body,
                          key_for=lambda key_id: account.public_key if key_id == f"wallet:{account.public_key.hex()}"
                          else None, now=NOW, window_seconds=30, ledger=ledger)


def test_request_headers_are_signed_in_the_keystore_for_the_accounts_bank(keystore):
    main = keystore.account()
    headers = keystore.sign_request_headers(main, "POST", "/v1/fundings", b"{}", now=NOW)
    assert _verify(headers, main, "bank-a") == main.public_key
    with pytest.raises(Exception) as exc:                         # void at another bank
        _verify(headers, main, "bank-b")
    assert getattr(exc.value, "code", None) == "signature_invalid"
    with pytest.raises(Exception):                                 # the body is bound
        _verify(headers, main, "bank-a", b'{"amount": 1}')


async def test_the_http_layer_holds_no_key_and_signs_through_the_keystore(keystore):
    abroad = keystore.account("abroad")
    bank = WalletBank(abroad.bank_url, keystore, abroad, clock=lambda: NOW)
    try:
        assert bank.key is None and bank.bank_id == "bank-b" and bank.me == abroad.public_key.hex()
        headers = bank.signed_headers("POST", "/v1/fundings", b"{}")
        assert headers["CBDC-Key-Id"] == f"wallet:{abroad.public_key.hex()}"
        assert _verify(headers, abroad, "bank-b") == abroad.public_key
    finally:
        await bank.close()


def test_bank_urls_are_stored_with_the_accounts_and_checked(keystore):
    again = Keystore.open(keystore.path, "password1")
    assert [a.bank_url for a in again.accounts] == ["http://127.0.0.1:8480", "http://127.0.0.1:8481/"]
    assert again.set_bank_url("abroad", "").bank_url == ""
    assert Keystore.open(keystore.path, "password1").account("abroad").bank_url == ""
    for bad in ("ftp://x", "http://user:pw@host", "http://h/?q=1", "javascript:alert(1)", "http://" + "a" * 300):
        with pytest.raises(WalletError) as exc:
            again.set_bank_url("main", bad)
        assert exc.value.code == "bank_url_invalid"
    again.set_bank_url("abroad", "http://127.0.0.1:8481/")


def test_burn_builder_spends_and_returns_change_under_the_defund_id(keystore):
    main = keystore.account()
    coins = [Coin(bytes([1]) * 32, 0, 700), Coin(bytes([2]) * 32, 1, 500)]
    tx = build_burn(main, coins, 600, now=NOW)
    assert tx.kind == "burn" and tx.ledger == "bank-a" and tx.expiry == NOW + 15 * 60
    assert tx.outputs == (Output(main.public_key, 100),) and tx.reference.startswith("defund-")
    assert build_burn(main, coins, 600, now=NOW + 5).reference == tx.reference      # same coins, same id
    valid = validate(sign(keystore, main, tx), LedgerRules("bank-a"), now=NOW)
    assert valid.value_in - valid.value_out == 600
    exact = build_burn(main, coins, 500, now=NOW, reference="d-1")
    assert exact.outputs == () and exact.reference == "d-1"
    with pytest.raises(WalletError) as exc:
        build_burn(main, coins, 600, now=NOW, reference="waterfall:x")
    assert exc.value.code == "defund_id_invalid"
    with pytest.raises(WalletError) as exc:
        build_burn(main, coins, 2_000, now=NOW)
    assert exc.value.code == "insufficient_funds"


def test_fundings_are_journaled_once_with_their_id(tmp_path):
    with Journal(journal_path(tmp_path / "wallet.dat")) as journal:
        first = journal.record_funding("main", "fund-1", 500, NOW)
        assert journal.record_funding("main", "fund-1", 500, NOW + 9) == first and first.state == PENDING
        with pytest.raises(JournalError):
            journal.record_funding("main", "fund-1", 501, NOW)
        journal.record_funding("other", "fund-2", 100, NOW)
        assert [f.funding_id for f in journal.fundings(PENDING, "main")] == ["fund-1"]
        done = journal.settle_funding("fund-1", ACCEPTED, {"state": "minted"})
        assert done.state == ACCEPTED and done.result == {"state": "minted"}
        assert journal.settle_funding("fund-1", "rejected", {}).state == ACCEPTED     # final stays final
    with Journal(journal_path(tmp_path / "wallet.dat")) as journal:                   # durable
        assert journal.funding("fund-1").state == ACCEPTED


def test_refusals_are_plain_sentences_with_their_code():
    for code in ("limit_per_payment", "limit_daily", "payee_holding_limit", "insufficient_funds",
                 "input_already_spent"):
        text = explain(code, "ignored")
        assert text == f"{SENTENCES[code]} [{code}]" and "_" not in SENTENCES[code]
    assert explain("something_new", "the bank's own words") == "the bank's own words [something_new]"
    assert explain(None, None) == "the bank refused without a reason"


def test_bank_commands_have_help_with_an_example_and_need_a_bank_url(tmp_path):
    for command in BANK_COMMANDS:
        out = subprocess.run([sys.executable, "-m", "wallet.cli", *command.split(), "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "example:" in out.stdout and f"cbdc-wallet {command}" in out.stdout, command
    env = {"CBDC_WALLET_FILE": str(tmp_path / "w.dat"), "CBDC_WALLET_PASSWORD": "password1", "PATH": "/usr/bin:/bin"}
    assert subprocess.run([sys.executable, "-m", "wallet.cli", "create", "--bank", "bank-a"], cwd=ROOT, env=env,
                          capture_output=True, timeout=60).returncode == 0
    out = subprocess.run([sys.executable, "-m", "wallet.cli", "balance"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == "" and out.stderr.count("\n") == 1
    assert "no URL for bank-a: pass --bank-url" in out.stderr
