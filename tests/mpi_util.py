"""Launching real MPI jobs from tests, through the project's one local runner
(:mod:`cluster_sim.deploy.local`: the mpiexec of the MPI library mpi4py is linked to)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from cluster_sim.deploy import local

ROOT = Path(__file__).resolve().parents[1]


def mpi_env() -> dict[str, str]:
    return local.mpi_env()


def mpirun(n: int, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``cluster-sim ARGS`` under ``mpiexec -n n`` (even for n = 1: the identity tests compare MPI runs)."""
    return local.run_cli(n, args, timeout_s=timeout, cwd=ROOT, env=env, use_mpiexec=True)
