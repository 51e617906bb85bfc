"""The logic behind benchmarks/async_vs_bsp.py's rate-sweep crossover and heterogeneous-activity
parts (issue 10), without long simulations: the crossover interpolation
(``cluster_sim.analysis.compare.crossover``) and its report, the heterogeneous job
(``jobs/cobahh_heterogeneous.toml``) validating in both modes, the spread -> rates mapping, and
the per-half counters read back from an async checkpoint (a synthetic one here). Cost: two
``cluster-sim validate`` processes (no TensorFlow), a few seconds.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import JOBS, ROOT, cli

from cluster_sim.analysis import compare as cmp
from cluster_sim.analysis import compare_report as rep
from cluster_sim.record import checkpoint as ckpt

HETERO = JOBS / "cobahh_heterogeneous.toml"


@pytest.fixture(scope="module")
def bench():
    """benchmarks/async_vs_bsp.py as a module (it is a script, not a package)."""
    path = ROOT / "benchmarks" / "async_vs_bsp.py"
    spec = importlib.util.spec_from_file_location("async_vs_bsp_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# -- crossover --------------------------------------------------------------------------------

def test_crossover_interpolates_in_log_log():
    # ratio 0.5 at 10 Hz, 2 at 40 Hz: log-linear in log rate crosses 1 at the geometric midpoint, 20 Hz
    c = cmp.crossover([1, 10, 40, 80], [0.1, 0.5, 2.0, 4.0])
    assert c["status"] == "crosses" and c["below"] == 10 and c["above"] == 40
    assert c["value"] == pytest.approx(20.0, rel=1e-12)
    # linear: 0.5 -> 2 over 10 -> 40 reaches 1 a third of the way
    lin = cmp.crossover([1, 10, 40, 80], [0.1, 0.5, 2.0, 4.0], log=False)
    assert lin["value"] == pytest.approx(20.0, rel=1e-12)  # (1 - 0.5) / (2 - 0.5) = 1/3 of 30 Hz
    lin2 = cmp.crossover([0, 10], [0.5, 1.5], log=True)  # value 0: falls back to linear
    assert lin2["value"] == pytest.approx(5.0)


def test_crossover_first_crossing_unsorted_exact_and_nan():
    # unsorted input, a NaN skipped, a point exactly at 1 counts as "async no longer wins"
    c = cmp.crossover([8, 2, 4, 1, 16], [3.0, 0.9, 1.0, float("nan"), 0.5])
    assert c["status"] == "crosses" and (c["below"], c["above"]) == (2.0, 4.0)
    assert c["value"] == pytest.approx(4.0)
    assert c["later_below"] == [16.0]
    # a later dip back below 1 does not move the (first) crossover, it is listed
    d = cmp.crossover([1, 2, 3], [0.5, 2.0, 0.5])
    assert d["above"] == 2.0 and d["later_below"] == [3.0]
    assert "< 1 again at 3" in cmp.describe_crossover(d)


@pytest.mark.parametrize("ratios, status, below, above", [
    ([0.1, 0.2, 0.9], "never", 3.0, None),
    ([1.2, 0.5, 2.0], "from_start", None, 1.0),
    ([float("nan")] * 3, "no_data", None, None),
])
def test_crossover_without_a_bracket(ratios, status, below, above):
    c = cmp.crossover([1, 2, 3], ratios)
    assert (c["status"], c["value"], c["below"], c["above"]) == (status, None, below, above)
    assert c["later_below"] == ([2.0] if status == "from_start" else [])
    assert cmp.describe_crossover(c)  # a sentence for every status


def _summary(run_ratios):
    rows = [{"value": v, "reference_rate_hz": v / 2, "async": {"steps_per_neuron": 100.0 * v, "wall_s": 10.0, "run_s": r,
                                                             "max_abs_error_ms": 0.01},
             "bsp_rk4": {"steps_per_neuron": 1e4, "wall_s": 10.0, "run_s": 1.0, "max_abs_error_ms": 0.1},
             "async_vs_rk4": {"steps": v / 100, "wall": r / 2, "run": r}} for v, r in run_ratios]
    return {"job": str(JOBS / "cobahh_poisson.toml"), "key": "populations.ext.params.rate_hz", "values": [v for v, _ in run_ratios],
            "modes": ["bsp_rk4", "async"], "rows": rows, "crossover": cmp.sweep_crossovers(rows)}


def test_sweep_report_and_plot_carry_the_crossover(tmp_path):
    s = _summary([(1.0, 0.25), (5.0, 0.5), (20.0, 2.0), (80.0, 8.0)])
    assert s["crossover"]["run"]["status"] == "crosses" and s["crossover"]["run"]["value"] == pytest.approx(10.0)
    # wall ratio = run / 2: 0.25 at 5 Hz, exactly 1 at 20 Hz, so the crossing is 20 Hz itself
    assert s["crossover"]["wall"]["above"] == 20.0 and s["crossover"]["wall"]["value"] == pytest.approx(20.0)
    md = rep.sweep_markdown(s)
    line = next(ln for ln in md.splitlines() if ln.startswith("Crossover") and "run phase" in ln)
    assert "≈ 10 " in line and "< 1 at 5" in line and ">= 1 at 20" in line, line
    rep.write_json(tmp_path / "s.json", s)  # strict JSON (None values)
    png = rep.plot_sweep(s, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_sweep_ratio_plot(bench, tmp_path, capsys):
    s = _summary([(1.0, 0.25), (5.0, 0.5), (20.0, 2.0)])
    del s["crossover"]  # the benchmark computes it when the summary lacks it
    bench.print_crossover(s)
    out = capsys.readouterr().out
    assert "Crossover" in out and "Hz" in out and s["crossover"]["run"]["status"] == "crosses"
    assert bench.plot_sweep_ratio(s, tmp_path / "r.png", 100.0, 1000).read_bytes()[:4] == b"\x89PNG"


# -- heterogeneous activity -------------------------------------------------------------------

def test_spread_keeps_the_mean_input(bench):
    for s in (0.0, 0.5, 0.9, 1.0):
        a, b = (float(o.split("=", 1)[1]) for o in bench.hetero_overrides(10.0, s))
        assert a == pytest.approx(10 * (1 + s)) and b == pytest.approx(10 * (1 - s)) and (a + b) / 2 == pytest.approx(10.0)
    keys = [o.split("=", 1)[0] for o in bench.hetero_overrides(10.0, 0.5)]
    assert keys == ["populations.ext_a.params.rate_hz", "populations.ext_b.params.rate_hz"]
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            bench.hetero_overrides(10.0, bad)
    assert bench._hetero_rate(HETERO) == 10.0


@pytest.mark.parametrize("mode", ["bsp", "async"])
def test_heterogeneous_job_validates(bench, mode):
    proc = cli("validate", str(HETERO), "--mode", mode, *sum((["--set", o] for o in bench.hetero_overrides(10.0, 1.0)), []))
    assert proc.returncode == 0, proc.stderr
    assert "1200 neurons in 6 populations, 20 projections" in proc.stdout, proc.stdout


def test_halves_split_the_integrated_neurons(bench):
    masks, sizes = bench.half_of_gid(HETERO)
    assert sizes == {"driven": 500, "quiet": 500}
    assert not (masks["driven"] & masks["quiet"]).any()
    both = masks["driven"] | masks["quiet"]
    assert both[:1000].all() and not both[1000:].any()  # the 200 Poisson sources (gids 1000-1199) are in neither
    assert masks["driven"][:400].all() and masks["quiet"][400:800].all()  # E_a, E_b
    assert masks["driven"][800:900].all() and masks["quiet"][900:1000].all()  # I_a, I_b


def test_half_counters_from_a_checkpoint(bench, tmp_path):
    """Two rank files with interleaved gids, as a 2-rank async run writes them."""
    masks, _ = bench.half_of_gid(HETERO)
    gid = np.arange(1000)
    steps = np.where(masks["driven"][:1000], 300, 100)
    rhs = 2 * steps + 1
    for rank, sel in enumerate((gid % 2 == 0, gid % 2 == 1)):
        ckpt.write_rank_part(tmp_path, 199, rank, {"gid": gid[sel], "count/steps": steps[sel], "count/rhs": rhs[sel]})
    ckpt.commit(tmp_path, 199, 2, {"spec_digest": "x", "simulated_ms": 199.0})
    h = bench.half_counters(tmp_path, masks)
    assert h["at_ms"] == 199.0 and h["step"] == 199
    assert h["driven"] == {"n": 500, "steps_per_neuron": 300.0, "rhs_evals_per_neuron": 601.0}
    assert h["quiet"] == {"n": 500, "steps_per_neuron": 100.0, "rhs_evals_per_neuron": 201.0}
    assert h["all"]["steps_per_neuron"] == 200.0
    assert bench.half_counters(tmp_path / "none", masks) is None


def test_hetero_trend(bench):
    rows = [{"spread": s, "ratio_run": r, "ratio_steps": st} for s, r, st in ((0.0, 2.0, 0.1), (0.5, 1.5, 0.09), (1.0, 1.0, 0.11))]
    t = bench.hetero_trend(rows)
    assert t["grows_run"] and t["monotone_run"] and t["run_ratio_change"] == pytest.approx(0.5)
    assert not t["grows_steps"] and not t["monotone_steps"]
    assert bench.hetero_trend(rows[:1]) == {"grows": None}
    assert math.isclose(t["steps_ratio_change"], 1.1)


def test_decoupled_empties_exactly_the_cross_half_projections(bench):
    from cluster_sim.spec import load_spec

    half = {p: h for h, pops in bench.HALVES.items() for p in pops}
    spec = load_spec(HETERO, bench.CROSS_HALF)
    base = load_spec(HETERO)
    assert len(bench.CROSS_HALF) == 8 and len(spec.projections) == len(base.projections) == 20  # no new (misnamed) table
    for pr in spec.projections:
        if pr.source in half and half[pr.source] != half[pr.target]:
            assert pr.connect.p == 0.0, pr.name
        else:
            assert pr.connect == next(b for b in base.projections if b.name == pr.name).connect, pr.name
