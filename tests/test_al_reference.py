"""The PSST locust antennal lobe against an independent NumPy implementation.

tests/reference/numpy_al.py types the PN/LN/synapse equations again from
shared/reference/psst_locust_al.md and integrates them with its own RK4 (dt 0.01 ms) on the
same network: connectivity, initial state and stimulated cells come from the simulator's
builder (inputs only). Spike times and the voltage of every neuron are compared.

The full protocol (700 ms, odor 100–600 ms) is checked for what the model is known for: cells
fire only once the odor is on, and the mean PN voltage (an LFP proxy) oscillates in 10–60 Hz.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference.numpy_al import ALReference, from_builder  # noqa: E402

from cluster_sim.run import simulate  # noqa: E402
from cluster_sim.network.build import build_network  # noqa: E402
from cluster_sim.record.spikes import read_spikes  # noqa: E402
from cluster_sim.record.traces import read_trace  # noqa: E402
from cluster_sim.spec import load_spec  # noqa: E402

JOB = Path(__file__).resolve().parents[1] / "jobs" / "antennal_lobe.toml"
T_CMP = 100.0  # ms compared against the reference
DT = 0.01
SAMPLE_EVERY = 10  # steps (0.1 ms)
ALL_V = ["recordings.v_PN.neurons=90", "recordings.v_LN.neurons=30",
         "recordings.v_PN.sampling_ms=0.1", "recordings.v_LN.sampling_ms=0.1"]


@pytest.fixture(scope="module")
def early_odor(tmp_path_factory):
    """Simulator and reference over the first 100 ms with the odor switched on at 10 ms."""
    spec = load_spec(JOB, [f"simulation.duration_ms={T_CMP}", "stimuli.odor.start_ms=10", *ALL_V])
    assert spec.integrator.method == "rk4" and spec.integrator.dt_ms == DT
    out = tmp_path_factory.mktemp("al_sim")
    simulate(spec, out, progress=False)
    sim_spk = read_spikes(out / "spikes.h5")
    sim_v = {pop: read_trace(out / f"report_v_{pop}.h5") for pop in ("PN", "LN")}

    ref = ALReference(from_builder(build_network(spec)), dt=DT)
    ref_spk, ref_v = ref.run(int(round(T_CMP / DT)), record_every=SAMPLE_EVERY)
    return sim_spk, sim_v, ref_spk, ref_v


def _sorted(ids, times):
    ids = np.asarray(ids, np.int64)
    order = np.lexsort((times, ids))
    return ids[order], np.asarray(times)[order]


def test_spikes_match_reference(early_odor):
    sim_spk, _, ref_spk, _ = early_odor
    for pop in ("PN", "LN"):
        assert ref_spk[pop][0].size >= 2, f"{pop}: the comparison needs spikes; reference has {ref_spk[pop][0].size}"
    total, max_err = _compare_spikes(sim_spk, ref_spk)
    print(f"\nAL 100 ms: {total} spikes identical, max |Δt| = {max_err:.3g} ms")


def _compare_spikes(sim_spk, ref_spk, tol=1e-6):
    max_err, total = 0.0, 0
    for pop in ("PN", "LN"):
        si, st = _sorted(sim_spk[pop][1], sim_spk[pop][0])
        ri, rt = _sorted(*ref_spk[pop])
        assert np.array_equal(si, ri), (f"{pop}: spiking neurons differ: simulator {list(zip(si, st.round(4)))} "
                                        f"vs reference {list(zip(ri, rt.round(4)))}")
        err = np.abs(st - rt)
        assert not err.size or err.max() < tol, f"{pop}: max |Δt| = {err.max():.3g} ms over {err.size} spikes"
        max_err = max(max_err, float(err.max()) if err.size else 0.0)
        total += si.size
    return total, max_err


def test_ach_delay_matches_reference(early_odor, tmp_path):
    """The cholinergic pulse starts ``delay`` after the presynaptic spike: with 0.5 ms the
    PN-driven LN spikes move, identically in simulator and reference."""
    spec = load_spec(JOB, [f"simulation.duration_ms={T_CMP}", "stimuli.odor.start_ms=10",
                           "projections.PN_LN_ach.delay_ms=0.5"])
    simulate(spec, tmp_path, progress=False)
    sim_spk = read_spikes(tmp_path / "spikes.h5")
    ref = ALReference(from_builder(build_network(spec)), dt=DT)
    ref_spk, _ = ref.run(int(round(T_CMP / DT)))
    total, max_err = _compare_spikes(sim_spk, ref_spk)
    print(f"\nAL ach delay 0.5 ms: {total} spikes identical, max |Δt| = {max_err:.3g} ms")
    # the delay must matter: some LN spike differs from the zero-delay run by > 0.1 ms
    t0 = np.sort(early_odor[2]["LN"][1])
    t1 = np.sort(ref_spk["LN"][1])
    assert t0.size != t1.size or np.abs(t0 - t1).max() > 0.1, f"LN spikes unchanged by the delay: {t0} vs {t1}"


def test_voltage_traces_match_reference(early_odor):
    _, sim_v, _, ref_v = early_odor
    for pop in ("PN", "LN"):
        t, ids, data = sim_v[pop]
        ref = ref_v[pop]
        assert np.array_equal(ids, np.arange(ref.shape[1])) and data.shape == ref.shape, (data.shape, ref.shape)
        assert np.allclose(t, 0.1 * (1 + np.arange(t.size)))
        err = np.abs(data - ref)
        worst = np.unravel_index(np.argmax(err), err.shape)
        print(f"\nAL {pop} v: max |Δv| = {err.max():.3g} mV at t = {t[worst[0]]:.1f} ms, neuron {worst[1]}")
        assert err.max() < 1e-6, f"{pop}: max |Δv| = {err.max():.3g} mV at t = {t[worst[0]]:.1f} ms, neuron {worst[1]}"


def test_tf_where_keeps_float64_scalars():
    import tensorflow as tf

    from cluster_sim.models._ops import tf_ops

    x = 3.0 ** 1.25 / 19.0  # the A-current's 1/τ_h above -63 mV
    v = tf.constant([-62.0, -64.0], tf.float64)
    got = tf_ops("float64").where(v < -63.0, v, x).numpy()
    assert got[0] == x, f"where(...) returned {got[0]!r} for the scalar {x!r} (rel. error {got[0] / x - 1:.2g})"


def test_references_import_nothing_from_the_simulator():
    """The references must not lean on the simulator's code (they only receive built inputs)."""
    import ast

    for path in sorted((Path(__file__).resolve().parent / "reference").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad = [n for n in names if n.split(".")[0] == "cluster_sim"]
            assert not bad, f"{path.name} imports {bad}"


@pytest.fixture(scope="module")
def full_protocol(tmp_path_factory):
    spec = load_spec(JOB, ["simulation.duration_ms=700", *ALL_V])
    onset = spec.stimuli[0].params["start_ms"]
    out = tmp_path_factory.mktemp("al_full")
    simulate(spec, out, progress=False)
    return onset, read_spikes(out / "spikes.h5"), read_trace(out / "report_v_PN.h5")


def test_full_protocol_spikes_only_after_odor_onset(full_protocol):
    onset, spk, _ = full_protocol
    summary = {}
    for pop in ("PN", "LN"):
        t, ids = spk[pop]
        summary[pop] = (t.size, np.unique(ids).size, float(t.min()) if t.size else None)
        assert t.size > 0, f"{pop} never fires during the odor"
        assert t.min() >= onset, f"{pop} fires at {t.min():.2f} ms, before the odor onset at {onset} ms"
        assert np.unique(ids).size >= 3, f"only {np.unique(ids).size} {pop}s fire"
    print(f"\nAL 700 ms (spikes, cells active, first spike ms): {summary}")


def test_full_protocol_oscillates_10_60_hz(full_protocol):
    from scipy.signal import welch

    onset, _, (t, _, v) = full_protocol
    lfp = v.mean(axis=1)  # mean PN voltage
    fs = 1000.0 / (t[1] - t[0])
    sel = (t >= onset + 100.0) & (t < 600.0)  # odor on, past the rise of the input
    f, P = welch(lfp[sel], fs=fs, nperseg=int(round(fs * 0.1)), detrend="linear")
    band = (f >= 5.0) & (f <= 200.0)
    f_peak = float(f[band][np.argmax(P[band])])
    baseline = float(np.median(P[(f >= 80.0) & (f <= 200.0)]))
    ratio = float(P[band].max()) / baseline
    msg = f"mean-PN-voltage PSD peak at {f_peak:.0f} Hz, {ratio:.1f}x the 80-200 Hz median"
    print("\nAL", msg)
    assert 10.0 <= f_peak <= 60.0, msg
    assert ratio > 5.0, msg
