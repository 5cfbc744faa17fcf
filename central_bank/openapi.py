"""The central bank's OpenAPI 3.1 document, written by hand (served at /openapi.json).

Flows, with an example each:

Issuance (maker-checker). Operator op1 proposes, a different operator approves:
    POST /v1/issuance {"bank_id": "bank-a", "amount": 1000000}       (signed by operator:op1) -> 201
    POST /v1/issuance/<proposal_id>/approve                          (signed by operator:op2) -> 200
    The approval applies an ``issue`` transaction signed by the central bank's key that pays the
    bank's holdings (its registered key), if outstanding supply + amount <= the cap.

Settlement. Bank A settles a retail payment to bank B from its escrow:
    POST /v1/settlements {"payment_id": "bank-a:42", "payer_bank": "bank-a",
                          "payee_bank": "bank-b", "amount": 2500}    (signed by bank:bank-a) -> 201
    -> {"payment_id", "payer_bank", "payee_bank", "amount", "tx_id", "settled_at", "signature"}:
    a notice the payee bank verifies offline with shared.notice.verify_notice and the central
    bank's public key. A retry answers 200 with the same notice.
"""
from __future__ import annotations

from typing import Any

SIGNED = [{"signedRequest": []}]
AUTH_ERRORS = ["signature_missing", "signature_invalid", "unknown_key", "timestamp_stale", "nonce_reused",
               "bank_suspended", "not_permitted"]
BODY_ERRORS = ["malformed_json", "request_too_large", "unknown_field", "field_missing", "wrong_type"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": list(required),
            "properties": {**required, **(optional or {})}}


STR = {"type": "string"}
HEX32 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
AMOUNT = {"type": "integer", "minimum": 1, "maximum": 10**15}
INT = {"type": "integer"}


