"""Spike-triggered delivery through ring buffers indexed by arrival step.

A spike of source s in step k (time in (t_k, t_k+1]) reaches a synapse with delay d steps at the
start of step k + 1 + d: never earlier than spike time + delay, as in NEST. Only the synapses of
spiking sources are touched. Spikes arrive sorted by (step, global id); the synapses of one
source population with one delay form one route, each source's row holding its projections'
synapses in spec order, so every buffer slot sums its increments in one fixed order: the result
does not depend on how neurons are split across ranks (bitwise).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cluster_sim.engine.kernel import BLOCK_ALIGN, event_columns, state_key
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
class Route:
    """The synapses of one source population with one delay, every projection of it merged:
    per source (CSR ``indptr``) its synapses as columns of the packed buffer, in spec order of
    their projections, and within one projection in target order."""

    src_offset: int  # gid offset of the source population
    n_source: int
    delay: int  # steps
    indptr: np.ndarray
    column: np.ndarray  # int64: column of the packed buffer (the target variable's block + target)
    weight: np.ndarray


def _merge(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_source: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSRs over the same sources (indptr, column, weight), in order -> one CSR whose row s is
    the parts' rows s one after the other."""
    src = np.concatenate([np.repeat(np.arange(n_source), np.diff(p[0])) for p in parts])
    order = np.argsort(src, kind="stable")  # stable: part order, then CSR order, within a row
    counts = sum(np.diff(p[0]) for p in parts)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, np.concatenate([p[1] for p in parts])[order], np.concatenate([p[2] for p in parts])[order]


class RingBuffers:
    """The increments by arrival step of every event-receiving variable, as column blocks of one
    ``[slots, columns]`` buffer laid out as the kernel's increment input
    (``kernel.event_columns``): ``take`` hands the kernel one epoch's rows as a view.

    The slots are a multiple of the interval, so an epoch (never crossing an interval boundary)
    is a run of consecutive rows. They are cleared when the next epoch is taken, once the kernel
    that read them has returned (both BSP loops take epoch e+1 after epoch e's call is done)."""

    def __init__(self, net: Network, interval_steps: int, dtype: str = "float64") -> None:
        cols = event_columns(net)
        self.columns, self.width = cols.at, cols.width
        groups: dict[tuple[str, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for proj in net.projections:  # spec order
            if isinstance(proj.synapse, GradedKinetic):
                continue
            key = state_key(proj.target, getattr(proj.synapse, "var"))  # a ConductanceJump
            indptr, tgt, w = proj.by_source()
            groups.setdefault((proj.source, proj.delay_steps), []).append((indptr, self.columns[key][0] + tgt, w))
        self.routes: list[Route] = []
        for (source, delay), parts in groups.items():
            n_source = net.populations[source].count
            indptr, column, weight = _merge(parts, n_source)
            off = int(net.layout.offsets[net.layout.index(source)])
            self.routes.append(Route(off, n_source, delay, indptr, column.astype(np.int64), weight.astype(dtype)))
        max_delay = max((r.delay for r in self.routes), default=0)
        self.interval = interval_steps
        self.slots = -(-(max_delay + interval_steps + 1) // interval_steps) * interval_steps
        self.buffer = _aligned_zeros((self.slots, self.width), np.dtype(dtype))  # padding columns stay zero
        self.rings = {k: self.buffer[:, c0:c0 + n] for k, (c0, n) in self.columns.items()}  # views
        self._taken: slice | None = None  # rows handed out by the last take, not yet cleared

    def deliver(self, spikes: SpikeBatch) -> int:
        """Add every synapse of the spiking sources to its arrival slot; returns synapses touched.

        Per route, the synapses are visited in (spike order, CSR order) and added one by one
        (``np.add.at``), so each slot's sum has one fixed order however the network is split."""
        touched = 0
        if len(spikes) == 0:
            return 0
        flat_buffer = self.buffer.reshape(-1)
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
            # Per spike (not per synapse): where its arrival row starts in the flattened buffer,
            # and how far its synapses' CSR range is from their position in the expanded list.
            row0 = ((spikes.step[sel] + (1 + r.delay)) % self.slots) * self.width
            ends = np.cumsum(lens)
            idx = np.arange(total) + np.repeat(starts - ends + lens, lens)
            np.add.at(flat_buffer, np.repeat(row0, lens) + r.column[idx], r.weight[idx])
            touched += total
        return touched

    def take(self, step0: int, n_steps: int) -> np.ndarray:
        """The increments for steps step0 .. step0+n_steps-1 as one [n_steps, columns] block (zero
        in the padding), the kernel's input layout: a view of the buffer, valid until the next
        ``take``, which clears it."""
        self._clear_taken()
        r0 = step0 % self.slots
        if step0 // self.interval != (step0 + n_steps - 1) // self.interval:  # slots: a multiple of the interval
            raise ValueError(f"epoch of steps {step0}..{step0 + n_steps - 1} crosses an interval boundary "
                             f"(interval {self.interval} steps)")
        self._taken = slice(r0, r0 + n_steps)
        return self.buffer[self._taken]

    def _clear_taken(self) -> None:
        if self._taken is not None:
            self.buffer[self._taken] = 0.0
            self._taken = None

    def snapshot(self) -> dict[str, np.ndarray]:
        """Pending increments by variable, ``[slots, n_local]`` (call between epochs)."""
        self._clear_taken()
        return {k: v.copy() for k, v in self.rings.items()}

    def restore(self, rings: dict[str, np.ndarray], step: int) -> None:
        """Pending increments as ``snapshot`` gave them at global step ``step``, from a buffer of
        any slot count that holds every pending arrival: rows move by arrival step."""
        self._taken = None
        self.buffer[...] = 0.0
        for k, saved in rings.items():
            saved_slots = saved.shape[0]
            if saved_slots < self.slots - self.interval:
                raise ValueError(f"checkpointed ring {k!r} has {saved_slots} slots, fewer than the "
                                 f"{self.slots - self.interval} its delays need: it was written for other delays")
            arrival = step + np.arange(min(saved_slots, self.slots))  # the steps these rows can still hold
            self.rings[k][arrival % self.slots] = saved[arrival % saved_slots]


def _aligned_zeros(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Zeros whose first element sits on a ``BLOCK_ALIGN``-byte boundary."""
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(n + BLOCK_ALIGN, np.uint8)
    start = -raw.ctypes.data % BLOCK_ALIGN
    return raw[start:start + n].view(dtype).reshape(shape)
