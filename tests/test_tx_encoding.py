"""Canonical body encoding and the JSON wire form, pinned by tests/vectors/transactions.json.

The vectors were written once by tests/vectors/make_vectors.py; this file only reads them. Each
vector is checked three ways: against the production encoder, against an independent encoder
written here from the format description in shared/tx.py's docstring, and by validating it under
rules rebuilt from the same fixed-seed keys.
"""
from __future__ import annotations

import copy
import hashlib
import json
import struct
from pathlib import Path

import orjson
import pytest

from shared.crypto import PrivateKey
from shared.errors import BadRequest, Unprocessable
from shared.tx import (Input, Output, Payee, SignedTx, Tx, Witness, body_from_json, body_to_json,
                       decode_body, encode_body, signed_from_bytes, signed_from_json, signed_to_json)
from shared.validation import LedgerRules, validate

VECTORS_FILE = Path(__file__).parent / "vectors" / "transactions.json"
DATA = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
VECTORS = {v["name"]: v for v in DATA["vectors"]}

# The seeds the vectors were made with (see make_vectors.py); keys are rebuilt from them here.
SEEDS = {"bank_a_mint": 0x11, "bank_b_mint": 0x12, "cb": 0x13, "bank_a": 0x14, "bank_b": 0x15,
         "alice": 0x21, "bob": 0x22, "carol": 0x23}
KEYS = {name: PrivateKey(bytes([seed]) * 32) for name, seed in SEEDS.items()}
ESCROWS = {"escrow_a": b"escrow:bank-a".ljust(32, b"\x00"), "escrow_b": b"escrow:bank-b".ljust(32, b"\x00")}

# Kind codes are part of the canonical format (never renumber one).
KIND_CODES = {"issue": 1, "redeem": 2, "transfer": 3, "fund": 4, "defund": 5, "settle": 6,
              "mint": 7, "burn": 8, "outbound": 9, "inbound": 10}


def spec_encode(obj: dict) -> bytes:
    """An independent encoder for the JSON form, straight from the layout in shared/tx.py."""
    out = bytearray()
    out += bytes([obj["version"]])
    ledger = obj["ledger"].encode("ascii")
    out += bytes([len(ledger)]) + ledger
    out += bytes([KIND_CODES[obj["kind"]]])
    out += len(obj["inputs"]).to_bytes(2, "big")
    for i in obj["inputs"]:
        out += bytes.fromhex(i["tx_id"]) + i["index"].to_bytes(2, "big")
        out += bytes.fromhex(i["owner"]) + i["amount"].to_bytes(8, "big")
    out += len(obj["outputs"]).to_bytes(2, "big")
    for o in obj["outputs"]:
        out += bytes.fromhex(o["owner"]) + o["amount"].to_bytes(8, "big")
    payee = obj.get("payee")
    if payee is None:
        out += b"\x00"
    else:
        pl = payee["ledger"].encode("ascii")
        out += b"\x01" + bytes([len(pl)]) + pl + bytes.fromhex(payee["owner"]) + payee["amount"].to_bytes(8, "big")
    ref = obj.get("reference", "").encode("utf-8")
    out += len(ref).to_bytes(2, "big") + ref
    out += obj.get("expiry", 0).to_bytes(8, "big")
    return bytes(out)


def rules_for(vector: dict) -> LedgerRules:
    spec = vector["rules"]
    return LedgerRules(spec["ledger"], mint_authority=KEYS[spec["mint_authority"]].public_key,
                       owner_signers={ESCROWS[e]: KEYS[k].public_key for e, k in spec["owner_signers"].items()})


# ---------------------------------------------------------------------------------------------
# the vectors file


def test_vectors_file_was_made_with_these_seeds():
    assert DATA["seeds"] == SEEDS
    assert {k: bytes.fromhex(v) for k, v in DATA["escrows"].items()} == ESCROWS


