"""What the run layer hands an execution backend: the spec, the process it runs in, the built
network, the output files (rank 0) and the services every mode shares (timers, progress, stop,
checkpoint commit)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cluster_sim.network.build import Network
from cluster_sim.record import checkpoint as ckpt
from cluster_sim.run.outputs import RunOutputs
from cluster_sim.run.resume import spec_digest
from cluster_sim.run.timers import Timers
from cluster_sim.runtime.progress import Progress
from cluster_sim.runtime.stop import StopRequest
from cluster_sim.spec.schema import JobSpec


@dataclass
class RunContext:
    spec: JobSpec
    out: Path
    mode: str
    comm: Any  # an mpi4py communicator, or None for one process
    rank: int
    size: int
    device: str
    net: Network
    timers: Timers
    stop: StopRequest
    manifest: dict[str, Any] | None
    checkpoint_every_ms: float  # 0: none
    outputs: RunOutputs | None  # rank 0 only
    progress: Progress | None = None
    t_wall0: float = field(default_factory=time.perf_counter)
    incarnations: list[dict[str, Any]] = field(default_factory=list)  # earlier ones, from the manifest

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def n_spikes(self) -> int:
        return self.outputs.n_spikes if self.outputs is not None else 0

    def update_progress(self, sim_ms: float, force: bool = False) -> None:
        if self.progress is not None:
            self.progress.update(sim_ms, self.n_spikes, force=force)

    def write_checkpoint_part(self, key: int, arrays: dict[str, np.ndarray]) -> None:
        """This rank's share of checkpoint ``key`` (a step or grid index of the backend)."""
        ckpt.write_rank_part(self.out, key, self.rank, arrays)

    def commit_checkpoint(self, key: int, simulated_ms: float, extra: dict[str, Any] | None = None) -> None:
        """Rank 0, once every rank wrote its part and the files hold everything before it."""
        assert self.outputs is not None
        self.outputs.flush()
        wall = time.perf_counter() - self.t_wall0
        ckpt.commit(self.out, key, self.size, {
            "spec_digest": spec_digest(self.spec), "mode": self.mode, "phases": dict(self.timers.seconds),
            "simulated_ms": simulated_ms, **self.outputs.checkpoint_meta(),
            "incarnations": [*self.incarnations, {"wall_seconds": wall, "ranks": self.size, "until_ms": simulated_ms,
                                                  "ended": "checkpoint"}],
            **(extra or {})})


class Backend(Protocol):
    """One execution model: its loop, its exchange protocol and its snapshot/restore."""

    mode: str

    def prepare(self) -> None:
        """Compile kernels and restore the checkpoint (``ctx.manifest``), outside the timed loop."""

    def run(self) -> str:
        """Integrate to the end or to a stop: "completed" or "checkpointed"."""

    def simulated_ms(self) -> float: ...

    def rank_stats(self) -> dict[str, Any]:
        """This rank's counters for run.json's ``per_rank`` (neurons, synapses, ...)."""

    def summary(self, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        """Rank 0: the mode's own run.json keys (steps, RHS evaluations, method, ...)."""

    def close(self) -> None:
        """Every rank, after the per-rank statistics were gathered."""
