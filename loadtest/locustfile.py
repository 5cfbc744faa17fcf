"""Locust scenarios for the CBDC system: wallet users paying on-us and cross-bank, hot merchants
watching their balance, and a payday spike.

Pre-sign first (the generator then only sends bytes, so it is not the bottleneck), on a system
started by `cbdc up`:

    python -m loadtest.prepare --state-dir .state --transactions 20000 --out reports/presigned.json
    locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8471 \\
        --presigned reports/presigned.json --crossbank-share 0.2 --load-shape payday \\
        --csv reports/locust --html reports/locust.html

User classes:

* ``WalletUser`` (weight 10): pays with the next pre-signed payment, on-us (``POST /v1/transfers``)
  or cross-bank (``POST /v1/payments``), cross-bank with probability ``--crossbank-share``. Who is
  paid was fixed when the payments were signed: most go to a few hot merchants (prepare's
  ``--hot-share``). ``--user-rate R`` paces each user at R payments/s (0: as fast as answered).
* ``MerchantUser`` (weight 1): a hot merchant reading its wallet (a wallet-signed request) every
  2 s.

Every answer is checked with ``catch_response``: 201/200 with ``status`` created/exists (a
transfer) or 202/200 with a payment ``state``; a refusal is a failure whose reason is its status and
problem ``code`` (``409 input_already_spent``), so the failures table counts refusals by code.

The load shape (``--load-shape``, always bounded in time): ``steady`` holds ``-u`` users (spawned at
``-r``/s) for ``-t`` (default 60 s); ``payday`` ramps to ``-u`` over the first 30 % of ``-t``,
spikes to ``-u`` × ``--spike-factor`` for the next 25 %, and settles back to ``-u`` for the rest.
The run also ends when the pre-signed payments are used up: each is sent once. Run one locust
process per file (workers would share a file and send duplicates, answered ``exists``).
"""
from __future__ import annotations

import logging
import os
import random
import time
from collections import deque

import orjson
from locust import FastHttpUser, LoadTestShape, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner
from locust.user.wait_time import constant_pacing

from loadtest import prepare
from shared.crypto import PrivateKey
from shared.signing import sign_request

log = logging.getLogger("cbdc.locust")

JSON_HEADERS = {"Content-Type": "application/json"}
DEFAULT_RUN_SECONDS = 60
MERCHANT_PACING_SECONDS = 2.0
# shape phases as shares of the run time (payday)
RAMP_SHARE, SPIKE_SHARE = 0.30, 0.25

POOLS: dict[str, deque] = {"onus": deque(), "crossbank": deque()}
MERCHANTS: list[dict] = []
SETTINGS = {"crossbank_share": 0.2, "user_rate": 0.0, "load_shape": "steady", "spike_factor": 3.0}


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    env = os.environ.get
    parser.add_argument("--presigned", default=env("CBDC_LOAD_PRESIGNED", "reports/presigned.json"),
                        help="pre-signed payments from `python -m loadtest.prepare` ($CBDC_LOAD_PRESIGNED)")
    parser.add_argument("--crossbank-share", type=float, default=float(env("CBDC_LOAD_CROSSBANK_SHARE", "0.2")),
                        help="share of payments that are cross-bank, 0..1 ($CBDC_LOAD_CROSSBANK_SHARE)")
    parser.add_argument("--user-rate", type=float, default=float(env("CBDC_LOAD_USER_RATE", "0")),
                        help="payments/s per wallet user; 0 = closed loop ($CBDC_LOAD_USER_RATE)")
    parser.add_argument("--load-shape", choices=("steady", "payday"), default=env("CBDC_LOAD_SHAPE", "steady"),
                        help="steady, or payday: ramp, spike, settle ($CBDC_LOAD_SHAPE)")
    parser.add_argument("--spike-factor", type=float, default=float(env("CBDC_LOAD_SPIKE_FACTOR", "3")),
                        help="users at the payday spike, as a multiple of -u ($CBDC_LOAD_SPIKE_FACTOR)")


@events.init.add_listener
def _load(environment, **_kwargs) -> None:
    """Read the pre-signed payments once, before any user starts (not on a distributed master)."""
    options = environment.parsed_options
    if options is None:
        return
    share = options.crossbank_share
    if not 0.0 <= share <= 1.0:
        raise SystemExit(f"--crossbank-share must be within 0..1, not {share}")
    SETTINGS.update(crossbank_share=share, user_rate=options.user_rate, load_shape=options.load_shape,
                    spike_factor=max(1.0, options.spike_factor))
    if isinstance(environment.runner, MasterRunner):
        return
    data = prepare.read(options.presigned)
    for payment in data["payments"]:
        POOLS[payment["kind"]].append((payment["url"], payment["body"].encode()))
    MERCHANTS[:] = [{**m, "url": data["banks"][m["bank"]]} for m in data["merchants"]]
    first_bank = next(iter(data["banks"].values()))
    for user_class in (WalletUser, MerchantUser):
        if user_class.host is None:
            user_class.host = first_bank
    log.info("loaded %d on-us and %d cross-bank pre-signed payments (run %s)",
             len(POOLS["onus"]), len(POOLS["crossbank"]), data["run"])


