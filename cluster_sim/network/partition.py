"""Which neurons each rank owns. A pure function of (spec, size): every rank computes the same
answer without communicating.

Strategies (``engine.partition``):
* ``auto`` (the default): ``components`` when the network has in-step (graded) couplings, else
  ``block``; resolved when the spec is built, so ``spec.engine.partition`` and run.json name the
  strategy actually used.
* ``block``: each population is cut into ``size`` contiguous blocks; rank r gets block r of each.
* ``round_robin``: neuron with global id g goes to rank g mod size.
* ``components``: connectivity-aware for in-step (graded) couplings. Neurons tied together by
  graded projections form connected components that must be integrated together (their coupling
  is evaluated inside every integrator stage); whole components go to the least-loaded rank
  (largest first), the remaining neurons are spread in blocks.
A graded projection whose sources and targets would land on different ranks is refused by name
(see ``check_graded``), never silently approximated.
"""
from __future__ import annotations

import numpy as np

from cluster_sim.errors import ConfigError
from cluster_sim.models import get_synapse_model
from cluster_sim.models.synapses import GradedKinetic
from cluster_sim.network.build import Layout, build_projection
from cluster_sim.spec.schema import JobSpec


def _graded_projections(spec: JobSpec) -> list:
    return [p for p in spec.projections if isinstance(get_synapse_model(p.synapse), GradedKinetic)]


def resolve_strategy(spec: JobSpec, strategy: str | None = None) -> str:
    """The concrete strategy for ``strategy`` (default: the spec's); "auto" as described above."""
    strategy = strategy or spec.engine.partition
    if strategy == "auto":
        return "components" if _graded_projections(spec) else "block"
    return strategy


def owner_of(spec: JobSpec, size: int, strategy: str | None = None) -> np.ndarray:
    """Rank of every global id (int32 array of length n_total)."""
    strategy = resolve_strategy(spec, strategy)
    layout = Layout.of(spec)
    n = layout.n_total
    if size == 1:
        return np.zeros(n, np.int32)
    if strategy == "round_robin":
        return (np.arange(n) % size).astype(np.int32)
    if strategy == "block":
        owner = np.empty(n, np.int32)
        for off, cnt in zip(layout.offsets, layout.counts):
            owner[off:off + cnt] = (np.arange(cnt) * size // max(cnt, 1)).astype(np.int32)
        return owner
    if strategy == "components":
        return _components(spec, layout, size)
    raise ConfigError("engine.partition", strategy, "unknown partition strategy", "use auto, block, round_robin or components")


def _components(spec: JobSpec, layout: Layout, size: int) -> np.ndarray:
    n = layout.n_total
    srcs, tgts = [], []
    for proj in _graded_projections(spec):
        built = build_projection(spec, layout, proj, np.arange(spec.population(proj.target).count))
        srcs.append(layout.gid(proj.source, built.src))
        tgts.append(layout.gid(proj.target, built.target_of_synapse()))
    src = np.concatenate(srcs) if srcs else np.zeros(0, np.int64)
    tgt = np.concatenate(tgts) if tgts else np.zeros(0, np.int64)
    tied = np.zeros(n, bool)
    tied[src] = tied[tgt] = True
    roots = np.arange(n)
    while True:  # label propagation: every neuron ends with the smallest id of its component
        lo = np.minimum(roots[src], roots[tgt])
        new = roots.copy()
        np.minimum.at(new, src, lo)
        np.minimum.at(new, tgt, lo)
        new = new[new]  # pointer jumping speeds convergence
        if np.array_equal(new, roots):
            break
        roots = new
    owner = np.full(n, -1, np.int32)
    load = np.zeros(size)
    comp_ids, comp_sizes = np.unique(roots[tied], return_counts=True)
    for cid, csize in sorted(zip(comp_ids.tolist(), comp_sizes.tolist()), key=lambda x: (-x[1], x[0])):
        r = int(np.argmin(load))
        owner[(roots == cid) & tied] = r
        load[r] += csize
    free = np.nonzero(owner < 0)[0]
    if free.size:
        # fill the lightest ranks first, contiguously
        target = (load.sum() + free.size) / size
        quota = np.maximum(0, np.round(target - load)).astype(int)
        quota[-1] += free.size - quota.sum()
        start = 0
        for r in range(size):
            take = max(0, min(quota[r], free.size - start)) if r < size - 1 else free.size - start
            owner[free[start:start + take]] = r
            start += take
    return owner


def local_indices(spec: JobSpec, rank: int, size: int, strategy: str | None = None) -> dict[str, np.ndarray]:
    """Population -> sorted indices (within the population) owned by ``rank``."""
    owner = owner_of(spec, size, strategy)
    layout = Layout.of(spec)
    return {name: np.nonzero(owner[off:off + cnt] == rank)[0].astype(np.int64)
            for name, off, cnt in zip(layout.names, layout.offsets, layout.counts)}


def check_graded(spec: JobSpec, size: int, strategy: str | None = None) -> None:
    """Refuse a partition that cuts a graded (in-step) coupling, naming the projection."""
    if size == 1:
        return
    strategy = resolve_strategy(spec, strategy)
    owner = owner_of(spec, size, strategy)
    layout = Layout.of(spec)
    for proj in _graded_projections(spec):
        built = build_projection(spec, layout, proj, np.arange(spec.population(proj.target).count))
        src = layout.gid(proj.source, built.src)
        tgt = layout.gid(proj.target, built.target_of_synapse())
        cut = owner[src] != owner[tgt]
        if cut.any():
            raise ConfigError(
                f"projections.{proj.name}", proj.synapse,
                f"couples on presynaptic state inside every step, and the {strategy!r} partition over {size} ranks "
                f"puts {int(cut.sum())} of its {cut.size} synapses across ranks",
                'set engine.partition = "components" (keeps coupled neurons on one rank) or run on one rank')
