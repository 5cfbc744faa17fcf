"""`cbdc up` / `cbdc down`: run the central bank and the banks as supervised child processes.

`cbdc up` starts PostgreSQL (embedded unless CBDC_DATABASE_URL is set), generates or loads the
keys, starts each service with `python -m <package>` and its settings in the environment, waits
until every /readyz answers, registers the banks at the central bank, records the system in
STATE_DIR/system.json and stays in the foreground: Ctrl-C (or `cbdc down`, which signals it)
stops every child and the embedded PostgreSQL; a child that dies is reported and stops the rest.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import aiohttp
import psutil

from cbdc import state
from central_bank.client import APIError, CentralBankClient
from shared import db

DEPLOY_PROMETHEUS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
LOG_TAIL_LINES = 15


class StartError(state.StateError):
    code = "start_failed"
    title = "The system did not start"


@dataclass
class Child:
    name: str
    kind: str
    module: str
    port: int
    database: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        finally:
            log.close()

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in lines[-LOG_TAIL_LINES:])


def _service_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBDC_")}
    env.update(extra)
    return env


@dataclass
class Supervisor:
    state_dir: Path
    banks: int = 2
    base_port: int = 8470
    db_prefix: str = "cbdc_"
    workers: int = 1
    say: Callable[[str], None] = print
    bank_env: dict[str, str] = field(default_factory=dict)   # extra CBDC_BANK_* settings for every bank
    children: list[Child] = field(default_factory=list)
    embedded: object | None = None
    server_url: str = ""
    external_server: bool = False   # CBDC_DATABASE_URL: a server this supervisor did not start

    def _database(self) -> None:
        url = os.environ.get("CBDC_DATABASE_URL")
        if url:
            self.server_url, self.external_server = url, True
            return
        self.say(f"starting the embedded PostgreSQL in {self.state_dir / 'pgdata'}")
        self.embedded = db.start_embedded(self.state_dir)
        self.server_url = self.embedded.get_uri()

    def _plan(self) -> None:
        operators = {name: state.load_key(self.state_dir, name, create=True) for name in state.OPERATORS}
        cb_key = state.load_key(self.state_dir, state.CENTRAL_BANK_KEY, create=True)
        cb_env = _service_env({
            "CBDC_CB_DATABASE_URL": self.server_url,
            "CBDC_CB_DATABASE_NAME": f"{self.db_prefix}central_bank",
            "CBDC_CB_PORT": str(self.base_port),
            "CBDC_CB_WORKERS": str(self.workers),
            "CBDC_CB_OPERATOR_KEYS": ",".join(f"{n}:{k.public_key.hex()}" for n, k in operators.items()),
            "CBDC_CB_SIGNING_KEY_FILE": str(self.state_dir / "keys" / f"{state.CENTRAL_BANK_KEY}.seed"),
        })
        self.children = [Child("central-bank", "central_bank", "central_bank", self.base_port,
                               f"{self.db_prefix}central_bank",
                               cb_env, self.state_dir / "logs" / "central-bank.log")]
        for n in range(self.banks):
            bank_id = f"bank-{chr(ord('a') + n)}"
            self.children.append(self._bank_child(bank_id, self.base_port + 1 + n, cb_key.public_key))

    def _bank_child(self, bank_id: str, port: int, cb_public: bytes) -> Child:
        state.load_key(self.state_dir, bank_id, create=True)
        database = self.db_prefix + bank_id.replace("-", "_")
        env = _service_env({
            "CBDC_BANK_ID": bank_id,
            "CBDC_BANK_DATABASE_URL": self.server_url,
            "CBDC_BANK_DATABASE_NAME": database,
            "CBDC_BANK_PORT": str(port),
            "CBDC_BANK_WORKERS": str(self.workers),
            "CBDC_BANK_SIGNING_KEY_FILE": str(self.state_dir / "keys" / f"{bank_id}.seed"),
            "CBDC_BANK_CENTRAL_BANK_URL": f"http://127.0.0.1:{self.base_port}",
            "CBDC_BANK_CENTRAL_BANK_KEY": cb_public.hex(),
            **self.bank_env,
        })
        return Child(bank_id, "commercial_bank", "commercial_bank", port, database, env,
                     self.state_dir / "logs" / f"{bank_id}.log")

    async def _wait_ready(self, child: Child, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert child.process is not None
            if child.process.poll() is not None:
                raise StartError(f"{child.name} exited with status {child.process.returncode} while starting; "
                                 f"its log ({child.log_path}) ends with:\n{child.tail()}")
            try:
                async with session.get(child.url + "/readyz") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise StartError(f"{child.name} was not ready within {READY_TIMEOUT_SECONDS:.0f} s; "
                         f"its log ({child.log_path}) ends with:\n{child.tail()}")

    async def _register_banks(self) -> None:
        op1 = state.load_key(self.state_dir, "op1")
        async with CentralBankClient(self.children[0].url, op1, "operator:op1") as cb:
            for child in self.children[1:]:
                key = state.load_key(self.state_dir, child.name)
                try:
                    await cb.register_bank(child.name, f"Bank {child.name[5:].upper()}", key.public_key, child.url)
                    self.say(f"registered {child.name} at the central bank")
                except APIError as exc:
                    if exc.code != "bank_exists":
                        raise
                    self.say(f"{child.name} was already registered")

    async def start(self) -> state.System:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            existing = state.read_system(self.state_dir)
        except state.StateError:
            existing = None
        if existing is not None and alive(existing.supervisor_pid):
            raise StartError(f"a system is already running from {self.state_dir} (supervisor pid "
                             f"{existing.supervisor_pid}); stop it with `cbdc down`")
        self._database()
        self._plan()
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for child in self.children:
                self.say(f"starting {child.name} on {child.url}")
                child.start()
                await self._wait_ready(child, session)
        await self._register_banks()
        system = state.System(os.getpid(), _redact(self.server_url), self.embedded is not None, [
            state.Service(c.name, c.kind, c.url, c.process.pid, c.database, c.url + "/metrics")
            for c in self.children if c.process is not None])
        write_prometheus_targets(self.state_dir, system)
        state.write_system(self.state_dir, system)   # last: whoever sees system.json finds the rest in place
        return system

    async def watch(self, stop: asyncio.Event) -> int:
        """Until ``stop`` is set (0) or a child dies (1)."""
        while not stop.is_set():
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    self.say(f"cbdc: {child.name} exited unexpectedly with status {child.process.returncode}; "
                             f"its log ({child.log_path}) ends with:\n{child.tail()}")
                    return 1
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        return 0

    def stop(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL after a bound), then the embedded PostgreSQL."""
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in time; killing it")
                child.process.kill()
                child.process.wait()
        if self.embedded is not None:
            self.embedded.cleanup()
            self.embedded = None
        state.remove_system(self.state_dir)

    async def drop_databases(self) -> None:
        """After stop(): drop the services' databases on a shared server (a throwaway system)."""
        if self.external_server:
            for child in self.children:
                await db.drop_database(self.server_url, child.database)


