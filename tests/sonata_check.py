"""Check a run folder against the SONATA spec with the reference reader (libsonata) and h5py.

``assert_sonata_readable(run_dir)`` reads spikes.h5 with libsonata's ``SpikeReader`` and every
report_*.h5 with ``ElementReportReader``, checks that what libsonata returns equals what h5py
reads, and checks every attribute and dtype the spec fixes. Any test that writes a run (BSP,
async, MPI, resumed, repaired) can call it."""
from __future__ import annotations

from pathlib import Path

import h5py
import libsonata
import numpy as np

from cluster_sim.record import sonata


def _check_root(f: h5py.File) -> None:
    assert f.attrs["magic"] == 0x0A7A and f.attrs.get_id("magic").dtype == np.uint32, f.filename
    assert list(f.attrs["version"]) == [0, 1] and f.attrs.get_id("version").dtype == np.uint32, f.filename


def check_spikes(path: Path) -> dict[str, int]:
    """population -> spike count, after checking the file; returns the counts for callers' asserts."""
    counts: dict[str, int] = {}
    with h5py.File(path, "r") as f:  # plain open: no swmr flag needed by any tool
        _check_root(f)
        expect = {}
        for pop, g in f["spikes"].items():
            assert h5py.check_enum_dtype(g.attrs.get_id("sorting").dtype) == sonata.SORTING, f"{pop}: sorting is not the enum"
            assert g.attrs.get_id("sorting").dtype.base == np.uint8
            assert g["timestamps"].dtype == np.float64 and g["timestamps"].attrs["units"] == "ms"
            assert g["node_ids"].dtype == np.uint64
            assert g["timestamps"].shape == g["node_ids"].shape
            expect[pop] = (g["timestamps"][:], g["node_ids"][:], int(g.attrs.get("n_nodes", 0)))
    reader = libsonata.SpikeReader(str(path))
    assert sorted(reader.get_population_names()) == sorted(expect)
    for pop, (ts, ids, n_nodes) in expect.items():
        p = reader[pop]
        assert p.sorting == "by_time"
        assert np.all(np.diff(ts) >= 0), f"{pop}: timestamps not sorted although sorting = by_time"
        got = p.get()
        assert len(got) == ts.size
        if ts.size:
            got_ids = np.array([i for i, _ in got], np.uint64)
            got_t = np.array([t for _, t in got])
            np.testing.assert_array_equal(got_t, ts)
            np.testing.assert_array_equal(got_ids, ids)
            assert n_nodes == 0 or ids.max() < n_nodes
        counts[pop] = int(ts.size)
    return counts


def check_report(path: Path) -> np.ndarray:
    """The report's data (float32) after checking it; one population per file."""
    with h5py.File(path, "r") as f:
        _check_root(f)
        (pop, g), = f["report"].items()
        data = g["data"]
        assert data.dtype == np.float32 and "units" in data.attrs
        m = g["mapping"]
        assert m["node_ids"].dtype == np.uint64 and m["index_pointers"].dtype == np.uint64
        assert m["element_ids"].dtype == np.uint32 and m["time"].dtype == np.float64
        assert m["time"].shape == (3,) and m["time"].attrs["units"] == "ms"
        if "data_residual" in g:  # cluster-sim's float64 extension: same shape, ignored by SONATA readers
            assert g["data_residual"].dtype == np.float32 and g["data_residual"].shape == data.shape
        node_ids = m["node_ids"][:]
        np.testing.assert_array_equal(m["index_pointers"][:], np.arange(node_ids.size + 1))
        values = data[:]
        start, stop, dt = m["time"][:]
    reader = libsonata.ElementReportReader(str(path))
    assert reader.get_population_names() == [pop]
    p = reader[pop]
    assert p.time_units == "ms"
    assert list(p.get_node_ids()) == node_ids.tolist()
    assert np.allclose(p.times, (start, stop, dt))
    frame = p.get()
    got = np.asarray(frame.data)
    assert got.shape == values.shape, (got.shape, values.shape)
    np.testing.assert_array_equal(np.asarray(frame.ids)[:, 0], node_ids)  # a full read keeps the file's order
    np.testing.assert_array_equal(got, values)
    if node_ids.size:  # a selection comes back ordered by node id: the mapping must say which column is whose
        picked = sorted(node_ids.tolist())[: max(1, node_ids.size // 2)]
        sel = np.asarray(p.get(node_ids=picked).data)
        cols = [int(np.nonzero(node_ids == k)[0][0]) for k in picked]
        np.testing.assert_array_equal(sel, values[:, cols])
    np.testing.assert_allclose(np.asarray(frame.times), start + dt * np.arange(values.shape[0]))
    return values


def assert_sonata_readable(run_dir: str | Path) -> dict[str, int]:
    """Check spikes.h5 and every report_*.h5 of ``run_dir``; returns the spike counts."""
    run_dir = Path(run_dir)
    counts = check_spikes(run_dir / "spikes.h5")
    for rep in sorted(run_dir.glob("report_*.h5")):
        check_report(rep)
    return counts
