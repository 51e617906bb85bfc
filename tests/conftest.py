"""Shared fixtures: small job specs written as TOML (the same path users take)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster_sim.runtime.device import prepare_environment

# XLA flags (one arithmetic for every batch lane, see cluster_sim/runtime/device.py) are read
# once per process: set them before any test imports TensorFlow.
prepare_environment()

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"

SMALL_COBAHH = """
name = "small_cobahh"
[simulation]
duration_ms = 100.0
seed = 3
[integrator]
method = "exp_euler"
dt_ms = 0.1
[populations.E]
model = "cobahh"
count = 320
[populations.I]
model = "cobahh"
count = 80
[projections.EE]
source = "E"
target = "E"
synapse = "exp_cond_exc"
connect = { rule = "bernoulli", p = 0.1 }
weight_nS = 6.0
delay_ms = 1.0
[projections.EI]
source = "E"
target = "I"
synapse = "exp_cond_exc"
connect = { rule = "bernoulli", p = 0.1 }
weight_nS = 6.0
delay_ms = 1.0
[projections.IE]
source = "I"
target = "E"
synapse = "exp_cond_inh"
connect = { rule = "bernoulli", p = 0.1 }
weight_nS = 67.0
delay_ms = 1.0
[projections.II]
source = "I"
target = "I"
synapse = "exp_cond_inh"
connect = { rule = "bernoulli", p = 0.1 }
weight_nS = 67.0
delay_ms = 1.5
[recordings.vE]
population = "E"
variable = "v"
neurons = [0, 5, 7]
sampling_ms = 0.5
[output]
flush_every_ms = 10.0
"""


@pytest.fixture(scope="session")
def small_cobahh_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL_COBAHH written once for every module that only reads it."""
    path = tmp_path_factory.mktemp("job") / "small_cobahh.toml"
    path.write_text(SMALL_COBAHH)
    return path


@pytest.fixture
def small_cobahh(tmp_path: Path) -> Path:
    path = tmp_path / "small_cobahh.toml"
    path.write_text(SMALL_COBAHH)
    return path


def cli(*args: str, check: bool = False, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real console entry point in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "cluster_sim.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"cluster-sim {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def no_tf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment in which importing TensorFlow fails loudly: for what must be refused (or
    done) before TensorFlow is imported."""
    fake = tmp_path_factory.mktemp("fake_tf") / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise SystemExit('FAKE TENSORFLOW IMPORTED')\n")
    return {"PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"}
