"""Serve an aiohttp application on one or several worker processes.

With ``workers == 1`` the app runs in this process. With more, this process becomes a small
supervisor: it spawns ``workers`` processes that each build the app and listen on the same port
with SO_REUSEPORT (the kernel spreads connections across them), forwards SIGINT/SIGTERM to them,
and if one dies unexpectedly stops the others and exits non-zero, so a broken service never
looks half-alive. Workers share nothing in memory: all state is in PostgreSQL.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any, Callable

import uvloop
from aiohttp import web

from shared.web import MULTIPROCESS_ENV

log = logging.getLogger(__name__)
STOP_TIMEOUT_SECONDS = 20.0


def run_app(app_factory: Callable[[Any], web.Application], settings: Any, *, host: str, port: int,
            shutdown_timeout: float, reuse_port: bool = False) -> None:
    web.run_app(app_factory(settings), host=host, port=port, shutdown_timeout=shutdown_timeout,
                access_log=None, print=None, reuse_port=reuse_port, loop=uvloop.new_event_loop())


def _worker(app_factory, settings, host: str, port: int, shutdown_timeout: float, log_level: str) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_app(app_factory, settings, host=host, port=port, shutdown_timeout=shutdown_timeout, reuse_port=True)


def serve(app_factory: Callable[[Any], web.Application], settings: Any, *, host: str, port: int,
          workers: int, shutdown_timeout: float, log_level: str = "INFO") -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit status."""
    if workers <= 1:
        run_app(app_factory, settings, host=host, port=port, shutdown_timeout=shutdown_timeout)
        return 0
    # metrics from every worker: prometheus-client's multiprocess mode, in a directory of our own
    metrics_dir = tempfile.mkdtemp(prefix="cbdc-metrics-")
    os.environ[MULTIPROCESS_ENV] = metrics_dir
    try:
        return _supervise(app_factory, settings, host, port, workers, shutdown_timeout, log_level)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(app_factory, settings, host: str, port: int, workers: int, shutdown_timeout: float,
               log_level: str) -> int:
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_worker, name=f"worker-{n}", daemon=False,
                             args=(app_factory, settings, host, port, shutdown_timeout, log_level))
             for n in range(workers)]
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for p in procs:
        p.start()
    log.info("serving on %s:%d with %d worker processes: %s", host, port, workers, [p.pid for p in procs])
    status = 0
    while not stopping:
        dead = [p for p in procs if not p.is_alive()]
        if dead:
            log.error("worker %s (pid %s) exited with %s; stopping the others", dead[0].name, dead[0].pid,
                      dead[0].exitcode)
            status = 1
            break
        time.sleep(0.2)
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: aiohttp shuts down gracefully
    deadline = time.monotonic() + shutdown_timeout + STOP_TIMEOUT_SECONDS
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    return status if status else (0 if all(p.exitcode in (0, -signal.SIGTERM) for p in procs) else 1)


def run_service(label: str, load_settings: Callable[[], Any], app_factory: Callable[[Any], web.Application],
                *, note: Callable[[], str] = lambda: "") -> int:
    """A service's ``python -m`` entry point: settings (a ConfigError exits 2 with its message),
    logging, the embedded PostgreSQL when no server URL is set (for the life of the process), then
    ``serve`` with the settings' host, port, workers and shutdown timeout."""
    import dataclasses

    from shared import db
    from shared.errors import ConfigError
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"{label}: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("%s starting with %r%s", label, settings, note())
    embedded = None
    if settings.database_url is None:
        embedded = db.start_embedded(settings.state_dir)
        settings = dataclasses.replace(settings, database_url=embedded.get_uri())
    try:
        return serve(app_factory, settings, host=settings.host, port=settings.port, workers=settings.workers,
                     shutdown_timeout=settings.shutdown_timeout_seconds, log_level=settings.log_level.upper())
    finally:
        if embedded is not None:
            embedded.cleanup()


if __name__ == "__main__":  # pragma: no cover
    sys.exit("shared.serve is a library")
