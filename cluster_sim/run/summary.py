"""The one run.json builder: keys every mode shares, then the mode's own."""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from cluster_sim import __version__
from cluster_sim.run.context import RunContext


def run_info(ctx: RunContext, status: str, simulated_ms: float, per_rank: list[dict[str, Any]],
             extras: dict[str, Any], startup_s: float) -> dict[str, Any]:
    spec, outputs = ctx.spec, ctx.outputs
    assert outputs is not None
    wall = time.perf_counter() - ctx.t_wall0 + startup_s
    incarnations = [*ctx.incarnations, {"wall_seconds": wall, "ranks": ctx.size, "until_ms": simulated_ms, "ended": status}]
    compute = [r["integrate"] + r["deliver"] for r in per_rank]
    waited = [r["integrate"] + r["deliver"] + r["wait"] for r in per_rank]
    pops = outputs.n_spikes_pop
    info: dict[str, Any] = {
        "name": spec.name, "version": __version__, "status": status, "mode": ctx.mode,
        "n_neurons": spec.n_neurons, "n_synapses": int(sum(r["synapses"] for r in per_rank)),
        "n_spikes": outputs.n_spikes, "n_spikes_by_population": dict(pops),
        "rates_hz": {p.name: pops[p.name] / (p.count * simulated_ms * 1e-3) if simulated_ms else 0.0
                     for p in spec.populations},
        "simulated_ms": simulated_ms, "duration_ms": spec.simulation.duration_ms,
        # This incarnation's wall time, and all incarnations' (requeues, resumes) for studies.
        "wall_seconds": wall, "wall_seconds_total": float(sum(i["wall_seconds"] for i in incarnations)),
        "incarnations": incarnations, "restarts": len(incarnations) - 1,
        "real_time_factor": wall / (simulated_ms * 1e-3) if simulated_ms else math.inf,
        "precision": spec.integrator.precision, "seed": spec.simulation.seed, "ranks": ctx.size,
        "partition": spec.engine.partition, "device": ctx.device,
        "phases": dict(ctx.timers.seconds), "per_rank": per_rank,
        "load_balance": (float(np.mean(compute)) / max(waited)) if max(waited) > 0 else 1.0,
        "resumed_from_ms": float(ctx.manifest["simulated_ms"]) if ctx.manifest else None,
    }
    info.update(extras)
    return info
