"""``cluster-sim resubmit RUN_DIR [--time T]``: continue a cancelled, timed-out or given-up run
folder from its checkpoint, with the folder's own script (same spec, duration and overrides).

The new job id is appended to the manifest and becomes the unit's job, so ``status``/``wait``
follow it; the earlier incarnations' provenance is moved to ``provenance/job-<old id>/`` first,
because the new job starts again at SLURM restart 0 and would overwrite it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from cluster_sim.deploy import _validate as v
from cluster_sim.deploy.folder import RunFolder, now_utc
from cluster_sim.deploy.slurm import JobState, Runner, _run
from cluster_sim.errors import ConfigError


def resubmit(run_dir: Path, *, time: str | None = None, runner: Runner = _run) -> str:
    """Submit the folder's job.sbatch again (``--time`` overrides its limit); returns the new job id."""
    folder = RunFolder.open(run_dir)
    run_dir = folder.path
    if folder.manifest.get("kind") != "run":
        raise ConfigError("RUN_DIR", str(run_dir), f"is a {folder.manifest.get('kind')} folder; resubmit continues "
                          "single runs", "resubmit a failed sweep task or study member with cluster-sim submit --set ...")
    if time is not None:
        v.time_limit("--time", time)
    sts = folder.status()
    st = sts[0] if sts else None
    if st is not None and st.state.is_active:
        raise ConfigError("RUN_DIR", str(run_dir), f"job {st.job_id} is still {st.state.value}",
                          f"wait for it, or cancel it first: cluster-sim cancel {run_dir}")
    if st is not None and st.state is JobState.COMPLETED:
        raise ConfigError("RUN_DIR", str(run_dir), "already completed", "nothing to continue; submit a new run")
    old = folder.manifest["units"][0]["job"]
    prov = run_dir / "provenance"
    if prov.is_dir() and old:
        keep = prov / f"job-{old}"
        keep.mkdir(exist_ok=True)
        for d in prov.glob("restart-*"):
            shutil.move(str(d), str(keep / d.name))
    return folder.submit("job.sbatch", role="run", replaces=old, runner=runner,
                         sbatch_args=[f"--time={time}"] if time else [], resubmit_of=old, time=time,
                         submitted_utc=now_utc())
