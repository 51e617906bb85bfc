"""The asynchronous backend: integrate with ``AsyncEngine`` as inputs become known, exchange
spikes and time promises point to point, and checkpoint at grid times.

Checkpoints happen at grid times T_c (multiples of the minimum delay; every neuron stops there
anyway, so a checkpointed run is bitwise the same as an uninterrupted one). A rank checkpoints
once its neurons reached T_c and every source rank promised T_c (so all inputs from before
T_c are in its queue); rank 0 commits after every rank reported, then releases them. A signal
(SIGTERM/SIGUSR1) on any rank asks rank 0 to pick the earliest T_c no rank has passed.
The lifecycle around it (files, resume, run.json, signals) is the run layer's (``cluster_sim.run``).
"""
from __future__ import annotations

import resource
from typing import Any

import numpy as np

from cluster_sim.asyncmode import bdf
from cluster_sim.asyncmode.engine import AsyncEngine
from cluster_sim.asyncmode.groups import shared_group_kernel
from cluster_sim.asyncmode.local import build_local, is_source, lookahead_ms
from cluster_sim.asyncmode.p2p import CONTROL, DATA, OUTPUT, Mailbox, maybe_trace
from cluster_sim.asyncmode.sampling import SampleStore, TraceAssembler
from cluster_sim.network.partition import owner_of
from cluster_sim.record import checkpoint as ckpt
from cluster_sim.run.context import RunContext
from cluster_sim.spec.schema import JobSpec


