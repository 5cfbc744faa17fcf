"""The commercial bank's Prometheus metrics (cbdc_ prefix, base units, low-cardinality labels).

HTTP requests by route and status are counted by shared.web. The outbox, the issued coins and the
escrow are gauges refreshed at each scrape (from the database, and the escrow from the central
bank), so the I3 difference escrow − issued is visible and can never drift from the ledgers.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class BankMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.payments = Counter("cbdc_bank_payments_total", "Wallet-signed spends by kind and result",
                                ["kind", "result"], registry=registry)
        self.limit_refusals = Counter("cbdc_bank_limit_refusals_total", "Payments refused by a limit",
                                      ["reason"], registry=registry)
        self.settlements = Counter("cbdc_bank_settlements_total", "Settlement attempts by outcome",
                                   ["outcome"], registry=registry)
        self.inbound = Counter("cbdc_bank_inbound_total", "Inbound notices by outcome", ["outcome"],
                               registry=registry)
        self.flows = Counter("cbdc_bank_flows_total", "Funding and defunding steps completed",
                             ["flow", "state"], registry=registry)
        self.recovery_passes = Counter("cbdc_bank_recovery_passes_total", "Passes of the recovery loop",
                                       ["result"], registry=registry)
        self.batch_size = Histogram("cbdc_bank_batch_size_transactions", "Spends per applied micro-batch",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.batch_seconds = Histogram("cbdc_bank_batch_db_seconds", "Database time per micro-batch",
                                       registry=registry)
        self.outbox_depth = Gauge("cbdc_bank_outbox_payments", "Cross-bank payments not yet final, by state",
                                  ["state"], multiprocess_mode="mostrecent", registry=registry)
        self.outbox_age = Gauge("cbdc_bank_outbox_oldest_age_seconds", "Age of the oldest open payment, by state",
                                ["state"], multiprocess_mode="mostrecent", registry=registry)
        # set from the database before each scrape: with several workers, the latest value wins
        self.issued = Gauge("cbdc_bank_issued_minor_units", "Unspent tier-2 value at this bank",
                            multiprocess_mode="mostrecent", registry=registry)
        self.escrow = Gauge("cbdc_bank_escrow_minor_units", "This bank's escrow at the central bank (tier 1)",
                            multiprocess_mode="mostrecent", registry=registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
