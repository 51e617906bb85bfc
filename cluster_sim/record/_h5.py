"""Shared HDF5 helpers."""
from __future__ import annotations

import h5py
import numpy as np


def appendable(group: h5py.Group, name: str, dtype: type, width: int | None = None, chunk: int = 8192) -> h5py.Dataset:
    """A chunked dataset that grows along its first axis."""
    if width is None:
        return group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk,))
    rows = max(1, min(chunk, (1 << 20) // max(width * np.dtype(dtype).itemsize, 1)))
    return group.create_dataset(name, shape=(0, width), maxshape=(None, width), dtype=dtype, chunks=(rows, max(width, 1)))


def append(ds: h5py.Dataset, values: np.ndarray) -> None:
    n = ds.shape[0]
    if values.shape[0] == 0:
        return
    ds.resize(n + values.shape[0], axis=0)
    ds[n:] = values


def copy_prefix(path, rows: dict[str, int]) -> None:
    """Rewrite ``path`` keeping only the first ``rows[dataset path]`` rows of the listed growable
    datasets (everything else copied whole). A file left by a killed SWMR writer keeps its
    "open for writing" flag and cannot be reopened for writing, but it can be read; so resume
    copies its readable prefix into a fresh file and renames it over the old one."""
    import os
    from pathlib import Path

    from cluster_sim.record.sonata import copy_attrs

    path = Path(path)
    tmp = path.with_suffix(".h5.tmp")
    with h5py.File(path, "r", libver="latest", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
        copy_attrs(src.attrs, dst.attrs)

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Group):
                copy_attrs(obj.attrs, dst.require_group(name).attrs)
                return
            assert isinstance(obj, h5py.Dataset)
            n = rows.get(name)
            if n is None:
                out = dst.create_dataset(name, data=obj[()], maxshape=obj.maxshape, chunks=obj.chunks)
            else:
                if obj.shape[0] < n:
                    raise OSError(f"{path}:{name} has {obj.shape[0]} rows, the checkpoint expects {n}")
                out = dst.create_dataset(name, data=obj[:n], maxshape=obj.maxshape, chunks=obj.chunks)
            copy_attrs(obj.attrs, out.attrs)

        src.visititems(visit)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
