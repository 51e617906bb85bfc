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
