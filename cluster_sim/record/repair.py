"""Make the HDF5 files of a killed run openable by any HDF5 tool.

A run killed with SIGKILL (or by the OOM killer, or a node failure) leaves ``spikes.h5`` and the
reports with the "open for writing" flag of its SWMR writer set: h5py opens them only with
``swmr=True``, libsonata, h5dump and plain ``h5py.File(path)`` refuse them. The data up to the
last flush is intact, so :func:`repair` copies each file's readable, consistent prefix block by
block into a fresh file beside it and renames that over the original (atomic: a repair killed
half-way leaves the original untouched). Spikes keep the longest prefix that is sorted by time
with ids in range (rows past the last complete flush can read back as fill values: t = 0,
node 0); reports keep their whole rows and get a matching ``mapping/time``.

It refuses to touch a folder a live run holds (see ``record.lock``).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from cluster_sim.errors import ConfigError, RunError
from cluster_sim.record.lock import OutputLock, held_by_live_process
from cluster_sim.record.sonata import copy_attrs

BLOCK_ROWS = 1 << 20  # rows copied per read: memory stays bounded for files larger than RAM


@dataclass
class FileRepair:
    path: Path
    repaired: bool  # False: it already opened without swmr
    rows_kept: dict[str, int] = field(default_factory=dict)
    rows_dropped: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.repaired:
            return f"{self.path.name}: ok (nothing to repair)"
        dropped = {k: v for k, v in self.rows_dropped.items() if v}
        extra = f"; dropped incomplete rows {dropped}" if dropped else ""
        return f"{self.path.name}: repaired, kept {sum(self.rows_kept.values())} rows{extra}"


def opens_plainly(path: Path) -> bool:
    """True when a plain (non-SWMR) read open works, as it does for every other HDF5 tool."""
    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def run_files(run_dir: Path) -> list[Path]:
    return [p for p in [run_dir / "spikes.h5", *sorted(run_dir.glob("report_*.h5"))] if p.exists()]


def needs_repair(run_dir: str | Path) -> list[Path]:
    return [p for p in run_files(Path(run_dir)) if not opens_plainly(p)]


def repair(run_dir: str | Path) -> list[FileRepair]:
    """Repair every result file of ``run_dir`` that needs it; ConfigError while a run holds it."""
    run_dir = Path(run_dir)
    if not (run_dir / "spikes.h5").exists():
        raise ConfigError("RUN_DIR", str(run_dir), "has no spikes.h5", "give the --out folder of a cluster-sim run")
    with OutputLock(run_dir, purpose="repair", key="RUN_DIR"):
        for stale in run_dir.glob("*.h5.tmp"):  # left by a writer or repair killed before its rename
            stale.unlink()
        return [repair_file(p) if not opens_plainly(p) else FileRepair(p, False) for p in run_files(run_dir)]


def ensure_readable(run_dir: str | Path, quiet: bool = False) -> None:
    """For read-only commands (info, plot): repair a crashed run's files in place so that what
    the user is pointed to opens anywhere; a folder a live run holds is left alone (the readers
    use SWMR, which reads it while it is written)."""
    run_dir = Path(run_dir)
    if not needs_repair(run_dir) or held_by_live_process(run_dir) is not None:
        return
    try:
        results = repair(run_dir)
    except ConfigError:  # a run took the folder meanwhile: read it with SWMR as it is
        return
    if not quiet:
        for r in results:
            if r.repaired:
                print(f"cluster-sim: {run_dir}: the run was killed; {r.describe()}", file=sys.stderr)


def _sorted_prefix(ts: h5py.Dataset, ids: h5py.Dataset, n_nodes: int) -> int:
    """Length of the longest prefix with finite, non-negative, non-decreasing times and ids in
    range; read block by block (a block that cannot be read ends the prefix)."""
    n = min(ts.shape[0], ids.shape[0])
    last = -np.inf
    for start in range(0, n, BLOCK_ROWS):
        stop = min(n, start + BLOCK_ROWS)
        try:
            t = ts[start:stop]
            i = ids[start:stop]
        except OSError:
            return start
        ok = np.isfinite(t) & (t >= 0.0)
        if n_nodes:
            ok &= i < n_nodes
        ok &= np.diff(np.concatenate([[last], t])) >= 0.0
        bad = np.nonzero(~ok)[0]
        if bad.size:
            return start + int(bad[0])
        last = float(t[-1]) if t.size else last
    return n


def _readable_rows(ds: h5py.Dataset) -> int:
    n = ds.shape[0]
    for start in range(0, n, BLOCK_ROWS):
        try:
            ds[start:min(n, start + BLOCK_ROWS)]
        except OSError:
            return start
    return n


def _copy_dataset(src: h5py.Dataset, dst_group: h5py.Group, name: str, rows: int | None) -> h5py.Dataset:
    if rows is None or src.ndim == 0:
        out = dst_group.create_dataset(name, data=src[()], maxshape=src.maxshape, chunks=src.chunks)
    else:
        out = dst_group.create_dataset(name, shape=(rows, *src.shape[1:]), maxshape=src.maxshape,
                                       dtype=src.dtype, chunks=src.chunks)
        for start in range(0, rows, BLOCK_ROWS):
            stop = min(rows, start + BLOCK_ROWS)
            out[start:stop] = src[start:stop]
    copy_attrs(src.attrs, out.attrs)
    return out


def repair_file(path: Path) -> FileRepair:
    path = Path(path)
    tmp = path.with_suffix(".h5.tmp")
    result = FileRepair(path, True)
    try:
        src = h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as e:
        raise RunError(f"{path} cannot be read even in SWMR mode ({e}); it cannot be repaired, rerun the job") from e
    with src, h5py.File(tmp, "w", libver="latest") as dst:
        copy_attrs(src.attrs, dst.attrs)
        limits: dict[str, int] = {}
        for pop, g in src.get("spikes", {}).items():
            keep = _sorted_prefix(g["timestamps"], g["node_ids"], int(g.attrs.get("n_nodes", 0)))
            for name in ("timestamps", "node_ids"):
                limits[f"spikes/{pop}/{name}"] = keep
                result.rows_dropped[f"spikes/{pop}/{name}"] = g[name].shape[0] - keep
            result.rows_kept[f"spikes/{pop}"] = keep
        for pop, g in src.get("report", {}).items():
            keep = _readable_rows(g["data"])
            if "data_residual" in g:  # the precision extension (record.traces) keeps the same rows
                keep = min(keep, _readable_rows(g["data_residual"]))
                limits[f"report/{pop}/data_residual"] = keep
            limits[f"report/{pop}/data"] = keep
            result.rows_kept[f"report/{pop}"] = keep
            result.rows_dropped[f"report/{pop}/data"] = g["data"].shape[0] - keep

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Group):
                copy_attrs(obj.attrs, dst.require_group(name).attrs)
            elif isinstance(obj, h5py.Dataset):
                parent, _, leaf = name.rpartition("/")
                _copy_dataset(obj, dst.require_group(parent) if parent else dst, leaf, limits.get(name))

        src.visititems(visit)
        for pop, g in dst.get("report", {}).items():  # time = (start, stop, dt) of the rows kept
            start, _, dt = g["mapping/time"][:]
            g["mapping/time"][:] = [start, start + dt * g["data"].shape[0], dt]
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return result
