"""Bad input a hostile user tries: each case failed (traceback, or silently wrong) before; now it
exits 2 with the key, the value and the fix, before TensorFlow is imported where it can be.

"Before TensorFlow" is proven by running the CLI with a fake ``tensorflow`` package first on the
path that aborts on import: the expected exit 2 and message show nothing imported it."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from cluster_sim.errors import ConfigError
from cluster_sim.run.check import check
from cluster_sim.spec import load_spec, parse_spec
from cluster_sim.run import memory
from cluster_sim.spec.timing import communication_interval_ms
from tests.conftest import ROOT, SMALL_COBAHH, cli

TINY = """
name = "tiny"
[simulation]
duration_ms = 6.0
[integrator]
method = "exp_euler"
dt_ms = 0.1
[populations.E]
model = "cobahh"
count = 20
[projections.EE]
source = "E"
target = "E"
synapse = "exp_cond_exc"
connect = { rule = "bernoulli", p = 0.2 }
weight_nS = 6.0
delay_ms = 1.0
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("tiny") / "tiny.toml"
    p.write_text(TINY)
    return p


def _refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "FAKE TENSORFLOW" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)


# -------------------------------------------------------------------------------- 7: --out

def test_out_that_is_a_file(tiny: Path, tmp_path: Path, no_tf: dict) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    _refused(cli("run", str(tiny), "--out", str(f), env=no_tf), "--out", "is a file")
    _refused(cli("run", str(tiny), "--out", str(f / "sub" / "dir"), env=no_tf), "is under", str(f))
    assert f.read_text() == "x"


def test_out_not_writable(tiny: Path, no_tf: dict) -> None:
    # /proc refuses new entries even to root (a chmod'ed folder would not stop root)
    _refused(cli("run", str(tiny), "--out", "/proc/cluster-sim-out", env=no_tf), "cannot be written")


def test_resume_into_a_missing_folder(tiny: Path, tmp_path: Path, no_tf: dict) -> None:
    _refused(cli("run", str(tiny), "--out", str(tmp_path / "nothing"), "--resume", env=no_tf), "no checkpoint to resume")
    assert not (tmp_path / "nothing").exists()


# -------------------------------------------------------------------------------- 8: --checkpoint-every

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-5"])
def test_checkpoint_every_not_positive_finite(value: str, tiny: Path, tmp_path: Path, no_tf: dict) -> None:
    _refused(cli("run", str(tiny), "--out", str(tmp_path / "o"), f"--checkpoint-every={value}", env=no_tf),
             "--checkpoint-every", "positive, finite")


def test_checkpoint_every_below_one_interval_rounds_up_and_tf_is_quiet(tiny: Path, tmp_path: Path, no_tf: dict) -> None:
    """Below one interval used to round to zero: no checkpoint at all, silently. Also: the run's
    stderr carries none of TensorFlow's start-up lines (they are kept with --verbose)."""
    out = tmp_path / "o"
    proc = cli("run", str(tiny), "--out", str(out), "--checkpoint-every", "0.3", "-q", check=True)
    assert "shorter than one communication interval (1 ms); checkpoints are written every 1 ms" in proc.stderr
    assert (out / "checkpoint" / "manifest.json").exists()
    for noise in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # the notice is the only line
    verbose = cli("run", str(tiny), "--out", str(tmp_path / "v"), "-q", "--verbose", check=True)
    assert len(verbose.stderr) > len(proc.stderr)
    # 11: resuming with a duration shorter than the checkpoint computed nothing and said "completed"
    at = json.loads((out / "checkpoint" / "manifest.json").read_text())["simulated_ms"]
    assert at >= 2.0
    refused = cli("run", str(tiny), "--out", str(out), "--resume", "--duration", "1", env=no_tf)
    _refused(refused, "simulation.duration_ms", f"at {at:g} ms", f"--duration >= {at:g}")


# -------------------------------------------------------------------------------- 9: not UTF-8

def test_job_file_not_utf8(tmp_path: Path, no_tf: dict) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes(TINY.replace('name = "tiny"', 'name = "tiny" # café').encode("latin-1"))
    _refused(cli("run", str(p), "--out", str(tmp_path / "o"), env=no_tf), "not UTF-8", "line 2")
    _refused(cli("validate", str(p), env=no_tf), "not UTF-8")


