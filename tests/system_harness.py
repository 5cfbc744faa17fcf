"""The whole system as real processes: ``python -m central_bank`` and ``python -m commercial_bank``
(two banks), each on a free loopback port with its own database on the test's PostgreSQL server.

``System`` starts them, registers the banks at the central bank (their real URLs as callbacks),
issues tier-1 holdings to each by maker-checker, and waits for /readyz (bounded; if a process dies,
the failure shows its stderr). It can crash a service through a fail point (shared/failpoints.py),
restart it with or without fail points, and wait (bounded) until the system is quiescent and the
system audit (shared/system_audit.py) passes. Every process is started and ended by its pid; stderr
goes to a file per process under the run's temp dir, kept and shown on failure.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from cbdc.supervisor import free_port_block
from central_bank.client import CentralBankClient
from commercial_bank.client import BankClient
from shared import db
from shared.crypto import PrivateKey
from shared.failpoints import EXIT_CODE
from shared.system_audit import SystemAudit, audit_system
from tests import bank_harness, cb_harness

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SECONDS = 30.0
EXIT_TIMEOUT_SECONDS = 20.0
CONVERGE_TIMEOUT_SECONDS = 30.0
HOLDINGS = 4_000_000   # per bank; the harness central bank caps supply at 10,000,000


@dataclass
class Service:
    name: str
    module: str
    env: dict[str, str]
    port: int
    log_dir: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.starts}.stderr"

    def stderr_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no stderr)"


@dataclass
class System:
    pg_server: str
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cbdc-system-")))
    services: dict[str, Service] = field(default_factory=dict)
    bank_keys: dict[str, PrivateKey] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)   # service name -> database name
    clients: list[CentralBankClient] = field(default_factory=list)

    # -- set-up and tear-down ------------------------------------------------------------------

    async def start(self, bank_ids: tuple[str, ...] = ("bank-a", "bank-b")) -> None:
        tag = secrets.token_hex(3)
        self.databases["cb"] = f"t_sys_cb_{tag}"
        cb_env = cb_harness.environment(self.pg_server, self.databases["cb"], CBDC_CB_LOG_LEVEL="WARNING",
                                        CBDC_CB_REQUEST_WINDOW_SECONDS="60")
        cb = self._add("cb", "central_bank", cb_env, "CBDC_CB_PORT")
        for bank_id in bank_ids:
            key = PrivateKey.generate()
            self.bank_keys[bank_id] = key
            self.databases[bank_id] = f"t_sys_{bank_id.replace('-', '_')}_{tag}"
            env = bank_harness.environment(cb.url, self.pg_server, bank_id, key.seed, self.databases[bank_id],
                                           CBDC_BANK_LOG_LEVEL="WARNING")
            self._add(bank_id, "commercial_bank", env, "CBDC_BANK_PORT")
        await self.start_service("cb")
        op = self.operator()
        for bank_id in bank_ids:
            await op.register_bank(bank_id, f"Bank {bank_id}", self.bank_keys[bank_id].public_key,
                                   self.services[bank_id].url)
            proposal = await op.propose_issuance(bank_id, HOLDINGS)
            await self.operator("op2").approve_issuance(proposal["proposal_id"])
            await self.start_service(bank_id)

    def _add(self, name: str, module: str, env: dict[str, str], port_variable: str) -> Service:
        port = free_port_block(1)
        service = Service(name, module, {**env, port_variable: str(port)}, port, self.log_dir)
        self.services[name] = service
        return service

    async def stop(self) -> None:
        for client in self.clients:
            await client.close()
        for service in self.services.values():
            self.kill(service.name)
        for name in self.databases.values():
            await db.drop_database(self.pg_server, name)
        shutil.rmtree(self.log_dir, ignore_errors=True)   # the services' stderr, read by failing checks before this

    # -- processes ------------------------------------------------------------------------------

    async def start_service(self, name: str, failpoints: tuple[str, ...] = (), *, ready: bool = True) -> None:
        """Start ``name``; wait for /readyz unless ``ready`` is False (a fail point may fire during
        start-up, when the recovery loop's first pass resumes interrupted work)."""
        service = self.services[name]
        assert service.process is None or service.process.poll() is not None, f"{name} is running"
        service.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("CBDC_")}
        env.update(service.env)
        env["CBDC_FAILPOINTS"] = ",".join(failpoints)
        with open(service.log_path, "wb") as stderr:
            service.process = subprocess.Popen([sys.executable, "-m", service.module], cwd=ROOT, env=env,
                                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        if ready:
            await self.wait_ready(name)

    async def wait_ready(self, name: str) -> None:
        service = self.services[name]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_SECONDS
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while loop.time() < deadline:
                if service.process.poll() is not None:
                    raise AssertionError(f"{name} exited {service.process.returncode} while starting:\n"
                                         f"{service.stderr_tail()}")
                try:
                    async with session.get(service.url + "/readyz") as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"{name} not ready within {READY_TIMEOUT_SECONDS} s:\n{service.stderr_tail()}")

    async def wait_exit(self, name: str, code: int = EXIT_CODE) -> None:
        """Bounded wait for ``name`` to exit with ``code`` (a fail point fired)."""
        service = self.services[name]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EXIT_TIMEOUT_SECONDS
        while service.process.poll() is None:
            if loop.time() > deadline:
                raise AssertionError(f"{name} did not crash within {EXIT_TIMEOUT_SECONDS} s:\n{service.stderr_tail()}")
            await asyncio.sleep(0.02)
        assert service.process.returncode == code, \
            f"{name} exited {service.process.returncode}, expected {code}:\n{service.stderr_tail()}"

    def kill(self, name: str) -> None:
        """SIGKILL the service's process (by its pid) and reap it."""
        process = self.services[name].process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=EXIT_TIMEOUT_SECONDS)

    async def restart(self, name: str, failpoints: tuple[str, ...] = (), *, ready: bool = True) -> None:
        self.kill(name)
        await self.start_service(name, failpoints, ready=ready)

    # -- clients and checks ---------------------------------------------------------------------

    def operator(self, name: str = "op1") -> CentralBankClient:
        client = CentralBankClient(self.services["cb"].url, cb_harness.OPERATORS[name], f"operator:{name}")
        self.clients.append(client)
        return client

    def bank_client(self, bank_id: str, key: PrivateKey | None) -> BankClient:
        client = BankClient(self.services[bank_id].url, bank_id, key)
        self.clients.append(client)
        return client

    async def wallet(self, bank_id: str, deposit: int = 0, tier: str = "full") -> bank_harness.Wallet:
        key = PrivateKey.generate()
        client = self.bank_client(bank_id, key)
        await client.register(f"Customer {key.public_key.hex()[:6]}", tier, deposit_account=True)
        if deposit:
            await client.credit_deposit(deposit, "opening")
        return bank_harness.Wallet(key, client)

    def database_urls(self) -> tuple[str, dict[str, str]]:
        cb = db.database_url(self.pg_server, self.databases["cb"])
        return cb, {b: db.database_url(self.pg_server, self.databases[b]) for b in self.bank_keys}

    async def audit(self) -> SystemAudit:
        cb, banks = self.database_urls()
        return await audit_system(cb, banks)

    async def wait_converged(self, timeout_seconds: float = CONVERGE_TIMEOUT_SECONDS) -> SystemAudit:
        """Bounded wait until nothing is in flight and the system audit passes; else fail saying why."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            for name, service in self.services.items():
                if service.process.poll() is not None:
                    raise AssertionError(f"{name} died ({service.process.returncode}):\n{service.stderr_tail()}")
            audit = await self.audit()
            if audit.quiescent and audit.ok:
                return audit
            if loop.time() > deadline:
                raise AssertionError(f"not converged within {timeout_seconds} s; in flight: {audit.open_items[:10]}; "
                                     f"breaches: {audit.all_breaches()[:10]}")
            await asyncio.sleep(0.1)


async def attempt(call):
    """Run a client call that may be cut off by a crash: its answer, or None if the connection broke."""
    try:
        return await call
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
        return None
