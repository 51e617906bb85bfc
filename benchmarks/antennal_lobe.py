"""Locust antennal lobe (PSST tutorial network: 90 PN + 30 LN), RK4 at dt 0.01 ms, 1 s
simulated: cluster-sim (``jobs/antennal_lobe.toml``) vs a PSST-style TensorFlow implementation
(``impl_psst_style.py``: dense n² expansion of the synaptic state per RHS call, full trajectory
kept by ``tf.scan`` over all steps, graph mode), on the identical network.

PSST-style over 1 s takes minutes and > 10 GiB (peers_measured.md: 185 s, 13 GiB), so by default
it is measured over 100 and 200 ms and *extrapolated linearly* to 1 s (``--psst-full`` also
measures 1 s directly). Peak RSS = ru_maxrss of each fresh worker process. Targets: cluster-sim
≥ 20× faster (wall), cluster-sim peak RSS ≤ 500 MB.

    python benchmarks/antennal_lobe.py            # cs 1 s; PSST-style 100 + 200 ms; 3 repetitions
    python benchmarks/antennal_lobe.py --quick    # cs 100 ms; PSST-style 20 + 40 ms; 1 repetition
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import have_matplotlib, interleaved, md_table, med, med_of, plot_path, run_cluster_sim, save, worker_main  # noqa: E402


def w_cluster_sim(cfg: dict) -> dict:
    return run_cluster_sim("antennal_lobe.toml", [f"simulation.duration_ms={cfg['t_ms']}", *cfg.get("overrides", [])])


def w_psst(cfg: dict) -> dict:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from impl_psst_style import simulate

    return simulate(cfg["t_ms"])


def linfit(xs: list[float], ys: list[float | None]) -> tuple[float, float] | None:
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len(pts) < 2:
        return None
    import numpy as np

    b, a = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
    return float(a), float(b)


def engine_variants(t_ms: float, reps: int) -> None:
    cfgs = [{"impl": "cs", "name": f"cluster-sim loop={lp} jit={jit} interval={iv} ms", "t_ms": t_ms,
             "overrides": [f'engine.loop="{lp}"', f"engine.jit_compile={jit}", f"engine.interval_ms={iv}"]}
            for lp, jit, iv in (("while", "true", 1.0), ("scan", "true", 1.0), ("while", "false", 1.0),
                                ("while", "true", 10.0))]
    res = interleaved(Path(__file__), cfgs, reps, lambda c: c["name"], timeout=3600)
    rows = []
    for c in cfgs:
        rs = res[c["name"]]
        ok = [r for r in rs if "error" not in r]
        ph = {k: med(r["phases"][k] for r in ok) for k in ok[0]["phases"]} if ok else {}
        rows.append([c["name"], med_of(rs, "run_s"), ph.get("startup"), med_of(rs, "wall_total_s"), med_of(rs, "rss_mb"),
                     len(ok)])
    print(f"\n## Antennal lobe {t_ms:.0f} ms, cluster-sim engine variants (medians of {reps})\n")
    print(md_table(["variant", "run s", "startup s", "process wall s", "peak RSS MB", "ok reps"], rows))
    path = save("antennal_lobe_engine_variants", {"t_ms": t_ms, "reps": reps, "raw": res}, False)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--psst-full", action="store_true", help="also run PSST-style over the full duration")
    ap.add_argument("--engine-variants", action="store_true",
                    help="only cluster-sim, with engine.loop = while/scan and engine.jit_compile = on/off")
    a = ap.parse_args()
    t_full = 100.0 if a.quick else 1000.0
    psst_ts = [20.0, 40.0] if a.quick else [100.0, 200.0]
    reps = a.reps or (1 if a.quick else 3)
    if a.engine_variants:
        return engine_variants(t_full, reps)
    cfgs = [{"impl": "cs", "name": "cluster-sim", "t_ms": t_full}]
    cfgs += [{"impl": "psst", "name": "psst-style", "t_ms": t} for t in psst_ts]
    if a.psst_full:
        cfgs.append({"impl": "psst", "name": "psst-style", "t_ms": t_full})
    label = lambda c: f"{c['name']} {c['t_ms']:.0f} ms"  # noqa: E731
    res = interleaved(Path(__file__), cfgs, reps, label, timeout=3600)

    summ = {}
    for key, rs in res.items():
        ok = [r for r in rs if "error" not in r]
        s = {k: med_of(rs, k) for k in ("run_s", "build_s", "startup_s", "wall_total_s", "rss_mb", "ms_per_step")}
        s["rates_hz"] = {p: med(r["rates_hz"][p] for r in ok) for p in ("PN", "LN")} if ok else None
        s["errors"] = [r["error"] for r in rs if "error" in r]
        if ok and "phases" in ok[0]:
            s["phases"] = {k: med(r["phases"][k] for r in ok) for k in ok[0]["phases"]}
        summ[key] = s
    cs = summ[f"cluster-sim {t_full:.0f} ms"]
    ps = [summ[f"psst-style {t:.0f} ms"] for t in psst_ts]
    extra = {}
    for k in ("run_s", "wall_total_s", "rss_mb", "build_s"):
        fit = linfit(psst_ts, [p[k] for p in ps])
        extra[k] = (fit[0] + fit[1] * t_full) if fit else None
        extra[k + "_fit"] = fit
    measured_full = summ.get(f"psst-style {t_full:.0f} ms")

    rows = [["cluster-sim", t_full, "measured", cs["run_s"], cs["startup_s"], cs["wall_total_s"], cs["rss_mb"],
             (cs["rates_hz"] or {}).get("PN"), (cs["rates_hz"] or {}).get("LN")]]
    for t, p in zip(psst_ts, ps):
        rows.append(["PSST-style", t, "measured", p["run_s"], p["build_s"], p["wall_total_s"], p["rss_mb"],
                     (p["rates_hz"] or {}).get("PN"), (p["rates_hz"] or {}).get("LN")])
    if measured_full:
        p = measured_full
        rows.append(["PSST-style", t_full, "measured", p["run_s"], p["build_s"], p["wall_total_s"], p["rss_mb"],
                     (p["rates_hz"] or {}).get("PN"), (p["rates_hz"] or {}).get("LN")])
    rows.append(["PSST-style", t_full, "EXTRAPOLATED (linear fit)", extra["run_s"], extra["build_s"], extra["wall_total_s"],
                 extra["rss_mb"], None, None])
    print(f"\n## Antennal lobe, RK4 dt 0.01 ms (medians of {reps})\n")
    print(md_table(["implementation", "simulated ms", "how", "run s", "startup/build s", "process wall s", "peak RSS MB",
                    "PN Hz", "LN Hz"], rows))
    psst_run = measured_full["run_s"] if measured_full else extra["run_s"]
    psst_wall = measured_full["wall_total_s"] if measured_full else extra["wall_total_s"]
    cs_run = cs["run_s"]
    ratios = {
        "run_phase_speedup": (psst_run / cs_run) if psst_run and cs_run else None,
        "process_wall_speedup": (psst_wall / cs["wall_total_s"]) if psst_wall and cs["wall_total_s"] else None,
        "psst_basis": "measured" if measured_full else "extrapolated",
        "cs_rss_mb": cs["rss_mb"], "cs_rss_target_mb": 500,
    }
    print(f"\nPSST-style / cluster-sim at {t_full:.0f} ms ({ratios['psst_basis']} PSST-style): "
          f"run phase {ratios['run_phase_speedup'] and round(ratios['run_phase_speedup'], 2)}×, "
          f"whole process wall {ratios['process_wall_speedup'] and round(ratios['process_wall_speedup'], 2)}× "
          f"(target ≥ 20×); cluster-sim peak RSS {cs['rss_mb'] and round(cs['rss_mb'])} MB (target ≤ 500 MB)")
    if cs.get("phases"):
        print("cluster-sim phases (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in cs["phases"].items()))
    path = save("antennal_lobe", {"t_full_ms": t_full, "psst_points_ms": psst_ts, "reps": reps, "summary": summ,
                                  "psst_extrapolated": extra, "ratios": ratios, "raw": res}, a.quick)
    print(f"\nwrote {path}")
    if have_matplotlib():
        import matplotlib.pyplot as plt

        fig, axs = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, k, unit in ((axs[0], "run_s", "run s"), (axs[1], "rss_mb", "peak RSS MB")):
            ax.plot(psst_ts, [p[k] for p in ps], "o", label="PSST-style measured")
            fit = extra[k + "_fit"]
            if fit:
                ax.plot([0, t_full], [fit[0], fit[0] + fit[1] * t_full], "--", label="PSST-style linear extrapolation")
            if measured_full:
                ax.plot([t_full], [measured_full[k]], "s", label="PSST-style measured (full)")
            ax.plot([t_full], [cs[k]], "*", ms=12, label="cluster-sim")
            ax.set_xlabel("simulated ms")
            ax.set_ylabel(unit)
        axs[0].legend(fontsize=7)
        fig.suptitle("Locust AL, RK4 dt 0.01 ms")
        fig.tight_layout()
        fig.savefig(plot_path("antennal_lobe", a.quick), dpi=100)
        print(f"wrote {plot_path('antennal_lobe', a.quick)}")


if __name__ == "__main__":
    if not worker_main({"cs": w_cluster_sim, "psst": w_psst}):
        main()
