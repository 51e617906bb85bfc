"""Every file a run writes is read by libsonata, the reference SONATA reader, and by
cluster-sim's own readers: BSP, async, MPI and resumed runs."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cluster_sim.record import sonata
from cluster_sim.record.spikes import read_spikes
from tests.conftest import cli
from tests.mpi_util import mpirun
from tests.sonata_check import assert_sonata_readable

DURATION = "30"


@pytest.fixture(scope="module")
def job(small_cobahh_job: Path) -> Path:
    return small_cobahh_job


@pytest.fixture(scope="module")
def bsp_run(job: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bsp") / "run"
    cli("run", str(job), "--out", str(out), "--duration", DURATION, "-q", check=True)
    return out


def test_bsp_run_is_sonata(bsp_run: Path) -> None:
    counts = assert_sonata_readable(bsp_run)
    assert sum(counts.values()) == json.loads((bsp_run / "run.json").read_text())["n_spikes"] > 0
    with h5py.File(bsp_run / "spikes.h5", "r") as f:
        assert sonata.read_sorting(f["spikes/E"]) == "by_time"
    # cluster-sim's own readers still read the files
    proc = cli("info", str(bsp_run), "--json", check=True)
    assert json.loads(proc.stdout)["populations"]["E"]["n_spikes"] == counts["E"]


def test_resumed_run_is_sonata(job: Path, bsp_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "legs"
    cli("run", str(job), "--out", str(out), "--duration", "20", "--checkpoint-every", "10", "-q", check=True)
    cli("run", str(job), "--out", str(out), "--duration", DURATION, "--resume", "-q", check=True)
    assert json.loads((out / "run.json").read_text())["resumed_from_ms"] > 0
    assert assert_sonata_readable(out) == assert_sonata_readable(bsp_run)
    a, b = read_spikes(out / "spikes.h5"), read_spikes(bsp_run / "spikes.h5")
    for pop in a:
        np.testing.assert_array_equal(a[pop][0], b[pop][0])


@pytest.mark.mpi
def test_mpi_run_is_sonata(job: Path, bsp_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "mpi"
    proc = mpirun(2, "run", str(job), "--out", str(out), "--duration", DURATION, "-q")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert assert_sonata_readable(out) == assert_sonata_readable(bsp_run)


def test_reports_keep_float64_precision_and_stay_sonata(tmp_path: Path) -> None:
    """float32 ``data`` for SONATA readers; data + residual gives the float64 samples back."""
    from cluster_sim.record.traces import TraceWriter, read_trace
    from tests.sonata_check import check_report

    x = np.random.default_rng(1).normal(-60.0, 10.0, (300, 4))
    w = TraceWriter(tmp_path / "report_v.h5", "E", "v", np.array([3, 1, 2, 0]), 0.1, "mV")
    w.add(x[:120])
    w.flush()
    w.add(x[120:])
    w.close()
    assert np.abs(x.astype(np.float32) - x).max() > 1e-6  # float32 alone would not do
    _, ids, data = read_trace(tmp_path / "report_v.h5")
    assert np.abs(data - x).max() < 1e-12 and list(ids) == [3, 1, 2, 0]
    np.testing.assert_array_equal(check_report(tmp_path / "report_v.h5"), x.astype(np.float32))
    lean = TraceWriter(tmp_path / "report_w.h5", "E", "v", np.array([0]), 0.1, "mV", full_precision=False)
    lean.add(x[:, :1])
    lean.close()
    with h5py.File(tmp_path / "report_w.h5", "r") as f:
        assert "data_residual" not in f["report/E"]
    np.testing.assert_array_equal(read_trace(tmp_path / "report_w.h5")[2], x[:, :1].astype(np.float32))


def test_checker_rejects_the_old_layout(tmp_path: Path) -> None:
    """The checker itself fails on what cluster-sim wrote before (string sorting, float64 data)."""
    with h5py.File(tmp_path / "spikes.h5", "w") as f:
        g = f.create_group("spikes/E")
        g.attrs["sorting"] = "by_time"
        g.create_dataset("timestamps", data=np.array([1.0, 2.0])).attrs["units"] = "ms"
        g.create_dataset("node_ids", data=np.array([0, 1], np.uint64))
    with pytest.raises((AssertionError, KeyError, RuntimeError)):
        assert_sonata_readable(tmp_path)


@pytest.mark.filterwarnings("ignore:The 'copy' argument in Quantity")  # elephant 1.2 vs quantities 0.16
def test_to_neo_and_an_elephant_statistic(bsp_run: Path) -> None:
    import elephant.statistics as es
    import quantities as pq

    from cluster_sim.analysis import isi_stats, population_rates, to_neo

    trains = to_neo(bsp_run)
    counts = assert_sonata_readable(bsp_run)
    assert {p: len(v) for p, v in trains.items()} == {"E": 320, "I": 80}
    assert {p: sum(t.size for t in v) for p, v in trains.items()} == counts
    st = trains["E"][0]
    assert st.units == pq.ms and float(st.t_stop.rescale(pq.ms)) == float(DURATION)
    assert st.annotations == {"population": "E", "node_id": 0}
    ours = population_rates(bsp_run)
    for pop, v in trains.items():  # elephant's rate per train, averaged, equals ours
        rate = np.mean([float(es.mean_firing_rate(t).rescale(pq.Hz)) for t in v])
        assert rate == pytest.approx(ours[pop], rel=1e-9)
    cv_ours = isi_stats(bsp_run, "E")["cv"]
    cv_eleph = np.array([es.cv(es.isi(t)) if t.size > 1 else np.nan for t in trains["E"]])
    both = np.isfinite(cv_ours) & np.isfinite(cv_eleph)
    assert both.sum() > 10
    np.testing.assert_allclose(cv_eleph[both], cv_ours[both], rtol=1e-6, atol=1e-9)
    hist = es.time_histogram(trains["E"], bin_size=5 * pq.ms)
    assert int(np.asarray(hist).sum()) == counts["E"]


def test_async_run_is_sonata(job: Path, tmp_path: Path) -> None:
    """The asynchronous mode writes through the same outputs: libsonata reads its files too."""
    out = tmp_path / "async"
    cli("run", str(job), "--out", str(out), "--duration", "20", "--mode", "async", "-q", check=True)  # with its recordings
    counts = assert_sonata_readable(out)
    info = json.loads((out / "run.json").read_text())
    assert info["mode"] == "async" and sum(counts.values()) == info["n_spikes"] > 0
