"""This rank's neurons as the asynchronous engine sees them: one block per neuron model (one
compiled BDF kernel each, parameters as per-neuron columns), and the incoming spike-triggered
synapses as flat tables keyed by source gid. Built from the shared ``Network``; no MPI here."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cluster_sim.asyncmode.groups import Group, build_group, tied_components
from cluster_sim.models.synapses import GradedKinetic
from cluster_sim.network.build import Network
from cluster_sim.spec.schema import JobSpec


def is_source(model: object) -> bool:
    """Spike sources (e.g. Poisson) have no dynamics: their spike times are a function of time."""
    return bool(getattr(model, "is_source", False))


def lookahead_ms(spec: JobSpec) -> float:
    """The grid spacing: the minimum delay of the spike-triggered projections (or
    ``engine.interval_ms`` when there are none). Graded projections act inside a coupled group
    and give no lookahead."""
    from cluster_sim.models import get_synapse_model

    delays = [p.delay_ms for p in spec.projections if get_synapse_model(p.synapse).kind == "event"]
    return float(min(delays)) if delays else float(spec.engine.interval_ms)


@dataclass
class Block:
    """The local neurons of one model."""

    model: Any  # a NeuronModel
    members: list[tuple[str, np.ndarray]]  # (population, local positions within it) in order
    lidx: np.ndarray  # rank-local neuron index of each row
    gid: np.ndarray
    y0: np.ndarray  # [n, nv]
    param_names: list[str]
    params: np.ndarray  # [n, P]
    amps: np.ndarray  # [n, S]
    thresh: np.ndarray
    refr: np.ndarray


@dataclass
class Synapses:
    """Incoming spike-triggered synapses of the local neurons, sorted by (source gid, projection
    order, target): a spike of gid g expands to rows indptr_of(g)."""

    src: np.ndarray  # source gid
    tgt: np.ndarray  # rank-local neuron index
    var: np.ndarray  # index of the target variable in its model's variables
    weight: np.ndarray
    delay: np.ndarray  # ms
    lag: np.ndarray  # whole grid intervals of lookahead the delay gives (>= 1)
    from_source_pop: np.ndarray  # bool: the source is a spike source (always known)

    def rows_of(self, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, which input spike each row belongs to) for spikes of ``gids``."""
        lo = np.searchsorted(self.src, gids, side="left")
        hi = np.searchsorted(self.src, gids, side="right")
        lens = hi - lo
        total = int(lens.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        which = np.repeat(np.arange(gids.size), lens)
        rows = np.repeat(lo - np.cumsum(lens) + lens, lens) + np.arange(total)
        return rows, which


@dataclass
class Recording:
    """One recording's columns held on this rank: sampled at (i + 1)·sampling_ms, as BSP."""

    name: str
    var: int  # index of the variable in its model's variables
    lidx: np.ndarray  # rank-local neuron of each column held here
    cols: np.ndarray  # position of each in the recording's neuron list
    sampling_ms: float
    n_rows: int  # samples over the whole run


@dataclass
class LocalNetwork:
    blocks: list[Block]
    n_local: int
    gid: np.ndarray  # rank-local index -> gid
    block_of: np.ndarray  # rank-local index -> block
    row_of: np.ndarray  # rank-local index -> row in block
    syn: Synapses
    source_pops: list[tuple[str, np.ndarray, np.ndarray]]  # (population, local indices, gids) of local sources
    breakpoints: list[tuple[float, np.ndarray]]  # (time, rank-local neurons whose input changes then)
    recordings: list[Recording]
    groups: list[Group]  # neurons tied by graded couplings (block_of = -1 for their members)
    group_of: np.ndarray  # rank-local index -> group (-1: in a block)


def build_local(net: Network, D: float) -> LocalNetwork:
    components = tied_components(net)
    tied = {name: np.zeros(pop.local.size, bool) for name, pop in net.populations.items()}
    for comp in components:
        for p, pos in comp:
            tied[p][pos] = True
    blocks: list[Block] = []
    by_model: dict[str, list[str]] = {}
    for name, pop in net.populations.items():
        if not is_source(pop.model):
            by_model.setdefault(pop.model.name, []).append(name)
    gid_parts, n = [], 0
    for model_name, pops in by_model.items():
        model = net.populations[pops[0]].model
        names = sorted(set().union(*(net.populations[p].params for p in pops)))
        y0, params, amps, th, rf, gids, members = [], [], [], [], [], [], []
        for p in pops:
            pop = net.populations[p]
            free = np.flatnonzero(~tied[p])
            k = free.size
            members.append((p, free))
            gids.append(net.layout.gid(p, pop.local[free]))
            y0.append(np.stack([pop.init[v][free] for v in model.variables], axis=1) if k else np.zeros((0, len(model.variables))))
            params.append(np.tile([pop.params.get(nm, 0.0) for nm in names], (k, 1)))
            amps.append(np.stack([s.amplitude.get(p, np.zeros(pop.local.size))[free] for s in net.stimuli], axis=1)
                        if net.stimuli else np.zeros((k, 0)))
            th.append(np.full(k, model.threshold_mV(pop.params)))
            rf.append(np.full(k, model.refractory_ms(pop.params)))
        gid = np.concatenate(gids)
        if gid.size == 0:  # none of this model here (a rank may even hold no neurons at all)
            continue
        blocks.append(Block(model, members, np.arange(n, n + gid.size), gid, np.concatenate(y0).reshape(gid.size, -1),
                            names, np.concatenate(params).reshape(gid.size, len(names)),
                            np.concatenate(amps).reshape(gid.size, len(net.stimuli)), np.concatenate(th), np.concatenate(rf)))
        gid_parts.append(gid)
        n += gid.size
    n_free = n
    groups = []
    for comp in components:
        g = build_group(net, comp)
        g.lidx = np.arange(n, n + g.gid.size)
        groups.append(g)
        gid_parts.append(g.gid)
        n += g.gid.size
    gid_all = np.concatenate(gid_parts) if gid_parts else np.zeros(0, np.int64)
    block_of = np.full(n, -1, np.int64)
    row_of = np.zeros(n, np.int64)
    group_of = np.full(n, -1, np.int64)
    for i, b in enumerate(blocks):
        block_of[b.lidx], row_of[b.lidx] = i, np.arange(b.gid.size)
    for i, g in enumerate(groups):
        group_of[g.lidx], row_of[g.lidx] = i, np.arange(g.gid.size)
    assert n_free == int((block_of >= 0).sum())

    # Local index of (population, position) for the synapse tables.
    lidx_of: dict[str, np.ndarray] = {name: np.full(pop.local.size, -1, np.int64) for name, pop in net.populations.items()}
    for b in blocks:
        start = 0
        for p, pos in b.members:
            lidx_of[p][pos] = b.lidx[start:start + pos.size]
            start += pos.size
    for g in groups:
        start = 0
        for seg in g.segments:
            lidx_of[seg.pop][seg.pos] = g.lidx[start:start + seg.n]
            start += seg.n
    for name, pop in net.populations.items():  # spike sources: not integrated, no local index
        if is_source(pop.model):
            del lidx_of[name]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("src", "tgt", "var", "weight", "delay", "order", "srcpop")}
    for order, proj in enumerate(net.projections):
        if isinstance(proj.synapse, GradedKinetic):  # inside a group: not a delayed input
            continue
        tgt_pos = proj.target_of_synapse()
        model = net.populations[proj.target].model
        cols["src"].append(net.layout.gid(proj.source, proj.src))
        cols["tgt"].append(lidx_of[proj.target][tgt_pos] if tgt_pos.size else np.zeros(0, np.int64))
        cols["var"].append(np.full(proj.src.size, model.variables.index(getattr(proj.synapse, "var"))))
        cols["weight"].append(proj.weight)
        cols["delay"].append(np.full(proj.src.size, proj.spec.delay_ms))
        cols["order"].append(np.full(proj.src.size, order))
        cols["srcpop"].append(np.full(proj.src.size, is_source(net.populations[proj.source].model)))
    cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    # Sorted by (source, projection, target): the order in which jumps are summed is then the
    # same on every rank and in every run.
    sort = np.lexsort((cat["tgt"], cat["order"], cat["src"])) if cat["src"].size else np.zeros(0, np.int64)
    delay = cat["delay"][sort].astype(float)
    syn = Synapses(cat["src"][sort].astype(np.int64), cat["tgt"][sort].astype(np.int64), cat["var"][sort].astype(np.int64),
                   cat["weight"][sort].astype(float), delay,
                   np.maximum(1, np.floor(delay / D + 1e-9)).astype(np.int64), cat["srcpop"][sort].astype(bool))

    source_pops = [(name, pop.local, net.layout.gid(name, pop.local)) for name, pop in net.populations.items()
                   if is_source(pop.model)]
    breaks: dict[float, list[np.ndarray]] = {}
    for s_i, stim in enumerate(net.stimuli):
        hit = np.concatenate([lidx_of[p][stim.amplitude[p] != 0] for p in stim.amplitude if p in lidx_of] or [np.zeros(0, np.int64)])
        for key in ("start_ms", "stop_ms"):
            t = float(stim.params.get(key, math.inf))
            if 0.0 < t < net.spec.simulation.duration_ms and hit.size:
                breaks.setdefault(t, []).append(hit)
    breakpoints = [(t, np.unique(np.concatenate(v))) for t, v in sorted(breaks.items())]
    recordings = []
    for rec in net.spec.recordings:
        pop = net.populations[rec.population]
        want = np.asarray(rec.neurons, np.int64)
        pos = np.searchsorted(pop.local, want)
        here = (pos < pop.local.size) & (pop.local[np.minimum(pos, max(pop.local.size - 1, 0))] == want) if pop.local.size \
            else np.zeros(want.size, bool)
        recordings.append(Recording(rec.name, pop.model.variables.index(rec.variable),
                                    lidx_of[rec.population][pos[here]] if here.any() else np.zeros(0, np.int64),
                                    np.flatnonzero(here), float(rec.sampling_ms),
                                    int(math.floor(net.spec.simulation.duration_ms / rec.sampling_ms + 1e-9))))
    return LocalNetwork(blocks, n, gid_all, block_of, row_of, syn, source_pops, breakpoints, recordings, groups, group_of)
