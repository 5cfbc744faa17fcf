"""Per-client rate limits: a token bucket per client, refusing with 429 and Retry-After.

The client is the key id a request claims (``CBDC-Key-Id``: a bank, an operator, a wallet) or,
for unsigned requests, the peer address. Claiming someone else's key id only spends that
client's tokens if the request also passes the signature check later, so the bucket is charged
for every request: a flood under a forged id is throttled like any other. Buckets live in each
worker process's memory (a limit per worker), and at most ``clients_max`` are kept.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from aiohttp import web

from shared.errors import TooManyRequests

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class TokenBuckets:
    def __init__(self, rate_per_second: float, burst: int, *, clients_max: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert rate_per_second > 0 and burst >= 1
        self.rate = rate_per_second
        self.burst = float(burst)
        self.clients_max = clients_max
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """Spend one token; 0.0 if allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.clients_max:
            self._buckets.popitem(last=False)  # the least recently seen client
        return wait


def rate_limit_middleware(buckets: TokenBuckets):
    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if request.path not in EXEMPT_PATHS:
            client = request.headers.get("CBDC-Key-Id") or request.remote or "unknown"
            wait = buckets.take(client[:200])
            if wait > 0:
                raise TooManyRequests(f"too many requests from this client; retry in {wait:.2f} s",
                                      extra={"retry_after_seconds": round(wait, 3)})
        return await handler(request)
    return middleware
