"""The exact COBAHH network cluster-sim builds (connectivity, weights, initial state), exported
as plain arrays in global numbering (E = 0..NE-1, I = NE..N-1) so that Brian2 and the NumPy
implementation simulate the identical network."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from _common import cluster_sim_spec, cobahh_overrides


@dataclass
class CobaNet:
    n: int
    n_e: int
    v0: np.ndarray  # mV
    ge0: np.ndarray  # nS
    gi0: np.ndarray  # nS
    exc_pre: np.ndarray  # global source ids of excitatory synapses
    exc_post: np.ndarray
    exc_w: np.ndarray  # nS
    inh_pre: np.ndarray
    inh_post: np.ndarray
    inh_w: np.ndarray
    delay_ms: float
    params: dict


def cobahh_network(n: int, duration_ms: float = 1000.0) -> CobaNet:
    from cluster_sim.network.build import build_network

    spec = cluster_sim_spec("cobahh.toml", cobahh_overrides(n, duration_ms))
    net = build_network(spec)
    off = {name: net.layout.offsets[net.layout.index(name)] for name in net.populations}
    init = {k: np.concatenate([net.populations[p].init[k] for p in ("E", "I")]) for k in ("v", "ge", "gi")}
    exc, inh = ([], [], []), ([], [], [])
    delays = set()
    for proj in net.projections:
        pre = proj.src + off[proj.source]
        post = proj.target_of_synapse() + off[proj.target]
        dst = exc if proj.synapse.var == "ge" else inh
        dst[0].append(pre)
        dst[1].append(post)
        dst[2].append(proj.weight)
        delays.add(proj.spec.delay_ms)
    assert len(delays) == 1
    cat = lambda parts: np.concatenate(parts)  # noqa: E731
    return CobaNet(n, net.populations["E"].count, init["v"], init["ge"], init["gi"],
                   cat(exc[0]), cat(exc[1]), cat(exc[2]), cat(inh[0]), cat(inh[1]), cat(inh[2]),
                   delays.pop(), dict(net.populations["E"].params))