# -------------------------------------------------------------------------------- 10: parameter ranges

@pytest.mark.parametrize("override, key, words", [
    ("populations.E.params.C_pF=0", "populations.E.params.C_pF", "> 0 (membrane capacitance)"),
    ("populations.E.params.tau_e_ms=-5", "populations.E.params.tau_e_ms", "> 0 (a time constant)"),
    ("populations.E.params.refractory_ms=-1", "populations.E.params.refractory_ms", ">= 0 (refractory period)"),
    ("populations.E.params.g_na_nS=-1", "populations.E.params.g_na_nS", ">= 0 (a conductance)"),
])
def test_parameter_outside_physical_range(override: str, key: str, words: str) -> None:
    import tomllib

    with pytest.raises(ConfigError) as e:
        parse_spec(tomllib.loads(TINY), [override])
    assert e.value.key == key and words in str(e.value) and "default" in str(e.value)


def test_locust_and_synapse_parameters_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"populations.PN.params.C_uF_cm2 = 0.0: must be > 0"):
        load_spec(ROOT / "jobs" / "antennal_lobe.toml", ["populations.PN.params.C_uF_cm2=0.0"])
    proj = next(iter(load_spec(ROOT / "jobs" / "antennal_lobe.toml").raw["projections"]))
    with pytest.raises(ConfigError, match="beta_per_ms .*must be > 0"):
        load_spec(ROOT / "jobs" / "antennal_lobe.toml", [f"projections.{proj}.params.beta_per_ms=-0.1"])


def test_every_model_declares_a_range_for_every_parameter() -> None:
    from cluster_sim.models import NEURONS, SYNAPSES

    for name, m in {**NEURONS, **SYNAPSES}.items():
        assert set(m.param_ranges) == set(m.defaults), name
        m.check_params(m.params(), lambda k: k)  # the defaults are physical


def test_cli_refuses_c_zero_before_tensorflow(tiny: Path, tmp_path: Path, no_tf: dict) -> None:
    _refused(cli("run", str(tiny), "--out", str(tmp_path / "o"), "--set", "populations.E.params.C_pF=0", env=no_tf),
             "populations.E.params.C_pF")


# -------------------------------------------------------------------------------- 11: times on the dt grid

@pytest.mark.parametrize("override, key, nearest", [
    ("simulation.duration_ms=10.05", "simulation.duration_ms", "10 or 10.1"),
    ("simulation.duration_ms=0.04", "simulation.duration_ms", "0.1"),
    ("recordings.vE.sampling_ms=0.25", "recordings.vE.sampling_ms", "0.2 or 0.3"),
    ("engine.interval_ms=2.55", "engine.interval_ms", "2.5 or 2.6"),
])
def test_times_off_the_dt_grid_are_refused_with_nearest_values(override: str, key: str, nearest: str) -> None:
    import tomllib

    with pytest.raises(ConfigError) as e:
        check(parse_spec(tomllib.loads(SMALL_COBAHH), [override]))
    assert e.value.key == key and f"= {nearest}" in str(e.value), str(e.value)


def test_stimulus_edges_on_the_grid_bsp_only() -> None:
    import tomllib

    data = tomllib.loads(TINY + '\n[stimuli.s]\nwaveform = "step"\npopulations = "E"\namplitude_pA = 10.0\nstart_ms = 1.05\n')
    with pytest.raises(ConfigError) as e:
        check(parse_spec(data))
    assert e.value.key == "stimuli.s.start_ms" and "1 or 1.1" in str(e.value)
    spec = parse_spec(data, ['simulation.mode="async"', "simulation.duration_ms=6.05"])  # async has no dt grid
    check(spec)
    assert spec.simulation.duration_ms == 6.05
    fixed = parse_spec(data, ["stimuli.s.start_ms=1.1"])
    check(fixed)
    assert fixed.stimuli[0].params["start_ms"] == 1.1


