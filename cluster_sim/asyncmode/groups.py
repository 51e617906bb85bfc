"""Neurons tied by graded (in-step) couplings, integrated as one coupled system per group.

A group is a connected component of the graded projections among this rank's neurons (the
partition keeps components whole). Its state is one lane of the BDF kernel, laid out variable-
major per population segment (``v`` of every member, then ``m`` of every member, ...), then the
synaptic state of every graded projection once per source neuron (as BSP stores it), then, for
transmitter-pulse projections, the transmitter [T] of each source as a state variable that only
events change. The group shares one step and order. Error control is the max norm over all its
variables, so that a group's size does not dilute one neuron's error (an RMS over 1000
variables would let one spiking neuron's error grow ~30×). Newton uses the exact diagonal of the
coupled Jacobian (each variable's own a in dx/dt = a·x + b, the membrane term including the
synaptic conductances).

Transmitter pulses (a window [t_s + d, t_s + d + t_max) after a presynaptic spike) are input
events of the group: +A at the start, -A at the end, both exact stops. With d = 0 the pulse
starts inside the step that found the spike, so the kernel cuts that step back to the spike
time (``BdfKernel.cut_at_spike``) and restarts there (for d > 0 too: a step may overshoot
t_s + d). No MPI and no files here.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from cluster_sim.asyncmode import bdf
from cluster_sim.models.base import Drive
from cluster_sim.models.synapses import GradedKinetic
from cluster_sim.network.build import Network, graded_indices


@dataclass
class Segment:
    """The members of one population in a group."""

    pop: str
    model: Any
    params: dict[str, float]
    pos: np.ndarray  # positions within the population's local arrays, sorted
    off: int  # first column
    amps: list[np.ndarray]  # per stimulus: amplitude of each member

    @property
    def n(self) -> int:
        return int(self.pos.size)

    def col(self, var: int, i: np.ndarray | int) -> Any:
        return self.off + var * self.n + np.asarray(i)


@dataclass
class GradedPart:
    """One graded projection's synapses onto a group's members."""

    name: str
    order: int  # projection order in the spec (fixes summation order of its events)
    syn: GradedKinetic
    params: dict[str, float]
    src_seg: int
    src_idx: np.ndarray  # members of the source segment that are sources here
    tgt_seg: int
    off: int  # first column of the synaptic state (variable-major over sources)
    t_off: int  # pulse projections: first column of the transmitter of each source; else -1
    delay_ms: float
    src_ell: np.ndarray  # [n target members, width] index into src_idx
    w_ell: np.ndarray  # [n target members, width] weights (0 pads)
    n_syn: int = 0

    @property
    def n_src(self) -> int:
        return int(self.src_idx.size)


@dataclass
class Group:
    segments: list[Segment]
    parts: list[GradedPart]
    nv: int
    lidx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rank-local index of each member
    gid: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    y0: np.ndarray = field(default_factory=lambda: np.zeros(0))
    thresh: np.ndarray = field(default_factory=lambda: np.zeros(0))
    refr: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def key(self) -> int:
        """The group's name in checkpoints (its smallest gid: the same on any rank count)."""
        return int(self.gid.min())

    def member_seg(self) -> tuple[np.ndarray, np.ndarray]:
        """(segment, index within it) of every member, in member order."""
        seg = np.concatenate([np.full(s.n, i) for i, s in enumerate(self.segments)])
        idx = np.concatenate([np.arange(s.n) for s in self.segments])
        return seg, idx

    def v_cols(self) -> list[int]:
        return [int(s.col(s.model.variables.index("v"), i)) for s in self.segments for i in range(s.n)]

    def var_col(self, member: np.ndarray, var: np.ndarray) -> np.ndarray:
        """Column of model variable ``var`` of member ``member`` (arrays of equal length)."""
        seg, idx = self.member_seg()
        offs = np.array([s.off for s in self.segments])
        ns = np.array([s.n for s in self.segments])
        m = np.asarray(member, np.int64)
        return offs[seg[m]] + np.asarray(var, np.int64) * ns[seg[m]] + idx[m]

    def pulses_of(self, member: int) -> list[tuple[int, float, float, float, int]]:
        """Transmitter pulses a spike of ``member`` starts: (column of [T], delay, A, t_max, order)."""
        seg, idx = self.member_seg()
        out = []
        for part in self.parts:
            if part.t_off < 0 or part.src_seg != seg[member]:
                continue
            hit = np.flatnonzero(part.src_idx == idx[member])
            for j in hit:
                out.append((part.t_off + int(j), part.delay_ms, part.params["A_mM"], part.params["t_max_ms"], part.order))
        return out


