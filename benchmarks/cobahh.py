"""COBAHH (Brette et al. 2007) N = 4000 and 16000, exponential Euler, dt 0.1 ms, 1 ms delay,
1 s simulated, p = 0.02 and the original weights at both sizes (as in peers_measured.md
"Scaling", so N = 16000 fires less): cluster-sim (float64, float32) vs Brian2 cpp_standalone and
runtime (single-threaded) vs vectorised NumPy, all on the identical network.

Each configuration runs in a fresh subprocess; repetitions are interleaved; medians reported.
Run phase: cluster-sim = phases.integrate + exchange + deliver + io; Brian2 = its own loop
timer; NumPy = the step loop. Startup/build are reported separately.

    python benchmarks/cobahh.py            # full: N = 4000, 16000; 1 s; 3 repetitions
    python benchmarks/cobahh.py --quick    # N = 4000; 200 ms; 1 repetition (smoke test)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (brian2_python, cobahh_overrides, have_matplotlib, interleaved, md_table, med, med_of, plot_path,  # noqa: E402
                     run_cluster_sim, save, single_thread_env, worker_main)

IMPLS = ["cluster-sim f64", "cluster-sim f32", "brian2 cpp_standalone", "brian2 cpp_standalone exp", "brian2 runtime",
         "numpy"]
# Brian2 C++ standalone in both rate formulations (impl_brian2_cobahh.RATES): exprel as in its
# example, and plain exp(...) - 1, the faster one; ratios are reported against the faster.
BRIAN2_CPP = ["brian2 cpp_standalone", "brian2 cpp_standalone exp"]


def w_cluster_sim(cfg: dict) -> dict:
    return run_cluster_sim("cobahh.toml", cobahh_overrides(cfg["n"], cfg["t_ms"], cfg["precision"]),
                           cpu_threads=cfg.get("threads"))


def w_brian2(cfg: dict) -> dict:
    single_thread_env()
    from impl_brian2_cobahh import simulate
    from impl_cobahh_net import cobahh_network

    net = cobahh_network(cfg["n"], cfg["t_ms"])
    sort = cfg.get("sort_by_source", True)
    rates = cfg.get("rates", "exprel")
    bdir = f"/tmp/bench_brian2_cpp_{cfg['n']}_{int(cfg['t_ms'])}_{rates}{'' if sort else '_bytarget'}"
    return simulate(net, cfg["mode"], cfg["t_ms"], build_dir=bdir, sort_by_source=sort, rates=rates)


def w_numpy(cfg: dict) -> dict:
    single_thread_env()
    from impl_cobahh_net import cobahh_network
    from impl_numpy_cobahh import simulate

    return simulate(cobahh_network(cfg["n"], cfg["t_ms"]), cfg["t_ms"])


def r_steps(t_ms: float, dt_ms: float = 0.1) -> int:
    return int(round(t_ms / dt_ms))


def configs(ns: list[int], t_ms: float) -> list[dict]:
    b2py = brian2_python()
    out = []
    for n in ns:
        out += [
            {"impl": "cs", "name": "cluster-sim f64", "n": n, "t_ms": t_ms, "precision": "float64"},
            {"impl": "cs", "name": "cluster-sim f32", "n": n, "t_ms": t_ms, "precision": "float32"},
            {"impl": "brian2", "name": "brian2 cpp_standalone", "mode": "cpp_standalone", "n": n, "t_ms": t_ms,
             "python": b2py, "rates": "exprel"},
            {"impl": "brian2", "name": "brian2 cpp_standalone exp", "mode": "cpp_standalone", "n": n, "t_ms": t_ms,
             "python": b2py, "rates": "exp"},
            {"impl": "brian2", "name": "brian2 runtime", "mode": "runtime", "n": n, "t_ms": t_ms, "python": b2py},
            {"impl": "numpy", "name": "numpy", "n": n, "t_ms": t_ms},
        ]
    return out


def threads_variants(ns: list[int], t_ms: float, reps: int) -> None:
    cfgs = [{"impl": "cs", "name": f"cluster-sim {prec} threads={th or 'default'}", "n": n, "t_ms": t_ms,
             "precision": prec, "threads": th} for n in ns for prec in ("float64", "float32") for th in (None, 1)]
    label = lambda c: f"{c['name']} N={c['n']}"  # noqa: E731
    res = interleaved(Path(__file__), cfgs, reps, label)
    rows = []
    for c in cfgs:
        rs = res[label(c)]
        ok = [r for r in rs if "error" not in r]
        ph = {k: med(r["phases"][k] for r in ok) for k in ok[0]["phases"]} if ok else {}
        rows.append([c["n"], c["precision"], c["threads"] or "default", med_of(rs, "run_s"), ph.get("integrate"),
                     ph.get("deliver"), ph.get("startup"), med_of(rs, "rate_hz"), len(ok)])
    print(f"\n## COBAHH {t_ms:.0f} ms, cluster-sim with TensorFlow's default threads vs cpu_threads=1 (medians of {reps})\n")
    print(md_table(["N", "precision", "threads", "run s", "integrate s", "deliver s", "startup s", "rate Hz", "ok reps"], rows))
    path = save("cobahh_threads", {"t_ms": t_ms, "ns": ns, "reps": reps, "raw": res}, False)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--n", type=int, nargs="*", default=None)
    ap.add_argument("--t-ms", type=float, default=None)
    ap.add_argument("--threads-variants", action="store_true",
                    help="only cluster-sim f64/f32 with TensorFlow's default threads vs cpu_threads=1")
    a = ap.parse_args()
    ns = a.n or ([4000] if a.quick else [4000, 16000])
    if a.threads_variants:
        return threads_variants(ns, a.t_ms or 1000.0, a.reps or 3)
    t_ms = a.t_ms or (200.0 if a.quick else 1000.0)
    reps = a.reps or (1 if a.quick else 3)
    cfgs = configs(ns, t_ms)
    label = lambda c: f"{c['name']} N={c['n']}"  # noqa: E731
    res = interleaved(Path(__file__), cfgs, reps, label)

    rows, summary = [], {}
    for n in ns:
        # The reference is the faster Brian2 C++ formulation (median run phase) at this N.
        cands = [(med_of(res[f"{b} N={n}"], "run_s"), b) for b in BRIAN2_CPP]
        cands = [c for c in cands if c[0]]
        ref_name = min(cands)[1] if cands else BRIAN2_CPP[0]
        ref = res[f"{ref_name} N={n}"]
        ref_run = med_of(ref, "run_s")
        for name in IMPLS:
            rs = res[f"{name} N={n}"]
            ok = [r for r in rs if "error" not in r]
            run = med_of(rs, "run_s")
            # ratio per repetition (same round of the interleaving), then the median
            pair = [a["run_s"] / b["run_s"] for a, b in zip(rs, ref) if "error" not in a and "error" not in b]
            s = {"run_s": run, "run_s_all": [r.get("run_s") for r in ok], "startup_s": med_of(rs, "startup_s"),
                 "build_s": med_of(rs, "build_s"), "rate_hz": med_of(rs, "rate_hz"), "rss_mb": med_of(rs, "rss_mb"),
                 "reference": ref_name, "ratio_vs_brian2_cpp": (run / ref_run) if run and ref_run else None,
                 "ratio_vs_brian2_cpp_paired_median": med(pair), "errors": [r["error"] for r in rs if "error" in r]}
            if name.startswith("cluster-sim") and ok:
                s["phases"] = {k: med(r["phases"][k] for r in ok) for k in ok[0]["phases"]}
                steps = n * r_steps(t_ms)
                s["ns_per_neuron_step_run"] = run / steps * 1e9 if run else None
                ev = med(r.get("synapse_events") for r in ok)
                s["ns_per_synaptic_event_deliver"] = (s["phases"].get("deliver", 0.0) / ev * 1e9) if ev else None
            summary[f"{name} N={n}"] = s
            rows.append([n, name, run, s["startup_s"], s["build_s"], s["rate_hz"], s["rss_mb"], s["ratio_vs_brian2_cpp"],
                         s["ratio_vs_brian2_cpp_paired_median"], len(ok)])
    print(f"\n## COBAHH, {t_ms:.0f} ms simulated, dt 0.1 ms, exp. Euler, delay 1 ms, p = 0.02 (medians of {reps})\n")
    print(md_table(["N", "implementation", "run s", "startup s", "build s", "rate Hz", "peak RSS MB",
                    "run / fastest Brian2 cpp (medians)", "run / fastest Brian2 cpp (paired)", "ok reps"], rows))
    print("fastest Brian2 cpp formulation: " + ", ".join(f"N={n}: {summary[f'cluster-sim f64 N={n}']['reference']}"
                                                         for n in ns))
    print("\ncluster-sim phases (median s):")
    prow = []
    for n in ns:
        for name in IMPLS[:2]:
            ph = summary[f"{name} N={n}"].get("phases") or {}
            sm = summary[f"{name} N={n}"]
            prow.append([n, name] + [ph.get(k) for k in ("startup", "build", "integrate", "exchange", "deliver", "io")]
                        + [sm.get("ns_per_neuron_step_run"), sm.get("ns_per_synaptic_event_deliver")])
    print(md_table(["N", "implementation", "startup", "build", "integrate", "exchange", "deliver", "io",
                    "run ns/neuron-step", "deliver ns/synaptic event"], prow))
    print("\nstartup: cluster-sim = TF import + device + kernel tracing/XLA compile; Brian2 cpp build s = "
          "import + network + code generation + C++ compile (make, cached after the first repetition) + binary "
          "start; Brian2 runtime build s = code generation + Cython (cached). Target: cluster-sim run ≤ 0.5× Brian2 cpp.")
    path = save("cobahh", {"t_ms": t_ms, "ns": ns, "reps": reps, "summary": summary, "raw": res}, a.quick)
    print(f"\nwrote {path}")
    if have_matplotlib():
        import matplotlib.pyplot as plt
        import numpy as np

        fig, ax = plt.subplots(figsize=(8, 4))
        w = 0.8 / len(ns)
        for i, n in enumerate(ns):
            vals = [summary[f"{name} N={n}"]["run_s"] or 0 for name in IMPLS]
            ax.bar(np.arange(len(IMPLS)) + i * w, vals, w, label=f"N={n}")
        ax.set_xticks(np.arange(len(IMPLS)) + w * (len(ns) - 1) / 2, IMPLS, rotation=15, fontsize=8)
        ax.set_ylabel(f"run phase s ({t_ms:.0f} ms simulated)")
        ax.set_title("COBAHH, exp. Euler dt 0.1 ms (median)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot_path("cobahh", a.quick), dpi=100)
        print(f"wrote {plot_path('cobahh', a.quick)}")


if __name__ == "__main__":
    if not worker_main({"cs": w_cluster_sim, "brian2": w_brian2, "numpy": w_numpy}):
        main()
