"""Stand-in for ``cluster-sim run`` with the same contract, for testing the deployment layer
without the engine: writes SONATA ``spikes.h5`` and ``run.json`` into --out; on SIGUSR1/SIGTERM
checkpoints at the next step boundary and exits 75; ``--resume`` continues from the checkpoint and
the final spikes equal an uninterrupted run's.

Knobs (as --set values): fake.steps (default 20), fake.step_s (seconds per step, default 0.05),
fake.exit (exit with this status after the first step), fake.seed.
"""
from __future__ import annotations

import signal

STOP = {"sig": None}


def _handler(signum, frame):  # noqa: ARG001
    STOP["sig"] = signum
    print(f"fake cluster-sim: got signal {signum}; checkpointing at the next step", flush=True)


# Installed first, before the slow imports (what the engine should do too).
signal.signal(signal.SIGUSR1, _handler)
signal.signal(signal.SIGTERM, _handler)

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "run":
        print(f"fake cluster-sim: only 'run' is supported, got {argv}", file=sys.stderr)
        return 2
    args = argv[1:]
    spec = Path(args.pop(0))
    out = None
    sets: dict[str, str] = {}
    resume = False
    duration = None
    mode = "bsp"
    device = "auto"
    raw_sets: list[str] = []
    while args:
        a = args.pop(0)
        if a == "--out":
            out = Path(args.pop(0))
        elif a == "--set":
            kv = args.pop(0)
            raw_sets.append(kv)
            k, v = kv.split("=", 1)
            sets[k] = v
        elif a == "--resume":
            resume = True
        elif a == "--duration":
            duration = float(args.pop(0))
        elif a == "--checkpoint-every":
            args.pop(0)
        elif a == "--mode":
            mode = args.pop(0)
        elif a == "--device":
            device = args.pop(0)
        else:
            print(f"fake cluster-sim: unknown argument {a!r}", file=sys.stderr)
            return 2
    assert out is not None and spec.is_file(), (out, spec)
    out.mkdir(parents=True, exist_ok=True)
    import os

    env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "SLURM_LOCALID", "FAKE_IN_CONTAINER")}
    env["device"] = device
    if os.environ.get("SLURM_LOCALID"):
        # the GPU the real engine would take (its one place that maps ranks to GPUs)
        from cluster_sim.runtime.device import gpu_for_local_rank

        env["picked_gpu"] = gpu_for_local_rank(int(os.environ["SLURM_LOCALID"]), os.environ.get("CUDA_VISIBLE_DEVICES"),
                                               0, under_slurm=True)
    (out / "argv.json").write_text(json.dumps({"argv": argv, "sets": raw_sets, "env": env}))
    if os.environ.get("SLURM_LOCALID"):
        (out / f"env-{os.environ['SLURM_LOCALID']}.json").write_text(json.dumps(env))
    if os.environ.get("SLURM_PROCID", "0") != "0":
        return 0  # like the engine, only rank 0 writes the outputs
    steps = int(sets.get("fake.steps", "20"))
    step_s = float(sets.get("fake.step_s", "0.05"))
    seed = int(float(sets.get("fake.seed", "1")))
    amp = float(sets.get("stimuli.odor.amplitude_uA_cm2", "1"))
    ranks = int(__import__("os").environ.get("SLURM_NTASKS", "1"))

    stop = STOP

    ck = out / "checkpoint.h5"
    start, times, ids = 0, [], []
    if resume:
        with h5py.File(ck, "r") as f:
            start = int(f.attrs["step"])
            times = list(f["t"][()])
            ids = list(f["i"][()])
        print(f"fake cluster-sim: resumed at step {start}", flush=True)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    for step in range(steps):
        draw = rng.integers(0, 100, size=5)  # the stream advances identically with or without resume
        if step < start:
            continue
        if stop["sig"] is not None:
            tmp = out / "checkpoint.h5.tmp"
            with h5py.File(tmp, "w") as f:
                f.attrs["step"] = step
                f["t"] = np.asarray(times, dtype=np.float64)
                f["i"] = np.asarray(ids, dtype=np.uint64)
            tmp.replace(ck)
            print(f"fake cluster-sim: checkpoint at step {step}; exit 75", flush=True)
            return 75
        time.sleep(step_s)
        for j, d in enumerate(draw):
            if d < 30 * amp:
                times.append(step * 1.0 + j * 0.1)
                ids.append(int(d))
        if "fake.exit" in sets and step == 0:
            print(f"fake cluster-sim: failing on purpose with status {sets['fake.exit']}", flush=True)
            return int(sets["fake.exit"])
    with h5py.File(out / "spikes.h5", "w") as f:
        g = f.create_group("spikes/all")
        g.attrs["sorting"] = "by_time"
        g.create_dataset("timestamps", data=np.asarray(times, dtype=np.float64)).attrs["units"] = "ms"
        g.create_dataset("node_ids", data=np.asarray(ids, dtype=np.uint64))
    wall = time.time() - t0
    run = {"n_neurons": 100, "n_synapses": 1000, "n_spikes": len(times), "simulated_ms": float(duration or steps),
           "wall_seconds": wall, "steps_per_neuron": steps, "ranks": ranks, "mode": mode,
           "phases": {"startup": 0.01, "build": 0.02, "integrate": wall * 0.7, "deliver": wall * 0.2, "io": 0.01}}
    (out / "run.json").write_text(json.dumps(run))
    ck.unlink(missing_ok=True)
    print(f"fake cluster-sim: done, {len(times)} spikes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
