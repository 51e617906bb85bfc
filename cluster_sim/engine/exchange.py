"""Moving spikes between ranks after each interval, and the few other collective steps the
interval loop needs. The loop calls only this interface; a single process keeps its own spikes.

Backends (``engine.exchange``):
* ``allgather``: MPI Allgatherv of every rank's spikes (NEURON's and NEST's classic scheme).
* ``alltoall``: Alltoallv, each spike sent only to the ranks that host one of its targets
  (decided once at start-up from the local synapses).
* ``horovod``: ``hvd.allgather`` of the spikes and ``hvd.allreduce`` of the stop flag, run as
  TensorFlow graph ops between the compiled intervals (horovod ops cannot run inside
  ``jit_compile`` functions). Optional: horovod is imported only when selected
  (``scripts/build_horovod.sh`` builds it).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
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


def horovod_available() -> bool:
    """True when horovod with its TensorFlow extension is installed. Looks at the files only:
    importing horovod.tensorflow would load TensorFlow, and the core never imports horovod
    unless the horovod backend runs."""
    try:
        found = importlib.util.find_spec("horovod")
    except (ImportError, ValueError):
        return False
    if found is None or not found.submodule_search_locations:
        return False
    return any(any((Path(d) / "tensorflow").glob("mpi_lib*.so")) for d in found.submodule_search_locations)


class HorovodExchange(_MPIBase):
    """Spikes of an interval gathered with ``hvd.allgather``, the stop flag with
    ``hvd.allreduce``. Start-up and end-of-run collectives (``gather``, ``barrier``) stay on
    mpi4py: horovod runs inside the same MPI job (it joins the MPI that mpi4py initialised)."""

    def __init__(self, comm: Any) -> None:
        super().__init__(comm)
        import horovod.tensorflow as hvd
        import tensorflow as tf

        if not hvd.mpi_built():
            raise RuntimeError("engine.exchange = 'horovod': this horovod was built without MPI; "
                               "rebuild it with `bash scripts/build_horovod.sh`")
        hvd.init()
        node_rank = comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()
        ours = (self.rank, self.size, node_rank)
        theirs = (hvd.rank(), hvd.size(), hvd.local_rank())
        # Each rank checks alone, then all agree, so a mismatch on one rank stops every rank.
        bad = self.comm.allreduce(int(ours != theirs), op=self.MPI.MAX)
        if bad:
            raise RuntimeError(f"engine.exchange = 'horovod': horovod sees (rank, size, local rank) = {theirs} "
                               f"but MPI sees {ours} on this rank; horovod must be built against the MPI that "
                               "launches the job (rebuild with scripts/build_horovod.sh in this environment)")
        self._hvd, self._tf = hvd, tf

        # Graph mode: one trace each, the same op names on every rank. Pinned to the host because
        # the spikes arrive here as host arrays (see the README for GPU).
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64)])
        def gather_spikes(rows: Any) -> Any:
            with tf.device("/cpu:0"):
                return hvd.allgather(rows, name="cluster_sim_spikes")

        @tf.function(input_signature=[tf.TensorSpec([1], tf.int32)])
        def flag_sum(flag: Any) -> Any:
            with tf.device("/cpu:0"):
                return hvd.allreduce(flag, op=hvd.Sum, name="cluster_sim_stop")

        self._gather_spikes, self._flag_sum = gather_spikes, flag_sum
        # Trace both now (every rank builds its exchange at the same point), so the first
        # interval's timers do not carry the tracing.
        self.exchange(SpikeBatch.empty())
        self.any_flag(False)

    def exchange(self, local: SpikeBatch) -> SpikeBatch:
        # gid, step and the float64 time's bits as int64 rows: the gather is exact.
        rows = self._gather_spikes(_pack(local).reshape(-1, 3))
        return _unpack(rows.numpy().reshape(-1)).sorted()

    def any_flag(self, flag: bool) -> bool:
        return int(self._flag_sum(np.array([int(flag)], np.int32)).numpy()[0]) > 0
