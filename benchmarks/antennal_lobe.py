"""Locust antennal lobe (PSST tutorial network: 90 PN + 30 LN), RK4 at dt 0.01 ms, 1 s
simulated: cluster-sim (``jobs/antennal_lobe.toml``) vs a PSST-style TensorFlow implementation
(``impl_psst_style.py``: dense n² expansion of the synaptic state per RHS call, full trajectory
kept by ``tf.scan`` over all steps, graph mode), on the identical network.

PSST-style over 1 s takes minutes and > 10 GiB (peers_measured.md: 185 s, 13 GiB), so by default
it is measured over 100 and 200 ms and *extrapolated linearly* to 1 s (``--psst-full`` also
measures 1 s directly). Peak RSS = ru_maxrss of each fresh worker process. Targets: cluster-sim
≥ 20× faster (wall), cluster-sim peak RSS ≤ 500 MB.

Also, side by side in the same interleaved run: Brian2 cpp_standalone on the identical network
(``impl_brian2_al.py``, an independent implementation of the PSST equations, in Brian2's own
interpreter, see ``_common.brian2_python``): run-phase ratio (target cluster-sim ≤ 0.5×
Brian2) and statistical agreement of the spikes (population rates, per-neuron spike counts).
And startup of ``cluster-sim run jobs/antennal_lobe.toml`` as a fresh process (run.json's
``phases.startup``: imports + tracing + XLA compile or cache load) with a cold XLA cache (a new
empty folder each time) and a warm one (targets: warm ≤ 5 s, cold ≤ 12 s), and the TensorFlow
import alone, as ``cluster-sim`` does it (without Keras) and plain.

    python benchmarks/antennal_lobe.py            # cs 1 s; PSST-style 100 + 200 ms; 3 repetitions
    python benchmarks/antennal_lobe.py --quick    # cs 100 ms; PSST-style 20 + 40 ms; 1 repetition
    python benchmarks/antennal_lobe.py --skip-psst --reps 3   # cluster-sim, Brian2, startup only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (ROOT, brian2_python, have_matplotlib, interleaved, md_table, med, med_of, plot_path,  # noqa: E402
                     run_cluster_sim, save, single_thread_env, worker_main)

STARTUP_TARGETS_S = {"warm": 5.0, "cold": 12.0}


def w_cluster_sim(cfg: dict) -> dict:
    overrides = [f"simulation.duration_ms={cfg['t_ms']}", *cfg.get("overrides", [])]
    if not cfg.get("counts"):
        return run_cluster_sim("antennal_lobe.toml", overrides)
    import numpy as np

    from cluster_sim.record.spikes import read_spikes

    with tempfile.TemporaryDirectory(prefix="bench_al_") as out:
        res = run_cluster_sim("antennal_lobe.toml", overrides, out_dir=out)
        spikes = read_spikes(Path(out) / "spikes.h5")
    sizes = {"PN": 90, "LN": 30}
    res["counts"] = {p: np.bincount(spikes[p][1].astype(np.int64), minlength=sizes[p]).tolist() for p in sizes}
    return res


def w_brian2(cfg: dict) -> dict:
    single_thread_env()
    from impl_brian2_al import simulate

    with tempfile.TemporaryDirectory(prefix="bench_b2al_") as build:
        return simulate(cfg["net_npz"], cfg["t_ms"], build)


def w_startup(cfg: dict) -> dict:
    """A fresh ``cluster-sim run`` process: its run.json startup phase (same kernels as the 1 s
    job: one interval shape), with the XLA cache folder the config names."""
    cache = cfg["cache_dir"] if cfg["cache"] == "warm" else tempfile.mkdtemp(prefix="bench_xla_cold_")
    with tempfile.TemporaryDirectory(prefix="bench_al_start_") as out:
        env = {**os.environ, "CLUSTER_SIM_XLA_CACHE": cache}
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "cluster_sim.cli", "run", str(ROOT / "jobs" / "antennal_lobe.toml"),
                            "--out", out, "--quiet", "--set", "simulation.duration_ms=10"],
                           capture_output=True, text=True, cwd=ROOT, env=env)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            return {"error": p.stderr[-2000:]}
        info = json.loads((Path(out) / "run.json").read_text())
    return {"startup_s": info["phases"]["startup"], "process_wall_s": wall, "xla_cache": info["xla_cache"]}


def w_tf_import(cfg: dict) -> dict:
    code = ("import time, sys\nt = time.perf_counter()\n"
            + ("from cluster_sim.runtime.tflog import import_tensorflow\nimport_tensorflow()\n" if cfg["how"] == "cluster-sim"
               else "import tensorflow\n")
            + "print(time.perf_counter() - t, int('keras' in sys.modules), int('matplotlib' in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    secs, keras, mpl = p.stdout.split()[-3:]
    return {"import_s": float(secs), "keras": bool(int(keras)), "matplotlib": bool(int(mpl))}


def agreement(cs: list[dict], b2: list[dict]) -> dict:
    """Spikes of two independent implementations of one network, statistically: population
    rates (medians over repetitions) and the Pearson correlation of per-neuron spike counts."""
    import numpy as np

    out: dict = {}
    for pop in ("PN", "LN"):
        a = np.array([r["counts"][pop] for r in cs if "counts" in r], float)
        b = np.array([r["counts"][pop] for r in b2 if "counts" in r], float)
        if not a.size or not b.size:
            continue
        ra, rb = float(np.median(a.sum(1))) / a.shape[1], float(np.median(b.sum(1))) / b.shape[1]
        ca, cb = a.mean(0), b.mean(0)
        r = float(np.corrcoef(ca, cb)[0, 1]) if ca.std() > 0 and cb.std() > 0 else None
        rel = abs(ra - rb) / rb if rb > 0 else (0.0 if ra == 0 else float("inf"))
        out[pop] = {"spikes_per_neuron_cs": ra, "spikes_per_neuron_brian2": rb, "rate_rel_diff": rel,
                    "count_correlation": r,
                    # None: no spikes in either (e.g. --quick ends before the odor drives any)
                    "agree": None if ra == rb == 0 else (rel <= 0.25 and r is not None and r >= 0.7)}
    return out


def brian2_and_startup(t_full: float, reps: int) -> dict:
    """cluster-sim (warm cache) and Brian2 cpp_standalone on the identical network, interleaved;
    then startup with a cold and a warm XLA cache, and the TensorFlow import."""
    from impl_al_net import export_al_network

    work = Path(tempfile.mkdtemp(prefix="bench_al_"))
    net_npz = export_al_network(work / "al_net.npz", [f"simulation.duration_ms={t_full}"])
    warm = work / "xla_warm"
    os.environ["CLUSTER_SIM_XLA_CACHE"] = str(warm)  # every cluster-sim worker below: warm after the first
    b2py = brian2_python()
    have_b2 = subprocess.run([b2py, "-c", "import brian2"], capture_output=True).returncode == 0
    run_w = w_startup({"cache": "warm", "cache_dir": str(warm)})  # warms the cache (not measured)
    if "error" in run_w:
        print(f"cluster-sim failed: {run_w['error']}", file=sys.stderr)
    cfgs = [{"impl": "cs", "name": "cluster-sim", "t_ms": t_full, "counts": True}]
    if have_b2:
        cfgs.append({"impl": "brian2", "name": "brian2 cpp_standalone", "t_ms": t_full, "net_npz": str(net_npz),
                     "python": b2py})
    else:
        print(f"Brian2 does not import in {b2py}: Brian2 comparison skipped (see _common.brian2_python)", file=sys.stderr)
    cfgs += [{"impl": "startup", "name": f"startup {c}", "cache": c, "cache_dir": str(warm)} for c in ("cold", "warm")]
    cfgs += [{"impl": "tf_import", "name": f"import tensorflow ({h})", "how": h} for h in ("cluster-sim", "plain")]
    res = interleaved(Path(__file__), cfgs, reps, lambda c: c["name"], timeout=3600)
    cs, b2 = res["cluster-sim"], res.get("brian2 cpp_standalone", [])
    rows = [["cluster-sim (warm XLA cache)", med_of(cs, "run_s"), med_of(cs, "startup_s"), med_of(cs, "wall_total_s"),
             (cs[0].get("rates_hz") or {}).get("PN") if cs and "error" not in cs[0] else None,
             (cs[0].get("rates_hz") or {}).get("LN") if cs and "error" not in cs[0] else None]]
    if b2:
        rows.append(["Brian2 cpp_standalone", med_of(b2, "run_s"), med_of(b2, "build_s"), med_of(b2, "wall_total_s"),
                     (b2[0].get("rates_hz") or {}).get("PN") if "error" not in b2[0] else None,
                     (b2[0].get("rates_hz") or {}).get("LN") if "error" not in b2[0] else None])
    print(f"\n## Antennal lobe {t_full:.0f} ms, cluster-sim vs Brian2 cpp_standalone (medians of {reps})\n")
    print(md_table(["implementation", "run s", "startup/build s", "process wall s", "PN Hz", "LN Hz"], rows))
    # the ratio of the medians, and the median of per-repetition ratios (pairs run back to back)
    pairs = [a["run_s"] / b["run_s"] for a, b in zip(cs, b2) if "error" not in a and "error" not in b]
    ratio = (med_of(cs, "run_s") / med_of(b2, "run_s")) if b2 and med_of(b2, "run_s") else None
    agree = agreement(cs, b2) if b2 else {}
    if ratio is not None:
        print(f"\nrun phase cluster-sim / Brian2: {ratio:.2f} (ratio of medians; per-pair median {med(pairs):.2f}; "
              "target ≤ 0.5)")
    for pop, a in agree.items():
        print(f"{pop}: spikes/neuron cs {a['spikes_per_neuron_cs']:.2f} vs Brian2 {a['spikes_per_neuron_brian2']:.2f} "
              f"(rel. diff {a['rate_rel_diff']:.2f}), per-neuron count correlation {a['count_correlation']}: "
              f"{ {True: 'agree', False: 'DO NOT AGREE', None: 'no spikes to compare'}[a['agree']]} "
              "(criterion: rates within 25 %, r ≥ 0.7)")
    st = {c: res[f"startup {c}"] for c in ("cold", "warm")}
    srows = [[f"{c} XLA cache", med_of(st[c], "startup_s"), med_of(st[c], "process_wall_s"), STARTUP_TARGETS_S[c],
              all(r.get("xla_cache", {}).get("hit") == (c == "warm") for r in st[c] if "error" not in r)] for c in st]
    imp = {h: res[f"import tensorflow ({h})"] for h in ("cluster-sim", "plain")}
    print(f"\n## Startup of `cluster-sim run jobs/antennal_lobe.toml`, fresh process (medians of {reps})\n")
    print(md_table(["cache", "startup s (run.json)", "process wall s", "target s", "run.json hit as expected"], srows))
    for h, rs in imp.items():
        ok = [r for r in rs if "error" not in r]
        print(f"import tensorflow ({h}): {med_of(rs, 'import_s') and round(med_of(rs, 'import_s'), 2)} s, "
              f"keras loaded: {ok[0]['keras'] if ok else None}, matplotlib loaded: {ok[0]['matplotlib'] if ok else None}")
    return {"raw": res, "run_ratio_cs_over_brian2": ratio, "run_ratio_pairs": pairs, "agreement": agree,
            "startup_s": {c: med_of(st[c], "startup_s") for c in st}, "startup_targets_s": STARTUP_TARGETS_S,
            "tf_import_s": {h: med_of(rs, "import_s") for h, rs in imp.items()}}


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
    ap.add_argument("--skip-psst", action="store_true", help="only cluster-sim, Brian2 and startup")
    a = ap.parse_args()
    t_full = 100.0 if a.quick else 1000.0
    psst_ts = [20.0, 40.0] if a.quick else [100.0, 200.0]
    reps = a.reps or (1 if a.quick else 3)
    if a.engine_variants:
        return engine_variants(t_full, reps)
    vs_brian2 = brian2_and_startup(t_full, reps)
    if a.skip_psst:
        path = save("antennal_lobe_brian2_startup", {"t_full_ms": t_full, "reps": reps, **vs_brian2}, a.quick)
        print(f"\nwrote {path}")
        return
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
                                  "psst_extrapolated": extra, "ratios": ratios, "raw": res, "vs_brian2": vs_brian2},
                a.quick)
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
    if not worker_main({"cs": w_cluster_sim, "psst": w_psst, "brian2": w_brian2, "startup": w_startup,
                        "tf_import": w_tf_import}):
        main()
