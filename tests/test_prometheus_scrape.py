"""Prometheus for real: Debian's prometheus scrapes a running system (the central bank and two
banks) with the scrape configuration `cbdc up` copied from deploy/prometheus/, during a short load
of pre-signed on-us and cross-bank payments; its HTTP API shows non-zero payment rates, and at the
end the counters equal the databases' totals and the I3 gauges agree."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import aiohttp
import asyncpg
import orjson

from cbdc.supervisor import free_port_block
from loadtest import prepare
from tests.system_processes import ROOT, RunningSystem, wait_until
from tests.test_grafana_dashboard import as_query, dashboard_expressions

BANKS = ("bank-a", "bank-b")
LOAD_SECONDS = 6.0
RATE_PER_SECOND = 150
CONCURRENCY = 32


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
    for args in (["check", "config", "deploy/prometheus/prometheus.yml"], ["check", "rules", "deploy/prometheus/alerts.yml"],
                 ["test", "rules", "deploy/prometheus/alerts_test.yml"]):
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


async def _replay(payments: list[dict]) -> dict[str, int]:
    """Send the pre-signed payments at about RATE_PER_SECOND for at most LOAD_SECONDS (bounded in
    count and time); returns the answers by status."""
    statuses: dict[str, int] = {}
    interval = 1.0 / RATE_PER_SECOND
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def send(payment: dict) -> None:
            async with gate, session.post(payment["url"], data=payment["body"].encode(),
                                          headers={"Content-Type": "application/json"}) as response:
                await response.read()
                statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1

        tasks = []
        for n, payment in enumerate(payments):
            if time.monotonic() - started > LOAD_SECONDS:
                break
            tasks.append(asyncio.create_task(send(payment)))
            await asyncio.sleep(max(0.0, started + (n + 1) * interval - time.monotonic()))
        await asyncio.gather(*tasks)
    return statuses


async def _database_totals(system: RunningSystem) -> dict[str, int]:
    """What the ledgers hold, keyed like the PromQL expressions in COUNTERS."""
    totals: dict[str, int] = {}
    conn = await asyncpg.connect(system.database_url(f"{system.prefix}central_bank"))
    try:
        for kind, code in (("issue", 1), ("fund", 4), ("settle", 6)):
            totals[f"cb {kind}"] = await conn.fetchval("SELECT count(*) FROM ledger_tx WHERE kind = $1", code)
        totals["cb settled"] = await conn.fetchval("SELECT count(*) FROM cb_payments WHERE status = 'settled'")
    finally:
        await conn.close()
    for bank in BANKS:
        conn = await asyncpg.connect(system.database_url(f"{system.prefix}{bank.replace('-', '_')}"))
        try:
            totals[f"{bank} transfer"] = await conn.fetchval("SELECT count(*) FROM ledger_tx WHERE kind = 3")
            totals[f"{bank} outbound"] = await conn.fetchval("SELECT count(*) FROM ledger_tx WHERE kind = 9")
            totals[f"{bank} outbox"] = await conn.fetchval("SELECT count(*) FROM bank_payments")
            totals[f"{bank} inbound"] = await conn.fetchval("SELECT count(*) FROM bank_inbound")
            totals[f"{bank} open"] = await conn.fetchval(
                "SELECT count(*) FROM bank_payments WHERE state IN ('pending', 'settled')")
        finally:
            await conn.close()
    return totals


def _counters() -> dict[str, str]:
    """The scraped counter (PromQL) that must equal each database total at the end."""
    out = {
        "cb issue": 'sum(cbdc_cb_transactions_total{service="central-bank",kind="issue",result="created"})',
        "cb fund": 'sum(cbdc_cb_transactions_total{service="central-bank",kind="fund",result="created"})',
        "cb settle": 'sum(cbdc_cb_transactions_total{service="central-bank",kind="settle",result="created"})',
        "cb settled": 'sum(cbdc_cb_payments_total{service="central-bank",outcome="settled"})',
    }
    for bank in BANKS:
        payments = f'cbdc_bank_payments_total{{service="{bank}",result="created"'
        out[f"{bank} transfer"] = f'sum({payments},kind="transfer"}})'
        out[f"{bank} outbound"] = f'sum({payments},kind="outbound"}})'
        out[f"{bank} outbox"] = f'sum({payments},kind="outbound"}})'
        out[f"{bank} inbound"] = f'sum(cbdc_bank_inbound_total{{service="{bank}",outcome="credited"}})'
    return out


def test_prometheus_scrapes_payments_on_every_service(tmp_path):
    binary = _prometheus()
    system = RunningSystem(tmp_path, banks=len(BANKS))
    prom = None
    try:
        config = tmp_path / "prometheus" / "prometheus.yml"
        assert config.read_bytes() == (ROOT / "deploy/prometheus/prometheus.yml").read_bytes()
        assert (tmp_path / "prometheus" / "alerts.yml").read_bytes() == (ROOT / "deploy/prometheus/alerts.yml").read_bytes()
        port = free_port_block(1)
        prom_log = open(tmp_path / "prometheus.log", "w")
        prom = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=prom_log, stderr=subprocess.STDOUT)
        wait_until(lambda: _ready(port), "prometheus to be ready", on_fail=lambda: (tmp_path / "prometheus.log").read_text())
        wait_until(lambda: _value(port, 'count(up{job="cbdc"} == 1)') == 1 + len(BANKS),
                   "prometheus to scrape the central bank and both banks", on_fail=lambda: str(_query(port, "up")))

        options = prepare.Options(transactions=int(RATE_PER_SECOND * LOAD_SECONDS), crossbank_share=0.3,
                                  payers_per_bank=6, merchants_per_bank=2, seed=11)
        prepared = asyncio.run(prepare.prepare(tmp_path, options))
        statuses = asyncio.run(_replay(prepared.payments))
        assert set(statuses) <= {"201", "202"}, statuses

        for bank in BANKS:   # scraped during the load: the payment counters moved
            expr = f'sum(rate(cbdc_bank_payments_total{{service="{bank}",result="created"}}[20s]))'
            wait_until(lambda: (_value(port, expr) or 0) > 0, f"a non-zero payment rate at {bank}", timeout=15,
                       on_fail=lambda: str(_query(port, expr)))
        rate = _value(port, 'sum(rate(cbdc_cb_transactions_total{service="central-bank",kind="settle"}[20s]))')
        assert rate and rate > 0, rate

        wait_until(lambda: all(asyncio.run(_database_totals(system))[f"{b} open"] == 0 for b in BANKS),
                   "every cross-bank payment to complete", timeout=30, interval=0.5)
        totals = asyncio.run(_database_totals(system))
        assert totals["cb settle"] > 0 and all(totals[f"{b} transfer"] > 0 for b in BANKS), totals
        counters = _counters()

        def scraped() -> dict[str, float | None]:
            return {name: _value(port, expr) for name, expr in counters.items()}
        wait_until(lambda: scraped() == {name: float(totals[name]) for name in counters},
                   "the scraped counters to equal the database totals", timeout=20, interval=0.5,
                   on_fail=lambda: f"database {totals}\nprometheus {scraped()}")
        for bank in BANKS:   # I3 as the gauges show it, at quiescence: escrow = coins issued, no backlog
            gap = f'cbdc_bank_escrow_minor_units{{service="{bank}"}} - cbdc_bank_issued_minor_units{{service="{bank}"}}'
            wait_until(lambda: _value(port, gap) == 0.0, f"the I3 gauges of {bank} to agree", timeout=15,
                       on_fail=lambda: str(_query(port, gap)))
            backlog = f'sum(cbdc_bank_outbox_payments{{service="{bank}"}})'
            wait_until(lambda: _value(port, backlog) == 0.0, f"the outbox of {bank} to empty", timeout=15,
                       on_fail=lambda: str(_query(port, backlog)))
        for title, expr in dashboard_expressions():   # the Grafana dashboard's queries run on this data
            _query(port, as_query(expr, "20s"))
        shown = _query(port, as_query('sum by (service, kind, result) (rate(cbdc_bank_payments_total[$__rate_interval]))', "1m"))
        assert {r["metric"]["kind"] for r in shown} >= {"transfer", "outbound"}, shown
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
