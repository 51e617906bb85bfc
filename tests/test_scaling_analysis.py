"""cluster_sim.analysis.scaling: one definition of speedup/efficiency for studies and the
benchmark, the BSP/async table, per-population rates, and plots that carry their context."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from cluster_sim.analysis import scaling as S
from cluster_sim.deploy.results import flat_row

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("bench_scaling", ROOT / "benchmarks" / "scaling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_json(ranks: int, wall: float, n: int) -> dict:
    return {"n_neurons": n, "simulated_ms": 1000.0, "wall_seconds": wall, "ranks": ranks, "mode": "bsp",
            "rates_hz": {"E": 4.0, "I": 12.0}, "phases": {"integrate": wall}}


@pytest.mark.parametrize("kind", ["strong", "weak"])
def test_study_and_benchmark_agree_on_speedup_and_efficiency(kind):
    """The same timings through a study's rows (run.json -> flat_row -> aggregate) and through
    benchmarks/scaling.py's summary give the same numbers, and weak scaling is Gustafson's."""
    walls = {1: 10.0, 2: 12.5}
    n = {1: 8000, 2: 8000 if kind == "strong" else 16000}
    study_rows = [{**flat_row(_run_json(r, w, n[r])), "mode": "bsp", "nodes": 1, "ranks_per_node": r,
                   "state": "COMPLETED"} for r, w in walls.items()]
    study = {a["ranks"]: a for a in S.aggregate(study_rows, kind)}
    bench = _benchmark()
    samples = {r: [{"ranks": r, "neurons": n[r], "rates_hz": {"E": 4.0, "I": 12.0}, "simulated_ms": 1000.0,
                    "run_s": w, "phases": {"integrate": w}}] for r, w in walls.items()}
    table = {r["ranks"]: r for r in bench.summarise(samples, kind)}
    for r in walls:
        assert table[r]["speedup"] == pytest.approx(study[r]["speedup"])
        assert table[r]["efficiency"] == pytest.approx(study[r]["efficiency"])
    if kind == "weak":  # twice the work in 12.5 s instead of once in 10 s
        assert study[2]["speedup"] == pytest.approx(2 * 10.0 / 12.5) and study[2]["efficiency"] == pytest.approx(0.8)
    else:
        assert study[2]["speedup"] == pytest.approx(0.8) and study[2]["efficiency"] == pytest.approx(0.4)


def test_speedup_definitions():
    assert S.speedup_efficiency("strong", 1, 8.0, 4, 2.0) == (4.0, 1.0)
    assert S.speedup_efficiency("weak", 2, 8.0, 8, 8.0) == (4.0, 1.0)
    assert all(math.isnan(x) for x in S.speedup_efficiency("strong", 1, 8.0, 2, 0.0))
    with pytest.raises(ValueError, match="fix"):
        S.speedup_efficiency("diagonal", 1, 1.0, 1, 1.0)


def _rows():
    rows = []
    for mode, factor in (("bsp", 1.0), ("async", 0.5)):
        for ranks, wall in ((1, 80.0), (4, 22.0), (16, 7.0)):
            for rep in (0, 1):
                rows.append({"mode": mode, "nodes": 1, "ranks_per_node": ranks, "state": "COMPLETED",
                             "wall_seconds": factor * wall + rep, "simulated_ms": 500.0, "n_neurons": 4000,
                             "rate_hz_E": 3.0 + rep, "rate_hz_I": 10.0, "phase_integrate": factor * wall,
                             "phase_startup": 2.0, "construction_s": 2.0, "propagation_s": factor * wall - 1.0 + rep})
    return rows


def test_mode_ratio_table_and_population_rates():
    agg = S.aggregate(_rows(), "strong")
    first = next(a for a in agg if a["mode"] == "bsp" and a["ranks"] == 1)
    assert first["rate_hz_E_mean"] == pytest.approx(3.5) and first["rate_hz_I_mean"] == pytest.approx(10.0)
    ratios = S.mode_ratios(agg)
    assert [r["ranks"] for r in ratios] == [1, 4, 16]
    assert ratios[0]["wall_bsp_over_async"] == pytest.approx(80.5 / 40.5)
    md = S.markdown(agg, ratios, scaling="strong", meta="N = 4,000")
    assert "rate E Hz" in md and "rate I Hz" in md and "BSP / async" in md and "N = 4,000" in md


def test_plots_share_axes_log_scale_and_carry_context(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    real = matplotlib.figure.Figure.savefig

    def spy(self, *a, **k):
        saved.append(self)
        return real(self, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    rows = _rows()
    agg = S.aggregate(rows, "strong")
    meta = S.figure_meta(rows, agg, site="param-brahma", scaling="strong")
    assert meta == "N = 4,000, 500 ms simulated, site param-brahma, 2 run(s) per point (mean ± std)"
    paths = S.plot(agg, tmp_path, "strong", meta=meta)
    assert {p.name for p in paths} == {"wall_time.png", "speedup.png", "efficiency.png", "rtf_phases.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    wall = saved[0]
    main, ratio = wall.axes
    assert main.get_yscale() == "log" and main.get_xscale() == "log"  # 3.5..81 s, 1..16 ranks
    labels = [t.get_text() for t in main.get_legend().get_texts()]
    assert labels[:3] == ["bsp: total", "bsp: propagation", "bsp: construction"] and "async: total" in labels
    legend = main.get_legend()
    from matplotlib.colors import to_hex

    for text, handle in zip(legend.get_texts(), legend.legend_handles):
        colour = to_hex(handle.lines[0].get_color() if hasattr(handle, "lines") else handle.get_color())
        assert colour in S.MODE_SHADES[text.get_text().split(":")[0]], text.get_text()  # one hue per mode
    titles = [t.get_text() for t in main.texts]
    assert titles == ["strong scaling: wall time"] and main.texts[0].get_transform() == main.transAxes
    assert [t.get_text() for t in ratio.texts] == ["BSP / async (> 1: async faster)"]
    for fig in saved:
        assert meta in [t.get_text() for t in fig.texts]
    rtf = saved[-1]
    a, b = rtf.axes
    assert a.get_ylim() == b.get_ylim()  # async and BSP bars on one scale
