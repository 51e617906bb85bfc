"""Building the network for a chosen set of target neurons.

Connectivity and initial conditions of a neuron are drawn from streams keyed by (global seed,
projection or variable, neuron id) — see ``rng`` — so the network is identical however neurons
are later split across ranks, and any subset of targets can be built alone. Synapses are kept
sparse: CSR by target (incoming), plus a by-source copy for spike-triggered delivery.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from cluster_sim.errors import ConfigError
from cluster_sim.models import get_neuron_model, get_synapse_model, get_waveform
from cluster_sim.models.base import NeuronModel, Waveform
from cluster_sim.models.synapses import SynapseModel
from cluster_sim.network import rng
from cluster_sim.spec.schema import JobSpec, ProjectionSpec

_CHUNK = 1 << 22  # candidate draws per vectorised batch (bounds temporary memory)


@dataclass(frozen=True)
class Layout:
    """Global numbering: population i owns gids offsets[i] .. offsets[i] + counts[i] - 1."""

    names: tuple[str, ...]
    counts: tuple[int, ...]
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, spec: JobSpec) -> "Layout":
        counts = tuple(p.count for p in spec.populations)
        offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(counts)[:-1]]))
        return cls(tuple(p.name for p in spec.populations), counts, offsets)

    @property
    def n_total(self) -> int:
        return sum(self.counts)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def gid(self, name: str, local: np.ndarray) -> np.ndarray:
        return self.offsets[self.index(name)] + np.asarray(local, dtype=np.int64)

    def split_gids(self, gids: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Global ids -> [(population, indices within population)], one entry per population."""
        out = []
        for name, off, cnt in zip(self.names, self.offsets, self.counts):
            sel = (gids >= off) & (gids < off + cnt)
            out.append((name, gids[sel] - off))
        return out


@dataclass
class Population:
    name: str
    model: NeuronModel
    params: dict[str, float]
    count: int  # in the whole network
    local: np.ndarray  # indices (within the population) built here, sorted
    init: dict[str, np.ndarray]  # initial state of the local neurons


@dataclass
class Projection:
    """Synapses onto the local targets of one projection."""

    spec: ProjectionSpec
    synapse: SynapseModel
    params: dict[str, float]
    source: str
    target: str
    n_source: int
    indptr: np.ndarray  # CSR over local targets (len n_local_target + 1)
    src: np.ndarray  # source index within the source population, int64
    weight: np.ndarray  # float64
    delay_steps: int

    @property
    def n_synapses(self) -> int:
        return int(self.src.size)

    def target_of_synapse(self) -> np.ndarray:
        """Local target position of every synapse (expanding the CSR)."""
        return np.repeat(np.arange(self.indptr.size - 1, dtype=np.int64), np.diff(self.indptr))

    def by_source(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr over source index, local target position, weight) sorted by source, stable so
        that a source's synapses keep target order."""
        tgt = self.target_of_synapse()
        order = np.argsort(self.src, kind="stable")
        counts = np.bincount(self.src, minlength=self.n_source)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return indptr, tgt[order], self.weight[order]


@dataclass
class Stimulus:
    name: str
    waveform: Waveform
    params: dict[str, float]
    amplitude: dict[str, np.ndarray]  # population -> per local neuron amplitude (0 if not stimulated)


@dataclass
class Network:
    spec: JobSpec
    layout: Layout
    populations: dict[str, Population]
    projections: list[Projection]
    stimuli: list[Stimulus] = field(default_factory=list)

    @property
    def n_local_neurons(self) -> int:
        return sum(p.local.size for p in self.populations.values())

    @property
    def n_local_synapses(self) -> int:
        return sum(p.n_synapses for p in self.projections)

    def nbytes(self) -> int:
        """Bytes held by this rank's share of the network (synapses, state, stimuli)."""
        total = sum(p.indptr.nbytes + p.src.nbytes + p.weight.nbytes for p in self.projections)
        total += sum(p.local.nbytes + sum(v.nbytes for v in p.init.values()) for p in self.populations.values())
        total += sum(a.nbytes for s in self.stimuli for a in s.amplitude.values())
        return int(total)


