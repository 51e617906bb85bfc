"""The antennal lobe (graded GABA_A, cholinergic pulses) in the asynchronous mode: one coupled
group per connected component, against BSP RK4, across rank counts, resume and signals, with
traces, and the PSST protocol over 1 s. Real mpiexec; spikes and reports read back from disk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cluster_sim import analysis
from cluster_sim.errors import ConfigError
from cluster_sim.record.spikes import read_spikes
from cluster_sim.record.traces import read_trace
from cluster_sim.run import check, simulate
from cluster_sim.runtime.stop import StopRequest
from cluster_sim.spec import load_spec
from tests.mpi_util import mpirun
from tests.sonata_check import assert_sonata_readable

ROOT = Path(__file__).resolve().parents[1]
AL = ROOT / "jobs" / "antennal_lobe.toml"
SLOW = ROOT / "jobs" / "antennal_lobe_slow_gaba.toml"
# The odor switched on at 20 ms so that 150 ms hold enough spikes to compare.
EARLY = ["simulation.duration_ms=150", "stimuli.odor.start_ms=20"]
ASYNC = ['simulation.mode="async"']


def _run(job: Path, out: Path, overrides: list[str], **kw) -> dict:
    res = simulate(load_spec(job, overrides), out, progress=False, **kw)
    assert res.exit_status in (0, 75), res.info
    return res.info


def _same(a: dict, b: dict) -> bool:
    def srt(s: dict) -> dict:
        return {p: (t[np.lexsort((t, i))], i[np.lexsort((t, i))]) for p, (t, i) in s.items()}
    a, b = srt(a), srt(b)
    return a.keys() == b.keys() and all(np.array_equal(a[p][0], b[p][0]) and np.array_equal(a[p][1], b[p][1]) for p in a)


@pytest.fixture(scope="module")
def early(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The early-odor AL in async (1 rank) and in BSP RK4 at dt 0.005 ms."""
    base = tmp_path_factory.mktemp("al_async")
    _run(AL, base / "async", EARLY + ASYNC)
    _run(AL, base / "bsp", EARLY + ["integrator.dt_ms=0.005"])
    return {"async": base / "async", "bsp": base / "bsp", "base": base}


def test_al_async_matches_bsp_rk4(early: dict[str, Path]) -> None:
    cmp = analysis.compare_spikes(early["async"], early["bsp"], tolerance_ms=1.0)
    n = max(cmp["n_a"], cmp["n_b"])
    print(f"\nAL async vs BSP RK4 dt 0.005, 150 ms: {cmp['matched']}/{n} matched within 1 ms, "
          f"mean |Δt| {cmp['mean_abs_error_ms']:.3f} ms, max {cmp['max_abs_error_ms']:.3f} ms")
    assert cmp["n_a"] >= 10 and all(cmp["populations"][p]["n_a"] > 0 for p in ("PN", "LN")), cmp
    assert cmp["matched"] >= 0.9 * n, cmp
    info = json.loads((early["async"] / "run.json").read_text())
    assert info["mode"] == "async" and info["n_synapses"] == json.loads((early["bsp"] / "run.json").read_text())["n_synapses"]
    assert info["traces_during_run"] == 0, "the group kernel is compiled during startup"


def test_al_async_traces_match_bsp_and_read_by_libsonata(early: dict[str, Path]) -> None:
    assert_sonata_readable(early["async"])
    for pop in ("PN", "LN"):
        t_a, ids_a, v_a = read_trace(early["async"] / f"report_v_{pop}.h5")
        t_b, ids_b, v_b = read_trace(early["bsp"] / f"report_v_{pop}.h5")
        assert np.array_equal(t_a, t_b) and np.array_equal(ids_a, ids_b) and v_a.shape == v_b.shape == (1500, ids_a.size)
        quiet = t_a < 20.0  # before the odor: no spikes, the traces relax to rest
        err = np.abs(v_a[quiet] - v_b[quiet]).max()
        print(f"\n{pop}: max |ΔV| async vs BSP RK4 dt 0.005 over 0–20 ms = {err:.2g} mV")
        assert err < 1e-3, err
        assert np.isfinite(v_a).all() and np.ptp(v_a) > 1.0  # real, moving traces


