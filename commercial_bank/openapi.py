"""A commercial bank's OpenAPI 3.1 document, written by hand (served at /openapi.json).

Flows (docs/API.md, "Commercial bank API", explains them with examples):

Onboarding: POST /v1/wallets (signed by the wallet key being registered) -> customer record with a
KYC tier and an optional linked deposit account.
Funding: POST /v1/fundings {funding_id, amount} (wallet-signed) debits the deposit account, funds the
bank's escrow at the central bank and mints to the wallet, exactly once per funding id.
Defunding: POST /v1/defunds with a wallet-signed burn (reference = defund id).
On-us: POST /v1/transfers with a wallet-signed transfer, or POST /v1/transfers/batch with many
({"transactions": [...]}, one result each). Cross-bank: POST /v1/payments with a
wallet-signed outbound (reference = payment id "<this bank>:<id>"); GET /v1/payments/{id}.
Between banks: POST /v1/inbound {notice, outbound} (self-authenticating).
"""
from __future__ import annotations

from typing import Any

SIGNED = [{"walletSignedRequest": []}]
AUTH_ERRORS = ["signature_missing", "signature_invalid", "unknown_key", "timestamp_stale", "nonce_reused",
               "not_permitted", "wallet_not_found"]
BODY_ERRORS = ["malformed_json", "request_too_large", "unknown_field", "field_missing", "wrong_type"]
TX_ERRORS = ["every code of shared/validation.py", "input_already_spent", "input_not_found", "input_mismatch",
             "input_contended", "overloaded", "kind_not_allowed", "inputs_mixed_owners"]
STR = {"type": "string"}
INT = {"type": "integer"}
HEX32 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
AMOUNT = {"type": "integer", "minimum": 1, "maximum": 10**15}
NULLABLE_STR = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": list(required),
            "properties": {**required, **(optional or {})}}


