"""The MPI context of this process: rank, size, local rank on the node and the cores it may
use. mpi4py is imported only when a launcher (mpiexec, srun) started more than one rank, so a
single-process run needs no MPI library at all."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


_ACTIVE: "MPIContext | None" = None


def mpi_world_size() -> int:
    """Size of the MPI job this process was launched in (1 when not launched by MPI/srun),
    read from the launcher's environment so that mpi4py is imported only when needed."""
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    if "PMIX_RANK" in os.environ and os.environ.get("SLURM_STEP_NUM_TASKS", "").isdigit():
        return int(os.environ["SLURM_STEP_NUM_TASKS"])
    return 1


@dataclass(frozen=True)
class MPIContext:
    comm: Any
    rank: int
    size: int
    local_rank: int
    local_size: int
    cpu_threads: int


def mpi_context() -> MPIContext | None:
    """Initialise MPI when launched with more than one rank; None otherwise."""
    global _ACTIVE
    if _ACTIVE is not None:
        return _ACTIVE
    if mpi_world_size() <= 1:
        return None
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return None
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank = int(os.environ.get("SLURM_LOCALID", node.Get_rank()))
    local_size = node.Get_size()
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        threads = int(os.environ["SLURM_CPUS_PER_TASK"])
    else:
        threads = max(1, len(os.sched_getaffinity(0)) // local_size)
    _ACTIVE = MPIContext(comm, comm.Get_rank(), comm.Get_size(), local_rank, local_size, threads)
    return _ACTIVE


def active_context() -> MPIContext | None:
    return _ACTIVE


def abort_all(status: int) -> None:
    if _ACTIVE is not None:
        _ACTIVE.comm.Abort(status)