def test_vectors_cover_the_intended_shapes():
    kinds = {v["json"]["kind"] for v in VECTORS.values()}
    assert {"mint", "transfer", "outbound", "burn", "settle"} <= kinds
    assert len(VECTORS) == len(DATA["vectors"]) >= 6  # names are unique
    assert any("payee" in v["json"] and "expiry" in v["json"] for v in VECTORS.values())
    assert any(v["json"]["kind"] == "burn" and not v["json"]["outputs"] for v in VECTORS.values())
    assert any(not v["json"].get("reference", "").isascii() for v in VECTORS.values())
    assert any(len(v["json"]["inputs"]) == 2 and len(v["json"]["outputs"]) == 2 for v in VECTORS.values())
    assert any(v["rules"]["owner_signers"] for v in VECTORS.values())


@pytest.fixture(params=sorted(VECTORS), name="vector")
def _vector(request):
    return VECTORS[request.param]


def test_json_reencodes_to_the_stored_bytes(vector):
    stx = signed_from_json(vector["json"])
    assert encode_body(stx.body).hex() == vector["body_hex"]


def test_independent_encoder_agrees(vector):
    assert spec_encode(vector["json"]).hex() == vector["body_hex"]


def test_tx_id_is_sha256_of_the_body(vector):
    assert hashlib.sha256(bytes.fromhex(vector["body_hex"])).hexdigest() == vector["tx_id"]


def test_decode_body_gives_the_json_body(vector):
    body = decode_body(bytes.fromhex(vector["body_hex"]))
    assert body == signed_from_json(vector["json"]).body
    assert body_to_json(body) == {k: v for k, v in vector["json"].items() if k != "witnesses"}


def test_json_round_trip(vector):
    stx = signed_from_json(vector["json"])
    assert signed_to_json(stx) == vector["json"]
    assert signed_from_bytes(orjson.dumps(vector["json"])) == stx
    assert signed_from_bytes(json.dumps(vector["json"]).encode()) == stx  # ASCII escapes too


def test_witnesses_are_the_signers_keys(vector):
    stx = signed_from_json(vector["json"])
    stored = tuple(Witness(bytes.fromhex(w["key"]), bytes.fromhex(w["signature"])) for w in vector["witnesses"])
    assert stx.witnesses == stored
    assert [w.key for w in stored] == [KEYS[s].public_key for s in vector["signers"]]


def test_vector_validates(vector):
    stx = signed_from_json(vector["json"])
    valid = validate(stx, rules_for(vector), vector["now"])
    assert valid.tx_id.hex() == vector["tx_id"]
    assert valid.body_bytes.hex() == vector["body_hex"]


def test_vector_does_not_validate_on_another_ledger(vector):
    other = "bank-z" if vector["rules"]["ledger"] == "cb" else "cb"
    with pytest.raises(Unprocessable) as info:
        validate(signed_from_json(vector["json"]), LedgerRules(other), vector["now"])
    assert info.value.code == "wrong_ledger"


# ---------------------------------------------------------------------------------------------
# decode_body: every defect is a BadRequest(malformed_encoding)

SIMPLE = Tx("bank-a", "transfer", (Input(bytes([7]) * 32, 1, KEYS["alice"].public_key, 10),),
            (Output(KEYS["bob"].public_key, 10),), reference="ab", expiry=5)
SIMPLE_BYTES = encode_body(SIMPLE)
# offsets in SIMPLE_BYTES, from the layout: version, len+"bank-a", kind, 1 input, 1 output, flag, ref
KIND_AT = 1 + 1 + 6
FLAG_AT = KIND_AT + 1 + 2 + 74 + 2 + 40
REF_AT = FLAG_AT + 1 + 2


