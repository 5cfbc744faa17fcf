"""Commercial banks under test, in process: built through the real settings loader and create_app,
served by aiohttp's TestServer on loopback next to the in-process central bank (tests/cb_harness.py),
registered there with their real URL as callback, and given tier-1 holdings by maker-checker
issuance. Wallets are registered through the bank's API with a funded deposit account."""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

import asyncpg
from aiohttp.test_utils import TestServer

from commercial_bank import settings as bank_settings
from commercial_bank.app import POOL, create_app
from commercial_bank.client import BankClient, build_spend, coins_of
from shared import db
from shared.crypto import PrivateKey
from shared.tx import Payee, SignedTx
from tests.cb_harness import CB_KEY, CentralBankUnderTest

WAIT_SECONDS = 20.0


def environment(cb_url: str, server_url: str, bank_id: str, seed: bytes, database_name: str,
                **extra: str) -> dict[str, str]:
    env = {
        "CBDC_BANK_ID": bank_id,
        "CBDC_BANK_SIGNING_SEED": seed.hex(),
        "CBDC_BANK_CENTRAL_BANK_URL": cb_url,
        "CBDC_BANK_CENTRAL_BANK_KEY": CB_KEY.public_key.hex(),
        "CBDC_BANK_DATABASE_URL": server_url,
        "CBDC_BANK_DATABASE_NAME": database_name,
        "CBDC_BANK_REQUEST_WINDOW_SECONDS": "30",
        "CBDC_BANK_RECOVERY_INTERVAL_SECONDS": "0.2",
        "CBDC_BANK_HTTP_TIMEOUT_SECONDS": "5",
        "CBDC_BANK_BATCH_WAIT_MS": "1",
    }
    env.update(extra)
    return env


@dataclass
class Wallet:
    key: PrivateKey
    client: BankClient

    @property
    def public_key(self) -> bytes:
        return self.key.public_key

    async def coins(self):
        return coins_of(await self.client.unspent())

    async def spend(self, kind: str, amount: int, *, to: bytes | None = None, payee: Payee | None = None,
                    reference: str = "") -> SignedTx:
        return build_spend(self.key, self.client.bank_id, kind, await self.coins(), amount=amount, to=to,
                           payee=payee, reference=reference)


@dataclass
class BankUnderTest:
    bank_id: str
    key: PrivateKey
    server: TestServer
    database_name: str
    cb: CentralBankUnderTest
    clients: list[BankClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def pool(self) -> asyncpg.Pool:
        return self.server.app[POOL]

    @property
    def database_url(self) -> str:
        return db.database_url(self.cb.pg_server, self.database_name)

    def client(self, key: PrivateKey | None) -> BankClient:
        c = BankClient(self.url, self.bank_id, key, clock=self.cb.clock)
        self.clients.append(c)
        return c

    async def wallet(self, tier: str = "full", deposit: int = 0, *, account: bool = True) -> Wallet:
        key = PrivateKey.generate()
        client = self.client(key)
        await client.register(f"Customer {key.public_key.hex()[:6]}", tier, deposit_account=account)
        if deposit:
            await client.credit_deposit(deposit, "opening")
        return Wallet(key, client)

    async def funded_wallet(self, amount: int, tier: str = "full") -> Wallet:
        w = await self.wallet(tier, deposit=amount)
        answer = await w.client.fund(f"open-{secrets.token_hex(4)}", amount)
        assert answer["state"] == "minted", answer
        return w

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        await self.server.close()


async def start_bank(cb: CentralBankUnderTest, prefix: str = "bank", holdings: int = 5_000_000,
                     **extra: str) -> BankUnderTest:
    bank_id = f"{prefix}-{secrets.token_hex(3)}"
    key = PrivateKey.generate()
    name = f"t_{bank_id.replace('-', '_')}_{secrets.token_hex(3)}"
    settings = bank_settings.load(environment(cb.url, cb.pg_server, bank_id, key.seed, name, **extra))
    server = TestServer(create_app(settings, clock=cb.clock), host="127.0.0.1")
    await server.start_server()
    bank = BankUnderTest(bank_id, key, server, name, cb)
    await cb.operator().register_bank(bank_id, f"Bank {bank_id}", key.public_key, bank.url)
    if holdings:
        await cb.issue(bank_id, holdings)
    return bank


async def stop_bank(bank: BankUnderTest) -> None:
    await bank.close()
    await db.drop_database(bank.cb.pg_server, bank.database_name)


async def wait_until(condition, what: str, timeout_seconds: float = WAIT_SECONDS, interval_seconds: float = 0.05):
    """Poll the async ``condition`` until it returns a truthy value (returned); fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    last = None
    while loop.time() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(interval_seconds)
    raise AssertionError(f"timed out after {timeout_seconds} s waiting for {what}; last value: {last!r}")


async def assert_system_consistent(cb: CentralBankUnderTest, banks: list[BankUnderTest],
                                   timeout_seconds: float = WAIT_SECONDS):
    """Wait (bounded) until nothing is in flight, then assert I1-I5 across the central bank and ``banks``."""
    from shared.system_audit import audit_system

    cb_url = db.database_url(cb.pg_server, cb.database_name)
    urls = {b.bank_id: b.database_url for b in banks}

    async def quiescent():
        audit = await audit_system(cb_url, urls)
        return audit if audit.quiescent else None

    try:
        audit = await wait_until(quiescent, "the system to be quiescent", timeout_seconds, 0.1)
    except AssertionError:
        audit = await audit_system(cb_url, urls)
        raise AssertionError("still in flight: " + "; ".join(audit.open_items[:10])) from None
    assert audit.ok, "system audit failed:\n" + "\n".join(audit.all_breaches())
    return audit
