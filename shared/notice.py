"""Settlement notices: the central bank's signed statement that a payment was settled at tier 1.

A payee's bank verifies one offline with ``verify_notice(central_bank_key, notice, signature)``
and then credits the payment, once (by payment id). The signature is Ed25519 over
crypto.PURPOSE_NOTICE, ledger "cb", of the notice's canonical bytes (unsigned big-endian):

    u8  version = 1
    u16 len, utf-8   payment id
    u8  len, ascii   payer bank id
    u8  len, ascii   payee bank id
    u64              amount (minor units)
    32B              tier-1 tx id (the settle transaction)
    u64              settled_at (unix seconds)
    32B              reference: opaque to the central bank; the payer bank sets it to the tx id
                     of the payer-signed ``outbound`` transaction, so the payee bank can check
                     that the outbound it is shown (payee key, amount) is the one that settled
                     (all zeros: unbound; a payee bank refuses such a notice)

Version 2 added the reference (version 1 had none).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

from shared import crypto
from shared.errors import Unprocessable
from shared.tx import LEDGER_CB, LEDGER_ID_RE

NOTICE_VERSION = 2
REFERENCE_BYTES = 32
UNBOUND = bytes(REFERENCE_BYTES)
PAYMENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class SettlementNotice:
    payment_id: str
    payer_bank: str
    payee_bank: str
    amount: int
    tx_id: bytes
    settled_at: int
    reference: bytes = UNBOUND


def encode_notice(n: SettlementNotice) -> bytes:
    payment_id = n.payment_id.encode("utf-8")
    payer, payee = n.payer_bank.encode("ascii"), n.payee_bank.encode("ascii")
    if len(n.tx_id) != 32 or len(n.reference) != REFERENCE_BYTES:
        raise ValueError("a notice names a 32-byte tx id and a 32-byte reference")
    return b"".join((bytes([NOTICE_VERSION]), struct.pack(">H", len(payment_id)), payment_id,
                     bytes([len(payer)]), payer, bytes([len(payee)]), payee, _U64.pack(n.amount),
                     n.tx_id, _U64.pack(n.settled_at), n.reference))


def sign_notice(key: crypto.PrivateKey, n: SettlementNotice) -> bytes:
    return key.sign(crypto.PURPOSE_NOTICE, LEDGER_CB, encode_notice(n))


def verify_notice(central_bank_key: bytes, n: SettlementNotice, signature: bytes) -> bool:
    """True if the central bank signed exactly this notice; False for any defect, never raises."""
    try:
        payload = encode_notice(n)
    except (ValueError, struct.error, UnicodeEncodeError, TypeError, AttributeError):
        return False
    return crypto.verify(central_bank_key, signature, crypto.PURPOSE_NOTICE, LEDGER_CB, payload)


def notice_to_json(n: SettlementNotice, signature: bytes) -> dict[str, Any]:
    return {"payment_id": n.payment_id, "payer_bank": n.payer_bank, "payee_bank": n.payee_bank,
            "amount": n.amount, "tx_id": n.tx_id.hex(), "settled_at": n.settled_at,
            "reference": n.reference.hex(), "signature": signature.hex()}


_FIELDS = ("payment_id", "payer_bank", "payee_bank", "amount", "tx_id", "settled_at", "reference",
           "signature")


def notice_from_json(obj: Any) -> tuple[SettlementNotice, bytes]:
    """Parse a notice as ``notice_to_json`` writes it (Unprocessable on any defect)."""
    if type(obj) is not dict or set(obj) != set(_FIELDS):
        raise Unprocessable("a notice has exactly the fields " + ", ".join(_FIELDS), code="notice_invalid")
    ok = (type(obj["payment_id"]) is str and PAYMENT_ID_RE.fullmatch(obj["payment_id"])
          and all(type(obj[f]) is str and LEDGER_ID_RE.fullmatch(obj[f]) for f in ("payer_bank", "payee_bank"))
          and all(type(obj[f]) is int and 0 <= obj[f] < 2**64 for f in ("amount", "settled_at"))
          and all(type(obj[f]) is str and re.fullmatch(r"[0-9a-f]+", obj[f]) for f in ("tx_id", "reference", "signature"))
          and len(obj["tx_id"]) == 64 and len(obj["reference"]) == 64 and len(obj["signature"]) == 128)
    if not ok:
        raise Unprocessable("a notice field has the wrong type or form", code="notice_invalid")
    notice = SettlementNotice(obj["payment_id"], obj["payer_bank"], obj["payee_bank"], obj["amount"],
                              bytes.fromhex(obj["tx_id"]), obj["settled_at"], bytes.fromhex(obj["reference"]))
    return notice, bytes.fromhex(obj["signature"])
