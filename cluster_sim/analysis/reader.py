"""Opening a run's results lazily: dask arrays over h5py datasets (files larger than memory
work), the spec's population order and run.json. The one place that knows the file layout."""
from __future__ import annotations

import importlib
import json
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator


class _LazyModule:
    """Imported on first attribute use: every CLI subcommand imports this package (the compare
    subcommand is registered from it), and dask + h5py cost ~1.2 s that `cluster-sim status` must not pay."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        mod: ModuleType = importlib.import_module(self._name)
        return getattr(mod, attr)


da = _LazyModule("dask.array")
h5py = _LazyModule("h5py")

CHUNK = 1 << 20  # spikes per dask block


@contextmanager
def open_spikes(run_dir: str | Path) -> Iterator[dict[str, tuple[Any, Any, int]]]:
    """population -> (timestamps, node_ids, n_nodes) as dask arrays backed by the open file."""
    path = Path(run_dir) / "spikes.h5" if Path(run_dir).is_dir() else Path(run_dir)
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        out = {}
        for pop, g in f["spikes"].items():
            ts, ids = g["timestamps"], g["node_ids"]
            n_nodes = int(g.attrs.get("n_nodes", 0)) or (int(ids[:].max()) + 1 if ids.shape[0] else 0)
            out[pop] = (da.from_array(ts, chunks=CHUNK), da.from_array(ids, chunks=CHUNK), n_nodes)
        yield out


def spec_order(run_dir: str | Path) -> list[str]:
    """Population names in the order of the job spec (HDF5 lists groups alphabetically)."""
    path = Path(run_dir) / "spikes.h5" if Path(run_dir).is_dir() else Path(run_dir)
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        raw = f.attrs.get("populations")
        return json.loads(raw) if raw is not None else list(f["spikes"])


def run_info(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / "run.json"
    return json.loads(p.read_text()) if p.exists() else {}


def duration_ms(run_dir: Path, fallback: float) -> float:
    """Simulated time from run.json, or ``fallback`` for a killed run without it."""
    info = run_info(run_dir)
    return float(info.get("simulated_ms") or fallback)
