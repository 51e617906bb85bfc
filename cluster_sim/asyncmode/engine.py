"""The per-rank asynchronous scheduler: which neurons may advance, how far, and with which input
events. No MPI and no files: remote progress arrives through ``note_promise`` / ``add_spikes``
and spikes leave as return values, so this runs (and is tested) on one process as well.

Time is cut into a grid of spacing D = the minimum synaptic delay. Neuron i has completed c_i
grid intervals (its time is c_i·D). It may integrate interval c_i when every presynaptic source
s has completed c_s ≥ c_i + 1 - lag(s→i), lag = ⌊delay/D⌋ ≥ 1: then every input arriving
before (c_i + 1)·D is known ("exhaustive yet not speculative": nothing is ever rolled back).
Inside the interval the neuron takes its own error-controlled BDF steps, stopping exactly at
each input. Its step sequence depends only on its own inputs and the grid — never on when a
message happened to arrive — so spikes are identical for any number of ranks and any partition.
No deadlock is possible: the neuron with the smallest c anywhere can always advance.

The scheduler advances the local neurons furthest behind first (smallest c), as a batch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from cluster_sim.asyncmode import bdf, sampling
from cluster_sim.asyncmode.groups import new_group_state
from cluster_sim.asyncmode.local import LocalNetwork
from cluster_sim.errors import RunError

MAX_ITER_PER_CALL = 256  # the early return of large batches, not this cap, keeps lanes busy
EVENTS_PER_CALL = 8
GROUP_ITER_PER_CALL = 4096  # a group is one lane: no batch to keep in step, so long calls
SPIKES_PER_CALL = 4  # spike slots per neuron and call: a neuron pauses only once they are full


BUCKET_STEP = 8  # each batch size of the in-call ladder is this many times the next smaller one


def buckets(full: int) -> list[int]:
    """The padded batch sizes of a block of ``full`` neurons, smallest first: 32, 256, ... up to
    the whole block rounded up to 32. Every call has the largest; its live lanes move down the
    ladder inside the call as they finish (each size is one more loop body in the compiled
    call). Sizes are multiples of 32 (XLA's vector path for every neuron, hence bitwise identity
    for any batch composition); steps of BUCKET_STEP keep them to ~log8(full)."""
    top = max(32, -(-full // 32) * 32)
    out = [32]
    while out[-1] * BUCKET_STEP < top:
        out.append(out[-1] * BUCKET_STEP)
    if top <= out[-1]:
        return out
    if len(out) > 1 and top < 2 * out[-1]:  # a top size just above a rung replaces it
        out[-1] = top
        return out
    return out + [top]


@dataclass
class EventQueue:
    """Pending input jumps: arrival time, local target, variable, weight, and the keys that fix
    the order of summation (source gid, synapse order, source spike time)."""

    KEYS: ClassVar[tuple[str, ...]] = ("arrive", "tgt", "var", "w", "src", "row", "spk_t")
    cols: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in EventQueue.KEYS})

    def push(self, **arrays: np.ndarray) -> None:
        for k in self.KEYS:
            self.cols[k].append(np.asarray(arrays[k]))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for k, parts in self.cols.items():
            out[k] = np.concatenate(parts) if parts else np.zeros(0)
            self.cols[k] = [out[k]] if out[k].size else []
        return out

    def take(self, members: np.ndarray, before: float) -> dict[str, np.ndarray]:
        """Remove and return the events of ``members`` (bool over local neurons) arriving before
        ``before``, sorted by (target, arrival, source, synapse order, spike time)."""
        a = self.arrays()
        if a["arrive"].size == 0:
            return a
        sel = members[a["tgt"].astype(np.int64)] & (a["arrive"] < before)
        got = {k: v[sel] for k, v in a.items()}
        for k in self.KEYS:
            self.cols[k] = [a[k][~sel]]
        order = np.lexsort((got["spk_t"], got["row"], got["src"], got["arrive"], got["tgt"]))
        return {k: v[order] for k, v in got.items()}

@dataclass
class GroupEvents:
    """A coupled group's pending input jumps, by state column: inputs taken from the queue and
    the transmitter pulses its own members' spikes start (which may lie in later intervals)."""

    KEYS: ClassVar[tuple[str, ...]] = ("arrive", "col", "w", "src", "row", "spk_t")
    cols: dict[str, np.ndarray] = field(default_factory=lambda: {k: np.zeros(0) for k in GroupEvents.KEYS})

    def push(self, **arrays: Any) -> None:
        for k in self.KEYS:
            self.cols[k] = np.concatenate([self.cols[k], np.asarray(arrays[k], float)])

    def due(self, before: float) -> dict[str, np.ndarray]:
        """Pending events arriving before ``before``, sorted by (arrival, column, source, synapse
        order, spike time): the order in which jumps at one time are summed."""
        c = self.cols
        sel = c["arrive"] < before
        order = np.lexsort((c["spk_t"][sel], c["row"][sel], c["src"][sel], c["col"][sel], c["arrive"][sel]))
        return {k: v[sel][order] for k, v in c.items()}

    def drop_through(self, t: float) -> None:
        """Forget events at or before ``t`` (applied)."""
        keep = self.cols["arrive"] > t
        self.cols = {k: v[keep] for k, v in self.cols.items()}


