"""python -m central_bank: read Settings (CBDC_CB_*), set up logging, serve create_app(settings).

With neither CBDC_CB_DATABASE_URL nor CBDC_DATABASE_URL set, an embedded PostgreSQL is started
under CBDC_CB_STATE_DIR for the life of the process. SIGINT/SIGTERM shut down gracefully
(in-flight requests finish within CBDC_CB_SHUTDOWN_TIMEOUT_SECONDS, the batcher is flushed).
CBDC_CB_WORKERS > 1 serves from that many processes on one port (SO_REUSEPORT).
"""
from __future__ import annotations

import dataclasses
import logging
import sys

from central_bank import settings as settings_module
from central_bank.app import create_app
from shared import db
from shared.errors import ConfigError
from shared.serve import serve


def main() -> int:
    try:
        settings = settings_module.load()
    except ConfigError as exc:
        print(f"central bank: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger(__name__).info("starting with %r", settings)
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
