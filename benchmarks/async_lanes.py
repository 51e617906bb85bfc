"""The async BDF kernel alone (``cluster_sim.asyncmode.bdf``): cost of one loop iteration against
the batch size B, on the COBAHH neurons of ``jobs/cobahh_poisson.toml`` with no input events
(every lane live for every iteration), so that time = fixed cost per iteration + B x cost per
lane-iteration. Tells whether the async integrate is dispatch bound (small batches) or bound by
the per-lane work of an iteration (large ones).

    python benchmarks/async_lanes.py            # B = 40 .. 1032, 30 iterations per call, 5 calls each
    python benchmarks/async_lanes.py --quick    # B = 40, 264, 1032; 3 calls each
    python benchmarks/async_lanes.py --baseline /tmp/base/cluster_sim/asyncmode/bdf.py [--quick]
        # paired: this kernel and another version of bdf.py (e.g. a git worktree of an earlier
        # commit) built in one process, their calls alternated 40 times per B (medians)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, md_table, med, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def measure(batches: list[int], iters: int, calls: int) -> list[dict]:
    from cluster_sim.runtime.device import prepare_environment

    prepare_environment()
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # as the engine: one thread below 64k neurons
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from cluster_sim.asyncmode import bdf, local
    from cluster_sim.asyncmode import engine as eng
    from cluster_sim.asyncmode.backend import _stimuli
    from cluster_sim.network.build import build_network
    from cluster_sim.spec import load_spec

    spec = load_spec(ROOT / "jobs/cobahh_poisson.toml", [])
    net = build_network(spec)
    blk = local.build_local(net, spec.engine.interval_ms).blocks[0]
    kernel = bdf.shared_kernel(blk.model, blk.param_names, _stimuli(net))
    nv, E, rows = blk.y0.shape[1], eng.EVENTS_PER_CALL, []
    for B in batches:
        n = min(B, blk.gid.size)
        pad = B - n
        st = {k: eng._pad(v, pad, k) for k, v in bdf.new_state(blk.y0[:n], 0.0).items()}
        lane = lambda a: eng._pad(a[:n], pad, "params")  # noqa: E731
        args = (np.concatenate([np.full(n, 50.0), np.zeros(pad)]), np.full((B, E), np.inf), np.zeros((B, E, nv)),
                lane(blk.params), lane(blk.amps), lane(blk.thresh), lane(blk.refr), iters, spec.integrator.rtol,
                spec.integrator.atol, np.full((B, 4), np.inf))
        t0 = time.perf_counter()
        st = kernel.advance(st, *args, min_live=0, spike_slots=4)[0]  # compiles; past the restart
        first = time.perf_counter() - t0
        times, n_iter = [], 0
        for _ in range(calls):
            t0 = time.perf_counter()
            out = kernel.advance(dict(st), *args, min_live=0, spike_slots=4)
            times.append(time.perf_counter() - t0)
            n_iter = int(out[2]["iters"].max())
        call = med(times) or 0.0
        rows.append({"B": B, "neurons": n, "first_call_s": first, "call_ms": call * 1e3, "iterations": n_iter,
                     "us_per_iteration": call / max(n_iter, 1) * 1e6,
                     "ns_per_lane_iteration": call / max(n_iter, 1) / B * 1e9})
    return rows


def paired(baseline: str, batches: list[int], iters: int, calls: int) -> list[dict]:
    """Calls of this kernel and of ``baseline`` (a bdf.py file) alternated on the same inputs:
    machine noise (it drifts by ±30 % over minutes here) hits both alike."""
    import importlib.util

    from cluster_sim.runtime.device import prepare_environment

    prepare_environment()
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from cluster_sim.asyncmode import bdf, local
    from cluster_sim.asyncmode import engine as eng
    from cluster_sim.asyncmode.backend import _stimuli
    from cluster_sim.network.build import build_network
    from cluster_sim.spec import load_spec

    spec_ = importlib.util.spec_from_file_location("bdf_baseline", baseline)
    base = importlib.util.module_from_spec(spec_)
    sys.modules[spec_.name] = base  # dataclasses look their module up
    spec_.loader.exec_module(base)
    spec = load_spec(ROOT / "jobs/cobahh_poisson.toml", [])
    net = build_network(spec)
    blk = local.build_local(net, spec.engine.interval_ms).blocks[0]
    nv, E, rows = blk.y0.shape[1], eng.EVENTS_PER_CALL, []
    for B in batches:
        n = min(B, blk.gid.size)
        pad = B - n
        lane = lambda a: eng._pad(a[:n], pad, "params")  # noqa: E731
        args = (np.concatenate([np.full(n, 50.0), np.zeros(pad)]), np.full((B, E), np.inf), np.zeros((B, E, nv)),
                lane(blk.params), lane(blk.amps), lane(blk.thresh), lane(blk.refr), iters, spec.integrator.rtol,
                spec.integrator.atol, np.full((B, 1), np.inf))
        runs = []
        for mod in (bdf, base):
            k = mod.BdfKernel(blk.model, blk.param_names, _stimuli(net))
            st = {key: eng._pad(v, pad, key) for key, v in mod.new_state(blk.y0[:n], 0.0).items()}
            runs.append((k, k.advance(st, *args, min_live=0, spike_slots=4)[0], []))  # compiles; past the restart
        for _ in range(calls):
            for k, st, times in runs:
                t0 = time.perf_counter()
                out = k.advance(dict(st), *args, min_live=0, spike_slots=4)
                times.append(time.perf_counter() - t0)
                n_iter = int(out[2]["iters"].max())
        us = [med(times) / max(n_iter, 1) * 1e6 for _, _, times in runs]
        rows.append({"B": B, "us_per_iteration": us[0], "baseline_us_per_iteration": us[1], "ratio": us[0] / us[1]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--baseline", help="another bdf.py to time against, calls alternated in one process")
    a = ap.parse_args()
    batches = [40, 264, 1032] if a.quick else [40, 136, 264, 520, 1032]
    if a.baseline:
        rows = paired(a.baseline, batches, 30, 40)
        print(f"\n## Async BDF kernel vs {a.baseline}, µs per iteration, medians of 40 alternated calls; "
              f"CPU {machine().get('cpu', '?')}\n")
        print(md_table(["B lanes", "this", "baseline", "this / baseline"],
                       [[r["B"], r["us_per_iteration"], r["baseline_us_per_iteration"], r["ratio"]] for r in rows]))
        print(f"wrote {save('async_lanes_paired', {'baseline': a.baseline, 'rows': rows}, a.quick)}")
        return
    rows = measure(batches, 30, 3 if a.quick else 5)
    # Least squares: time per iteration = fixed + B x per lane.
    import numpy as np

    B = np.array([r["B"] for r in rows], float)
    t = np.array([r["us_per_iteration"] for r in rows])
    per_lane, fixed = np.polyfit(B, t, 1)
    print(f"\n## Async BDF kernel, one loop iteration vs batch size (COBAHH neurons, no events); CPU {machine().get('cpu', '?')}\n")
    print(md_table(["B lanes", "call ms", "iterations", "µs per iteration", "ns per lane-iteration", "first call s"],
                   [[r["B"], r["call_ms"], r["iterations"], r["us_per_iteration"], r["ns_per_lane_iteration"],
                     r["first_call_s"]] for r in rows]))
    print(f"\nfit: {fixed:.1f} µs fixed per iteration + {per_lane * 1e3:.0f} ns per lane")
    path = save("async_lanes", {"rows": rows, "fixed_us": fixed, "per_lane_ns": per_lane * 1e3}, a.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