def _next_payment() -> tuple[str, bytes] | None:
    """The next unsent payment: cross-bank with the configured share, else on-us (either pool when
    the other is empty); None when both are used up."""
    first = "crossbank" if random.random() < SETTINGS["crossbank_share"] else "onus"
    for kind in (first, "onus" if first == "crossbank" else "crossbank"):
        if POOLS[kind]:
            return POOLS[kind].popleft()
    return None


def _refusal(status: int, content: bytes | None) -> str:
    """'409 input_already_spent' from a problem+json answer, else the status and a snippet."""
    try:
        code = orjson.loads(content or b"{}").get("code")
    except (orjson.JSONDecodeError, AttributeError):
        code = None
    return f"{status} {code}" if code else f"{status} {(content or b'')[:80]!r}"


class WalletUser(FastHttpUser):
    """A wallet paying on-us or cross-bank with pre-signed payments."""

    weight = 10

    def wait_time(self) -> float:
        rate = SETTINGS["user_rate"]
        return constant_pacing(1.0 / rate)(self) if rate > 0 else 0.0

    @task
    def pay(self) -> None:
        payment = _next_payment()
        if payment is None:
            raise StopUser()
        url, body = payment
        onus = url.endswith("/v1/transfers")
        name = "POST /v1/transfers (on-us)" if onus else "POST /v1/payments (cross-bank)"
        with self.client.post(url, data=body, headers=JSON_HEADERS, name=name, catch_response=True) as r:
            if r.status_code in ((201, 200) if onus else (202, 200)):
                answer = orjson.loads(r.content or b"{}")
                ok = answer.get("status") in ("created", "exists") if onus else "state" in answer
                if ok:
                    r.success()
                else:
                    r.failure(f"{r.status_code} unexpected answer {answer!r:.120}")
            else:
                r.failure(_refusal(r.status_code, r.content))


class MerchantUser(FastHttpUser):
    """A hot merchant checking its balance (a wallet-signed read) every couple of seconds."""

    weight = 1
    wait_time = constant_pacing(MERCHANT_PACING_SECONDS)
    _next = 0

    def on_start(self) -> None:
        if not MERCHANTS:
            raise StopUser()
        merchant = MERCHANTS[MerchantUser._next % len(MERCHANTS)]
        MerchantUser._next += 1
        self.bank, self.base = merchant["bank"], merchant["url"]
        self.key = PrivateKey(bytes.fromhex(merchant["seed"]))
        self.path = f"/v1/wallets/{self.key.public_key.hex()}"

    @task
    def balance(self) -> None:
        headers = sign_request(self.key, f"wallet:{self.key.public_key.hex()}", "GET", self.path, b"",
                               now=int(time.time()), ledger=self.bank)
        with self.client.get(self.base + self.path, headers=headers, name="GET /v1/wallets/{key} (merchant)",
                             catch_response=True) as r:
            if r.status_code == 200 and isinstance(orjson.loads(r.content or b"{}").get("balance"), int):
                r.success()
            else:
                r.failure(_refusal(r.status_code, r.content))


class CBDCLoadShape(LoadTestShape):
    """steady or payday (see the module docstring); reads -u, -r and -t; ends when time is up or the
    pre-signed payments are used up."""

    use_common_options = True

    def tick(self):
        options = self.runner.environment.parsed_options
        users = max(1, options.num_users or 1)
        rate = max(0.1, options.spawn_rate or 1.0)
        total = options.run_time or DEFAULT_RUN_SECONDS
        now = self.get_run_time()
        if now >= total or self._used_up(now):
            return None
        if SETTINGS["load_shape"] == "steady":
            return users, rate
        if now < RAMP_SHARE * total:
            return users, max(rate, users / (RAMP_SHARE * total))
        if now < (RAMP_SHARE + SPIKE_SHARE) * total:
            spike = int(users * SETTINGS["spike_factor"])
            return spike, max(rate, float(spike))        # the spike arrives within about a second
        return users, max(rate, float(users))

    _used_up_at: float | None = None

    def _used_up(self, now: float) -> bool:
        """True a second after the last pre-signed payment was taken (the last answers arrive)."""
        if isinstance(self.runner, MasterRunner) or POOLS["onus"] or POOLS["crossbank"]:
            return False
        if self._used_up_at is None:
            self._used_up_at = now
            log.info("the pre-signed payments are used up: ending the run")
        return now - self._used_up_at > 1.0
