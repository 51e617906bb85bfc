"""Point-to-point messaging for the asynchronous mode: non-blocking sends, probing receives, no
collective inside the loop.

Tags:
* ``DATA`` (source rank -> target rank): new spikes of neurons with targets there, then the
  promise "all my neurons with targets on your rank completed c intervals". One message carries
  both, spikes first, and MPI keeps messages of one (sender, tag) in order, so a promise can
  never overtake a spike it covers. A message with no spikes is a time-advance notification;
  c grows in whole intervals of the minimum delay, so there is at most one per min-delay per
  rank pair. c = K_end is the sender's last message to that rank.
* ``OUTPUT`` (any rank -> rank 0): spikes and trace samples to write; a final one says the sender is finished.
* ``CONTROL``: checkpoint coordination (rare, rank 0 <-> everyone).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

DATA, OUTPUT, CONTROL = 11, 12, 13

COLLECTIVES = {"allgather", "allreduce", "alltoall", "barrier", "bcast", "gather", "reduce", "scatter", "scan",
               "exscan", "reduce_scatter", "allgatherv", "alltoallv", "gatherv", "scatterv", "ibarrier", "iallreduce",
               "ibcast", "iallgather", "ialltoall", "igather", "ireduce", "iscatter"}


class TracedComm:
    """Test instrument: wraps a communicator and counts every method called on it, separately
    for the set-up and the loop (``CLUSTER_SIM_TRACE_COMM=path`` writes the counts per rank)."""

    def __init__(self, comm: Any, path: str) -> None:
        self._comm, self._path = comm, path
        self.phase = "setup"
        self.calls: dict[str, Counter] = {"setup": Counter(), "loop": Counter(), "finish": Counter()}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._comm, name)
        if not callable(attr):
            return attr

        def traced(*args: Any, **kwargs: Any) -> Any:
            self.calls[self.phase][name] += 1
            return attr(*args, **kwargs)

        return traced

    def dump(self) -> None:
        rank = self._comm.Get_rank()
        data: dict[str, Any] = {ph: dict(c) for ph, c in self.calls.items()}
        data["loop_collectives"] = sorted(n for n in self.calls["loop"] if n.lower() in COLLECTIVES)
        with open(f"{self._path}.rank{rank}.json", "w") as fh:
            json.dump(data, fh)


def maybe_trace(comm: Any) -> Any:
    path = os.environ.get("CLUSTER_SIM_TRACE_COMM")
    return TracedComm(comm, path) if (path and comm is not None) else comm


class Mailbox:
    """Non-blocking sends (requests kept until complete) and receives by probing."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self.MPI, self.comm = MPI, comm
        self.pending: list[Any] = []
        self.sent: Counter[int] = Counter()

    def send(self, dest: int, tag: int, obj: Any) -> None:
        self.pending.append(self.comm.isend(obj, dest=dest, tag=tag))
        self.sent[tag] += 1
        if len(self.pending) > 64:
            self.pending = [r for r in self.pending if not r.Test()]

    def receive(self, block: bool) -> list[tuple[int, int, Any]]:
        """Every message that has arrived; with ``block``, wait for at least one."""
        MPI = self.MPI
        got = []
        status = MPI.Status()
        if block:
            self.comm.probe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
        while block or self.comm.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
            src, tag = status.Get_source(), status.Get_tag()
            got.append((src, tag, self.comm.recv(source=src, tag=tag)))
            block = False
        return got

    def receive_tag(self, source: int, tag: int) -> Any:
        return self.comm.recv(source=source, tag=tag)

    def finish(self) -> None:
        for r in self.pending:
            r.Wait()
        self.pending.clear()
