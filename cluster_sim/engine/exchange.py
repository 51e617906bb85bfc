"""Moving spikes between ranks after each interval, and the few other collective steps the
interval loop needs. The loop calls only this interface; a single process keeps its own spikes.

Backends (``engine.exchange``):
* ``allgather``: MPI Allgatherv of every rank's spikes (NEURON's and NEST's classic scheme).
* ``alltoall``: Alltoallv, each spike sent only to the ranks that host one of its targets
  (decided once at start-up from the local synapses).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from cluster_sim.engine.delivery import SpikeBatch


class Exchange(Protocol):
    rank: int
    size: int

    def exchange(self, local: SpikeBatch) -> SpikeBatch:
        """All spikes this rank must deliver, sorted by (step, gid)."""
        ...

    def any_flag(self, flag: bool) -> bool:
        """True if any rank raised ``flag``; the one synchronisation point per interval (its
        duration is the imbalance wait)."""
        ...

    def gather(self, obj: Any) -> list[Any] | None:
        """Objects of every rank at rank 0 (None elsewhere)."""
        ...

    def barrier(self) -> None: ...


class LocalExchange:
    rank = 0
    size = 1

    def exchange(self, local: SpikeBatch) -> SpikeBatch:
        return local.sorted()

    def any_flag(self, flag: bool) -> bool:
        return flag

    def gather(self, obj: Any) -> list[Any] | None:
        return [obj]

    def barrier(self) -> None:
        pass


def _pack(batch: SpikeBatch) -> np.ndarray:
    buf = np.empty((len(batch), 3), np.int64)
    buf[:, 0] = batch.gid
    buf[:, 1] = batch.step
    buf[:, 2] = batch.time.view(np.int64)
    return buf.reshape(-1)


def _unpack(buf: np.ndarray) -> SpikeBatch:
    rows = buf.reshape(-1, 3)
    return SpikeBatch(rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy().view(np.float64))


class _MPIBase:
    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def any_flag(self, flag: bool) -> bool:
        return bool(self.comm.allreduce(int(flag), op=self.MPI.MAX))

    def gather(self, obj: Any) -> list[Any] | None:
        return self.comm.gather(obj, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()


class AllgatherExchange(_MPIBase):
    def exchange(self, local: SpikeBatch) -> SpikeBatch:
        send = _pack(local)
        counts = np.empty(self.size, np.int64)
        self.comm.Allgather(np.array([send.size], np.int64), counts)
        recv = np.empty(int(counts.sum()), np.int64)
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.comm.Allgatherv(send, [recv, counts, displs, self.MPI.INT64_T])
        return _unpack(recv).sorted()


class AlltoallExchange(_MPIBase):
    """Each spike goes only to ranks that host a target of its source. ``needed`` marks the
    source gids of this rank's spike-triggered synapses; at start-up the ranks swap these masks
    (packed bits) so every rank knows where each of its own neurons' spikes must go."""

    def __init__(self, comm: Any, n_total: int, needed_sources: np.ndarray, local_gids: np.ndarray) -> None:
        super().__init__(comm)
        mask = np.zeros(n_total, bool)
        mask[needed_sources] = True
        bits = np.packbits(mask)
        all_bits = np.empty((self.size, bits.size), np.uint8)
        self.comm.Allgather(bits, all_bits)
        need = np.unpackbits(all_bits, axis=1, count=n_total).astype(bool)  # [rank, gid]
        self._gid_sorted = np.sort(local_gids)
        self._dest = need[:, self._gid_sorted].T  # [local neuron, rank]

    def exchange(self, local: SpikeBatch) -> SpikeBatch:
        pos = np.searchsorted(self._gid_sorted, local.gid)
        dest = self._dest[pos]  # [spike, rank]
        spike_idx, ranks = np.nonzero(dest)
        order = np.argsort(ranks, kind="stable")
        spike_idx, ranks = spike_idx[order], ranks[order]
        send = _pack(SpikeBatch(local.gid[spike_idx], local.step[spike_idx], local.time[spike_idx]))
        send_counts = np.bincount(ranks, minlength=self.size).astype(np.int64) * 3
        recv_counts = np.empty(self.size, np.int64)
        self.comm.Alltoall(send_counts, recv_counts)
        recv = np.empty(int(recv_counts.sum()), np.int64)
        sdispl = np.concatenate([[0], np.cumsum(send_counts)[:-1]])
        rdispl = np.concatenate([[0], np.cumsum(recv_counts)[:-1]])
        self.comm.Alltoallv([send, send_counts, sdispl, self.MPI.INT64_T], [recv, recv_counts, rdispl, self.MPI.INT64_T])
        return _unpack(recv).sorted()
