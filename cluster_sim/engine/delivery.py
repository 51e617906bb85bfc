"""Spike-triggered delivery through ring buffers indexed by arrival step.

A spike of source s in step k (time in (t_k, t_k+1]) reaches a synapse with delay d steps at the
start of step k + 1 + d: never earlier than spike time + delay, as in NEST. Only the synapses of
spiking sources are touched. Spikes arrive sorted by (step, global id) and projections are walked
in spec order, so every buffer slot sums its increments in one fixed order: the result does not
depend on how neurons are split across ranks (bitwise).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cluster_sim.engine.kernel import event_columns, state_key
from cluster_sim.models.synapses import GradedKinetic
from cluster_sim.network.build import Network


@dataclass
class SpikeBatch:
    """Spikes in global numbering: ``gid`` int64, ``step`` int64 (step in which it occurred),
    ``time`` float64 (ms). Sorted by (step, gid) when it leaves the exchange."""

    gid: np.ndarray
    step: np.ndarray
    time: np.ndarray

    @classmethod
    def empty(cls) -> "SpikeBatch":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    @classmethod
    def concat(cls, batches: list["SpikeBatch"]) -> "SpikeBatch":
        if not batches:
            return cls.empty()
        return cls(np.concatenate([b.gid for b in batches]), np.concatenate([b.step for b in batches]),
                   np.concatenate([b.time for b in batches]))

    def sorted(self) -> "SpikeBatch":
        order = np.lexsort((self.gid, self.step))
        return SpikeBatch(self.gid[order], self.step[order], self.time[order])

    def __len__(self) -> int:
        return int(self.gid.size)


@dataclass
class _Route:
    ring: str  # state key of the target variable
    col0: int  # its first column in the packed buffer
    src_offset: int  # gid offset of the source population
    n_source: int
    indptr: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    delay: int


class RingBuffers:
    """One ring per event-receiving variable, ``[slots, n_local]`` increments by arrival step, all
    held as column blocks of one buffer laid out as the kernel's increment input
    (``kernel.event_columns``): ``take`` hands the kernel one array for every variable."""

    def __init__(self, net: Network, interval_steps: int) -> None:
        self.routes: list[_Route] = []
        cols = event_columns(net)
        self.columns, self.width = cols.at, cols.width
        max_delay = 0
        for proj in net.projections:
            if isinstance(proj.synapse, GradedKinetic):
                continue
            key = state_key(proj.target, getattr(proj.synapse, "var"))  # a ConductanceJump
            indptr, tgt, w = proj.by_source()
            off = net.layout.offsets[net.layout.index(proj.source)]
            self.routes.append(_Route(key, self.columns[key][0], off, proj.n_source, indptr, tgt, w, proj.delay_steps))
            max_delay = max(max_delay, proj.delay_steps)
        self.slots = max_delay + interval_steps + 1
        self.buffer = np.zeros((self.slots, self.width))  # padding columns stay zero
        self.rings = {k: self.buffer[:, c0:c0 + n] for k, (c0, n) in self.columns.items()}  # views

    def deliver(self, spikes: SpikeBatch) -> int:
        """Add every synapse of the spiking sources to its arrival slot; returns synapses touched.

        Per route, the synapses are visited in (spike order, CSR order) and added one by one
        (``np.add.at``), so each slot's sum has one fixed order however the network is split."""
        touched = 0
        if len(spikes) == 0:
            return 0
        for r in self.routes:
            sel = (spikes.gid >= r.src_offset) & (spikes.gid < r.src_offset + r.n_source)
            if not sel.any():
                continue
            src = spikes.gid[sel] - r.src_offset
            starts = r.indptr[src]
            lens = r.indptr[src + 1] - starts
            total = int(lens.sum())
            if total == 0:
                continue
            # Per spike (not per synapse): where its ring's row starts in the flattened buffer,
            # and how far its synapses' CSR range is from their position in the expanded list.
            row0 = ((spikes.step[sel] + (1 + r.delay)) % self.slots) * self.width + r.col0
            ends = np.cumsum(lens)
            idx = np.arange(total) + np.repeat(starts - ends + lens, lens)
            flat = np.repeat(row0, lens) + r.target[idx]
            np.add.at(self.buffer.reshape(-1), flat, r.weight[idx])
            touched += total
        return touched

    def take(self, step0: int, n_steps: int) -> np.ndarray:
        """The increments for steps step0 .. step0+n_steps-1, cleared from the rings, as one
        [n_steps, columns] block (zero in the padding), the kernel's input layout."""
        rows = np.arange(step0, step0 + n_steps) % self.slots
        block = self.buffer[rows]
        self.buffer[rows] = 0.0
        return block

    def snapshot(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.rings.items()}

    def restore(self, rings: dict[str, np.ndarray]) -> None:
        for k in self.rings:
            self.rings[k][...] = rings[k]
