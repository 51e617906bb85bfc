"""Fixtures for the deployment tests.

The ``slurm`` fixture starts the one-node cluster with ``scripts/slurm_local.sh start`` and fails
(never skips) when it cannot. ``cs`` runs the CLI as ``sys.executable -m cluster_sim.cli``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy_helpers import PAYLOAD, ROOT, run_cs

@pytest.fixture
def cs():
    return run_cs

@pytest.fixture
def payload() -> str:
    """--payload value: the fake ``cluster-sim`` (same run contract, no engine)."""
    return f"{sys.executable} {PAYLOAD}"

@pytest.fixture
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "job.toml"
    p.write_text('name = "fake"\n[simulation]\nduration_ms = 20.0\nseed = 1\n')
    return p

@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"

@pytest.fixture(scope="session")
def slurm() -> None:
    script = ROOT / "scripts" / "slurm_local.sh"
    cp = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, check=False, timeout=900)
    if cp.returncode != 0:
        pytest.fail(f"could not start the local SLURM ({script} start, exit {cp.returncode}):\n"
                    f"{cp.stdout}\n{cp.stderr}", pytrace=False)
    cp = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True, check=False)
    if cp.returncode != 0:
        pytest.fail(f"local SLURM started but is not usable:\n{cp.stdout}\n{cp.stderr}", pytrace=False)
