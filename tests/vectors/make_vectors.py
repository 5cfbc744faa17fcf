"""How tests/vectors/transactions.json was made (run once; the tests never regenerate it).

    .venv/bin/python tests/vectors/make_vectors.py            # write transactions.json
    .venv/bin/python tests/vectors/make_vectors.py --check    # compare with the stored file

Every key comes from a fixed seed (``bytes([n]) * 32``) and Ed25519 signatures are deterministic,
so the output is reproducible byte for byte. Each vector records:

    name        what it shows
    rules       the ledger it is valid on: ledger id, mint authority and owner signers (by seed name)
    now         a unix time at which it validates
    json        the JSON wire form (shared.tx.signed_to_json)
    body_hex    the canonical body bytes (shared.tx.encode_body)
    tx_id       SHA-256 of the body bytes
    witnesses   [{key, signature}] in hex (the same as json["witnesses"])

If the canonical encoding ever changes, these vectors must fail: that is their purpose. A
deliberate format change needs a new version number, not a regenerated file.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared.crypto import PrivateKey  # noqa: E402
from shared.tx import Input, Output, Payee, Tx, encode_body, signed_to_json, tx_id_of  # noqa: E402
from shared.validation import LedgerRules, sign, validate  # noqa: E402

OUT = Path(__file__).with_name("transactions.json")

SEEDS = {"bank_a_mint": 0x11, "bank_b_mint": 0x12, "cb": 0x13, "bank_a": 0x14, "bank_b": 0x15,
         "alice": 0x21, "bob": 0x22, "carol": 0x23}
KEYS = {name: PrivateKey(bytes([seed]) * 32) for name, seed in SEEDS.items()}
PK = {name: key.public_key for name, key in KEYS.items()}
ESCROWS = {"escrow_a": b"escrow:bank-a".ljust(32, b"\x00"), "escrow_b": b"escrow:bank-b".ljust(32, b"\x00")}
NOW = 1_750_000_000

RULES = {
    "bank-a": {"ledger": "bank-a", "mint_authority": "bank_a_mint", "owner_signers": {}},
    "cb": {"ledger": "cb", "mint_authority": "cb",
           "owner_signers": {"escrow_a": "bank_a", "escrow_b": "bank_b"}},
}


def rules_of(spec: dict) -> LedgerRules:
    return LedgerRules(spec["ledger"], mint_authority=PK[spec["mint_authority"]],
                       owner_signers={ESCROWS[e]: PK[k] for e, k in spec["owner_signers"].items()})


def txid(n: int) -> bytes:
    return bytes([n]) * 32


def vectors() -> list[tuple[str, str, Tx, tuple[str, ...]]]:
    """(name, rules key, body, signer names)."""
    return [
        ("mint", "bank-a", Tx("bank-a", "mint", (), (Output(PK["alice"], 150_000),), reference="mint 1"),
         ("bank_a_mint",)),
        ("transfer_2in_2out", "bank-a",
         Tx("bank-a", "transfer",
            (Input(txid(0x01), 0, PK["alice"], 100_000), Input(txid(0x02), 1, PK["bob"], 2_500)),
            (Output(PK["carol"], 90_000), Output(PK["alice"], 12_500)),
            reference="invoice 2024-0042"),
         ("alice", "bob")),
        ("outbound_payee_expiry", "bank-a",
         Tx("bank-a", "outbound", (Input(txid(0x03), 2, PK["alice"], 5_000),),
            (Output(PK["alice"], 1_234),), payee=Payee("bank-b", PK["bob"], 3_766),
            reference="pay-7f3a", expiry=NOW + 600),
         ("alice",)),
        ("burn_no_outputs", "bank-a",
         Tx("bank-a", "burn", (Input(txid(0x04), 0, PK["carol"], 777),), ()),
         ("carol",)),
        ("settle_escrow", "cb",
         Tx("cb", "settle", (Input(txid(0x05), 0, ESCROWS["escrow_a"], 1_000_000),),
            (Output(ESCROWS["escrow_b"], 400_000), Output(ESCROWS["escrow_a"], 600_000)),
            reference="batch 17"),
         ("bank_a",)),
        ("transfer_unicode_reference", "bank-a",
         Tx("bank-a", "transfer", (Input(txid(0x06), 65535, PK["bob"], 42),), (Output(PK["alice"], 42),),
            reference="Café ☕ — 東京 💶"),
         ("bob",)),
    ]


def build() -> dict:
    out = []
    for name, rules_key, body, signers in vectors():
        stx = sign(body, *(KEYS[s] for s in signers))
        valid = validate(stx, rules_of(RULES[rules_key]), NOW)  # never write a vector that fails
        body_bytes = encode_body(body)
        assert valid.body_bytes == body_bytes
        out.append({
            "name": name,
            "rules": RULES[rules_key],
            "signers": list(signers),
            "now": NOW,
            "json": signed_to_json(stx),
            "body_hex": body_bytes.hex(),
            "tx_id": tx_id_of(body_bytes).hex(),
            "witnesses": [{"key": w.key.hex(), "signature": w.signature.hex()} for w in stx.witnesses],
        })
    return {
        "about": "Canonical encoding vectors, format version 1. Made by tests/vectors/make_vectors.py; "
                 "keys are PrivateKey(bytes([seed]) * 32).",
        "seeds": SEEDS,
        "escrows": {name: value.hex() for name, value in ESCROWS.items()},
        "vectors": out,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        same = OUT.read_text(encoding="utf-8") == text
        print("transactions.json is up to date" if same else "transactions.json differs")
        sys.exit(0 if same else 1)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
