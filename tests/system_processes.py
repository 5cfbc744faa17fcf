"""Helpers for tests that run `cbdc` commands as real processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cbdc.supervisor import free_port_block

ROOT = Path(__file__).resolve().parent.parent


def cbdc(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cbdc.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def wait_until(condition, what: str, timeout: float = 60.0, interval: float = 0.1, on_fail=None) -> None:
    """Poll ``condition`` until true; fail with ``what`` (and ``on_fail()``'s text) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    extra = on_fail() if on_fail else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{extra}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


class RunningSystem:
    """`cbdc up` in a state dir of its own, as a real process; ``stop()`` brings it down."""

    def __init__(self, state_dir: Path, banks: int = 0) -> None:
        import secrets
        self.state_dir = state_dir
        self.banks = banks
        self.prefix = f"t{secrets.token_hex(3)}_"
        self.port = free_port_block(1 + banks)
        self.env = dict(os.environ)
        self._log = open(state_dir / "up.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cbdc.cli", "up", "--banks", str(banks), "--state-dir", str(state_dir),
             "--base-port", str(self.port), "--db-prefix", self.prefix],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        system_json = state_dir / "system.json"
        wait_until(lambda: system_json.exists() or self.process.poll() is not None, "cbdc up to write system.json",
                   timeout=120, on_fail=self.log)
        assert self.process.poll() is None, self.log()

    def log(self) -> str:
        return (self.state_dir / "up.log").read_text()

    @property
    def system(self) -> dict:
        import json
        return json.loads((self.state_dir / "system.json").read_text())

    def database_url(self, name: str) -> str:
        """The URL of one of the system's databases (embedded: through its socket directory)."""
        from shared import db
        server = os.environ.get("CBDC_DATABASE_URL") or f"postgresql://postgres@/postgres?host={self.state_dir / 'pgdata'}"
        return db.database_url(server, name)

    def stop(self) -> int:
        import signal
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=90)
        self._log.close()
        if "CBDC_DATABASE_URL" in os.environ:
            import asyncio
            from shared import db
            names = ["central_bank"] + [f"bank_{chr(ord('a') + n)}" for n in range(self.banks)]
            for name in names:
                asyncio.run(db.drop_database(os.environ["CBDC_DATABASE_URL"], f"{self.prefix}{name}"))
        return status
