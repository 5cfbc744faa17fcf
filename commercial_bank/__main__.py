"""python -m commercial_bank: read Settings (CBDC_BANK_*), set up logging, serve create_app(settings).

With neither CBDC_BANK_DATABASE_URL nor CBDC_DATABASE_URL set, an embedded PostgreSQL is started
under CBDC_BANK_STATE_DIR for the life of the process. SIGINT/SIGTERM shut down gracefully
(in-flight requests finish within CBDC_BANK_SHUTDOWN_TIMEOUT_SECONDS, the batcher is flushed, the
recovery loop stops). CBDC_BANK_WORKERS > 1 serves from that many processes on one port
(SO_REUSEPORT); each runs its own recovery loop, which is safe because every step is idempotent.
Fail points (shared/failpoints.py) come from CBDC_FAILPOINTS.
"""
from __future__ import annotations

import sys

from commercial_bank import settings as settings_module
from commercial_bank.app import create_app
from shared import failpoints
from shared.serve import run_service


def main() -> int:
    return run_service("bank", settings_module.load, create_app,
                       note=lambda: f" (fail points: {','.join(sorted(failpoints.active())) or 'none'})")


if __name__ == "__main__":
    sys.exit(main())
