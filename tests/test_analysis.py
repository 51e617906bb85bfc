"""``cluster_sim.analysis`` on small hand-made SONATA spike files with known answers."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import cluster_sim.analysis as an
from cluster_sim.analysis import reader

DURATION = 1000.0  # ms


def write_run(run_dir: Path, pops: dict, duration_ms: float | None = DURATION, n_nodes_attr: bool = True) -> Path:
    """pops: name -> (n_nodes, list of (neuron, times)). Written sorted by time, as the simulator does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with h5py.File(run_dir / "spikes.h5", "w") as f:
        g = f.create_group("spikes")
        for name, (n, trains) in pops.items():
            ids = np.concatenate([np.full(len(t), i, np.uint64) for i, t in trains]) if trains else np.zeros(0, np.uint64)
            ts = np.concatenate([np.asarray(t, float) for _, t in trains]) if trains else np.zeros(0)
            order = np.lexsort((ids, ts))
            pg = g.create_group(name)
            pg.attrs["sorting"] = "by_time"
            if n_nodes_attr:
                pg.attrs["n_nodes"] = n
            pg.create_dataset("timestamps", data=ts[order], maxshape=(None,))
            pg.create_dataset("node_ids", data=ids[order], maxshape=(None,))
    if duration_ms is not None:
        (run_dir / "run.json").write_text(json.dumps({"name": "hand", "simulated_ms": duration_ms}))
    return run_dir


def regular(start: float, isi: float, stop: float = DURATION) -> np.ndarray:
    return np.arange(start, stop, isi)


@pytest.fixture
def poisson_train():
    rng = np.random.default_rng(12345)
    isis = rng.exponential(5.0, size=4000)
    t = np.cumsum(isis)
    return t[t < DURATION * 10] / 10.0  # ~2000 spikes in 1 s, mean ISI 0.5 ms


@pytest.fixture
def run_a(tmp_path, poisson_train):
    # E: 10 neurons firing regularly at 20 Hz (ISI 50 ms, phases 0..9 ms), neuron 9 silent.
    e_trains = [(i, regular(1.0 + i, 50.0)) for i in range(9)]
    # I: 4 neurons: 0 Poisson-like, 1 single spike, 2 and 3 silent.
    i_trains = [(0, poisson_train), (1, [500.0])]
    return write_run(tmp_path / "a", {"E": (10, e_trains), "I": (4, i_trains)})


def test_population_rates(run_a, poisson_train):
    rates = an.population_rates(run_a)
    assert rates["E"] == pytest.approx(9 * 20 / 10, rel=1e-12), rates
    assert rates["I"] == pytest.approx((poisson_train.size + 1) / 4, rel=1e-12), rates
    # a window: [500, 1000) holds 10 spikes of each regular neuron
    win = an.population_rates(run_a, 500.0, 1000.0)
    assert win["E"] == pytest.approx(9 * 10 / (10 * 0.5), rel=1e-12), win
    n_i = int(((poisson_train >= 500) & (poisson_train < 1000)).sum()) + 1
    assert win["I"] == pytest.approx(n_i / (4 * 0.5), rel=1e-12), win


def test_population_rates_without_run_json_or_n_nodes(tmp_path):
    run = write_run(tmp_path / "bare", {"E": (5, [(0, [10.0, 20.0]), (3, [40.0])])}, duration_ms=None, n_nodes_attr=False)
    # falls back to the last spike (40 ms) and max id + 1 (4 neurons)
    assert an.population_rates(run)["E"] == pytest.approx(3 / (4 * 0.040))


def test_rate_histogram(run_a):
    edges, rate = an.rate_histogram(run_a, "E", bin_ms=50.0)
    assert np.allclose(edges, np.arange(0.0, DURATION + 50.0, 50.0)), edges
    assert rate.size == edges.size - 1 == 20
    # each of the 9 firing neurons spikes once per 50 ms bin; 10 neurons -> 9 spikes / (10 × 0.05 s)
    assert np.allclose(rate, 9 / (10 * 0.05)), rate
    edges, rate = an.rate_histogram(run_a, "E", bin_ms=5.0)
    # spikes at 1..9 ms (mod 50): bins [0,5) hold neurons 0-3 (1,2,3,4 ms), [5,10) neurons 4-8
    per_period = rate.reshape(-1, 10)
    assert np.allclose(per_period[:, 0], 4 / (10 * 0.005)) and np.allclose(per_period[:, 1], 5 / (10 * 0.005))
    assert np.allclose(per_period[:, 2:], 0.0)


def test_isi_stats(run_a, poisson_train):
    e = an.isi_stats(run_a, "E")
    assert np.allclose(e["mean_isi_ms"][:9], 50.0) and np.all(e["cv"][:9] < 1e-9), e
    assert e["n_isi"][9] == 0 and np.isnan(e["cv"][9])
    assert np.array_equal(e["n_isi"][:9], np.full(9, 19))  # 20 spikes each
    i = an.isi_stats(run_a, "I")
    isi = np.diff(poisson_train)
    exact_cv = isi.std() / isi.mean()
    assert i["n_isi"][0] == isi.size
    assert i["mean_isi_ms"][0] == pytest.approx(isi.mean(), rel=1e-9)
    assert i["cv"][0] == pytest.approx(exact_cv, rel=1e-9)
    assert 0.9 < i["cv"][0] < 1.1, f"Poisson-like train CV {i['cv'][0]:.3f}"
    assert i["n_isi"][1] == 0 and np.isnan(i["cv"][1])


