"""Distributed bulk-synchronous runs with real ``mpiexec``: identical spikes for 1-4 ranks with
both exchange backends and both partition strategies, refusal of cut in-step couplings,
checkpoint on 2 ranks and resume on 3, a failing rank stops all, memory per rank shrinks."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from cluster_sim.record.spikes import read_spikes
from tests.conftest import JOBS, cli
from tests.mpi_util import mpirun

pytestmark = pytest.mark.mpi

COBAHH = ["--set=populations.E.count=1600", "--set=populations.I.count=400", "--duration=60"]
AL = ["--duration=60", "--set=stimuli.odor.start_ms=5.0", "--set=stimuli.odor.rise_tau_ms=10.0"]


def _identical(a: Path, b: Path) -> int:
    sa, sb = read_spikes(a / "spikes.h5"), read_spikes(b / "spikes.h5")
    total = 0
    for pop in sa:
        np.testing.assert_array_equal(sa[pop][1], sb[pop][1], err_msg=f"{pop}: node ids differ")
        np.testing.assert_array_equal(sa[pop][0], sb[pop][0], err_msg=f"{pop}: spike times differ (not bitwise)")
        total += sa[pop][0].size
    return total


def _ok(proc) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def cobahh_one_rank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cobahh1")
    cli("run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *COBAHH, check=True)
    assert sum(t.size for t, _ in read_spikes(out / "spikes.h5").values()) > 1000
    return out


@pytest.mark.parametrize("ranks", [2, 3, 4])
@pytest.mark.parametrize("exchange", ["allgather", "alltoall"])
@pytest.mark.parametrize("partition", ["block", "round_robin"])
def test_cobahh_identical_across_ranks(ranks: int, exchange: str, partition: str, cobahh_one_rank: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = mpirun(ranks, "run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *COBAHH,
                  f'--set=engine.exchange="{exchange}"', f'--set=engine.partition="{partition}"')
    _ok(proc)
    assert _identical(cobahh_one_rank, out) > 1000
    info = json.loads((out / "run.json").read_text())
    assert info["ranks"] == ranks and info["exchange"] == exchange and len(info["per_rank"]) == ranks
    assert sum(r["neurons"] for r in info["per_rank"]) == 2000
    assert sum(r["synapses"] for r in info["per_rank"]) == info["n_synapses"]
    assert 0 < info["load_balance"] <= 1.0
    for r in info["per_rank"]:
        assert {"integrate", "wait", "exchange", "deliver", "io"} <= set(r)


@pytest.fixture(scope="module")
def al_one_rank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("al1")
    cli("run", str(JOBS / "antennal_lobe.toml"), "--out", str(out), "-q", *AL, check=True)
    assert sum(t.size for t, _ in read_spikes(out / "spikes.h5").values()) > 10
    return out


@pytest.mark.parametrize("ranks,exchange", [(2, "allgather"), (3, "alltoall"), (4, "allgather")])
def test_al_identical_across_ranks_with_components_partition(ranks: int, exchange: str, al_one_rank: Path, tmp_path: Path) -> None:
    out = tmp_path / "al"
    proc = mpirun(ranks, "run", str(JOBS / "antennal_lobe.toml"), "--out", str(out), "-q", *AL,
                  '--set=engine.partition="components"', f'--set=engine.exchange="{exchange}"')
    _ok(proc)
    assert _identical(al_one_rank, out) > 10


@pytest.mark.parametrize("partition", ["block", "round_robin"])
def test_al_cut_graded_coupling_is_refused_by_name(partition: str, tmp_path: Path) -> None:
    out = tmp_path / "al"
    t0 = time.time()
    proc = mpirun(2, "run", str(JOBS / "antennal_lobe.toml"), "--out", str(out), *AL, f'--set=engine.partition="{partition}"')
    assert proc.returncode != 0
    assert re.search(r"projections\.(PN_LN_ach|LN_PN_gaba_a|LN_LN_gaba_a)", proc.stderr), proc.stderr[-3000:]
    assert "components" in proc.stderr and time.time() - t0 < 120
    assert not (out / "spikes.h5").exists(), "refused before any compute or output"


def test_checkpoint_on_two_ranks_resume_on_three(cobahh_one_rank: Path, tmp_path: Path) -> None:
    out = tmp_path / "cr"
    legs = [a for a in COBAHH if not a.startswith("--duration")]
    _ok(mpirun(2, "run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *legs, "--duration=40", "--checkpoint-every=20"))
    manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
    assert manifest["ranks"] == 2 and manifest["step"] == 200
    _ok(mpirun(3, "run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *legs, "--duration=60", "--resume",
               '--set=engine.partition="round_robin"', '--set=engine.exchange="alltoall"'))
    assert _identical(cobahh_one_rank, out) > 1000
    assert json.loads((out / "run.json").read_text())["resumed_from_ms"] == pytest.approx(20.0)


def test_failing_rank_stops_every_rank_quickly(tmp_path: Path) -> None:
    out = tmp_path / "fail"
    proc = mpirun(3, "run", str(JOBS / "cobahh.toml"), "--out", str(out), "-q", *COBAHH, "--duration=2000",
                  env={"CLUSTER_SIM_INJECT_FAULT": "1:20"}, timeout=200)
    t_end = time.time()
    assert proc.returncode != 0
    assert "[rank 1/3]" in proc.stderr and "injected fault on rank 1" in proc.stderr, proc.stderr[-3000:]
    t_fault = float(re.search(r"unix time (\d+\.\d+)", proc.stderr).group(1))
    assert t_end - t_fault < 10.0, f"ranks took {t_end - t_fault:.1f} s to stop after the fault"


def test_memory_per_rank_shrinks_with_rank_count(tmp_path: Path) -> None:
    big = ["--set=populations.E.count=12800", "--set=populations.I.count=3200", "--duration=2"]
    one = tmp_path / "one"
    cli("run", str(JOBS / "cobahh.toml"), "--out", str(one), "-q", *big, check=True)
    two = tmp_path / "two"
    _ok(mpirun(2, "run", str(JOBS / "cobahh.toml"), "--out", str(two), "-q", *big))
    r1 = json.loads((one / "run.json").read_text())["per_rank"]
    r2 = json.loads((two / "run.json").read_text())["per_rank"]
    assert r1[0]["synapses"] > 4_000_000
    for r in r2:  # the network held per rank halves (±5%)
        assert 0.45 < r["network_bytes"] / r1[0]["network_bytes"] < 0.55, (r, r1)
        assert r["max_rss_mb"] < r1[0]["max_rss_mb"] - 50, (r["max_rss_mb"], r1[0]["max_rss_mb"])
