"""Reading results lazily (dask arrays over h5py datasets, so files larger than memory work):
rates, ISI CV, population rate histograms and spike-time comparison between runs.

The file access lives in ``reader``, the statistics in ``stats``; this package re-exports both."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster_sim.analysis.reader import open_spikes, run_info, spec_order
from cluster_sim.analysis.stats import (compare_spikes, isi_stats, match_spike_times, population_rates,
                                        rate_histogram, summarize)

__all__ = ["compare_spikes", "isi_stats", "match_spike_times", "open_spikes", "population_rates",
           "rate_histogram", "run_info", "spec_order", "summarize", "to_neo"]


def to_neo(run_dir: str | Path, populations: list[str] | None = None) -> dict[str, list[Any]]:
    """population -> ``neo.SpikeTrain`` per neuron, with units (see ``analysis.neo_export``)."""
    from cluster_sim.analysis.neo_export import to_neo as _to_neo

    return _to_neo(run_dir, populations)
