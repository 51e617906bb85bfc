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


def test_good_minimal():
    assert check_text(GOOD).ok


@pytest.mark.parametrize("mutate,message", [
    (lambda s: s.replace("Bootstrap: docker\n", ""), "missing 'Bootstrap:'"),
    (lambda s: s.replace("Bootstrap: docker", "Bootstrap: dockr"), "unknown bootstrap agent 'dockr'"),
    (lambda s: s.replace("From: python:3.11-slim\n", ""), "needs a 'From:' line"),
    (lambda s: s.replace("%test\n    cluster-sim --help\n", ""), "missing required section %test"),
    (lambda s: s.replace("%labels", "%lables"), "unknown section %lables"),
    (lambda s: s.replace("0.1.0", "latest"), "no version label"),
    (lambda s: s + "%post\n    echo again\n", "appears twice"),
    (lambda s: s.replace("    exec cluster-sim \"$@\"\n", ""), "section %runscript (line"),
    (lambda s: s.replace("From: python", "Frm: python"), "unknown header keyword 'Frm'"),
    (lambda s: s.replace("From: python:3.11-slim", "From: python:3.11-slim\nthis is not a header"), "not 'Key: value'"),
    (lambda s: "From: python:3.11-slim\nBootstrap: docker\n" + s.split("\n", 2)[2], "must be the first header line"),
    (lambda s: s + "    cluster-sim.version\n", "has no value"),
])
def test_broken_definitions(mutate, message):
    r = check_text(mutate(GOOD))
    assert not r.ok
    assert any(message in e for e in r.errors), r.report()


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
    cp = run_cs("container", "check", tmp_path / "missing.def")
    assert cp.returncode == 2 and "cannot read" in cp.stdout
