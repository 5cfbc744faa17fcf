"""A commercial bank's settings, read from ``CBDC_BANK_*`` environment variables (shared.settings).

    CBDC_BANK_ID                   the bank's id (its ledger id, e.g. bank-a), as registered at tier 1
    CBDC_BANK_SIGNING_KEY_FILE     a file holding the bank's 32-byte Ed25519 seed in hex: it signs the
    CBDC_BANK_SIGNING_SEED         ... or the seed itself (secret): tier-1 transactions, requests to the
                                   central bank, and tier-2 mint / inbound transactions
    CBDC_BANK_CENTRAL_BANK_URL     the central bank's base URL
    CBDC_BANK_CENTRAL_BANK_KEY     the central bank's public key (hex): settlement notices must verify
    CBDC_BANK_DATABASE_URL         a PostgreSQL server URL (else CBDC_DATABASE_URL, else the embedded
                                   server under CBDC_BANK_STATE_DIR); the bank uses database
                                   CBDC_BANK_DATABASE_NAME (default cbdc_bank_<id>) on it
    CBDC_BANK_KYC_TIERS            "name:per_payment/daily/holding,..." in MAJOR units (see DEFAULT_TIERS)
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Mapping

from shared import crypto
from shared.amounts import AMOUNT_MAX, MINOR_UNITS_PER_MAJOR
from shared.errors import ConfigError
from shared.settings import load_settings, load_signing_key, secret
from shared.tx import LEDGER_CB, LEDGER_ID_RE

PREFIX = "CBDC_BANK_"
# Modelled on e-CNY's wallet tiers: anonymous (phone number only) up to fully verified (in person).
DEFAULT_TIERS = "anonymous:2000/5000/10000,basic:5000/10000/20000,full:50000/100000/500000"
_TIER_RE = re.compile(r"([a-z][a-z0-9_-]{0,31}):([0-9]{1,12})/([0-9]{1,12})/([0-9]{1,12})")


@dataclass(frozen=True, slots=True)
class Tier:
    """One KYC tier's limits, in minor units."""
    name: str
    per_payment: int
    daily: int       # outgoing payments per UTC day
    holding: int     # the wallet's balance never exceeds it


@dataclass(frozen=True)
class Settings:
    id: str
    central_bank_url: str
    central_bank_key: str
    signing_key_file: str | None = None
    signing_seed: str | None = secret(None)
    host: str = "127.0.0.1"
    port: int = 8480
    workers: int = 1                           # processes serving the port (SO_REUSEPORT)
    database_url: str | None = secret(None)
    database_name: str = ""                    # "" -> cbdc_bank_<id>
    state_dir: str = ".state/bank"
    kyc_tiers: str = DEFAULT_TIERS
    request_window_seconds: int = 300          # wallet-signed request timestamps within +- this
    request_bytes_max: int = 262_144
    batch_request_bytes_max: int = 2_097_152   # POST /v1/transfers/batch bodies (up to ~2,000 B per item)
    batch_transactions_max: int = 1_000        # transactions in one batch submission
    verify_processes: int = 0                  # per worker: a process pool verifying batch submissions (0: inline)
    verify_chunk_items: int = 250              # items per verification task handed to that pool
    demo_deposit_credit: bool = True           # POST .../deposit/credit (a stand-in for core banking)
    http_timeout_seconds: float = 5.0          # every call to the central bank or another bank
    recovery_interval_seconds: float = 1.0     # the recovery loop's period (it is also woken at once)
    recovery_rows_max: int = 200               # rows of each kind one pass of the loop handles
    settlement_concurrency: int = 16           # settlements / pushes in flight at once
    settlement_netting: bool = True            # several pending payments: one netted request
    settlement_batch_max: int = 100            # payments per netted settlement request
    tier1_rebuilds_max: int = 5                # rebuilds of a fund/defund tx whose inputs were taken
    page_max: int = 500
    nonce_expiry_interval_seconds: float = 60.0
    batch_max: int = 500
    batch_wait_ms: float = 2.0
    batch_queue_max: int = 100_000
    flushers: int = 2
    db_pool_max: int = 8
    shutdown_timeout_seconds: float = 10.0
    log_level: str = "INFO"

    def check(self) -> None:
        if not LEDGER_ID_RE.fullmatch(self.id) or self.id == LEDGER_CB:
            raise ConfigError(f"{PREFIX}ID must be a bank id like bank-a (2-31 of a-z 0-9 -), not 'cb'")
        if not re.fullmatch(r"https?://[!-~]+", self.central_bank_url):
            raise ConfigError(f"{PREFIX}CENTRAL_BANK_URL must be an http(s) URL")
        self.central_bank_public_key()
        self.signing_key()
        self.tiers()
        for name in ("workers", "request_window_seconds", "request_bytes_max", "batch_request_bytes_max",
                     "batch_transactions_max", "verify_chunk_items", "recovery_rows_max", "settlement_concurrency", "settlement_batch_max",
                     "tier1_rebuilds_max", "page_max", "batch_max", "batch_queue_max", "flushers", "db_pool_max"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{PREFIX}{name.upper()} must be >= 1")
        if not 0 <= self.verify_processes <= 64:
            raise ConfigError(f"{PREFIX}VERIFY_PROCESSES must be in 0..64")
        for name in ("http_timeout_seconds", "recovery_interval_seconds", "nonce_expiry_interval_seconds"):
            if not 0 < getattr(self, name) <= 3600:
                raise ConfigError(f"{PREFIX}{name.upper()} must be in (0, 3600]")

    @property
    def database(self) -> str:
        return self.database_name or "cbdc_bank_" + self.id.replace("-", "_")

    def central_bank_public_key(self) -> bytes:
        try:
            key = bytes.fromhex(self.central_bank_key)
        except ValueError:
            key = b""
        if not crypto.is_valid_public_key(key):
            raise ConfigError(f"{PREFIX}CENTRAL_BANK_KEY must be the central bank's public key (64 hex)")
        return key

    def signing_key(self) -> crypto.PrivateKey:
        return load_signing_key(self.signing_seed, self.signing_key_file, PREFIX, "the bank")

    def tiers(self) -> dict[str, Tier]:
        """Tier name -> limits in minor units, from KYC_TIERS (major units)."""
        found: dict[str, Tier] = {}
        for item in filter(None, (part.strip() for part in self.kyc_tiers.split(","))):
            match = _TIER_RE.fullmatch(item)
            if match is None or match[1] in found:
                raise ConfigError(f"{PREFIX}KYC_TIERS: invalid or duplicate entry {item!r} "
                                  "(name:per_payment/daily/holding in major units)")
            limits = [int(v) * MINOR_UNITS_PER_MAJOR for v in match.groups()[1:]]
            if not all(0 < v <= AMOUNT_MAX for v in limits):
                raise ConfigError(f"{PREFIX}KYC_TIERS: limits of {match[1]!r} must be positive and bounded")
            found[match[1]] = Tier(match[1], *limits)
        if not found:
            raise ConfigError(f"{PREFIX}KYC_TIERS must name at least one tier")
        return found


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment; the server URL falls back to CBDC_DATABASE_URL."""
    environ = os.environ if environ is None else environ
    settings = load_settings(Settings, PREFIX, environ)
    if settings.database_url is None and environ.get("CBDC_DATABASE_URL"):
        settings = dataclasses.replace(settings, database_url=environ["CBDC_DATABASE_URL"])
    return settings
