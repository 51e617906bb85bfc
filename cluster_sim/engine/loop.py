"""The bulk-synchronous interval loop: integrate one interval (compiled), synchronise, exchange
spikes, deliver them into the ring buffers, record, and checkpoint at interval boundaries.

One rank or many run the same loop; only the ``Exchange`` and the set of local neurons differ.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cluster_sim import __version__
from cluster_sim.engine.delivery import RingBuffers, SpikeBatch
from cluster_sim.engine.integrators import STAGES
from cluster_sim.engine.stop import StopRequest
from cluster_sim.engine.exchange import AllgatherExchange, AlltoallExchange, Exchange, HorovodExchange, LocalExchange
from cluster_sim.errors import EXIT_CHECKPOINTED, EXIT_OK, ConfigError, RunError
from cluster_sim.models import get_synapse_model, poisson
from cluster_sim.models.synapses import GradedKinetic
from cluster_sim.network.build import Network, build_network
from cluster_sim.network.partition import check_graded, local_indices
from cluster_sim.progress import Progress
from cluster_sim.record import checkpoint as ckpt
from cluster_sim.record.spikes import SpikeWriter
from cluster_sim.record.traces import TraceWriter
from cluster_sim.spec.schema import JobSpec

PHASES = ("startup", "build", "integrate", "wait", "exchange", "deliver", "io", "checkpoint")


@dataclass
class Timers:
    seconds: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})

    def add(self, phase: str, dt: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + dt

    def clock(self, phase: str) -> "_Clock":
        return _Clock(self, phase)


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
              if not isinstance(get_synapse_model(p.synapse), GradedKinetic)]
    if delays:
        return max(1, min(delays))
    return max(1, int(round(spec.engine.interval_ms / dt)))


# Below this many neurons per rank XLA:CPU's parallel loops cost more in synchronisation than
# they gain (COBAHH exp-Euler, measured: N=4000 1.8x and N=16000 1.5x faster on 1 thread than
# on 2; equal at 64000), so a rank uses one thread and more ranks use more cores.
_NEURONS_PER_THREAD = 64_000


def cpu_threads_for(spec: JobSpec, size: int, available: int | None) -> int:
    """Intra-op threads for this rank: the spec's ``engine.cpu_threads``, else one thread per
    64k local neurons, capped by the cores this rank was given."""
    cores = available or len(os.sched_getaffinity(0))
    if spec.engine.cpu_threads:
        return spec.engine.cpu_threads
    per_rank = spec.n_neurons / max(size, 1)
    return max(1, min(cores, int(per_rank // _NEURONS_PER_THREAD) + 1))


def spec_digest(spec: JobSpec) -> str:
    """What must match between a checkpoint and the run resuming it: the validated network and
    integrator (defaults filled in), not duration, output, device, partition or exchange — a run
    may resume longer, elsewhere, on another number of ranks."""
    data = dataclasses.asdict(spec)
    data.pop("raw")
    data.pop("output")
    data["simulation"].pop("duration_ms")
    for key in ("device", "partition", "exchange"):
        data["engine"].pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class LocalSource:
    """This rank's neurons of one spike-source population."""

    name: str
    params: dict[str, float]
    key: np.uint64
    offset: int  # gid of the population's first neuron
    local: np.ndarray  # indices within the population, sorted


def local_sources(net: Network) -> list[LocalSource]:
    seed = net.spec.simulation.seed
    return [LocalSource(name, pop.params, poisson.source_key(seed, name), net.layout.offsets[net.layout.index(name)], pop.local)
            for name, pop in net.populations.items() if pop.model.is_source]


def source_spikes(src: LocalSource, step: int, n: int, dt: float) -> tuple[np.ndarray, np.ndarray, SpikeBatch]:
    """Spikes of ``src`` with step*dt <= t < (step+n)*dt: (times, indices within the population,
    batch for delivery). The stream is addressed by global id, so a neuron's train does not depend
    on the partition; consecutive windows share their edge, so each spike is produced once.
    A spike at t is filed under step k with k*dt <= t < (k+1)*dt (clipped into the interval
    against rounding); delivery then acts at the start of step k + 1 + delay, never before
    t + delay, as for the kernel's spikes (see ``engine/delivery.py``)."""
    gids = src.offset + src.local
    idx, times = poisson.spike_times(src.params, src.key, gids, step * dt, (step + n) * dt)
    k = np.clip(np.floor(times / dt).astype(np.int64), step, step + n - 1)
    return times, src.local[idx], SpikeBatch(gids[idx], k, times)