def _op(summary: str, who: str, ok: int, response: Any, errors: list[str], *, body: Any = None,
        params: list[str] = (), query: list[str] = (), signed: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Who may call: {who}. Error codes: {', '.join(errors + (AUTH_ERRORS if signed else []))}.",
        "parameters": [{"name": p, "in": "path", "required": True, "schema": STR} for p in params]
        + [{"name": q, "in": "query", "required": False, "schema": STR} for q in query],
        "responses": {str(ok): {"description": "success", "content": {"application/json": {"schema": response}}},
                      "default": {"description": "an error",
                                  "content": {"application/problem+json": {"schema": _ref("Problem")}}}},
    }
    if signed:
        op["security"] = SIGNED
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _paths() -> dict[str, Any]:
    bank, proposal = _ref("Bank"), _ref("Proposal")
    return {
        "/v1/banks": {
            "post": _op("Register a commercial bank", "operators", 201, bank,
                        BODY_ERRORS + ["bank_id_invalid", "public_key_invalid", "field_invalid", "bank_exists",
                                       "public_key_in_use"], body=_ref("BankRegistration")),
            "get": _op("List banks", "operators", 200, _obj({"banks": {"type": "array", "items": bank}}),
                       ["query_invalid"], query=["after", "limit"])},
        "/v1/banks/{bank_id}": {"get": _op("One bank", "operators; the bank itself", 200, bank,
                                           ["bank_not_found"], params=["bank_id"])},
        "/v1/directory/{bank_id}": {"get": _op(
            "Another bank's callback URL, status and public key (where to push notices; whose requests to trust)",
            "operators; any registered bank", 200, _obj({"bank_id": STR, "callback_url": STR, "status": STR,
                                                         "public_key": HEX32}),
            ["bank_not_found"], params=["bank_id"])},
        "/v1/banks/{bank_id}/suspend": {"post": _op("Suspend a bank: its requests are refused", "operators",
                                                    200, bank, ["bank_not_found"], params=["bank_id"])},
        "/v1/banks/{bank_id}/resume": {"post": _op("Resume a suspended bank", "operators", 200, bank,
                                                   ["bank_not_found"], params=["bank_id"])},
        "/v1/banks/{bank_id}/balances": {"get": _op(
            "A bank's tier-1 holdings and escrow", "operators; the bank itself", 200, _ref("Balances"),
            ["bank_not_found"], params=["bank_id"])},
        "/v1/banks/{bank_id}/outputs": {"get": _op(
            "A bank's unspent tier-1 outputs (account=holdings|escrow; after=<tx id>:<index>)",
            "operators; the bank itself", 200, _obj({"outputs": {"type": "array", "items": _ref("Outpoint")}}),
            ["bank_not_found", "query_invalid"], params=["bank_id"], query=["account", "after", "limit"])},
        "/v1/banks/{bank_id}/history": {"get": _op(
            "A bank's tier-1 transactions in log order, paginated by seq (after_seq, limit), with the "
            "change each made to its holdings and escrow", "operators; the bank itself", 200,
            _obj({"transactions": {"type": "array", "items": _obj({
                "seq": INT, "tx_id": HEX32, "kind": STR, "reference": STR, "accepted_at": STR,
                "holdings_change": INT, "escrow_change": INT})}}),
            ["bank_not_found", "query_invalid"], params=["bank_id"], query=["after_seq", "limit"])},
        "/v1/issuance": {
            "post": _op("Propose an issuance (maker)", "operators", 201, proposal,
                        BODY_ERRORS + ["amount_invalid", "field_invalid", "bank_not_found"],
                        body=_obj({"bank_id": STR, "amount": AMOUNT}, {"memo": STR})),
            "get": _op("List proposals", "operators", 200,
                       _obj({"proposals": {"type": "array", "items": proposal}}), ["query_invalid"],
                       query=["after", "limit"])},
        "/v1/issuance/{proposal_id}": {"get": _op("One proposal", "operators", 200, proposal,
                                                  ["proposal_not_found"], params=["proposal_id"])},
        "/v1/issuance/{proposal_id}/approve": {"post": _op(
            "Approve (checker): applies the issue transaction", "an operator other than the proposer", 200,
            proposal, ["proposal_not_found", "proposal_not_pending", "proposal_expired", "approver_is_proposer",
                       "bank_suspended", "supply_cap_exceeded"], params=["proposal_id"])},
        "/v1/issuance/{proposal_id}/reject": {"post": _op(
            "Reject a pending proposal", "operators", 200, proposal,
            ["proposal_not_found", "proposal_not_pending", "proposal_expired"], params=["proposal_id"])},
        "/v1/transactions": {"post": _op(
            "Submit a bank-signed tier-1 transaction (redeem, transfer, fund, defund); a resubmission "
            "answers 200 with the original result", "banks, moving only their own holdings or escrow", 201,
            _ref("TxResult"), BODY_ERRORS + ["owner_not_a_bank", "input_already_spent", "input_not_found",
                                             "input_mismatch", "input_contended", "overloaded",
                                             "plus every code of shared/validation.py"],
            body=_ref("SignedTransaction"))},
        "/v1/transactions/{tx_id}": {"get": _op("A tier-1 transaction", "operators; a bank it involves", 200,
                                                _obj({"tx_id": HEX32, "seq": INT, "accepted_at": STR,
                                                      "transaction": _ref("SignedTransaction")}),
                                                ["transaction_not_found", "query_invalid"], params=["tx_id"])},
        "/v1/settlements": {"post": _op(
            "Settle a payment escrow(payer) -> escrow(payee), once per payment id (201 new, 200 retry)",
            "the payer bank", 201, _ref("Notice"),
            BODY_ERRORS + ["payment_id_invalid", "payee_bank_invalid", "amount_invalid", "payment_conflict",
                           "payee_bank_unknown", "payee_bank_suspended", "escrow_insufficient", "reference_invalid"],
            body=_ref("PaymentRequest"))},
        "/v1/settlements/batch": {"post": _op(
            "Netted settlement: many payments of one payer, one settle tx paying each payee bank its total; "
            "every payment id recorded once (recorded ids answer with their outcome)", "the payer bank", 200,
            _obj({"payments": {"type": "array", "items": _ref("PaymentOutcome")}}),
            BODY_ERRORS + ["batch_size_invalid", "duplicate_payment_id", "amount_overflow", "too_many_payees",
                           "payment_id_invalid", "payee_bank_invalid", "amount_invalid", "payment_conflict"],
            body=_obj({"payments": {"type": "array", "items": _ref("PaymentRequest")}}))},
        "/v1/payments/{payment_id}": {"get": _op("A payment's outcome and notice",
                                                 "operators; its payer or payee bank", 200,
                                                 _ref("PaymentOutcome"), ["payment_not_found"],
                                                 params=["payment_id"])},
        "/v1/supply": {"get": _op("Issued, redeemed, outstanding and the cap", "operators; banks", 200,
                                  _obj({"issued": INT, "redeemed": INT, "outstanding": INT, "cap": INT}), [])},
        "/healthz": {"get": _op("The process is up", "anyone", 200, {"type": "object"}, [], signed=False)},
        "/readyz": {"get": _op("The database answers", "anyone", 200, {"type": "object"}, ["not_ready"],
                               signed=False)},
        "/metrics": {"get": _op("Prometheus metrics (text)", "anyone", 200, STR, [], signed=False)},
        "/openapi.json": {"get": _op("This document", "anyone", 200, {"type": "object"}, [], signed=False)},
    }