def write_prometheus_targets(state_dir: Path, system: state.System) -> Path | None:
    """Copy deploy/prometheus/{prometheus,alerts}.yml into STATE_DIR/prometheus and write the
    running services into targets.json beside them (Prometheus file-based discovery)."""
    if not DEPLOY_PROMETHEUS.is_dir():
        return None
    target_dir = state_dir / "prometheus"
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in ("prometheus.yml", "alerts.yml"):
        shutil.copyfile(DEPLOY_PROMETHEUS / name, target_dir / name)
    targets = [{"targets": [s.url.removeprefix("http://")], "labels": {"service": s.name, "component": s.kind}}
               for s in system.services]
    (target_dir / "targets.json").write_text(json.dumps(targets, indent=2))
    return target_dir


def prometheus_command(state_dir: Path) -> str:
    p = state_dir / "prometheus"
    return (f"prometheus --config.file={p / 'prometheus.yml'} --storage.tsdb.path={p / 'data'} "
            "--web.listen-address=127.0.0.1:9090")


def _redact(url: str) -> str:
    """The URL without its password (if it has one)."""
    scheme, sep, rest = url.partition("//")
    userinfo, at, host = rest.partition("@")
    user, colon, password = userinfo.partition(":")
    if at and password:
        return f"{scheme}{sep}{user}:***@{host}"
    return url


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_SERVICE_PORT = 10000


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (32768 if unknown)."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports on 127.0.0.1 (bounded tries).

    The ports come from below the kernel's ephemeral range: a port there is taken only by an
    explicit bind, never by the local end of some outgoing connection (a database client, an HTTP
    keep-alive) that opens between this check and the service's own bind.
    """
    high = _ephemeral_low() - count
    if high <= LOWEST_SERVICE_PORT:
        raise StartError("no room for service ports below the ephemeral port range")
    for _ in range(200):
        base = random.randrange(LOWEST_SERVICE_PORT, high)
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise StartError("no block of free ports on 127.0.0.1")


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as stopped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_our_service(pid: int, module: str) -> bool:
    try:
        return f"-m\0{module}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def down(state_dir: Path, say: Callable[[str], None] = print) -> int:
    """Stop the system recorded in STATE_DIR/system.json (bounded waits)."""
    system = state.read_system(state_dir)
    if alive(system.supervisor_pid):
        os.kill(system.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS + 10
        while alive(system.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive(system.supervisor_pid):
            say("stopped")
            return 0
        say(f"cbdc: the supervisor (pid {system.supervisor_pid}) did not stop in time")
        return 1
    # the supervisor is gone: stop what it left behind, checking each pid is still our service
    for s in system.services:
        if alive(s.pid) and _is_our_service(s.pid, s.kind):
            os.kill(s.pid, signal.SIGTERM)
            say(f"stopped orphaned {s.name} (pid {s.pid})")
    state.remove_system(state_dir)
    return 0
