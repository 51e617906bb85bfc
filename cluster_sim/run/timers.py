"""Wall-clock phases of a run, summed over incarnations (a resumed run adds to the manifest's)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

PHASES = ("startup", "build", "integrate", "wait", "exchange", "deliver", "io", "checkpoint")


@dataclass
class Timers:
    seconds: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})

    def add(self, phase: str, dt: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + dt

    def clock(self, phase: str) -> "_Clock":
        return _Clock(self, phase)


class _Clock:
    def __init__(self, timers: Timers, phase: str) -> None:
        self.timers, self.phase = timers, phase

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timers.add(self.phase, time.perf_counter() - self.t0)
