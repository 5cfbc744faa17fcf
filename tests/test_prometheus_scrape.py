"""Prometheus for real: Debian's prometheus scrapes a running system with the scrape configuration
from deploy/prometheus/, during a short load; its HTTP API shows non-zero rates, and at the end
the counters equal the database's totals."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import asyncpg
import orjson
import pytest

from cbdc import state
from central_bank.client import CentralBankClient
from shared.crypto import PrivateKey
from tests.system_processes import ROOT, RunningSystem, free_port_block, wait_until

LOAD_SECONDS = 8.0


def _prometheus() -> str:
    """The prometheus binary, installed from Debian's packages if missing."""
    if shutil.which("prometheus") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300)
        out = subprocess.run(["apt-get", "install", "-y", "-qq", "prometheus"], capture_output=True, text=True,
                             timeout=600, env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        assert out.returncode == 0, f"could not install Debian's prometheus (needs root and apt):\n{out.stderr[-2000:]}"
    return shutil.which("prometheus")


def test_deploy_config_and_rules_are_valid():
    _prometheus()
    for args in (["check", "config", "deploy/prometheus/prometheus.yml"], ["check", "rules", "deploy/prometheus/alerts.yml"]):
        out = subprocess.run(["promtool", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def _query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = orjson.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def _value(port: int, expr: str) -> float | None:
    result = _query(port, expr)
    return float(result[0]["value"][1]) if result else None


async def _load(url: str, state_dir) -> int:
    """Register a bank, then issue to it and read the supply, for LOAD_SECONDS; returns issuances."""
    op1, op2 = (state.load_key(state_dir, n) for n in ("op1", "op2"))
    issued = 0
    async with CentralBankClient(url, op1, "operator:op1") as maker, CentralBankClient(url, op2, "operator:op2") as checker:
        await maker.register_bank("bank-p", "Bank P", PrivateKey.generate().public_key, "http://127.0.0.1:9")
        deadline = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < deadline:
            proposal = await maker.propose_issuance("bank-p", 100 + issued)
            await checker.approve_issuance(proposal["proposal_id"])
            issued += 1
            await asyncio.gather(*(maker.supply() for _ in range(10)))
    return issued


def test_prometheus_scrapes_the_running_system(tmp_path):
    binary = _prometheus()
    system = RunningSystem(tmp_path, banks=0)
    prom = None
    try:
        config = tmp_path / "prometheus" / "prometheus.yml"
        assert config.read_bytes() == (ROOT / "deploy/prometheus/prometheus.yml").read_bytes()
        port = free_port_block(1)
        prom_log = open(tmp_path / "prometheus.log", "w")
        prom = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=prom_log, stderr=subprocess.STDOUT)
        wait_until(lambda: _ready(port), "prometheus to be ready", on_fail=lambda: (tmp_path / "prometheus.log").read_text())
        wait_until(lambda: _value(port, 'up{job="cbdc",service="central-bank"}') == 1.0,
                   "prometheus to scrape the central bank", on_fail=lambda: str(_query(port, "up")))

        issued = asyncio.run(_load(system.system["services"][0]["url"], tmp_path))
        rate = _value(port, 'sum(rate(cbdc_http_requests_total{service="central-bank"}[10s]))')
        assert rate and rate > 0, rate

        async def db_total() -> int:
            conn = await asyncpg.connect(system.database_url(f"{system.prefix}central_bank"))
            try:
                return await conn.fetchval("SELECT count(*) FROM ledger_tx WHERE kind = 1")
            finally:
                await conn.close()

        total = asyncio.run(db_total())
        assert total == issued
        expr = 'sum(cbdc_cb_transactions_total{service="central-bank",kind="issue",result="created"})'
        wait_until(lambda: _value(port, expr) == total, f"the scraped issue counter to reach {total}",
                   timeout=30, on_fail=lambda: str(_query(port, expr)))
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        assert system.stop() == 0, system.log()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