class AsyncBackend:
    mode = "async"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        ctx.comm = maybe_trace(ctx.comm)
        self.D = lookahead_ms(ctx.spec)
        self.msgs_in = 0

    def prepare(self) -> None:
        import tensorflow as tf

        ctx, spec, net = self.ctx, self.ctx.spec, self.ctx.net
        with ctx.timers.clock("build"):
            self.local = build_local(net, self.D)
            self.owner = owner_of(spec, ctx.size) if ctx.size > 1 else None
            # Who needs whose spikes: decided once, before the loop (the only collective exchange).
            self.needed_by, self.source_ranks = _routing(self.local, self.owner, ctx.rank, ctx.size, ctx.comm)
        with tf.device(ctx.device):
            kernels = [bdf.shared_kernel(b.model, b.param_names, _stimuli(net), jit_compile=spec.engine.jit_compile)
                       for b in self.local.blocks]
            group_kernels = [shared_group_kernel(g, _stimuli(net), jit_compile=spec.engine.jit_compile) for g in self.local.groups]
        self.engine = AsyncEngine(self.local, self.D, spec.simulation.duration_ms, kernels, rtol=spec.integrator.rtol,
                                  atol=spec.integrator.atol, rank=ctx.rank, owner=self.owner,
                                  source_spikes=_source_generator(spec, net, self.local), group_kernels=group_kernels)
        if ctx.manifest is not None:
            _restore(self.engine, ckpt.load_parts(ctx.out, ctx.manifest), int(ctx.manifest["step"]))
        with tf.device(ctx.device):
            self.engine.warm_up()  # compile every shape now: startup, not integration
        self._traces_at_start = self._traces()
        self.mailbox = Mailbox(ctx.comm) if ctx.size > 1 else None

    def _traces(self) -> int:
        kernels = list(self.engine.kernels) + list(self.engine.group_kernels)
        return int(sum(k.tracing_count() for k in kernels))

    def simulated_ms(self) -> float:
        return min(self.engine.min_c() * self.D, self.ctx.spec.simulation.duration_ms)

    def run(self) -> str:
        ctx, spec, engine, local = self.ctx, self.ctx.spec, self.engine, self.local
        # None on one rank; every use below is behind a size > 1 (or mailbox is not None) test
        mailbox: Any = self.mailbox
        comm, rank, size, is_root, timers, stop = ctx.comm, ctx.rank, ctx.size, ctx.is_root, ctx.timers, ctx.stop
        D, owner, needed_by, source_ranks = self.D, self.owner, self.needed_by, self.source_ranks
        ck_iv = max(1, int(round(ctx.checkpoint_every_ms / D))) if ctx.checkpoint_every_ms else 0
        pending_out: list[tuple[np.ndarray, np.ndarray]] = []  # (gid, time) spikes to record
        # Traces: each rank's samples (from its neurons' dense output) are assembled into whole
        # rows at rank 0, which hands complete rows to the report writers.
        assembler = None
        if is_root:
            start_rows = {r.name: int(ctx.manifest["trace_rows"][r.name]) if ctx.manifest else 0 for r in spec.recordings}
            assembler = TraceAssembler({r.name: len(r.neurons) for r in spec.recordings}, start_rows)

        def add_samples(samples: list[tuple[str, int, np.ndarray, np.ndarray]]) -> None:
            assert assembler is not None and ctx.outputs is not None
            for name, row0, cols, data in samples:
                assembler.add(name, row0, cols, data)
            for r in spec.recordings:
                rows = assembler.ready(r.name)
                if rows.shape[0]:
                    ctx.outputs.add_samples(r.name, rows)

        def record(gids: np.ndarray, times: np.ndarray) -> None:
            if gids.size:
                pending_out.append((gids, times))

        def write_local(parts: list[tuple[np.ndarray, np.ndarray]]) -> None:
            assert ctx.outputs is not None
            for gids, times in parts:
                ctx.outputs.add_spikes(gids, times)

        def ship_output(final: bool = False) -> None:
            with timers.clock("io"):
                parts = list(pending_out)
                pending_out.clear()
                samples = engine.take_samples()
                if is_root:
                    write_local(parts)
                    add_samples(samples)
                    assert ctx.outputs is not None
                    ctx.outputs.flush()
                else:
                    mailbox.send(0, OUTPUT, (parts, samples, final))

        sent_promise = {r: engine.min_c() for r in needed_by}
        finished_ranks: set[int] = set()  # ranks whose final OUTPUT rank 0 has received
        source_final = {r: False for r in source_ranks}
        ctl: dict[str, Any] = {"stop_at": None, "freeze": None, "asked": False, "ckpt_done": set(), "replies": {}}
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
                ctx.write_checkpoint_part(c_ck, _snapshot(engine))
                if mailbox is None or is_root:
                    while mailbox is not None and len(ctl["ckpt_done"]) < size - 1:
                        handle(mailbox.receive(block=True))
                    ctx.commit_checkpoint(c_ck, c_ck * D, {"grid_ms": D})
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
                    ctx.update_progress(engine.min_c() * D)
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
        finally:
            self.msgs_in = msgs_in

        return status

    def rank_stats(self) -> dict[str, Any]:
        mailbox = self.mailbox
        in_groups = sum(p.n_syn for g in self.local.groups for p in g.parts)
        return {"neurons": int(self.local.n_local), "synapses": int(self.local.syn.src.size) + in_groups,
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                "messages_sent": int(sum(mailbox.sent.values())) if mailbox else 0, "messages_received": self.msgs_in,
                "traces_during_run": self._traces() - self._traces_at_start,
                "compile_seconds": self.engine.compile_s, **self.engine.calls,
                **{f"sum_{k}": int(v.sum()) for k, v in self.engine.counters.items()}}

    def close(self) -> None:
        comm = self.ctx.comm
        if comm is not None and hasattr(comm, "dump"):
            comm.dump()

    def summary(self, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        spec = self.ctx.spec
        n_int = max(1, sum(r["neurons"] for r in per_rank))
        tot = {k: sum(r[f"sum_{k}"] for r in per_rank) for k in bdf.COUNTER_KEYS}
        return {"steps_per_neuron": tot["steps"] / n_int, "rhs_evals_per_neuron": tot["rhs"] / n_int,
                "rejected_steps_per_neuron": tot["rejected"] / n_int, "restarts_per_neuron": tot["restarts"] / n_int,
                "newton_failures_per_neuron": tot["newton_fail"] / n_int, "integrated_neurons": n_int,
                "method": "bdf1-5 (per-neuron variable step, diagonal Newton)", "rtol": spec.integrator.rtol,
                "atol": spec.integrator.atol, "grid_ms": self.D,
                "messages": int(sum(r["messages_sent"] for r in per_rank)),
                # kernel shapes traced (and compiled) after startup, summed over ranks: 0 when
                # every shape was compiled during startup
                "traces_during_run": int(sum(r["traces_during_run"] for r in per_rank)),
                **_call_summary(per_rank)}


def _call_summary(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Kernel-call figures of this incarnation over all ranks: how busy the lanes were."""
    calls = sum(r["kernel_calls"] for r in per_rank)
    executed = sum(r["lane_iterations"] for r in per_rank)
    return {"kernel_calls": int(calls),
            "lanes_per_call": sum(r["lanes"] for r in per_rank) / calls if calls else 0.0,
            # share of the executed lane-iterations (padding and idle lanes included) that advanced a neuron
            "useful_lane_fraction": sum(r["useful_lane_iterations"] for r in per_rank) / executed if executed else 0.0,
            # tracing + XLA compilation of every batch shape during startup, slowest rank
            "compile_seconds": max((r["compile_seconds"] for r in per_rank), default=0.0)}


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
    for g, st, pend in zip(engine.local.groups, engine.gstates, engine.gevents):
        for k, v in st.items():
            arrays[f"group{g.key}/{k}"] = v
        for k, v in pend.cols.items():
            arrays[f"group{g.key}/events/{k}"] = v
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
        for g, st, pend in zip(local.groups, engine.gstates, engine.gevents):  # a group is whole on one rank
            if f"group{g.key}/t" in part:
                for k in st:
                    st[k] = part[f"group{g.key}/{k}"].copy()
                pend.cols = {k: part[f"group{g.key}/events/{k}"].copy() for k in pend.KEYS}
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


