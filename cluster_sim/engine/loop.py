"""The bulk-synchronous interval loop: integrate one interval (compiled), exchange spikes,
deliver them into the ring buffers, record, and checkpoint at interval boundaries.

The pieces are separate so that a distributed run changes only the ``Exchange`` (and which
neurons are local); the rest of this loop is the same for one rank or many.
"""
from __future__ import annotations

import hashlib
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cluster_sim import __version__
from cluster_sim.engine.delivery import RingBuffers, SpikeBatch
from cluster_sim.engine.exchange import Exchange, LocalExchange
from cluster_sim.errors import EXIT_CHECKPOINTED, EXIT_OK, ConfigError, RunError
from cluster_sim.models.synapses import GradedKinetic
from cluster_sim.network.build import Network, build_network
from cluster_sim.progress import Progress
from cluster_sim.record.checkpoint import CHECKPOINT, atomic_write_json, load_checkpoint, save_checkpoint
from cluster_sim.record.spikes import SpikeWriter
from cluster_sim.record.traces import TraceWriter
from cluster_sim.spec.schema import JobSpec

PHASES = ("startup", "build", "integrate", "exchange", "deliver", "io", "checkpoint")


@dataclass
class Timers:
    seconds: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})

    def add(self, phase: str, dt: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + dt


class _Clock:
    def __init__(self, timers: Timers, phase: str) -> None:
        self.timers, self.phase = timers, phase

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timers.add(self.phase, time.perf_counter() - self.t0)


def interval_steps(spec: JobSpec) -> int:
    """Steps per communication interval: the minimum delay of the spike-triggered projections,
    or ``engine.interval_ms`` when every coupling acts inside the step."""
    dt = spec.integrator.dt_ms
    delays = [round(p.delay_ms / dt) for p in spec.projections
              if not isinstance(_syn(p.synapse), GradedKinetic)]
    if delays:
        return max(1, min(delays))
    return max(1, int(round(spec.engine.interval_ms / dt)))


def _syn(name: str) -> Any:
    from cluster_sim.models import get_synapse_model

    return get_synapse_model(name)


def spec_digest(spec: JobSpec) -> str:
    """What must match between a checkpoint and the run that resumes it (not duration/output)."""
    raw = json.loads(json.dumps(spec.raw))
    raw.get("simulation", {}).pop("duration_ms", None)
    raw.pop("output", None)
    raw.get("engine", {}).pop("device", None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


class _StopRequest:
    """SIGTERM/SIGUSR1 set a flag; the loop checkpoints at the next interval boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class RunResult:
    exit_status: int
    info: dict[str, Any]


def simulate(spec: JobSpec, out_dir: str | Path, *, resume: bool = False, checkpoint_every_ms: float | None = None,
             progress: bool | None = None, device: str | None = None, exchange: Exchange | None = None,
             local: Mapping[str, np.ndarray] | None = None, startup_s: float = 0.0,
             cpu_threads: int | None = None) -> RunResult:
    """Run ``spec`` and write its results into ``out_dir``. Returns the exit status (0, or 75
    when a signal asked for a checkpoint-and-stop) and the run summary (also in run.json)."""
    t_wall0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exchange = exchange or LocalExchange()
    timers = Timers()
    timers.add("startup", startup_s)
    is_root = exchange.rank == 0
    ckpt_path = out / (CHECKPOINT if exchange.size == 1 else f"checkpoint.rank{exchange.rank}.npz")
    ckpt_every = spec.output.checkpoint_every_ms if checkpoint_every_ms is None else checkpoint_every_ms

    resume_arrays: dict[str, np.ndarray] | None = None
    resume_meta: dict[str, Any] = {}
    if resume:
        if not ckpt_path.exists():
            raise ConfigError("--resume", str(out), "there is no checkpoint to resume from",
                              "run without --resume, or point --out at the folder of the interrupted run")
        resume_arrays, resume_meta = load_checkpoint(ckpt_path)
        if resume_meta["spec_digest"] != spec_digest(spec):
            raise ConfigError("--resume", str(ckpt_path), "the checkpoint was written by a different network or integrator",
                              "resume with the same job spec and --set overrides as the interrupted run")
        for phase, sec in resume_meta.get("phases", {}).items():
            timers.add(phase, sec)

    t0 = time.perf_counter()
    from cluster_sim.engine.device import select_device

    dev = select_device(device or spec.engine.device, cpu_threads)
    import tensorflow as tf

    from cluster_sim.engine.kernel import IntervalKernel, initial_state

    timers.add("startup", time.perf_counter() - t0)

    with _Clock(timers, "build"):
        net: Network = build_network(spec, local)
        m = interval_steps(spec)
        rings = RingBuffers(net, m)

    dt = spec.integrator.dt_ms
    total_steps = int(round(spec.simulation.duration_ms / dt))
    strides = {r.name: int(round(r.sampling_ms / dt)) for r in spec.recordings}

    t0 = time.perf_counter()
    with tf.device(dev):
        kernel = IntervalKernel(net, precision=spec.integrator.precision, method=spec.integrator.method,
                                dt_ms=dt, jit_compile=spec.engine.jit_compile, loop=spec.engine.loop)
        state0 = initial_state(net)
        if resume_arrays is not None:
            step = int(resume_meta["step"])
            state0 = {k: resume_arrays[f"state/{k}"] for k in state0}
            rings.restore({k: resume_arrays[f"ring/{k}"] for k in rings.rings})
        else:
            step = 0
        state = kernel.to_device(state0)
        # Trace and compile outside the timed integration (for every interval length used).
        zero_inputs = lambda n: {k: np.zeros((n, v.shape[1])) for k, v in rings.rings.items()}  # noqa: E731
        for n in sorted({m, (total_steps - step) % m} - {0}):
            kernel.run(state, step, n, zero_inputs(n))
    timers.add("startup", time.perf_counter() - t0)

    writer = traces = None
    if is_root:
        with _Clock(timers, "io"):
            attrs = {"cluster_sim_version": __version__, "seed": spec.simulation.seed, "spec": json.dumps(spec.raw),
                     "dt_ms": dt, "method": spec.integrator.method, "precision": spec.integrator.precision}
            writer = SpikeWriter(out / "spikes.h5", {p.name: p.count for p in spec.populations}, attrs,
                                 resume_counts=resume_meta.get("spike_counts") if resume else None)
            traces = {}
            for r in spec.recordings:
                unit = "mV" if r.variable == "v" else ""
                traces[r.name] = TraceWriter(out / f"report_{r.name}.h5", r.population, r.variable,
                                             np.asarray(r.neurons), r.sampling_ms, unit,
                                             resume_rows=resume_meta.get("trace_rows", {}).get(r.name) if resume else None)

    stop = _StopRequest()
    stop.install()
    prog = Progress(spec.simulation.duration_ms, enabled=progress if is_root else False, start_ms=step * dt)
    flush_every = max(1, int(round(spec.output.flush_every_ms / dt / m)))
    ckpt_every_iv = int(round(ckpt_every / dt / m)) if ckpt_every else 0
    n_spikes = int(resume_meta.get("n_spikes", 0))
    n_spikes_pop: dict[str, int] = dict(resume_meta.get("n_spikes_pop", {p.name: 0 for p in spec.populations}))
    synapse_events = int(resume_meta.get("synapse_events", 0))
    status = "completed"
    iv = 0
    layout = net.layout
    pop_local = {name: (layout.offsets[layout.index(name)], p.local) for name, p in net.populations.items()}

    def write_checkpoint(host_state: dict[str, np.ndarray]) -> None:
        with _Clock(timers, "io"):
            if writer is not None:
                writer.flush()
                for tw in traces.values():
                    tw.flush()
        with _Clock(timers, "checkpoint"):
            arrays = {f"state/{k}": v for k, v in host_state.items()}
            arrays.update({f"ring/{k}": v for k, v in rings.snapshot().items()})
            arrays.update({f"local/{k}": p.local for k, p in net.populations.items()})
            meta = {"step": step, "spec_digest": spec_digest(spec), "n_spikes": n_spikes, "n_spikes_pop": n_spikes_pop,
                    "synapse_events": synapse_events, "phases": timers.seconds, "ranks": exchange.size,
                    "spike_counts": writer.counts if writer else {}, "trace_rows": {k: t.rows for k, t in (traces or {}).items()}}
            save_checkpoint(ckpt_path, arrays, meta)

    try:
        with tf.device(dev):
            while step < total_steps:
                n = min(m, total_steps - step)
                with _Clock(timers, "integrate"):
                    inputs = rings.take(step, n)
                    state, spk, smp = kernel.run(state, step, n, inputs)
                    batches = []
                    for pop_name, arr in spk.items():
                        rows, cols = np.nonzero(~np.isnan(arr))
                        if rows.size:
                            off, loc = pop_local[pop_name]
                            batches.append(SpikeBatch(off + loc[cols], step + rows.astype(np.int64), arr[rows, cols]))
                    local_batch = SpikeBatch.concat(batches)
                with _Clock(timers, "exchange"):
                    all_spikes = exchange.exchange(local_batch)
                with _Clock(timers, "deliver"):
                    synapse_events += rings.deliver(all_spikes)
                with _Clock(timers, "io"):
                    n_spikes += len(all_spikes)
                    if writer is not None and len(all_spikes):
                        for pop_name, ids in layout.split_gids(all_spikes.gid):
                            sel = (all_spikes.gid >= layout.offsets[layout.index(pop_name)]) & \
                                  (all_spikes.gid < layout.offsets[layout.index(pop_name)] + layout.counts[layout.index(pop_name)])
                            if ids.size:
                                writer.add(pop_name, all_spikes.time[sel], ids)
                                n_spikes_pop[pop_name] += int(ids.size)
                    if traces is not None:
                        for name, tw in traces.items():
                            ks = step + np.arange(n)
                            keep = (ks + 1) % strides[name] == 0
                            if keep.any():
                                tw.add(smp[name][keep].astype(np.float64))
                step += n
                iv += 1
                if iv % flush_every == 0:
                    with _Clock(timers, "io"):
                        if writer is not None:
                            writer.flush()
                            for tw in traces.values():
                                tw.flush()
                if not np.isfinite(next(iter(state.values())).numpy()).all():
                    _check_finite(kernel.to_host(state), step * dt)
                if stop.signum is not None or (ckpt_every_iv and iv % ckpt_every_iv == 0 and step < total_steps):
                    write_checkpoint(kernel.to_host(state))
                    if stop.signum is not None:
                        status = "checkpointed"
                        break
                prog.update(step * dt, n_spikes)
        prog.update(step * dt, n_spikes, force=True)
    finally:
        prog.close()
        stop.restore()
        with _Clock(timers, "io"):
            if writer is not None:
                writer.close()
            for tw in (traces or {}).values():
                tw.close()

    host = kernel.to_host(state)
    _check_finite(host, step * dt)
    wall = time.perf_counter() - t_wall0 + startup_s
    simulated = step * dt
    info = {
        "name": spec.name, "version": __version__, "status": status, "mode": "bsp",
        "n_neurons": spec.n_neurons, "n_synapses": int(net.n_local_synapses), "n_spikes": n_spikes,
        "n_spikes_by_population": n_spikes_pop,
        "rates_hz": {p.name: n_spikes_pop[p.name] / (p.count * simulated * 1e-3) if simulated else 0.0 for p in spec.populations},
        "simulated_ms": simulated, "duration_ms": spec.simulation.duration_ms, "wall_seconds": wall,
        "real_time_factor": wall / (simulated * 1e-3) if simulated else math.inf,
        "steps_per_neuron": step, "interval_steps": m, "dt_ms": dt, "method": spec.integrator.method,
        "precision": spec.integrator.precision, "seed": spec.simulation.seed, "ranks": exchange.size,
        "device": dev, "synapse_events": synapse_events, "phases": dict(timers.seconds),
        "resumed_from_step": int(resume_meta["step"]) if resume else None,
    }
    if is_root:
        atomic_write_json(out / "run.json", info)
    return RunResult(EXIT_CHECKPOINTED if status == "checkpointed" else EXIT_OK, info)


def _check_finite(state: dict[str, np.ndarray], t_ms: float) -> None:
    for key, arr in state.items():
        if key.endswith(".fire_t"):
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            raise RunError(f"state {key} became non-finite by t = {t_ms:.3f} ms (neuron position {int(np.argmax(bad))}); "
                           "the step is too large for this method: lower integrator.dt_ms or use exp_euler")
