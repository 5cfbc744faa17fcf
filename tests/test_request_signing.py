"""Pure tests of signed requests (shared.signing) and settlement notices (shared.notice):
one valid baseline, one mutation per case, the exact code."""
from __future__ import annotations

import dataclasses

import pytest

from shared import crypto
from shared.errors import Unauthorized, Unprocessable
from shared.notice import SettlementNotice, notice_from_json, notice_to_json, sign_notice, verify_notice
from shared.signing import (MemoryNonceStore, check_nonce, parse_signature, request_payload, sign_request,
                            verify_request)

KEY = crypto.PrivateKey(bytes([9]) * 32)
NOW = 1_800_000_000
BODY = b'{"amount": 5}'


def _headers(**changes: str) -> dict[str, str]:
    headers = sign_request(KEY, "bank:bank-a", "POST", "/v1/settlements", BODY, now=NOW, nonce="ab" * 16)
    return {**headers, **changes}


def _verify(headers: dict[str, str], *, method="POST", path="/v1/settlements", body=BODY, now=NOW,
            keys=None) -> bytes:
    keys = {"bank:bank-a": KEY.public_key} if keys is None else keys
    return verify_request(parse_signature(headers), method, path, body, key_for=keys.get, now=now,
                          window_seconds=30)


def test_baseline_verifies():
    assert _verify(_headers()) == KEY.public_key


@pytest.mark.parametrize("mutation, code", [
    (dict(method="PUT"), "signature_invalid"),
    (dict(path="/v1/settlements?x=1"), "signature_invalid"),
    (dict(body=BODY + b" "), "signature_invalid"),
    (dict(now=NOW + 31), "timestamp_stale"),
    (dict(now=NOW - 31), "timestamp_stale"),
    (dict(keys={}), "unknown_key"),
    (dict(keys={"bank:bank-a": crypto.PrivateKey(bytes([8]) * 32).public_key}), "signature_invalid"),
])
def test_each_bound_part_is_checked(mutation, code):
    with pytest.raises(Unauthorized) as exc:
        _verify(_headers(), **mutation)
    assert exc.value.code == code


@pytest.mark.parametrize("header, value, code", [
    ("CBDC-Key-Id", "bank-a", "signature_invalid"),                # no kind prefix
    ("CBDC-Key-Id", "root:bank-a", "signature_invalid"),
    ("CBDC-Timestamp", "-5", "signature_invalid"),
    ("CBDC-Timestamp", "1e9", "signature_invalid"),
    ("CBDC-Nonce", "short", "signature_invalid"),
    ("CBDC-Nonce", "AB" * 16, "signature_invalid"),                # upper case is not canonical
    ("CBDC-Signature", "00" * 63, "signature_invalid"),
    ("CBDC-Timestamp", str(NOW + 1), "signature_invalid"),         # the timestamp is signed
    ("CBDC-Nonce", "cd" * 16, "signature_invalid"),                # so is the nonce
])
def test_malformed_or_altered_headers(header, value, code):
    with pytest.raises(Unauthorized) as exc:
        _verify(_headers(**{header: value}))
    assert exc.value.code == code


def test_missing_header():
    headers = _headers()
    del headers["CBDC-Signature"]
    with pytest.raises(Unauthorized) as exc:
        parse_signature(headers)
    assert exc.value.code == "signature_missing"


def test_the_request_signature_is_domain_separated():
    payload = request_payload("POST", "/v1/settlements", BODY, NOW, "ab" * 16)
    signature = bytes.fromhex(_headers()["CBDC-Signature"])
    assert crypto.verify(KEY.public_key, signature, crypto.PURPOSE_REQUEST, "cb", payload)
    assert not crypto.verify(KEY.public_key, signature, crypto.PURPOSE_TX, "cb", payload)
    assert not crypto.verify(KEY.public_key, signature, crypto.PURPOSE_REQUEST, "bank-a", payload)


async def test_memory_nonce_store_refuses_a_replay_and_stays_bounded():
    store = MemoryNonceStore(window_seconds=30, entries_max=4)
    sig = parse_signature(_headers())
    await check_nonce(store, sig)
    with pytest.raises(Unauthorized) as exc:
        await check_nonce(store, sig)
    assert exc.value.code == "nonce_reused"
    assert await store.remember("bank:bank-b", sig.nonce, NOW)  # nonces are per key id
    for n in range(2):
        assert await store.remember("bank:bank-a", f"{n:032x}", NOW + 100)
    assert await store.remember("bank:bank-a", f"{9:032x}", NOW + 100)  # old entries were forgotten
    assert len(store._seen) <= 4


NOTICE = SettlementNotice("bank-a:42", "bank-a", "bank-b", 2500, bytes(range(32)), NOW, bytes([9]) * 32)


def test_notice_round_trip_and_offline_verification():
    signature = sign_notice(KEY, NOTICE)
    notice, sig = notice_from_json(notice_to_json(NOTICE, signature))
    assert (notice, sig) == (NOTICE, signature)
    assert verify_notice(KEY.public_key, notice, sig)


@pytest.mark.parametrize("change", [dict(payment_id="bank-a:43"), dict(payer_bank="bank-c"),
                                    dict(payee_bank="bank-c"), dict(amount=2501), dict(tx_id=bytes(32)),
                                    dict(settled_at=NOW + 1), dict(tx_id=b"short"), dict(amount=-1),
                                    dict(reference=bytes(32)), dict(reference=b"short")])
def test_every_notice_field_is_bound(change):
    signature = sign_notice(KEY, NOTICE)
    assert not verify_notice(KEY.public_key, dataclasses.replace(NOTICE, **change), signature)


def test_a_notice_signature_is_not_a_request_or_tx_signature():
    signature = sign_notice(KEY, NOTICE)
    assert not verify_notice(KEY.public_key, NOTICE, KEY.sign(crypto.PURPOSE_TX, "cb", b"x"))
    assert verify_notice(KEY.public_key, NOTICE, signature)


@pytest.mark.parametrize("change", [{"amount": "2500"}, {"amount": 2500.0}, {"extra": 1}, {"tx_id": "zz"},
                                    {"payer_bank": "Bank A"}, {"reference": "00"}])
def test_malformed_notice_json_is_refused(change):
    obj = {**notice_to_json(NOTICE, sign_notice(KEY, NOTICE)), **change}
    with pytest.raises(Unprocessable) as exc:
        notice_from_json(obj)
    assert exc.value.code == "notice_invalid"
