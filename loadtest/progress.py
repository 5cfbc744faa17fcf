"""A one-line progress display on stderr (silent when stderr is not a terminal, unless forced)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, *, enabled: bool | None = None, width: int = 30) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.width = width
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.perf_counter()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            filled = int(self.width * min(self.done, self.total) / self.total)
            rate = self.done / max(now - self.started, 1e-9)
            sys.stderr.write(f"\r  {self.label:<24} [{'#' * filled}{'.' * (self.width - filled)}] "
                             f"{self.done:>9,}/{self.total:,}  {rate:>10,.0f}/s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
