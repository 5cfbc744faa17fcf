"""deploy/grafana/cbdc-dashboard.json: well formed, on a Prometheus datasource variable, and every
panel's PromQL names only metrics the services export (collected from their metric modules).
tests/test_prometheus_scrape.py also evaluates every expression on a real Prometheus."""
from __future__ import annotations

import json
import re

from prometheus_client import CollectorRegistry

from central_bank.metrics import CentralBankMetrics
from commercial_bank.metrics import BankMetrics
from shared.web import HTTPMetrics
from tests.system_processes import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "cbdc-dashboard.json"
METRIC_RE = re.compile(r"\bcbdc_[a-z0-9_]+")
REQUIRED = ("cbdc_http_requests_total", "cbdc_http_request_duration_seconds_bucket", "cbdc_bank_payments_total",
            "cbdc_bank_outbox_payments", "cbdc_bank_outbox_oldest_age_seconds", "cbdc_cb_supply_outstanding_minor_units",
            "cbdc_bank_escrow_minor_units", "cbdc_bank_issued_minor_units", "cbdc_bank_batch_size_transactions_bucket")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]


def as_query(expr: str, rate_interval: str = "1m") -> str:
    """The expression with Grafana's variables filled in, as Prometheus would receive it."""
    return expr.replace("$__rate_interval", rate_interval).replace("$service", ".*")


def exported_metric_names() -> set[str]:
    """Every sample name the three metric modules can export (a counter's _total, a histogram's
    _bucket/_sum/_count, ...)."""
    registry = CollectorRegistry()
    HTTPMetrics(registry)
    BankMetrics(registry)
    CentralBankMetrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_every_panel_expression_names_exported_metrics():
    exported = exported_metric_names()
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    used = set()
    for title, expr in expressions:
        names = set(METRIC_RE.findall(expr))
        assert names, f"panel {title!r}: {expr!r} names no cbdc_ metric"
        unknown = names - exported
        assert not unknown, f"panel {title!r} uses metrics no service exports: {sorted(unknown)}"
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), f"{title!r}: {expr!r}"
        used |= names
    missing = set(REQUIRED) - used
    assert not missing, f"the dashboard shows none of {sorted(missing)}"


def test_dashboard_uses_a_prometheus_datasource_variable_and_a_sane_layout():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "service" in variables
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("request rate", "p99 latency", "payments by kind", "backlog", "age", "supply", "escrow",
                  "i3", "batch sizes"):
        assert topic in titles, f"no panel about {topic}"


def test_the_check_catches_an_unknown_metric():
    assert "cbdc_bank_payments_total" in exported_metric_names()
    assert "cbdc_bank_paymentz_total" not in exported_metric_names()
    assert METRIC_RE.findall('sum(rate(cbdc_bank_paymentz_total{service=~"$service"}[5m]))') == ["cbdc_bank_paymentz_total"]
