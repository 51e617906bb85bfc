"""The offline Apptainer definition checker, on the shipped files and on broken ones."""
from __future__ import annotations

from pathlib import Path

import pytest

from cluster_sim.deploy.container import AGENTS, check_file, check_text

from deploy_helpers import run_cs

ROOT = Path(__file__).resolve().parents[2]

GOOD = """Bootstrap: docker
From: python:3.11-slim

%post
    pip install cluster-sim

%environment
    export A=1

%runscript
    exec cluster-sim "$@"

%test
    cluster-sim --help

%labels
    org.opencontainers.image.version 0.1.0
"""


@pytest.mark.parametrize("name", ["cluster-sim-gpu.def", "cluster-sim-cpu.def"])
def test_shipped_definitions_pass(name):
    r = check_file(ROOT / "containers" / name)
    assert r.ok, r.report()
    assert r.agent == "docker"
    assert {"tensorflow.version", "openmpi.version"} <= set(r.labels)
    assert not r.warnings, r.report()  # no unused %arguments (the old PMIX_VERSION), no missing %test


def _section(text: str, name: str) -> str:
    return text.split(f"\n%{name}\n", 1)[1].split("\n%", 1)[0]


@pytest.mark.parametrize("name", ["cluster-sim-gpu.def", "cluster-sim-cpu.def"])
def test_shipped_definitions_are_honest(name):
    text = (ROOT / "containers" / name).read_text()
    r = check_file(ROOT / "containers" / name)
    files = [ln.split() for ln in _section(text, "files").splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert sorted(f[0] for f in files) == ["README.md", "cluster_sim", "pyproject.toml"]  # not ".", .git, runs/
    assert "example.invalid" not in text and "PMIX_VERSION" not in text
    post = _section(text, "post")
    # Each pinned label is what %post installs (or checks and fails the build on).
    for key in ("tensorflow.version", "mpi4py.version", "openmpi.version", "pmix.version"):
        val = r.labels[key]
        arg = next((a.split("=")[0].strip() for a in _section(text, "arguments").splitlines()
                    if a.strip().endswith("=" + val)), None)
        assert (arg is not None and "{{ " + arg + " }}" in post) or val.replace(".", "\\.") in post, (key, val)
    assert not any("install" in ln and "tensorflow-cpu" in ln for ln in post.splitlines())


def test_gpu_definition_gpu_facts():
    text = (ROOT / "containers" / "cluster-sim-gpu.def").read_text()
    post = _section(text, "post")
    for flag in ("--with-pmix=/usr/lib/x86_64-linux-gnu/pmix2", "--with-libevent=external", "--with-hwloc=external"):
        assert flag in post
    assert "if not gpus:" in _section(text, "test") and "sys.exit(" in _section(text, "test")


def test_good_minimal():
    assert check_text(GOOD).ok


@pytest.mark.parametrize("mutate,message", [
    (lambda s: s.replace("Bootstrap: docker\n", ""), "missing 'Bootstrap:'"),
    (lambda s: s.replace("Bootstrap: docker", "Bootstrap: dockr"), "unknown bootstrap agent 'dockr'"),
    (lambda s: s.replace("From: python:3.11-slim\n", ""), "needs a 'From:' line"),
    (lambda s: s.replace("From: python:3.11-slim\n", "From:\n"), "needs a 'From:' line"),
    (lambda s: s.replace("pip install cluster-sim", "pip install cluster-sim=={{ CS_VERSION }}"),
     "build variable {{ CS_VERSION }} is undefined"),
    (lambda s: s.replace("%labels", "%lables"), "unknown section %lables"),
    (lambda s: s.replace("0.1.0", "latest"), "no version label"),
    (lambda s: s + "%post\n    echo again\n", "appears twice"),
    (lambda s: s.replace("From: python", "Frm: python"), "unknown header keyword 'Frm'"),
    (lambda s: s.replace("From: python:3.11-slim", "From: python:3.11-slim\nthis is not a header"), "not 'Key: value'"),
    (lambda s: "From: python:3.11-slim\nBootstrap: docker\n" + s.split("\n", 2)[2], "must be the first header line"),
    (lambda s: s + "    cluster-sim.version\n", "has no value"),
])
def test_broken_definitions(mutate, message):
    r = check_text(mutate(GOOD))
    assert not r.ok
    assert any(message in e for e in r.errors), r.report()


@pytest.mark.parametrize("mutate,warning", [
    (lambda s: s.replace("%test\n    cluster-sim --help\n", ""), "no %test section (optional"),
    (lambda s: s.replace("    exec cluster-sim \"$@\"\n", ""), "section %runscript (line"),
    (lambda s: s + "%arguments\n    PMIX_VERSION=4.2.9\n", "PMIX_VERSION is defined but never used"),
])
def test_optional_things_only_warn(mutate, warning):
    r = check_text(mutate(GOOD))
    assert r.ok, r.report()  # Apptainer requires no section: never an error
    assert any(warning in w for w in r.warnings), r.report()


def test_build_variables_from_arguments_or_build_arg():
    text = GOOD.replace("From: python:3.11-slim", "From: python:{{ PY }}-slim").replace(
        "0.1.0", "{{ V }}") + "%arguments\n    V=0.2.0\n"
    r = check_text(text)
    assert [e for e in r.errors if "{{ PY }} is undefined" in e] and r.labels["org.opencontainers.image.version"] == "0.2.0"
    r = check_text(text, build_args={"PY": "3.11", "V": "1.0"})
    assert r.ok, r.report()
    assert r.labels["org.opencontainers.image.version"] == "1.0"


@pytest.mark.parametrize("agent", AGENTS)
def test_all_known_agents_accepted(agent):
    text = GOOD.replace("Bootstrap: docker", f"Bootstrap: {agent}")
    if agent in ("debootstrap", "yum", "zypper", "busybox", "scratch"):
        text = text.replace("From: python:3.11-slim\n", "")
    r = check_text(text)
    assert r.ok, r.report()


def test_cli_container_check(tmp_path):
    bad = tmp_path / "bad.def"
    bad.write_text("Bootstrap: nope\n%post\n  true\n")
    cp = run_cs("container", "check", ROOT / "containers" / "cluster-sim-gpu.def")
    assert cp.returncode == 0 and "OK" in cp.stdout, cp.stdout + cp.stderr
    cp = run_cs("container", "check", ROOT / "containers" / "cluster-sim-cpu.def", bad)
    assert cp.returncode == 2 and "INVALID" in cp.stdout and "unknown bootstrap agent" in cp.stdout
    undefined = tmp_path / "v.def"
    undefined.write_text(GOOD.replace("python:3.11-slim", "python:{{ PY }}-slim"))
    cp = run_cs("container", "check", undefined)
    assert cp.returncode == 2 and "{{ PY }} is undefined" in cp.stdout, cp.stdout
    cp = run_cs("container", "check", undefined, "--build-arg", "PY=3.12")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = run_cs("container", "check", tmp_path / "missing.def")
    assert cp.returncode == 2 and "cannot read" in cp.stdout
