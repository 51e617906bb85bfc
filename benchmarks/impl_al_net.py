"""The exact antennal-lobe network cluster-sim builds for ``jobs/antennal_lobe.toml``
(connectivity, weights, stimulated cells, initial state, parameters), exported as plain arrays
in an .npz so that an independent implementation (``impl_brian2_al.py``, which runs in Brian2's
own interpreter) simulates the identical network. Indices are within each population."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from _common import cluster_sim_spec


def export_al_network(path: Path, overrides: Sequence[str] = ()) -> Path:
    from cluster_sim.network.build import build_network

    spec = cluster_sim_spec("antennal_lobe.toml", list(overrides))
    net = build_network(spec)
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"populations": {}, "projections": {}, "stimuli": {}, "duration_ms": spec.simulation.duration_ms,
                  "dt_ms": spec.integrator.dt_ms}
    for name, pop in net.populations.items():
        meta["populations"][name] = {"model": pop.model.name, "count": pop.count, "params": dict(pop.params),
                                     "variables": list(pop.model.variables)}
        for var, values in pop.init.items():
            arrays[f"init/{name}/{var}"] = np.asarray(values, np.float64)
    for proj in net.projections:
        key = proj.spec.name
        meta["projections"][key] = {"source": proj.source, "target": proj.target, "synapse": proj.synapse.name,
                                    "params": dict(proj.params), "delay_ms": proj.spec.delay_ms}
        arrays[f"proj/{key}/pre"] = proj.src.astype(np.int64)
        arrays[f"proj/{key}/post"] = proj.target_of_synapse().astype(np.int64)
        arrays[f"proj/{key}/w"] = proj.weight.astype(np.float64)
    for stim in net.stimuli:
        meta["stimuli"][stim.name] = {"waveform": stim.waveform.name, "params": dict(stim.params)}
        for pop_name, amp in stim.amplitude.items():
            arrays[f"stim/{stim.name}/{pop_name}"] = np.asarray(amp, np.float64)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_al_network(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        return meta, {k: f[k] for k in f.files if k != "meta"}
