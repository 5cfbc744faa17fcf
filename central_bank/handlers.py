"""Thin HTTP handlers: read a bounded body -> authenticate -> decode strictly -> call the domain ->
encode. Every route but /healthz, /readyz, /metrics and /openapi.json requires a signed request."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from central_bank import store
from central_bank.auth import Authenticator, Principal, require_bank, require_operator
from central_bank.ledger import CentralBank
from central_bank.openapi import openapi_document
from central_bank.settlement import PaymentRequest, Settlement
from shared.errors import BadRequest, NotFound, Unprocessable
from shared.fields import strict_object
from shared.tx import signed_from_json
from shared.web import json_response, parse_json, read_body


@dataclass(frozen=True)
class Services:
    cb: CentralBank
    settlement: Settlement
    auth: Authenticator
    request_bytes_max: int


SERVICES = web.AppKey("services", Services)
_OUTPOINT_RE = re.compile(r"([0-9a-f]{64}):([0-9]{1,5})")
_HEX32_RE = re.compile(r"[0-9a-f]{64}")


async def _authenticated(request: web.Request) -> tuple[Services, Principal, bytes]:
    services = request.app[SERVICES]
    body = await read_body(request, services.request_bytes_max)
    return services, await services.auth.authenticate(request, body), body


def _bank_json(bank: store.Bank) -> dict[str, Any]:
    return {"bank_id": bank.bank_id, "name": bank.name, "public_key": bank.public_key.hex(),
            "escrow_owner": bank.escrow_owner.hex(), "callback_url": bank.callback_url, "status": bank.status,
            "registered_at": bank.registered_at, "updated_at": bank.updated_at}


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise BadRequest("limit must be an integer in 1..500", code="query_invalid")
    return int(raw)


# -- the bank register ----------------------------------------------------------------------

async def register_bank(request: web.Request) -> web.Response:
    services, principal, body = await _authenticated(request)
    require_operator(principal)
    data = strict_object(parse_json(body), {"bank_id": str, "name": str, "public_key": str, "callback_url": str})
    return json_response(_bank_json(await services.cb.register_bank(**data)), 201)


async def list_banks(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    require_operator(principal)
    banks = await store.list_banks(services.cb.pool, request.query.get("after", ""), _limit(request))
    return json_response({"banks": [_bank_json(b) for b in banks]})


async def get_bank(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    return json_response(_bank_json(await services.cb.bank(principal, request.match_info["bank_id"])))


async def directory_entry(request: web.Request) -> web.Response:
    """What any registered bank may know of another: where to push its notices, its status, and the key
    that signs its requests to other banks."""
    services, principal, _ = await _authenticated(request)
    bank = await store.get_bank(services.cb.pool, request.match_info["bank_id"])
    if bank is None:
        raise NotFound(f"no bank {request.match_info['bank_id']!r}", code="bank_not_found")
    return json_response({"bank_id": bank.bank_id, "callback_url": bank.callback_url, "status": bank.status,
                          "public_key": bank.public_key.hex()})


async def _set_status(request: web.Request, status: str) -> web.Response:
    services, principal, _ = await _authenticated(request)
    require_operator(principal)
    bank = await services.cb.set_bank_status(request.match_info["bank_id"], status)
    return json_response(_bank_json(bank))


async def suspend_bank(request: web.Request) -> web.Response:
    return await _set_status(request, "suspended")


async def resume_bank(request: web.Request) -> web.Response:
    return await _set_status(request, "active")


async def balances(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    return json_response(await services.cb.balances(principal, request.match_info["bank_id"]))


async def outputs(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    account = request.query.get("account", "holdings")
    after_raw = request.query.get("after")
    match = _OUTPOINT_RE.fullmatch(after_raw) if after_raw is not None else None
    if account not in ("holdings", "escrow") or (after_raw is not None and match is None):
        raise BadRequest("account is holdings or escrow; after is <tx id hex>:<index>", code="query_invalid")
    after = (bytes.fromhex(match[1]), int(match[2])) if match else (b"", -1)
    rows = await services.cb.outputs(principal, request.match_info["bank_id"], account, after, _limit(request))
    return json_response({"outputs": rows})


async def history(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    after = request.query.get("after_seq", "0")
    if not after.isdigit() or len(after) > 18:
        raise BadRequest("after_seq is a non-negative integer", code="query_invalid")
    rows = await services.cb.history(principal, request.match_info["bank_id"], int(after), _limit(request))
    return json_response({"transactions": rows})


# -- issuance -------------------------------------------------------------------------------

async def propose_issuance(request: web.Request) -> web.Response:
    services, principal, body = await _authenticated(request)
    operator = require_operator(principal)
    data = strict_object(parse_json(body), {"bank_id": str, "amount": int}, {"memo": str})
    proposal = await services.cb.propose(operator, data["bank_id"], data["amount"], data.get("memo", ""))
    return json_response(proposal, 201)


async def list_proposals(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    require_operator(principal)
    rows = await store.list_proposals(services.cb.pool, request.query.get("after", ""), _limit(request))
    return json_response({"proposals": [services.cb.proposal_json(r) for r in rows]})


async def get_proposal(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    require_operator(principal)
    return json_response(await services.cb.proposal(request.match_info["proposal_id"]))


async def approve_issuance(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    operator = require_operator(principal)
    return json_response(await services.cb.approve(operator, request.match_info["proposal_id"]))


async def reject_issuance(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    operator = require_operator(principal)
    return json_response(await services.cb.reject(operator, request.match_info["proposal_id"]))


# -- transactions, settlement, queries --------------------------------------------------------

async def submit_transaction(request: web.Request) -> web.Response:
    services, principal, body = await _authenticated(request)
    bank = require_bank(principal)
    result, vtx = await services.cb.submit(bank, signed_from_json(parse_json(body)))
    answer = {"tx_id": vtx.tx_id.hex(), "result": result.code, "seq": result.seq,
              "accepted_at": result.accepted_at.isoformat() if result.accepted_at else None}
    return json_response(answer, 201 if result.code == "created" else 200)


async def get_transaction(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    tx_id = request.match_info["tx_id"]
    if not _HEX32_RE.fullmatch(tx_id):
        raise BadRequest("a tx id is 64 lower-case hex characters", code="query_invalid")
    return json_response(await services.cb.transaction(principal, bytes.fromhex(tx_id)))


_PAYMENT_FIELDS = {"payment_id": str, "payer_bank": str, "payee_bank": str, "amount": int}
_PAYMENT_OPTIONAL = {"reference": str}


async def settle(request: web.Request) -> web.Response:
    services, principal, body = await _authenticated(request)
    require_bank(principal)
    data = strict_object(parse_json(body), _PAYMENT_FIELDS, _PAYMENT_OPTIONAL)
    notice, fresh = await services.settlement.settle(principal, PaymentRequest(**data))
    return json_response(notice, 201 if fresh else 200)


def _payment_request(item: Any, index: int) -> PaymentRequest:
    try:
        return PaymentRequest(**strict_object(item, _PAYMENT_FIELDS, _PAYMENT_OPTIONAL))
    except Unprocessable as exc:
        exc.index = index
        raise


async def settle_batch(request: web.Request) -> web.Response:
    services, principal, body = await _authenticated(request)
    require_bank(principal)
    items = strict_object(parse_json(body), {"payments": list})["payments"]
    requests = [_payment_request(item, n) for n, item in enumerate(items)]
    return json_response({"payments": await services.settlement.settle_batch(principal, requests)})


async def get_payment(request: web.Request) -> web.Response:
    services, principal, _ = await _authenticated(request)
    return json_response(await services.settlement.payment(principal, request.match_info["payment_id"]))


async def supply(request: web.Request) -> web.Response:
    services, _, _ = await _authenticated(request)
    return json_response(await services.cb.supply())


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


ROUTES = [
    web.post("/v1/banks", register_bank),
    web.get("/v1/banks", list_banks),
    web.get("/v1/banks/{bank_id}", get_bank),
    web.get("/v1/directory/{bank_id}", directory_entry),
    web.post("/v1/banks/{bank_id}/suspend", suspend_bank),
    web.post("/v1/banks/{bank_id}/resume", resume_bank),
    web.get("/v1/banks/{bank_id}/balances", balances),
    web.get("/v1/banks/{bank_id}/outputs", outputs),
    web.get("/v1/banks/{bank_id}/history", history),
    web.post("/v1/issuance", propose_issuance),
    web.get("/v1/issuance", list_proposals),
    web.get("/v1/issuance/{proposal_id}", get_proposal),
    web.post("/v1/issuance/{proposal_id}/approve", approve_issuance),
    web.post("/v1/issuance/{proposal_id}/reject", reject_issuance),
    web.post("/v1/transactions", submit_transaction),
    web.get("/v1/transactions/{tx_id}", get_transaction),
    web.post("/v1/settlements", settle),
    web.post("/v1/settlements/batch", settle_batch),
    web.get("/v1/payments/{payment_id}", get_payment),
    web.get("/v1/supply", supply),
    web.get("/openapi.json", openapi),
]
