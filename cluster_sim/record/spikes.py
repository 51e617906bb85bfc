"""``spikes.h5`` in the SONATA layout: ``/spikes/<population>/timestamps`` (float64, ms) and
``node_ids`` (uint64, index within the population), ``sorting`` = by_time (an HDF5 enum, as the
spec and libsonata require; see ``record.sonata``).

Written in single-writer/multiple-reader mode and flushed chunk by chunk: the file on disk is
always consistent, so a run killed with SIGKILL leaves it readable up to the last flush, and a
resumed run truncates it back to its checkpoint before appending."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from cluster_sim.record import sonata
from cluster_sim.record._h5 import append, appendable, copy_prefix


class SpikeWriter:
    def __init__(self, path: Path, populations: Mapping[str, int], attrs: Mapping[str, object],
                 resume_counts: Mapping[str, int] | None = None) -> None:
        self.path = Path(path)
        if resume_counts is None:
            tmp = self.path.with_suffix(".h5.tmp")
            with h5py.File(tmp, "w", libver="latest") as f:
                sonata.write_root_attrs(f)
                for k, v in attrs.items():
                    f.attrs[k] = v if not isinstance(v, (dict, list)) else json.dumps(v)
                g = f.create_group("spikes")
                for pop, n in populations.items():
                    pg = g.create_group(pop)
                    sonata.write_sorting(pg, "by_time")
                    pg.attrs["n_nodes"] = n  # an extension: populations with no spikes keep their size
                    ts = appendable(pg, "timestamps", sonata.SPIKE_TIME_DTYPE)
                    ts.attrs["units"] = "ms"
                    appendable(pg, "node_ids", sonata.NODE_ID_DTYPE)
            tmp.replace(self.path)
        else:
            copy_prefix(self.path, {f"spikes/{pop}/{name}": n for pop, n in resume_counts.items()
                                    for name in ("timestamps", "node_ids")})
        self.f = h5py.File(self.path, "r+", libver="latest")
        self.groups = {pop: self.f["spikes"][pop] for pop in populations}
        self.f.swmr_mode = True
        self.counts = {pop: int(self.groups[pop]["timestamps"].shape[0]) for pop in populations}
        self._pending: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {pop: [] for pop in populations}

    def add(self, pop: str, times: np.ndarray, node_ids: np.ndarray) -> None:
        if times.size:
            self._pending[pop].append((times, node_ids))

    def flush(self) -> None:
        for pop, items in self._pending.items():
            if not items:
                continue
            t = np.concatenate([a for a, _ in items])
            n = np.concatenate([b for _, b in items])
            order = np.lexsort((n, t))
            append(self.groups[pop]["timestamps"], t[order])
            append(self.groups[pop]["node_ids"], n[order].astype(np.uint64))
            self.counts[pop] += t.size
            items.clear()
        self.f.flush()

    def close(self) -> None:
        self.flush()
        self.f.close()


def read_spikes(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """population -> (timestamps ms, node_ids), read eagerly (small files; see ``analysis`` for lazy)."""
    out = {}
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        for pop, g in f["spikes"].items():
            out[pop] = (g["timestamps"][:], g["node_ids"][:])
    return out
