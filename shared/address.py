"""Human-facing addresses: Bech32 (BIP-173) with the ledger id as the human-readable part.

``bank-a1q…`` names the bank (``bank-a``) and the owner key; its 6-character checksum catches
every single-character typo (and any error in up to four characters), so a mistyped address is
refused instead of paid to. Addresses are lower case; an all-upper-case address is accepted (as
Bech32 allows, e.g. for QR codes), a mixed-case one is not.
"""
from __future__ import annotations

from dataclasses import dataclass

from bech32 import bech32_decode, bech32_encode, convertbits

from shared.crypto import KEY_BYTES, is_valid_public_key
from shared.errors import Unprocessable
from shared.tx import LEDGER_ID_RE

ADDRESS_CHARS_MAX = 90


@dataclass(frozen=True, slots=True)
class Address:
    ledger: str
    key: bytes

    def __str__(self) -> str:
        return encode_address(self.ledger, self.key)


def encode_address(ledger: str, key: bytes) -> str:
    if not LEDGER_ID_RE.fullmatch(ledger) or len(key) != KEY_BYTES:
        raise ValueError("an address needs a ledger id and a 32-byte key")
    return bech32_encode(ledger, convertbits(key, 8, 5))


def decode_address(text: str) -> Address:
    """Parse an address; raise Unprocessable(code="address_invalid") for any defect."""
    if type(text) is not str or len(text) > ADDRESS_CHARS_MAX:
        raise Unprocessable("not an address", code="address_invalid")
    ledger, data = bech32_decode(text.strip())
    if ledger is None or data is None:
        raise Unprocessable("address checksum or characters are wrong (a typo?)", code="address_invalid")
    key = convertbits(data, 5, 8, False)
    if key is None or len(key) != KEY_BYTES or not LEDGER_ID_RE.fullmatch(ledger):
        raise Unprocessable("address has the wrong length or bank id", code="address_invalid")
    key = bytes(key)
    if not is_valid_public_key(key):
        raise Unprocessable("address does not hold a valid public key", code="address_invalid")
    return Address(ledger, key)
