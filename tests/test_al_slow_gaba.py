"""The optional slow GABA_B LN→PN synapse (Bazhenov 2001): its kinetics against the closed form,
and its effect in the network (it adds slow inhibition onto PNs)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cluster_sim.models import get_synapse_model
from cluster_sim.models._ops import numpy_ops
from cluster_sim.spec import load_spec
from tests.conftest import JOBS, cli


def test_gaba_b_kinetics_follow_the_cascade() -> None:
    """Integrate one pulse with the model's own (a, b) terms and compare with a fine Euler of
    the written equations: r rises during the pulse, s lags it, the open fraction s⁴/(s⁴+Kd)."""
    syn = get_synapse_model("gaba_b")
    p = syn.params()
    ops = numpy_ops()
    dt, r, s = 2e-3, 0.0, 0.0
    rr, ss = 0.0, 0.0
    peak_s_t, peak_s = 0.0, 0.0
    for k in range(int(400 / dt)):
        t = k * dt
        T = p["A_mM"] if t < p["t_max_ms"] - 1e-12 else 0.0
        terms = syn.terms(ops, p, {"r": np.array([r]), "s": np.array([s])}, np.array([T]))
        r, s = (r + dt * (terms["r"][0] * r + terms["r"][1])).item(), (s + dt * (terms["s"][0] * s + terms["s"][1])).item()
        drr = p["K1_per_mM_ms"] * T * (1 - rr) - p["K2_per_ms"] * rr
        dss = p["K3_per_ms"] * rr - p["K4_per_ms"] * ss
        rr, ss = rr + dt * drr, ss + dt * dss
        if s > peak_s:
            peak_s, peak_s_t = s, t
    assert abs(r - rr) < 1e-12 and abs(s - ss) < 1e-12
    assert 20.0 < peak_s_t < 200.0, f"s should peak tens of ms after the pulse, peaked at {peak_s_t:.1f} ms"
    g = syn.open_fraction(ops, p, {"s": np.array([peak_s])})[0]
    assert np.isclose(g, peak_s ** 4 / (peak_s ** 4 + p["Kd"]))


def test_slow_gaba_job_runs_and_inhibits_pns(tmp_path: Path) -> None:
    spec = load_spec(JOBS / "antennal_lobe_slow_gaba.toml")
    assert any(p.synapse == "gaba_b" for p in spec.projections)
    common = ["--duration", "400", "-q", "--set", "stimuli.odor.start_ms=20.0"]
    base, slow = tmp_path / "base", tmp_path / "slow"
    cli("run", str(JOBS / "antennal_lobe.toml"), "--out", str(base), *common, check=True)
    cli("run", str(JOBS / "antennal_lobe_slow_gaba.toml"), "--out", str(slow), *common, check=True)
    rb = json.loads((base / "run.json").read_text())["rates_hz"]
    rs = json.loads((slow / "run.json").read_text())["rates_hz"]
    assert rb["PN"] > 0.5, rb
    assert rs["PN"] < 0.8 * rb["PN"], f"slow GABA_B onto PNs should lower their rate: {rs} vs {rb}"
