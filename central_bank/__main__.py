"""python -m central_bank: read Settings (CBDC_CB_*), set up logging, serve create_app(settings).

With neither CBDC_CB_DATABASE_URL nor CBDC_DATABASE_URL set, an embedded PostgreSQL is started
under CBDC_CB_STATE_DIR for the life of the process. SIGINT/SIGTERM shut down gracefully
(in-flight requests finish within CBDC_CB_SHUTDOWN_TIMEOUT_SECONDS, the batcher is flushed).
CBDC_CB_WORKERS > 1 serves from that many processes on one port (SO_REUSEPORT).
"""
from __future__ import annotations

import sys

from central_bank import settings as settings_module
from central_bank.app import create_app
from shared.serve import run_service


def main() -> int:
    return run_service("central bank", settings_module.load, create_app)


if __name__ == "__main__":
    sys.exit(main())
