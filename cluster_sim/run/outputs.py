"""The files a run writes as it goes (rank 0 only), identical for both execution modes:
``spikes.h5`` and one ``report_<name>.h5`` per recording, with one attribute set."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cluster_sim import __version__
from cluster_sim.errors import RunError
from cluster_sim.network.build import Layout
from cluster_sim.record.spikes import SpikeWriter
from cluster_sim.record.traces import TraceWriter
from cluster_sim.spec.schema import JobSpec


def file_attrs(spec: JobSpec, mode: str) -> dict[str, Any]:
    """Root attributes of every file: what was run, by which version, in which mode."""
    attrs: dict[str, Any] = {"cluster_sim_version": __version__, "seed": spec.simulation.seed, "spec": json.dumps(spec.raw),
                             "mode": mode, "precision": spec.integrator.precision,
                             "populations": json.dumps([p.name for p in spec.populations])}
    if mode == "bsp":
        attrs.update(dt_ms=spec.integrator.dt_ms, method=spec.integrator.method)
    else:
        attrs.update(rtol=spec.integrator.rtol, atol=spec.integrator.atol, method="bdf")
    return attrs


class RunOutputs:
    """Spike and trace writers, with per-population spike counts; resumed from a manifest."""

    # HDF5 allocates whole chunks (8192 rows of 8 bytes per spike dataset): room for a new one
    # in each dataset, plus metadata, must be free before a flush is attempted.
    _CHUNK_BYTES = 8192 * 8
    _MARGIN_BYTES = 1 << 20

    def __init__(self, spec: JobSpec, out: Path, mode: str, manifest: Mapping[str, Any] | None) -> None:
        self.spec, self.out = spec, out
        self._spikes_pending: list[tuple[str, np.ndarray, np.ndarray]] = []
        self._samples_pending: list[tuple[str, np.ndarray]] = []
        self.failed = False
        layout = Layout.of(spec)
        self._pops = list(zip(layout.names, layout.offsets, layout.counts))
        self.spikes = SpikeWriter(out / "spikes.h5", {p.name: p.count for p in spec.populations}, file_attrs(spec, mode),
                                  resume_counts=manifest.get("spike_counts") if manifest else None)
        self.traces: dict[str, TraceWriter] = {}
        try:
            for r in spec.recordings:
                self.traces[r.name] = TraceWriter(
                    out / f"report_{r.name}.h5", r.population, r.variable, np.asarray(r.neurons), r.sampling_ms,
                    "mV" if r.variable == "v" else "", resume_rows=manifest["trace_rows"][r.name] if manifest else None)
        except BaseException:
            self.close()
            raise
        self.n_spikes_pop: dict[str, int] = (dict(manifest["n_spikes_pop"]) if manifest
                                             else {p.name: 0 for p in spec.populations})

    @property
    def n_spikes(self) -> int:
        return sum(self.n_spikes_pop.values())

    def add_spikes(self, gids: np.ndarray, times: np.ndarray) -> None:
        """Spikes by global id, split into their populations (ids within the population)."""
        if not gids.size:
            return
        for name, off, cnt in self._pops:
            sel = (gids >= off) & (gids < off + cnt)
            if sel.any():
                self._spikes_pending.append((name, times[sel], gids[sel] - off))
                self.n_spikes_pop[name] += int(sel.sum())

    def add_samples(self, name: str, rows: np.ndarray) -> None:
        """Rows [samples x recorded neurons, in the spec's order] of recording ``name``."""
        self._samples_pending.append((name, rows))

    def flush(self) -> None:
        """Append what was added since the last flush. The first write problem stops the run
        (RunError naming the file) and leaves the files with complete chunks only: free space is
        checked before anything of this flush is handed to HDF5, whose own write errors surface
        only in destructors."""
        if self.failed:
            return
        pending = sum(t.nbytes + i.nbytes for _, t, i in self._spikes_pending) + sum(r.nbytes for _, r in self._samples_pending)
        if pending:
            need = 2 * pending + self._CHUNK_BYTES * (2 * len(self.spec.populations) + len(self.traces)) + self._MARGIN_BYTES
            free = shutil.disk_usage(self.out).free
            if free < need:
                self.failed = True
                raise RunError(f"cannot write {self.out / 'spikes.h5'}: the disk is full ({free} bytes free, the next "
                               f"flush needs about {need}); the files hold every spike up to the previous flush. "
                               "Free space (or use another --out), then resume from the last checkpoint with --resume")
        try:
            for name, times, ids in self._spikes_pending:
                self.spikes.add(name, times, ids)
            for name, rows in self._samples_pending:
                self.traces[name].add(rows)
            self._spikes_pending.clear()
            self._samples_pending.clear()
            self.spikes.flush()
            for tw in self.traces.values():
                tw.flush()
        except (OSError, RuntimeError) as e:
            self.failed = True
            raise RunError(f"writing the results in {self.out} failed: {e}") from e

    def checkpoint_meta(self) -> dict[str, Any]:
        """What a checkpoint needs to cut the files back to it on resume."""
        return {"n_spikes_pop": dict(self.n_spikes_pop), "spike_counts": dict(self.spikes.counts),
                "trace_rows": {k: t.rows for k, t in self.traces.items()}}

    def close(self) -> None:
        if not getattr(self, "failed", False):
            try:
                self.flush()
            except RunError:
                pass  # the run is failing already; keep the files as they are
        for w in [getattr(self, "spikes", None), *getattr(self, "traces", {}).values()]:
            if w is not None:
                if getattr(self, "failed", False):
                    w.f.close()  # without handing HDF5 what could not be written
                else:
                    w.close()

