"""Sampled state variables in the SONATA report layout, one file per recording:
``/report/<population>/data`` [n_samples × n_neurons] and ``mapping/{node_ids, index_pointers,
element_ids, time}`` with time = (start, stop, dt) in ms. Appended chunk by chunk (SWMR).

``data`` is float32, as SONATA readers (libsonata) require: 7 significant digits, about 1e-5 mV
on a membrane potential. So that float64 results stay available (reference comparisons check
1e-6 mV), ``data_residual`` (float32, a cluster-sim extension that SONATA readers ignore) holds
float32(sample - data): data + residual reconstructs each sample to ~1e-14 relative, in the
8 bytes per sample a float64 ``data`` used to take. ``full_precision=False`` leaves it out."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from cluster_sim.record import sonata
from cluster_sim.record._h5 import append, appendable, copy_prefix


RESIDUAL = "data_residual"


class TraceWriter:
    def __init__(self, path: Path, population: str, variable: str, node_ids: np.ndarray, sampling_ms: float,
                 unit: str, resume_rows: int | None = None, full_precision: bool = True) -> None:
        self.path, self.pop, self.dt = Path(path), population, sampling_ms
        if resume_rows is None:
            tmp = self.path.with_suffix(".h5.tmp")
            with h5py.File(tmp, "w", libver="latest") as f:
                sonata.write_root_attrs(f)
                g = f.create_group(f"report/{population}")
                ds = appendable(g, "data", sonata.REPORT_DTYPE, width=len(node_ids))
                ds.attrs["units"] = unit
                ds.attrs["variable_name"] = variable
                if full_precision:
                    res = appendable(g, RESIDUAL, sonata.REPORT_DTYPE, width=len(node_ids))
                    res.attrs["description"] = "float64 sample = data + data_residual (cluster-sim extension)"
                m = g.create_group("mapping")
                m.create_dataset("node_ids", data=np.asarray(node_ids, sonata.NODE_ID_DTYPE))
                m.create_dataset("index_pointers", data=np.arange(len(node_ids) + 1, dtype=np.uint64))
                m.create_dataset("element_ids", data=np.zeros(len(node_ids), sonata.ELEMENT_ID_DTYPE))
                tm = m.create_dataset("time", data=np.array([sampling_ms, sampling_ms, sampling_ms], np.float64))
                tm.attrs["units"] = "ms"
            tmp.replace(self.path)
        else:
            copy_prefix(self.path, {f"report/{population}/{name}": resume_rows for name in ("data", RESIDUAL)})
        self.f = h5py.File(self.path, "r+", libver="latest")
        self.data = self.f[f"report/{population}/data"]
        self.residual = self.f[f"report/{population}"].get(RESIDUAL)  # absent in files of older versions
        self.time = self.f[f"report/{population}/mapping/time"]
        self.f.swmr_mode = True
        self.rows = int(self.data.shape[0])
        self._pending: list[np.ndarray] = []

    def add(self, rows: np.ndarray) -> None:
        if rows.shape[0]:
            self._pending.append(rows)

    def flush(self) -> None:
        if self._pending:
            full = np.concatenate(self._pending, axis=0).astype(np.float64)
            block = full.astype(sonata.REPORT_DTYPE)
            if self.residual is not None:
                with np.errstate(invalid="ignore"):  # inf - inf in a blown-up run: NaN residual, data keeps inf
                    append(self.residual, (full - block.astype(np.float64)).astype(sonata.REPORT_DTYPE))
            append(self.data, block)
            self.rows += block.shape[0]
            self._pending.clear()
            # Sample i is the state at (i + 1)·sampling_ms: time = (start, stop exclusive, dt).
            self.time[:] = np.array([self.dt, (self.rows + 1) * self.dt, self.dt])
        self.f.flush()

    def close(self) -> None:
        self.flush()
        self.f.close()


def read_trace(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times ms, node_ids, data [n_samples × n_neurons] as float64)."""
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        pop = next(iter(f["report"]))
        g = f["report"][pop]
        data = g["data"][:].astype(np.float64)
        if RESIDUAL in g:
            data += np.nan_to_num(g[RESIDUAL][: data.shape[0]].astype(np.float64))
        start, _, dt = g["mapping/time"][:]
        return start + dt * np.arange(data.shape[0]), g["mapping/node_ids"][:], data
