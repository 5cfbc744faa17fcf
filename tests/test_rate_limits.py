"""Per-client rate limits: a client over its budget gets 429 problem+json with Retry-After; other
clients and the health endpoints are unaffected; the budget refills."""
from __future__ import annotations

from shared.ratelimit import TokenBuckets
from tests.cb_harness import OPERATORS, start_central_bank, stop_central_bank


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    buckets = TokenBuckets(10.0, 3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") > 0 and buckets.take("b") == 0.0
    now[0] += 0.1
    assert buckets.take("a") == 0.0


def test_buckets_are_bounded():
    buckets = TokenBuckets(1.0, 1, clients_max=10)
    for n in range(100):
        buckets.take(f"client-{n}")
    assert len(buckets._buckets) == 10  # noqa: SLF001


async def test_the_service_refuses_a_client_over_its_budget(pg_server):
    cb = await start_central_bank(pg_server, "ratelimit", CBDC_CB_RATE_LIMIT_PER_SECOND="1",
                                  CBDC_CB_RATE_LIMIT_BURST="5")
    try:
        op1, op2 = cb.operator("op1"), cb.operator("op2")
        statuses = [(await op1.raw("GET", "/v1/supply"))[0] for _ in range(8)]
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 3
        status, problem = await op1.raw("GET", "/v1/supply")
        assert status == 429 and problem["code"] == "rate_limited" and problem["retry_after_seconds"] > 0
        async with op1.session.get(cb.url + "/v1/supply", headers=op1.signed_headers("GET", "/v1/supply", b"")) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        assert (await op2.raw("GET", "/v1/supply"))[0] == 200      # another client is unaffected
        assert (await op1.raw("GET", "/readyz"))[0] == 200         # health checks are exempt
    finally:
        await stop_central_bank(cb, pg_server)
