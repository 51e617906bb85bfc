"""COBAHH (Brette et al. 2007) against an independent NumPy exponential-Euler implementation.

The network is reduced to 1000 neurons (800 E / 200 I, p = 0.02, 1 ms delay): small enough for
the reference, and the activity still sustains itself. Connectivity and initial state come from
the simulator's builder (inputs only); equations, integration and delivery are the
reference's own (tests/reference/numpy_cobahh.py).

The network is chaotic, so two float64 implementations that round differently must part ways
eventually: spikes are compared up to the first divergence, and the identical prefix must be
long. A reference that delivers spikes one step early must diverge quickly (the comparison has
teeth).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference.numpy_cobahh import CobaHHReference, from_builder  # noqa: E402

from cluster_sim.run import simulate  # noqa: E402
from cluster_sim.network.build import build_network  # noqa: E402
from cluster_sim.record.spikes import read_spikes  # noqa: E402
from cluster_sim.record.traces import read_trace  # noqa: E402
from cluster_sim.spec import load_spec  # noqa: E402

JOB = Path(__file__).resolve().parents[1] / "jobs" / "cobahh.toml"
OVERRIDES = ["populations.E.count=800", "populations.I.count=200", "simulation.duration_ms=300"]
T_SIM = 300.0
T_REF = 300.0  # the reference is cheap (~1.5 s): compare the whole run
TOL = 1e-6  # ms


@pytest.fixture(scope="module")
def spec():
    s = load_spec(JOB, OVERRIDES)
    assert s.integrator.method == "exp_euler"
    assert all(p.connect.p == 0.02 for p in s.projections)
    return s


@pytest.fixture(scope="module")
def sim(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("cobahh")
    res = simulate(spec, out, progress=False)
    return res, read_spikes(out / "spikes.h5"), read_trace(out / "report_v_E.h5")


@pytest.fixture(scope="module")
def ref(spec):
    init, routes = from_builder(build_network(spec))
    rec = np.asarray(spec.recordings[0].neurons)
    r = CobaHHReference(init, routes, dt=spec.integrator.dt_ms)
    spikes, trace = r.run(int(round(T_REF / spec.integrator.dt_ms)), record=("E", rec))
    return spikes, trace


def first_divergence(a: dict, b: dict, tol: float, t_max: float) -> tuple[float, int, float]:
    """Compare spike trains neuron by neuron: (time of the earliest difference or t_max, number of
    spikes of ``a`` before it, max |Δt| over the pairs before it)."""
    t_div, max_err = t_max, 0.0
    for pop in a:
        ia, ta = a[pop]
        ib, tb = b[pop]
        ka, kb = np.lexsort((ta, ia)), np.lexsort((tb, ib))
        ia, ta, ib, tb = ia[ka], ta[ka], ib[kb], tb[kb]
        n = int(max(ia.max(initial=-1), ib.max(initial=-1))) + 1
        sa, sb = np.searchsorted(ia, np.arange(n + 1)), np.searchsorted(ib, np.arange(n + 1))
        for j in range(n):
            xa, xb = ta[sa[j]:sa[j + 1]], tb[sb[j]:sb[j + 1]]
            m = min(xa.size, xb.size)
            bad = np.nonzero(np.abs(xa[:m] - xb[:m]) > tol)[0]
            if bad.size:
                t_div = min(t_div, xa[bad[0]], xb[bad[0]])
            elif xa.size != xb.size:
                t_div = min(t_div, (xa if xa.size > m else xb)[m])
    for pop in a:
        ia, ta = a[pop]
        ib, tb = b[pop]
        ka, kb = np.lexsort((ta, ia)), np.lexsort((tb, ib))
        sel_a, sel_b = ta[ka] < t_div, tb[kb] < t_div
        if sel_a.sum() == sel_b.sum() and sel_a.any():
            max_err = max(max_err, float(np.abs(ta[ka][sel_a] - tb[kb][sel_b]).max()))
    n_before = sum(int((a[p][1] < t_div).sum()) for p in a)
    return float(t_div), n_before, max_err


def _as_ids_times(spk: dict) -> dict:
    return {p: (np.asarray(i, np.int64), np.asarray(t)) for p, (t, i) in spk.items()}


def test_spikes_identical_to_reference(sim, ref):
    _, sim_spk, _ = sim
    ref_spk, _ = ref
    a = {p: (i, t) for p, (i, t) in ref_spk.items()}
    b = {p: v for p, v in _as_ids_times(sim_spk).items()}
    b = {p: (i[t < T_REF], t[t < T_REF]) for p, (i, t) in b.items()}
    t_div, n_before, max_err = first_divergence(a, b, TOL, T_REF)
    n30_ref = sum(int((t < 30.0).sum()) for _, t in a.values())
    n30_match = sum(int((t < min(30.0, t_div)).sum()) for _, t in a.values())
    n_total = sum(t.size for _, t in a.values())
    msg = (f"identical up to {t_div:.2f} ms ({n_before} of {n_total} reference spikes, max |Δt| = {max_err:.3g} ms); "
           f"first 30 ms: {n30_match}/{n30_ref} matched")
    print("\nCOBAHH", msg)
    assert n30_ref > 100, msg
    assert n30_match >= 0.95 * n30_ref, msg
    assert t_div >= 50.0, msg
    assert max_err < TOL, msg


def test_voltage_traces_match_reference(sim, ref):
    _, _, (t, ids, data) = sim
    _, ref_v = ref
    n = min(data.shape[0], ref_v.shape[0])
    t_cmp = 50.0
    k = int(round(t_cmp / 0.1))
    assert n >= k and np.allclose(t[:k], 0.1 * (1 + np.arange(k)))
    err = np.abs(data[:k] - ref_v[:k])
    msg = f"E neurons {list(ids)}: max |Δv| over the first {t_cmp} ms = {err.max():.3g} mV"
    print("\nCOBAHH", msg)
    assert err.max() < 1e-6, msg


def test_early_delivery_is_detected(spec, sim):
    """Negative control: delivering each spike one step early must break the agreement fast."""
    _, sim_spk, _ = sim
    init, routes = from_builder(build_network(spec))
    r = CobaHHReference(init, routes, dt=spec.integrator.dt_ms, arrival_offset=0)
    bad = r.run(int(round(30.0 / spec.integrator.dt_ms)))
    b = {p: (i[t < 30.0], t[t < 30.0]) for p, (i, t) in _as_ids_times(sim_spk).items()}
    t_div, _, _ = first_divergence(bad, b, TOL, 30.0)
    assert t_div < 30.0, f"a reference with early delivery agreed up to {t_div} ms: the comparison cannot see delivery"


def test_self_sustained_activity(sim, spec):
    res, spk, _ = sim
    counts = {p.name: p.count for p in spec.populations}
    rates = {}
    for pop, (t, _) in spk.items():
        rates[pop] = t.size / (counts[pop] * T_SIM * 1e-3)
        windows = np.histogram(t, bins=np.arange(0.0, T_SIM + 1e-9, 50.0))[0]
        late = windows / (counts[pop] * 0.05)
        assert (late > 1.0).all(), f"{pop}: activity dies out: rate per 50 ms window {late.round(1)} Hz"
    print(f"\nCOBAHH N=1000 rates over {T_SIM} ms: " + ", ".join(f"{p} {r:.1f} Hz" for p, r in rates.items()))
    for pop, r in rates.items():
        assert 5.0 <= r <= 150.0, f"{pop} rate {r:.1f} Hz outside 5-150 Hz"
        assert abs(res.info["rates_hz"][pop] - r) < 1e-9, (res.info["rates_hz"], rates)
