"""cluster-sim: conductance-based spiking networks on clusters.

    from cluster_sim import load_spec, check, simulate
    spec = load_spec("jobs/antennal_lobe.toml", ["simulation.duration_ms=300"])
    check(spec, ranks=1)                 # every refusal for the spec's mode, before compute
    result = simulate(spec, "runs/al")   # RunResult(exit_status, info = run.json)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["JobSpec", "RunResult", "check", "load_spec", "simulate", "__version__"]

if TYPE_CHECKING:
    from cluster_sim.run import RunResult, simulate
    from cluster_sim.run.check import check
    from cluster_sim.spec import JobSpec, load_spec


def __getattr__(name: str) -> Any:
    # Lazy: `import cluster_sim` (e.g. for the deploy commands) must not import numpy/h5py/TF.
    if name in ("simulate", "check", "RunResult"):
        import cluster_sim.run as run

        return getattr(run, name)
    if name in ("load_spec", "JobSpec"):
        import cluster_sim.spec as spec

        return getattr(spec, name)
    raise AttributeError(f"module 'cluster_sim' has no attribute {name!r}")