def test_delays_on_the_dt_grid_in_bsp_only() -> None:
    """BSP delivers at whole steps, so its delays are multiples of dt; async takes any delay > 0."""
    import tomllib

    data = tomllib.loads(SMALL_COBAHH)
    with pytest.raises(ConfigError) as e:
        check(parse_spec(data, ["projections.EE.delay_ms=0.7321"]))
    assert e.value.key == "projections.EE.delay_ms" and "delay_ms = 0.7" in str(e.value)
    check(parse_spec(data, ["projections.EE.delay_ms=0.7321", 'simulation.mode="async"', "recordings={}"]))


def test_interval_of_a_spec() -> None:
    import tomllib

    spec = parse_spec(tomllib.loads(SMALL_COBAHH))
    assert communication_interval_ms(spec) == pytest.approx(1.0)


# -------------------------------------------------------------------------------- 13: memory

def test_estimate_is_per_rank() -> None:
    import tomllib

    spec = parse_spec(tomllib.loads(SMALL_COBAHH))
    one = memory.estimate_bytes(spec, 1)
    assert one > 0 and memory.estimate_bytes(spec, 4) == pytest.approx(one / 4)
    # 400 neurons × 8 variables × 48 bytes + 0.1·N_src·N_tgt synapses × 24 bytes
    syn = 24 * 0.1 * (320 * 320 + 320 * 80 + 80 * 320 + 80 * 80)
    assert one == pytest.approx(400 * 8 * 48 + syn)


def _fake_cgroup(tmp_path: Path, version: int, limit: int, usage: int) -> tuple[str, str]:
    root = tmp_path / "cg"
    if version == 2:
        d = root / "job_1" / "step_0"
        d.mkdir(parents=True)
        (root / "job_1" / "memory.max").write_text(f"{limit}\n")
        (root / "job_1" / "memory.current").write_text(f"{usage}\n")
        (d / "memory.max").write_text("max\n")
        (root / "cgroup.controllers").write_text("memory\n")
        proc = "0::/job_1/step_0\n"
    else:
        d = root / "memory" / "slurm" / "job_1"
        d.mkdir(parents=True)
        (d / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (d / "memory.usage_in_bytes").write_text(f"{usage}\n")
        (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
        proc = "12:pids:/slurm/job_1\n4:memory:/slurm/job_1\n0::/\n"
    (tmp_path / "cgroup").write_text(proc)
    return str(tmp_path / "cgroup"), str(root)


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_limits_are_honoured(version: int, tmp_path: Path) -> None:
    proc, root = _fake_cgroup(tmp_path, version, limit=3 << 30, usage=1 << 30)
    free, what = memory.cgroup_available(proc, root)
    assert free == 2 << 30 and "cgroup" in what and "3.00 GiB" in what


def test_rlimit_as_refuses_a_network_that_does_not_fit(tmp_path: Path) -> None:
    """Under ulimit -v 3 GiB a network of ~5 GiB is refused by name (MemAvailable alone would
    let it start and be killed later)."""
    p = tmp_path / "big.toml"
    p.write_text(TINY.replace("count = 20", "count = 100000").replace("p = 0.2", "p = 0.02"))
    limit = 3 << 30

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CLUSTER_SIM_SKIP_MEMORY_CHECK", None)
    proc = subprocess.run([sys.executable, "-m", "cluster_sim.cli", "validate", str(p)], capture_output=True, text=True,
                          cwd=ROOT, env=env, preexec_fn=set_limit, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "populations.E.count" in proc.stderr and "RLIMIT_AS" in proc.stderr, proc.stderr
    # without the limit the same spec is valid here (the machine has the memory)
    free = memory.available_bytes().bytes
    if free > 8 << 30:
        assert cli("validate", str(p)).returncode == 0


def test_check_memory_counts_the_ranks_of_a_node(monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    spec = parse_spec(tomllib.loads(SMALL_COBAHH))
    need = memory.estimate_bytes(spec, 1)
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.Available(int(need * 0.9), "test limit", False))
    monkeypatch.delenv("CLUSTER_SIM_SKIP_MEMORY_CHECK", raising=False)
    with pytest.raises(ConfigError, match="test limit"):
        memory.check_memory(spec, ranks=1, local_ranks=1)
    memory.check_memory(spec, ranks=2, local_ranks=1)  # half each, the other rank on another node
    with pytest.raises(ConfigError, match="the 2 ranks of this node"):
        memory.check_memory(spec, ranks=2, local_ranks=2)
