"""Hostile values are rejected or inert: render, then run the rendered script through bash.

The script runs outside SLURM with a fake ``srun`` (drops its options, execs the rest) and the
fake cluster-sim payload, which records the argv it received.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cluster_sim.deploy import _validate as V
from cluster_sim.deploy import render as R
from cluster_sim.deploy.folder import SubmitOptions
from cluster_sim.deploy.runs import submit_run
from cluster_sim.deploy.sites import from_mapping, load_site
from cluster_sim.deploy.sweep import submit_sweep
from cluster_sim.errors import ConfigError

from deploy_helpers import PAYLOAD

HOSTILE = [
    "; rm -rf /",
    "$(touch PWNED)",
    "`touch PWNED`",
    "'; touch PWNED; '",
    '"; touch PWNED; "',
    "a  b c",
    "${HOME}",
    "x && touch PWNED || touch PWNED",
    "-rf",
    "|touch PWNED",
    ">PWNED",
]


def fake_bin(tmp: Path) -> Path:
    b = tmp / "fakebin"
    b.mkdir(exist_ok=True)
    (b / "srun").write_text('#!/bin/bash\nwhile [[ "${1:-}" == --* ]]; do shift; done\nexec "$@"\n')
    (b / "scontrol").write_text('#!/bin/bash\necho "fake scontrol $*" >&2\n')
    (b / "sbatch").write_text('#!/bin/bash\necho "4242"\n')
    for f in b.iterdir():
        f.chmod(0o755)
    return b


def run_script(script: Path, tmp: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: val for k, val in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{fake_bin(tmp)}:{env['PATH']}"
    env.update(extra_env or {})
    work = tmp / "cwd"
    work.mkdir(exist_ok=True)
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=work, env=env, timeout=60)


def assert_no_pwned(tmp: Path) -> None:
    hits = [p for p in tmp.rglob("PWNED")] + [p for p in Path.cwd().glob("PWNED")]
    assert not hits, f"hostile value was executed: {hits}"


def fake_sbatch_runner(cmd):
    return subprocess.CompletedProcess(cmd, 0, "4242\n", "")


def test_set_values_are_inert(tmp_path, spec):
    """All hostile values in one script (one bash run), each under its own key."""
    sets = tuple((f"stimuli.p{i}", h) for i, h in enumerate(HOSTILE))
    opts = SubmitOptions(site=load_site("local"), resources=R.JobResources(), sets=sets, runs_dir=tmp_path / "runs",
                         payload=(sys.executable, str(PAYLOAD)), validate=False)
    sub = submit_run(spec, opts, runner=fake_sbatch_runner)
    cp = run_script(sub.run_dir / "job.sbatch", tmp_path)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    argv = json.loads((sub.run_dir / "out" / "argv.json").read_text())
    assert argv["sets"] == [f"stimuli.p{i}={h}" for i, h in enumerate(HOSTILE)]
    assert_no_pwned(tmp_path)


def test_sweep_values_are_inert(tmp_path, spec):
    """Hostile values travel through tasks.json; task 1 gets the second value of each list."""
    sw = tmp_path / "sweep.toml"
    lines = "\n".join(f'"stimuli.p{i}" = [{json.dumps(h)}, {json.dumps(h + "2")}]' for i, h in enumerate(HOSTILE))
    sw.write_text(f'job = "{spec.name}"\ncombine = "zip"\n[sweep]\n{lines}\n')
    opts = SubmitOptions(site=load_site("local"), resources=R.JobResources(), runs_dir=tmp_path / "runs",
                         payload=(sys.executable, str(PAYLOAD)), validate=False)
    sub = submit_sweep(sw, opts, runner=fake_sbatch_runner)
    for task, suffix in ((0, ""), (1, "2")):
        cp = run_script(sub.run_dir / "job.sbatch", tmp_path, {"SLURM_ARRAY_TASK_ID": str(task)})
        assert cp.returncode == 0, cp.stdout + cp.stderr
        argv = json.loads((sub.run_dir / "tasks" / str(task) / "out" / "argv.json").read_text())
        assert argv["sets"] == [f"stimuli.p{i}={h}{suffix}" for i, h in enumerate(HOSTILE)]
    assert_no_pwned(tmp_path)


def test_site_env_values_are_inert(tmp_path, spec, monkeypatch):
    d = tmp_path / "sites"
    d.mkdir()
    (d / "evil.toml").write_text('name = "evil"\ncpu_partition = "debug"\n'
                                 '[env]\nEVIL = "$(touch PWNED); `touch PWNED`"\n')
    monkeypatch.setenv("CLUSTER_SIM_SITES", str(d))
    site = replace(load_site("evil"), python=sys.executable)
    opts = SubmitOptions(site=site, resources=R.JobResources(), runs_dir=tmp_path / "runs",
                         payload=(sys.executable, str(PAYLOAD)), validate=False)
    sub = submit_run(spec, opts, runner=fake_sbatch_runner)
    cp = run_script(sub.run_dir / "job.sbatch", tmp_path)
    assert cp.returncode == 0, cp.stderr
    env = (sub.run_dir / "provenance" / "restart-0" / "env.txt").read_text()
    assert "EVIL=$(touch PWNED); `touch PWNED`" in env
    assert_no_pwned(tmp_path)


def test_secrets_redacted_in_provenance(tmp_path, spec):
    opts = SubmitOptions(site=load_site("local"), resources=R.JobResources(), runs_dir=tmp_path / "runs",
                         payload=(sys.executable, str(PAYLOAD)), validate=False)
    sub = submit_run(spec, opts, runner=fake_sbatch_runner)
    run_script(sub.run_dir / "job.sbatch", tmp_path, {"MY_API_TOKEN": "hunter2", "AWS_SECRET_ACCESS_KEY": "x"})
    env = (sub.run_dir / "provenance" / "restart-0" / "env.txt").read_text()
    assert "hunter2" not in env and "MY_API_TOKEN=<redacted>" in env


@pytest.mark.parametrize("value", ["x; rm -rf /", "a b", "$(id)", "`id`", "x\ny", "", "-x", "a'b", 'a"b', "x" * 101])
def test_hostile_names_rejected(value):
    with pytest.raises(ConfigError):
        V.name("--name", value)
    with pytest.raises(ConfigError):
        R.JobResources(partition=value) if value else V.name("--partition", value)


@pytest.mark.parametrize("value", ["gcc; rm -rf /", "$(id)", "gcc 12", "gcc\n12", "`id`"])
def test_hostile_modules_rejected(value):
    with pytest.raises(ConfigError):
        from_mapping({"name": "x", "modules": [value]})


@pytest.mark.parametrize("value", ["x\ny", "x\rb", "a\x00b", "a\x1bb"])
def test_control_characters_in_set_values_rejected(value):
    with pytest.raises(ConfigError, match="control character"):
        V.parse_set(f"a.b={value}")


@pytest.mark.parametrize("key", ["a;b", "$(id)", "a b", "", "1a", "a..b", "a=b"])
def test_hostile_set_keys_rejected(key):
    with pytest.raises(ConfigError):
        V.set_key("--set", key)


@pytest.mark.parametrize("path", ["/tmp/a b", "/tmp/$(id)", "/tmp/a;b", "/tmp/`x`", "/tmp/a\nb", "/tmp/'q'"])
def test_hostile_paths_rejected(path, tmp_path, spec):
    with pytest.raises(ConfigError, match="whitespace or characters"):
        V.path("run folder", path)
    opts = SubmitOptions(site=load_site("local"), resources=R.JobResources(), runs_dir=Path(path), validate=False)
    with pytest.raises(ConfigError):
        submit_run(spec, opts, dry_run=True)


def test_hostile_dependency_rejected():
    for dep in ["afterok:1;id", "afterok:$(id)", "afterok:1 --wrap=id"]:
        with pytest.raises(ConfigError):
            R.JobResources(dependency=dep)
    R.JobResources(dependency="afterok:12:13,afterany:14_2")


def test_hostile_container_path_rejected(tmp_path, spec):
    opts = SubmitOptions(site=load_site("local"), resources=R.JobResources(), runs_dir=tmp_path / "runs",
                         container=Path("/tmp/x $(id).sif"), validate=False)
    with pytest.raises(ConfigError, match="--container"):
        submit_run(spec, opts, dry_run=True)


def test_nothing_is_evaled():
    root = Path(__file__).resolve().parents[2] / "cluster_sim" / "deploy"
    for p in list(root.rglob("*.py")) + list(root.rglob("*.j2")):
        text = p.read_text()
        assert "eval " not in text and "eval(" not in text, p
        assert "shell=True" not in text, p
