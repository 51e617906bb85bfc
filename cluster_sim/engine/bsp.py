"""The bulk-synchronous backend: integrate one interval (compiled), synchronise, exchange spikes,
deliver them into the ring buffers, and checkpoint at interval boundaries.

One rank or many run the same loop; only the ``Exchange`` and the set of local neurons differ.
The lifecycle around it (files, resume, run.json, signals) is the run layer's (``cluster_sim.run``).
"""
from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

import numpy as np

from cluster_sim.engine.delivery import RingBuffers, SpikeBatch
from cluster_sim.engine.exchange import AllgatherExchange, AlltoallExchange, Exchange, HorovodExchange, LocalExchange
from cluster_sim.engine.integrators import STAGES
from cluster_sim.engine.sources import local_sources, source_spikes
from cluster_sim.errors import RunError
from cluster_sim.models.synapses import GradedKinetic
from cluster_sim.network.build import Network
from cluster_sim.record import checkpoint as ckpt
from cluster_sim.run.context import RunContext
from cluster_sim.spec.schema import JobSpec
from cluster_sim.spec.timing import interval_steps


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


class BSPBackend:
    mode = "bsp"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        spec, net = ctx.spec, ctx.net
        with ctx.timers.clock("build"):
            self.m = interval_steps(spec)
            self.rings = RingBuffers(net, self.m, spec.integrator.precision)
            self.exchange = make_exchange(spec, ctx.comm, net)
        self.dt = spec.integrator.dt_ms
        self.total_steps = int(round(spec.simulation.duration_ms / self.dt))
        self.step = int(ctx.manifest["step"]) if ctx.manifest else 0
        self.synapse_events = 0
        # Split intervals into two epochs where spikes are delivered (see run()).
        self.overlap = overlap_epochs(spec.engine.overlap, ctx.device)
        self.split = self.overlap and bool(self.rings.routes)

    # -- setup ------------------------------------------------------------------------------
    def prepare(self) -> None:
        import tensorflow as tf

        from cluster_sim.engine.kernel import IntervalKernel, initial_state

        ctx, spec, net = self.ctx, self.ctx.spec, self.ctx.net
        with tf.device(ctx.device):
            self.kernel = IntervalKernel(net, precision=spec.integrator.precision, method=spec.integrator.method,
                                         dt_ms=self.dt, jit_compile=spec.engine.jit_compile, loop=spec.engine.loop)
            state0 = initial_state(net)
            if ctx.manifest is not None:
                state0 = _restore(ckpt.load_parts(ctx.out, ctx.manifest), net, list(state0), self.rings,
                                  int(ctx.manifest["step"]))
            self.state = self.kernel.to_device(state0)
            # Trace and compile outside the timed integration (for every epoch length used).
            for n in sorted(set(epoch_lengths(self.m, self.split, self.step, self.total_steps))):
                self.kernel.run(self.state, self.step, n, np.zeros((n, self.rings.width), self.rings.buffer.dtype))
        self.exchange.barrier()

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> str:
        """With ``engine.overlap``, epochs pipelined two deep: while the kernel integrates epoch
        e+1 (in a worker thread; TensorFlow releases the GIL), this thread exchanges and delivers
        epoch e's spikes and writes output; without, one interval after the other. An epoch is half an interval where spikes cross (two consecutive
        epochs are at most one minimum delay + 1 step long, so e+1 never needs e's spikes:
        Arbor's half-min-delay epochs), the whole interval where nothing is delivered."""
        from concurrent.futures import Future, ThreadPoolExecutor

        ctx, spec, net, dt, m, timers = self.ctx, self.ctx.spec, self.ctx.net, self.dt, self.m, self.ctx.timers
        kernel, rings, exchange = self.kernel, self.rings, self.exchange
        strides = {r.name: int(round(r.sampling_ms / dt)) for r in spec.recordings}
        # Which columns of each recording this rank holds (positions in the spec's neuron list).
        self.rec_cols: dict[str, np.ndarray] = {}
        for name, pop, _, pos in kernel.layout.recordings:
            gids_here = net.populations[pop].local[pos]
            order = {n: i for i, n in enumerate(next(r for r in spec.recordings if r.name == name).neurons)}
            self.rec_cols[name] = np.array([order[int(g)] for g in gids_here], np.int64)
        fault = _injected_fault()
        flush_every = max(1, int(round(spec.output.flush_every_ms / dt / m)))
        ckpt_every_iv = int(round(ctx.checkpoint_every_ms / dt / m)) if ctx.checkpoint_every_ms else 0
        sources = local_sources(net)
        self.pending_spikes: list[tuple[np.ndarray, np.ndarray]] = []  # (gids, times)
        self.pending_samples: dict[str, list[np.ndarray]] = {name: [] for name in self.rec_cols}
        total = self.total_steps
        iv = 0
        stopping = False

        def call(state: Any, feeds: Any) -> Any:
            import tensorflow as tf

            with tf.device(ctx.device):  # device scopes are per thread
                return kernel.call(state, feeds)

        pool = ThreadPoolExecutor(1, thread_name_prefix="bsp-kernel") if self.overlap else None
        # The kernel thread needs the GIL for a moment to start a call and to fetch its results;
        # with Python's default 5 ms switch interval it would wait for this thread's host work.
        switch = sys.getswitchinterval()
        if pool is not None:
            sys.setswitchinterval(min(switch, 1e-4))

        def launch(state: Any, step: int) -> tuple[int, int, Any]:
            n = next_epoch(m, self.split, step, total)
            with timers.clock("integrate"):
                feeds = kernel.feeds(step, n, rings.take(step, n))  # every delivery it needs is done
            if pool is not None:
                return step, n, pool.submit(call, state, feeds)
            done: Future[Any] = Future()  # not overlapped: no thread handoff
            with timers.clock("integrate"):
                done.set_result(call(state, feeds))
            return step, n, done

        try:
            flight = launch(self.state, self.step) if self.step < total else None
            while flight is not None:
                step, n, fut = flight
                with timers.clock("integrate"):
                    out = fut.result()
                state = out[0]
                end = step + n
                iv_end = end % m == 0 or end == total
                # A checkpoint needs the pipeline empty; its times are known before launching.
                ckpt_here = iv_end and end < total and (stopping or (ckpt_every_iv > 0 and (iv + 1) % ckpt_every_iv == 0))
                flight = launch(state, end) if pool is not None and end < total and not ckpt_here else None
                with timers.clock("integrate"):
                    res = kernel.fetch(out)
                    smp, finite = res.samples, res.finite
                    batches = []
                    gids, rows, times = kernel.spike_events(res)
                    if gids.size:
                        self.pending_spikes.append((gids, times))
                        batches.append(SpikeBatch(gids, step + rows, times))
                    for src in sources:
                        times, ids, batch = source_spikes(src, step, n, dt)
                        if times.size:
                            self.pending_spikes.append((src.offset + ids, times))
                            batches.append(batch)
                    for name in self.rec_cols:
                        rows_ok = (step + np.arange(n) + 1) % strides[name] == 0
                        if rows_ok.any():
                            self.pending_samples[name].append(smp[name][rows_ok].astype(np.float64))
                with timers.clock("wait"):
                    stopping = exchange.any_flag(stopping or ctx.stop.signum is not None)
                with timers.clock("exchange"):
                    arriving = exchange.exchange(SpikeBatch.concat(batches))
                with timers.clock("deliver"):
                    self.synapse_events += rings.deliver(arriving)
                self.step = end
                self.state = state
                if not finite:  # every variable, every epoch (checked inside the compiled call)
                    _check_finite(kernel.to_host(state), self.step * dt, net)
                if iv_end:
                    iv += 1
                    ckpt_here = ckpt_here or (stopping and flight is None and end < total)  # nothing in flight: stop now
                    if fault is not None and fault == (ctx.rank, iv):
                        raise RuntimeError(f"injected fault on rank {ctx.rank} at interval {iv} "
                                           f"(t = {self.step * dt:g} ms, unix time {time.time():.3f})")
                    if iv % flush_every == 0:
                        self._flush()
                    if ckpt_here:
                        self._checkpoint(kernel.to_host(state))
                        if stopping:
                            return "checkpointed"
                    ctx.update_progress(self.step * dt)
                if flight is None and end < total:  # not overlapped, or after a checkpoint
                    flight = launch(state, end)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)  # an error above leaves no kernel running
                sys.setswitchinterval(switch)
        self._flush()
        _check_finite(kernel.to_host(self.state), self.step * dt, net)
        return "completed"

    def _flush(self) -> None:
        """Gather this chunk's spikes and samples at rank 0 and append them to the files."""
        ctx = self.ctx
        with ctx.timers.clock("io"):
            mine = (list(self.pending_spikes),
                    {k: (self.rec_cols[k], np.concatenate(v, axis=0) if v else None) for k, v in self.pending_samples.items()})
            self.pending_spikes.clear()
            for v in self.pending_samples.values():
                v.clear()
            parts = self.exchange.gather(mine)
            if ctx.outputs is None or parts is None:  # only rank 0 receives the parts
                return
            for spikes, _ in parts:
                for gids, times in spikes:
                    ctx.outputs.add_spikes(gids, times)
            for r in ctx.spec.recordings:
                blocks = [(cols, data) for _, samples in parts for cols, data in [samples[r.name]]
                          if data is not None and cols.size]
                if blocks:
                    full = np.empty((blocks[0][1].shape[0], len(r.neurons)))
                    for cols, data in blocks:
                        full[:, cols] = data
                    ctx.outputs.add_samples(r.name, full)
            ctx.outputs.flush()

    def _checkpoint(self, host_state: dict[str, np.ndarray]) -> None:
        ctx = self.ctx
        self._flush()
        with ctx.timers.clock("checkpoint"):
            ctx.write_checkpoint_part(self.step, _checkpoint_arrays(ctx.net, host_state, self.rings))
            self.exchange.barrier()
            if ctx.is_root:
                ctx.commit_checkpoint(self.step, self.step * self.dt)
            self.exchange.barrier()

    # -- results ----------------------------------------------------------------------------
    def simulated_ms(self) -> float:
        return self.step * self.dt

    def rank_stats(self) -> dict[str, Any]:
        net = self.ctx.net
        return {"neurons": int(net.n_local_neurons), "synapses": int(net.n_local_synapses),
                "network_bytes": int(net.nbytes() + sum(r.nbytes for r in self.rings.rings.values())),
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                "synapse_events": self.synapse_events}

    def close(self) -> None:
        pass

    def summary(self, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        spec = self.ctx.spec
        return {"steps_per_neuron": self.step, "rhs_evals_per_neuron": self.step * STAGES[spec.integrator.method],
                "method": spec.integrator.method, "dt_ms": self.dt, "interval_steps": self.m,
                "epoch_steps": next_epoch(self.m, self.split, 0, max(self.total_steps, 1)),
                "exchange": spec.engine.exchange if self.ctx.size > 1 else "local",
                "synapse_events": int(sum(r["synapse_events"] for r in per_rank))}


def overlap_epochs(setting: str, device: str) -> bool:
    """engine.overlap: "auto" overlaps where the kernel runs on a GPU. On CPU the kernel thread
    and the host thread compete for the rank's cores: COBAHH 4000 on 1 rank ran 1.1x slower
    overlapped, COBAHH 16000 on 2 ranks bound one core each 1.3x slower (2 cores, AMD EPYC)."""
    return setting == "on" or (setting == "auto" and "GPU" in device.upper())


def next_epoch(m: int, split: bool, step: int, total: int) -> int:
    """Steps of the epoch starting at ``step``: up to the next interval boundary (a multiple of
    ``m``) or, with ``split``, the next half-interval boundary (k*m + ceil(m/2)), or the end.
    Two consecutive epochs span at most m + 1 steps, so spikes of one (arriving >= 1 + m steps
    after they fire) are first needed after the next."""
    half = -(-m // 2)
    base = step - step % m
    marks = [base + half, base + m] if split and half < m else [base + m]
    return min(min(b for b in marks if b > step), total) - step


def epoch_lengths(m: int, split: bool, step: int, total: int) -> list[int]:
    """Every distinct epoch length from ``step`` to ``total`` (the kernel compiles each): those up
    to the first interval boundary, of one whole interval, and of the last (shorter) interval."""
    seen: set[int] = set()

    def walk(pos: int, stop: int) -> None:
        while pos < stop:
            n = next_epoch(m, split, pos, total)
            seen.add(n)
            pos += n

    first = min(total, -(-step // m) * m)
    walk(step, first)
    walk(first, min(total, first + m))
    walk(max(first, total - total % m), total)
    return sorted(seen)


def _checkpoint_arrays(net: Network, host_state: dict[str, np.ndarray], rings: RingBuffers) -> dict[str, np.ndarray]:
    arrays = {f"gid/{name}": pop.local for name, pop in net.populations.items()}
    arrays.update({f"state/{k}": v for k, v in host_state.items()})
    arrays.update({f"ring/{k}": v for k, v in rings.snapshot().items()})
    return arrays


def _restore(parts: list[dict[str, np.ndarray]], net: Network, state_keys: list[str], rings: RingBuffers,
             step: int) -> dict[str, np.ndarray]:
    """Reassemble state and rings for this rank's neurons from any number of rank files."""
    owner_pop: dict[str, str] = {}  # state key -> population whose gids index it
    for name, population in net.populations.items():
        for var in list(population.model.variables) + ["fire_t"]:
            owner_pop[f"{name}.{var}"] = name
    for proj in net.projections:
        if isinstance(proj.synapse, GradedKinetic):
            for var in proj.synapse.variables:
                owner_pop[f"{proj.spec.name}.{var}"] = proj.source
    state = {}
    for key in state_keys:
        pop = owner_pop[key]
        values = np.full(net.populations[pop].count, np.nan)
        for part in parts:
            values[part[f"gid/{pop}"]] = part[f"state/{key}"]
        state[key] = values[net.populations[pop].local]
    restored = {}
    for key, ring in rings.rings.items():
        pop = key.split(".")[0]
        slots = np.zeros((parts[0][f"ring/{key}"].shape[0], net.populations[pop].count))  # as saved
        for part in parts:
            slots[:, part[f"gid/{pop}"]] = part[f"ring/{key}"]
        restored[key] = slots[:, net.populations[pop].local]
    rings.restore(restored, step)
    return state


def _injected_fault() -> tuple[int, int] | None:
    """Test hook: CLUSTER_SIM_INJECT_FAULT="RANK:INTERVAL" makes that rank raise after that
    interval, to test that one failing rank stops every rank."""
    raw = os.environ.get("CLUSTER_SIM_INJECT_FAULT")
    if not raw:
        return None
    r, _, i = raw.partition(":")
    return int(r), int(i)


def _check_finite(state: dict[str, np.ndarray], t_ms: float, net: Network) -> None:
    for key, arr in state.items():
        if key.endswith(".fire_t"):
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            owner = key.split(".")[0]
            pop = net.populations.get(owner)
            where = f"neuron {int(pop.local[int(np.argmax(bad))])} of {owner}" if pop is not None else f"position {int(np.argmax(bad))}"
            spec = net.spec
            raise RunError(
                f"state {key} became non-finite by t = {t_ms:.3f} ms ({where}; {int(bad.sum())} neurons). Likely causes: "
                f"a parameter at the edge of its range in populations.{owner}.params or the synapse weights "
                f"(a tiny capacitance or time constant, a huge conductance), or a step too large for "
                f"{spec.integrator.method} at dt_ms = {spec.integrator.dt_ms:g}: check those parameters, then lower "
                "integrator.dt_ms or use exp_euler")
