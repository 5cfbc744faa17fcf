"""The wallet CLI against a running system (tests/system_harness.py: a central bank and two banks as
processes): run ``cbdc-wallet`` as a subprocess without blocking the event loop, make wallets, and
a small fault proxy that forwards one kind of request to the bank and then withholds the answer
(the bank applied it; the wallet times out), for the retry tests."""
from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.system_harness import ROOT

CLI_TIMEOUT_SECONDS = 60.0
PASSWORD = "correct horse battery"
HOLD_SECONDS_MAX = 20.0


@dataclass
class CLIResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class WalletUser:
    """One wallet file (one account) and the environment that unlocks it."""
    path: Path
    bank: str
    bank_url: str
    address: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {"CBDC_WALLET_FILE": str(self.path), "CBDC_WALLET_PASSWORD": PASSWORD}

    async def run(self, *args: str, ok: bool = True) -> CLIResult:
        out = await cli(*args, env=self.env)
        if ok:
            assert out.returncode == 0, f"cbdc-wallet {' '.join(args)} failed: {out.stderr}"
        return out

    async def balance(self) -> str:
        """The balance line's amount, e.g. "12.50"."""
        return (await self.run("balance")).stdout.split()[0]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CBDC_WALLET_")}
    full.update(env or {})
    return full


async def cli(*args: str, env: dict[str, str] | None = None) -> CLIResult:
    """Run ``python -m wallet.cli ARGS`` detached from any terminal; bounded."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wallet.cli", *args, cwd=ROOT, env=cli_env(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"cbdc-wallet {' '.join(args)} did not finish in {CLI_TIMEOUT_SECONDS} s") from None
    return CLIResult(process.returncode, stdout.decode(), stderr.decode())


async def new_wallet(tmp: Path, name: str, bank: str, bank_url: str, *, tier: str = "basic",
                     demo_deposit: str = "", deposit_account: bool = True) -> WalletUser:
    """create + register (with a linked deposit account unless told not to, and a demo deposit credit if given)."""
    user = WalletUser(tmp / name / "wallet.dat", bank, bank_url)
    created = await user.run("create", "--bank", bank, "--bank-url", bank_url)
    user.address = (await user.run("address")).stdout.strip()
    assert user.address in created.stdout
    extra = (("--deposit-account",) if deposit_account else ()) + (("--demo-deposit", demo_deposit) if demo_deposit else ())
    registered = await user.run("register", "--tier", tier, *extra)
    assert f"registered at {bank} as {tier}" in registered.stdout, registered.stdout
    return user


class WithholdingProxy:
    """Forwards every request to ``target``; for POSTs to ``hold_path`` it forwards, lets the bank
    apply it, then withholds the answer (bounded), so the wallet times out not knowing the outcome."""

    def __init__(self, target: str, hold_path: str) -> None:
        self.target = target.rstrip("/")
        self.hold_path = hold_path
        self.applied: list[int] = []          # the bank's status for each withheld request
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> "WithholdingProxy":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self.session.request(request.method, self.target + request.raw_path, data=body or None,
                                        headers=headers) as answer:
            data, status = await answer.read(), answer.status
            content_type = answer.headers.get("Content-Type", "application/json")
        if request.method == "POST" and request.path == self.hold_path:
            self.applied.append(status)
            try:
                await asyncio.wait_for(self.release.wait(), HOLD_SECONDS_MAX)
            except asyncio.TimeoutError:
                pass
        return web.Response(status=status, body=data, headers={"Content-Type": content_type})

    async def stop(self) -> None:
        self.release.set()
        await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()
