"""Payment requests: round trip, every tamper refused, expiry, canonical form, QR code."""
from __future__ import annotations

import pytest

from shared.address import encode_address
from wallet.errors import RequestError
from wallet.keystore import KDFParams, Keystore
from wallet.requests import PaymentRequest, make_request, parse_payee, parse_request, write_qr_svg

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def keystore(tmp_path_factory):
    path = tmp_path_factory.mktemp("req") / "wallet.dat"
    store = Keystore.create(path, "password1", bank="bank-a", params=KDFParams(10, 8, 1))
    store.add_account("other", "bank-b")
    return store


def request(keystore, amount=1234, memo="lunch & tea, 2 × ☕", expires=NOW + 3600, account=None):
    return make_request(keystore, keystore.account(account), amount, memo=memo, expires=expires)


def test_round_trip(keystore):
    text = request(keystore)
    assert text.startswith("cbdc:bank-a1") and "amount=12.34&memo=" in text
    parsed = parse_request(text, NOW)
    assert parsed == PaymentRequest(parsed.address, 1234, "lunch & tea, 2 × ☕", NOW + 3600)
    assert str(parsed.address) == keystore.account().address


def test_minimal_request_round_trips(keystore):
    text = request(keystore, amount=1, memo="", expires=0, account="other")
    assert text.startswith("cbdc:bank-b1") and "?amount=0.01&sig=" in text
    assert parse_request(text, 2**40).amount == 1


def test_every_single_character_change_is_refused(keystore):
    text = request(keystore)
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.%&=?:"
    for position in range(len(text)):
        for replacement in {alphabet[(alphabet.find(text[position]) + k) % len(alphabet)] for k in (1, 17)}:
            if replacement == text[position]:
                continue
            with pytest.raises(RequestError):
                parse_request(text[:position] + replacement + text[position + 1:], NOW)


def test_changed_fields_are_refused_with_the_signature_code(keystore):
    text = request(keystore)
    for old, new in (("amount=12.34", "amount=92.34"), ("memo=lunch", "memo=munch"),
                     (f"expires={NOW + 3600}", f"expires={NOW + 7200}")):
        with pytest.raises(RequestError) as caught:
            parse_request(text.replace(old, new), NOW)
        assert caught.value.code == "request_signature_invalid"


def test_another_keys_address_with_the_same_signature_is_refused(keystore):
    text = request(keystore)
    other = encode_address("bank-a", keystore.account("other").public_key)
    with pytest.raises(RequestError) as caught:
        parse_request(text.replace(keystore.account().address, other), NOW)
    assert caught.value.code == "request_signature_invalid"


def test_expired_requests_are_refused(keystore):
    text = request(keystore, expires=NOW)
    assert parse_request(text, NOW).expires == NOW
    with pytest.raises(RequestError) as caught:
        parse_request(text, NOW + 1)
    assert caught.value.code == "request_expired"


@pytest.mark.parametrize("mutate", [
    lambda t: t.replace("amount=12.34", "amount=12.340"),           # not canonical
    lambda t: t.replace("?amount=12.34&", "?amount=12.34&amount=12.34&"),
    lambda t: t.replace("&sig=", "&x=1&sig="),
    lambda t: t.replace("cbdc:", "bitcoin:"),
    lambda t: t.split("&sig=")[0],
    lambda t: t + "A",
    lambda t: t.replace("%20", "+"),
    lambda t: t[:5] + t[5:].upper(),
])
def test_malformed_requests_are_refused(keystore, mutate):
    with pytest.raises(RequestError):
        parse_request(mutate(request(keystore)), NOW)


def test_memo_and_amount_limits(keystore):
    for kwargs, code in (({"memo": "x" * 141}, "memo_invalid"), ({"memo": "a\nb"}, "memo_invalid"),
                         ({"amount": 0}, "amount_invalid"), ({"amount": 10**15 + 1}, "amount_invalid")):
        with pytest.raises(RequestError) as caught:
            request(keystore, **kwargs)
        assert caught.value.code == code


def test_pay_accepts_an_address_or_a_request(keystore):
    address = keystore.account().address
    assert parse_payee(address, NOW) == (parse_request(request(keystore), NOW).address, None)
    target, parsed = parse_payee(request(keystore), NOW)
    assert str(target) == address and parsed.amount == 1234
    with pytest.raises(RequestError) as caught:
        parse_payee(address[:-1] + ("q" if address[-1] != "q" else "p"), NOW)
    assert caught.value.code == "address_invalid"


def test_qr_code_is_an_svg(keystore, tmp_path):
    path = tmp_path / "request.svg"
    write_qr_svg(request(keystore), path)
    svg = path.read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "<path" in svg
