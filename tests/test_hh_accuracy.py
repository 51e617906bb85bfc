"""Single Hodgkin–Huxley squid neuron against an independent SciPy reference.

The reference (tests/reference/hh_scipy.py) types the 1952 equations again and solves them with
Radau at rtol 1e-10 / atol 1e-12; spike times are roots of v = 0 on its dense output. The
simulator is run through ``simulate`` on a one-neuron spec written here.

* spike times of RK4 at dt = 0.01 ms agree with the reference within 5 µs;
* the measured convergence order (log-log slope of the RMS voltage error against dt) is ~4 for
  RK4 and ~1 for forward and exponential Euler.

The convergence runs switch the current on at t = 0: a current step *inside* the run is a
discontinuity of the forcing, and the engine evaluates the stimulus at the stage times, so the
last RK4 stage of the step that ends at the onset already sees the current (an O(dt) error:
RK4 is only first order across a jump; see ``test_rk4_step_onset_keeps_accuracy``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference.hh_scipy import resting_state, solve_step_current  # noqa: E402

from cluster_sim.run import simulate  # noqa: E402
from cluster_sim.record.spikes import read_spikes  # noqa: E402
from cluster_sim.record.traces import read_trace  # noqa: E402
from cluster_sim.spec import load_spec  # noqa: E402

AMP = 10.0  # µA/cm²
SAMPLING = 0.04  # ms; a multiple of every dt used below
CONV_T = 4.0  # ms: rest -> first spike (~1.9 ms) -> repolarisation, with the current on from t = 0

SPEC = """
name = "hh_single"

[simulation]
duration_ms = 100.0
seed = 3

[integrator]
method = "rk4"
dt_ms = 0.01
precision = "float64"

[populations.N]
model = "hh_squid"
count = 1

[stimuli.step]
waveform = "step"
populations = ["N"]
amplitude_uA_cm2 = {amp}
start_ms = 5.0
stop_ms = 100.0

[recordings.v]
population = "N"
variable = "v"
neurons = [0]
sampling_ms = {sampling}

[output]
dir = "unused"
flush_every_ms = 10.0
"""


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("hh_spec") / "hh.toml"
    p.write_text(SPEC.format(amp=AMP, sampling=SAMPLING))
    return p


def run_hh(spec_path: Path, out: Path, method: str, dt: float, duration: float, start: float):
    spec = load_spec(spec_path, [f"integrator.method={method}", f"integrator.dt_ms={dt}",
                                 f"simulation.duration_ms={duration}", f"stimuli.step.start_ms={start}"])
    simulate(spec, out, progress=False)
    t, _, data = read_trace(out / "report_v.h5")
    ts, ids = read_spikes(out / "spikes.h5")["N"]
    return t, data[:, 0], np.sort(ts)


def fit_order(dts, errs) -> float:
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


@pytest.fixture(scope="module")
def ref_100ms():
    return solve_step_current(AMP, 5.0, 100.0, 100.0)


@pytest.fixture(scope="module")
def ref_conv():
    return solve_step_current(AMP, 0.0, 100.0, CONV_T)


def test_initial_state_matches_reference_rest(spec_path):
    from cluster_sim.network.build import build_network

    net = build_network(load_spec(spec_path))
    init = net.populations["N"].init
    ref = resting_state(-65.0)
    got = np.array([init[k][0] for k in ("v", "m", "h", "n")])
    assert np.allclose(got, ref, rtol=1e-12, atol=1e-14), f"builder init {got} != steady state at -65 mV {ref}"


def test_rk4_spike_times_match_radau(spec_path, ref_100ms, tmp_path):
    _, _, ts = run_hh(spec_path, tmp_path / "rk4", "rk4", 0.01, 100.0, 5.0)
    ref = ref_100ms.spikes
    assert ref.size >= 5, f"reference should fire repetitively, got {ref}"
    assert ts.size == ref.size, f"spike count {ts.size} != reference {ref.size}: {ts} vs {ref}"
    err = np.abs(ts - ref)
    print(f"\nHH RK4 dt 0.01: {ts.size} spikes, max |Δt| vs Radau = {err.max():.3g} ms")
    assert err.max() < 0.005, f"max |Δt| = {err.max():.3g} ms (per spike {err}) exceeds 0.005 ms"


def _rms_errors(spec_path, ref, tmp_path, method, dts):
    errs = []
    for dt in dts:
        t, v, _ = run_hh(spec_path, tmp_path / f"{method}_{dt}", method, dt, CONV_T, 0.0)
        assert t.size == round(CONV_T / SAMPLING) and np.allclose(t, SAMPLING * (1 + np.arange(t.size)))
        errs.append(float(np.sqrt(np.mean((v - ref.v(t)) ** 2))))
    return np.array(errs)


def test_rk4_fourth_order(spec_path, ref_conv, tmp_path):
    dts = np.array([0.04, 0.02, 0.01, 0.005])
    errs = _rms_errors(spec_path, ref_conv, tmp_path, "rk4", dts)
    order = fit_order(dts, errs)
    msg = f"RK4 RMS v errors {dict(zip(dts, errs))}, fitted order {order:.2f}"
    print("\nHH", msg)
    assert errs[-1] < 1e-4, msg
    assert order >= 3.8, msg


@pytest.mark.parametrize("method", ["euler", "exp_euler"])
def test_euler_methods_first_order(spec_path, ref_conv, tmp_path, method):
    dts = np.array([0.004, 0.002, 0.001])
    errs = _rms_errors(spec_path, ref_conv, tmp_path, method, dts)
    order = fit_order(dts, errs)
    msg = f"{method} RMS v errors {dict(zip(dts, errs))}, fitted order {order:.2f}"
    print("\nHH", msg)
    assert errs[-1] < 0.5, msg
    assert 0.8 <= order <= 1.2, msg


def test_rk4_step_onset_keeps_accuracy(spec_path, tmp_path):
    ref = solve_step_current(AMP, 5.0, 100.0, 5.2)
    t, v, _ = run_hh(spec_path, tmp_path / "onset", "rk4", 0.04, 5.2, 5.0)
    i = int(np.argmin(np.abs(t - 5.0)))
    err = abs(v[i] - ref.v(t[i])[0])
    # Before any current flows, RK4 at dt 0.04 is accurate to ~1e-6 mV on this smooth rest state.
    assert err < 1e-4, f"v(5.0 ms) off by {err:.3g} mV (amplitude·dt/6 = {AMP * 0.04 / 6:.3g})"
