"""How many intra-op threads a rank's TensorFlow gets."""
from __future__ import annotations

import os

from cluster_sim.spec.schema import JobSpec

# Below this many neurons per rank XLA:CPU's parallel loops cost more in synchronisation than
# they gain (COBAHH exp-Euler, measured: N=4000 1.8x and N=16000 1.5x faster on 1 thread than
# on 2; equal at 64000), so a rank uses one thread and more ranks use more cores.
_NEURONS_PER_THREAD = 64_000


def cpu_threads_for(spec: JobSpec, size: int, available: int | None) -> int:
    """Intra-op threads for this rank: the spec's ``engine.cpu_threads``, else one thread per
    64k local neurons, capped by the cores this rank was given."""
    cores = available or len(os.sched_getaffinity(0))
    if spec.engine.cpu_threads:
        return spec.engine.cpu_threads
    per_rank = spec.n_neurons / max(size, 1)
    return max(1, min(cores, int(per_rank // _NEURONS_PER_THREAD) + 1))
