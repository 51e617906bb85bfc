"""Moving spikes between ranks after each interval. The interval loop calls ``exchange`` and
nothing else; a single process keeps its own spikes. MPI backends live in ``engine.mpi``."""
from __future__ import annotations

from typing import Protocol

from cluster_sim.engine.delivery import SpikeBatch


class Exchange(Protocol):
    rank: int
    size: int

    def exchange(self, local: SpikeBatch) -> SpikeBatch:
        """All spikes this rank must deliver (every rank's, for its targets), sorted by (step, gid)."""
        ...


class LocalExchange:
    rank = 0
    size = 1

    def exchange(self, local: SpikeBatch) -> SpikeBatch:
        return local.sorted()
