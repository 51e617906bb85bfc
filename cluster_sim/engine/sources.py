"""Spike sources (Poisson) in the BSP engine: a pure function of time, nothing integrated."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cluster_sim.engine.delivery import SpikeBatch
from cluster_sim.models import poisson
from cluster_sim.network.build import Network


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
