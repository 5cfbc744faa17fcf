"""The central bank under test: built through the real settings loader and create_app, served by
aiohttp's TestServer on loopback, with a controllable clock and signed clients for operators and
banks. Every money-moving test ends with ``assert_supply_invariant``."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import asyncpg
from aiohttp.test_utils import TestServer

from central_bank import settings as cb_settings
from central_bank.app import POOL, create_app
from central_bank.client import CentralBankClient
from shared import db
from shared.crypto import PrivateKey
from shared.tx import LEDGER_CB, Input, Output, SignedTx, Tx
from shared.validation import sign
from tests.ledger_invariants import assert_ledger_consistent

OPERATORS = {name: PrivateKey(bytes([n + 1]) * 32) for n, name in enumerate(("op1", "op2", "op3"))}
CB_SEED = bytes([42]) * 32
CB_KEY = PrivateKey(CB_SEED)
SUPPLY_CAP = 10_000_000


class Clock:
    """Real time plus an offset the test can move."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def environment(server_url: str, database_name: str, **extra: str) -> dict[str, str]:
    env = {
        "CBDC_CB_DATABASE_URL": server_url,
        "CBDC_CB_DATABASE_NAME": database_name,
        "CBDC_CB_OPERATOR_KEYS": ",".join(f"{n}:{k.public_key.hex()}" for n, k in OPERATORS.items()),
        "CBDC_CB_SIGNING_SEED": CB_SEED.hex(),
        "CBDC_CB_SUPPLY_CAP": str(SUPPLY_CAP),
        "CBDC_CB_PROPOSAL_TTL_SECONDS": "600",
        "CBDC_CB_REQUEST_WINDOW_SECONDS": "30",
        "CBDC_CB_REQUEST_BYTES_MAX": "65536",
        "CBDC_CB_BATCH_WAIT_MS": "1",
    }
    env.update(extra)
    return env


@dataclass
class BankHandle:
    bank_id: str
    key: PrivateKey
    client: CentralBankClient


@dataclass
class CentralBankUnderTest:
    server: TestServer
    clock: Clock
    pg_server: str
    database_name: str
    clients: list[CentralBankClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def pool(self) -> asyncpg.Pool:
        return self.server.app[POOL]

    def client(self, key: PrivateKey | None, key_id: str | None) -> CentralBankClient:
        c = CentralBankClient(self.url, key, key_id, clock=self.clock)
        self.clients.append(c)
        return c

    def operator(self, name: str = "op1") -> CentralBankClient:
        return self.client(OPERATORS[name], f"operator:{name}")

    def anonymous(self) -> CentralBankClient:
        return self.client(None, None)

    async def new_bank(self, prefix: str = "bank") -> BankHandle:
        bank_id = f"{prefix}-{secrets.token_hex(3)}"
        key = PrivateKey.generate()
        await self.operator().register_bank(bank_id, f"Bank {bank_id}", key.public_key,
                                            f"http://127.0.0.1:9/{bank_id}")
        return BankHandle(bank_id, key, self.client(key, f"bank:{bank_id}"))

    async def issue(self, bank_id: str, amount: int) -> dict:
        proposal = await self.operator("op1").propose_issuance(bank_id, amount)
        return await self.operator("op2").approve_issuance(proposal["proposal_id"])

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        await self.server.close()


async def start_central_bank(pg_server: str, label: str, **extra: str) -> CentralBankUnderTest:
    name = f"t_cb_{label[:30]}_{secrets.token_hex(4)}".lower()
    settings = cb_settings.load(environment(pg_server, name, **extra))
    clock = Clock()
    server = TestServer(create_app(settings, clock=clock), host="127.0.0.1")
    await server.start_server()
    return CentralBankUnderTest(server, clock, pg_server, name)


async def stop_central_bank(cb: CentralBankUnderTest, pg_server: str) -> None:
    await cb.close()
    await db.drop_database(pg_server, cb.database_name)


# -- building bank-signed tier-1 transactions from the outputs the central bank lists --------------

def inputs_of(outputs: list[dict], amount: int) -> list[Input]:
    chosen, total = [], 0
    for o in sorted(outputs, key=lambda o: -o["amount"]):
        if total >= amount:
            break
        chosen.append(Input(bytes.fromhex(o["tx_id"]), o["index"], bytes.fromhex(o["owner"]), o["amount"]))
        total += o["amount"]
    assert total >= amount, f"only {total} available for {amount}"
    return chosen


def bank_tx(bank: BankHandle, kind: str, inputs: list[Input], outputs: list[tuple[bytes, int]],
            reference: str = "") -> SignedTx:
    body = Tx(LEDGER_CB, kind, tuple(inputs), tuple(Output(o, a) for o, a in outputs),
              reference=reference or secrets.token_hex(8))
    return sign(body, bank.key)


async def pay_from(bank: BankHandle, account: str, kind: str, amount: int, to: bytes,
                   change_to: bytes) -> dict:
    """Spend ``amount`` of ``bank``'s holdings or escrow to ``to`` (kind fund/defund/transfer)."""
    ins = inputs_of(await bank.client.outputs(bank.bank_id, account), amount)
    total = sum(i.amount for i in ins)
    outs = [(to, amount)] + ([(change_to, total - amount)] if total > amount else [])
    return await bank.client.submit(bank_tx(bank, kind, ins, outs))


async def assert_supply_invariant(pool: asyncpg.Pool) -> None:
    """I2: issued - redeemed = the unspent tier-1 value, read in one snapshot; and the ledger audit."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        issued = await conn.fetchval("SELECT coalesce(sum(value_out), 0)::bigint FROM ledger_tx WHERE kind = 1")
        redeemed = await conn.fetchval("SELECT coalesce(sum(value_in - value_out), 0)::bigint "
                                       "FROM ledger_tx WHERE kind = 2")
        unspent = await conn.fetchval("SELECT coalesce(sum(amount), 0)::bigint FROM ledger_utxo")
    assert issued - redeemed == unspent, f"I2 broken: issued {issued} - redeemed {redeemed} != unspent {unspent}"
    await assert_ledger_consistent(pool)
