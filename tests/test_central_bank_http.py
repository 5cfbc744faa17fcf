"""The central bank's HTTP surface: the authorisation matrix, the signed-request replay window,
hostile bodies, and the health, metrics and OpenAPI endpoints."""
from __future__ import annotations

import orjson
import pytest
from aiohttp.test_utils import TestServer

from central_bank import settings as cb_settings
from central_bank.app import create_app
from central_bank.handlers import SERVICES
from central_bank.store import escrow_owner
from shared.crypto import PrivateKey
from shared.signing import NONCE
from tests.cb_harness import OPERATORS, CentralBankClient, environment, pay_from

OK, DENIED, ANON = "ok", "denied", "anonymous"


@pytest.fixture(scope="module")
async def world(central_bank):
    """Banks A, B, C; A has holdings, escrow, a fund tx and a payment to C; a pending proposal."""
    a, b, c = [await central_bank.new_bank(p) for p in ("a", "b", "c")]
    await central_bank.issue(a.bank_id, 1_000)
    fund = await pay_from(a, "holdings", "fund", 500, escrow_owner(a.bank_id), a.key.public_key)
    await a.client.settle(f"{a.bank_id}:matrix", a.bank_id, c.bank_id, 10)
    proposal = await central_bank.operator("op2").propose_issuance(a.bank_id, 1)
    return {"a": a, "b": b, "c": c, "fund_tx": fund["tx_id"], "payment": f"{a.bank_id}:matrix",
            "proposal": proposal["proposal_id"]}


def _matrix(w) -> list[tuple[str, str, object, dict[str, int]]]:
    """(method, path, body, expected status per caller); anonymous is always 401."""
    a = w["a"].bank_id
    settle = {"payment_id": w["payment"], "payer_bank": a, "payee_bank": w["c"].bank_id, "amount": 10}
    op_only = lambda ok: {"operator": ok, "a": 403, "b": 403}  # noqa: E731
    return [
        ("POST", "/v1/banks", {}, op_only(422)),
        ("GET", "/v1/banks", None, op_only(200)),
        ("GET", f"/v1/banks/{a}", None, {"operator": 200, "a": 200, "b": 403}),
        ("GET", f"/v1/directory/{a}", None, {"operator": 200, "a": 200, "b": 200}),
        ("POST", "/v1/banks/bank-none/suspend", None, op_only(404)),
        ("POST", "/v1/banks/bank-none/resume", None, op_only(404)),
        ("GET", f"/v1/banks/{a}/balances", None, {"operator": 200, "a": 200, "b": 403}),
        ("GET", f"/v1/banks/{a}/outputs?account=escrow", None, {"operator": 200, "a": 200, "b": 403}),
        ("GET", f"/v1/banks/{a}/history?limit=5", None, {"operator": 200, "a": 200, "b": 403}),
        ("POST", "/v1/issuance", {}, op_only(422)),
        ("GET", "/v1/issuance", None, op_only(200)),
        ("GET", f"/v1/issuance/{w['proposal']}", None, op_only(200)),
        ("POST", "/v1/issuance/none/approve", None, op_only(404)),
        ("POST", "/v1/issuance/none/reject", None, op_only(404)),
        ("POST", "/v1/transactions", {}, {"operator": 403, "a": 422, "b": 422}),
        ("GET", f"/v1/transactions/{w['fund_tx']}", None, {"operator": 200, "a": 200, "b": 404}),
        ("POST", "/v1/settlements", settle, {"operator": 403, "a": 200, "b": 403}),
        ("POST", "/v1/settlements/batch", {"payments": [settle]}, {"operator": 403, "a": 200, "b": 403}),
        ("GET", f"/v1/payments/{w['payment']}", None, {"operator": 200, "a": 200, "b": 404}),
        ("GET", "/v1/supply", None, {"operator": 200, "a": 200, "b": 200}),
    ]


async def test_authorisation_matrix(central_bank, world):
    callers = {"operator": central_bank.operator("op1"), "a": world["a"].client, "b": world["b"].client}
    anonymous = central_bank.anonymous()
    seen = []
    for method, path, payload, expected in _matrix(world):
        body = b"" if payload is None else orjson.dumps(payload)
        status, problem = await anonymous.raw(method, path, body)
        assert (status, problem["code"]) == (401, "signature_missing"), (method, path)
        for name, client in callers.items():
            status, answer = await client.raw(method, path, body)
            seen.append((method, path, name, status))
            assert status == expected[name], (method, path, name, answer)
    routes = {(r.method, r.resource.canonical) for r in central_bank.server.app.router.routes()
              if r.method != "HEAD" and r.resource.canonical.startswith("/v1/")}
    assert len(routes) == len(_matrix(world)), "every /v1 route is in the matrix"


