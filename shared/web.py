"""HTTP plumbing both tiers share: the one error middleware, JSON in and out, health and metrics.

* ``error_middleware`` turns every error into RFC 9457 ``application/problem+json``: a CBDCError
  with its status, stable ``code`` (and ``index``/``field`` where they apply); aiohttp's own HTTP
  errors (404, 405, 413, ...) with a code named for the status; anything unexpected is logged with
  its traceback and answered with a bare 500 that reveals nothing.
* ``metrics_middleware`` counts requests by route template, method and status
  (``cbdc_http_requests_total``) and times them (``cbdc_http_request_duration_seconds``).
* ``read_json`` reads a bounded body and parses it with orjson (``malformed_json``,
  ``request_too_large``); ``json_response`` answers with orjson.
* ``add_health_routes`` serves ``/healthz`` (the process is up), ``/readyz`` (the database answers
  ``SELECT 1``) and ``/metrics`` (prometheus-client text of the app's own CollectorRegistry).
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from shared.errors import BadRequest, CBDCError, PayloadTooLarge

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
READY_CHECK_KEY = web.AppKey("ready_check", object)      # async () -> None; raises when not ready
BEFORE_SCRAPE_KEY = web.AppKey("before_scrape", object)  # async () -> None; refreshes gauges
HTTP_METRICS_KEY = web.AppKey("http_metrics", object)

_HTTP_CODES = {400: "malformed_request", 401: "unauthenticated", 403: "not_permitted", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "request_too_large",
               415: "unsupported_media_type", 429: "rate_limited", 503: "unavailable"}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def problem_response(problem: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(problem), status=problem["status"], content_type=PROBLEM_CONTENT_TYPE)


def _http_problem(exc: web.HTTPException, instance: str) -> dict[str, Any]:
    code = _HTTP_CODES.get(exc.status, "http_error")
    return {"type": f"urn:cbdc:error:{code}", "title": exc.reason, "status": exc.status, "code": code,
            "detail": exc.reason, "instance": instance}


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CBDCError as exc:
        response = problem_response(exc.to_problem(request.path))
        if "retry_after_seconds" in exc.extra:
            response.headers["Retry-After"] = str(max(1, math.ceil(exc.extra["retry_after_seconds"])))
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem_response(_http_problem(exc, request.path))
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return problem_response(CBDCError().to_problem())


class HTTPMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("cbdc_http_requests_total", "HTTP requests by route template and status",
                                ["route", "method", "status"], registry=registry)
        self.duration = Histogram("cbdc_http_request_duration_seconds", "HTTP request duration by route",
                                  ["route"], registry=registry)


def _route_label(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"  # never the raw path: that would be unbounded cardinality
    return info.route.resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics: HTTPMetrics = request.app[HTTP_METRICS_KEY]  # type: ignore[assignment]
        route = _route_label(request)
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.duration.labels(route).observe(time.perf_counter() - started)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 past ``max_bytes`` (checked before and after reading)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the body is limited to {max_bytes} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"the body is limited to {max_bytes} bytes") from None
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the body is limited to {max_bytes} bytes")
    return body


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not valid JSON", code="malformed_json") from None


async def read_json(request: web.Request, max_bytes: int) -> Any:
    return parse_json(await read_body(request, max_bytes))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    check: Callable[[], Awaitable[None]] = request.app[READY_CHECK_KEY]  # type: ignore[assignment]
    try:
        await check()
    except Exception as exc:  # not ready is an answer, not a crash
        log.warning("not ready: %s", type(exc).__name__)
        return problem_response({"type": "urn:cbdc:error:not_ready", "title": "Not ready", "status": 503,
                                 "code": "not_ready", "detail": "a dependency is not answering"})
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    before = request.app.get(BEFORE_SCRAPE_KEY)
    if before is not None:
        await before()  # type: ignore[operator]
    if os.environ.get(MULTIPROCESS_ENV):
        # several worker processes (shared.serve): every worker's values, summed per series
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = request.app[REGISTRY_KEY]
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_base_app(*, client_max_size: int, ready_check: Callable[[], Awaitable[None]],
                    registry: CollectorRegistry | None = None,
                    rate_limit: tuple[float, int] | None = None) -> web.Application:
    """An application with the shared middlewares and /healthz, /readyz, /metrics.

    ``rate_limit`` = (requests per second, burst) per client (shared.ratelimit); None: no limit.
    """
    middlewares = [metrics_middleware, error_middleware]
    if rate_limit is not None:
        from shared.ratelimit import TokenBuckets, rate_limit_middleware
        middlewares.append(rate_limit_middleware(TokenBuckets(*rate_limit)))
    app = web.Application(middlewares=middlewares, client_max_size=client_max_size)
    registry = registry or CollectorRegistry()
    app[REGISTRY_KEY] = registry
    app[HTTP_METRICS_KEY] = HTTPMetrics(registry)
    app[READY_CHECK_KEY] = ready_check
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
