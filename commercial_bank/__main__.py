"""python -m commercial_bank: read Settings (CBDC_BANK_*), set up logging, serve create_app(settings).

With neither CBDC_BANK_DATABASE_URL nor CBDC_DATABASE_URL set, an embedded PostgreSQL is started
under CBDC_BANK_STATE_DIR for the life of the process. SIGINT/SIGTERM shut down gracefully
(in-flight requests finish within CBDC_BANK_SHUTDOWN_TIMEOUT_SECONDS, the batcher is flushed, the
recovery loop stops). CBDC_BANK_WORKERS > 1 serves from that many processes on one port
(SO_REUSEPORT); each runs its own recovery loop, which is safe because every step is idempotent.
Fail points (shared/failpoints.py) come from CBDC_FAILPOINTS.
"""
from __future__ import annotations

import dataclasses
import logging
import sys

from commercial_bank import settings as settings_module
from commercial_bank.app import create_app
from shared import db, failpoints
from shared.errors import ConfigError
from shared.serve import serve


def main() -> int:
    try:
        settings = settings_module.load()
    except ConfigError as exc:
        print(f"bank: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger(__name__).info("starting with %r (fail points: %s)", settings,
                                     ",".join(sorted(failpoints.active())) or "none")
    embedded = None
    if settings.database_url is None:
        embedded = db.start_embedded(settings.state_dir)
        settings = dataclasses.replace(settings, database_url=embedded.get_uri())
    try:
        return serve(create_app, settings, host=settings.host, port=settings.port, workers=settings.workers,
                     shutdown_timeout=settings.shutdown_timeout_seconds, log_level=settings.log_level.upper())
    finally:
        if embedded is not None:
            embedded.cleanup()


if __name__ == "__main__":
    sys.exit(main())