def resume_manifest(spec: JobSpec, out: Path, mode: str) -> dict[str, Any]:
    """The checkpoint manifest in ``out`` if this spec and mode may resume it; else ConfigError."""
    manifest = ckpt.read_manifest(out)
    if manifest is None:
        raise ConfigError("--resume", str(out), "there is no checkpoint to resume from",
                          "run without --resume, or point --out at the folder of the interrupted run")
    if manifest.get("mode", "bsp") != mode or manifest["spec_digest"] != spec_digest(spec):
        raise ConfigError("--resume", str(out), "the checkpoint was written by a different network, integrator or mode",
                          "resume with the same job spec, --mode and --set overrides as the interrupted run")
    return manifest


@dataclass
class RunResult:
    exit_status: int
    info: dict[str, Any]


def make_exchange(spec: JobSpec, comm: Any, net: Network) -> Exchange:
    if comm is None or comm.Get_size() == 1:
        return LocalExchange()
    if spec.engine.exchange == "allgather":
        return AllgatherExchange(comm)
    if spec.engine.exchange == "horovod":
        return HorovodExchange(comm)
    needed = [net.layout.gid(p.source, np.unique(p.src)) for p in net.projections
              if not isinstance(p.synapse, GradedKinetic)]
    local_gids = np.concatenate([net.layout.gid(name, pop.local) for name, pop in net.populations.items()])
    return AlltoallExchange(comm, net.layout.n_total, np.concatenate(needed) if needed else np.zeros(0, np.int64), local_gids)


def _checkpoint_arrays(net: Network, host_state: dict[str, np.ndarray], rings: RingBuffers) -> dict[str, np.ndarray]:
    arrays = {f"gid/{name}": pop.local for name, pop in net.populations.items()}
    arrays.update({f"state/{k}": v for k, v in host_state.items()})
    arrays.update({f"ring/{k}": v for k, v in rings.snapshot().items()})
    return arrays


def _restore(parts: list[dict[str, np.ndarray]], net: Network, state_keys: list[str], rings: RingBuffers) -> dict[str, np.ndarray]:
    """Reassemble state and rings for this rank's neurons from any number of rank files."""
    owner_pop = {}  # state key -> population whose gids index it
    for name, pop in net.populations.items():
        for var in list(pop.model.variables) + ["fire_t"]:
            owner_pop[f"{name}.{var}"] = name
    for proj in net.projections:
        if isinstance(proj.synapse, GradedKinetic):
            for var in proj.synapse.variables:
                owner_pop[f"{proj.spec.name}.{var}"] = proj.source
    state = {}
    for key in state_keys:
        pop = owner_pop[key]
        full = np.full(net.populations[pop].count, np.nan)
        for part in parts:
            full[part[f"gid/{pop}"]] = part[f"state/{key}"]
        state[key] = full[net.populations[pop].local]
    restored = {}
    for key, ring in rings.rings.items():
        pop = key.split(".")[0]
        full = np.zeros((ring.shape[0], net.populations[pop].count))
        for part in parts:
            full[:, part[f"gid/{pop}"]] = part[f"ring/{key}"]
        restored[key] = full[:, net.populations[pop].local]
    rings.restore(restored)
    return state


