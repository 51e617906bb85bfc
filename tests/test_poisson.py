"""Poisson spike sources: the trains (window independence, rate, ISI statistics, start/stop,
seeding), their spec checks, and BSP runs driven by them (exact source spikes in spikes.h5,
checkpoint/resume and 2 ranks bitwise identical to one)."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cluster_sim.engine.delivery import SpikeBatch
from cluster_sim.engine.integrators import STAGES
from cluster_sim.engine.sources import LocalSource, source_spikes
from cluster_sim.errors import ConfigError
from cluster_sim.models import get_neuron_model
from cluster_sim.models.poisson import BLOCK_MS, block_ms, source_key, spike_times
from cluster_sim.record.spikes import read_spikes
from cluster_sim.spec import parse_spec
from tests.conftest import cli
from tests.mpi_util import mpirun

KEY = source_key(7, "ext")

# A small COBAHH network with weak recurrence (not self-sustained), driven by `ext` from 10 ms
# on; `C` hears only `ctl`, a source of rate 0, so it must stay silent. The neurons start at rest
# (E_leak -65 mV, where the COBAHH neuron is not an intrinsic oscillator; no random initial
# voltage or conductances), so every spike of E and I is caused by the input.
DRIVEN = """
name = "poisson_driven"
[simulation]
duration_ms = 100.0
seed = 5
[integrator]
method = "exp_euler"
dt_ms = 0.1
[populations.E]
model = "cobahh"
count = 80
params = { E_leak_mV = -65.0, init_v_sd_mV = 0.0, init_v_offset_mV = 0.0, init_ge_mean_nS = 0.0, init_ge_sd_nS = 0.0, init_gi_mean_nS = 0.0, init_gi_sd_nS = 0.0 }
[populations.ext]
model = "poisson"
count = 100
params = { rate_hz = 20.0, start_ms = 10.0 }
[populations.I]
model = "cobahh"
count = 20
params = { E_leak_mV = -65.0, init_v_sd_mV = 0.0, init_v_offset_mV = 0.0, init_ge_mean_nS = 0.0, init_ge_sd_nS = 0.0, init_gi_mean_nS = 0.0, init_gi_sd_nS = 0.0 }
[populations.ctl]
model = "poisson"
count = 30
params = { rate_hz = 0.0 }
[populations.C]
model = "cobahh"
count = 20
params = { E_leak_mV = -65.0, init_v_sd_mV = 0.0, init_v_offset_mV = 0.0, init_ge_mean_nS = 0.0, init_ge_sd_nS = 0.0, init_gi_mean_nS = 0.0, init_gi_sd_nS = 0.0 }
[projections.ext_E]
source = "ext"
target = "E"
synapse = "exp_cond_exc"
connect = { rule = "fixed_indegree", indegree = 10 }
weight_nS = 6.0
delay_ms = 1.0
[projections.ext_I]
source = "ext"
target = "I"
synapse = "exp_cond_exc"
connect = { rule = "fixed_indegree", indegree = 10 }
weight_nS = 6.0
delay_ms = 1.5
[projections.EE]
source = "E"
target = "E"
synapse = "exp_cond_exc"
connect = { rule = "bernoulli", p = 0.1 }
weight_nS = 1.0
delay_ms = 1.0
[projections.EI]
source = "E"
target = "I"
synapse = "exp_cond_exc"
connect = { rule = "bernoulli", p = 0.1 }
weight_nS = 1.0
delay_ms = 1.0
[projections.IE]
source = "I"
target = "E"
synapse = "exp_cond_inh"
connect = { rule = "bernoulli", p = 0.1 }
weight_nS = 10.0
delay_ms = 1.0
[projections.ctl_C]
source = "ctl"
target = "C"
synapse = "exp_cond_exc"
connect = { rule = "fixed_indegree", indegree = 10 }
weight_nS = 6.0
delay_ms = 1.0
[output]
flush_every_ms = 10.0
"""


def _spikes(rate: float, n: int, t0: float, t1: float, key: np.uint64 = KEY, **extra: float) -> tuple[np.ndarray, np.ndarray]:
    return spike_times({"rate_hz": rate, **extra}, key, np.arange(n), t0, t1)


# ----------------------------------------------------------------------------- the trains


@pytest.mark.parametrize("rate", [5.0, 300.0, 12000.0])  # 12 kHz: a mean of 120 per 10 ms, shortened blocks
def test_windows_compose_bitwise(rate: float) -> None:
    whole = _spikes(rate, 50, 0.0, 40.0)
    assert whole[0].size > 10
    for edges in ([0.0, 5.0, 40.0], [0.0, 9.999, 10.0, 10.001, 33.3, 40.0], list(np.linspace(0.0, 40.0, 401))):
        parts = [_spikes(rate, 50, a, b) for a, b in zip(edges[:-1], edges[1:])]
        idx = np.concatenate([p[0] for p in parts])
        t = np.concatenate([p[1] for p in parts])
        np.testing.assert_array_equal(t, whole[1])
        np.testing.assert_array_equal(idx, whole[0])


def test_sorted_by_time_then_index_and_inside_the_window() -> None:
    idx, t = _spikes(50.0, 200, 3.0, 97.0)
    assert np.all((t >= 3.0) & (t < 97.0))
    assert np.all((np.diff(t) > 0) | ((np.diff(t) == 0) & (np.diff(idx) > 0)))


def test_subset_of_neurons_gives_their_own_trains() -> None:
    idx, t = _spikes(40.0, 100, 0.0, 200.0)
    gids = np.array([3, 50, 97])
    sub_idx, sub_t = spike_times({"rate_hz": 40.0}, KEY, gids, 0.0, 200.0)
    for i, g in enumerate(gids):
        np.testing.assert_array_equal(sub_t[sub_idx == i], t[idx == g])


@pytest.mark.parametrize("rate", [5.0, 80.0, 9000.0])
def test_rate_within_three_sigma(rate: float) -> None:
    n, duration = (2000, 10_000.0) if rate < 1000 else (20, 2_000.0)
    _, t = _spikes(rate, n, 0.0, duration)
    expected = rate * n * duration * 1e-3
    assert abs(t.size - expected) < 3.0 * np.sqrt(expected), (t.size, expected)


def test_isi_cv_and_fano_factor_are_one() -> None:
    rate, n, duration = 20.0, 500, 20_000.0
    idx, t = _spikes(rate, n, 0.0, duration)
    isis = np.concatenate([np.diff(t[idx == i]) for i in range(n)])
    assert abs(isis.mean() - 1000.0 / rate) < 0.02 * 1000.0 / rate
    cv = isis.std() / isis.mean()
    assert abs(cv - 1.0) < 0.03, cv
    # Counts in 25 ms windows (straddling the 10 ms blocks) have variance = mean.
    counts = np.zeros((n, int(duration // 25.0)))
    np.add.at(counts, (idx, (t // 25.0).astype(int)), 1)
    fano = counts.var() / counts.mean()
    assert abs(fano - 1.0) < 0.03, fano


def test_start_and_stop_are_respected_and_only_clip_the_train() -> None:
    free = _spikes(100.0, 100, 0.0, 500.0)
    idx, t = _spikes(100.0, 100, 0.0, 500.0, start_ms=123.4, stop_ms=321.0)
    assert t.size > 0 and t.min() >= 123.4 and t.max() < 321.0
    inside = (free[1] >= 123.4) & (free[1] < 321.0)
    np.testing.assert_array_equal(t, free[1][inside])
    np.testing.assert_array_equal(idx, free[0][inside])
    assert _spikes(100.0, 100, 321.0, 900.0, stop_ms=321.0)[1].size == 0
    assert _spikes(0.0, 100, 0.0, 1000.0)[1].size == 0


def test_deterministic_by_seed_and_distinct_per_population() -> None:
    a = _spikes(30.0, 50, 0.0, 300.0, key=source_key(1, "ext"))
    b = _spikes(30.0, 50, 0.0, 300.0, key=source_key(1, "ext"))
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    for other in (source_key(2, "ext"), source_key(1, "ext2")):
        c = _spikes(30.0, 50, 0.0, 300.0, key=other)
        assert c[1].size != a[1].size or not np.array_equal(c[1], a[1])
        shared = np.intersect1d(a[1], c[1])
        assert shared.size == 0, "independent streams should share no spike time"


def test_high_rates_shorten_the_blocks() -> None:
    assert block_ms(10.0) == BLOCK_MS and block_ms(6400.0) == BLOCK_MS
    assert block_ms(20000.0) < BLOCK_MS and 20000.0 * block_ms(20000.0) * 1e-3 <= 64.0


def test_source_spikes_are_filed_under_their_step() -> None:
    dt = 0.1
    src = LocalSource("ext", {"rate_hz": 500.0}, KEY, 1000, np.arange(0, 60, 2))
    times, ids, batch = source_spikes(src, 40, 10, dt)
    assert times.size > 0 and isinstance(batch, SpikeBatch)
    assert np.all((batch.step >= 40) & (batch.step < 50))
    assert np.all(batch.step * dt <= times + 1e-12) and np.all(times < (batch.step + 1) * dt + 1e-12)
    np.testing.assert_array_equal(batch.gid, 1000 + ids)
    ref_idx, ref_t = spike_times({"rate_hz": 500.0}, KEY, 1000 + src.local, 4.0, 5.0)
    np.testing.assert_array_equal(times, ref_t)
    np.testing.assert_array_equal(ids, src.local[ref_idx])


# ----------------------------------------------------------------------------- the spec


def _spec_error(mutations: list[str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_spec(tomllib.loads(DRIVEN), mutations)
    assert "fix:" in str(info.value)
    return info.value


def test_poisson_model_has_no_state() -> None:
    model = get_neuron_model("poisson")
    assert model.is_source and model.variables == () and model.event_vars == ()
    assert not get_neuron_model("cobahh").is_source
    spec = parse_spec(tomllib.loads(DRIVEN))
    assert spec.population("ext").params == {"rate_hz": 20.0, "start_ms": 10.0}


@pytest.mark.parametrize("mutation,key,words", [
    ("populations.ext.params.rate_hz=-1.0", "populations.ext.params.rate_hz", ">= 0"),
    ("populations.ext.params.stop_ms=5.0", "populations.ext.params.stop_ms", "after start_ms"),
    ('projections.EE.target="ext"', "projections.EE.target", "spike sources receive no input"),
    ('projections.ext_E.synapse="ach_pulse"', "projections.ext_E.synapse", "graded"),
])
def test_bad_source_specs_name_the_key(mutation: str, key: str, words: str) -> None:
    err = _spec_error([mutation])
    assert err.key == key and words in str(err), str(err)


def test_stimulus_and_recording_of_a_source_are_refused() -> None:
    err = _spec_error(['stimuli.s.waveform="step"', 'stimuli.s.populations=["ext"]', "stimuli.s.amplitude_pA=10.0"])
    assert err.key == "stimuli.s.populations" and "spike source" in str(err)
    err = _spec_error(['recordings.r.population="ext"', "recordings.r.neurons=2"])
    assert err.key == "recordings.r.population" and "spike source" in str(err)


# ----------------------------------------------------------------------------- BSP runs


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("poisson_job") / "driven.toml"
    path.write_text(DRIVEN)
    return path


@pytest.fixture(scope="module")
def reference(job: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("poisson_ref")
    cli("run", str(job), "--out", str(out), "-q", check=True)
    return out


def _identical(a: Path, b: Path) -> None:
    sa, sb = read_spikes(a / "spikes.h5"), read_spikes(b / "spikes.h5")
    assert sa.keys() == sb.keys()
    for pop in sa:
        np.testing.assert_array_equal(sa[pop][1], sb[pop][1], err_msg=f"{pop}: node ids differ")
        np.testing.assert_array_equal(sa[pop][0], sb[pop][0], err_msg=f"{pop}: spike times differ (not bitwise)")
    assert sa["E"][0].size > 20 and sa["ext"][0].size > 100, "too few spikes for the comparison to mean much"


def test_bsp_run_records_exact_source_spikes_and_input_drives_the_network(reference: Path) -> None:
    spikes = read_spikes(reference / "spikes.h5")
    spec = parse_spec(tomllib.loads(DRIVEN))
    offsets = np.cumsum([0] + [p.count for p in spec.populations])
    names = [p.name for p in spec.populations]
    for pop in ("ext", "ctl"):
        p = spec.population(pop)
        gids = offsets[names.index(pop)] + np.arange(p.count)
        idx, t = spike_times(get_neuron_model("poisson").params(p.params), source_key(spec.simulation.seed, pop), gids, 0.0, 100.0)
        np.testing.assert_array_equal(spikes[pop][0], t)
        np.testing.assert_array_equal(spikes[pop][1], idx.astype(np.uint64))
    assert spikes["ext"][0].size > 100 and spikes["ext"][0].min() >= 10.0
    assert spikes["E"][0].size > 20 and spikes["I"][0].size > 0, "the driven populations should fire"
    assert spikes["E"][0].min() > 10.0, "nothing but the input (which starts at 10 ms) makes E fire"
    assert spikes["C"][0].size == 0 and spikes["ctl"][0].size == 0, "the undriven control must stay silent"
    info = json.loads((reference / "run.json").read_text())
    assert info["n_spikes_by_population"]["ext"] == spikes["ext"][0].size
    assert info["n_neurons"] == 250 and info["steps_per_neuron"] == 1000
    assert info["rhs_evals_per_neuron"] == 1000 * STAGES["exp_euler"]
    assert 10.0 < info["rates_hz"]["ext"] < 30.0


def test_resume_with_a_source_population_is_bitwise_identical(job: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "legs"
    cli("run", str(job), "--out", str(out), "--duration", "55", "--checkpoint-every", "25", "-q", check=True)
    cli("run", str(job), "--out", str(out), "--duration", "100", "--resume", "-q", check=True)
    _identical(reference, out)
    assert json.loads((out / "run.json").read_text())["resumed_from_ms"] == pytest.approx(50.0)


def test_rk4_counts_four_rhs_evaluations_and_sources_alone_run(tmp_path: Path) -> None:
    path = tmp_path / "alone.toml"
    path.write_text('[simulation]\nduration_ms = 20.0\n[integrator]\nmethod = "rk4"\n'
                    '[populations.ext]\nmodel = "poisson"\ncount = 40\nparams = { rate_hz = 100.0 }\n')
    cli("run", str(path), "--out", str(tmp_path / "out"), "-q", check=True)
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["steps_per_neuron"] == 2000 and info["rhs_evals_per_neuron"] == 8000
    t, _ = read_spikes(tmp_path / "out" / "spikes.h5")["ext"]
    np.testing.assert_array_equal(t, spike_times({"rate_hz": 100.0}, source_key(0, "ext"), np.arange(40), 0.0, 20.0)[1])


@pytest.mark.mpi
@pytest.mark.parametrize("partition,exchange", [("block", "allgather"), ("round_robin", "alltoall")])
def test_two_ranks_identical_to_one(partition: str, exchange: str, job: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "mpi"
    proc = mpirun(2, "run", str(job), "--out", str(out), "-q",
                  f'--set=engine.partition="{partition}"', f'--set=engine.exchange="{exchange}"')
    assert proc.returncode == 0, proc.stderr[-4000:]
    _identical(reference, out)
    assert json.loads((out / "run.json").read_text())["ranks"] == 2
