"""Helpers shared by the deployment tests (imported as ``deploy_helpers``)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PAYLOAD = HERE / "payloads" / "fake_cluster_sim.py"


def cli_module() -> str:
    """Everything runs through the project's entry module (the deploy subcommands are registered there)."""
    return "cluster_sim.cli"


def run_cs(*args: str | Path, cwd: Path | None = None, check: bool = False,
           env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", cli_module(), *map(str, args)]
    cp = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or ROOT, check=False, timeout=timeout,
                        env={**os.environ, **(env or {})})
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
    return cp


def submitted_dir(stdout: str) -> Path:
    m = re.search(r"^submitted .*: (/\S+)$", stdout, re.M)
    assert m, stdout
    return Path(m.group(1))


def scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def release_when_requeued(job_id: str, *, timeout_s: float = 120, settle_s: float = 4.0) -> int:
    """SLURM delays a requeued job ~120 s (BeginTime); let it start now. Returns restarts seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        f = scontrol_job(job_id)
        if f.get("JobState") == "PENDING" and f.get("Reason") == "BeginTime" and int(f.get("Restarts", 0)) > 0:
            time.sleep(settle_s)  # let the previous incarnation's step finish cleaning up
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
            return int(f["Restarts"])
        if f.get("JobState") in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"):
            return int(f.get("Restarts", 0))
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} was not requeued within {timeout_s} s: {scontrol_job(job_id)}")


def read_spikes(path: Path) -> dict[str, tuple[list[float], list[int]]]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for pop, g in f["spikes"].items():
            out[pop] = (g["timestamps"][()].tolist(), g["node_ids"][()].tolist())
    return out