def _op(summary: str, ok: dict[int, Any], errors: list[str], *, body: Any = None, params: list[str] = (),
        query: list[str] = (), signed: bool = True) -> dict[str, Any]:
    codes = errors + (AUTH_ERRORS if signed else [])
    responses = {str(status): {"description": "success", "content": {"application/json": {"schema": schema}}}
                 for status, schema in ok.items()}
    responses["default"] = {"description": "an error",
                            "content": {"application/problem+json": {"schema": _ref("Problem")}}}
    op: dict[str, Any] = {
        "summary": summary, "description": f"Error codes: {', '.join(codes)}." if codes else "",
        "parameters": [{"name": p, "in": "path", "required": True, "schema": STR} for p in params]
        + [{"name": q, "in": "query", "required": False, "schema": STR} for q in query],
        "responses": responses,
    }
    if signed:
        op["security"] = SIGNED
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _paths() -> dict[str, Any]:
    wallet, tx, funding, defund, payment = (_ref(n) for n in ("Wallet", "SignedTransaction", "Funding", "Defund",
                                                              "Payment"))
    flow_errors = BODY_ERRORS + ["amount_invalid", "no_deposit_account"]
    return {
        "/v1/wallets": {"post": _op("Register the signing wallet key (customer record, KYC tier)", {201: wallet},
                                    BODY_ERRORS + ["public_key_invalid", "kyc_tier_unknown", "field_invalid",
                                                   "wallet_exists"],
                                    body=_obj({"name": STR, "kyc_tier": STR}, {"deposit_account": {"type": "boolean"}}))},
        "/v1/wallets/{key}": {"get": _op("The wallet's record, balance and limits", {200: {"type": "object"}}, [],
                                         params=["key"])},
        "/v1/wallets/{key}/outputs": {"get": _op("The wallet's unspent outputs", {200: {"type": "object"}},
                                                 ["query_invalid"], params=["key"], query=["after", "limit"])},
        "/v1/wallets/{key}/history": {"get": _op("The wallet's history, paginated by seq", {200: {"type": "object"}},
                                                 ["query_invalid"], params=["key"], query=["after_seq", "limit"])},
        "/v1/wallets/{key}/receipts/{tx_id}": {"get": _op("A receipt: the signed transaction and its effect",
                                                          {200: {"type": "object"}},
                                                          ["query_invalid", "receipt_not_found"],
                                                          params=["key", "tx_id"])},
        "/v1/wallets/{key}/deposit/credit": {"post": _op(
            "Demo: credit the linked deposit account once per reference", {200: {"type": "object"}},
            flow_errors + ["reference_invalid"], body=_obj({"amount": AMOUNT, "reference": STR}), params=["key"])},
        "/v1/fundings": {"post": _op("Fund: deposit -> CBDC, once per funding id (201 done, 202 in progress, "
                                     "200 repeat)", {201: funding, 202: funding, 200: funding},
                                     flow_errors + ["funding_id_invalid", "funding_conflict", "limit_holding",
                                                    "deposit_insufficient"],
                                     body=_obj({"funding_id": STR, "amount": AMOUNT}))},
        "/v1/fundings/{funding_id}": {"get": _op("A funding's state", {200: funding}, ["funding_not_found"],
                                                 params=["funding_id"])},
        "/v1/defunds": {"post": _op("Defund: a wallet-signed burn (reference = defund id)",
                                    {201: defund, 202: defund, 200: defund},
                                    TX_ERRORS + ["defund_id_invalid", "defund_conflict", "outputs_not_change",
                                                 "no_deposit_account"], body=tx, signed=False)},
        "/v1/defunds/{defund_id}": {"get": _op("A defund's state", {200: defund}, ["defund_not_found"],
                                               params=["defund_id"])},
        "/v1/transfers": {"post": _op("On-us transfer (201 new, 200 resubmission)", {201: _ref("TxResult"),
                                                                                   200: _ref("TxResult")},
                                      TX_ERRORS + ["payer_unknown", "payee_unknown", "limit_per_payment",
                                                   "limit_daily", "payee_holding_limit", "wallet_not_found"],
                                      body=tx, signed=False)},
        "/v1/transfers/batch": {"post": _op(
            "Many on-us transfers in one request (1..batch_transactions_max, body <= batch_request_bytes_max): "
            "each goes through the same checks and micro-batcher as POST /v1/transfers and gets its own result, "
            "in order; one refused item never fails the others", {200: _ref("BatchResults")},
            BODY_ERRORS + ["batch_size_invalid", "overloaded"],
            body=_obj({"transactions": {"type": "array", "minItems": 1, "items": tx}}), signed=False)},
        "/v1/payments": {"post": _op("Cross-bank payment: a wallet-signed outbound (202 accepted, 200 repeat); "
                                     "naming this bank: on-us through the bank (201 completed)",
                                     {201: payment, 202: payment, 200: payment},
                                     TX_ERRORS + ["payment_id_invalid", "outputs_not_change", "payee_bank_unknown",
                                                  "payee_bank_suspended", "limit_per_payment", "limit_daily",
                                                  "payment_conflict", "wallet_not_found", "payee_unknown",
                                                  "payee_holding_limit", "payee_is_payer", "payee_bank_unavailable",
                                                  "upstream_unavailable"], body=tx, signed=False)},
        "/v1/payments/{payment_id}": {"get": _op("A payment's state (the payer only)", {200: payment},
                                                 ["payment_not_found"], params=["payment_id"])},
        "/v1/inbound": {"post": _op("From a payer bank: credit a settled payment once (201 new, 200 duplicate)",
                                    {201: _ref("Inbound"), 200: _ref("Inbound")},
                                    BODY_ERRORS + ["notice_invalid", "notice_signature_invalid", "notice_wrong_bank",
                                                   "outbound_invalid", "outbound_mismatch"],
                                    body=_obj({"notice": {"type": "object"}, "outbound": tx}), signed=False)},
        "/v1/inbound/batch": {"post": _op(
            "From a payer bank: credit many settled payments, each once (200; one result per item, in order: "
            "the credit with fresh true/false, or a problem object)",
            {200: _obj({"results": {"type": "array", "items": {"type": "object"}}})},
            BODY_ERRORS + ["batch_size_invalid"],
            body=_obj({"items": {"type": "array", "minItems": 1, "maxItems": 1000,
                                 "items": _obj({"notice": {"type": "object"}, "outbound": tx})}}), signed=False)},
        "/v1/reservations": {"post": _op(
            "From a payer bank, before it applies an outbound: reserve room in the payee's holding limit "
            "(signed by the payer bank's registered key, key id bank:<id>, in this bank's domain)",
            {201: {"type": "object"}, 200: {"type": "object"}},
            BODY_ERRORS + ["payment_id_invalid", "reservation_invalid", "payee_unknown", "payee_holding_limit",
                           "payment_conflict", "payment_credited", "bank_suspended", "signature_missing", "signature_invalid",
                           "unknown_key", "timestamp_stale", "nonce_reused"],
            body=_obj({"payment_id": STR, "payee_key": HEX32, "amount": AMOUNT}), signed=False)},
        "/v1/reservations/batch": {"post": _op(
            "From a payer bank: many reservations in one signed request and one DB transaction (200; one result "
            "per item, in order: the reservation with fresh true/false, or a problem object)",
            {200: _obj({"results": {"type": "array", "items": {"type": "object"}}})},
            BODY_ERRORS + ["batch_size_invalid", "bank_suspended", "signature_missing", "signature_invalid",
                           "unknown_key", "timestamp_stale", "nonce_reused"],
            body=_obj({"reservations": {"type": "array", "minItems": 1, "items": _obj(
                {"payment_id": STR, "payee_key": HEX32, "amount": AMOUNT})}}), signed=False)},
        "/healthz": {"get": _op("The process is up", {200: {"type": "object"}}, [], signed=False)},
        "/readyz": {"get": _op("The database answers", {200: {"type": "object"}}, ["not_ready"], signed=False)},
        "/metrics": {"get": _op("Prometheus metrics (text)", {200: STR}, [], signed=False)},
        "/openapi.json": {"get": _op("This document", {200: {"type": "object"}}, [], signed=False)},
    }


