"""The asynchronous run: build, integrate with ``AsyncEngine`` as inputs become known, exchange
spikes and time promises point to point, record, checkpoint, and write run.json.

Checkpoints happen at grid times T_c (multiples of the minimum delay; every neuron stops there
anyway, so a checkpointed run is bitwise the same as an uninterrupted one). A rank checkpoints
once its neurons reached T_c and every source rank promised T_c (so all inputs from before
T_c are in its queue); rank 0 commits after every rank reported, then releases them. A signal
(SIGTERM/SIGUSR1) on any rank asks rank 0 to pick the earliest T_c no rank has passed.
"""
from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from cluster_sim import __version__
from cluster_sim.asyncmode import bdf
from cluster_sim.asyncmode.engine import AsyncEngine
from cluster_sim.asyncmode.local import build_local, check_async, is_source, lookahead_ms
from cluster_sim.asyncmode.p2p import CONTROL, DATA, OUTPUT, Mailbox, maybe_trace
from cluster_sim.engine.loop import RunResult, Timers, cpu_threads_for, resume_manifest, spec_digest
from cluster_sim.engine.stop import StopRequest
from cluster_sim.errors import EXIT_CHECKPOINTED, EXIT_OK
from cluster_sim.network.build import build_network
from cluster_sim.network.partition import local_indices, owner_of
from cluster_sim.progress import Progress
from cluster_sim.record import checkpoint as ckpt
from cluster_sim.record.spikes import SpikeWriter
from cluster_sim.record.traces import TraceWriter
from cluster_sim.asyncmode.sampling import SampleStore, TraceAssembler
from cluster_sim.spec.schema import JobSpec