def tied_components(net: Network) -> list[list[tuple[str, np.ndarray]]]:
    """Connected components of the local graded couplings: per component, (population, sorted
    local positions) in population order. Components are ordered by their smallest gid."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pops = list(net.populations)
    base = np.cumsum([0] + [net.populations[p].local.size for p in pops])
    start = {p: int(b) for p, b in zip(pops, base)}
    src, tgt = [], []
    for proj in net.projections:
        if not isinstance(proj.synapse, GradedKinetic):
            continue
        s_pos, t_pos = graded_indices(net, proj)
        src.append(start[proj.source] + s_pos)
        tgt.append(start[proj.target] + t_pos)
    if not src:
        return []
    s, t = np.concatenate(src), np.concatenate(tgt)
    n = int(base[-1])
    _, label = connected_components(coo_matrix((np.ones(s.size), (s, t)), shape=(n, n)), directed=False)
    tied = np.zeros(n, bool)
    tied[s] = tied[t] = True
    gid = np.concatenate([net.layout.gid(p, net.populations[p].local) for p in pops]) if n else np.zeros(0, np.int64)
    comps = []
    for lab in np.unique(label[tied]):
        flat = np.flatnonzero((label == lab) & tied)
        comps.append((int(gid[flat].min()), [(p, flat[(flat >= start[p]) & (flat < start[p] + net.populations[p].local.size)] - start[p])
                                             for p in pops]))
    comps.sort(key=lambda c: c[0])
    return [[(p, pos) for p, pos in members if pos.size] for _, members in comps]


def build_group(net: Network, members: Sequence[tuple[str, np.ndarray]]) -> Group:
    """The coupled system of one component (``tied_components`` output)."""
    segments, off = [], 0
    for pop_name, pos in members:
        pop = net.populations[pop_name]
        amps = [s.amplitude.get(pop_name, np.zeros(pop.local.size))[pos] for s in net.stimuli]
        segments.append(Segment(pop_name, pop.model, dict(pop.params), np.asarray(pos, np.int64), off, amps))
        off += len(pop.model.variables) * pos.size
    seg_of = {s.pop: i for i, s in enumerate(segments)}
    parts = []
    for order, proj in enumerate(net.projections):
        if not isinstance(proj.synapse, GradedKinetic) or proj.target not in seg_of:
            continue
        s_pos, t_pos = graded_indices(net, proj)
        tseg = segments[seg_of[proj.target]]
        t_i = np.searchsorted(tseg.pos, t_pos)
        inside = (t_i < tseg.n) & (tseg.pos[np.minimum(t_i, tseg.n - 1)] == t_pos)
        if not inside.any():
            continue
        sseg = segments[seg_of[proj.source]]
        s_i = np.searchsorted(sseg.pos, s_pos[inside])  # sources of the group's synapses are members
        t_i, w = t_i[inside], proj.weight[inside]
        src_idx, s_k = np.unique(s_i, return_inverse=True)
        counts = np.bincount(t_i, minlength=tseg.n)
        width = max(1, int(counts.max()))
        order_t = np.argsort(t_i, kind="stable")  # synapse order within each target kept
        slot = np.arange(t_i.size) - np.repeat(np.cumsum(counts) - counts, counts)
        ell_s = np.zeros((tseg.n, width), np.int64)
        ell_w = np.zeros((tseg.n, width))
        ell_s[t_i[order_t], slot] = s_k[order_t]
        ell_w[t_i[order_t], slot] = w[order_t]
        syn = proj.synapse
        state_off = off
        off += len(syn.variables) * src_idx.size
        t_off = -1
        if syn.signal != "v":
            t_off, off = off, off + src_idx.size
        parts.append(GradedPart(proj.spec.name, order, syn, dict(proj.params), seg_of[proj.source], src_idx,
                                seg_of[proj.target], state_off, t_off, float(proj.spec.delay_ms), ell_s, ell_w, int(t_i.size)))
    g = Group(segments, parts, off)
    lay = net.layout
    g.gid = np.concatenate([lay.gid(s.pop, net.populations[s.pop].local[s.pos]) for s in segments])
    y0 = np.zeros(off)
    for s in segments:
        init = net.populations[s.pop].init
        for j, v in enumerate(s.model.variables):
            y0[s.col(j, np.arange(s.n))] = init[v][s.pos]
    for p in parts:  # synaptic states as BSP (syn.initial), transmitters 0
        for j, v in enumerate(p.syn.variables):
            y0[p.off + j * p.n_src:p.off + (j + 1) * p.n_src] = p.syn.initial()[v]
    g.y0 = y0
    g.thresh = np.concatenate([np.full(s.n, s.model.threshold_mV(s.params)) for s in segments])
    g.refr = np.concatenate([np.full(s.n, s.model.refractory_ms(s.params)) for s in segments])
    return g


class GroupKernel(bdf.BdfKernel):
    """BDF over one coupled group (one lane)."""

    def __init__(self, group: Group, stimuli: Sequence[bdf.Stimulus], *, jit_compile: bool = True) -> None:
        super().__init__(group.segments[0].model, [], stimuli, jit_compile=jit_compile)
        tf = self.tf
        self.group = group
        self.nv = group.nv
        self.v_cols = group.v_cols()
        self._amps = [[tf.constant(a, tf.float64) for a in s.amps] for s in group.segments]
        self._ell = [(tf.constant(p.src_ell), tf.constant(p.w_ell, tf.float64)) for p in group.parts]
        self._src_v = [tf.constant(group.segments[p.src_seg].col(group.segments[p.src_seg].model.variables.index("v"), p.src_idx))
                       for p in group.parts]
        # Any pulse source: with d = 0 the pulse starts inside the step that found the spike, and
        # with d > 0 the step may still overshoot t_s + d.
        cut = np.array([bool(group.pulses_of(m)) for m in range(len(self.v_cols))])
        self.cut_at_spike = tf.constant(cut) if cut.any() else None

    def _rms(self, x: Any) -> Any:
        return self.tf.reduce_max(self.tf.abs(x), axis=0)  # max norm: see the module docstring

    def rhs(self, t: Any, y: Any, params: Any, amps: Any) -> tuple[Any, Any]:
        # The kernel keeps lanes minor ([nv, B]); a group's columns are sliced per member, so
        # it is written lanes-major and transposed at the boundary (one group per lane: B is small).
        f, a = self._rhs_lanes_major(t, self.tf.transpose(y))
        return self.tf.transpose(f), self.tf.transpose(a)

    def _rhs_lanes_major(self, t: Any, y: Any) -> tuple[Any, Any]:
        tf, ops, g = self.tf, self.ops, self.group
        f64 = tf.float64
        pieces: list[tuple[int, Any, Any]] = []  # (first column, f, ∂f/∂y diagonal)
        tcol = t[:, None]
        drive: list[list[Any]] = [[0.0, 0.0, 0.0] for _ in g.segments]
        for k, stim in enumerate(self.stimuli):
            shape = stim.shape(ops, stim.params, tcol)
            for i in range(len(g.segments)):
                drive[i][0] = drive[i][0] + self._amps[i][k][None, :] * shape
        for p, (ell_s, ell_w), src_v in zip(g.parts, self._ell, self._src_v):
            n = p.n_src
            s = {v: y[:, p.off + j * n:p.off + (j + 1) * n] for j, v in enumerate(p.syn.variables)}
            if p.t_off < 0:
                T = p.syn.transmitter(ops, p.params, tf.gather(y, src_v, axis=1), tcol, 0.0)
            else:
                T = y[:, p.t_off:p.t_off + n]
                pieces.append((p.t_off, tf.zeros_like(T), tf.zeros_like(T)))
            for j, (v, (a, b)) in enumerate(p.syn.terms(ops, p.params, s, T).items()):
                x = s[v]
                a = tf.broadcast_to(tf.cast(a, f64), tf.shape(x))
                pieces.append((p.off + p.syn.variables.index(v) * n, a * x + b, a))
            opn = p.syn.open_fraction(ops, p.params, s)
            cond = tf.reduce_sum(ell_w[None] * tf.gather(opn, ell_s, axis=1), axis=2)
            d = drive[p.tgt_seg]
            d[1] = d[1] + cond
            d[2] = d[2] + cond * p.params["E_mV"]
        for i, seg in enumerate(g.segments):
            n = seg.n
            yd = {v: y[:, seg.off + j * n:seg.off + (j + 1) * n] for j, v in enumerate(seg.model.variables)}
            terms = seg.model.terms(ops, seg.params, yd, Drive(*drive[i]))
            for j, v in enumerate(seg.model.variables):
                a, b = terms[v]
                a = tf.broadcast_to(tf.cast(a, f64), tf.shape(yd[v]))
                pieces.append((seg.off + j * n, a * yd[v] + b, a))
        pieces.sort(key=lambda x: x[0])
        return tf.concat([f for _, f, _ in pieces], axis=1), tf.concat([a for _, _, a in pieces], axis=1)


_SHARED: dict[str, GroupKernel] = {}


def shared_group_kernel(group: Group, stimuli: Sequence[bdf.Stimulus], *, jit_compile: bool = True) -> GroupKernel:
    """One kernel (and compilation) per group structure in a process: the constants baked into the
    graph (parameters, amplitudes, connectivity) name it."""
    h = hashlib.sha256(repr((jit_compile, [(st.shape.__qualname__, sorted(st.params.items())) for st in stimuli])).encode())
    for seg in group.segments:
        h.update(repr((seg.pop, seg.model.name, sorted(seg.params.items()), seg.off)).encode())
        for a in [seg.pos, *seg.amps]:
            h.update(np.ascontiguousarray(a).tobytes())
    for part in group.parts:
        h.update(repr((part.name, part.syn.name, sorted(part.params.items()), part.src_seg, part.tgt_seg, part.off,
                       part.t_off, part.delay_ms)).encode())
        for a in (part.src_idx, part.src_ell, part.w_ell):
            h.update(repr(a.shape).encode() + np.ascontiguousarray(a).tobytes())
    key = h.hexdigest()
    if key not in _SHARED:
        _SHARED[key] = GroupKernel(group, stimuli, jit_compile=jit_compile)
    return _SHARED[key]


def new_group_state(group: Group) -> dict[str, np.ndarray]:
    st = bdf.new_state(group.y0[None, :], 0.0)
    st["fire_t"] = np.full((1, group.lidx.size), -1e9)
    return st
