"""Bech32 addresses: round trips, and every single-character typo refused."""
from __future__ import annotations

import pytest
from bech32 import bech32_decode, bech32_encode, convertbits

from shared.address import Address, decode_address, encode_address
from shared.crypto import PrivateKey
from shared.errors import Unprocessable
from shared.tx import LEDGER_ID_RE

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"  # BIP-173
KEY = PrivateKey(bytes([9]) * 32).public_key
KEY2 = PrivateKey(bytes([10]) * 32).public_key
ADDRESS = encode_address("bank-a", KEY)


def bip173_checksum_ok(address: str) -> bool:
    """The BIP-173 checksum, written out from the spec (independent of the bech32 package)."""
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    hrp, _, data = address.lower().rpartition("1")
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + [CHARSET.index(c) for c in data]
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk == 1


def invalid(text) -> Unprocessable:
    with pytest.raises(Unprocessable) as info:
        decode_address(text)
    assert info.value.code == "address_invalid" and info.value.status == 422
    return info.value


# ---------------------------------------------------------------------------------------------
# valid addresses


def test_round_trip():
    assert decode_address(ADDRESS) == Address("bank-a", KEY)
    assert str(Address("bank-a", KEY)) == ADDRESS


def test_shape():
    hrp, sep, data = ADDRESS.rpartition("1")
    assert (hrp, sep) == ("bank-a", "1")
    assert len(data) == 52 + 6  # 256 bits in 5-bit groups, then the checksum
    assert set(data) <= set(CHARSET)
    assert bip173_checksum_ok(ADDRESS)


@pytest.mark.parametrize("ledger", ["cb", "bank-a", "b0", "z" * 31, "a-9"])
@pytest.mark.parametrize("key", [KEY, KEY2])
def test_ledger_id_in_the_address_is_returned(ledger, key):
    address = encode_address(ledger, key)
    assert address.startswith(ledger + "1")
    assert decode_address(address) == Address(ledger, key)


def test_different_keys_and_ledgers_give_different_addresses():
    assert len({encode_address(l, k) for l in ("bank-a", "bank-b") for k in (KEY, KEY2)}) == 4


def test_every_valid_ledger_id_length_either_round_trips_or_is_refused_by_encode():
    """A ledger id the system accepts must not produce an address it cannot read back."""
    for length in range(2, 40):
        ledger = "a" * length
        if not LEDGER_ID_RE.fullmatch(ledger):
            continue
        try:
            address = encode_address(ledger, KEY)
        except ValueError:
            continue
        assert decode_address(address) == Address(ledger, KEY), f"ledger id of {length} characters"


def test_all_upper_case_is_accepted():
    assert decode_address(ADDRESS.upper()) == Address("bank-a", KEY)


def test_surrounding_whitespace_is_ignored():
    assert decode_address(f"  {ADDRESS}\n") == Address("bank-a", KEY)


# ---------------------------------------------------------------------------------------------
# typos


def _substitutes(ch: str) -> set[str]:
    others = set(CHARSET) | set("1bio") | {"B", "Q", "Z", "-", "!", " ", "~", "0", "é"}
    others |= {ch.upper(), ch.lower()}
    return others - {ch}


def test_every_single_character_substitution_is_refused():
    tried = 0
    for pos, ch in enumerate(ADDRESS):
        for sub in sorted(_substitutes(ch)):
            mutated = ADDRESS[:pos] + sub + ADDRESS[pos + 1:]
            assert mutated != ADDRESS
            with pytest.raises(Unprocessable) as info:
                decode_address(mutated)
            assert info.value.code == "address_invalid", (pos, sub)
            tried += 1
    assert tried >= len(ADDRESS) * len(CHARSET)


def test_every_single_character_substitution_of_an_upper_case_address_is_refused():
    upper = ADDRESS.upper()
    for pos, ch in enumerate(upper):
        for sub in sorted(({c.upper() for c in CHARSET} | {ch.lower()}) - {ch}):
            mutated = upper[:pos] + sub + upper[pos + 1:]
            assert mutated != upper
            invalid(mutated)


def test_adjacent_transpositions_are_refused():
    for pos in range(len(ADDRESS) - 1):
        a, b = ADDRESS[pos], ADDRESS[pos + 1]
        if a != b:
            invalid(ADDRESS[:pos] + b + a + ADDRESS[pos + 2:])


@pytest.mark.parametrize("pos", [0, 7, 30, -1])
def test_deleted_or_inserted_character_is_refused(pos):
    n = pos % len(ADDRESS)
    invalid(ADDRESS[:n] + ADDRESS[n + 1:])
    invalid(ADDRESS[:n] + "q" + ADDRESS[n:])


def test_mixed_case_is_refused():
    invalid(ADDRESS[:-1] + ADDRESS[-1].upper())
    invalid(ADDRESS[0].upper() + ADDRESS[1:])


# ---------------------------------------------------------------------------------------------
# well-formed Bech32 that is not an address


@pytest.mark.parametrize("data", [KEY[:31], KEY + b"\x00", b"", bytes(64)], ids=["31", "33", "0", "64"])
def test_wrong_length_key(data):
    address = bech32_encode("bank-a", convertbits(data, 8, 5))
    assert bech32_decode(address) != (None, None)  # a valid Bech32 string
    invalid(address)


def test_non_zero_padding_bits():
    groups = convertbits(KEY, 8, 5)
    assert len(groups) == 52 and groups[-1] & 0b1111 == 0  # 256 bits: 4 padding bits in the last group
    groups[-1] |= 1
    address = bech32_encode("bank-a", groups)
    assert bech32_decode(address)[1] == groups
    invalid(address)


@pytest.mark.parametrize("key", [bytes(32), bytes([1]) + bytes(31), bytes([0xED] + [0xFF] * 30 + [0x7F]),
                                 bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")],
                         ids=["zero", "identity", "non-canonical", "order-8"])
def test_key_that_is_not_a_valid_point(key):
    address = bech32_encode("bank-a", convertbits(key, 8, 5))
    assert bech32_decode(address) != (None, None)
    invalid(address)


@pytest.mark.parametrize("hrp", ["bank_a", "a", "-bank", "bank-", "x" * 33])
def test_hrp_that_is_not_a_ledger_id(hrp):
    address = bech32_encode(hrp, convertbits(KEY, 8, 5))
    assert not LEDGER_ID_RE.fullmatch(hrp)
    invalid(address)


@pytest.mark.parametrize("text", [None, b"bank-a1", 5, "", "1", "bank-a", "bank-a1", ADDRESS + "q" * 40],
                         ids=["none", "bytes", "int", "empty", "sep", "hrp", "no-data", "too-long"])
def test_not_an_address(text):
    invalid(text)


def test_encode_refuses_bad_input():
    with pytest.raises(ValueError):
        encode_address("Bank-A", KEY)
    with pytest.raises(ValueError):
        encode_address("bank-a", KEY[:31])