def _schemas() -> dict[str, Any]:
    outpoint = _obj({"tx_id": HEX32, "index": INT, "owner": HEX32, "amount": AMOUNT})
    return {
        "Problem": {"type": "object", "required": ["type", "title", "status", "code"],
                    "properties": {"type": STR, "title": STR, "status": INT, "code": STR, "detail": STR,
                                   "index": INT, "field": STR, "instance": STR}},
        "BankRegistration": _obj({"bank_id": STR, "name": STR, "public_key": HEX32, "callback_url": STR}),
        "Bank": _obj({"bank_id": STR, "name": STR, "public_key": HEX32, "escrow_owner": HEX32,
                      "callback_url": STR, "status": {"enum": ["active", "suspended"]}, "registered_at": INT,
                      "updated_at": INT}),
        "Balances": _obj({"bank_id": STR, "holdings": INT, "holdings_outputs": INT, "escrow": INT,
                          "escrow_outputs": INT}),
        "Outpoint": outpoint,
        "Proposal": {"type": "object", "properties": {
            "proposal_id": STR, "bank_id": STR, "amount": AMOUNT, "memo": STR, "proposed_by": STR,
            "proposed_at": INT, "expires_at": INT,
            "status": {"enum": ["pending", "approved", "rejected", "expired"]},
            "decided_by": {"type": ["string", "null"]}, "decided_at": {"type": ["integer", "null"]},
            "tx_id": {"type": ["string", "null"]}}},
        "SignedTransaction": {"type": "object", "description": "shared/tx.py's JSON wire form",
                              "required": ["version", "ledger", "kind", "inputs", "outputs"],
                              "properties": {"version": INT, "ledger": {"const": "cb"}, "kind": STR,
                                             "inputs": {"type": "array", "items": outpoint},
                                             "outputs": {"type": "array", "items": _obj({"owner": HEX32,
                                                                                         "amount": AMOUNT})},
                                             "reference": STR, "expiry": INT,
                                             "witnesses": {"type": "array"}}},
        "TxResult": _obj({"tx_id": HEX32, "result": {"enum": ["created", "exists"]}, "seq": INT,
                          "accepted_at": STR}),
        "PaymentRequest": _obj({"payment_id": STR, "payer_bank": STR, "payee_bank": STR, "amount": AMOUNT},
                               {"reference": HEX32}),
        "PaymentOutcome": {"type": "object", "required": ["payment_id", "status"], "properties": {
            "payment_id": STR, "status": {"enum": ["settled", "refused"]}, "notice": _ref("Notice"),
            "refusal_code": {"enum": ["payee_bank_unknown", "payee_bank_suspended", "escrow_insufficient"]},
            "payer_bank": STR, "payee_bank": STR, "amount": AMOUNT, "reference": HEX32}},
        "Notice": _obj({"payment_id": STR, "payer_bank": STR, "payee_bank": STR, "amount": AMOUNT,
                        "tx_id": HEX32, "settled_at": INT, "reference": HEX32, "signature": STR}),
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "CBDC central bank (tier 1)", "version": "1",
                 "description": __doc__},
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"signedRequest": {
                "type": "apiKey", "in": "header", "name": "CBDC-Signature",
                "description": "With CBDC-Key-Id (operator:<id> | bank:<id>), CBDC-Timestamp (unix s) and "
                               "CBDC-Nonce (hex): Ed25519 over 'cbdc/v1/request\\0cb\\0' + method\\npath_qs\\n"
                               "sha256(body)\\ntimestamp\\nnonce (see shared/signing.py)"}},
        },
    }