async def test_replay_window_and_signature_defects(central_bank, world):
    a = world["a"]
    path = f"/v1/banks/{a.bank_id}/balances"
    now = int(central_bank.clock())
    for skew in (-31, 31):
        status, problem = await a.client.raw("GET", path, headers=a.client.signed_headers("GET", path, b"",
                                                                                            now=now + skew))
        assert (status, problem["code"]) == (401, "timestamp_stale")
    headers = a.client.signed_headers("GET", path, b"")
    assert (await a.client.raw("GET", path, headers=headers))[0] == 200
    status, problem = await a.client.raw("GET", path, headers=headers)
    assert (status, problem["code"]) == (401, "nonce_reused")
    # a replay at another worker process / after a restart: a second app on the same database
    settings = cb_settings.load(environment(central_bank.pg_server, central_bank.database_name))
    second = TestServer(create_app(settings, clock=central_bank.clock), host="127.0.0.1")
    await second.start_server()
    try:
        other = CentralBankClient(str(second.make_url("")).rstrip("/"), a.key, f"bank:{a.bank_id}")
        status, problem = await other.raw("GET", path, headers=headers)
        assert (status, problem["code"]) == (401, "nonce_reused")
        await other.close()
    finally:
        await second.close()

    fresh = a.client.signed_headers("GET", path, b"")
    cases = [
        ({**fresh, "CBDC-Signature": "00" * 64}, "signature_invalid"),
        ({**fresh, "CBDC-Key-Id": f"bank:{world['b'].bank_id}"}, "signature_invalid"),   # A's key, B's name
        ({**fresh, "CBDC-Key-Id": "bank:bank-unknown"}, "unknown_key"),
        ({**fresh, "CBDC-Key-Id": "operator:op9"}, "unknown_key"),
        ({**fresh, NONCE: "xyz"}, "signature_invalid"),
        ({k: v for k, v in fresh.items() if k != NONCE}, "signature_missing"),
    ]
    for headers, code in cases:
        status, problem = await a.client.raw("GET", path, headers=headers)
        assert (status, problem["code"]) == (401, code), headers
    # the signature binds the path and the body
    signed = a.client.signed_headers("GET", path, b"")
    status, problem = await a.client.raw("GET", f"/v1/banks/{world['b'].bank_id}/balances", headers=signed)
    assert (status, problem["code"]) == (401, "signature_invalid")
    body = orjson.dumps({"bank_id": a.bank_id, "amount": 5})
    op = central_bank.operator("op1")
    signed = op.signed_headers("POST", "/v1/issuance", body)
    status, problem = await op.raw("POST", "/v1/issuance", body.replace(b"5", b"6"), headers=signed)
    assert (status, problem["code"]) == (401, "signature_invalid")


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "malformed_json"),
    (b"[1, 2]", 422, "wrong_type"),
    (b'{"bank_id": "x", "amount": 5, "colour": "red"}', 422, "unknown_field"),
    (b'{"amount": 5}', 422, "field_missing"),
    (b'{"bank_id": "x", "amount": "5"}', 422, "wrong_type"),
    (b'{"bank_id": "x", "amount": 5.0}', 422, "wrong_type"),
    (b'{"bank_id": "x", "amount": true}', 422, "wrong_type"),
    (b'{"bank_id": "x", "amount": 1e309}', 400, "malformed_json"),
    (b'{"bank_id": "x", "amount": NaN}', 400, "malformed_json"),
    (b"[" * 5000 + b"]" * 5000, 400, "malformed_json"),
    (b'{"bank_id": "x", "amount": 5, "memo": "' + b"m" * 70_000 + b'"}', 413, "request_too_large"),
])
async def test_hostile_bodies_get_problem_json(central_bank, body, status, code):
    op = central_bank.operator("op1")
    got_status, problem = await op.raw("POST", "/v1/issuance", body)
    assert (got_status, problem["code"]) == (status, code)


async def test_unknown_routes_methods_and_the_open_endpoints(central_bank):
    anonymous = central_bank.anonymous()
    session = anonymous.session
    async with session.get(central_bank.url + "/v1/nothing") as r:
        assert r.status == 404 and r.content_type == "application/problem+json"
        assert (await r.json(content_type=None))["code"] == "not_found"
    async with session.delete(central_bank.url + "/v1/supply") as r:
        assert r.status == 405 and (await r.json(content_type=None))["code"] == "method_not_allowed"
    for path in ("/healthz", "/readyz"):
        async with session.get(central_bank.url + path) as r:
            assert r.status == 200
    async with session.get(central_bank.url + "/metrics") as r:
        text = await r.text()
    assert 'cbdc_http_requests_total{method="DELETE",route="unmatched",status="405"}' in text
    assert "cbdc_cb_supply_outstanding_minor_units" in text and "cbdc_cb_transactions_total" in text
    async with session.get(central_bank.url + "/openapi.json") as r:
        document = await r.json()
    assert document["openapi"] == "3.1.0"
    routes = {r.resource.canonical for r in central_bank.server.app.router.routes()}
    assert routes == set(document["paths"])


async def test_unexpected_errors_are_a_bare_500(central_bank, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("password=hunter2 at /secret/path")

    monkeypatch.setattr(central_bank.server.app[SERVICES].cb, "supply", broken)
    status, problem = await central_bank.operator().raw("GET", "/v1/supply")
    assert status == 500 and problem["code"] == "internal_error"
    assert "hunter2" not in orjson.dumps(problem).decode() and "Traceback" not in orjson.dumps(problem).decode()


async def test_operator_keys_are_distinct_from_bank_keys(central_bank):
    """An operator's key cannot act as a bank, even under a bank's name."""
    impostor = central_bank.client(OPERATORS["op1"], "bank:bank-none")
    status, problem = await impostor.raw("GET", "/v1/supply")
    assert (status, problem["code"]) == (401, "unknown_key")
    stranger = central_bank.client(PrivateKey.generate(), "operator:op1")
    status, problem = await stranger.raw("GET", "/v1/supply")
    assert (status, problem["code"]) == (401, "signature_invalid")
