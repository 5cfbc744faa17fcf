"""Thin HTTP handlers: read a bounded body -> authenticate (wallet-signed routes) -> decode strictly
-> call the domain -> encode. Spends (transfers, payments, defund burns) carry the wallet's
transaction signature and need no request signature; /v1/inbound (and its batch form) is
self-authenticating (a notice signed by the central bank plus an outbound signed by the payer)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from commercial_bank.auth import WalletAuth, require_self
from commercial_bank.funding import Flows
from commercial_bank.ledger import CommercialBank
from commercial_bank.openapi import openapi_document
from commercial_bank.payments import Payments
from commercial_bank.verify import BatchVerifier
from shared.engine import CREATED
from shared.errors import BadRequest, CBDCError
from shared.fields import invalid, strict_object
from shared.tx import signed_from_json
from shared.web import json_response, parse_json, read_body


@dataclass(frozen=True)
class Services:
    bank: CommercialBank
    flows: Flows
    payments: Payments
    auth: WalletAuth
    request_bytes_max: int
    verifier: BatchVerifier
    batch_request_bytes_max: int
    batch_transactions_max: int


SERVICES = web.AppKey("services", Services)
_HEX32_RE = re.compile(r"[0-9a-f]{64}")
_OUTPOINT_RE = re.compile(r"([0-9a-f]{64}):([0-9]{1,5})")


async def _body(request: web.Request) -> tuple[Services, bytes]:
    services = request.app[SERVICES]
    return services, await read_body(request, services.request_bytes_max)


async def _signed(request: web.Request) -> tuple[Services, bytes, bytes]:
    """(services, body, the signing wallet's key)."""
    services, body = await _body(request)
    return services, body, await services.auth.authenticate(request, body)


async def _own_wallet(request: web.Request) -> tuple[Services, bytes, Any]:
    services, body, signer = await _signed(request)
    require_self(signer, request.match_info["key"])
    return services, body, await services.bank.wallet(signer)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise BadRequest("limit must be an integer in 1..500", code="query_invalid")
    return int(raw)


def _wallet_json(row: Any) -> dict[str, Any]:
    return {"public_key": row["public_key"].hex(), "name": row["customer_name"], "kyc_tier": row["kyc_tier"],
            "deposit_account": row["deposit_account"], "registered_at": row["registered_at"]}


# -- wallets --------------------------------------------------------------------------------------

async def register_wallet(request: web.Request) -> web.Response:
    services, body, signer = await _signed(request)
    data = strict_object(parse_json(body), {"name": str, "kyc_tier": str}, {"deposit_account": bool})
    row = await services.bank.register(signer, data["name"], data["kyc_tier"], data.get("deposit_account", False))
    return json_response(_wallet_json(row), 201)


async def get_wallet(request: web.Request) -> web.Response:
    services, _, wallet = await _own_wallet(request)
    answer = _wallet_json(wallet)
    answer["limits"] = await services.bank.limits(wallet)
    answer["balance"] = answer["limits"]["balance"]
    return json_response(answer)


async def outputs(request: web.Request) -> web.Response:
    services, _, wallet = await _own_wallet(request)
    raw = request.query.get("after")
    match = _OUTPOINT_RE.fullmatch(raw) if raw is not None else None
    if raw is not None and match is None:
        raise BadRequest("after is <tx id hex>:<index>", code="query_invalid")
    after = (bytes.fromhex(match[1]), int(match[2])) if match else (b"", -1)
    return json_response({"outputs": await services.bank.outputs(wallet["public_key"], after, _limit(request))})


async def history(request: web.Request) -> web.Response:
    services, _, wallet = await _own_wallet(request)
    after = request.query.get("after_seq", "0")
    if not after.isdigit() or len(after) > 18:
        raise BadRequest("after_seq is a non-negative integer", code="query_invalid")
    rows = await services.bank.history(wallet["public_key"], int(after), _limit(request))
    return json_response({"entries": rows})


async def receipt(request: web.Request) -> web.Response:
    services, _, wallet = await _own_wallet(request)
    tx_id = request.match_info["tx_id"]
    if not _HEX32_RE.fullmatch(tx_id):
        raise BadRequest("a tx id is 64 lower-case hex characters", code="query_invalid")
    return json_response(await services.bank.receipt(wallet["public_key"], bytes.fromhex(tx_id)))


async def credit_deposit(request: web.Request) -> web.Response:
    services, body, wallet = await _own_wallet(request)
    data = strict_object(parse_json(body), {"amount": int, "reference": str})
    return json_response(await services.bank.credit_deposit(wallet, data["amount"], data["reference"]))


# -- funding and defunding ------------------------------------------------------------------------

def _flow_status(answer: dict[str, Any], fresh: bool, final: tuple[str, ...]) -> int:
    if answer["state"] not in final:
        return 202   # recorded; the recovery loop finishes it
    return 201 if fresh else 200


async def fund(request: web.Request) -> web.Response:
    services, body, signer = await _signed(request)
    data = strict_object(parse_json(body), {"funding_id": str, "amount": int})
    wallet = await services.bank.wallet(signer)
    answer, fresh = await services.flows.fund(wallet, data["funding_id"], data["amount"])
    return json_response(answer, _flow_status(answer, fresh, ("minted", "failed")))


async def get_funding(request: web.Request) -> web.Response:
    services, _, signer = await _signed(request)
    wallet = await services.bank.wallet(signer)
    return json_response(await services.flows.funding(wallet, request.match_info["funding_id"]))


async def defund(request: web.Request) -> web.Response:
    services, body = await _body(request)
    answer, fresh = await services.flows.defund(signed_from_json(parse_json(body)))
    return json_response(answer, _flow_status(answer, fresh, ("credited",)))


async def get_defund(request: web.Request) -> web.Response:
    services, _, signer = await _signed(request)
    wallet = await services.bank.wallet(signer)
    return json_response(await services.flows.defund_status(wallet, request.match_info["defund_id"]))


# -- spends ---------------------------------------------------------------------------------------

async def transfer(request: web.Request) -> web.Response:
    services, body = await _body(request)
    bank = services.bank
    vtx = bank.validate(signed_from_json(parse_json(body)), ("transfer",))
    spend = bank.spend_of(vtx)
    result = await bank.submit(spend, None)   # the flush checks every limit (no extra round trip here)
    answer = {"tx_id": vtx.tx_id.hex(), "status": result.code, "result": result.code, "seq": result.seq,
              "accepted_at": result.accepted_at.isoformat() if result.accepted_at else None}
    return json_response(answer, 201 if result.code == CREATED else 200)


def _batch_items(body: bytes, transactions_max: int) -> list:
    data = strict_object(parse_json(body), {"transactions": list})
    items = data["transactions"]
    if not 1 <= len(items) <= transactions_max:
        raise invalid("transactions", f"a batch holds 1 to {transactions_max} transactions", "batch_size_invalid")
    return items   # each item decoded and checked on its own (commercial_bank/verify.py)


async def transfer_batch(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    bank = services.bank
    items = _batch_items(await read_body(request, services.batch_request_bytes_max), services.batch_transactions_max)
    verdicts = await services.verifier.validate(items, bank.rules, bank.now(), ("transfer",))
    results = []
    for n, (verdict, outcome) in enumerate(zip(verdicts, await bank.submit_transfers(verdicts))):
        tx_id = verdict.tx_id.hex() if not isinstance(verdict, dict) else None
        if isinstance(outcome, dict):
            results.append({"index": n, "tx_id": tx_id, "status": "refused", "problem": outcome})
        else:
            results.append({"index": n, "tx_id": tx_id, "status": outcome.code, "seq": outcome.seq,
                            "accepted_at": outcome.accepted_at.isoformat() if outcome.accepted_at else None})
    return json_response({"results": results})


async def pay(request: web.Request) -> web.Response:
    services, body = await _body(request)
    answer, fresh = await services.payments.pay(signed_from_json(parse_json(body)))
    answer["status"] = "created" if fresh else "exists"
    if not fresh:
        return json_response(answer, 200)
    return json_response(answer, 201 if answer["state"] == "completed" else 202)   # on-us: done at once


async def payment_status(request: web.Request) -> web.Response:
    services, _, signer = await _signed(request)
    wallet = await services.bank.wallet(signer)
    return json_response(await services.payments.status(wallet, request.match_info["payment_id"]))


async def inbound(request: web.Request) -> web.Response:
    services, body = await _body(request)
    answer, fresh = await services.payments.credit(parse_json(body))
    return json_response(answer, 201 if fresh else 200)


async def inbound_batch(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_body(request, services.batch_request_bytes_max)
    return json_response({"results": await services.payments.credit_batch(parse_json(body))})


async def reserve(request: web.Request) -> web.Response:
    services, body = await _body(request)
    payer_bank = await services.payments.authenticate_bank(request, body)
    data = strict_object(parse_json(body), {"payment_id": str, "payee_key": str, "amount": int})
    answer, fresh = await services.payments.reserve(payer_bank, data["payment_id"], data["payee_key"], data["amount"])
    return json_response(answer, 201 if fresh else 200)


async def reserve_batch(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_body(request, services.batch_request_bytes_max)
    payer_bank = await services.payments.authenticate_bank(request, body)
    items = strict_object(parse_json(body), {"reservations": list})["reservations"]
    if not 1 <= len(items) <= services.batch_transactions_max:
        raise invalid("reservations", f"1 to {services.batch_transactions_max} reservations", "batch_size_invalid")
    results = [r.to_problem() if isinstance(r, CBDCError) else {**r[0], "fresh": r[1]}
               for r in await services.payments.reserve_many(payer_bank, items)]
    return json_response({"results": results})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app[SERVICES].bank.bank_id))


ROUTES = [
    web.post("/v1/wallets", register_wallet),
    web.get("/v1/wallets/{key}", get_wallet),
    web.get("/v1/wallets/{key}/outputs", outputs),
    web.get("/v1/wallets/{key}/history", history),
    web.get("/v1/wallets/{key}/receipts/{tx_id}", receipt),
    web.post("/v1/wallets/{key}/deposit/credit", credit_deposit),
    web.post("/v1/fundings", fund),
    web.get("/v1/fundings/{funding_id}", get_funding),
    web.post("/v1/defunds", defund),
    web.get("/v1/defunds/{defund_id}", get_defund),
    web.post("/v1/transfers", transfer),
    web.post("/v1/transfers/batch", transfer_batch),
    web.post("/v1/payments", pay),
    web.get("/v1/payments/{payment_id}", payment_status),
    web.post("/v1/inbound", inbound),
    web.post("/v1/inbound/batch", inbound_batch),
    web.post("/v1/reservations", reserve),
    web.post("/v1/reservations/batch", reserve_batch),
    web.get("/openapi.json", openapi),
]