class AsyncEngine:
    def __init__(self, local: LocalNetwork, D: float, t_end: float, kernels: list[Any], *, rtol: float, atol: float, rank: int,
                 owner: np.ndarray | None, source_spikes: Callable[[np.ndarray, float, float], tuple[np.ndarray, np.ndarray]] | None = None,
                 group_kernels: list[Any] | None = None) -> None:
        self.local, self.D, self.t_end = local, float(D), float(t_end)
        self.k_end = max(1, int(math.ceil(t_end / D - 1e-9)))
        self.kernels = kernels
        self.group_kernels = list(group_kernels or [])
        self.gstates = [new_group_state(g) for g in local.groups]
        self.gevents = [GroupEvents() for _ in local.groups]
        # Per group member: the transmitter pulses its spikes start (fixed by the network).
        self.gpulses = [[g.pulses_of(m) for m in range(g.lidx.size)] for g in local.groups]
        self.rtol, self.atol = float(rtol), float(atol)
        self.rank = rank
        n = local.n_local
        self.c = np.zeros(n, np.int64)
        self.states = [bdf.new_state(b.y0, 0.0) for b in local.blocks]
        self.queue = EventQueue()
        self.counters = {k: np.zeros(n, np.int64) for k in bdf.COUNTER_KEYS}
        # Kernel-call statistics of this process (run.json): calls, lanes passed (padding
        # included), lane-iterations executed (lanes × loop iterations) and useful (live lanes).
        self.calls = {"kernel_calls": 0, "lanes": 0, "lane_iterations": 0, "useful_lane_iterations": 0}
        self.compile_s = 0.0
        self.source_spikes = source_spikes
        self.sources_done_k = 0  # grid intervals of spike-source output generated so far
        # Recordings: every lane gets the same number of sample slots per call (one compiled
        # shape per run); a recording's samples of the interval occupy its own slot range.
        self.samples = sampling.SampleStore(local.recordings, self.D)
        self.slot_off, off = [], 0
        self.rec_col = []
        for rec in local.recordings:
            self.slot_off.append(off)
            off += sampling.slots_per_interval(rec, self.D)
            col = np.full(n, -1, np.int64)
            col[rec.lidx] = np.arange(rec.lidx.size)
            self.rec_col.append(col)
        self.n_slots = max(1, off)
        syn = local.syn
        # Dependencies: rows of the synapse table whose source has dynamics.
        dep = ~syn.from_source_pop
        self.dep_tgt = syn.tgt[dep]
        self.dep_lag = syn.lag[dep]
        src = syn.src[dep]
        if owner is None:
            lidx_of_gid = {int(g): i for i, g in enumerate(local.gid)}
            self.dep_local = np.ones(src.size, bool)
            self.dep_L = np.array([lidx_of_gid[int(g)] for g in src], np.int64) if src.size else np.zeros(0, np.int64)
            self.dep_rank = np.zeros(src.size, np.int64)
        else:
            self.dep_rank = owner[src].astype(np.int64)
            self.dep_local = self.dep_rank == rank
            pos = np.searchsorted(np.sort(local.gid), src)
            order = np.argsort(local.gid)
            self.dep_L = np.where(self.dep_local, order[np.minimum(pos, max(local.gid.size - 1, 0))] if local.gid.size else 0, 0)
        by_t = np.argsort(self.dep_tgt, kind="stable")
        self.dep_tgt, self.dep_lag = self.dep_tgt[by_t], self.dep_lag[by_t]
        self.dep_local, self.dep_L, self.dep_rank = self.dep_local[by_t], self.dep_L[by_t], self.dep_rank[by_t]
        self.dep_starts = np.flatnonzero(np.r_[True, self.dep_tgt[1:] != self.dep_tgt[:-1]]) if self.dep_tgt.size else np.zeros(0, np.int64)
        self.promise = np.zeros(int(self.dep_rank.max()) + 1 if self.dep_rank.size else 1, np.int64)
        for t, who in local.breakpoints:  # input discontinuities restart the integrator there
            z = np.zeros(who.size)
            self.queue.push(arrive=np.full(who.size, t), tgt=who, var=np.zeros(who.size, np.int64), w=z,
                            src=np.full(who.size, -1), row=np.full(who.size, -1), spk_t=np.full(who.size, -math.inf))

    # -- what may run ---------------------------------------------------------------------------

    def note_promise(self, rank: int, c: int) -> None:
        """Every source on ``rank`` with targets here has completed ``c`` intervals (and its
        spikes before c·D have been handed to ``add_spikes``)."""
        if rank >= self.promise.size:
            self.promise = np.concatenate([self.promise, np.zeros(rank + 1 - self.promise.size, np.int64)])
        self.promise[rank] = max(self.promise[rank], c)

    def allowed(self) -> np.ndarray:
        """Per local neuron: the number of intervals it may have completed given what is known."""
        out = np.full(self.local.n_local, self.k_end, np.int64)
        if self.dep_tgt.size:
            known = np.where(self.dep_local, self.c[self.dep_L] if self.c.size else 0, self.promise[self.dep_rank])
            vals = np.minimum.reduceat(known + self.dep_lag, self.dep_starts)
            out[self.dep_tgt[self.dep_starts]] = np.minimum(out[self.dep_tgt[self.dep_starts]], vals)
        for g in self.local.groups:  # a group advances as one
            out[g.lidx] = out[g.lidx].min()
        return out

    def next_batch(self, cap: int) -> tuple[np.ndarray, int] | None:
        """The runnable neurons furthest behind (all at the same interval k), or None."""
        limit = np.minimum(self.allowed(), min(cap, self.k_end))
        ok = self.c < limit
        if not ok.any():
            return None
        k = int(self.c[ok].min())
        return np.flatnonzero(ok & (self.c == k)), k

    def done(self) -> bool:
        return bool((self.c >= self.k_end).all())

    def min_c(self) -> int:
        return int(self.c.min()) if self.c.size else self.k_end

    # -- inputs ---------------------------------------------------------------------------------

    def add_spikes(self, gids: np.ndarray, times: np.ndarray) -> int:
        """Turn spikes (of any source) into input events of the local targets; returns the number."""
        syn = self.local.syn
        rows, which = syn.rows_of(np.asarray(gids, np.int64))
        if rows.size:
            t = np.asarray(times, float)[which]
            self.queue.push(arrive=t + syn.delay[rows], tgt=syn.tgt[rows], var=syn.var[rows], w=syn.weight[rows],
                            src=syn.src[rows], row=rows, spk_t=t)
        return int(rows.size)

    def _source_window(self, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Spike-source output up to the end of interval k (inputs here and spikes to record)."""
        out = []
        while self.source_spikes is not None and self.sources_done_k <= k:
            j = self.sources_done_k
            gids, times = self.source_spikes(np.zeros(0), j * self.D, min((j + 1) * self.D, self.t_end))
            self.add_spikes(gids, times)
            out.append((gids, times))
            self.sources_done_k += 1
        return out

    # -- one interval ---------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Trace and compile every kernel shape the run will use (the batch buckets of each
        model) with inert lanes, so that compilation is startup and not integration time."""
        E = EVENTS_PER_CALL
        t0 = time.perf_counter()
        for block, kernel, st in zip(self.local.blocks, self.kernels, self.states):
            nv = st["D"].shape[2]
            top, stages = _ladder(block.gid.size)
            B = top + bdf.GUARD_LANES
            none = np.zeros(0, np.int64)
            sub = {k: _pad(v[none] if k != "D" else v[:, none], B, k) for k, v in st.items()}
            kernel.advance(sub, np.zeros(B), np.full((B, E), np.inf), np.zeros((B, E, nv)),
                           _pad(block.params[none], B, "params"), _pad(block.amps[none], B, "params"),
                           _pad(block.thresh[none], B, "params"), _pad(block.refr[none], B, "params"),
                           MAX_ITER_PER_CALL, self.rtol, self.atol, np.full((B, self.n_slots), np.inf),
                           spike_slots=SPIKES_PER_CALL, stages=stages)
        for g, kernel, st in zip(self.local.groups, self.group_kernels, self.gstates):
            inert = dict(st, t=np.zeros(1), restart=np.zeros(1, bool))
            kernel.advance(inert, np.zeros(1), np.full((1, E), np.inf), np.zeros((1, E, g.nv)), np.zeros((1, 0)),
                           np.zeros((1, 0)), g.thresh[None], g.refr[None], 1, self.rtol, self.atol, np.full((1, self.n_slots), np.inf))
        self.compile_s += time.perf_counter() - t0

    def run_interval(self, batch: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Integrate ``batch`` (local indices, all at interval k) to the end of interval k.
        Returns the spikes (local index, time)."""
        t_stop = min((k + 1) * self.D, self.t_end)
        members = np.zeros(self.local.n_local, bool)
        members[batch] = True
        ev = self.queue.take(members, t_stop)
        wins = [sampling.window(rec, k * self.D, t_stop) for rec in self.local.recordings]
        spk_l, spk_t = [], []
        for b_i, (block, kernel) in enumerate(zip(self.local.blocks, self.kernels)):
            rows = self.local.row_of[batch[self.local.block_of[batch] == b_i]]
            if rows.size == 0:
                continue
            ev_t, ev_w = self._event_arrays(block, rows, ev, len(block.model.variables))
            lidx = block.lidx[rows]
            smp_t = np.full((rows.size, self.n_slots), np.inf)
            for r_i, (_, times) in enumerate(wins):
                lanes = self.rec_col[r_i][lidx] >= 0
                smp_t[np.ix_(lanes, self.slot_off[r_i] + np.arange(times.size))] = times
            l_out, t_out, smp_v = self._integrate(b_i, kernel, rows, np.full(rows.size, t_stop), ev_t, ev_w, smp_t)
            for r_i, (s_rows, times) in enumerate(wins):
                lanes = np.flatnonzero(self.rec_col[r_i][lidx] >= 0)
                if lanes.size and s_rows.size:
                    vals = smp_v[lanes][:, self.slot_off[r_i] + np.arange(times.size), self.local.recordings[r_i].var]
                    self.samples.put(r_i, self.rec_col[r_i][lidx[lanes]], s_rows, vals)
            spk_l.append(l_out)
            spk_t.append(t_out)
        for g_i in np.unique(self.local.group_of[batch]):
            if g_i >= 0:
                l_out, t_out = self._run_group(int(g_i), k, t_stop, ev, wins)
                spk_l.append(l_out)
                spk_t.append(t_out)
        self.c[batch] += 1
        if not spk_l:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(spk_l), np.concatenate(spk_t)

    def _run_group(self, g_i: int, k: int, t_stop: float, ev: dict[str, np.ndarray],
                   wins: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Integrate coupled group ``g_i`` to ``t_stop``: its inputs from the queue (``ev``) and the
        pulses of its own spikes are stops; returns its spikes (local index, time)."""
        g, kernel, st, pend = self.local.groups[g_i], self.group_kernels[g_i], self.gstates[g_i], self.gevents[g_i]
        mine = self.local.group_of[ev["tgt"].astype(np.int64)] == g_i if ev["tgt"].size else np.zeros(0, bool)
        if mine.any():
            member = self.local.row_of[ev["tgt"][mine].astype(np.int64)]
            pend.push(arrive=ev["arrive"][mine], col=g.var_col(member, ev["var"][mine]), w=ev["w"][mine],
                      src=ev["src"][mine], row=ev["row"][mine], spk_t=ev["spk_t"][mine])
        # Sample slots of the recorded members (every recording's slots, as for blocks).
        smp_t = np.full((1, self.n_slots), np.inf)
        rec_members = []
        for r_i, (s_rows, times) in enumerate(wins):
            col = self.rec_col[r_i][g.lidx]
            m = np.flatnonzero(col >= 0)
            if m.size and times.size:
                smp_t[0, self.slot_off[r_i] + np.arange(times.size)] = times
                rec_members.append((r_i, m, s_rows, times))
        smp_v = np.full((self.n_slots, g.nv), np.nan)
        E, nv = EVENTS_PER_CALL, g.nv
        spk_l, spk_t = [], []
        pulses = self.gpulses[g_i]
        while True:
            due = pend.due(t_stop)
            times, first = np.unique(due["arrive"], return_index=True)
            if st["t"][0] >= t_stop and not (times.size and times[0] <= st["t"][0]):
                break
            ev_t = np.full((1, E), np.inf)
            ev_w = np.zeros((1, E, nv))
            use = times[:E]
            ev_t[0, :use.size] = use
            for j, tj in enumerate(use):
                at = due["arrive"] == tj
                np.add.at(ev_w[0, j], due["col"][at].astype(np.int64), due["w"][at])
            stop = min(t_stop, times[E]) if times.size > E else t_stop
            st["ev_ptr"][:] = 0
            out, spk, cnt, got = kernel.advance(st, np.array([stop]), ev_t, ev_w, np.zeros((1, 0)), np.zeros((1, 0)),
                                                g.thresh[None], g.refr[None], GROUP_ITER_PER_CALL, self.rtol, self.atol, smp_t)
            smp_v = np.where(np.isnan(got[0]), smp_v, got[0])
            st.update(out)
            for key, v in cnt.items():
                self.counters[key][g.lidx] += int(v[0])  # every member took the group's steps
            if out["failed"][0]:
                raise RunError(f"the BDF step size fell below {bdf.H_MIN_MS:g} ms for the coupled group of gid {g.key} "
                               f"({g.lidx.size} neurons) at t = {out['t'][0]:.6f} ms; loosen integrator.rtol/atol or "
                               "check the model parameters")
            n_used = int(out["ev_ptr"][0])
            if n_used:
                pend.drop_through(float(use[n_used - 1]))
            spk = np.atleast_2d(spk)[0]
            for mem in map(int, np.flatnonzero(~np.isnan(spk))):
                ts = float(spk[mem])
                spk_l.append(g.lidx[mem])
                spk_t.append(ts)
                for col, d, A, t_max, order in pulses[mem]:
                    on = ts + d
                    pend.push(arrive=[on, on + t_max], col=[col, col], w=[A, -A], src=[g.gid[mem]] * 2,
                              row=[-2 - order] * 2, spk_t=[ts, ts])
        st["ev_ptr"][:] = 0
        for r_i, m, s_rows, times in rec_members:
            vals = smp_v[self.slot_off[r_i] + np.arange(times.size)][:, g.var_col(m, np.full(m.size, self.local.recordings[r_i].var))]
            self.samples.put(r_i, self.rec_col[r_i][g.lidx[m]], s_rows, vals.T)
        if spk_l:
            return np.asarray(spk_l, np.int64), np.asarray(spk_t)
        return np.zeros(0, np.int64), np.zeros(0)

    def take_samples(self) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
        """Sampled rows all local recorded neurons have passed: (recording, first row, columns in
        the recording's neuron list, data [rows × columns]); each row is returned once."""
        return self.samples.take(self.c)

    def _event_arrays(self, block: Any, rows: np.ndarray, ev: dict[str, np.ndarray], nv: int) -> tuple[np.ndarray, np.ndarray]:
        """Per neuron of the batch: its distinct arrival times (padded with +inf) and the summed
        jump of every variable at each, summed in the queue's fixed order."""
        n = rows.size
        tgt = ev["tgt"].astype(np.int64)
        sel = np.isin(tgt, block.lidx[rows]) if tgt.size else np.zeros(0, bool)
        if not sel.any():
            return np.full((n, 1), np.inf), np.zeros((n, 1, nv))
        bpos = np.searchsorted(block.lidx[rows], tgt[sel])  # rows are sorted, so lidx[rows] is too
        arr, var, w = ev["arrive"][sel], ev["var"][sel].astype(np.int64), ev["w"][sel]
        new_group = np.r_[True, (bpos[1:] != bpos[:-1]) | (arr[1:] != arr[:-1])]
        gid_ = np.cumsum(new_group) - 1
        first = np.flatnonzero(new_group)
        # slot of each group within its neuron's row
        grp_neuron = bpos[first]
        grp_slot = np.arange(first.size) - np.searchsorted(grp_neuron, grp_neuron, side="left")
        width = int(grp_slot.max()) + 1
        ev_t = np.full((n, width), np.inf)
        ev_w = np.zeros((n, width, nv))
        ev_t[grp_neuron, grp_slot] = arr[first]
        np.add.at(ev_w, (bpos, grp_slot[gid_], var), w)
        return ev_t, ev_w

    def _integrate(self, b_i: int, kernel: Any, rows: np.ndarray, t_stop: np.ndarray, ev_t: np.ndarray,
                   ev_w: np.ndarray, smp_t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calls of the compiled kernel until every neuron of ``rows`` reached ``t_stop`` (one call,
        unless a neuron used up its spike slots, its events or MAX_ITER_PER_CALL). Each call gets
        fixed shapes (the block's largest bucket, EVENTS_PER_CALL events per neuron: a neuron with
        more stops at its first event not passed in), so XLA compiles once per block."""
        block, st = self.local.blocks[b_i], self.states[b_i]
        active = np.arange(rows.size)
        first = np.zeros(rows.size, np.int64)  # next unconsumed event per neuron
        n_events = (ev_t < np.inf).sum(axis=1)
        spk_l, spk_t = [], []
        nv = st["D"].shape[2]
        smp_v = np.full(smp_t.shape + (nv,), np.nan)
        E = EVENTS_PER_CALL
        ev_t = np.concatenate([ev_t, np.full((rows.size, E + 1), np.inf)], axis=1)
        ev_w = np.concatenate([ev_w, np.zeros((rows.size, E + 1, nv))], axis=1)
        top, stages = _ladder(block.gid.size)
        B = top + bdf.GUARD_LANES  # inert lanes at the end (see bdf.GUARD_LANES)
        while active.size:
            r = rows[active]
            n = active.size
            pad = B - n
            cols = first[active][:, None] + np.arange(E + 1)[None, :]
            et_all = np.take_along_axis(ev_t[active], cols, axis=1)
            ew = np.take_along_axis(ev_w[active], cols[:, :E, None], axis=1)
            stop_here = np.minimum(t_stop[active], et_all[:, E])  # stop at the first event not passed in
            st["ev_ptr"][r] = 0
            sub = {k: _pad(v[r] if k != "D" else v[:, r], pad, k) for k, v in st.items()}
            tt = np.concatenate([stop_here, np.zeros(pad)])
            et = np.concatenate([et_all[:, :E], np.full((pad, E), np.inf)])
            ew = np.concatenate([ew, np.zeros((pad, E, nv))])
            sm = np.concatenate([smp_t[active], np.full((pad, smp_t.shape[1]), np.inf)])
            out, spk, cnt, got = kernel.advance(sub, tt, et, ew, _pad(block.params[r], pad, "params"),
                                                _pad(block.amps[r], pad, "params"), _pad(block.thresh[r], pad, "params"),
                                                _pad(block.refr[r], pad, "params"), MAX_ITER_PER_CALL,
                                                self.rtol, self.atol, sm, spike_slots=SPIKES_PER_CALL, stages=stages)
            iters = cnt["iters"]
            self.calls["kernel_calls"] += 1
            self.calls["lanes"] += B
            sizes = [B] + [s_ + bdf.GUARD_LANES for s_ in stages]
            self.calls["lane_iterations"] += int(sum(b * int(t) for b, t in zip(sizes, kernel.last_trips)))
            self.calls["useful_lane_iterations"] += int(iters[:n].sum())
            got = got[:n]
            smp_v[active] = np.where(np.isnan(got), smp_v[active], got)
            for k, v in out.items():
                if k == "D":
                    st[k][:, r] = v[:, :n]
                else:
                    st[k][r] = v[:n]
            for k, v in cnt.items():
                self.counters[k][block.lidx[r]] += v[:n]
            if out["failed"][:n].any():
                bad = int(np.flatnonzero(out["failed"][:n])[0])
                raise RunError(f"the BDF step size fell below {bdf.H_MIN_MS:g} ms for neuron gid {int(block.gid[r[bad]])} "
                               f"at t = {out['t'][bad]:.6f} ms; loosen integrator.rtol/atol or check the model parameters")
            spk = spk.reshape(spk.shape[0], -1)  # [B, K] (one slot comes back as [B])
            lane, slot = np.nonzero(~np.isnan(spk[:n]))  # per lane, in the order fired
            if lane.size:
                spk_l.append(block.lidx[r[lane]])
                spk_t.append(spk[lane, slot])
            first[active] += out["ev_ptr"][:n]
            t = out["t"][:n]
            live = (t < t_stop[active]) | (first[active] < n_events[active])
            active = active[live]
        st["ev_ptr"][rows] = 0
        if spk_l:
            return np.concatenate(spk_l), np.concatenate(spk_t), smp_v
        return np.zeros(0, np.int64), np.zeros(0), smp_v


def _ladder(full: int) -> tuple[int, tuple[int, ...]]:
    """The batch of a block's calls (its largest bucket) and the smaller buckets, largest first,
    that the live lanes move down to inside the call (``bdf.BdfKernel.advance``'s stages)."""
    sizes = buckets(full)
    return sizes[-1], tuple(reversed(sizes[:-1]))


def _pad(x: np.ndarray, pad: int, key: str) -> np.ndarray:
    """Pad rows with inert neurons (t = stop = 0, no events)."""
    if pad == 0:
        return x
    if key == "D":
        return np.concatenate([x, np.zeros((x.shape[0], pad, x.shape[2]))], axis=1)
    fill = {"restart": False, "failed": False}.get(key, 0)
    return np.concatenate([x, np.full((pad,) + x.shape[1:], fill, dtype=x.dtype)])
