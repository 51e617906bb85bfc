"""Checks of ``cluster-sim run`` arguments that need no spec field of their own: the output folder
and ``--checkpoint-every``. Both run before TensorFlow is imported, so bad input costs
milliseconds and exits 2. (The resume checks are the run layer's: ``run/resume.py``.)"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from cluster_sim.errors import ConfigError
from cluster_sim.spec.schema import JobSpec
from cluster_sim.spec.timing import communication_interval_ms


def check_out_dir(out: Path, key: str = "--out", resume: bool = False) -> None:
    """The output folder can be created and written: not a file, not under a file, writable.
    Checked by doing it (mkdir, create and delete a probe file): permission bits alone say
    nothing for root or on ACL/NFS mounts."""
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"is under {parent}, which is a file"
            raise ConfigError(key, str(out), f"{where}, not a folder", "give a folder path (it is created if missing)")
    if resume and not out.is_dir():
        raise ConfigError(key, str(out), "does not exist, so it holds no checkpoint to resume",
                          "give the --out folder of the run to continue, or drop --resume")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".cluster-sim-write-test.{os.getpid()}"
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as e:
        raise ConfigError(key, str(out), f"cannot be written ({e.strerror or e})",
                          "choose a folder you can write to, or fix its permissions / free the disk") from e


def _launch_rank() -> int:
    """This process's rank from the launcher's environment (mpi4py is not imported yet)."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def checkpoint_every_ms(value: float | None, spec: JobSpec) -> float:
    """The checkpoint period to run with: ``--checkpoint-every`` (or the spec's
    ``output.checkpoint_every_ms``), refused when not a positive finite number, rounded up to
    one communication interval (checkpoints can only be written between intervals; a shorter
    period used to round to zero, i.e. silently no checkpoints) with a notice."""
    if value is not None:
        if not math.isfinite(value) or value <= 0:
            raise ConfigError("--checkpoint-every", value, "must be a positive, finite number of simulated ms",
                              "give e.g. --checkpoint-every 100 (or leave it out: checkpoints on SIGTERM/SIGUSR1 only)")
        every = float(value)
        key = "--checkpoint-every"
    else:
        every = spec.output.checkpoint_every_ms
        key = "output.checkpoint_every_ms"
    if every == 0:
        return 0.0
    interval = communication_interval_ms(spec)
    if every < interval * (1 - 1e-9):
        if _launch_rank() == 0:  # under MPI every rank gets here; one notice is enough
            print(f"cluster-sim: {key} = {every:g} ms is shorter than one communication interval "
                  f"({interval:g} ms); checkpoints are written every {interval:g} ms", file=sys.stderr)
        return interval
    return every

