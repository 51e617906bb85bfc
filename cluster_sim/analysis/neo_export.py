"""Results as neo objects, so elephant's analyses (rates, ISI statistics, correlations, spike
train distances, ...) run on cluster-sim runs unchanged.

neo and quantities are optional: ``pip install neo elephant`` (the ``test`` extra has them)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cluster_sim.analysis.reader import open_spikes, run_info


def to_neo(run_dir: str | Path, populations: list[str] | None = None) -> dict[str, list[Any]]:
    """population -> one ``neo.SpikeTrain`` per neuron (index = node id), times in ms.

    Each train spans [0, simulated_ms] of the run (run.json; for a killed run without it, up to the
    last spike) and is annotated with ``population`` and ``node_id``, so population-level elephant
    functions (``time_histogram``, ``mean_firing_rate`` of each train...) see silent neurons too.
    """
    try:
        import neo
        import quantities as pq
    except ImportError as e:  # an optional dependency: say how to get it
        raise ImportError("to_neo needs neo: pip install neo (and elephant for the analyses)") from e

    run_dir = Path(run_dir)
    info = run_info(run_dir)
    out: dict[str, list[Any]] = {}
    with open_spikes(run_dir) as pops:
        wanted = populations if populations is not None else list(pops)
        for pop in wanted:
            if pop not in pops:
                raise KeyError(f"{pop!r} is not a population of {run_dir} (it has {', '.join(pops)})")
            ts_da, ids_da, n = pops[pop]
            ts = np.asarray(ts_da.compute(), np.float64)
            ids = np.asarray(ids_da.compute()).astype(np.int64)
            t_stop = float(info.get("simulated_ms") or (ts.max() if ts.size else 0.0))
            # spikes of one neuron in time order: a stable sort by id keeps the file's time order
            order = np.argsort(ids, kind="stable")
            ts, ids = ts[order], ids[order]
            bounds = np.searchsorted(ids, np.arange(n + 1))
            out[pop] = [neo.SpikeTrain(ts[bounds[k]:bounds[k + 1]] * pq.ms, t_start=0.0 * pq.ms, t_stop=t_stop * pq.ms,
                                       name=f"{pop}[{k}]", population=pop, node_id=k)
                        for k in range(n)]
    return out
