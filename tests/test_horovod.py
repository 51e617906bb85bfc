"""The optional horovod spike exchange with real ``mpiexec`` (and ``horovodrun``): spikes bitwise
identical to one rank and to the mpi4py ``allgather`` backend for COBAHH and the antennal lobe;
checkpoints move between horovod and ``alltoall`` both ways; selecting horovod where it is not
installed is an input error naming the build script. Horovod must be built first
(``bash scripts/build_horovod.sh``; ``scripts/setup.sh`` does it as root)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster_sim.engine.exchange import horovod_available
from tests.conftest import JOBS, cli
from tests.mpi_util import mpi_env, mpirun
from tests.test_mpi import AL, _identical, _ok

pytestmark = pytest.mark.mpi

# Short runs: horovod costs ~1.5 ms per collective on CPU, and each launch pays TensorFlow's start-up.
COBAHH = ["--set=populations.E.count=800", "--set=populations.I.count=200", "--duration=30"]
HOROVOD = '--set=engine.exchange="horovod"'


@pytest.fixture(scope="module", autouse=True)
def _horovod_built() -> None:
    # Not a skip: on CI horovod is part of the set-up, and its absence is a failure to see.
    assert horovod_available(), "horovod is not installed: run `bash scripts/build_horovod.sh`"


@pytest.fixture(scope="module")
def cobahh_one_rank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cobahh1")
    cli("run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *COBAHH, check=True)
    return out


@pytest.fixture(scope="module")
def cobahh_allgather_three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cobahh_ag3")
    _ok(mpirun(3, "run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *COBAHH, '--set=engine.exchange="allgather"'))
    return out


@pytest.mark.parametrize("ranks", [2, 3])
def test_cobahh_horovod_identical_to_one_rank_and_allgather(ranks: int, cobahh_one_rank: Path,
                                                           cobahh_allgather_three: Path, tmp_path: Path) -> None:
    out = tmp_path / "hvd"
    _ok(mpirun(ranks, "run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *COBAHH, HOROVOD))
    assert _identical(cobahh_one_rank, out) > 300
    assert _identical(cobahh_allgather_three, out) > 300
    info = json.loads((out / "run.json").read_text())
    assert info["ranks"] == ranks and info["exchange"] == "horovod"
    assert all(r["exchange"] > 0 for r in info["per_rank"])


AL_SHORT = [a for a in AL if not a.startswith("--duration")] + ["--duration=30"]


@pytest.fixture(scope="module")
def al_one_rank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("al1")
    cli("run", str(JOBS / "antennal_lobe.toml"), "--out", str(out), "-q", *AL_SHORT, check=True)
    return out


@pytest.mark.parametrize("ranks", [2, 3])
def test_al_horovod_identical_to_one_rank(ranks: int, al_one_rank: Path, tmp_path: Path) -> None:
    out = tmp_path / "hvd"
    _ok(mpirun(ranks, "run", str(JOBS / "antennal_lobe.toml"), "--out", str(out), "-q", *AL_SHORT,
               '--set=engine.partition="components"', HOROVOD))
    assert _identical(al_one_rank, out) > 0  # the odour starts at 5 ms: few spikes by 30 ms


@pytest.mark.parametrize("first,then", [("horovod", "alltoall"), ("alltoall", "horovod")])
def test_checkpoint_moves_between_horovod_and_alltoall(first: str, then: str, cobahh_one_rank: Path, tmp_path: Path) -> None:
    out = tmp_path / "cr"
    legs = [a for a in COBAHH if not a.startswith("--duration")]
    _ok(mpirun(2, "run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *legs, "--duration=20",
               "--checkpoint-every=10", f'--set=engine.exchange="{first}"'))
    assert json.loads((out / "checkpoint" / "manifest.json").read_text())["step"] == 100
    _ok(mpirun(3, "run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *legs, "--duration=30", "--resume",
               f'--set=engine.exchange="{then}"'))
    assert _identical(cobahh_one_rank, out) > 300
    info = json.loads((out / "run.json").read_text())
    assert info["resumed_from_ms"] == pytest.approx(10.0) and info["exchange"] == then


def test_horovodrun_two_ranks(cobahh_one_rank: Path, tmp_path: Path) -> None:
    horovodrun = shutil.which("horovodrun") or str(Path(sys.executable).with_name("horovodrun"))
    out = tmp_path / "hr"
    proc = subprocess.run([horovodrun, "-np", "2", "--mpi", sys.executable, "-m", "cluster_sim.cli", "run",
                           str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *COBAHH, HOROVOD],
                          capture_output=True, text=True, timeout=300, env=mpi_env(), cwd=Path(__file__).parents[1])
    _ok(proc)
    assert _identical(cobahh_one_rank, out) > 300


def test_horovod_not_installed_is_an_input_error(tmp_path: Path) -> None:
    # A horovod package without its compiled TensorFlow extension shadows the real one.
    fake = tmp_path / "site" / "horovod"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    out = tmp_path / "run"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", ""),
                                          str(Path(__file__).parents[1])])}
    proc = cli("run", str(JOBS / "cobahh.toml"), "--out", str(out), *COBAHH, HOROVOD, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "engine.exchange" in proc.stderr and "scripts/build_horovod.sh" in proc.stderr, proc.stderr[-3000:]
    assert not out.exists(), "refused before any output"
