"""The transaction model, its canonical encoding and its JSON wire form.

A transaction body names the format version, the ledger it is for (``cb`` or a bank id), its
kind, the outputs it spends (inputs), the outputs it creates, an optional payee on another
ledger (the cross-bank half of an ``outbound``), an optional reference (payment id or memo) and
an optional expiry. ``tx_id = SHA-256(canonical body bytes)``; witnesses (key, signature) are not
part of the body, so no signature malleability can change a tx id.

Canonical encoding, version 1 (all integers unsigned big-endian; documented in
docs/ARCHITECTURE.md and pinned by tests/vectors/transactions.json):

    u8  version                    = 1
    u8  len, ascii                 ledger id
    u8  kind code                  see KINDS
    u16 n_inputs,  n x (32B tx_id, u16 index, 32B owner, u64 amount)
    u16 n_outputs, n x (32B owner, u64 amount)
    u8  has_payee; if 1: (u8 len, ascii ledger id, 32B owner, u64 amount)
    u16 len, utf-8                 reference
    u64 expiry                     unix seconds; 0 = never

An input repeats the owner and amount of the output it spends, so the pure core can check
conservation and signatures without a database; the ledger spends an input only if its stored
owner and amount match (else ``input_mismatch``).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.crypto import KEY_BYTES, SIGNATURE_BYTES, sha256
from shared.errors import BadRequest, Unprocessable

VERSION = 1
TX_ID_BYTES = 32
LEDGER_CB = "cb"
LEDGER_ID_RE = re.compile(r"[a-z][a-z0-9-]{0,29}[a-z0-9]")  # 2..31 chars: fits an address
HEX32_RE = re.compile(r"[0-9a-f]{64}")
HEX64_RE = re.compile(r"[0-9a-f]{128}")
REFERENCE_BYTES_MAX = 256
ITEMS_MAX = 65535  # what the u16 counts can carry; ledgers set tighter limits

# value rules
CREATE = "create"      # no inputs; creates value matched by a tier-1 movement
DESTROY = "destroy"    # spends inputs, returns less as change; the difference leaves the ledger
BALANCED = "balanced"  # value in == value out (+ payee amount, for outbound)


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    code: int
    tier: int
    value_rule: str
    has_payee: bool = False


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("issue", 1, 1, CREATE),
    Kind("redeem", 2, 1, DESTROY),
    Kind("transfer", 3, 0, BALANCED),      # tier 0: valid on both tiers
    Kind("fund", 4, 1, BALANCED),
    Kind("defund", 5, 1, BALANCED),
    Kind("settle", 6, 1, BALANCED),
    Kind("mint", 7, 2, CREATE),
    Kind("burn", 8, 2, DESTROY),
    Kind("outbound", 9, 2, BALANCED, has_payee=True),
    Kind("inbound", 10, 2, CREATE),
)}
KINDS_BY_CODE: dict[int, Kind] = {k.code: k for k in KINDS.values()}


@dataclass(frozen=True, slots=True)
class Input:
    tx_id: bytes
    index: int
    owner: bytes
    amount: int

    @property
    def outpoint(self) -> tuple[bytes, int]:
        return (self.tx_id, self.index)


@dataclass(frozen=True, slots=True)
class Output:
    owner: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Payee:
    ledger: str
    owner: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Witness:
    key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Tx:
    """An unsigned transaction body. Constructing one checks nothing: shared.validation does."""
    ledger: str
    kind: str
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    payee: Payee | None = None
    reference: str = ""
    expiry: int = 0
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class SignedTx:
    body: Tx
    witnesses: tuple[Witness, ...] = field(default=())


# ---------------------------------------------------------------------------------------------
# canonical bytes

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_INPUT = struct.Struct(">32sH32sQ")
_OUTPUT = struct.Struct(">32sQ")


def encode_body(tx: Tx) -> bytes:
    """Canonical bytes of a body whose fields are in range (validation checks that first).

    Raises ValueError or struct.error for out-of-range fields; never returns ambiguous bytes.
    """
    kind = KINDS[tx.kind]
    ledger = tx.ledger.encode("ascii")
    parts = [_U8.pack(tx.version), _U8.pack(len(ledger)), ledger, _U8.pack(kind.code),
             _U16.pack(len(tx.inputs))]
    for i in tx.inputs:
        if len(i.tx_id) != TX_ID_BYTES or len(i.owner) != KEY_BYTES:
            raise ValueError("input field of the wrong length")
        parts.append(_INPUT.pack(i.tx_id, i.index, i.owner, i.amount))
    parts.append(_U16.pack(len(tx.outputs)))
    for o in tx.outputs:
        if len(o.owner) != KEY_BYTES:
            raise ValueError("output owner of the wrong length")
        parts.append(_OUTPUT.pack(o.owner, o.amount))
    if tx.payee is None:
        parts.append(b"\x00")
    else:
        payee_ledger = tx.payee.ledger.encode("ascii")
        if len(tx.payee.owner) != KEY_BYTES:
            raise ValueError("payee owner of the wrong length")
        parts += [b"\x01", _U8.pack(len(payee_ledger)), payee_ledger,
                  _OUTPUT.pack(tx.payee.owner, tx.payee.amount)]
    reference = tx.reference.encode("utf-8")
    parts += [_U16.pack(len(reference)), reference, _U64.pack(tx.expiry)]
    return b"".join(parts)


def tx_id_of(body_bytes: bytes) -> bytes:
    return sha256(body_bytes)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise BadRequest("body bytes end too early", code="malformed_encoding")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def ledger(self) -> str:
        (n,) = self.unpack(_U8)
        text = self.take(n).decode("ascii", errors="replace")
        if not LEDGER_ID_RE.fullmatch(text):
            raise BadRequest("invalid ledger id in body bytes", code="malformed_encoding")
        return text


def decode_body(data: bytes) -> Tx:
    """Parse canonical bytes; the result re-encodes to exactly ``data`` or this raises."""
    r = _Reader(data)
    (version,) = r.unpack(_U8)
    if version != VERSION:
        raise BadRequest(f"unsupported body version {version}", code="malformed_encoding")
    ledger = r.ledger()
    (code,) = r.unpack(_U8)
    if code not in KINDS_BY_CODE:
        raise BadRequest(f"unknown kind code {code}", code="malformed_encoding")
    (n,) = r.unpack(_U16)
    inputs = tuple(Input(*r.unpack(_INPUT)) for _ in range(n))
    (n,) = r.unpack(_U16)
    outputs = tuple(Output(*r.unpack(_OUTPUT)) for _ in range(n))
    (flag,) = r.unpack(_U8)
    payee = None
    if flag == 1:
        payee_ledger = r.ledger()
        payee = Payee(payee_ledger, *r.unpack(_OUTPUT))
    elif flag != 0:
        raise BadRequest("invalid payee flag", code="malformed_encoding")
    (n,) = r.unpack(_U16)
    try:
        reference = r.take(n).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("reference is not UTF-8", code="malformed_encoding") from None
    (expiry,) = r.unpack(_U64)
    if r.pos != len(data):
        raise BadRequest("trailing bytes after the body", code="malformed_encoding")
    tx = Tx(ledger, KINDS_BY_CODE[code].name, inputs, outputs, payee, reference, expiry, version)
    if encode_body(tx) != data:  # e.g. a reference whose UTF-8 is not the shortest form
        raise BadRequest("body bytes are not canonical", code="malformed_encoding")
    return tx


def encode_witnesses(witnesses: tuple[Witness, ...]) -> bytes:
    return b"".join(w.key + w.signature for w in witnesses)


def decode_witnesses(data: bytes) -> tuple[Witness, ...]:
    size = KEY_BYTES + SIGNATURE_BYTES
    if len(data) % size:
        raise BadRequest("witness bytes of the wrong length", code="malformed_encoding")
    return tuple(Witness(data[i:i + KEY_BYTES], data[i + KEY_BYTES:i + size])
                 for i in range(0, len(data), size))


# ---------------------------------------------------------------------------------------------
# JSON wire form: the body's fields plus "witnesses", hex for bytes, integers for amounts

_BODY_FIELDS = {"version", "ledger", "kind", "inputs", "outputs", "payee", "reference", "expiry"}
_SIGNED_FIELDS = _BODY_FIELDS | {"witnesses"}
_REQUIRED = ("version", "ledger", "kind", "inputs", "outputs")


def _fail(detail: str, code: str, field: str, index: int | None = None) -> Unprocessable:
    return Unprocessable(detail, code=code, index=index, extra={"field": field})


def _object(value: Any, allowed: set[str], required: tuple[str, ...], where: str,
            index: int | None = None) -> dict:
    if type(value) is not dict:
        raise _fail(f"{where} must be an object", "wrong_type", where, index)
    for name in value:
        if name not in allowed:
            raise _fail(f"unknown field {name!r} in {where}", "unknown_field", f"{where}.{name}", index)
    for name in required:
        if name not in value:
            raise _fail(f"missing field {name!r} in {where}", "field_missing", f"{where}.{name}", index)
    return value


def _int(value: Any, where: str, index: int | None = None) -> int:
    if type(value) is not int:  # bool, float, string, null are all refused
        raise _fail(f"{where} must be an integer", "wrong_type", where, index)
    return value


def _hex(value: Any, pattern: re.Pattern, where: str, index: int | None = None) -> bytes:
    if type(value) is not str or not pattern.fullmatch(value):
        raise _fail(f"{where} must be lower-case hex of the right length", "malformed_hex", where, index)
    return bytes.fromhex(value)


def _ledger(value: Any, where: str) -> str:
    if type(value) is not str or not LEDGER_ID_RE.fullmatch(value):
        raise _fail(f"{where} must be a ledger id like 'cb' or 'bank-a'", "ledger_invalid", where)
    return value


def _list(value: Any, where: str) -> list:
    if type(value) is not list:
        raise _fail(f"{where} must be an array", "wrong_type", where)
    if len(value) > ITEMS_MAX:
        raise _fail(f"{where} has too many items", "too_many_items", where)
    return value


def body_from_json(obj: Any, *, signed: bool = False) -> Tx:
    obj = _object(obj, _SIGNED_FIELDS if signed else _BODY_FIELDS, _REQUIRED, "transaction")
    version = _int(obj["version"], "version")
    ledger = _ledger(obj["ledger"], "ledger")
    kind = obj["kind"]
    if type(kind) is not str or kind not in KINDS:
        raise _fail(f"unknown kind {kind!r}", "kind_unknown", "kind")
    inputs = []
    for n, item in enumerate(_list(obj["inputs"], "inputs")):
        item = _object(item, {"tx_id", "index", "owner", "amount"}, ("tx_id", "index", "owner", "amount"),
                       "inputs", n)
        inputs.append(Input(_hex(item["tx_id"], HEX32_RE, "inputs.tx_id", n),
                            _int(item["index"], "inputs.index", n),
                            _hex(item["owner"], HEX32_RE, "inputs.owner", n),
                            _int(item["amount"], "inputs.amount", n)))
    outputs = []
    for n, item in enumerate(_list(obj["outputs"], "outputs")):
        item = _object(item, {"owner", "amount"}, ("owner", "amount"), "outputs", n)
        outputs.append(Output(_hex(item["owner"], HEX32_RE, "outputs.owner", n),
                              _int(item["amount"], "outputs.amount", n)))
    payee = None
    if obj.get("payee") is not None:
        item = _object(obj["payee"], {"ledger", "owner", "amount"}, ("ledger", "owner", "amount"), "payee")
        payee = Payee(_ledger(item["ledger"], "payee.ledger"), _hex(item["owner"], HEX32_RE, "payee.owner"),
                      _int(item["amount"], "payee.amount"))
    reference = obj.get("reference", "")
    if type(reference) is not str:
        raise _fail("reference must be a string", "wrong_type", "reference")
    expiry = _int(obj.get("expiry", 0), "expiry")
    return Tx(ledger, kind, tuple(inputs), tuple(outputs), payee, reference, expiry, version)


def signed_from_json(obj: Any) -> SignedTx:
    body = body_from_json(obj, signed=True)
    witnesses = []
    for n, item in enumerate(_list(obj.get("witnesses", []), "witnesses")):
        item = _object(item, {"key", "signature"}, ("key", "signature"), "witnesses", n)
        witnesses.append(Witness(_hex(item["key"], HEX32_RE, "witnesses.key", n),
                                 _hex(item["signature"], HEX64_RE, "witnesses.signature", n)))
    return SignedTx(body, tuple(witnesses))


def signed_from_bytes(data: bytes) -> SignedTx:
    """Decode one signed transaction from JSON bytes (orjson: rejects NaN, Infinity, bad UTF-8)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", code="malformed_json") from None
    return signed_from_json(obj)


def body_to_json(tx: Tx) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "version": tx.version,
        "ledger": tx.ledger,
        "kind": tx.kind,
        "inputs": [{"tx_id": i.tx_id.hex(), "index": i.index, "owner": i.owner.hex(), "amount": i.amount}
                   for i in tx.inputs],
        "outputs": [{"owner": o.owner.hex(), "amount": o.amount} for o in tx.outputs],
    }
    if tx.payee is not None:
        obj["payee"] = {"ledger": tx.payee.ledger, "owner": tx.payee.owner.hex(), "amount": tx.payee.amount}
    if tx.reference:
        obj["reference"] = tx.reference
    if tx.expiry:
        obj["expiry"] = tx.expiry
    return obj


def signed_to_json(stx: SignedTx) -> dict[str, Any]:
    obj = body_to_json(stx.body)
    obj["witnesses"] = [{"key": w.key.hex(), "signature": w.signature.hex()} for w in stx.witnesses]
    return obj
