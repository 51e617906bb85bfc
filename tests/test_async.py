"""The asynchronous mode: accuracy against independent references, exact event timing, bitwise
identity for 1–4 real MPI ranks, point-to-point only communication, termination on awkward
topologies, checkpoint/resume, and refusals. Runs in one process share the compiled kernels."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq

from cluster_sim.record.spikes import read_spikes
from cluster_sim.spec import load_spec
from tests.mpi_util import mpirun
from tests.reference.hh_scipy import solve_step_current

ROOT = Path(__file__).resolve().parents[1]

HH_ONE = """
name = "hh_one"
[simulation]
duration_ms = 60.0
mode = "async"
[integrator]
method = "rk4"
dt_ms = 0.005
rtol = {rtol}
atol = {rtol}
[populations.N]
model = "hh_squid"
count = 1
[stimuli.step]
waveform = "step"
populations = ["N"]
amplitude_uA_cm2 = 10.0
start_ms = 5.0
stop_ms = 100.0
"""

# One presynaptic HH spike reaches a passive neuron after a delay that puts the arrival between
# any two grid points; the passive response to one conductance jump is known in closed form up to
# a quadrature, and its threshold crossing time is what the engine reports.
EVENT = """
name = "event"
[simulation]
duration_ms = 12.0
mode = "async"
[integrator]
dt_ms = 0.0001  # unused by the async mode; the BSP check wants delays on its grid
rtol = 1e-9
atol = 1e-9
[populations.pre]
model = "hh_squid"
count = 1
[populations.post]
model = "passive"
count = 1
params = {{ threshold_mV = -50.0 }}
[projections.pp]
source = "pre"
target = "post"
synapse = "exp_cond_exc"
connect = {{ rule = "all_to_all" }}
weight_mS_cm2 = {w}
delay_ms = 0.7321
[stimuli.step]
waveform = "step"
populations = ["pre"]
amplitude_uA_cm2 = 10.0
start_ms = 1.0
stop_ms = 100.0
"""

# Every awkward topology at once, all of one model (one compiled kernel): a random E/I network,
# a ring, an all-to-all clique and isolated neurons, 30 neurons in all.
TOPOLOGIES = """
name = "topologies"
[simulation]
duration_ms = 40.0
seed = 11
mode = "async"
[integrator]
rtol = 1e-6
atol = 1e-6
[populations.E]
model = "cobahh"
count = 12
[populations.I]
model = "cobahh"
count = 4
[populations.R]
model = "cobahh"
count = 6
[populations.A]
model = "cobahh"
count = 5
[populations.Z]
model = "cobahh"
count = 3
[projections.EE]
source = "E"
target = "E"
synapse = "exp_cond_exc"
connect = { rule = "bernoulli", p = 0.3 }
weight_nS = 6.0
delay_ms = 1.0
[projections.EI]
source = "E"
target = "I"
synapse = "exp_cond_exc"
connect = { rule = "bernoulli", p = 0.3 }
weight_nS = 6.0
delay_ms = 1.3
[projections.IE]
source = "I"
target = "E"
synapse = "exp_cond_inh"
connect = { rule = "bernoulli", p = 0.3 }
weight_nS = 67.0
delay_ms = 1.0
[projections.ring]
source = "R"
target = "R"
synapse = "exp_cond_exc"
connect = { rule = "list", pairs = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 0]] }
weight_nS = 200.0
delay_ms = 2.0
[projections.clique]
source = "A"
target = "A"
synapse = "exp_cond_exc"
connect = { rule = "all_to_all" }
weight_nS = 30.0
delay_ms = 1.5
[stimuli.drive]
waveform = "step"
populations = ["R", "A", "Z"]
count = 6
amplitude_pA = 800.0
start_ms = 2.0
stop_ms = 30.0
"""


def _run_inproc(spec_text: str, tmp: Path, name: str, overrides: list[str] | None = None, **kw):
    from cluster_sim.run import simulate

    path = tmp / f"{name}.toml"
    path.write_text(spec_text)
    out = tmp / name
    res = simulate(load_spec(path, overrides or []), out, progress=False, **kw)
    return res, read_spikes(out / "spikes.h5")


def _sorted(spikes: dict) -> dict:
    out = {}
    for pop, (t, i) in spikes.items():
        o = np.lexsort((t, i))
        out[pop] = (t[o], i[o])
    return out


def _same(a: dict, b: dict) -> bool:
    a, b = _sorted(a), _sorted(b)
    return a.keys() == b.keys() and all(np.array_equal(a[p][0], b[p][0]) and np.array_equal(a[p][1], b[p][1]) for p in a)


def test_single_hh_neuron_matches_scipy_within_tolerance(tmp_path: Path) -> None:
    ref = solve_step_current(10.0, 5.0, 100.0, 60.0, threshold_mV=0.0).spikes
    errs = {}
    for rtol in (1e-5, 1e-7, 1e-9):
        res, spk = _run_inproc(HH_ONE.format(rtol=rtol), tmp_path, f"hh{rtol:g}")
        t = spk["N"][0]
        assert t.size == ref.size, f"rtol {rtol}: {t.size} spikes, reference {ref.size}"
        errs[rtol] = float(np.max(np.abs(np.sort(t) - ref)))
        assert res.info["steps_per_neuron"] > 0
        assert res.info["traces_during_run"] == 0, "every kernel shape is compiled during startup"
    # Error falls with the tolerance and is within a small multiple of it at every setting.
    assert errs[1e-9] < errs[1e-7] < errs[1e-5], errs
    assert errs[1e-5] < 2e-2 and errs[1e-7] < 5e-4 and errs[1e-9] < 2e-5, errs


def test_single_hh_neuron_agrees_with_fixed_step_engine(tmp_path: Path) -> None:
    from cluster_sim.run import simulate

    _, spk_async = _run_inproc(HH_ONE.format(rtol=1e-9), tmp_path, "hh_a")
    path = tmp_path / "hh_bsp.toml"
    path.write_text(HH_ONE.format(rtol=1e-9).replace('mode = "async"', 'mode = "bsp"'))
    simulate(load_spec(path, []), tmp_path / "hh_bsp", progress=False)
    t_bsp = read_spikes(tmp_path / "hh_bsp" / "spikes.h5")["N"][0]
    t_async = spk_async["N"][0]
    assert t_bsp.size == t_async.size > 3
    # RK4 at dt 0.005 ms is accurate to ~1e-4 ms on this neuron (test_hh_accuracy).
    assert np.max(np.abs(np.sort(t_bsp) - np.sort(t_async))) < 5e-4


def _passive_crossing(t_arrive: float, w: float, p: dict) -> float:
    """Threshold crossing of C dv/dt = -gL (v - EL) - g(t) (v - Ee), g = w e^{-(t-ta)/τ}, v(ta) = EL."""
    C, gL, EL, Ee, tau, th = p["C_uF_cm2"], p["g_L_mS_cm2"], p["E_L_mV"], p["E_e_mV"], p["tau_e_ms"], -50.0

    def A(s: float) -> float:  # ∫_0^s (gL + g)/C
        return (gL * s + w * tau * (1.0 - math.exp(-s / tau))) / C

    def v(s: float) -> float:
        integral = quad(lambda u: (gL * EL + w * math.exp(-u / tau) * Ee) / C * math.exp(A(u)), 0.0, s,
                        epsabs=1e-13, epsrel=1e-13, limit=200)[0]
        return math.exp(-A(s)) * (EL + integral)

    s_star = brentq(lambda s: v(s) - th, 1e-9, 5.0, xtol=1e-14)
    return t_arrive + s_star


def test_input_event_applied_at_its_exact_time(tmp_path: Path) -> None:
    from cluster_sim.models import get_neuron_model

    w = 0.5
    _, spk = _run_inproc(EVENT.format(w=w), tmp_path, "event")
    t_pre = spk["pre"][0]
    assert t_pre.size >= 1
    t_arrive = float(np.sort(t_pre)[0]) + 0.7321
    expected = _passive_crossing(t_arrive, w, get_neuron_model("passive").params())
    t_post = np.sort(spk["post"][0])
    assert t_post.size >= 1
    assert abs(t_post[0] - expected) < 1e-6, (t_post[0], expected)
    # The arrival is not on any grid point or earlier step end: an engine applying it at the
    # start or end of a 0.01 ms step would be off by up to that much.
    assert (t_arrive / 0.7321) % 1.0 > 1e-3


def test_topologies_identical_on_1_to_4_ranks_point_to_point_only(tmp_path: Path) -> None:
    spec = tmp_path / "topo.toml"
    spec.write_text(TOPOLOGIES)
    base = tmp_path / "r1"
    r = subprocess.run([sys.executable, "-m", "cluster_sim.cli", "run", str(spec), "--out", str(base), "-q"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = read_spikes(base / "spikes.h5")
    counts = {p: t.size for p, (t, _) in ref.items()}
    assert all(counts[p] > 0 for p in ("E", "R", "A", "Z")), counts
    info = json.loads((base / "run.json").read_text())
    k_end = math.ceil(info["duration_ms"] / info["grid_ms"])
    for n, part in ((2, "block"), (3, "round_robin"), (4, "block")):
        out = tmp_path / f"r{n}"
        trace = tmp_path / f"trace{n}"
        r = mpirun(n, "run", str(spec), "--out", str(out), "-q", "--set", f'engine.partition="{part}"',
                   timeout=600, env={"CLUSTER_SIM_TRACE_COMM": str(trace)})
        assert r.returncode == 0, r.stderr[-3000:]
        assert _same(ref, read_spikes(out / "spikes.h5")), f"{n} ranks ({part}) differ from 1 rank"
        assert json.loads((out / "run.json").read_text())["ranks"] == n
        for rank in range(n):
            calls = json.loads(Path(f"{trace}.rank{rank}.json").read_text())
            assert calls["loop_collectives"] == [], calls
            assert calls["loop"].get("isend", 0) + calls["loop"].get("probe", 0) > 0, calls
            # Spikes and promises travel together: at most one message per grid interval per
            # peer, plus output to rank 0.
            assert calls["loop"].get("isend", 0) <= (n - 1) * (k_end + 1) + k_end + 2, calls


def test_rank_without_neurons_terminates(tmp_path: Path) -> None:
    text = TOPOLOGIES.split("[populations.I]")[0].replace("count = 12", "count = 2") + """