def test_al_async_identical_on_2_3_4_ranks(early: dict[str, Path]) -> None:
    ref = read_spikes(early["async"] / "spikes.h5")
    _, _, v_ref = read_trace(early["async"] / "report_v_PN.h5")
    for n in (2, 3, 4):
        out = early["base"] / f"r{n}"
        r = mpirun(n, "run", str(AL), "--mode", "async", "--out", str(out), "-q",
                   *[a for o in EARLY for a in ("--set", o)], timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert _same(ref, read_spikes(out / "spikes.h5")), f"{n} ranks differ from 1 rank"
        assert np.array_equal(v_ref, read_trace(out / "report_v_PN.h5")[2])
        info = json.loads((out / "run.json").read_text())
        assert info["ranks"] == n and sorted(p["neurons"] for p in info["per_rank"])[-1] == 120  # one group, one rank


def test_partition_that_cuts_the_group_is_refused() -> None:
    spec = load_spec(AL, ASYNC + ['engine.partition="round_robin"'])
    with pytest.raises(ConfigError) as e:
        check(spec, ranks=2)
    assert e.value.key.startswith("projections.") and "components" in str(e.value)


def test_al_async_checkpoint_resume_and_signal_bitwise(early: dict[str, Path], tmp_path: Path) -> None:
    ref = read_spikes(early["async"] / "spikes.h5")
    out = tmp_path / "part"
    _run(AL, out, ["simulation.duration_ms=80", "stimuli.odor.start_ms=20"] + ASYNC, checkpoint_every_ms=50.0)
    assert json.loads((out / "checkpoint" / "manifest.json").read_text())["simulated_ms"] == pytest.approx(50.0)
    info = _run(AL, out, EARLY + ASYNC, resume=True)
    assert info["resumed_from_ms"] == pytest.approx(50.0)
    assert _same(ref, read_spikes(out / "spikes.h5"))
    stop = StopRequest()
    stop.signum = 15  # as if SIGTERM had arrived before the first interval
    res = simulate(load_spec(AL, EARLY + ASYNC), tmp_path / "sig", progress=False, stop=stop)
    assert res.exit_status == 75
    _run(AL, tmp_path / "sig", EARLY + ASYNC, resume=True)
    assert _same(ref, read_spikes(tmp_path / "sig" / "spikes.h5"))


def test_slow_gaba_b_runs_in_async_and_matches_bsp(tmp_path: Path) -> None:
    _run(SLOW, tmp_path / "a", EARLY + ASYNC)
    _run(SLOW, tmp_path / "b", EARLY + ["integrator.dt_ms=0.005"])
    cmp = analysis.compare_spikes(tmp_path / "a", tmp_path / "b", tolerance_ms=1.0)
    n = max(cmp["n_a"], cmp["n_b"])
    print(f"\nAL + GABA_B async vs BSP RK4 dt 0.005, 150 ms: {cmp['matched']}/{n} matched within 1 ms")
    assert cmp["n_a"] >= 5 and cmp["matched"] >= 0.9 * n, cmp


def test_psst_protocol_over_1_s_in_async(tmp_path: Path) -> None:
    """The PSST behaviour: silent before the odor (100–600 ms), PNs and LNs firing during it."""
    _run(AL, tmp_path / "full", ASYNC)
    spk = read_spikes(tmp_path / "full" / "spikes.h5")
    for pop in ("PN", "LN"):
        t, ids = spk[pop]
        during = (t >= 100.0) & (t < 600.0)
        rate = during.sum() / (0.5 * (90 if pop == "PN" else 30))
        print(f"\n{pop}: {t.size} spikes over 1 s, {rate:.2f} Hz per cell during the odor, first at {t.min():.1f} ms")
        assert t.min() >= 100.0, f"{pop} fires at {t.min():.2f} ms, before the odor"
        assert np.unique(ids[during]).size >= 3 and rate > 0.5, (pop, rate)