def _bernoulli_sources(key: np.uint64, targets_gid: np.ndarray, n_src: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Per target, the sources of a Bernoulli(p) draw over 0..n_src-1, by geometric gaps (work
    ∝ synapses, not n_src). Returns (count per target, concatenated sources, sorted per target)."""
    n_t = targets_gid.size
    if p <= 0.0 or n_t == 0 or n_src == 0:
        return np.zeros(n_t, np.int64), np.zeros(0, np.int64)
    if p >= 1.0:
        return np.full(n_t, n_src, np.int64), np.tile(np.arange(n_src, dtype=np.int64), n_t)
    mean = n_src * p
    k_max0 = int(mean + 7.0 * math.sqrt(mean * (1 - p)) + 16)
    log1mp = math.log1p(-p)
    counts, parts = [], []
    rows_per_chunk = max(1, _CHUNK // k_max0)
    for start in range(0, n_t, rows_per_chunk):
        tg = targets_gid[start:start + rows_per_chunk].astype(np.uint64)[:, None]
        k_max = k_max0
        while True:  # draws are addressed by index, so a longer pass repeats the same prefix
            u = rng.uniform(key, tg, np.arange(k_max, dtype=np.uint64)[None, :])
            pos = np.cumsum(np.floor(np.log(u) / log1mp).astype(np.int64) + 1, axis=1) - 1
            if (pos[:, -1] >= n_src).all():
                break
            k_max *= 2
        valid = pos < n_src
        counts.append(valid.sum(axis=1))
        parts.append(pos[valid])  # row-major, so grouped by target and sorted within
    return np.concatenate(counts).astype(np.int64), np.concatenate(parts)


def _fixed_indegree_sources(key: np.uint64, targets_gid: np.ndarray, n_src: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k distinct sources per target: the k smallest of one uniform per (target, source)."""
    counts = np.full(targets_gid.size, k, np.int64)
    if k == 0 or targets_gid.size == 0:
        return np.zeros(targets_gid.size, np.int64), np.zeros(0, np.int64)
    out = []
    src_ids = np.arange(n_src, dtype=np.uint64)
    rows_per_chunk = max(1, _CHUNK // max(n_src, 1))
    for start in range(0, targets_gid.size, rows_per_chunk):
        tg = targets_gid[start:start + rows_per_chunk].astype(np.uint64)
        u = rng.uniform(key, tg[:, None], src_ids[None, :])
        pick = np.argpartition(u, k - 1, axis=1)[:, :k] if k < n_src else np.tile(np.arange(n_src), (tg.size, 1))
        out.append(np.sort(pick, axis=1).reshape(-1))
    return counts, np.concatenate(out).astype(np.int64)


def build_projection(spec: JobSpec, layout: Layout, proj: ProjectionSpec, local_targets: np.ndarray) -> Projection:
    """Synapses of ``proj`` onto ``local_targets`` (indices within the target population)."""
    syn = get_synapse_model(proj.synapse)
    n_src = layout.counts[layout.index(proj.source)]
    tgt_gid = layout.gid(proj.target, local_targets)
    key = rng.stream_key(spec.simulation.seed, "connect", proj.name)
    same = proj.source == proj.target
    exclude_self = same and not proj.allow_autapses
    rule = proj.connect
    if rule.rule == "bernoulli":
        # Without autapses draw over n_src - 1 candidates and skip the target itself.
        counts, src = _bernoulli_sources(key, tgt_gid, n_src - 1 if exclude_self else n_src, rule.p)
    elif rule.rule == "fixed_indegree":
        counts, src = _fixed_indegree_sources(key, tgt_gid, n_src - 1 if exclude_self else n_src, rule.indegree)
    elif rule.rule == "all_to_all":
        m = n_src - 1 if exclude_self else n_src
        counts = np.full(local_targets.size, m, np.int64)
        src = np.tile(np.arange(m, dtype=np.int64), local_targets.size)
    else:  # explicit list
        pairs = np.array(rule.pairs, dtype=np.int64).reshape(-1, 2)
        order = np.lexsort((pairs[:, 0], pairs[:, 1]))
        pairs = pairs[order]
        if exclude_self:
            pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        sel = np.isin(pairs[:, 1], local_targets)
        pairs = pairs[sel]
        pos = np.searchsorted(local_targets, pairs[:, 1])
        counts = np.bincount(pos, minlength=local_targets.size).astype(np.int64)
        src = pairs[:, 0].copy()
        exclude_self = False  # already removed
    if exclude_self and rule.rule != "list":
        # candidates 0..n_src-2 map to sources skipping the target's own index
        own = np.repeat(local_targets.astype(np.int64), counts)
        src = src + (src >= own)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    dt = spec.integrator.dt_ms
    delay_steps = int(round(proj.delay_ms / dt)) if syn.kind == "event" else 0
    return Projection(proj, syn, syn.params(proj.params), proj.source, proj.target, n_src, indptr,
                      src.astype(np.int64), np.full(src.size, proj.weight, np.float64), delay_steps)


def initial_state(spec: JobSpec, layout: Layout, pop_name: str, local: np.ndarray) -> dict[str, np.ndarray]:
    pop = spec.population(pop_name)
    model = get_neuron_model(pop.model)
    params = model.params(pop.params)
    gids = layout.gid(pop_name, local).astype(np.uint64)

    def normal(tag: str) -> np.ndarray:
        return rng.normal(rng.stream_key(spec.simulation.seed, "init", pop_name, tag), gids)

    state = model.initial_state(params, local.size, normal)
    return {k: np.asarray(v, dtype=np.float64).reshape(local.size) for k, v in state.items()}


def stimulus_targets(spec: JobSpec, layout: Layout, stim_name: str) -> dict[str, np.ndarray]:
    """All stimulated neurons (population -> sorted indices). Chosen by the smallest hash values
    over the union of the stimulus' populations, so it is global yet computable anywhere."""
    stim = next(s for s in spec.stimuli if s.name == stim_name)
    gids = np.concatenate([layout.gid(p, np.arange(spec.population(p).count)) for p in stim.populations])
    total = gids.size
    if stim.count is not None:
        k = stim.count
    elif stim.fraction is not None:
        k = int(stim.fraction * total)  # PSST: int(0.33 * 120) = 39
    else:
        k = total
    u = rng.uniform(rng.stream_key(spec.simulation.seed, "stimulus", stim_name), gids.astype(np.uint64))
    chosen = np.sort(gids[np.argsort(u, kind="stable")[:k]])
    return {name: idx for name, idx in layout.split_gids(chosen) if name in stim.populations}


def build_network(spec: JobSpec, local: Mapping[str, np.ndarray] | None = None) -> Network:
    """Build the neurons ``local[pop]`` (indices within each population; default: all) and
    their incoming synapses, initial state and stimuli."""
    layout = Layout.of(spec)
    if local is None:
        local = {p.name: np.arange(p.count, dtype=np.int64) for p in spec.populations}
    pops: dict[str, Population] = {}
    for p in spec.populations:
        idx = np.unique(np.asarray(local.get(p.name, np.zeros(0, np.int64)), dtype=np.int64))
        model = get_neuron_model(p.model)
        pops[p.name] = Population(p.name, model, model.params(p.params), p.count, idx,
                                  initial_state(spec, layout, p.name, idx))
    projections = [build_projection(spec, layout, j, pops[j.target].local) for j in spec.projections]
    stimuli = []
    for s in spec.stimuli:
        chosen = stimulus_targets(spec, layout, s.name)
        amp = {}
        for pop_name in s.populations:
            loc = pops[pop_name].local
            amp[pop_name] = np.where(np.isin(loc, chosen.get(pop_name, [])), s.params["amplitude"], 0.0)
        stimuli.append(Stimulus(s.name, get_waveform(s.waveform), dict(s.params), amp))
    return Network(spec, layout, pops, projections, stimuli)


def graded_indices(net: Network, proj: Projection) -> tuple[np.ndarray, np.ndarray]:
    """(source position among local source neurons, local target position) of each synapse.
    Graded couplings read the presynaptic state every step, so their sources must be local."""
    src_local = net.populations[proj.source].local
    pos = np.searchsorted(src_local, proj.src)
    ok = (pos < src_local.size) & (src_local[np.minimum(pos, max(src_local.size - 1, 0))] == proj.src) if src_local.size else proj.src.size == 0
    if not np.all(ok):
        raise ConfigError(f"projections.{proj.spec.name}", proj.spec.synapse,
                          "couples on presynaptic state inside every step, but some sources are on another rank",
                          "use one rank, or a partition that keeps this projection's sources and targets together")
    return pos.astype(np.int64), proj.target_of_synapse()
