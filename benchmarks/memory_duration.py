"""Peak RSS of cluster-sim vs simulated duration: COBAHH N = 4000 over T and 10·T (200 ms and
2000 ms), recording 5 neurons' v at 0.1 ms (``recordings.v_E`` of ``jobs/cobahh.toml``) and all
spikes. A simulator that keeps no trajectory should need (almost) the same memory for both.
Target: peak RSS(10·T) / peak RSS(T) ≤ 1.1. Each run in a fresh process, interleaved; peak RSS
= ru_maxrss of the worker.

    python benchmarks/memory_duration.py           # 200 / 2000 ms, 3 repetitions
    python benchmarks/memory_duration.py --quick   # 50 / 500 ms, 1 repetition
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cobahh_overrides, interleaved, md_table, med, med_of, run_cluster_sim, save, worker_main  # noqa: E402


def w_cluster_sim(cfg: dict) -> dict:
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_mem_") as d:
        out = run_cluster_sim("cobahh.toml", cobahh_overrides(cfg["n"], cfg["t_ms"], cfg.get("precision", "float64")), d)
        out["output_files_mb"] = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / 2 ** 20
    return out


def w_baseline(cfg: dict) -> dict:
    """Peak RSS of the fixed costs alone: TensorFlow imported (what='tf'), plus one tiny
    XLA-compiled function (what='tf+xla')."""
    import time

    t0 = time.perf_counter()
    from cluster_sim.runtime.device import prepare_environment

    prepare_environment()
    import tensorflow as tf

    if cfg["what"] == "tf+xla":
        f = tf.function(lambda x: tf.exp(x) * 2.0 + 1.0, jit_compile=True)
        f(tf.ones([4000], tf.float64)).numpy()
    return {"startup_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    a = ap.parse_args()
    t_short = 50.0 if a.quick else 200.0
    reps = a.reps or (1 if a.quick else 3)
    ts = [t_short, 10 * t_short]
    cfgs = [{"impl": "cs", "n": 4000, "t_ms": t} for t in ts]
    label = lambda c: f"cluster-sim N={c['n']} {c['t_ms']:.0f} ms"  # noqa: E731
    base_cfgs = [{"impl": "baseline", "what": w} for w in ("tf", "tf+xla")]
    res = interleaved(Path(__file__), cfgs + base_cfgs, reps,
                      lambda c: label(c) if c["impl"] == "cs" else f"baseline: {c['what']}")
    rows, summ = [], {}
    for c in cfgs:
        rs = res[label(c)]
        s = {k: med_of(rs, k) for k in ("rss_mb", "run_s", "startup_s", "output_files_mb", "n_spikes")}
        s["rss_all"] = [r.get("rss_mb") for r in rs]
        s["errors"] = [r["error"] for r in rs if "error" in r]
        summ[label(c)] = s
        rows.append([c["t_ms"], s["rss_mb"], s["run_s"], s["startup_s"], s["n_spikes"], s["output_files_mb"]])
    short, long_ = (summ[label(c)] for c in cfgs)
    paired = [b["rss_mb"] / a_["rss_mb"] for a_, b in zip(res[label(cfgs[0])], res[label(cfgs[1])])
              if "error" not in a_ and "error" not in b]
    ratio = long_["rss_mb"] / short["rss_mb"] if short["rss_mb"] and long_["rss_mb"] else None
    print(f"\n## cluster-sim peak RSS vs duration, COBAHH N=4000 (medians of {reps})\n")
    print(md_table(["simulated ms", "peak RSS MB", "run s", "startup s", "spikes", "output files MB"], rows))
    print(f"\npeak RSS ratio {ts[1]:.0f} ms / {ts[0]:.0f} ms: {ratio and round(ratio, 3)} "
          f"(paired median {med(paired) and round(med(paired), 3)}; target ≤ 1.1)")
    path = save("memory_duration", {"durations_ms": ts, "reps": reps, "summary": summ, "ratio": ratio,
                                    "ratio_paired_median": med(paired), "raw": res}, a.quick)
    brow = [[k.split(": ")[1], med_of(v, "rss_mb"), med_of(v, "startup_s")] for k, v in res.items() if k.startswith("baseline")]
    print("\nFixed costs (no simulation):\n")
    print(md_table(["process", "peak RSS MB", "s"], brow))
    print(f"wrote {path}")


if __name__ == "__main__":
    if not worker_main({"cs": w_cluster_sim, "baseline": w_baseline}):
        main()