def simulate(spec: JobSpec, out_dir: str | Path, *, resume: bool = False, checkpoint_every_ms: float | None = None,
             progress: bool | None = None, device: str | None = None, comm: Any = None, startup_s: float = 0.0,
             cpu_threads: int | None = None, stop_request: StopRequest | None = None) -> RunResult:
    """Run ``spec`` on this rank (``comm``: an mpi4py communicator, or None for one process) and
    write the results into ``out_dir``. Returns the exit status (0, or 75 when a signal asked
    for a checkpoint-and-stop) and the run summary (also written to run.json by rank 0)."""
    t_wall0 = time.perf_counter()
    out = Path(out_dir)
    size = comm.Get_size() if comm is not None else 1
    rank = comm.Get_rank() if comm is not None else 0
    is_root = rank == 0
    timers = Timers()
    timers.add("startup", startup_s)
    ckpt_every = spec.output.checkpoint_every_ms if checkpoint_every_ms is None else checkpoint_every_ms

    # Every input check happens before compute, identically on every rank.
    check_graded(spec, size)
    manifest = resume_manifest(spec, out, "bsp") if resume else None
    if manifest is not None:
        for phase, sec in manifest.get("phases", {}).items():
            timers.add(phase, sec)
    if is_root:
        out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    from cluster_sim.engine.device import select_device

    dev = select_device(device or spec.engine.device, cpu_threads_for(spec, size, cpu_threads))
    import tensorflow as tf

    from cluster_sim.engine.kernel import IntervalKernel, initial_state

    timers.add("startup", time.perf_counter() - t0)

    with timers.clock("build"):
        local = local_indices(spec, rank, size) if size > 1 else None
        net: Network = build_network(spec, local)
        m = interval_steps(spec)
        rings = RingBuffers(net, m)
        exchange = make_exchange(spec, comm, net)

    dt = spec.integrator.dt_ms
    total_steps = int(round(spec.simulation.duration_ms / dt))
    strides = {r.name: int(round(r.sampling_ms / dt)) for r in spec.recordings}

    t0 = time.perf_counter()
    with tf.device(dev):
        kernel = IntervalKernel(net, precision=spec.integrator.precision, method=spec.integrator.method,
                                dt_ms=dt, jit_compile=spec.engine.jit_compile, loop=spec.engine.loop)
        state0 = initial_state(net)
        step = 0
        if manifest is not None:
            step = int(manifest["step"])
            state0 = _restore(ckpt.load_parts(out, manifest), net, list(state0), rings)
        state = kernel.to_device(state0)
        # Trace and compile outside the timed integration (for every interval length used).
        for n in sorted({m, (total_steps - step) % m} - {0}):
            kernel.run(state, step, n, {k: np.zeros((n, v.shape[1])) for k, v in rings.rings.items()})
    timers.add("startup", time.perf_counter() - t0)
    exchange.barrier()

    writer: SpikeWriter | None = None
    traces: dict[str, TraceWriter] = {}
    if is_root:
        with timers.clock("io"):
            attrs = {"cluster_sim_version": __version__, "seed": spec.simulation.seed, "spec": json.dumps(spec.raw),
                     "dt_ms": dt, "method": spec.integrator.method, "precision": spec.integrator.precision,
                     "populations": json.dumps([p.name for p in spec.populations])}
            writer = SpikeWriter(out / "spikes.h5", {p.name: p.count for p in spec.populations}, attrs,
                                 resume_counts=manifest.get("spike_counts") if manifest else None)
            for r in spec.recordings:
                traces[r.name] = TraceWriter(out / f"report_{r.name}.h5", r.population, r.variable, np.asarray(r.neurons),
                                             r.sampling_ms, "mV" if r.variable == "v" else "",
                                             resume_rows=manifest["trace_rows"][r.name] if manifest else None)
    # Which columns of each recording this rank holds (positions in the spec's neuron list).
    rec_cols = {}
    for name, pop, _, pos in kernel.layout.recordings:
        gids_here = net.populations[pop].local[pos]
        order = {n: i for i, n in enumerate(next(r for r in spec.recordings if r.name == name).neurons)}
        rec_cols[name] = np.array([order[int(g)] for g in gids_here], np.int64)

    fault = _injected_fault()
    stop = stop_request or StopRequest().install()
    prog = Progress(spec.simulation.duration_ms, enabled=progress if is_root else False, start_ms=step * dt)
    flush_every = max(1, int(round(spec.output.flush_every_ms / dt / m)))
    ckpt_every_iv = int(round(ckpt_every / dt / m)) if ckpt_every else 0
    n_spikes_pop: dict[str, int] = dict(manifest["n_spikes_pop"]) if manifest else {p.name: 0 for p in spec.populations}
    synapse_events = 0
    status = "completed"
    iv = 0
    pop_local = {name: (net.layout.offsets[net.layout.index(name)], p.local) for name, p in net.populations.items()}
    sources = local_sources(net)
    pending_spikes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p: [] for p in net.populations}
    pending_samples: dict[str, list[np.ndarray]] = {name: [] for name in rec_cols}

    def flush() -> None:
        """Gather this chunk's spikes and samples at rank 0 and append them to the files."""
        with timers.clock("io"):
            mine = ({p: (np.concatenate([t for t, _ in v]) if v else np.zeros(0), np.concatenate([i for _, i in v]) if v else np.zeros(0, np.int64))
                     for p, v in pending_spikes.items()},
                    {k: (rec_cols[k], np.concatenate(v, axis=0) if v else None) for k, v in pending_samples.items()})
            for v in pending_spikes.values():
                v.clear()
            for v in pending_samples.values():
                v.clear()
            parts = exchange.gather(mine)
            if not is_root:
                return
            for spikes, _ in parts:
                for pop, (t, ids) in spikes.items():
                    if t.size:
                        writer.add(pop, t, ids)
                        n_spikes_pop[pop] += int(t.size)
            for name, tw in traces.items():
                blocks = [(cols, data) for _, samples in parts for cols, data in [samples[name]] if data is not None and cols.size]
                if blocks:
                    rows = blocks[0][1].shape[0]
                    full = np.empty((rows, len(tw_neurons[name])))
                    for cols, data in blocks:
                        full[:, cols] = data
                    tw.add(full)
            writer.flush()
            for tw in traces.values():
                tw.flush()

    tw_neurons = {r.name: r.neurons for r in spec.recordings}

    def write_checkpoint(host_state: dict[str, np.ndarray]) -> None:
        flush()
        with timers.clock("checkpoint"):
            ckpt.write_rank_part(out, step, rank, _checkpoint_arrays(net, host_state, rings))
            exchange.barrier()
            if is_root:
                ckpt.commit(out, step, size, {
                    "spec_digest": spec_digest(spec), "mode": "bsp", "n_spikes_pop": n_spikes_pop, "phases": timers.seconds,
                    "spike_counts": writer.counts, "trace_rows": {k: t.rows for k, t in traces.items()},
                    "simulated_ms": step * dt})
            exchange.barrier()

    try:
        with tf.device(dev):
            while step < total_steps:
                n = min(m, total_steps - step)
                with timers.clock("integrate"):
                    state, spk, smp = kernel.run(state, step, n, rings.take(step, n))
                    batches = []
                    for pop_name, arr in spk.items():
                        rows, cols = np.nonzero(~np.isnan(arr))
                        if rows.size:
                            off, loc = pop_local[pop_name]
                            times = arr[rows, cols]
                            pending_spikes[pop_name].append((times, loc[cols]))
                            batches.append(SpikeBatch(off + loc[cols], step + rows.astype(np.int64), times))
                    for src in sources:  # spike sources: a pure function of time, nothing integrated
                        times, ids, batch = source_spikes(src, step, n, dt)
                        if times.size:
                            pending_spikes[src.name].append((times, ids))
                            batches.append(batch)
                    keep_rows = {name: (step + np.arange(n) + 1) % strides[name] == 0 for name in rec_cols}
                    for name, rows_ok in keep_rows.items():
                        if rows_ok.any():
                            pending_samples[name].append(smp[name][rows_ok].astype(np.float64))
                with timers.clock("wait"):
                    stop_now = exchange.any_flag(stop.signum is not None)
                with timers.clock("exchange"):
                    arriving = exchange.exchange(SpikeBatch.concat(batches))
                with timers.clock("deliver"):
                    synapse_events += rings.deliver(arriving)
                step += n
                iv += 1
                if fault is not None and fault == (rank, iv):
                    raise RuntimeError(f"injected fault on rank {rank} at interval {iv} (t = {step * dt:g} ms, unix time {time.time():.3f})")
                if iv % flush_every == 0:
                    flush()
                if (iv % 16 == 0 or step >= total_steps) and state:
                    v_key = next(iter(state))
                    if not np.isfinite(state[v_key].numpy()).all():
                        _check_finite(kernel.to_host(state), step * dt)
                if stop_now or (ckpt_every_iv and iv % ckpt_every_iv == 0 and step < total_steps):
                    write_checkpoint(kernel.to_host(state))
                    if stop_now:
                        status = "checkpointed"
                        break
                prog.update(step * dt, sum(n_spikes_pop.values()))
        flush()
        prog.update(step * dt, sum(n_spikes_pop.values()), force=True)
    finally:
        prog.close()
        stop.restore()
        if writer is not None:
            writer.close()
        for tw in traces.values():
            tw.close()

    _check_finite(kernel.to_host(state), step * dt)
    simulated = step * dt
    wall = time.perf_counter() - t_wall0 + startup_s
    per_rank = exchange.gather({"rank": rank, "neurons": int(net.n_local_neurons), "synapses": int(net.n_local_synapses),
                                "network_bytes": int(net.nbytes() + sum(r.nbytes for r in rings.rings.values())),
                                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                                "synapse_events": synapse_events, **{k: round(v, 6) for k, v in timers.seconds.items()}})
    info: dict[str, Any] = {}
    if is_root:
        compute = [r["integrate"] + r["deliver"] for r in per_rank]
        waited = [r["integrate"] + r["deliver"] + r["wait"] for r in per_rank]
        n_spikes = sum(n_spikes_pop.values())
        info = {
            "name": spec.name, "version": __version__, "status": status, "mode": "bsp",
            "n_neurons": spec.n_neurons, "n_synapses": int(sum(r["synapses"] for r in per_rank)), "n_spikes": n_spikes,
            "n_spikes_by_population": n_spikes_pop,
            "rates_hz": {p.name: n_spikes_pop[p.name] / (p.count * simulated * 1e-3) if simulated else 0.0 for p in spec.populations},
            "simulated_ms": simulated, "duration_ms": spec.simulation.duration_ms, "wall_seconds": wall,
            "real_time_factor": wall / (simulated * 1e-3) if simulated else math.inf,
            "steps_per_neuron": step, "rhs_evals_per_neuron": step * STAGES[spec.integrator.method],
            "interval_steps": m, "dt_ms": dt, "method": spec.integrator.method,
            "precision": spec.integrator.precision, "seed": spec.simulation.seed, "ranks": size,
            "exchange": spec.engine.exchange if size > 1 else "local", "partition": spec.engine.partition,
            "device": dev, "synapse_events": int(sum(r["synapse_events"] for r in per_rank)),
            "phases": dict(timers.seconds), "per_rank": per_rank,
            "load_balance": (float(np.mean(compute)) / max(waited)) if max(waited) > 0 else 1.0,
            "resumed_from_step": int(manifest["step"]) if manifest else None,
        }
        ckpt.atomic_write_json(out / "run.json", info)
    return RunResult(EXIT_CHECKPOINTED if status == "checkpointed" else EXIT_OK, info)


def _injected_fault() -> tuple[int, int] | None:
    """Test hook: CLUSTER_SIM_INJECT_FAULT="RANK:INTERVAL" makes that rank raise after that
    interval, to test that one failing rank stops every rank."""
    raw = os.environ.get("CLUSTER_SIM_INJECT_FAULT")
    if not raw:
        return None
    r, _, i = raw.partition(":")
    return int(r), int(i)


def _check_finite(state: dict[str, np.ndarray], t_ms: float) -> None:
    for key, arr in state.items():
        if key.endswith(".fire_t"):
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            raise RunError(f"state {key} became non-finite by t = {t_ms:.3f} ms (neuron position {int(np.argmax(bad))}); "
                           "the step is too large for this method: lower integrator.dt_ms or use exp_euler")