def _schemas() -> dict[str, Any]:
    return {
        "Problem": {"type": "object", "required": ["type", "title", "status", "code"],
                    "properties": {"type": STR, "title": STR, "status": INT, "code": STR, "detail": STR,
                                   "index": INT, "field": STR, "instance": STR}},
        "Wallet": _obj({"public_key": HEX32, "name": STR, "kyc_tier": STR, "deposit_account": NULLABLE_STR,
                        "registered_at": INT}),
        "SignedTransaction": {"type": "object", "description": "shared/tx.py's JSON wire form",
                              "required": ["version", "ledger", "kind", "inputs", "outputs"]},
        "TxResult": _obj({"tx_id": HEX32, "status": {"enum": ["created", "exists"]},
                          "result": {"enum": ["created", "exists"]}, "seq": INT,
                          "accepted_at": STR}),
        "BatchResults": _obj({"results": {"type": "array", "items": {"oneOf": [
            _obj({"index": INT, "tx_id": HEX32, "status": {"enum": ["created", "exists"]}, "seq": INT,
                  "accepted_at": STR}),
            _obj({"index": INT, "tx_id": {"type": ["string", "null"]}, "status": {"const": "refused"},
                  "problem": _ref("Problem")})]}}}),
        "Funding": _obj({"funding_id": STR, "wallet": HEX32, "amount": AMOUNT,
                         "state": {"enum": ["debited", "funded", "minted", "failed"]}, "failure": NULLABLE_STR,
                         "fund_tx_id": NULLABLE_STR, "mint_tx_id": NULLABLE_STR}),
        "Defund": _obj({"defund_id": STR, "kind": {"enum": ["burn", "waterfall"]}, "wallet": HEX32, "amount": AMOUNT,
                        "state": {"enum": ["burned", "defunded", "credited"]}, "burn_tx_id": NULLABLE_STR,
                        "defund_tx_id": NULLABLE_STR}),
        "Payment": _obj({"payment_id": STR, "status": {"enum": ["created", "exists"]}, "state": {"enum": ["pending", "settled", "completed", "refunded"]},
                         "amount": AMOUNT, "payer": HEX32, "payee_bank": STR, "payee_key": HEX32,
                         "outbound_tx_id": HEX32, "settle_tx_id": NULLABLE_STR, "refusal_code": NULLABLE_STR,
                         "refund_tx_id": NULLABLE_STR, "attempts": INT, "last_error": NULLABLE_STR}),
        "Inbound": _obj({"payment_id": STR, "status": {"const": "credited"}, "payer_bank": STR, "payee_key": HEX32,
                         "amount": AMOUNT, "deposit_amount": INT, "inbound_tx_id": NULLABLE_STR,
                         "settle_tx_id": NULLABLE_STR}),
    }


def openapi_document(bank_id: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": f"CBDC commercial bank {bank_id} (tier 2)", "version": "1", "description": __doc__},
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"walletSignedRequest": {
                "type": "apiKey", "in": "header", "name": "CBDC-Signature",
                "description": "With CBDC-Key-Id (wallet:<hex key>), CBDC-Timestamp and CBDC-Nonce: Ed25519 over "
                               "'cbdc/v1/request\\0<bank id>\\0' + method\\npath_qs\\nsha256(body)\\ntimestamp\\nnonce"}},
        },
    }