def test_summarize(run_a, poisson_train):
    s = an.summarize(run_a)
    assert s["run"]["simulated_ms"] == DURATION
    e, i = s["populations"]["E"], s["populations"]["I"]
    assert e["n_neurons"] == 10 and e["n_spikes"] == 9 * 20 and e["active_fraction"] == pytest.approx(0.9)
    assert e["rate_hz"] == pytest.approx(18.0) and e["isi_cv"] < 1e-9
    assert i["n_neurons"] == 4 and i["n_spikes"] == poisson_train.size + 1 and i["active_fraction"] == pytest.approx(0.5)
    isi = np.diff(poisson_train)
    assert i["isi_cv"] == pytest.approx(isi.std() / isi.mean(), rel=1e-9)  # nan-mean over the one neuron with ISIs


def test_compare_spikes_known_shifts(tmp_path):
    base = [(i, regular(2.0 + i, 20.0, 200.0)) for i in range(5)]  # 10 spikes each
    a = write_run(tmp_path / "a", {"P": (5, base)})
    shifted = []
    for i, t in base:
        t = t.copy()
        if i == 1:
            t = t + 0.3  # every spike 0.3 ms late
        if i == 2:
            t = np.delete(t, [0, 5])  # two spikes missing
        if i == 3:
            t = np.append(t, 195.5)  # one extra, far from any spike of A
        if i == 4:
            t = t - 2.0  # beyond the tolerance: no match
        shifted.append((i, t))
    b = write_run(tmp_path / "b", {"P": (5, shifted)})
    r = an.compare_spikes(a, b, tolerance_ms=1.0)
    p = r["populations"]["P"]
    assert (r["n_a"], r["n_b"]) == (50, 49)
    assert r["matched"] == 10 + 10 + 8 + 10 + 0 == p["matched"], r
    assert r["max_abs_error_ms"] == pytest.approx(0.3, abs=1e-9)
    assert r["mean_abs_error_ms"] == pytest.approx(10 * 0.3 / 38, abs=1e-9)
    # symmetric in the runs
    r2 = an.compare_spikes(b, a, tolerance_ms=1.0)
    assert r2["matched"] == r["matched"] and r2["max_abs_error_ms"] == pytest.approx(0.3, abs=1e-9)
    # a larger tolerance also matches neuron 4 (shift 2 ms < ISI/2)
    r3 = an.compare_spikes(a, b, tolerance_ms=2.5)
    assert r3["matched"] == 48 and r3["max_abs_error_ms"] == pytest.approx(2.0, abs=1e-9)
    # identical runs
    r4 = an.compare_spikes(a, a, tolerance_ms=0.1)
    assert r4["matched"] == 50 and r4["max_abs_error_ms"] == 0.0


def test_match_spike_times_does_not_cross_neurons():
    ta = np.array([10.0, 10.0, 30.0])
    ia = np.array([0, 1, 2])
    tb = np.array([10.2, 30.05])
    ib = np.array([1, 5])  # neuron 1 matches; neuron 5 has no partner in A
    err = an.match_spike_times(ta, ia, tb, ib, 0.5)
    assert np.allclose(np.sort(err), [0.2]), err
    assert an.match_spike_times(ta, ia, np.zeros(0), np.zeros(0, np.int64), 1.0).size == 0


def test_match_spike_times_precision_for_large_ids():
    for nid in (10, 10**6):
        err = an.match_spike_times(np.array([1000.0]), np.array([nid]), np.array([1000.0 + 5e-7]), np.array([nid]), 1e-6)
        assert err.size == 1 and abs(err[0] - 5e-7) < 1e-12, f"neuron {nid}: error {err} for a 5e-7 ms shift"


def test_dask_path_matches_single_block(run_a, monkeypatch):
    """Results must not depend on the block size (several blocks when CHUNK is small)."""
    one_block = {"rates": an.population_rates(run_a), "hist": an.rate_histogram(run_a, "I", 10.0),
                 "isi_e": an.isi_stats(run_a, "E"), "isi_i": an.isi_stats(run_a, "I"), "sum": an.summarize(run_a)}
    monkeypatch.setattr(reader, "CHUNK", 7)
    with an.open_spikes(run_a) as pops:
        assert pops["E"][0].numblocks[0] > 10 and pops["I"][0].numblocks[0] > 100
    assert an.population_rates(run_a) == pytest.approx(one_block["rates"], rel=1e-12)
    edges, rate = an.rate_histogram(run_a, "I", 10.0)
    assert np.array_equal(edges, one_block["hist"][0]) and np.allclose(rate, one_block["hist"][1])
    for pop in ("E", "I"):
        got, want = an.isi_stats(run_a, pop), one_block[f"isi_{pop.lower()}"]
        for k in want:
            assert np.allclose(got[k], want[k], rtol=1e-12, equal_nan=True), (pop, k, got[k], want[k])
    s = an.summarize(run_a)
    for pop in ("E", "I"):
        for k, v in one_block["sum"]["populations"][pop].items():
            assert s["populations"][pop][k] == pytest.approx(v, rel=1e-12, nan_ok=True), (pop, k)
    b = write_run(run_a.parent / "copy", {"E": (10, [(i, regular(1.0 + i, 50.0) + 0.01) for i in range(9)])})
    r = an.compare_spikes(run_a, b, tolerance_ms=1.0)
    assert r["populations"]["E"]["matched"] == 180 and r["populations"]["E"]["max_abs_error_ms"] == pytest.approx(0.01, abs=1e-9)
