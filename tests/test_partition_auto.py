"""The default partition is ``auto``: connectivity-aware where in-step couplings exist, so
``mpiexec -n 2 cluster-sim run jobs/antennal_lobe.toml`` runs (it was refused with ``block``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cluster_sim.network.partition import owner_of, resolve_strategy
from cluster_sim.spec import load_spec
from tests.conftest import JOBS
from tests.mpi_util import mpirun


def test_auto_resolves_by_connectivity() -> None:
    al = load_spec(JOBS / "antennal_lobe.toml")
    cob = load_spec(JOBS / "cobahh.toml")
    assert al.engine.partition == "components" and cob.engine.partition == "block"
    assert resolve_strategy(al, "auto") == "components" and resolve_strategy(cob, "auto") == "block"
    np.testing.assert_array_equal(owner_of(cob, 3, "auto"), owner_of(cob, 3, "block"))
    explicit = load_spec(JOBS / "antennal_lobe.toml", ['engine.partition="round_robin"'])
    assert explicit.engine.partition == "round_robin"


@pytest.mark.mpi
def test_two_ranks_run_the_antennal_lobe_with_the_default(tmp_path: Path) -> None:
    out = tmp_path / "al"
    proc = mpirun(2, "run", str(JOBS / "antennal_lobe.toml"), "--out", str(out), "-q", "--duration=5",
                  "--set=stimuli.odor.start_ms=1.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "oneDNN" not in proc.stderr and "absl::InitializeLog" not in proc.stderr, proc.stderr  # quiet on every rank
    info = json.loads((out / "run.json").read_text())
    assert info["partition"] == "components" and info["ranks"] == 2
