"""The compiled interval alone (``cluster_sim.engine.kernel.IntervalKernel``): COBAHH exp. Euler,
dt 0.1 ms, 10 steps per call (one 1 ms interval), for ``loop`` = "while" | "scan" ×
``jit_compile`` on | off × float64 | float32, N = 4000 and 64000. Reports ns per neuron-step:

* ``call``: the compiled function on device tensors (``kernel.call``, feeds made once) — the step itself;
* ``run``: ``kernel.run`` as the engine calls it (inputs host→device, spikes/samples →NumPy).

and the first-call (trace + compile) time, which lands in the engine's startup phase.
TensorFlow threads are set as the engine sets them (``cpu_threads_for``: one per 64k neurons,
so 1 at N = 4000, 2 at N = 64000 on 2 cores).
Within one worker process the four (loop, jit) variants are interleaved round by round; the
workers (one per N × precision) are fresh processes, repeated and interleaved. Synapses do not
enter the kernel (spike input arrives as a dense [steps, n] tensor, zero here), so the network
is built with in-degree 80 (p = 0.02 at N = 4000; p = 320/N at larger N) to keep build cheap.

    python benchmarks/kernel_loop.py           # N = 4000, 64000; 2 processes each
    python benchmarks/kernel_loop.py --quick   # N = 4000; 1 process
    python benchmarks/kernel_loop.py --compaction  # spike compaction: inside XLA vs NumPy on the host
    python benchmarks/kernel_loop.py --vector-width  # LLVM's preferred vector width, 256 vs 512 bits
    python benchmarks/kernel_loop.py --fusion        # XLA fusion configurations (RK4: AL, cobahh_poisson)

``--compaction`` measures, on the dense [10, N] spike-time array one interval returns (NaN where
no spike, 0.2 % spiking as COBAHH), turning it into a count + index/time buffer inside a compiled
function (cumsum + scatter, what a compact kernel output costs) against the host's
``np.nonzero(~np.isnan(...))``, interleaved in one process.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cobahh_overrides, have_matplotlib, interleaved, machine, md_table, med, plot_path, save, worker_main  # noqa: E402

VARIANTS = [("while", True), ("scan", True), ("while", False), ("scan", False)]
M = 10  # steps per interval (1 ms delay / 0.1 ms)


def w_kernel(cfg: dict) -> dict:
    import os

    from cluster_sim.runtime.device import prepare_environment

    if cfg.get("vector_width"):  # the user's flag: prepare_environment leaves it as given
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_prefer_vector_width={cfg['vector_width']}"
    prepare_environment()
    import numpy as np
    import tensorflow as tf

    from _common import cluster_sim_spec
    from cluster_sim.engine.kernel import IntervalKernel, initial_state
    from cluster_sim.network.build import build_network

    n = cfg["n"]
    p = min(0.02, 320.0 / n)
    extra = [f"projections.{k}.connect.p={p}" for k in ("EE", "EI", "IE", "II")]
    spec = cluster_sim_spec("cobahh.toml", cobahh_overrides(n, 1000.0, cfg["precision"], extra))
    # Threads as the engine chooses them (runtime.threads.cpu_threads_for, where it exists), unless
    # cfg["threads"] says otherwise (0 = TensorFlow's own default).
    threads = cfg.get("threads")
    if threads is None:
        try:
            from cluster_sim.runtime.threads import cpu_threads_for

            threads = cpu_threads_for(spec, 1, None)
        except ImportError:
            threads = 0
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    net = build_network(spec)
    out: dict = {"n": n, "precision": cfg["precision"], "variants": {}}
    kernels, states, zeros = {}, {}, {}
    for loop, jit in cfg.get("variants", VARIANTS):
        key = f"{loop} jit={'on' if jit else 'off'}"
        k = IntervalKernel(net, precision=cfg["precision"], method="exp_euler", dt_ms=0.1, jit_compile=jit, loop=loop)
        zeros[key] = k.pack_inputs({kk: np.zeros((M, net.populations[kk.split('.')[0]].local.size))
                                    for kk in k.layout.event_keys}, M)
        st = k.to_device(initial_state(net))
        t0 = time.perf_counter()
        st = k.run(st, 0, M, zeros[key]).state
        out["variants"][key] = {"first_call_s": time.perf_counter() - t0, "call_ns": [], "run_ns": []}
        kernels[key], states[key] = k, st
    iters = cfg["iters"]
    neuron_steps = iters * M * n
    step = M
    for _ in range(cfg["rounds"]):
        for key, k in kernels.items():
            st = states[key]
            fd = k.feeds(step, M, zeros[key])
            t0 = time.perf_counter()
            for _i in range(iters):
                st, spk, smp, fin = k.call(st, fd)
            next(iter(st.values())).numpy()
            out["variants"][key]["call_ns"].append((time.perf_counter() - t0) / neuron_steps * 1e9)
            t0 = time.perf_counter()
            s0 = step
            for _i in range(iters):
                st = k.run(st, s0, M, zeros[key]).state
                s0 += M
            out["variants"][key]["run_ns"].append((time.perf_counter() - t0) / neuron_steps * 1e9)
            states[key] = st
    for v in out["variants"].values():
        v["call_ns_median"] = med(v["call_ns"])
        v["run_ns_median"] = med(v["run_ns"])
    out["threads"] = {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                      "inter": tf.config.threading.get_inter_op_parallelism_threads()}
    return out


# How XLA fuses the RK4 step (``--fusion``): the flags and kernel options of each configuration.
# "classic": XLA's default fusion (shared stage expressions duplicated into every fusion);
# "materialize": the stage derivatives gathered once (stop 21, the fallback without multi-output
# fusion); "multi_output": XLA:CPU's multi-output fusion, cluster-sim's default (runtime/device.py).
FUSIONS = {"classic": ("xla_cpu_default_fusion=1", False), "materialize": ("xla_cpu_default_fusion=1", True), "multi_output": (None, None)}


def w_fusion(cfg: dict) -> dict:
    """One job's compiled interval (1000 steps per call, one thread) under one fusion
    configuration, and with graded projections summed as the kernel chooses or always ELL."""
    import os

    from cluster_sim.runtime.device import prepare_environment

    extra, materialize = FUSIONS[cfg["fusion"]]
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_backend_extra_options")]
    if extra is not None:  # the user's flag (a key=value XLA:CPU does not read): prepare_environment leaves it as given
        flags.append(f"--xla_backend_extra_options={extra}")
    os.environ["XLA_FLAGS"] = " ".join(flags)
    prepare_environment()
    import numpy as np
    import tensorflow as tf

    from _common import cluster_sim_spec
    from cluster_sim.engine import kernel as kmod
    from cluster_sim.network.build import build_network

    if cfg["graded"] == "ell":
        kmod.DENSE_MIN_FILL = float("inf")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    spec = cluster_sim_spec(cfg["job"], [f'integrator.precision="{cfg["precision"]}"'])
    net = build_network(spec)
    m = 1000
    k = kmod.IntervalKernel(net, precision=cfg["precision"], method=spec.integrator.method, dt_ms=spec.integrator.dt_ms,
                            materialize_stages=materialize)
    zeros = k.pack_inputs({kk: np.zeros((m, net.populations[kk.split('.')[0]].local.size))
                           for kk in k.layout.event_keys}, m)
    t0 = time.perf_counter()
    state = k.run(k.to_device(kmod.initial_state(net)), 0, m, zeros).state
    first = time.perf_counter() - t0
    us = []
    for r in range(cfg["rounds"]):
        t0 = time.perf_counter()
        state = k.run(state, (r + 1) * m, m, zeros).state
        us.append((time.perf_counter() - t0) / m * 1e6)
    final = {key: v.tolist() for key, v in k.to_host(state).items()}
    return {"first_call_s": first, "us_per_step": us, "n_neurons": sum(p.local.size for p in net.populations.values()),
            "materialize": k.materialize_stages, "flags": os.environ.get("XLA_FLAGS", ""), "final": final}


def fusion_main(reps: int) -> None:
    import numpy as np

    cases = [("antennal_lobe.toml", "float64", "ell"), ("antennal_lobe.toml", "float64", "auto"),
             ("antennal_lobe.toml", "float32", "auto"), ("cobahh_poisson.toml", "float64", "auto"),
             ("cobahh.toml", "float64", "auto")]
    cfgs = [{"impl": "fusion", "job": job, "precision": prec, "graded": graded, "fusion": f, "rounds": 6}
            for job, prec, graded in cases for f in FUSIONS]
    label = lambda c: f"{c['job']} {c['precision']} graded={c['graded']} {c['fusion']}"  # noqa: E731
    res = interleaved(Path(__file__), cfgs, reps, label)
    rows = []
    for job, prec, graded in cases:
        ref = None
        for f in FUSIONS:
            rs = [r for r in res[label({"job": job, "precision": prec, "graded": graded, "fusion": f})] if "error" not in r]
            if not rs:
                rows.append([job, prec, graded, f, None, None, None, None])
                continue
            us = med(x for r in rs for x in r["us_per_step"])
            first = med(r["first_call_s"] for r in rs)
            final = {key: np.asarray(v) for key, v in rs[0]["final"].items()}
            if ref is None:
                ref, ref_us = final, us
            diff = max(float(np.max(np.abs(final[key] - ref[key]))) for key in ref)
            rows.append([job, prec, graded, f, us, us / ref_us, first, diff])
    print(f"\n## Compiled interval (1000 steps per call, 1 thread) by XLA fusion configuration; "
          f"CPU {machine().get('cpu', '?')}\n")
    print(md_table(["job", "precision", "graded sums", "fusion", "µs/step", "/ classic", "first call s",
                    "max |state − classic|"], rows))
    for r in res.values():
        for x in r:
            x.pop("final", None)
    path = save("kernel_fusion", {"reps": reps, "raw": res}, False)
    print(f"wrote {path}")


def w_compaction(cfg: dict) -> dict:
    from cluster_sim.runtime.device import prepare_environment

    prepare_environment()
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    n, cap = cfg["n"], cfg["n"]  # capacity: one spike per neuron per interval (COBAHH: refractory 3 ms > 1 ms)
    rng = np.random.default_rng(0)
    dense = np.full((M, n), np.nan)
    hit = rng.random((M, n)) < 0.002
    dense[hit] = 1.0

    @tf.function(jit_compile=True)
    def compact(d: tf.Tensor) -> tuple:
        flat = tf.reshape(d, [-1])
        ok = ~tf.math.is_nan(flat)
        pos = tf.cumsum(tf.cast(ok, tf.int32)) - 1
        dest = tf.where(ok & (pos < cap), pos, cap)[:, None]  # overflow and non-spikes to a dump slot
        idx = tf.tensor_scatter_nd_update(tf.zeros([cap + 1], tf.int32), dest, tf.range(M * n, dtype=tf.int32))
        tim = tf.tensor_scatter_nd_update(tf.zeros([cap + 1], tf.float64), dest, flat)
        return tf.reduce_sum(tf.cast(ok, tf.int32)), idx, tim

    @tf.function(jit_compile=True)
    def dense_only(d: tf.Tensor) -> tf.Tensor:  # the same call with a trivial body: dispatch cost
        return d[0, :1]

    x = tf.constant(dense)
    count, idx, _ = compact(x)
    assert np.array_equal(np.flatnonzero(hit.ravel()), idx.numpy()[:int(count)])
    dense_only(x)
    out: dict = {"xla_compact_us": [], "xla_trivial_call_us": [], "numpy_nonzero_us": []}
    for _ in range(cfg["rounds"]):
        t0 = time.perf_counter()
        for _i in range(200):
            c, i, t = compact(x)
            c.numpy()
        out["xla_compact_us"].append((time.perf_counter() - t0) / 200 * 1e6)
        t0 = time.perf_counter()
        for _i in range(200):
            dense_only(x).numpy()
        out["xla_trivial_call_us"].append((time.perf_counter() - t0) / 200 * 1e6)
        t0 = time.perf_counter()
        for _i in range(200):
            rows, cols = np.nonzero(~np.isnan(dense))
            dense[rows, cols]
        out["numpy_nonzero_us"].append((time.perf_counter() - t0) / 200 * 1e6)
    return out


def compaction_main(reps: int) -> None:
    cfgs = [{"impl": "compaction", "n": n, "rounds": 5} for n in (4000, 64000)]
    label = lambda c: f"N={c['n']}"  # noqa: E731
    res = interleaved(Path(__file__), cfgs, reps, label)
    rows = []
    for c in cfgs:
        rs = [r for r in res[label(c)] if "error" not in r]
        xla, triv, host = (med(x for r in rs for x in r[k]) for k in ("xla_compact_us", "xla_trivial_call_us", "numpy_nonzero_us"))
        rows.append([c["n"], xla, triv, (xla - triv) if xla and triv else None, host,
                     ((xla - triv) / host) if xla and triv and host else None])
    print(f"\n## Spike compaction of one interval ([{M}, N] dense, 0.2 % spiking), µs per interval (medians)\n")
    print(md_table(["N", "XLA compact call", "XLA trivial call", "XLA compaction alone", "NumPy nonzero on host",
                    "XLA alone / NumPy"], rows))
    path = save("kernel_compaction", {"reps": reps, "raw": res}, False)
    print(f"wrote {path}")


def vector_width_main(reps: int) -> None:
    """The default kernel (while loop, XLA) with LLVM preferring 256- vs 512-bit vectors
    (``--xla_cpu_prefer_vector_width``; cluster-sim sets 512, runtime/device.py), N = 4000 and
    16000, each in fresh processes, interleaved."""
    cfgs = [{"impl": "kernel", "n": n, "precision": prec, "iters": 40 if n <= 4000 else 10, "rounds": 3,
             "variants": [("while", True)], "vector_width": w}
            for n in (4000, 16000) for prec in ("float64", "float32") for w in (256, 512)]
    label = lambda c: f"N={c['n']} {c['precision']} width={c['vector_width']}"  # noqa: E731
    res = interleaved(Path(__file__), cfgs, reps, label)
    rows = []
    for c in cfgs[::2]:
        ns = {w: med(x for r in res[label({**c, "vector_width": w})] if "error" not in r
                     for x in r["variants"]["while jit=on"]["call_ns"]) for w in (256, 512)}
        rows.append([c["n"], c["precision"], ns[256], ns[512], ns[512] / ns[256] if ns[256] and ns[512] else None])
    print(f"\n## Compiled interval, ns per neuron-step (call), LLVM vector width 256 vs 512 bits; CPU {machine().get('cpu', '?')}\n")
    print(md_table(["N", "precision", "256-bit", "512-bit", "512 / 256"], rows))
    path = save("kernel_vector_width", {"reps": reps, "raw": res}, False)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--compaction", action="store_true", help="only the spike-compaction comparison")
    ap.add_argument("--vector-width", action="store_true", help="only 256- vs 512-bit vectors for the default kernel")
    ap.add_argument("--fusion", action="store_true", help="only the XLA fusion configurations (AL, cobahh_poisson, cobahh)")
    a = ap.parse_args()
    if a.fusion:
        return fusion_main(a.reps or 2)
    if a.vector_width:
        return vector_width_main(a.reps or 2)
    if a.compaction:
        return compaction_main(a.reps or 2)
    ns = [4000] if a.quick else [4000, 64000]
    reps = a.reps or (1 if a.quick else 2)
    cfgs = []
    for n in ns:
        for prec in ("float64", "float32"):
            iters = (20 if a.quick else 60) if n <= 4000 else (3 if a.quick else 8)
            cfgs.append({"impl": "kernel", "n": n, "precision": prec, "iters": iters, "rounds": 2 if a.quick else 3})
    label = lambda c: f"N={c['n']} {c['precision']}"  # noqa: E731
    res = interleaved(Path(__file__), cfgs, reps, label)
    rows, summ = [], {}
    for c in cfgs:
        rs = [r for r in res[label(c)] if "error" not in r]
        base = None
        for loop, jit in VARIANTS:
            key = f"{loop} jit={'on' if jit else 'off'}"
            call = med(x for r in rs for x in r["variants"][key]["call_ns"])
            run = med(x for r in rs for x in r["variants"][key]["run_ns"])
            first = med(r["variants"][key]["first_call_s"] for r in rs)
            if base is None:
                base = call
            summ[f"{label(c)} {key}"] = {"call_ns": call, "run_ns": run, "first_call_s": first}
            rows.append([c["n"], c["precision"], loop, "on" if jit else "off", call, run,
                         (call / base) if call and base else None, first])
    print(f"\n## Compiled interval, COBAHH exp. Euler, {M} steps per call (medians)\n")
    print(md_table(["N", "precision", "loop", "jit_compile", "ns/neuron-step (call)", "ns/neuron-step (kernel.run)",
                    "call / (while, jit on)", "first call s (trace+compile)"], rows))
    threads = next((r.get("threads") for rs in res.values() for r in rs if "threads" in r), None)
    print(f"\nTensorFlow threads: {threads}; XLA_FLAGS from cluster_sim.runtime.device.prepare_environment()")
    path = save("kernel_loop", {"ns": ns, "reps": reps, "summary": summ, "raw": res}, a.quick)
    print(f"wrote {path}")
    if have_matplotlib():
        import matplotlib.pyplot as plt
        import numpy as np

        fig, ax = plt.subplots(figsize=(9, 4))
        groups = [label(c) for c in cfgs]
        w = 0.2
        for i, (loop, jit) in enumerate(VARIANTS):
            key = f"{loop} jit={'on' if jit else 'off'}"
            ax.bar(np.arange(len(groups)) + i * w, [summ[f"{g} {key}"]["call_ns"] or 0 for g in groups], w, label=key)
        ax.set_xticks(np.arange(len(groups)) + 1.5 * w, groups, fontsize=8)
        ax.set_ylabel("ns per neuron-step (call)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot_path("kernel_loop", a.quick), dpi=100)
        print(f"wrote {plot_path('kernel_loop', a.quick)}")


if __name__ == "__main__":
    if not worker_main({"kernel": w_kernel, "compaction": w_compaction, "fusion": w_fusion}):
        main()
