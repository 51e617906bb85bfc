"""Point 12 of issue 13: a --time too short for the measured start-up plus one checkpoint
interval is warned about at submit (and the warning names the numbers and the fix)."""
from __future__ import annotations

import json
from pathlib import Path

from cluster_sim.deploy import render as R
from cluster_sim.deploy.folder import SubmitOptions, write_json
from cluster_sim.deploy.runs import submit_run
from cluster_sim.deploy.sites import load_site
from cluster_sim.deploy.timelimit import UNMEASURED_STARTUP_S, Measured, measure, short_time_warning


def _earlier_run(runs_dir: Path, spec: Path, name: str, *, startup: float, build: float, wall: float, sim_ms: float) -> None:
    rd = runs_dir / name
    write_json(rd / "manifest.json", {"kind": "run", "spec_source": str(spec), "units": [], "jobs": []})
    write_json(rd / "out" / "run.json", {"phases": {"startup": startup, "build": build}, "simulated_ms": sim_ms,
                                         "wall_seconds": wall})


def test_measure_prefers_the_same_spec_and_takes_the_slowest(tmp_path, spec):
    other = tmp_path / "other.toml"
    _earlier_run(tmp_path / "runs", other, "o-1", startup=500, build=0, wall=600, sim_ms=100)
    _earlier_run(tmp_path / "runs", spec, "a-1", startup=30, build=10, wall=140, sim_ms=1000)
    _earlier_run(tmp_path / "runs", spec, "a-2", startup=50, build=5, wall=100, sim_ms=1000)
    m = measure(tmp_path / "runs", spec)
    assert m.startup_s == 55 and m.wall_per_ms == 0.1 and m.source.endswith("a-2/out/run.json")
    assert measure(tmp_path / "empty", spec) == Measured(UNMEASURED_STARTUP_S, None, "")


def test_warning_arithmetic():
    m = Measured(startup_s=100.0, wall_per_ms=0.5, source="x/run.json")
    # 10 min limit, USR1 60 s before: 540 s usable; 100 s start-up + 1000 ms x 0.5 s/ms = 600 s needed
    w = short_time_warning("10", 60, 1000.0, m)
    assert "540 s before the checkpoint signal" in w and "needs 600 s" in w and "x/run.json" in w
    assert "Raise --time to at least 00:11:00" in w
    assert short_time_warning("11", 60, 1000.0, m) == ""  # 600 s usable
    assert short_time_warning("10", 60, 0.0, m) == ""  # checkpoint only on the signal: start-up alone fits


def test_submit_warns_and_still_submits(tmp_path, spec, capsys):
    runs = tmp_path / "runs"
    _earlier_run(runs, spec.resolve(), "a-1", startup=200, build=20, wall=1220, sim_ms=100)  # 10 s per simulated ms
    opts = SubmitOptions(site=load_site("local"), resources=R.JobResources(time="00:05:00", signal_seconds=30),
                         runs_dir=runs, checkpoint_every_ms=10.0, validate=False)
    sub = submit_run(spec, opts, dry_run=True)
    assert len(sub.warnings) == 1 and "needs 320 s" in sub.warnings[0] and "270 s before" in sub.warnings[0]
    long_enough = SubmitOptions(site=load_site("local"), resources=R.JobResources(time="00:06:00", signal_seconds=30),
                                runs_dir=runs, checkpoint_every_ms=10.0, validate=False)
    assert submit_run(spec, long_enough, dry_run=True).warnings == []
    no_requeue = SubmitOptions(site=load_site("local"), resources=R.JobResources(time="00:05:00", requeue=False),
                               runs_dir=runs, checkpoint_every_ms=10.0, validate=False)
    assert submit_run(spec, no_requeue, dry_run=True).warnings == []
    assert json.loads((runs / "a-1" / "manifest.json").read_text())["kind"] == "run"


def test_cli_prints_the_warning(tmp_path, spec, cs):
    runs = tmp_path / "runs"
    _earlier_run(runs, spec.resolve(), "a-1", startup=400, build=0, wall=500, sim_ms=100)
    cp = cs("submit", spec, "--runs-dir", runs, "--time", "00:05:00", "--signal-seconds", "30", "--dry-run",
            "--no-validate")
    assert cp.returncode == 0, cp.stderr
    assert "cluster-sim: warning: --time 00:05:00 leaves 270 s" in cp.stderr and "#SBATCH" in cp.stdout
