"""The central bank's settings, read from ``CBDC_CB_*`` environment variables (shared.settings).

    CBDC_CB_OPERATOR_KEYS      "op1:<hex public key>,op2:<hex public key>"  (two or more for issuance)
    CBDC_CB_SIGNING_KEY_FILE   a file holding the 32-byte Ed25519 seed in hex (issuer and notice key)
    CBDC_CB_SIGNING_SEED       ... or the seed itself, hex (secret; for tests and `cbdc up`)
    CBDC_CB_DATABASE_URL       a PostgreSQL server URL (else CBDC_DATABASE_URL, else the embedded
                               server under CBDC_CB_STATE_DIR); the service uses database
                               CBDC_CB_DATABASE_NAME on it, created and migrated at start-up.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Mapping

from shared import crypto
from shared.amounts import AMOUNT_MAX
from shared.errors import ConfigError
from shared.settings import load_settings, load_signing_key, secret

PREFIX = "CBDC_CB_"
_OPERATOR_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class Settings:
    operator_keys: str = ""                   # id:hexkey,id:hexkey
    signing_key_file: str | None = None
    signing_seed: str | None = secret(None)
    host: str = "127.0.0.1"
    port: int = 8470
    workers: int = 1                          # processes serving the port (SO_REUSEPORT)
    database_url: str | None = secret(None)   # a server URL; None: CBDC_DATABASE_URL or embedded
    database_name: str = "cbdc_central_bank"
    state_dir: str = ".state/central_bank"
    supply_cap: int = AMOUNT_MAX              # outstanding supply (issued - redeemed) never exceeds it
    proposal_ttl_seconds: int = 86_400
    request_window_seconds: int = 300         # signed-request timestamps within +- this
    request_bytes_max: int = 1_048_576
    rate_limit_per_second: float = 2_000.0    # requests per client (key id or address) per worker; 0: off
    rate_limit_burst: int = 4_000
    settlement_payments_max: int = 1_000      # payments per netted settlement request
    nonce_expiry_interval_seconds: float = 60.0
    batch_max: int = 500
    batch_wait_ms: float = 2.0
    batch_queue_max: int = 100_000
    flushers: int = 2
    db_pool_max: int = 8
    shutdown_timeout_seconds: float = 10.0
    log_level: str = "INFO"

    def check(self) -> None:
        self.operators()
        self.signing_key()
        if not 0 < self.supply_cap <= AMOUNT_MAX:
            raise ConfigError(f"{PREFIX}SUPPLY_CAP must be in 1..{AMOUNT_MAX}")
        for name in ("workers", "proposal_ttl_seconds", "request_window_seconds", "request_bytes_max", "settlement_payments_max", "batch_max",
                     "batch_queue_max", "flushers", "db_pool_max"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{PREFIX}{name.upper()} must be >= 1")
        if self.nonce_expiry_interval_seconds <= 0 or self.batch_wait_ms < 0:
            raise ConfigError(f"{PREFIX}NONCE_EXPIRY_INTERVAL_SECONDS must be > 0, {PREFIX}BATCH_WAIT_MS >= 0")

    def operators(self) -> dict[str, bytes]:
        """Operator id -> public key, from OPERATOR_KEYS (ConfigError naming the variable)."""
        found: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in self.operator_keys.split(","))):
            name, _, key_hex = item.partition(":")
            try:
                key = bytes.fromhex(key_hex)
            except ValueError:
                key = b""
            if not _OPERATOR_ID_RE.fullmatch(name) or name in found or not crypto.is_valid_public_key(key):
                raise ConfigError(f"{PREFIX}OPERATOR_KEYS: invalid or duplicate entry for {name!r}")
            found[name] = key
        return found

    def signing_key(self) -> crypto.PrivateKey:
        return load_signing_key(self.signing_seed, self.signing_key_file, PREFIX, "the central bank")


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment; the server URL falls back to CBDC_DATABASE_URL."""
    environ = os.environ if environ is None else environ
    settings = load_settings(Settings, PREFIX, environ)
    if settings.database_url is None and environ.get("CBDC_DATABASE_URL"):
        settings = dataclasses.replace(settings, database_url=environ["CBDC_DATABASE_URL"])
    return settings
