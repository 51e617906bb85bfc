"""A progress line in simulated ms with rate and ETA, on stderr when it is a terminal."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total_ms: float, *, enabled: bool | None = None, stream: TextIO | None = None,
                 start_ms: float = 0.0) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.start_ms = total_ms, start_ms
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, sim_ms: float, spikes: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        elapsed = max(now - self.t0, 1e-9)
        done = sim_ms - self.start_ms
        rate = done / elapsed  # simulated ms per wall second
        eta = (self.total - sim_ms) / rate if rate > 0 else float("inf")
        frac = sim_ms / self.total if self.total else 1.0
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        self.stream.write(f"\r[{bar}] {sim_ms:9.1f}/{self.total:.0f} ms  {rate:8.1f} ms/s  "
                          f"ETA {eta:6.1f} s  spikes {spikes}   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