[projections.EE]
source = "E"
target = "E"
synapse = "exp_cond_exc"
connect = { rule = "all_to_all" }
weight_nS = 6.0
delay_ms = 1.0
"""
    spec = tmp_path / "tiny.toml"
    spec.write_text(text)
    r = mpirun(3, "run", str(spec), "--out", str(tmp_path / "r3"), "-q", "--set", 'engine.partition="block"', timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((tmp_path / "r3" / "run.json").read_text())
    assert min(p["neurons"] for p in info["per_rank"]) == 0, info["per_rank"]
    assert info["status"] == "completed" and info["simulated_ms"] == pytest.approx(40.0)


def test_checkpoint_and_resume_bitwise(tmp_path: Path) -> None:
    _, full = _run_inproc(TOPOLOGIES, tmp_path, "full")
    path = tmp_path / "full.toml"
    out = tmp_path / "part"
    from cluster_sim.run import simulate

    spec_short = load_spec(path, ["simulation.duration_ms=25.0"])
    simulate(spec_short, out, progress=False, checkpoint_every_ms=10.0)
    manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
    assert manifest["simulated_ms"] == pytest.approx(20.0)
    res = simulate(load_spec(path, []), out, progress=False, resume=True)
    assert res.info["resumed_from_ms"] == pytest.approx(20.0)
    assert res.info["traces_during_run"] == 0, "both batch shapes are compiled during startup"
    assert _same(full, read_spikes(out / "spikes.h5"))


def test_stop_signal_checkpoints_and_resumes(tmp_path: Path) -> None:
    from cluster_sim.run import simulate
    from cluster_sim.runtime.stop import StopRequest

    _, full = _run_inproc(TOPOLOGIES, tmp_path, "full")
    stop = StopRequest()
    stop.signum = 15  # as if SIGTERM had arrived before the first interval
    res = simulate(load_spec(tmp_path / "full.toml", []), tmp_path / "stopped", progress=False, stop=stop)
    assert res.exit_status == 75
    res = simulate(load_spec(tmp_path / "full.toml", []), tmp_path / "stopped", progress=False, resume=True)
    assert res.exit_status == 0
    assert _same(full, read_spikes(tmp_path / "stopped" / "spikes.h5"))


def test_spike_sources_give_the_same_trains_as_bsp() -> None:
    """The async engine computes Poisson input where it is needed; it must be the very train the
    BSP engine generates on the owning rank (global ids address the random stream)."""
    from cluster_sim.asyncmode.local import build_local
    from cluster_sim.asyncmode.backend import _source_generator
    from cluster_sim.engine.sources import local_sources, source_spikes
    from cluster_sim.network.build import build_network

    spec = load_spec(ROOT / "jobs" / "cobahh_poisson.toml", ["simulation.duration_ms=50.0"])
    net = build_network(spec)
    gen = _source_generator(spec, net, build_local(net, 1.0))
    g_async, t_async = gen(np.zeros(0), 0.0, 50.0)
    g_bsp, t_bsp = [], []
    for src in local_sources(net):
        times, _, batch = source_spikes(src, 0, 5000, 0.01)
        g_bsp.append(batch.gid)
        t_bsp.append(times)
    g_bsp, t_bsp = np.concatenate(g_bsp), np.concatenate(t_bsp)
    assert g_async.size > 10
    oa, ob = np.lexsort((t_async, g_async)), np.lexsort((t_bsp, g_bsp))
    assert np.array_equal(g_async[oa], g_bsp[ob]) and np.array_equal(t_async[oa], t_bsp[ob])


def test_spike_slots_leave_spikes_bitwise_unchanged_and_run_json_reports_calls(tmp_path: Path, monkeypatch) -> None:
    """Spike slots per call change when a spiking neuron's call ends, never its arithmetic:
    spikes are bitwise the same with 4 slots and with 1 (a spike ends the neuron's call), and
    the extra calls show in run.json's kernel-call figures. 60 neurons: two batch sizes (stages of
    one call)."""
    from cluster_sim.asyncmode import bdf, engine

    text = TOPOLOGIES.replace("[populations.E]\nmodel = \"cobahh\"\ncount = 12", "[populations.E]\nmodel = \"cobahh\"\ncount = 42")
    assert engine.buckets(60) == [32, 64]
    res_a, spk_a = _run_inproc(text, tmp_path, "slots4")
    counts = {p: t.size for p, (t, _) in spk_a.items()}
    assert counts["E"] > 10 and counts["R"] > 10, counts
    monkeypatch.setattr(engine, "SPIKES_PER_CALL", 1)
    res_b, spk_b = _run_inproc(text, tmp_path, "slots1")
    assert _same(spk_a, spk_b)
    a, b = res_a.info, res_b.info
    assert a["steps_per_neuron"] == b["steps_per_neuron"] and a["rhs_evals_per_neuron"] == b["rhs_evals_per_neuron"]
    k_end = math.ceil(a["duration_ms"] / a["grid_ms"])
    assert k_end <= a["kernel_calls"] < b["kernel_calls"], (a["kernel_calls"], b["kernel_calls"])
    for info in (a, b):
        assert 0.0 < info["useful_lane_fraction"] <= 1.0 and info["compile_seconds"] > 0.0
        # Every call gets the block's largest batch; its live lanes move down to 32 inside it.
        assert info["lanes_per_call"] == 64 + bdf.GUARD_LANES
        assert info["traces_during_run"] == 0


def _topologies_60(duration_ms: float) -> str:
    return TOPOLOGIES.replace("[populations.E]\nmodel = \"cobahh\"\ncount = 12", "[populations.E]\nmodel = \"cobahh\"\ncount = 42") \
        .replace("duration_ms = 40.0", f"duration_ms = {duration_ms}")


def test_iteration_cap_and_early_return_leave_spikes_bitwise_unchanged(tmp_path: Path, monkeypatch) -> None:
    """Calls cut after 8 iterations (and the batch ladder's early return at other points) put
    neurons at other lanes of other batches; spikes must not move by a single bit (the clique A
    moved by ~1e-13 ms when XLA:CPU's fusion emitters gave the last lanes another exp())."""
    from cluster_sim.asyncmode import engine

    res_a, spk_a = _run_inproc(_topologies_60(20.0), tmp_path, "cap256")
    monkeypatch.setattr(engine, "MAX_ITER_PER_CALL", 8)
    res_b, spk_b = _run_inproc(_topologies_60(20.0), tmp_path, "cap8")
    assert res_b.info["kernel_calls"] > 5 * res_a.info["kernel_calls"]
    assert spk_a["A"][0].size > 5
    assert _same(spk_a, spk_b)


def test_lane_results_do_not_depend_on_batch_position(tmp_path: Path, monkeypatch) -> None:
    """Batch composition: the same 32 neurons (events, restarts and spikes included) in a
    32-lane call in order and reversed, and 28 of them at the top of the batch, give bitwise
    the same result per neuron."""
    from cluster_sim.asyncmode import engine

    seen = {}
    orig = engine.AsyncEngine.run_interval

    def spy(self, batch, k):
        seen["eng"] = self
        return orig(self, batch, k)

    monkeypatch.setattr(engine.AsyncEngine, "run_interval", spy)
    _run_inproc(_topologies_60(6.0), tmp_path, "lanes")
    eng = seen["eng"]
    block, st, kernel = eng.local.blocks[0], eng.states[0], eng.kernels[0]
    nv, E, B = st["D"].shape[2], engine.EVENTS_PER_CALL, 32 + engine.bdf.GUARD_LANES  # guard lanes inert
    t0 = float(st["t"].max())
    rng = np.random.default_rng(5)

    def call(rows: np.ndarray) -> dict:
        n = rows.size
        pad = B - n
        sub = {k: engine._pad(v[:, rows] if k == "D" else v[rows], pad, k) for k, v in st.items()}
        ev_t = np.full((B, E), np.inf)
        ev_w = np.zeros((B, E, nv))
        ev_t[:n, :3] = t0 + np.sort(rng_ev_t[rows], axis=1)
        ev_w[:n, :3, nv - 2] = rng_ev_w[rows]
        P = lambda x: engine._pad(x[rows], pad, "params")  # noqa: E731
        out, spk, _, smp = kernel.advance(sub, np.r_[np.full(n, t0 + 4.0), np.zeros(pad)], ev_t, ev_w, P(block.params),
                                          P(block.amps), P(block.thresh), P(block.refr), 100000, eng.rtol, eng.atol,
                                          np.r_[np.full((n, 1), t0 + 2.5), np.full((pad, 1), np.inf)],
                                          spike_slots=engine.SPIKES_PER_CALL)
        got = {k: (v[:, :n] if k == "D" else v[:n]) for k, v in out.items()}
        got["spk"], got["smp"] = spk[:n], smp[:n]
        return {int(r): {k: (v[:, i] if k == "D" else v[i]) for k, v in got.items()} for i, r in enumerate(rows)}

    n_all = st["t"].size
    rng_ev_t = rng.uniform(0.05, 3.9, (n_all, 3))
    rng_ev_w = rng.uniform(1.0, 20.0, (n_all, 3))
    rows = np.arange(min(32, n_all))
    ref = call(rows)
    assert int(sum(np.sum(~np.isnan(r["spk"])) for r in ref.values())) > 0
    for order in (rows[::-1], np.r_[rows[4:], rows[:4]][::-1][:28]):
        got = call(order)
        for r, v in got.items():
            for k in v:
                assert np.array_equal(v[k], ref[r][k], equal_nan=True), (r, k)
