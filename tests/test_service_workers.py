"""Several worker processes per service (shared.serve): one port shared with SO_REUSEPORT, metrics
summed over every worker, clean shutdown, and a dead worker brings the service down visibly."""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys

import aiohttp
import psutil

from cbdc.supervisor import free_port_block
from shared import db
from tests.cb_harness import OPERATORS, CentralBankClient, environment
from tests.system_processes import ROOT, wait_until
from tests.test_central_bank_process import _wait_ready

WORKERS = 2
REQUESTS = 300


def _start(pg_server: str, name: str, port: int) -> subprocess.Popen:
    env = {**os.environ, **environment(pg_server, name), "CBDC_CB_PORT": str(port), "CBDC_CB_WORKERS": str(WORKERS),
           "CBDC_CB_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "central_bank"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _workers(process: subprocess.Popen) -> list[psutil.Process]:
    return [c for c in psutil.Process(process.pid).children() if "spawn_main" in " ".join(c.cmdline())]


async def test_workers_share_the_port_and_their_metrics_add_up(pg_server):
    name = f"t_workers_{secrets.token_hex(4)}"
    port = free_port_block(1)
    process = _start(pg_server, name, port)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, process)
        wait_until(lambda: len(_workers(process)) == WORKERS, f"{WORKERS} worker processes")
        cpu_before = {w.pid: sum(w.cpu_times()[:2]) for w in _workers(process)}
        async with CentralBankClient(url, OPERATORS["op1"], "operator:op1") as op:
            # fresh connections each time, so the kernel spreads them over the workers
            for _ in range(REQUESTS // 10):
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
                    client = CentralBankClient(url, OPERATORS["op1"], "operator:op1", session=s)
                    await asyncio.gather(*(client.supply() for _ in range(10)))
            async with aiohttp.ClientSession() as s:
                async with s.get(url + "/metrics") as r:
                    text = await r.text()
        served = sum(float(m) for m in re.findall(
            r'^cbdc_http_requests_total\{[^}]*route="/v1/supply"[^}]*status="200"[^}]*\} (\S+)$', text, re.M))
        assert served == REQUESTS
        used = {w.pid: sum(w.cpu_times()[:2]) - cpu_before[w.pid] for w in _workers(process)}
        assert all(seconds > 0.02 for seconds in used.values()), f"every worker should have served requests: {used}"
        pids = [w.pid for w in _workers(process)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, process.stderr.read()
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await db.drop_database(pg_server, name)


async def test_a_dead_worker_stops_the_service(pg_server):
    name = f"t_workers_{secrets.token_hex(4)}"
    port = free_port_block(1)
    process = _start(pg_server, name, port)
    try:
        await _wait_ready(f"http://127.0.0.1:{port}", process)
        wait_until(lambda: len(_workers(process)) == WORKERS, f"{WORKERS} worker processes")
        os.kill(_workers(process)[0].pid, signal.SIGKILL)
        assert process.wait(timeout=60) == 1
        assert "exited" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await db.drop_database(pg_server, name)