def malformed(data: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        decode_body(data)
    assert info.value.code == "malformed_encoding" and info.value.status == 400
    return info.value


def test_simple_layout_offsets():
    assert SIMPLE_BYTES[KIND_AT] == KIND_CODES["transfer"]
    assert SIMPLE_BYTES[FLAG_AT] == 0
    assert SIMPLE_BYTES[REF_AT:REF_AT + 2] == b"ab"
    assert len(SIMPLE_BYTES) == REF_AT + 2 + 8
    assert decode_body(SIMPLE_BYTES) == SIMPLE


def test_every_truncation_is_refused(vector):
    data = bytes.fromhex(vector["body_hex"])
    for n in range(len(data)):
        malformed(data[:n])


@pytest.mark.parametrize("extra", [b"\x00", b"\x01", bytes(8)])
def test_trailing_bytes(extra):
    malformed(SIMPLE_BYTES + extra)


@pytest.mark.parametrize("code", [0, 11, 0x7F, 0xFF])
def test_unknown_kind_code(code):
    data = bytearray(SIMPLE_BYTES)
    data[KIND_AT] = code
    malformed(bytes(data))


@pytest.mark.parametrize("flag", [2, 0x80, 0xFF])
def test_bad_payee_flag(flag):
    data = bytearray(SIMPLE_BYTES)
    data[FLAG_AT] = flag
    malformed(bytes(data))


def test_payee_flag_1_without_a_payee():
    data = bytearray(SIMPLE_BYTES)
    data[FLAG_AT] = 1
    malformed(bytes(data))


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0", b"a\x80"],
                         ids=["ff-fe", "bad-continuation", "overlong", "surrogate-start", "lone-continuation"])
def test_invalid_utf8_reference(bad):
    data = SIMPLE_BYTES[:REF_AT] + bad + SIMPLE_BYTES[REF_AT + 2:]
    assert len(data) == len(SIMPLE_BYTES)
    malformed(data)


def test_overlong_utf8_reference_of_a_nul():
    data = SIMPLE_BYTES[:REF_AT] + b"\xc0\x80" + SIMPLE_BYTES[REF_AT + 2:]
    malformed(data)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_other_versions(version):
    malformed(bytes([version]) + SIMPLE_BYTES[1:])


@pytest.mark.parametrize("ledger", [b"CB", b"bank_a", b"", b"bank-\xe9"])
def test_invalid_ledger_id_in_body(ledger):
    malformed(SIMPLE_BYTES[:1] + bytes([len(ledger)]) + ledger + SIMPLE_BYTES[KIND_AT:])


def test_input_count_larger_than_the_data():
    data = bytearray(SIMPLE_BYTES)
    struct.pack_into(">H", data, KIND_AT + 1, 2)
    malformed(bytes(data))


def test_empty():
    malformed(b"")


# ---------------------------------------------------------------------------------------------
# JSON wire form: strict decoding

BASE_JSON = VECTORS["transfer_2in_2out"]["json"]
OUTBOUND_JSON = VECTORS["outbound_payee_expiry"]["json"]


def wire_error(obj, code: str, field: str | None = None, index: int | None = None, cls=Unprocessable):
    with pytest.raises(cls) as info:
        signed_from_json(obj)
    err = info.value
    assert err.code == code, repr(err)
    if field is not None:
        assert err.extra.get("field") == field, repr(err)
    assert err.index == index, repr(err)
    return err


def edited(base: dict = BASE_JSON, **top) -> dict:
    obj = copy.deepcopy(base)
    obj.update(top)
    return obj


def test_base_json_decodes():
    assert signed_from_json(copy.deepcopy(BASE_JSON)) == signed_from_json(BASE_JSON)


def test_unknown_top_level_field():
    wire_error(edited(memo="hi"), "unknown_field", "transaction.memo")


def test_unknown_field_in_an_input():
    obj = edited()
    obj["inputs"][1]["note"] = 1
    wire_error(obj, "unknown_field", "inputs.note", 1)


