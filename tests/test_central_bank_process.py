"""End to end: `python -m central_bank` as a real process, configured only through CBDC_CB_*
variables; ready, serving signed requests, and shutting down cleanly on SIGTERM."""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from cbdc.supervisor import free_port_block
from central_bank.settings import load
from shared import db
from shared.errors import ConfigError
from shared.crypto import PrivateKey
from tests.cb_harness import OPERATORS, CentralBankClient, environment

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SECONDS = 30.0


async def _wait_ready(url: str, process: subprocess.Popen) -> None:
    """Bounded wait for /readyz; fails at once, with the process's stderr, if it dies."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_SECONDS
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while loop.time() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"central bank exited {process.returncode}:\n{process.stderr.read()}")
            try:
                async with session.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz not ready within {READY_TIMEOUT_SECONDS} s")


async def test_the_service_process_starts_serves_and_stops(pg_server):
    name = f"t_cb_process_{secrets.token_hex(4)}"
    port = free_port_block(1)
    env = {**os.environ, **environment(pg_server, name), "CBDC_CB_PORT": str(port), "CBDC_CB_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "central_bank"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, process)
        async with CentralBankClient(url, OPERATORS["op1"], "operator:op1") as op:
            bank = await op.register_bank("bank-proc", "Process Bank", PrivateKey.generate().public_key,
                                          "http://127.0.0.1:9/")
            assert bank["status"] == "active"
            assert (await op.supply())["outstanding"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await db.drop_database(pg_server, name)


def test_a_missing_setting_fails_loudly_with_its_name():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBDC_")}
    out = subprocess.run([sys.executable, "-m", "central_bank"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "CBDC_CB_SIGNING_KEY_FILE" in out.stderr


def test_settings_fail_loudly_and_mask_secrets(pg_server):
    env = environment("postgresql://u:pw@127.0.0.1/x", "cb_x")
    settings = load(env)
    assert env["CBDC_CB_SIGNING_SEED"] not in repr(settings) and "pw@" not in repr(settings)
    assert len(settings.operators()) == 3
    for name, value in (("CBDC_CB_OPERATOR_KEYS", "op1:zz"), ("CBDC_CB_SUPPLY_CAP", "0"),
                        ("CBDC_CB_SIGNING_SEED", "abc"), ("CBDC_CB_PORT", "http"),
                        ("CBDC_CB_OPERATOR_KEYS", "op1:" + "00" * 32)):
        with pytest.raises(ConfigError, match=name.removeprefix("CBDC_CB_") if name != "CBDC_CB_SIGNING_SEED"
                           else "seed"):
            load({**env, name: value})
    fallback = {k: v for k, v in env.items() if k != "CBDC_CB_DATABASE_URL"}
    assert load({**fallback, "CBDC_DATABASE_URL": pg_server}).database_url == pg_server