def simulate_async(spec: JobSpec, out_dir: str | Path, *, resume: bool = False, checkpoint_every_ms: float | None = None,
                   progress: bool | None = None, device: str | None = None, comm: Any = None, startup_s: float = 0.0,
                   cpu_threads: int | None = None, stop_request: StopRequest | None = None) -> RunResult:
    t_wall0 = time.perf_counter()
    out = Path(out_dir)
    comm = maybe_trace(comm)
    size = comm.Get_size() if comm is not None else 1
    rank = comm.Get_rank() if comm is not None else 0
    is_root = rank == 0
    timers = Timers()
    timers.add("startup", startup_s)
    check_async(spec)
    D = lookahead_ms(spec)
    T = spec.simulation.duration_ms
    ckpt_every = spec.output.checkpoint_every_ms if checkpoint_every_ms is None else checkpoint_every_ms
    ck_iv = max(1, int(round(ckpt_every / D))) if ckpt_every else 0
    manifest = resume_manifest(spec, out, "async") if resume else None
    if manifest is not None:
        for phase, sec in manifest.get("phases", {}).items():
            timers.add(phase, sec)
    if is_root:
        out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    from cluster_sim.engine.device import select_device

    dev = select_device(device or spec.engine.device, cpu_threads_for(spec, size, cpu_threads))
    import tensorflow as tf

    timers.add("startup", time.perf_counter() - t0)
    with timers.clock("build"):
        net = build_network(spec, local_indices(spec, rank, size) if size > 1 else None)
        local = build_local(net, D)
        owner = owner_of(spec, size) if size > 1 else None
        # Who needs whose spikes: decided once, before the loop (the only collective exchange).
        needed_by, source_ranks = _routing(local, owner, rank, size, comm)
    with tf.device(dev):
        kernels = [bdf.shared_kernel(b.model, b.param_names, _stimuli(net), jit_compile=spec.engine.jit_compile)
                   for b in local.blocks]
    engine = AsyncEngine(local, D, T, kernels, rtol=spec.integrator.rtol, atol=spec.integrator.atol, rank=rank, owner=owner, source_spikes=_source_generator(spec, net, local))
    if manifest is not None:
        _restore(engine, ckpt.load_parts(out, manifest), int(manifest["step"]))
    mailbox = Mailbox(comm) if size > 1 else None

    writer = None
    if is_root:
        with timers.clock("io"):
            attrs = {"cluster_sim_version": __version__, "seed": spec.simulation.seed, "spec": json.dumps(spec.raw),
                     "mode": "async", "rtol": spec.integrator.rtol, "atol": spec.integrator.atol,
                     "populations": json.dumps([p.name for p in spec.populations])}
            writer = SpikeWriter(out / "spikes.h5", {p.name: p.count for p in spec.populations}, attrs,
                                 resume_counts=manifest.get("spike_counts") if manifest else None)
    # --- traces (issue 9 §3): engine.take_samples() -> rank 0's TraceAssembler -> TraceWriter ---
    traces: dict[str, TraceWriter] = {}
    assembler = None
    if is_root:
        start_rows = {r.name: int(manifest["trace_rows"][r.name]) if manifest else 0 for r in spec.recordings}
        assembler = TraceAssembler({r.name: len(r.neurons) for r in spec.recordings}, start_rows)
        with timers.clock("io"):
            for r in spec.recordings:
                traces[r.name] = TraceWriter(out / f"report_{r.name}.h5", r.population, r.variable, np.asarray(r.neurons),
                                             r.sampling_ms, "mV" if r.variable == "v" else "",
                                             resume_rows=start_rows[r.name] if manifest else None)

    def add_samples(samples: list[tuple[str, int, np.ndarray, np.ndarray]]) -> None:
        for name, row0, cols, data in samples:
            assembler.add(name, row0, cols, data)

    def write_traces() -> None:
        for name, tw in traces.items():
            tw.add(assembler.ready(name))
            tw.flush()
    # --- end traces ---
    n_spikes_pop = dict(manifest["n_spikes_pop"]) if manifest else {p.name: 0 for p in spec.populations}
    pending_out: list[tuple[np.ndarray, np.ndarray]] = []  # (gid, time) spikes to record
    pop_of = [(p.name, net.layout.offsets[net.layout.index(p.name)], p.count) for p in spec.populations]

    def record(gids: np.ndarray, times: np.ndarray) -> None:
        if gids.size:
            pending_out.append((gids, times))

    def write_local(parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for gids, times in parts:
            for name, off, cnt in pop_of:
                sel = (gids >= off) & (gids < off + cnt)
                if sel.any():
                    writer.add(name, times[sel], gids[sel] - off)
                    n_spikes_pop[name] += int(sel.sum())

    def ship_output(final: bool = False) -> None:
        with timers.clock("io"):
            parts = list(pending_out)
            pending_out.clear()
            samples = engine.take_samples()
            if is_root:
                write_local(parts)
                add_samples(samples)
                write_traces()
                writer.flush()
            else:
                mailbox.send(0, OUTPUT, (parts, samples, final))

    stop = stop_request or StopRequest().install()
    prog = Progress(T, enabled=progress if is_root else False, start_ms=engine.min_c() * D)
    sent_promise = {r: engine.min_c() for r in needed_by}
    finished_ranks: set[int] = set()  # ranks whose final OUTPUT rank 0 has received
    source_final = {r: False for r in source_ranks}
    ctl = {"stop_at": None, "freeze": None, "asked": False, "ckpt_done": set(), "replies": {}}
    status = "completed"
    next_ck = (engine.min_c() // ck_iv + 1) * ck_iv if ck_iv else None
    flush_iv = max(1, int(round(spec.output.flush_every_ms / D)))
    last_flush = engine.min_c()
    msgs_in = 0

    def handle(msgs: list[tuple[int, int, Any]]) -> None:
        nonlocal msgs_in
        for src, tag, obj in msgs:
            msgs_in += 1
            if tag == DATA:
                c, gids, times = obj
                with timers.clock("deliver"):
                    engine.add_spikes(gids, times)
                engine.note_promise(src, c)
                if c >= engine.k_end:
                    source_final[src] = True
            elif tag == OUTPUT:
                parts, samples, final = obj
                with timers.clock("io"):
                    write_local(parts)
                    add_samples(samples)
                if final:
                    finished_ranks.add(src)
            else:
                _control(src, obj)

    def _control(src: int, obj: tuple[str, int]) -> None:
        what, val = obj
        if what == "stop_req" and is_root and not ctl["asked"]:  # rank 0: freeze everyone
            ctl["asked"] = True
            for r in range(size):
                if r != 0:
                    mailbox.send(r, CONTROL, ("freeze", 0))
            _control(0, ("freeze", 0))
        elif what == "freeze":
            ctl["freeze"] = int(engine.c.max()) if engine.c.size else engine.min_c()
            if is_root:
                ctl["replies"][0] = ctl["freeze"]
            else:
                mailbox.send(0, CONTROL, ("frozen_at", ctl["freeze"]))
        elif what == "frozen_at":
            ctl["replies"][src] = val
        elif what == "stop_at":
            ctl["stop_at"], ctl["freeze"] = val, None
        elif what == "ckpt_done":
            ctl["ckpt_done"].add(src)
        if is_root and ctl["asked"] and ctl["stop_at"] is None and len(ctl["replies"]) == size:
            c_stop = max(ctl["replies"].values())
            for r in range(1, size):
                mailbox.send(r, CONTROL, ("stop_at", c_stop))
            ctl["stop_at"], ctl["freeze"] = c_stop, None

    def send_progress(spk_l: np.ndarray, spk_t: np.ndarray, force: bool = False) -> None:
        """Spikes to the ranks that need them, with this rank's promise to each."""
        if mailbox is None:
            return
        for r, need in needed_by.items():
            sel = need[spk_l] if spk_l.size else np.zeros(0, bool)
            c_r = int(engine.c[need].min()) if need.any() else engine.k_end
            if sel.any() or c_r > sent_promise[r] or force:
                mailbox.send(r, DATA, (c_r, local.gid[spk_l[sel]], spk_t[sel]))
                sent_promise[r] = c_r

    def wait_for_sources(c_needed: int) -> None:
        while any(engine.promise[r] < c_needed for r in source_ranks if r < engine.promise.size):
            with timers.clock("wait"):
                handle(mailbox.receive(block=True))

    def checkpoint(c_ck: int) -> None:
        with timers.clock("checkpoint"):
            if mailbox is not None:
                wait_for_sources(c_ck)
            ship_output()
            ckpt.write_rank_part(out, c_ck, rank, _snapshot(engine))
            if mailbox is None or is_root:
                while mailbox is not None and len(ctl["ckpt_done"]) < size - 1:
                    handle(mailbox.receive(block=True))
                writer.flush()
                write_traces()
                ckpt.commit(out, c_ck, size, {"spec_digest": spec_digest(spec), "mode": "async", "n_spikes_pop": n_spikes_pop,
                                              "phases": timers.seconds, "spike_counts": writer.counts,
                                              "trace_rows": {k: t.rows for k, t in traces.items()},
                                              "simulated_ms": c_ck * D, "grid_ms": D})
                ctl["ckpt_done"] = set()
                for r in range(1, size):
                    mailbox.send(r, CONTROL, ("committed", c_ck))
            else:
                mailbox.send(0, CONTROL, ("ckpt_done", c_ck))
                while True:  # hold until rank 0 committed (a rare, checkpoint-only rendezvous)
                    got = mailbox.receive_tag(0, CONTROL)
                    if got[0] == "committed":
                        break
                    _control(0, got)

    try:
        if comm is not None and hasattr(comm, "phase"):
            comm.phase = "loop"
        while True:
            if mailbox is not None:
                with timers.clock("exchange"):
                    handle(mailbox.receive(block=False))
            if stop.signum is not None and not ctl["asked"]:
                if mailbox is None:
                    ctl["stop_at"] = int(engine.c.max()) if engine.c.size else engine.min_c()
                elif is_root:
                    _control(0, ("stop_req", 0))
                else:
                    mailbox.send(0, CONTROL, ("stop_req", 0))
                ctl["asked"] = True
            cap = engine.k_end
            for lim in (next_ck, ctl["freeze"], ctl["stop_at"]):
                if lim is not None:
                    cap = min(cap, max(lim, engine.min_c()))
            if ctl["stop_at"] is not None and engine.min_c() >= ctl["stop_at"] and not engine.done():
                checkpoint(ctl["stop_at"])
                status = "checkpointed"
                break
            if next_ck is not None and engine.min_c() >= next_ck and next_ck < engine.k_end:
                checkpoint(next_ck)
                next_ck += ck_iv
                continue
            nb = engine.next_batch(cap)
            if nb is not None:
                batch, k = nb
                with timers.clock("integrate"):
                    src_out = engine._source_window(k)
                    spk_l, spk_t = engine.run_interval(batch, k)
                for gids, times in src_out:
                    own = (owner[gids] == rank) if owner is not None else np.ones(gids.size, bool)
                    record(gids[own], times[own])
                if spk_l.size:
                    record(local.gid[spk_l], spk_t)
                    with timers.clock("deliver"):
                        engine.add_spikes(local.gid[spk_l], spk_t)
                with timers.clock("exchange"):
                    send_progress(spk_l, spk_t)
                if engine.min_c() - last_flush >= flush_iv:
                    ship_output()
                    last_flush = engine.min_c()
                prog.update(engine.min_c() * D, sum(n_spikes_pop.values()))
                continue
            if engine.done():
                if mailbox is None:
                    break
                send_progress(np.zeros(0, np.int64), np.zeros(0))
                if all(source_final.values()) and (not is_root or len(finished_ranks) == size - 1):
                    break
            with timers.clock("wait"):
                handle(mailbox.receive(block=True))
        # Finish: the last spikes to rank 0, which waits for everyone's final output.
        if status == "completed":
            if is_root:
                ship_output()
            elif mailbox is not None:
                ship_output(final=True)
        if mailbox is not None:
            if comm is not None and hasattr(comm, "phase"):
                comm.phase = "finish"
            mailbox.finish()
        prog.update(engine.min_c() * D, sum(n_spikes_pop.values()), force=True)
    finally:
        prog.close()
        stop.restore()
        if writer is not None:
            writer.close()
        for tw in traces.values():
            tw.close()

    return RunResult(EXIT_CHECKPOINTED if status == "checkpointed" else EXIT_OK,
                     _summary(spec, out, engine, local, net, comm, timers, status, n_spikes_pop, dev, D, size, rank,
                              t_wall0, startup_s, manifest, mailbox, msgs_in))


def _stimuli(net: Any) -> list[bdf.Stimulus]:
    return [bdf.Stimulus(s.waveform.shape, dict(s.params)) for s in net.stimuli]


def _routing(local: Any, owner: np.ndarray | None, rank: int, size: int, comm: Any) -> tuple[dict[int, np.ndarray], set[int]]:
    """(rank -> bool mask over local neurons whose spikes it needs, ranks this one needs)."""
    if owner is None:
        return {}, set()
    syn = local.syn
    dyn = np.unique(syn.src[~syn.from_source_pop])
    remote = dyn[owner[dyn] != rank]
    asks = [remote[owner[remote] == r] for r in range(size)]
    got = comm.alltoall(asks)
    index = {int(g): i for i, g in enumerate(local.gid)}
    needed_by = {}
    for r, gids in enumerate(got):
        if r != rank and len(gids):
            mask = np.zeros(local.n_local, bool)
            mask[[index[int(g)] for g in gids]] = True
            needed_by[r] = mask
    return needed_by, {r for r in range(size) if r != rank and asks[r].size}


def _source_generator(spec: JobSpec, net: Any, local: Any) -> Any:
    """Spike sources' output for a time window: those feeding local targets and the local ones
    (recorded here). Computed where needed from the counter-based RNG, never sent."""
    pops = [(name, pop) for name, pop in net.populations.items() if is_source(pop.model)]
    if not pops:
        return None
    from cluster_sim.models.poisson import source_key, spike_times

    syn = local.syn
    fed = np.unique(syn.src[syn.from_source_pop])
    plan = []
    for name, pop in pops:
        off = net.layout.offsets[net.layout.index(name)]
        idx = np.union1d(fed[(fed >= off) & (fed < off + pop.count)] - off, pop.local)
        plan.append((pop.params, source_key(spec.simulation.seed, name), idx, off))

    def window(_: np.ndarray, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        g, t = [], []
        for params, key, idx, off in plan:
            which, times = spike_times(params, key, (off + idx).astype(np.int64), t0, t1)  # global ids, as BSP
            g.append(off + idx[which])
            t.append(times)
        return np.concatenate(g).astype(np.int64), np.concatenate(t)

    return window


def _snapshot(engine: AsyncEngine) -> dict[str, np.ndarray]:
    """Engine state keyed by gid, so that any number of ranks can resume it."""
    arrays: dict[str, np.ndarray] = {"gid": engine.local.gid, "c": engine.c, "sources_done_k": np.array([engine.sources_done_k])}
    for b, st in zip(engine.local.blocks, engine.states):
        arrays[f"{b.model.name}/gid"] = b.gid
        for k, v in st.items():
            arrays[f"{b.model.name}/{k}"] = v
    for k, v in engine.counters.items():
        arrays[f"count/{k}"] = v
    q = engine.queue.arrays()
    for k, v in q.items():
        arrays[f"queue/{k}"] = engine.local.gid[v.astype(np.int64)] if (k == "tgt" and v.size) else v
    return arrays


def _restore(engine: AsyncEngine, parts: list[dict[str, np.ndarray]], c_ck: int) -> None:
    local = engine.local
    pos = {int(g): i for i, g in enumerate(local.gid)}
    for part in parts:
        mine = np.array([int(g) in pos for g in part["gid"]], bool)
        engine.c[[pos[int(g)] for g in part["gid"][mine]]] = part["c"][mine]
        for k in engine.counters:
            engine.counters[k][[pos[int(g)] for g in part["gid"][mine]]] = part[f"count/{k}"][mine]
        for b, st in zip(local.blocks, engine.states):
            key = f"{b.model.name}/gid"
            if key not in part:
                continue
            row_of = {int(g): i for i, g in enumerate(b.gid)}
            src_rows = [i for i, g in enumerate(part[key]) if int(g) in row_of]
            dst_rows = [row_of[int(part[key][i])] for i in src_rows]
            for k in st:
                v = part[f"{b.model.name}/{k}"]
                if k == "D":
                    st[k][:, dst_rows] = v[:, src_rows]
                else:
                    st[k][dst_rows] = v[src_rows]
        tg = part["queue/tgt"].astype(np.int64)
        sel = np.array([int(g) in pos for g in tg], bool) if tg.size else np.zeros(0, bool)
        if sel.any():
            engine.queue.push(**{k: (np.array([pos[int(g)] for g in tg[sel]]) if k == "tgt" else part[f"queue/{k}"][sel])
                                 for k in engine.queue.KEYS})
    # Breakpoint events were re-queued at construction: keep only those still ahead.
    q = engine.queue.arrays()
    keep = ~((q["src"] == -1) & (q["arrive"] < c_ck * engine.D)) if q["arrive"].size else np.zeros(0, bool)
    dup_free = {k: v[keep] for k, v in q.items()}
    for k in engine.queue.KEYS:
        engine.queue.cols[k] = [dup_free[k]]
    engine.promise[:] = c_ck
    engine.samples = SampleStore(local.recordings, engine.D, c_ck)  # rows before T_c are in the files
    engine.sources_done_k = c_ck  # spike-source windows before T_c are already in the queue


def _summary(spec: JobSpec, out: Path, engine: AsyncEngine, local: Any, net: Any, comm: Any, timers: Timers, status: str,
             n_spikes_pop: dict[str, int], dev: str, D: float, size: int, rank: int, t_wall0: float, startup_s: float,
             manifest: Any, mailbox: Any, msgs_in: int) -> dict[str, Any]:
    simulated = min(engine.min_c() * D, spec.simulation.duration_ms)
    mine = {"rank": rank, "neurons": int(local.n_local), "synapses": int(local.syn.src.size),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "messages_sent": int(sum(mailbox.sent.values())) if mailbox else 0, "messages_received": msgs_in,
            **{f"sum_{k}": int(v.sum()) for k, v in engine.counters.items()},
            **{k: round(v, 6) for k, v in timers.seconds.items()}}
    per_rank = comm.gather(mine, root=0) if comm is not None else [mine]  # after the loop
    if comm is not None and hasattr(comm, "dump"):
        comm.dump()
    if rank != 0:
        return {}
    n_int = max(1, sum(r["neurons"] for r in per_rank))
    tot = {k: sum(r[f"sum_{k}"] for r in per_rank) for k in bdf.COUNTER_KEYS}
    wall = time.perf_counter() - t_wall0 + startup_s
    compute = [r["integrate"] + r["deliver"] for r in per_rank]
    waited = [r["integrate"] + r["deliver"] + r["wait"] for r in per_rank]
    info = {
        "name": spec.name, "version": __version__, "status": status, "mode": "async",
        "n_neurons": spec.n_neurons, "n_synapses": int(sum(r["synapses"] for r in per_rank)),
        "n_spikes": int(sum(n_spikes_pop.values())), "n_spikes_by_population": n_spikes_pop,
        "rates_hz": {p.name: n_spikes_pop[p.name] / (p.count * simulated * 1e-3) if simulated else 0.0 for p in spec.populations},
        "simulated_ms": simulated, "duration_ms": spec.simulation.duration_ms, "wall_seconds": wall,
        "real_time_factor": wall / (simulated * 1e-3) if simulated else math.inf,
        "steps_per_neuron": tot["steps"] / n_int, "rhs_evals_per_neuron": tot["rhs"] / n_int,
        "rejected_steps_per_neuron": tot["rejected"] / n_int, "restarts_per_neuron": tot["restarts"] / n_int,
        "newton_failures_per_neuron": tot["newton_fail"] / n_int, "integrated_neurons": n_int,
        "method": "bdf1-5 (per-neuron variable step, diagonal Newton)", "rtol": spec.integrator.rtol,
        "atol": spec.integrator.atol, "grid_ms": D, "precision": "float64", "seed": spec.simulation.seed, "ranks": size,
        "partition": spec.engine.partition, "device": dev,
        "messages": int(sum(r["messages_sent"] for r in per_rank)),
        "phases": dict(timers.seconds), "per_rank": per_rank,
        "load_balance": (float(np.mean(compute)) / max(waited)) if max(waited) > 0 else 1.0,
        "resumed_from_ms": float(manifest["simulated_ms"]) if manifest else None,
    }
    ckpt.atomic_write_json(out / "run.json", info)
    return info
