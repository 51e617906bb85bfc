"""Job spec validation: every malformed spec fails before any compute with a message naming the
key, the value and the fix, and writes nothing."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from cluster_sim.errors import ConfigError
from cluster_sim.run.check import check
from cluster_sim.spec import apply_overrides, load_spec, parse_spec
from tests.conftest import JOBS, SMALL_COBAHH, cli


def _mutate(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (id, mutation of SMALL_COBAHH, dotted key expected in the message, words expected in the message)
BAD_SPECS = [
    ("dt_zero", ("dt_ms = 0.1", "dt_ms = 0.0"), "integrator.dt_ms", "> 0"),
    ("dt_negative", ("dt_ms = 0.1", "dt_ms = -0.1"), "integrator.dt_ms", "> 0"),
    ("p_above_one", ("p = 0.1 }\nweight_nS = 6.0\ndelay_ms = 1.0\n[projections.EI]", "p = 1.5 }\nweight_nS = 6.0\ndelay_ms = 1.0\n[projections.EI]"), "projections.EE.connect.p", "probability"),
    ("negative_delay", ("delay_ms = 1.5", "delay_ms = -1.0"), "projections.II.delay_ms", "negative"),
    ("delay_not_multiple", ("delay_ms = 1.5", "delay_ms = 1.55"), "projections.II.delay_ms", "multiple"),
    ("delay_below_dt", ("delay_ms = 1.5", "delay_ms = 0.0"), "projections.II.delay_ms", "at least one step"),
    ("unknown_top_key", ('name = "small_cobahh"', 'name = "small_cobahh"\ncolour = "red"'), "colour", "valid keys"),
    ("unknown_sim_key", ("seed = 3", "seed = 3\nduraton_ms = 5"), "simulation.duraton_ms", "valid keys"),
    ("count_string", ("count = 320", 'count = "320"'), "populations.E.count", "integer"),
    ("count_zero", ("count = 320", "count = 0"), "populations.E.count", ">= 1"),
    ("count_overflows_memory", ("count = 320", "count = 2000000000"), "populations.E.count", "GiB"),
    ("unknown_model", ('model = "cobahh"', 'model = "izhikevich"'), "populations.E.model", "use one of"),
    ("unknown_method", ('method = "exp_euler"', 'method = "rk45"'), "integrator.method", "euler"),
    ("unknown_param", ("count = 80", "count = 80\nparams = { g_na = 1.0 }"), "populations.I.params.g_na", "valid parameters"),
    ("weight_without_unit", ("weight_nS = 67.0\ndelay_ms = 1.5", "weight = 67.0\ndelay_ms = 1.5"), "projections.II.weight", "weight_nS"),
    ("negative_weight", ("weight_nS = 67.0\ndelay_ms = 1.5", "weight_nS = -67.0\ndelay_ms = 1.5"), "projections.II.weight_nS", ">= 0"),
    ("unknown_source", ('source = "I"\ntarget = "I"', 'source = "X"\ntarget = "I"'), "projections.II.source", "names no population"),
    ("recording_bad_variable", ('variable = "v"', 'variable = "u"'), "recordings.vE.variable", "state variable"),
    ("recording_neuron_out_of_range", ("neurons = [0, 5, 7]", "neurons = [0, 5, 700]"), "recordings.vE.neurons", "outside"),
    ("sampling_not_multiple", ("sampling_ms = 0.5", "sampling_ms = 0.25"), "recordings.vE.sampling_ms", "multiple"),
    ("duration_negative", ("duration_ms = 100.0", "duration_ms = -5.0"), "simulation.duration_ms", "> 0"),
    ("bad_precision", ('dt_ms = 0.1', 'dt_ms = 0.1\nprecision = "float16"'), "integrator.precision", "float64"),
    ("synapse_on_wrong_model", ('synapse = "exp_cond_exc"', 'synapse = "gaba_a_graded"'), "projections.EE.synapse", "per membrane area"),
    ("bad_rule", ('rule = "bernoulli", p = 0.1 }\nweight_nS = 6.0\ndelay_ms = 1.0\n[projections.EI]', 'rule = "small_world", p = 0.1 }\nweight_nS = 6.0\ndelay_ms = 1.0\n[projections.EI]'), "projections.EE.connect.rule", "bernoulli"),
    ("indegree_too_large", ('rule = "bernoulli", p = 0.1 }\nweight_nS = 6.0\ndelay_ms = 1.0\n[projections.EI]', 'rule = "fixed_indegree", indegree = 5000 }\nweight_nS = 6.0\ndelay_ms = 1.0\n[projections.EI]'), "projections.EE.connect.indegree", "<= 320"),
]


@pytest.mark.parametrize("case", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_rejected_with_key_value_and_fix(case: tuple, tmp_path: Path) -> None:
    _, (old, new), key, words = case
    spec_path = tmp_path / "bad.toml"
    spec_path.write_text(_mutate(SMALL_COBAHH, old, new))
    with pytest.raises(ConfigError) as info:
        check(load_spec(spec_path))  # what every entry point does: parse, then check for the mode
    msg = str(info.value)
    assert info.value.key == key, msg
    assert words in msg, msg
    assert "fix:" in msg, msg


def test_cli_bad_spec_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    spec_path = tmp_path / "bad.toml"
    spec_path.write_text(_mutate(SMALL_COBAHH, "dt_ms = 0.1", "dt_ms = -1.0"))
    out = tmp_path / "out"
    proc = cli("run", str(spec_path), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "integrator.dt_ms" in proc.stderr and "-1.0" in proc.stderr and "fix:" in proc.stderr
    assert not out.exists(), "a rejected spec must not create the output folder"


def test_cli_set_override_is_validated(tmp_path: Path) -> None:
    spec_path = tmp_path / "ok.toml"
    spec_path.write_text(SMALL_COBAHH)
    proc = cli("validate", str(spec_path), "--set", "projections.EE.connect.p=2.0")
    assert proc.returncode == 2 and "projections.EE.connect.p" in proc.stderr, proc.stderr
    proc = cli("validate", str(spec_path), "--set", "populations.E.count=100")
    assert proc.returncode == 0 and "180 neurons" in proc.stdout, proc.stdout + proc.stderr


def test_override_types_and_tables() -> None:
    data = tomllib.loads(SMALL_COBAHH)
    out = apply_overrides(data, ["integrator.dt_ms=0.05", 'integrator.method="rk4"', "engine.jit_compile=false",
                                 "recordings.vE.neurons=[1, 2]", "new.table.key=hello"])
    assert out["integrator"]["dt_ms"] == 0.05 and out["integrator"]["method"] == "rk4"
    assert out["engine"]["jit_compile"] is False and out["recordings"]["vE"]["neurons"] == [1, 2]
    assert out["new"]["table"]["key"] == "hello"
    assert data["integrator"]["dt_ms"] == 0.1, "overrides must not mutate the input"
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(data, ["integrator.dt_ms"])


def test_spec_never_executes_code(tmp_path: Path) -> None:
    # A value that would run code if anything evaluated it stays an inert string and is rejected.
    data = tomllib.loads(SMALL_COBAHH)
    with pytest.raises(ConfigError) as info:
        parse_spec(data, ['integrator.dt_ms=__import__("os").system("touch PWNED")'])
    assert info.value.key == "integrator.dt_ms"
    assert not Path("PWNED").exists() and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("job", sorted(p.name for p in JOBS.glob("*.toml") if "sweep" not in p.name))
def test_shipped_jobs_are_valid(job: str) -> None:
    spec = load_spec(JOBS / job)
    assert spec.n_neurons > 0


def test_shipped_job_protocols() -> None:
    al = load_spec(JOBS / "antennal_lobe.toml")
    assert (al.integrator.method, al.integrator.dt_ms, al.simulation.duration_ms) == ("rk4", 0.01, 1000.0)
    assert {p.name: p.count for p in al.populations} == {"PN": 90, "LN": 30}
    co = load_spec(JOBS / "cobahh.toml")
    assert (co.integrator.method, co.integrator.dt_ms, co.simulation.duration_ms, co.n_neurons) == ("exp_euler", 0.1, 1000.0, 4000)
    assert {p.delay_ms for p in co.projections} == {1.0}


def test_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(_mutate(SMALL_COBAHH, "[integrator]", "[integrator]\nstep = 2"))
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    valid = re.search(r"valid keys in \[integrator\] are: (.*)\)", str(info.value)).group(1)
    assert {"method", "dt_ms", "precision"} <= set(valid.split(", "))
