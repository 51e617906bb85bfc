"""What the SONATA spec fixes about spike and report files, in one place, so writers, the
repair tool and tests agree (SONATA: github.com/AllenInstitute/sonata, docs/SONATA_DEVELOPER_GUIDE).

* root attributes ``magic`` (uint32 0x0A7A) and ``version`` (uint32[2], here 0.1);
* spikes: ``/spikes/<population>`` with attribute ``sorting``, an HDF5 enum
  {none: 0, by_id: 1, by_time: 2} over uint8 (libsonata refuses a string), ``timestamps``
  float64 with ``units`` = "ms", ``node_ids`` uint64;
* reports: ``/report/<population>/data`` float32 [n_times × n_elements] with ``units``,
  ``mapping/{node_ids uint64, index_pointers uint64, element_ids uint32, time float64[3]}``,
  ``time`` = (start, stop, dt) with ``units`` = "ms". libsonata reads float32 data only.
"""
from __future__ import annotations

from typing import Any

import h5py
import numpy as np

MAGIC = np.uint32(0x0A7A)
VERSION = np.array([0, 1], dtype=np.uint32)
SORTING = {"none": 0, "by_id": 1, "by_time": 2}
SORTING_DTYPE = h5py.enum_dtype(SORTING, basetype=np.uint8)
SPIKE_TIME_DTYPE = np.float64
NODE_ID_DTYPE = np.uint64
REPORT_DTYPE = np.float32
ELEMENT_ID_DTYPE = np.uint32


def write_root_attrs(f: h5py.File) -> None:
    f.attrs.create("magic", MAGIC, dtype=np.uint32)
    f.attrs.create("version", VERSION, dtype=np.uint32)


def write_sorting(group: h5py.Group, sorting: str = "by_time") -> None:
    group.attrs.create("sorting", SORTING[sorting], dtype=SORTING_DTYPE)


def read_sorting(group: h5py.Group) -> str:
    """The population's sorting as a name; also accepts the string attribute of files written
    before cluster-sim followed the spec here."""
    raw: Any = group.attrs.get("sorting")
    if raw is None:
        return "none"
    if isinstance(raw, (bytes, str)):
        return raw.decode() if isinstance(raw, bytes) else raw
    names = {v: k for k, v in SORTING.items()}
    return names.get(int(raw), "none")


def copy_attrs(src: h5py.AttributeManager, dst: h5py.AttributeManager) -> None:
    """Copy attributes keeping their HDF5 types: ``dst[k] = src[k]`` would turn the ``sorting``
    enum into a plain uint8 (h5py reads an enum as its integer)."""
    for key in src:
        value = src[key]
        dtype = src.get_id(key).dtype
        if dtype.kind in "SUO":  # strings: let h5py choose (fixed or variable length as read)
            dst[key] = value
        else:
            dst.create(key, value, dtype=dtype)
