"""Stop requests from the batch system: SIGTERM/SIGUSR1 become a flag the interval loop reads."""
from __future__ import annotations

import signal
from typing import Any


class StopRequest:
    """SIGTERM/SIGUSR1 set a flag; all ranks checkpoint at the next interval boundary.
    The CLI installs it before importing TensorFlow, so a signal during start-up is kept too."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
