"""The central bank's Prometheus metrics (cbdc_ prefix, base units, low-cardinality labels).

HTTP requests by route and status are counted by shared.web. Supply and escrow gauges are
refreshed from the database at each scrape, so they can never drift from the ledger.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class CentralBankMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.transactions = Counter("cbdc_cb_transactions_total", "Tier-1 transactions by kind and result",
                                    ["kind", "result"], registry=registry)
        self.batch_size = Histogram("cbdc_cb_batch_size_transactions", "Transactions per applied micro-batch",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.batch_seconds = Histogram("cbdc_cb_batch_db_seconds", "Database time per applied micro-batch",
                                       registry=registry)
        self.settlement_seconds = Histogram("cbdc_cb_settlement_duration_seconds",
                                            "Time to settle one payment (first submission)", registry=registry)
        self.payments = Counter("cbdc_cb_payments_total", "Settlement requests by outcome",
                                ["outcome"], registry=registry)
        # gauges are set from the database before each scrape: with several workers, the latest wins
        latest = "mostrecent"
        self.issued = Gauge("cbdc_cb_supply_issued_minor_units", "Value ever issued",
                            multiprocess_mode=latest, registry=registry)
        self.redeemed = Gauge("cbdc_cb_supply_redeemed_minor_units", "Value ever redeemed",
                              multiprocess_mode=latest, registry=registry)
        self.outstanding = Gauge("cbdc_cb_supply_outstanding_minor_units", "Issued minus redeemed",
                                 multiprocess_mode=latest, registry=registry)
        self.cap = Gauge("cbdc_cb_supply_cap_minor_units", "The configured supply cap", multiprocess_mode=latest,
                         registry=registry)
        self.escrow = Gauge("cbdc_cb_escrow_minor_units", "Unspent value in each bank's escrow",
                            ["bank"], multiprocess_mode=latest, registry=registry)  # one series per registered bank

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
