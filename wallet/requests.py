"""Payment requests: a signed URI naming the receive address, amount, memo and expiry.

    cbdc:<address>?amount=12.34[&memo=<percent-encoded UTF-8>][&expires=<unix seconds>]&sig=<base64url>

The parameters appear in this order, each at most once; ``amount`` has two decimals (major
units). ``sig`` is the payee key's Ed25519 signature over every character before ``&sig=``,
domain-separated (purpose ``payment-request``, ledger = the address's bank), so a changed amount,
memo, expiry or address fails verification instead of misdirecting a payment. The parser accepts
only the canonical spelling (it re-encodes the fields and compares), so one request has one text.

Refusals (``RequestError`` codes): ``request_malformed``, ``address_invalid``,
``request_signature_invalid``, ``request_expired``.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import segno

from shared import crypto
from shared.address import Address, decode_address
from shared.amounts import format_major, is_amount, parse_major
from shared.errors import Unprocessable
from shared.tx import REFERENCE_BYTES_MAX
from wallet.errors import RequestError
from wallet.keystore import PURPOSE_PAYMENT_REQUEST, Account, Keystore

SCHEME = "cbdc:"
MEMO_CHARS_MAX = 140
REQUEST_CHARS_MAX = 1024
_SIG_SEPARATOR = "&sig="
_PARAM_ORDER = ("amount", "memo", "expires")
_SIG_RE = re.compile(r"[A-Za-z0-9_-]{86}")
_EXPIRES_RE = re.compile(r"[1-9][0-9]{0,11}")


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    address: Address
    amount: int          # minor units
    memo: str = ""
    expires: int = 0     # unix seconds; 0 = never

    def payload(self) -> str:
        """The canonical unsigned text: what the signature covers."""
        params = [f"amount={format_major(self.amount)}"]
        if self.memo:
            params.append(f"memo={quote(self.memo, safe='')}")
        if self.expires:
            params.append(f"expires={self.expires}")
        return f"{SCHEME}{self.address}?{'&'.join(params)}"


def check_memo(memo: str) -> None:
    if len(memo) > MEMO_CHARS_MAX or len(memo.encode("utf-8", "surrogatepass")) > REFERENCE_BYTES_MAX:
        raise RequestError(f"a memo is at most {MEMO_CHARS_MAX} characters", code="memo_invalid")
    if not memo.isprintable():
        raise RequestError("a memo must not contain control characters", code="memo_invalid")


def make_request(keystore: Keystore, account: Account, amount: int, *, memo: str = "", expires: int = 0) -> str:
    """A signed payment request to ``account``'s address."""
    if not is_amount(amount):
        raise RequestError("the amount must be positive and at most the supply cap", code="amount_invalid")
    check_memo(memo)
    if expires < 0:
        raise RequestError("expiry must be a unix time", code="request_malformed")
    request = PaymentRequest(Address(account.bank, account.public_key), amount, memo, expires)
    payload = request.payload()
    signature = keystore.sign_message(account, PURPOSE_PAYMENT_REQUEST, payload.encode("utf-8"))
    return payload + _SIG_SEPARATOR + base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")


def parse_request(text: str, now: int) -> PaymentRequest:
    """Parse and verify a request at unix time ``now``; raise RequestError for any defect."""
    text = text.strip()
    if len(text) > REQUEST_CHARS_MAX or not text.startswith(SCHEME) or _SIG_SEPARATOR not in text:
        raise RequestError("not a payment request (expected cbdc:<address>?amount=...&sig=...)")
    payload, _, sig_text = text.rpartition(_SIG_SEPARATOR)
    request = _parse_payload(payload)
    if request.payload() != payload:
        raise RequestError("the payment request is not in canonical form (altered?)")
    if not crypto.verify(request.address.key, _decode_sig(sig_text), PURPOSE_PAYMENT_REQUEST,
                         request.address.ledger, payload.encode("utf-8")):
        raise RequestError("the payment request's signature does not match its contents (altered?)",
                           code="request_signature_invalid")
    if request.expires and now > request.expires:
        raise RequestError("the payment request has expired: ask the payee for a new one", code="request_expired")
    return request


def _parse_payload(payload: str) -> PaymentRequest:
    address_text, sep, query = payload[len(SCHEME):].partition("?")
    if not sep:
        raise RequestError("a payment request names an amount")
    try:
        address = decode_address(address_text)
    except Unprocessable as exc:
        raise RequestError(f"the request's address is invalid: {exc.detail}", code="address_invalid") from None
    params = _params(query)
    try:
        amount = parse_major(params["amount"])
    except Unprocessable as exc:
        raise RequestError(f"the request's amount is invalid: {exc.detail}", code="request_malformed") from None
    try:
        memo = unquote(params.get("memo", ""), errors="strict")
    except UnicodeDecodeError:
        raise RequestError("the request's memo is not UTF-8") from None
    check_memo(memo)
    expires = params.get("expires", "")
    if expires and not _EXPIRES_RE.fullmatch(expires):
        raise RequestError("the request's expiry is not a unix time")
    return PaymentRequest(address, amount, memo, int(expires or 0))


def _params(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        if not sep or name not in _PARAM_ORDER or name in params:
            raise RequestError(f"unexpected or repeated parameter {name[:20]!r} in the payment request")
        params[name] = value
    if "amount" not in params or list(params) != [p for p in _PARAM_ORDER if p in params]:
        raise RequestError("a payment request has amount, then memo and expires if present")
    return params


def _decode_sig(text: str) -> bytes:
    if not _SIG_RE.fullmatch(text):
        raise RequestError("the request's signature is malformed", code="request_signature_invalid")
    try:
        signature = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError):
        signature = b""
    if base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii") != text:  # unused bits set
        raise RequestError("the request's signature is malformed", code="request_signature_invalid")
    return signature


def parse_payee(text: str, now: int) -> tuple[Address, PaymentRequest | None]:
    """What ``pay`` accepts: a plain address, or a payment request (then its amount and memo apply)."""
    if text.strip().startswith(SCHEME):
        request = parse_request(text, now)
        return request.address, request
    try:
        return decode_address(text), None
    except Unprocessable as exc:
        raise RequestError(exc.detail, code="address_invalid") from None


def write_qr_svg(text: str, path: Path) -> None:
    """The request (or an address) as a QR code in an SVG file."""
    try:
        segno.make(text, error="m", micro=False).save(str(path), kind="svg", scale=4, border=4)
    except OSError as exc:
        raise RequestError(f"cannot write {path}: {exc.strerror}", code="file_not_written") from None


def qr_svg_inline(text: str) -> str:
    """The request (or an address) as an inline ``<svg>`` element for a web page."""
    return segno.make(text, error="m", micro=False).svg_inline(scale=4, border=4, title="receive QR code")
