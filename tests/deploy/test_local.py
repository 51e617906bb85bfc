"""The one local runner (cluster_sim.deploy.local): command lines, launcher choice, a real mpiexec."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cluster_sim.deploy import local
from cluster_sim.errors import ConfigError


def test_one_rank_is_plain_python_more_go_through_mpiexec():
    assert local.cli_command(1, ["validate", "x.toml"]) == [sys.executable, "-m", "cluster_sim.cli", "validate", "x.toml"]
    cmd = local.cli_command(3, ["run"], launcher_args=["--bind-to", "core"])
    assert cmd[0] == local.find_mpiexec() and cmd[1:6] == ["--oversubscribe", "--bind-to", "core", "-n", "3"]
    assert local.cli_command(1, ["run"], use_mpiexec=True)[0] == local.find_mpiexec()
    with pytest.raises(ConfigError, match="fix:"):
        local.cli_command(0, ["run"])


def test_missing_launcher_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(local.sys, "executable", str(tmp_path / "python3"))
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="install Open MPI"):
        local.find_mpiexec()


def test_real_mpiexec_runs_every_rank(tmp_path: Path):
    cmd = [local.find_mpiexec(), "--oversubscribe", "-n", "2", sys.executable, "-c",
           # one write per rank: print's pieces, written unbuffered, interleave between ranks
           "import os; os.write(1, f\"rank {os.environ.get('OMPI_COMM_WORLD_RANK')}\\n\".encode())"]
    cp = local.run_command(cmd, timeout_s=120, cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.split("\n")[:2]) == ["rank 0", "rank 1"]
