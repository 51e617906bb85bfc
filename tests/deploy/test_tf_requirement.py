"""The package's TensorFlow requirement is GPU-capable: built metadata never names tensorflow-cpu
(which pip would install over a GPU image's TensorFlow), and the GPU image's version satisfies it."""
from __future__ import annotations

import email
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
GPU_IMAGE_TF = "2.16.1"  # tensorflow/tensorflow:2.16.1-gpu, the GPU container's base


def _requires(tmp_path: Path) -> list[Requirement]:
    # The PEP 517 metadata hook: what pip reads to decide what to install.
    code = ("import sys, setuptools.build_meta as b; print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    cp = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
    assert cp.returncode == 0, cp.stderr[-2000:]
    meta = email.message_from_string((tmp_path / cp.stdout.strip().splitlines()[-1] / "METADATA").read_text())
    return [Requirement(r) for r in meta.get_all("Requires-Dist")]


def test_tensorflow_requirement_is_gpu_capable(tmp_path: Path) -> None:
    reqs = _requires(tmp_path)
    names = {r.name.lower() for r in reqs}
    assert "tensorflow-cpu" not in names and "tensorflow-gpu" not in names
    linux = {"sys_platform": "linux", "platform_machine": "x86_64", "extra": ""}
    base = [r for r in reqs if r.name == "tensorflow" and (r.marker is None or r.marker.evaluate(linux))]
    assert len(base) == 1 and not base[0].extras, reqs
    assert base[0].specifier.contains(GPU_IMAGE_TF), "pip would replace the GPU image's TensorFlow"
    gpu = [r for r in reqs if r.name == "tensorflow" and r.marker is not None
           and r.marker.evaluate({**linux, "extra": "gpu"}) and not r.marker.evaluate(linux)]
    assert len(gpu) == 1 and "and-cuda" in gpu[0].extras and gpu[0].specifier.contains(GPU_IMAGE_TF)