def test_unknown_field_in_an_output_payee_and_witness():
    obj = edited()
    obj["outputs"][0]["x"] = 1
    wire_error(obj, "unknown_field", "outputs.x", 0)
    obj = edited(OUTBOUND_JSON)
    obj["payee"]["x"] = 1
    wire_error(obj, "unknown_field", "payee.x")
    obj = edited()
    obj["witnesses"][1]["x"] = 1
    wire_error(obj, "unknown_field", "witnesses.x", 1)


def test_witnesses_are_not_a_body_field():
    with pytest.raises(Unprocessable) as info:
        body_from_json(edited())
    assert info.value.code == "unknown_field"
    body_from_json({k: v for k, v in BASE_JSON.items() if k != "witnesses"})


@pytest.mark.parametrize("name", ["version", "ledger", "kind", "inputs", "outputs"])
def test_missing_top_level_field(name):
    obj = edited()
    del obj[name]
    wire_error(obj, "field_missing", f"transaction.{name}")


@pytest.mark.parametrize("name", ["tx_id", "index", "owner", "amount"])
def test_missing_input_field(name):
    obj = edited()
    del obj["inputs"][1][name]
    wire_error(obj, "field_missing", f"inputs.{name}", 1)


def test_missing_output_payee_and_witness_fields():
    obj = edited()
    del obj["outputs"][1]["owner"]
    wire_error(obj, "field_missing", "outputs.owner", 1)
    obj = edited(OUTBOUND_JSON)
    del obj["payee"]["amount"]
    wire_error(obj, "field_missing", "payee.amount")
    obj = edited()
    del obj["witnesses"][0]["signature"]
    wire_error(obj, "field_missing", "witnesses.signature", 0)


def test_optional_fields_may_be_absent():
    obj = edited()
    for name in ("reference", "witnesses"):
        obj.pop(name, None)
    stx = signed_from_json(obj)
    assert stx.body.reference == "" and stx.body.expiry == 0 and stx.body.payee is None
    assert stx.witnesses == ()


@pytest.mark.parametrize("value", [1.0, "1", True, False, None, [1], {"v": 1}],
                         ids=["float", "string", "true", "false", "null", "list", "object"])
@pytest.mark.parametrize("where", ["outputs.amount", "inputs.amount", "inputs.index"])
def test_integer_fields_refuse_other_types(where, value):
    obj = edited()
    items, name = where.split(".")
    obj[items][0][name] = value
    wire_error(obj, "wrong_type", where, 0)


@pytest.mark.parametrize("value", [1.0, "1", True, None])
def test_version_and_expiry_refuse_other_types(value):
    wire_error(edited(version=value), "wrong_type", "version")
    wire_error(edited(expiry=value), "wrong_type", "expiry")


@pytest.mark.parametrize("value", [1.0, "1", True, None])
def test_payee_amount_refuses_other_types(value):
    obj = edited(OUTBOUND_JSON)
    obj["payee"]["amount"] = value
    wire_error(obj, "wrong_type", "payee.amount")


@pytest.mark.parametrize("value", [5, None, ["x"]])
def test_reference_must_be_a_string(value):
    wire_error(edited(reference=value), "wrong_type", "reference")


@pytest.mark.parametrize("value", [{}, "[]", None, 3])
def test_inputs_must_be_an_array(value):
    wire_error(edited(inputs=value), "wrong_type", "inputs")


@pytest.mark.parametrize("value", [[], "{}", None, 1])
def test_transaction_must_be_an_object(value):
    wire_error(value, "wrong_type", "transaction")


@pytest.mark.parametrize("value", ["x", None, [1]])
def test_each_input_must_be_an_object(value):
    obj = edited()
    obj["inputs"][1] = value
    wire_error(obj, "wrong_type", "inputs", 1)


@pytest.mark.parametrize("mangle", [lambda h: "AB" + h[2:], lambda h: h[:-2], lambda h: h + "00", lambda h: "zz" + h[2:],
                                    lambda h: "0x" + h[2:], lambda h: " " + h[1:], lambda h: 5],
                         ids=["upper", "short", "long", "not-hex", "0x", "space", "int"])
