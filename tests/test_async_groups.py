"""A graded-coupled pair run by the asynchronous engine as one coupled group (shared step, max-norm
error over the group, diagonal Newton) against scipy's Radau at rtol 1e-10 on the same model
equations; and the group layout the engine builds from a network."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

from cluster_sim.models._ops import numpy_ops
from cluster_sim.models.base import Drive
from cluster_sim.network.build import build_network
from cluster_sim.record.spikes import read_spikes
from cluster_sim.run import simulate
from cluster_sim.spec import load_spec

T_END = 60.0
PAIR = f"""
name = "graded_pair"
[simulation]
duration_ms = {T_END}
mode = "async"
seed = 3
[integrator]
rtol = 1e-8
atol = 1e-8
[populations.A]
model = "locust_pn"
count = 1
[populations.B]
model = "locust_pn"
count = 1
[projections.AB]
source = "A"
target = "B"
synapse = "gaba_a_graded"
connect = {{ rule = "all_to_all" }}
weight_mS_cm2 = 0.8
[projections.BA]
source = "B"
target = "A"
synapse = "gaba_a_graded"
connect = {{ rule = "all_to_all" }}
weight_mS_cm2 = 0.8
[stimuli.a]
waveform = "step"
populations = ["A"]
amplitude_uA_cm2 = 12.0
[stimuli.b]
waveform = "step"
populations = ["B"]
amplitude_uA_cm2 = 11.0
"""


def _radau(spec_path: Path) -> list[np.ndarray]:
    """The pair's equations typed out on the model's NumPy terms, integrated by Radau."""
    net = build_network(load_spec(spec_path))
    pn = net.populations["A"].model
    syn = net.projections[0].synapse
    p, sp, nv = net.populations["A"].params, net.projections[0].params, len(pn.variables)
    y0 = np.r_[[net.populations[pop].init[v][0] for pop in ("A", "B") for v in pn.variables], 0.0, 0.0]
    ops, i_ext = numpy_ops(), (12.0, 11.0)

    def f(t: float, y: np.ndarray) -> np.ndarray:
        out = np.zeros_like(y)
        for i in range(2):
            g = 0.8 * y[2 * nv + 1 - i]  # the partner's gating
            yd = {v: y[nv * i + k] for k, v in enumerate(pn.variables)}
            terms = pn.terms(ops, p, yd, Drive(i_ext[i], g, g * sp["E_mV"]))
            for k, v in enumerate(pn.variables):
                a, b = terms[v]
                out[nv * i + k] = a * yd[v] + b
            a, b = syn.terms(ops, sp, {"o": y[2 * nv + i]}, syn.transmitter(ops, sp, y[nv * i], t, 0.0))["o"]
            out[2 * nv + i] = a * y[2 * nv + i] + b
        return out

    events = []
    for i in range(2):
        ev = lambda t, y, i=i: y[nv * i]  # noqa: E731  (threshold 0 mV)
        ev.direction = 1
        events.append(ev)
    return solve_ivp(f, (0.0, T_END), y0, method="Radau", rtol=1e-10, atol=1e-10, events=events).t_events


def test_graded_pair_matches_radau(tmp_path: Path) -> None:
    path = tmp_path / "pair.toml"
    path.write_text(PAIR)
    ref = _radau(path)
    res = simulate(load_spec(path), tmp_path / "out", progress=False)
    spk = read_spikes(tmp_path / "out" / "spikes.h5")
    got = [np.sort(spk[pop][0]) for pop in ("A", "B")]
    # The coupling matters: the weaker-driven neuron is held silent by its partner's inhibition.
    assert [len(s) for s in ref] == [len(s) for s in got] == [4, 0], (ref, got)
    err = np.abs(got[0] - ref[0]).max()
    print(f"\ngraded pair vs Radau (rtol 1e-10): max |Δt| = {err:.2g} ms at rtol = atol = 1e-8, "
          f"{res.info['steps_per_neuron']:.0f} shared steps")
    assert err < 1e-4  # measured 1.3e-5 ms with the RMS norm over the group; the max norm is stricter


def test_antennal_lobe_is_one_group_with_pulse_transmitters() -> None:
    from cluster_sim.asyncmode.local import build_local, lookahead_ms

    spec = load_spec(Path(__file__).resolve().parents[1] / "jobs" / "antennal_lobe.toml", ['simulation.mode="async"'])
    local = build_local(build_network(spec), lookahead_ms(spec))
    assert lookahead_ms(spec) == spec.engine.interval_ms  # no delayed projection: the grid is the interval
    assert local.blocks == [] and len(local.groups) == 1
    g = local.groups[0]
    assert g.lidx.size == 120 and np.array_equal(local.group_of, np.zeros(120))
    parts = {p.name: p for p in g.parts}
    ach = parts["PN_LN_ach"]
    # Columns: 90·6 PN + 30·n_LN variables, then per projection its synaptic state per source,
    # and one transmitter column per cholinergic source.
    assert ach.t_off == ach.off + ach.n_src and ach.n_src == 90
    assert parts["LN_PN_gaba_a"].t_off == -1 and parts["LN_PN_gaba_a"].n_src == 30
    assert sum(p.n_syn for p in g.parts) == sum(p.n_synapses for p in build_network(spec).projections)
    assert g.nv == g.y0.size == max(p.t_off + p.n_src if p.t_off >= 0 else p.off + p.n_src for p in g.parts)
    pulses = g.pulses_of(0)  # PN 0 starts a transmitter pulse of A for t_max after each spike
    assert pulses == [(ach.t_off, 0.0, ach.params["A_mM"], ach.params["t_max_ms"], 0)]
    assert g.pulses_of(int(np.flatnonzero(g.gid == 90)[0])) == []  # an LN starts none (graded release)


def test_slow_gaba_b_is_a_pulse_part_with_two_states() -> None:
    from cluster_sim.asyncmode.local import build_local, lookahead_ms

    spec = load_spec(Path(__file__).resolve().parents[1] / "jobs" / "antennal_lobe_slow_gaba.toml", ['simulation.mode="async"'])
    g = build_local(build_network(spec), lookahead_ms(spec)).groups[0]
    gb = {p.name: p for p in g.parts}["LN_PN_gaba_b"]
    assert gb.syn.variables == ("r", "s") and gb.n_src == 30 and gb.t_off == gb.off + 2 * 30
    ln0 = int(np.flatnonzero(g.gid == 90)[0])  # an LN now starts a GABA_B transmitter pulse
    assert [c for c, *_ in g.pulses_of(ln0)] == [gb.t_off + int(np.flatnonzero(gb.src_idx == 0)[0])]
