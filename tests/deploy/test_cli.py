"""CLI surface: every subcommand has --help; bad input exits 2 with a message naming the fix."""
from __future__ import annotations

import argparse

import pytest

from cluster_sim.deploy.cli import register

from deploy_helpers import run_cs

SUBCOMMANDS = ["submit", "status", "collect", "cancel", "sweep", "scale", "container"]


@pytest.mark.parametrize("sub", SUBCOMMANDS + ["container check"])
def test_help(sub):
    cp = run_cs(*sub.split(), "--help")
    assert cp.returncode == 0 and "usage:" in cp.stdout


def test_register_sets_func_defaults():
    p = argparse.ArgumentParser()
    sp = p.add_subparsers(dest="command")
    register(sp)
    for sub in SUBCOMMANDS:
        assert sub in sp.choices
    ns = p.parse_args(["container", "check", "x.def"])
    assert callable(ns.func)
    for argv in (["submit", "j.toml"], ["status", "r"], ["collect", "r"], ["cancel", "r"], ["sweep", "s.toml"],
                 ["scale", "s.toml"]):
        assert callable(p.parse_args(argv).func)


@pytest.mark.parametrize("args,needle", [
    (["--site", "nowhere"], "no such site profile"),
    (["--time", "2h"], "--time"),
    (["--set", "novalue"], "key=value"),
    (["--set", "a b=1"], "dotted parameter key"),
    (["--name", "x;y"], "--name"),
    (["--ranks-per-node", "3", "--gpus-per-node", "2"], "one rank per GPU"),
    (["--partition", "$(id)"], "--partition"),
])
def test_bad_input_exit_2(args, needle, spec, runs_dir):
    cp = run_cs("submit", spec, "--runs-dir", runs_dir, "--dry-run", *args)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert needle in cp.stderr


def test_missing_spec_exit_2(tmp_path):
    cp = run_cs("submit", tmp_path / "nope.toml", "--dry-run")
    assert cp.returncode == 2 and "does not exist" in cp.stderr


def test_dry_run_validates_like_submit(tmp_path, spec):
    """The fake spec has no populations: a real submit would refuse it, so the dry run does too."""
    cp = run_cs("submit", spec, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert cp.returncode == 2 and "populations" in cp.stderr and not (tmp_path / "runs").exists()


def test_scale_dry_run(tmp_path, spec):
    st = tmp_path / "st.toml"
    st.write_text(f'job = "{spec.name}"\nnodes = [1, 2]\nmodes = ["bsp"]\n')
    cp = run_cs("scale", st, "--site", "generic", "--runs-dir", tmp_path / "runs", "--dry-run", "--no-validate")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.count("#!/bin/bash") == 3 and "--nodes=2" in cp.stdout  # 2 members + the collect job
    assert "#SBATCH --dependency=afterany:<job id of n1r1-bsp-rep0>\n" in cp.stdout