@pytest.mark.parametrize("where", [("inputs", 1, "tx_id"), ("inputs", 0, "owner"), ("outputs", 1, "owner"),
                                   ("witnesses", 1, "key"), ("witnesses", 0, "signature")],
                         ids=lambda w: ".".join(map(str, w)))
def test_malformed_hex(where, mangle):
    obj = edited()
    items, n, name = where
    obj[items][n][name] = mangle(obj[items][n][name])
    wire_error(obj, "malformed_hex", f"{items}.{name}", n)


@pytest.mark.parametrize("where", [("inputs", 0, "owner"), ("outputs", 1, "owner"), ("witnesses", 0, "key"),
                                   ("witnesses", 1, "signature")], ids=lambda w: ".".join(map(str, w)))
def test_whole_hex_in_upper_case(where):
    obj = edited()
    items, n, name = where
    assert obj[items][n][name].upper() != obj[items][n][name]
    obj[items][n][name] = obj[items][n][name].upper()
    wire_error(obj, "malformed_hex", f"{items}.{name}", n)


def test_malformed_hex_in_payee_owner():
    obj = edited(OUTBOUND_JSON)
    obj["payee"]["owner"] = obj["payee"]["owner"].upper()
    wire_error(obj, "malformed_hex", "payee.owner")


@pytest.mark.parametrize("kind", ["gift", "Transfer", "", 3, None])
def test_unknown_kind(kind):
    wire_error(edited(kind=kind), "kind_unknown", "kind")


@pytest.mark.parametrize("ledger", ["CB", "bank_a", "", 7, None, "a" * 33])
def test_invalid_ledger(ledger):
    wire_error(edited(ledger=ledger), "ledger_invalid", "ledger")
    obj = edited(OUTBOUND_JSON)
    obj["payee"]["ledger"] = ledger
    wire_error(obj, "ledger_invalid", "payee.ledger")


def _text(obj: dict) -> bytes:
    return orjson.dumps(obj)


@pytest.mark.parametrize("data", [
    _text(BASE_JSON).replace(b'"amount":90000', b'"amount":1e309'),
    _text(BASE_JSON).replace(b'"amount":90000', b'"amount":NaN'),
    _text(BASE_JSON).replace(b'"amount":90000', b'"amount":Infinity'),
    _text(BASE_JSON).replace(b'"invoice', b'"\xff\xfenvoice'),
    _text(BASE_JSON)[:-1],
    _text(BASE_JSON)[:20],
    b"",
    b"{",
    _text(BASE_JSON) + b"}",
], ids=["1e309", "NaN", "Infinity", "invalid-utf8", "truncated-end", "truncated-start", "empty", "brace",
        "trailing"])
def test_malformed_json(data):
    assert data != _text(BASE_JSON)
    with pytest.raises(BadRequest) as info:
        signed_from_bytes(data)
    assert info.value.code == "malformed_json" and info.value.status == 400


def test_bytes_form_applies_the_same_field_rules():
    data = _text(BASE_JSON).replace(b'"amount":90000', b'"amount":90000.0')
    with pytest.raises(Unprocessable) as info:
        signed_from_bytes(data)
    assert info.value.code == "wrong_type" and info.value.index == 0


def test_valid_bytes_decode():
    assert signed_from_bytes(_text(BASE_JSON)) == signed_from_json(BASE_JSON)
    assert isinstance(signed_from_bytes(_text(BASE_JSON)), SignedTx)


def test_decoded_types_are_exact():
    stx = signed_from_json(OUTBOUND_JSON)
    assert type(stx.body.payee) is Payee
    assert all(type(i) is Input for i in stx.body.inputs)
    assert all(type(o) is Output for o in stx.body.outputs)
    assert all(type(w.key) is bytes and type(w.signature) is bytes for w in stx.witnesses)
