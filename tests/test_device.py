"""Device binding: one GPU per local rank (decided before TensorFlow starts), a clear error when
a GPU is demanded and none is visible."""
from __future__ import annotations

import pytest

from cluster_sim.runtime.device import gpu_for_local_rank
from tests.conftest import SMALL_COBAHH, cli


@pytest.mark.parametrize("local_rank,visible,node,expected", [
    (0, "0,1", 0, "0"), (1, "0,1", 0, "1"), (3, "0,1", 0, "1"),   # SLURM's job-relative list
    (1, "2,3", 0, "3"),                                            # physical ids kept as given
    (2, None, 4, "2"), (5, None, 4, "1"),                          # whole node, no SLURM binding
    (0, None, 0, None), (1, "", 0, None), (0, "-1", 2, None),      # CPU only
])
def test_gpu_for_local_rank(local_rank: int, visible: str | None, node: int, expected: str | None) -> None:
    assert gpu_for_local_rank(local_rank, visible, node) == expected


def test_device_gpu_without_gpu_is_a_clear_error(tmp_path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(SMALL_COBAHH)
    proc = cli("run", str(job), "--out", str(tmp_path / "out"), "--device", "gpu", "--duration", "2", "-q",
               env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "engine.device" in proc.stderr and "no GPU is visible" in proc.stderr and "--device cpu" in proc.stderr
