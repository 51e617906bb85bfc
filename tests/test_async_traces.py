"""Traces in the asynchronous mode: values from each neuron's BDF dense output on BSP's sampling
grid, in BSP's SONATA report layout; accurate against fine fixed-step RK4, free of extra steps,
bitwise identical on 1 and 3 real MPI ranks and across checkpoint/resume."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cluster_sim.record.spikes import read_spikes
from cluster_sim.spec import load_spec
from tests.mpi_util import mpirun
from tests.test_async import TOPOLOGIES, _same

HH = """
name = "hh_trace"
[simulation]
duration_ms = 30.0
mode = "{mode}"
[integrator]
method = "rk4"
dt_ms = 0.001
rtol = 1e-8
atol = 1e-8
[populations.N]
model = "hh_squid"
count = 1
[stimuli.step]
waveform = "step"
populations = ["N"]
amplitude_uA_cm2 = 10.0
start_ms = 5.0
stop_ms = 100.0
{rec}
[output]
flush_every_ms = 5.0
"""
REC_HH = """
[recordings.v]
population = "N"
variable = "v"
neurons = [0]
sampling_ms = 0.1
"""
# Recorded neurons of two populations, spread over the ranks by the round-robin partition.
REC_NET = """
[recordings.vE]
population = "E"
variable = "v"
neurons = [0, 3, 5, 11]
sampling_ms = 0.1
[recordings.vR]
population = "R"
variable = "v"
neurons = [1, 2, 4]
sampling_ms = 0.25
"""


def _simulate(spec_text: str, tmp: Path, name: str, overrides: list[str] | None = None, **kw):
    path = tmp / f"{name}.toml"
    path.write_text(spec_text)
    spec = load_spec(path, overrides or [])
    from cluster_sim.run import simulate  # one entry point for both modes

    return simulate(spec, tmp / name, progress=False, **kw)


def _report(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, node_ids, data) read back with plain h5py from the SONATA layout."""
    with h5py.File(path, "r") as f:
        (pop,) = list(f["report"])
        g = f["report"][pop]
        start, stop, dt = g["mapping/time"][:]
        data = g["data"][:]
        assert g["mapping/index_pointers"][:].tolist() == list(range(data.shape[1] + 1))
        assert g["data"].attrs["variable_name"] == "v" and g["data"].attrs["units"] == "mV"
        return start + dt * np.arange(data.shape[0]), g["mapping/node_ids"][:], data


@pytest.fixture(scope="module")
def hh_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("hh")
    info = {k: _simulate(HH.format(mode=m, rec=r), tmp, k).info
            for k, m, r in (("async", "async", REC_HH), ("bsp", "bsp", REC_HH), ("norec", "async", ""))}
    return {"tmp": tmp, "info": info}


def test_single_hh_trace_matches_fine_rk4(hh_runs: dict) -> None:
    tmp = hh_runs["tmp"]
    ta, ida, va = _report(tmp / "async" / "report_v.h5")
    tb, idb, vb = _report(tmp / "bsp" / "report_v.h5")
    assert va.shape == vb.shape == (300, 1) and np.array_equal(ta, tb) and np.array_equal(ida, idb)
    spikes = read_spikes(tmp / "bsp" / "spikes.h5")["N"][0]
    assert spikes.size == 2
    away = np.all(np.abs(ta[:, None] - spikes[None, :]) > 2.0, axis=1)
    dv = np.abs(va[:, 0] - vb[:, 0])
    # Measured: 1.7e-4 mV away from spikes, 6e-4 mV overall (rtol = atol = 1e-8).
    assert dv[away].max() < 1e-3
    assert dv.max() < 5e-3


def test_recording_takes_no_extra_steps(hh_runs: dict) -> None:
    tmp, info = hh_runs["tmp"], hh_runs["info"]
    assert _same(read_spikes(tmp / "async" / "spikes.h5"), read_spikes(tmp / "norec" / "spikes.h5"))
    for key in ("steps_per_neuron", "rhs_evals_per_neuron", "rejected_steps_per_neuron"):
        assert info["async"][key] == info["norec"][key]


@pytest.fixture(scope="module")
def net_one_rank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("net")
    _simulate(TOPOLOGIES + REC_NET, tmp, "r1", ["simulation.duration_ms=20.0"])
    return tmp


def _all_reports(out: Path) -> dict[str, np.ndarray]:
    return {name: _report(out / f"report_{name}.h5")[2] for name in ("vE", "vR")}


def test_network_traces_identical_on_3_ranks(net_one_rank: Path, tmp_path: Path) -> None:
    (tmp_path / "net.toml").write_text(TOPOLOGIES + REC_NET)
    r = mpirun(3, "run", str(tmp_path / "net.toml"), "--out", str(tmp_path / "r3"), "-q", "--duration", "20",
               "--set", 'engine.partition="round_robin"', timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    one, three = _all_reports(net_one_rank / "r1"), _all_reports(tmp_path / "r3")
    assert one["vE"].shape == (200, 4) and one["vR"].shape == (80, 3)
    assert all(np.array_equal(one[k], three[k]) for k in one)
    assert np.isfinite(one["vE"]).all() and one["vE"].std() > 1.0  # real, moving traces


def test_network_traces_resume_bitwise(net_one_rank: Path, tmp_path: Path) -> None:
    _simulate(TOPOLOGIES + REC_NET, tmp_path, "part", ["simulation.duration_ms=15.0"], checkpoint_every_ms=8.0)
    manifest = json.loads((tmp_path / "part" / "checkpoint" / "manifest.json").read_text())
    assert manifest["simulated_ms"] == pytest.approx(8.0) and manifest["trace_rows"] == {"vE": 80, "vR": 32}
    _simulate(TOPOLOGIES + REC_NET, tmp_path, "part", ["simulation.duration_ms=20.0"], resume=True)
    whole, resumed = _all_reports(net_one_rank / "r1"), _all_reports(tmp_path / "part")
    assert all(np.array_equal(whole[k], resumed[k]) for k in whole)
