"""Device binding: one GPU per local rank (decided before TensorFlow starts), a clear error when
a GPU is demanded and none is visible."""
from __future__ import annotations

import pytest

from cluster_sim.runtime.device import gpu_for_local_rank, prepare_environment
from tests.conftest import SMALL_COBAHH, cli


@pytest.mark.parametrize("local_rank,visible,node,expected", [
    (0, "0,1", 0, "0"), (1, "0,1", 0, "1"), (3, "0,1", 0, "1"),   # SLURM's job-relative list
    (1, "2,3", 0, "3"),                                            # physical ids kept as given
    (0, "3,5", 8, "3"), (1, "3,5", 8, "5"),                        # never local_rank % G as an absolute id
    (1, "5", 8, "5"),                                              # srun --gpus-per-task=1: one entry per task
    (2, None, 4, "2"), (5, None, 4, "1"),                          # whole node, no SLURM binding
    (0, None, 0, None), (1, "", 0, None), (0, "-1", 2, None),      # CPU only
])
def test_gpu_for_local_rank(local_rank: int, visible: str | None, node: int, expected: str | None) -> None:
    assert gpu_for_local_rank(local_rank, visible, node) == expected


@pytest.mark.parametrize("local_rank,expected", [(0, "3"), (1, "5")])
def test_prepare_environment_takes_slurms_list(monkeypatch, local_rank: int, expected: str) -> None:
    """SLURM gave the job GPUs 3 and 5 of an 8-GPU node without device cgroups: each local rank
    takes its entry of that list, never GPU local_rank (0/1 belong to someone else)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_LOCALID", str(local_rank))
    prepare_environment(local_rank)
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == expected


def test_slurm_job_without_gpus_hides_node_gpus() -> None:
    assert gpu_for_local_rank(1, None, 4, under_slurm=True) == ""
    assert gpu_for_local_rank(1, None, 4, under_slurm=False) == "1"


def test_device_gpu_without_gpu_is_a_clear_error(tmp_path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(SMALL_COBAHH)
    proc = cli("run", str(job), "--out", str(tmp_path / "out"), "--device", "gpu", "--duration", "2", "-q",
               env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "engine.device" in proc.stderr and "no GPU is visible" in proc.stderr and "--device cpu" in proc.stderr
